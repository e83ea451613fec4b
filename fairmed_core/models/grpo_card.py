"""The card of a GRPO- or FairGRPO-trained tiny FairMedGemma: how it was trained from the SFT model, and its audit
beside the SFT model's.

One job: write README.md into a shipped model folder from what the folder holds (``training/config.json``,
``training/training.json``, ``training/metrics.jsonl``, ``evaluation/``) and from the SFT start's evaluation, so
the card's numbers are the stored run's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fairmed_core.data.sampling import SampleComposition
from fairmed_core.fairness import MEAN_OVER_ATTRIBUTES, MEAN_OVER_SOURCES
from fairmed_core.files import TINY_MODEL, atomic_write_text
from fairmed_core.models.model_card import _group_table, _misses, _source_table, _summary_table, _table
from fairmed_core.models.prediction_audit import audit_predictions

__all__ = ["grpo_model_card_markdown", "write_grpo_model_card"]

_METHOD_TEXT = {
    "grpo": "plain GRPO (TRL's `GRPOTrainer`: each rollout's advantage relative to its prompt's rollouts)",
    "fairgrpo": "FairGRPO (advantages reweighted by group representation and difficulty, hierarchically per data "
                "source; DESIGN.md section 4)",
}


def _audit(folder: Path):
    predictions = pd.read_csv(folder / "evaluation" / "predictions.csv", keep_default_na=False, na_values=[""])
    info = json.loads((folder / "evaluation" / "run.json").read_text(encoding="utf-8"))
    return audit_predictions(predictions, info["attributes"], positive_label=info["positive_label"]), info


def _headline(result) -> dict:
    summary = result.summary_frame()
    row = summary[(summary["source"] == "mean over sources") & (summary["attribute"] == "mean over attributes")]
    row = row.iloc[0] if len(row) else None
    return {k: (None if row is None else float(row[k])) for k in
            ("accuracy", "f1", "predictive_parity", "equal_opportunity_difference", "sigma_f1", "f1_es")
            if row is None or k in row}


def _mean_f1_over_sources(record: dict) -> float:
    """One held-out evaluation's F1, the mean over its sources (each source's own row), as the audit averages."""
    values = [float(s["f1"]) for s in record.get("summary", [])
              if s.get("attribute") == MEAN_OVER_ATTRIBUTES and s.get("source") not in ("ALL", MEAN_OVER_SOURCES)
              and s.get("f1") is not None]
    return sum(values) / len(values) if values else float("nan")


def _held_out_curve(metrics: Path) -> str:
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not evals:
        return "No held-out evaluation was logged."
    rows = [{"step": r["step"], "val accuracy": f"{r.get('accuracy', float('nan')):.3f}",
             "val F1 (mean over sources)": f"{_mean_f1_over_sources(r):.3f}",
             "format failures": f"{100 * r.get('format_failure_rate', 0.0):.1f}%"} for r in evals]
    return _table(pd.DataFrame(rows))


def _held_out_cases(recorded: dict) -> str:
    """Which cases the held-out curve answered: the run's recorded sample, or what older runs did."""
    if recorded.get("held_out_sample") is not None:
        return SampleComposition.from_json(recorded["held_out_sample"]).describe()
    job = recorded["job"]
    return (f"{job.get('eval_split', 'val')} split, first {job.get('eval_limit')} cases: an older run, which did "
            "not record its held-out sample's composition")


def _reward_text(config: dict) -> str:
    if config.get("reward") == "class_balanced":
        return ("Reward: class-balanced (a right boxed answer earns the inverse share of its answer within its "
                "source, a wrong one or a format failure 0; advantages centred within each prompt, not scaled).")
    return "Reward: 1 for the right boxed answer, 0 otherwise (a format failure scores 0)."


def grpo_model_card_markdown(folder: str | Path, *, method: str, command: str,
                             start: str | Path = TINY_MODEL, results_section: str = "FairGRPO against GRPO") -> str:
    folder, start = Path(folder), Path(start)
    recorded = json.loads((folder / "training" / "config.json").read_text(encoding="utf-8"))
    config = recorded["job"]
    finished = json.loads((folder / "training" / "training.json").read_text(encoding="utf-8"))
    result, info = _audit(folder)
    start_result, _ = _audit(start)
    mine, theirs = _headline(result), _headline(start_result)
    labels = {"accuracy": "accuracy", "f1": "F1", "predictive_parity": "PP (pp)",
              "equal_opportunity_difference": "EOD (pp)", "sigma_f1": "sigma F1", "f1_es": "F1_ES"}
    comparison = _table(pd.DataFrame([
        {"model": f"SFT start (`{start.name}`)", **{labels[k]: f"{v:.3f}" for k, v in theirs.items() if v is not None}},
        {"model": f"this model ({method})", **{labels[k]: f"{v:.3f}" for k, v in mine.items() if v is not None}},
    ]))
    return f"""# {folder.name}

The shipped tiny FairMedGemma (`{start.name}`, a supervised warm start) trained further with
{_METHOD_TEXT.get(method, method)}, so the dashboard can compare a GRPO- and a FairGRPO-trained model out of the
box. It is **not a medical model**: it reads the synthetic benchmark's images only. One seed: the comparison
of the methods over three seeds, with its reading, is in docs/RESULTS.md ("{results_section}"); read the
differences below as one draw, not as an effect.

## Training
`{command}`: {finished.get('steps')} steps of {config.get('prompts_per_step')} prompts x
{config.get('num_generations')} rollouts (up to {config.get('max_completion_length')} new tokens, temperature
{config.get('temperature')}), learning rate {config.get('learning_rate')}, KL coefficient {config.get('beta')},
seed {config.get('seed')}, {finished.get('train_time_s')} s on CPU ({finished.get('seconds_per_step')} s/step).
{_reward_text(config)} Group attributes
{', '.join(config.get('group_attributes', []))}. The full training record is in `training/` (`metrics.jsonl`
opens on the Training page when copied into a workspace's runs/ folder).

Held-out accuracy and F1 during training ({_held_out_cases(recorded)}):

{_held_out_curve(folder / 'training' / 'metrics.jsonl')}

## Evaluation
Greedy decoding on the `{info.get('split')}` split ({info.get('n_cases')} cases): accuracy
{info.get('accuracy', float('nan')):.3f}, format failures {100 * info.get('format_failure_rate', 0.0):.1f}%.
The predictions and the full audit are in `evaluation/`; intervals are 95%: {result.settings.interval_method}.

### Against the SFT start (mean over sources and attributes; PP and EOD in percentage points)
{comparison}

### Per source (all groups together)
{_source_table(result)}

### Fairness summary (FairGRPO metrics; per source, then the mean)
{_summary_table(result)}

### Per group
{_group_table(result)}

## Limits
{_misses(result)}
- Trained and evaluated on synthetic images only; the numbers say nothing about real patients.
"""


def write_grpo_model_card(folder: str | Path, *, method: str, command: str, start: str | Path = TINY_MODEL,
                          results_section: str = "FairGRPO against GRPO") -> Path:
    """Write ``README.md`` into ``folder`` (see ``grpo_model_card_markdown``)."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, grpo_model_card_markdown(folder, method=method, command=command, start=start,
                                                     results_section=results_section))
    return path
