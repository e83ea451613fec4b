"""Result types of a fairness audit (frozen dataclasses) and their tabular and JSON views."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from fairmed_core.fairness._columns import PredictionColumns
from fairmed_core.fairness._format_failures import FormatFailureRate
from fairmed_core.fairness._metric_spec import METRIC_SPECS
from fairmed_core.fairness._metrics import CONFUSION_METRICS
from fairmed_core.fairness._paper_protocol import PaperSummary

METRICS = (*CONFUSION_METRICS, *(spec.name for spec in METRIC_SPECS if spec.needs_score))
"""Per-group metrics an audit can report (AUROC and ECE need a score column)."""

SUMMARY_STATISTICS = (
    "predictive_parity",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "sigma_f1",
    "f1",
    "f1_es",
    "accuracy",
)

COMPARISONS = ("max-min", "pairwise", "vs-reference", "vs-overall")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval (NaN where undefined)."""

    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class GroupEstimate:
    """One metric for one group of one attribute in one source (or pooled source "ALL").

    ``n_positive``/``prevalence`` count the positive label for a binary task; for a multi-class task they
    count the group's rarest class (of the classes in the table), the class that limits class-conditional
    metrics. ``undefined_reason`` is "" when the estimate is defined.
    """

    source: str
    attribute: str
    group: str
    n: int
    n_positive: int
    prevalence: float
    small_group: bool
    small_group_reason: str
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    undefined_reason: str
    denominator: int = 0
    interval_method: str = ""
    interval_note: str = ""
    minimum_detectable_gap: float = float("nan")


@dataclass(frozen=True)
class GapEstimate:
    """A difference (and ratio) of one metric between two groups, or between the extreme groups.

    ``comparison`` is "max-min" (``group_a`` has the largest value, ``difference`` = max - min, ``ratio`` =
    min / max), "pairwise" or "vs-reference" (``difference`` = a - b, ``ratio`` = a / b) or "vs-overall"
    (``group_b`` = "ALL"). The interval is for the difference (``interval_method``: Newcombe's score
    interval for proportions, the percentile bootstrap otherwise). ``p_value_raw`` is a two-sided test of "no
    difference" (``test_method``: a permutation test of the group labels within the source, exact at every
    group size); ``p_value`` is corrected for multiple comparisons within the
    (source, attribute, metric) family of pairwise tests (vs-reference rows reuse the corresponding pairwise
    test; the max-min row holds the uncorrected permutation test that all groups are equal; vs-overall rows
    are not tested and hold NaN). ``minimum_detectable_gap`` is the smallest difference from ``group_b``
    that a test at 5% would detect with 80% power at these group sizes.

    The interval of a max-min row is the percentile interval of the resampled max - min. That statistic is
    never negative and is biased upward when groups are close (the largest of noisy values overshoots), so
    its interval can lie above the point estimate; read it as "how large the gap may be", and use the
    pairwise rows to test whether two groups differ.
    """

    source: str
    attribute: str
    metric: str
    comparison: str
    group_a: str
    group_b: str
    difference: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value_raw: float
    p_value: float
    significant: bool
    note: str
    interval_method: str = ""
    test_method: str = ""
    minimum_detectable_gap: float = float("nan")


@dataclass(frozen=True)
class FairnessSummary:
    """FairGRPO-style fairness summary of one attribute in one source, or an aggregate row.

    ``predictive_parity`` (FDR gap) and ``equal_opportunity_difference`` (TPR gap) are max - min over groups
    times 100 (percentage points), as in the FairGRPO paper; ``equalized_odds_difference`` is fairlearn's
    (the larger of the TPR and FPR max - min gaps, on the 0-1 scale); ``sigma_f1`` is the sample standard
    deviation (ddof=1) of group F1; ``f1`` and ``accuracy`` are the source's overall values; ``f1_es`` =
    f1 / (1 + sigma_f1). ``worst_group`` is the group with the lowest F1, and the interval of
    ``worst_group_f1`` is that of the minimum group F1. Aggregate rows (attribute "mean over attributes",
    source "mean over sources") average every statistic, resample by resample. The gap statistics are
    max - min gaps, whose intervals share the upward bias described in :class:`GapEstimate`.
    """

    source: str
    attribute: str
    predictive_parity: Estimate
    equal_opportunity_difference: Estimate
    equalized_odds_difference: Estimate
    sigma_f1: Estimate
    f1: Estimate
    f1_es: Estimate
    accuracy: Estimate
    worst_group: str
    worst_group_f1: Estimate


@dataclass(frozen=True)
class AuditSettings:
    """What was audited and how; ``reference_groups`` holds the reference actually used per (source, attribute).

    ``format_failures`` says how predictions "(format failure)" were scored ("wrong", "other_label" or
    "abstain"); ``protocol`` is "fairmed" or "fairgrpo_paper" (the paper's statistics attached beside)."""

    label_col: str
    pred_col: str
    sensitive: tuple[str, ...]
    intersect: bool | tuple[str, ...]
    score_col: str | None
    source_col: str | None
    positive_label: Any
    task: str
    classes: tuple
    metrics: tuple[str, ...]
    n_boot: int
    confidence: float
    correction: str
    min_group_size: int
    seed: int
    n_rows: int
    sources: tuple[str, ...]
    reference_groups: tuple[tuple[str, str, str], ...]
    bootstrap: str
    interval_method: str = "wilson"
    tests: str = ""
    format_failures: str = "wrong"
    protocol: str = "fairmed"

    @property
    def columns(self) -> PredictionColumns:
        """The audited table's columns as one value (to audit the same table again, or another like it)."""
        return PredictionColumns(self.label_col, self.pred_col, self.sensitive, self.score_col, self.source_col)


