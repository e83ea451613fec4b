"""The model card (README.md in a model folder): how the model was trained and how it performs per group.

Written from the training record and an evaluation run, so every number in it comes from a file beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairmed_core.data.schema import ALL, UNKNOWN
from fairmed_core.fairness import AuditResult
from fairmed_core.files import atomic_write_text

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
    groups = groups[(groups["source"] != ALL) & (groups["group"] != UNKNOWN) & (groups["attribute"] != "overall")
                    & groups["metric"].isin(_GROUP_METRICS) & (groups["n"] > 0)]  # n 0: not recorded there
    rows: dict[tuple, dict] = {}
    for g in groups.itertuples(index=False):
        key = (g.source, g.attribute, g.group)
        row = rows.setdefault(key, {"source": g.source, "attribute": g.attribute, "group": g.group, "n": int(g.n),
                                    **{metric: "n/a" for metric in _GROUP_METRICS},
                                    "note": "too small" if g.small_group else ""})
        row[g.metric] = _with_interval(g.estimate, g.ci_low, g.ci_high)
    return _table(pd.DataFrame(list(rows.values())))


# FairGRPO reports two of its gaps in percentage points (x100) and fairlearn's equalized odds as a fraction:
# the column names say which, so no reader compares 34.4 with 0.344.
_SUMMARY_COLUMNS = {
    "source": "source", "attribute": "attribute", "accuracy": "accuracy", "f1": "F1",
    "equal_opportunity_difference": "EOD (pp)", "equalized_odds_difference": "EqOdds (fraction)",
    "predictive_parity": "PP (pp)", "sigma_f1": "sigma F1", "worst_group": "worst group",
}


def _summary_table(result: AuditResult) -> str:
    summary = result.summary_frame()
    frame = summary[[c for c in _SUMMARY_COLUMNS if c in summary.columns]].copy()
    gap_columns = [c for c in ("equal_opportunity_difference", "equalized_odds_difference", "predictive_parity")
                   if c in frame.columns]
    # An attribute a source does not record (skin tone in chest X-rays) has no gaps: drop its row, not show n/a.
    frame = frame[~frame[gap_columns].isna().all(axis=1)]
    for column in frame.columns:
        if frame[column].dtype.kind == "f":
            frame[column] = frame[column].map(lambda v: "n/a" if pd.isna(v) else f"{v:.3f}")
    return _table(frame.rename(columns=_SUMMARY_COLUMNS))


def _per_source(result: AuditResult) -> pd.DataFrame:
    """Overall accuracy, recall and specificity per source (point estimates and intervals)."""
    groups = result.groups_frame()
    overall = groups[(groups["attribute"] == "overall") & groups["metric"].isin(("accuracy", "recall", "specificity"))]
    return overall.pivot_table(index="source", columns="metric", values=["estimate", "ci_low", "ci_high"],
                               aggfunc="first")


def _source_table(result: AuditResult) -> str:
    table = _per_source(result)
    rows = []
    for source in sorted(table.index, key=lambda name: (name == ALL, name)):  # all sources together last
        row = {"source": source}
        for metric in ("accuracy", "recall", "specificity"):
            if ("estimate", metric) in table.columns:
                row[metric] = _with_interval(table.loc[source, ("estimate", metric)],
                                             table.loc[source, ("ci_low", metric)],
                                             table.loc[source, ("ci_high", metric)])
        rows.append(row)
    return _table(pd.DataFrame(rows))


def _misses(result: AuditResult, floor: float = 0.3) -> str:
    """Plain sentences for sources where the model finds (almost) no positives or calls (almost) everything
    positive: a reviewer must know these before reading any gap."""
    table = _per_source(result)
    lines = []
    for source in table.index:
        if source == ALL:
            continue
        recall = table.loc[source, ("estimate", "recall")] if ("estimate", "recall") in table.columns else None
        specificity = (table.loc[source, ("estimate", "specificity")]
                       if ("estimate", "specificity") in table.columns else None)
        if recall is not None and pd.notna(recall) and recall < floor:
            lines.append(f"- In `{source}` the model finds almost no positive cases (recall {recall:.3f}): it "
                         "answers no nearly always there, so its gaps in that source measure a model that does not "
                         "see the finding.")
        if specificity is not None and pd.notna(specificity) and specificity < floor:
            lines.append(f"- In `{source}` the model calls almost every case positive (specificity "
                         f"{specificity:.3f}).")
    return "\n".join(lines)



def _role(config: dict) -> str:
    if config.get("vision_warmup_epochs") or config.get("undersample"):
        return ("It is the start of FairMed's reinforcement-learning runs: a model that sees the finding in every "
                "source, so that GRPO, FairGRPO and the baselines have something to change (the dashboard's "
                "default model is `tiny-fairmedgemma`).")
    return ("It is FairMed's offline default model, so the dashboard, audits and FairGRPO runs work without a GPU "
            "or a download.")


def _recipe(training: dict, config: dict) -> str:
    """The card's paragraph on a recipe beyond plain SFT: vision warm-up, frozen tower, undersampled groups."""
    parts = []
    if config.get("vision_warmup_epochs"):
        parts.append(
            f"Before SFT the vision tower was fitted to the finding for {config['vision_warmup_epochs']} epochs "
            f"(binary cross-entropy on the manifest answer, a linear head per source on mean- plus max-pooled patch "
            f"features, AdamW at {config.get('vision_warmup_lr')}; the head is discarded), standing in for the "
            "pretrained MedSigLIP encoder MedGemma-4B starts from"
            + ("; SFT then trained the projector and the language model only, the tower frozen." if
               config.get("freeze_vision_tower") else "."))
    rules = config.get("undersample") or []
    if rules:
        counts = training.get("cases_per_group") or {}
        described = []
        for rule in rules:
            source, attribute, group, fraction = str(rule).split(":")
            kept = counts.get(source, {}).get(f"{attribute}={group}")
            what = f"cases answered {group}" if attribute == "answer" else f"{attribute} {group}"
            described.append(f"{float(fraction):.0%} of {source} {what} ({kept} cases kept)")
        parts.append("The SFT data under-represents groups that the reinforcement-learning split holds in full: "
                     "it keeps " + "; ".join(described) + ". The model therefore carries a "
                     "representation-driven disparity that training on the whole split can reduce.")
        shifted = sorted({str(rule).split(":")[0] for rule in rules if str(rule).split(":")[1] == "answer"})
        if shifted:
            parts.append(f"In {', '.join(shifted)} the answers it learned from are not those of the split it is "
                         "tested on (a prior shift): it gives the under-represented answer less often than the "
                         "data warrant, which training on the whole split with a correctness reward can correct. Why: "
                         "the start without it already answers at the F1-best threshold of its own sampled answers "
                         "(docs/RESULTS.md, \"Reinforcement-learning headroom of the SFT start\"), so reinforcement "
                         "learning there has little to correct in a few hundred CPU steps. Which shifts were "
                         "tried and what GRPO gained from each start: docs/RESULTS.md, \"Reading: when "
                         "reinforcement learning can move the tiny FairMedGemma\".")
    if not parts:
        return ""
    return ("\n\n### Recipe\n" + " ".join(parts) + " Why this recipe: trained through the language-model loss "
            "alone, the tower never learned the chest X-ray opacity (recall 0.00 after 12 epochs at 64 or 32 "
            "pixels, on 3,000 or 12,000 cases), although a logistic regression on 16 x 16 pixels reaches AUROC "
            "0.83; fitted directly at 32 pixels it reaches 0.87, and full-model SFT at 2e-3 afterwards washed "
            "that out again. The measurements are in docs/RESULTS.md, \"A tiny FairMedGemma that sees the "
            "finding\".")


