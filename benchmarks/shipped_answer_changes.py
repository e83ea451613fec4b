"""Find, for every shipped model, the benchmark cases whose answer changes on the true counterfactual, and store
them beside its shipped evaluation (``assets/models/*/evaluation/answer_changes.{csv,json}``), so the Inference
page lists them without running the model over the benchmark first.

A stratified sample of the test split (equal shares per source x sex x age group), every true counterfactual of
each case (sex, age group, and skin tone on dermoscopy), greedy decoding with the settings of the shipped
evaluation. Run it from the repository root (a few minutes on a CPU):

    .venv/bin/python benchmarks/shipped_answer_changes.py [--n 600] [--model NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.models.answer_changes import find_answer_changes, write_answer_changes  # noqa: E402
from fairmed_core.models.generation import GenerationOptions  # noqa: E402
from fairmed_core.models.loading import load_model  # noqa: E402
from fairmed_core.runs.workspace import Workspace, shipped_model_dirs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="cases of the test split (stratified)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", nargs="+", default=None, help="only these shipped models (folder names)")
    args = parser.parse_args()
    dataset = read_manifest(ensure_default_dataset(Workspace.from_env().datasets))
    for model_dir in shipped_model_dirs():
        if args.model is not None and model_dir.name not in args.model:
            continue
        evaluation = model_dir / "evaluation"
        info = json.loads((evaluation / "run.json").read_text(encoding="utf-8"))
        options = GenerationOptions(**{**info["generation"], "batch_size": 64})
        began = time.perf_counter()
        changes = find_answer_changes(load_model(model_dir), dataset, split="test", n=args.n, seed=args.seed,
                                      options=options)
        path = write_answer_changes(changes, evaluation)
        print(f"{model_dir.name}: {len(changes.pairs)} of {changes.n_pairs} counterfactual pairs change the answer "
              f"({len(changes.cases)} of {changes.n_cases} cases; per attribute {changes.changed_per_attribute} of "
              f"{changes.pairs_per_attribute}); {path.stat().st_size / 1024:.0f} KB, "
              f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
