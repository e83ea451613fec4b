"""Re-audit every shipped evaluation with the current audit engine and rewrite the model cards from it.

The shipped models' predictions (``assets/models/*/evaluation/predictions.csv``) are what the models answered;
the audits and cards beside them are computed from those predictions. When the audit engine changes (intervals,
tests, format-failure scoring), this script recomputes ``evaluation/audit/`` and ``README.md`` of each shipped
model from the stored predictions, without re-running any model. Run it from the repository root:

    .venv/bin/python benchmarks/regenerate_shipped_audits.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from fairmed_core.models.grpo_card import write_grpo_model_card  # noqa: E402
from fairmed_core.models.loading import estimate_parameter_count  # noqa: E402
from fairmed_core.models.model_card import write_model_card  # noqa: E402
from fairmed_core.runs.audit_store import save_audit  # noqa: E402
from fairmed_core.models.prediction_audit import audit_predictions  # noqa: E402

MODELS = ROOT / "assets" / "models"


def reaudit(model_dir: Path):
    """Recompute ``evaluation/audit/`` from the stored predictions with the run's recorded settings."""
    evaluation = model_dir / "evaluation"
    info = json.loads((evaluation / "run.json").read_text(encoding="utf-8"))
    predictions = pd.read_csv(evaluation / "predictions.csv", keep_default_na=False, na_values=[""])
    result = audit_predictions(predictions, info["attributes"], positive_label=info["positive_label"])
    save_audit(result, evaluation / "audit")
    return info, result


def main() -> None:
    # The SFT models (a training_config.json) first, then the GRPO-family descendants (a training/ record).
    for sft in sorted(p.parent for p in MODELS.glob("*/training_config.json")):
        info, result = reaudit(sft)
        training = json.loads((sft / "training_config.json").read_text(encoding="utf-8"))
        write_model_card(
            sft, name=sft.name, training=training, evaluation=info, result=result,
            parameter_count=estimate_parameter_count((sft / "model.safetensors",)),
            architecture=training["config"]["model"],
        )  # fmt: skip
        print(f"re-audited {sft.name}")
    for folder in sorted(p.parent for p in MODELS.glob("*/training/training.json")):
        reaudit(folder)
        card = (folder / "README.md").read_text(encoding="utf-8")
        command = re.search(r"`(fairmed train (\S+) [^`]+)`", card)
        start = re.search(r"--model (\S+)", command.group(1)).group(1)
        write_grpo_model_card(folder, method=command.group(2), command=command.group(1), start=ROOT / start)
        print(f"re-audited {folder.name}")


if __name__ == "__main__":
    main()