GROUP_COLUMNS = tuple(f.name for f in fields(GroupEstimate))
GAP_COLUMNS = tuple(f.name for f in fields(GapEstimate))
SUMMARY_COLUMNS = (
    ("source", "attribute")
    + tuple(
        column
        for statistic in SUMMARY_STATISTICS
        for column in (statistic, f"{statistic}_ci_low", f"{statistic}_ci_high")
    )
    + ("worst_group", "worst_group_f1", "worst_group_f1_ci_low", "worst_group_f1_ci_high")
)


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _summary_row(summary: FairnessSummary) -> tuple:
    row: list[Any] = [summary.source, summary.attribute]
    for statistic in SUMMARY_STATISTICS:
        estimate: Estimate = getattr(summary, statistic)
        row.extend([estimate.estimate, estimate.ci_low, estimate.ci_high])
    worst = summary.worst_group_f1
    row.extend([summary.worst_group, worst.estimate, worst.ci_low, worst.ci_high])
    return tuple(row)


@dataclass(frozen=True)
class AuditResult:
    """Everything an audit found: group estimates, gaps, summaries, and the settings that produced them.

    ``format_failure_rates`` holds the share of format failures per source and group when any prediction was
    one (empty otherwise); ``paper_summary`` the FairGRPO paper's statistics when the audit was asked for them
    (``protocol="fairgrpo_paper"``)."""

    settings: AuditSettings
    groups: tuple[GroupEstimate, ...]
    gaps: tuple[GapEstimate, ...]
    summaries: tuple[FairnessSummary, ...]
    format_failure_rates: tuple[FormatFailureRate, ...] = ()
    paper_summary: PaperSummary | None = None

    def groups_frame(self) -> pd.DataFrame:
        """One row per (source, attribute, group, metric); overall rows have attribute "overall", group "ALL"."""
        rows = [tuple(getattr(g, c) for c in GROUP_COLUMNS) for g in self.groups]
        return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))

    def gaps_frame(self) -> pd.DataFrame:
        """One row per gap (see :class:`GapEstimate`)."""
        rows = [tuple(getattr(g, c) for c in GAP_COLUMNS) for g in self.gaps]
        return pd.DataFrame(rows, columns=list(GAP_COLUMNS))

    def summary_frame(self) -> pd.DataFrame:
        """One row per (source, attribute) plus the aggregate rows (see :class:`FairnessSummary`)."""
        return pd.DataFrame([_summary_row(s) for s in self.summaries], columns=list(SUMMARY_COLUMNS))

    def format_failures_frame(self) -> pd.DataFrame:
        """One row per (source, attribute, group): n, failures and rate (empty without format failures)."""
        columns = [f.name for f in fields(FormatFailureRate)]
        return pd.DataFrame([[getattr(r, c) for c in columns] for r in self.format_failure_rates], columns=columns)

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become null) with settings, groups, gaps and summary; with
        format failures, each group holds ``n_format_failures`` and ``format_failure_rate``; with the paper's
        protocol, ``paper_protocol`` holds its statistics."""
        settings = {f.name: getattr(self.settings, f.name) for f in fields(self.settings)}
        settings["reference_groups"] = [
            {"source": s, "attribute": a, "group": g} for s, a, g in self.settings.reference_groups
        ]
        groups: dict[tuple[str, str, str], dict[str, Any]] = {}
        for g in self.groups:
            key = (g.source, g.attribute, g.group)
            if key not in groups:
                groups[key] = {
                    "source": g.source,
                    "attribute": g.attribute,
                    "group": g.group,
                    "n": g.n,
                    "n_positive": g.n_positive,
                    "prevalence": g.prevalence,
                    "small_group": g.small_group,
                    "small_group_reason": g.small_group_reason,
                }
            groups[key][g.metric] = {
                "estimate": g.estimate,
                "ci_low": g.ci_low,
                "ci_high": g.ci_high,
                "undefined_reason": g.undefined_reason,
                "denominator": g.denominator,
                "interval_method": g.interval_method,
                "interval_note": g.interval_note,
                "minimum_detectable_gap": g.minimum_detectable_gap,
            }
        for rate in self.format_failure_rates:
            key = (rate.source, rate.attribute, rate.group)
            if key in groups:
                groups[key]["n_format_failures"] = rate.failures
                groups[key]["format_failure_rate"] = rate.rate
        summary = [dict(zip(SUMMARY_COLUMNS, _summary_row(s), strict=True)) for s in self.summaries]
        gaps = [{c: getattr(g, c) for c in GAP_COLUMNS} for g in self.gaps]
        out = {"settings": settings, "groups": list(groups.values()), "gaps": gaps, "summary": summary}
        if self.paper_summary is not None:
            out["paper_protocol"] = self.paper_summary.to_json_dict()
        return _json_safe(out)
