"""The model card (README.md in a model folder): how the model was trained and how it performs per group.

Written from the training record and an evaluation run, so every number in it comes from a file beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairmed_core.fairness import AuditResult
from fairmed_core.runs.workspace import atomic_write_text

__all__ = ["model_card_markdown", "write_model_card"]

_GROUP_METRICS = ("accuracy", "recall", "fpr", "precision")


def _table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _with_interval(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "n/a"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _group_table(result: AuditResult) -> str:
    groups = result.groups_frame()
    groups = groups[(groups["source"] != "ALL") & (groups["group"] != "UNK") & (groups["attribute"] != "overall")
                    & groups["metric"].isin(_GROUP_METRICS)]
    rows: dict[tuple, dict] = {}
    for g in groups.itertuples(index=False):
        key = (g.source, g.attribute, g.group)
        row = rows.setdefault(key, {"source": g.source, "attribute": g.attribute, "group": g.group, "n": int(g.n),
                                    **{metric: "n/a" for metric in _GROUP_METRICS},
                                    "note": "too small" if g.small_group else ""})
        row[g.metric] = _with_interval(g.estimate, g.ci_low, g.ci_high)
    return _table(pd.DataFrame(list(rows.values())))


def _summary_table(result: AuditResult) -> str:
    summary = result.summary_frame()
    columns = ["source", "attribute", "accuracy", "f1", "equal_opportunity_difference",
               "equalized_odds_difference", "predictive_parity", "sigma_f1", "worst_group"]
    frame = summary[[c for c in columns if c in summary.columns]].copy()
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = frame[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    return _table(frame)


def model_card_markdown(*, name: str, training: dict, evaluation: dict, result: AuditResult,
                        parameter_count: int, architecture: dict) -> str:
    """The card's markdown text."""
    config = training.get("config", {})
    sizes = ", ".join(f"{k} {v}" for k, v in architecture.items())
    return f"""# {name}

A tiny FairMedGemma: `Gemma3ForConditionalGeneration` (the MedGemma-4B architecture: SigLIP vision tower,
Gemma 3 decoder, same processor and chat format) at toy size, {parameter_count:,} parameters, trained on CPU.
It is FairMed's offline default model, so the dashboard, audits and FairGRPO runs work without a GPU or a
download. It is **not a medical model**: it reads the synthetic benchmark's images only.

## Architecture
{sizes}. Word-level tokenizer over the benchmark's prompts, reasoning and answers (with the Gemma 3 special
tokens and a Gemma 3 chat template); `Gemma3ImageProcessorPil` at the benchmark's image size.

## Training
Supervised warm start (`fairmed train sft`) on the `{training.get('split')}` split of `{training.get('data')}`:
{training.get('train_cases')} cases, {config.get('epochs')} epochs, {training.get('steps')} steps of AdamW
(learning rate {config.get('learning_rate')}, batch {config.get('batch_size')}, warmup then cosine), seed
{config.get('seed')}, {training.get('train_time_s')} s on {training.get('torch_threads')} CPU thread(s).
The target is a short reasoning grounded in the case's latent findings (what is seen, where, how large) inside
`<think> </think>`, then the manifest answer in `\\boxed{{}}`. The benchmark was used as it is, imbalanced and
with its label noise, so the model carries the benchmark's disparities: they are what the audit and FairGRPO
are for.

Reproduce: `fairmed synth --out DATA --n 6000 --seed 0` then `fairmed train sft --data DATA/manifest.jsonl
--out DIR` (same seed, same thread count: same weights on the same CPU build).

## Evaluation
Greedy decoding on the `{evaluation.get('split')}` split ({evaluation.get('n_cases')} cases): accuracy
{evaluation.get('accuracy', float('nan')):.3f} against the manifest answers, format failures
{100 * evaluation.get('format_failure_rate', float('nan')):.1f}% (a format failure is scored as a wrong
answer). Intervals are 95% bootstrap intervals ({result.settings.n_boot} resamples). The predictions, the full
audit and the run record are in `evaluation/` beside this card.

### Fairness summary (FairGRPO metrics; per source, then the mean)
{_summary_table(result)}

### Per group
{_group_table(result)}

## Limits
- Trained and evaluated on synthetic images only; the numbers say nothing about real patients.
- Ground truth here is the manifest answer, which includes the benchmark's deliberate label noise.
"""


def write_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Write ``README.md`` into ``model_dir`` (arguments as ``model_card_markdown``)."""
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, model_card_markdown(**kwargs))
    return path