def _recipe_flags(config: dict) -> str:
    flags = []
    if config.get("epochs") not in (None, 12):
        flags.append(f"--epochs {config['epochs']}")
    if config.get("vision_warmup_epochs"):
        flags.append(f"--vision-warmup-epochs {config['vision_warmup_epochs']}")
    if config.get("freeze_vision_tower"):
        flags.append("--freeze-vision-tower")
    flags += [f"--undersample {rule}" for rule in config.get("undersample") or []]
    size = (config.get("model") or {}).get("image_size")
    if size not in (None, 64):
        flags.append(f"--model-image-size {size}")
    return "".join(f" {flag}" for flag in flags)

def model_card_markdown(*, name: str, training: dict, evaluation: dict, result: AuditResult,
                        parameter_count: int, architecture: dict) -> str:
    """The card's markdown text."""
    config = training.get("config", {})
    sizes = ", ".join(f"{k} {v}" for k, v in architecture.items())
    misses = _misses(result)
    return f"""# {name}

A tiny FairMedGemma: `Gemma3ForConditionalGeneration` (the MedGemma-4B architecture: SigLIP vision tower,
Gemma 3 decoder, same processor and chat format) at toy size, {parameter_count:,} parameters, trained on CPU.
{_role(config)} It is **not a medical model**: it reads the synthetic benchmark's images only.

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
are for.{_recipe(training, config)}

Reproduce: `fairmed synth --out DATA --n 6000 --seed 0` then `fairmed train sft --data DATA/manifest.jsonl
--out DIR{_recipe_flags(config)}` (same seed, same thread count: same weights on the same CPU build).

## Evaluation
Greedy decoding on the `{evaluation.get('split')}` split ({evaluation.get('n_cases')} cases): accuracy
{evaluation.get('accuracy', float('nan')):.3f} against the manifest answers, format failures
{100 * evaluation.get('format_failure_rate', float('nan')):.1f}% (the audit scores a format failure as
"{result.settings.format_failures}"; "wrong" is wrong for the true class, on yes/no data a missed positive). Intervals are 95%: {result.settings.interval_method}. The predictions, the full
audit and the run record are in `evaluation/` beside this card.

### Per source (all groups together)
{_source_table(result)}

### Fairness summary (FairGRPO metrics; per source, then the mean)
EOD (equal opportunity difference) and PP (predictive parity) are ranges over groups in percentage points, as
the FairGRPO paper reports them; EqOdds is fairlearn's equalized odds difference as a fraction.

{_summary_table(result)}

### Per group
{_group_table(result)}

## Limits
{misses}
- Trained and evaluated on synthetic images only; the numbers say nothing about real patients.
- Ground truth here is the manifest answer, which includes the benchmark's deliberate label noise.
"""


def write_model_card(model_dir: str | Path, **kwargs) -> Path:
    """Write ``README.md`` into ``model_dir`` (arguments as ``model_card_markdown``)."""
    path = Path(model_dir) / "README.md"
    atomic_write_text(path, model_card_markdown(**kwargs))
    return path
