"""Three-state verdicts from intervals: a group or gap meets the plan's margin, fails it, or the evidence is
insufficient. Never from a point estimate alone.

* meets the margin: the whole interval lies inside the acceptable band;
* fails the margin: the whole interval lies outside it;
* insufficient evidence: the interval straddles (or touches) a band edge, is undefined, or a group is below
  the plan's smallest group size; the minimum detectable gap (the difference a two-sided test at the plan's
  level would detect with 80% power at these group sizes: ``fairmed_core.fairness.minimum_detectable_gap``)
  is stated, so the meeting knows what more data would buy.

A band edge belongs to the band: an interval ending exactly on it is inside. Pure functions over small frozen
dataclasses; the audit's result types come in, verdicts go out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from fairmed_core.fairness import (
    SPEC_BY_NAME,
    AuditResult,
    GapEstimate,
    GroupEstimate,
    minimum_detectable_gap,
    pooled_gap_checks,
)
from fairmed_core.report.plan import AuditPlan, MetricMargin

__all__ = [
    "FAILS",
    "INSUFFICIENT",
    "MEETS",
    "VERDICT_STATES",
    "GapVerdict",
    "GroupVerdict",
    "difference_band",
    "gap_verdict",
    "group_verdict",
    "interval_verdict",
    "detectable_gap",
    "verdict_counts",
    "verdicts_from_audit",
]

MEETS = "meets the margin"
FAILS = "fails the margin"
INSUFFICIENT = "insufficient evidence"
VERDICT_STATES = (MEETS, FAILS, INSUFFICIENT)
DETECTION_POWER = 0.8

def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _denominator(group: GroupEstimate) -> int:
    """The cases a group's metric is a share of (the audit's per-row ``denominator``; all cases when absent)."""
    return group.denominator or group.n


def interval_verdict(ci_low: float, ci_high: float, band_low: float, band_high: float) -> str:
    """MEETS when [ci_low, ci_high] lies inside [band_low, band_high] (edges included), FAILS when it lies
    wholly outside (not touching), else INSUFFICIENT (straddles, touches from outside, or is undefined)."""
    if not _finite(ci_low, ci_high) or ci_low > ci_high:
        return INSUFFICIENT
    if band_low <= ci_low and ci_high <= band_high:
        return MEETS
    if ci_high < band_low or ci_low > band_high:
        return FAILS
    return INSUFFICIENT


def detectable_gap(metric: str, reference_rate: float, n_group: int, n_reference: int, *,
                   confidence: float = 0.95, power: float = DETECTION_POWER, direction: str | None = None) -> float:
    """The minimum detectable gap of ``metric`` between a group and its reference (their metric denominators
    ``n_group`` and ``n_reference``): the audit engine's Cohen's-h planning number at level ``1 - confidence``,
    in the direction that is worse for the group unless ``direction`` is given (inf: undetectable at any rate)."""
    if direction is None:
        better = SPEC_BY_NAME[metric].higher_is_better if metric in SPEC_BY_NAME else None
        direction = {True: "lower", False: "higher", None: "either"}[better]
    return float(minimum_detectable_gap(np.asarray(reference_rate, dtype=float), np.asarray(n_group),
                                        np.asarray(n_reference), alpha=1 - confidence, power=power,
                                        direction=direction))


def _detectable_text(detectable: float, confidence: float) -> str:
    level = f"{1 - confidence:.0%}"
    if math.isinf(detectable):
        return f"; at these group sizes no difference is detectable (test at {level}, 80% power)"
    if math.isnan(detectable):
        return ""
    return f"; this sample detects a difference of {detectable:.3f} or more (test at {level}, 80% power)"


def difference_band(margin: MetricMargin, reference_estimate: float) -> tuple[float, float]:
    """The band for (group - reference) that the margin allows: [-d, d] from ``max_difference``, and
    [(low - 1) x ref, (high - 1) x ref] from the ratio band (the ratio band read at the reference's estimate);
    with both, their intersection (a group must satisfy both)."""
    low, high = -math.inf, math.inf
    if margin.max_difference is not None:
        low, high = -margin.max_difference, margin.max_difference
    if margin.ratio_low is not None and margin.ratio_high is not None:
        if not _finite(reference_estimate) or reference_estimate <= 0:
            return math.nan, math.nan  # a ratio to 0 (or to nothing) has no band
        low = max(low, (margin.ratio_low - 1) * reference_estimate)
        high = min(high, (margin.ratio_high - 1) * reference_estimate)
    return low, high


@dataclass(frozen=True)
class GroupVerdict:
    """A planned (group, metric) against the reference group: its interval, the band, and the verdict."""

    source: str
    attribute: str
    group: str
    reference_group: str
    metric: str
    n: int
    reference_n: int
    estimate: float
    ci_low: float
    ci_high: float
    difference: float
    difference_ci_low: float
    difference_ci_high: float
    p_value: float
    band_low: float
    band_high: float
    margin: str
    interval_method: str
    verdict: str
    reason: str
    minimum_detectable_gap: float


@dataclass(frozen=True)
class GapVerdict:
    """The largest gap (max - min over groups) of a planned metric in one source and attribute, and its verdict;
    ``p_value`` is the audit's test that all groups are equal (uncorrected; NaN where it has none)."""

    source: str
    attribute: str
    metric: str
    group_max: str
    group_min: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    allowed: float
    verdict: str
    reason: str
    minimum_detectable_gap: float


def group_verdict(*, group: GroupEstimate, reference: GroupEstimate, comparison: GapEstimate | None,
                  margin: MetricMargin, min_group_size: int, confidence: float) -> GroupVerdict:
    """The verdict of one group against its reference on one metric, from the interval of their difference
    (the audit's vs-reference row ``comparison``); the groups' metric denominators give the detectable gap."""
    difference = comparison.difference if comparison else group.estimate - reference.estimate
    low = comparison.ci_low if comparison else math.nan
    high = comparison.ci_high if comparison else math.nan
    p_value = comparison.p_value if comparison else math.nan
    band_low, band_high = difference_band(margin, reference.estimate)
    detectable = detectable_gap(margin.metric, reference.estimate, _denominator(group), _denominator(reference),
                                confidence=confidence)
    small = [f"{name} has n = {n}" for name, n in ((group.group, group.n), (reference.group, reference.n))
             if n < min_group_size]
    if small:
        verdict = INSUFFICIENT
        reason = f"{' and '.join(small)}, below the plan's smallest group of {min_group_size}"
    elif group.undefined_reason or reference.undefined_reason:
        verdict = INSUFFICIENT
        reason = f"{margin.metric} undefined: {group.undefined_reason or reference.undefined_reason}"
    elif not _finite(band_low, band_high):
        verdict, reason = INSUFFICIENT, "no band: the reference value is 0 or undefined, so a ratio is undefined"
    elif not _finite(low, high):
        verdict, reason = INSUFFICIENT, "no interval for the difference"
    else:
        verdict = interval_verdict(low, high, band_low, band_high)
        span = f"interval [{low:+.3f}, {high:+.3f}]"
        band = f"band [{band_low:+.3f}, {band_high:+.3f}]"
        reason = {MEETS: f"{span} lies inside the {band}", FAILS: f"{span} lies outside the {band}",
                  INSUFFICIENT: f"{span} straddles the {band}"}[verdict]
    if verdict == INSUFFICIENT:
        reason += _detectable_text(detectable, confidence)
    method = (comparison.interval_method if comparison is not None else "") or "percentile bootstrap"
    return GroupVerdict(
        source=group.source, attribute=group.attribute, group=group.group, reference_group=reference.group,
        metric=margin.metric, n=group.n, reference_n=reference.n, estimate=group.estimate, ci_low=group.ci_low,
        ci_high=group.ci_high, difference=difference, difference_ci_low=low, difference_ci_high=high,
        p_value=p_value, band_low=band_low, band_high=band_high, margin=margin.describe(),
        interval_method=method, verdict=verdict, reason=reason, minimum_detectable_gap=detectable)


def gap_verdict(*, gap: GapEstimate, high_group: GroupEstimate, low_group: GroupEstimate, margin: MetricMargin,
                min_group_size: int, confidence: float) -> GapVerdict:
    """The verdict of a max - min gap: meets when its interval lies within [0, allowed], fails when the whole
    interval exceeds ``allowed``. ``allowed`` is ``max_difference`` and, with a ratio band, the largest gap
    whose min/max ratio stays inside it at the larger group's estimate (the smaller of the two)."""
    allowed = margin.max_difference if margin.max_difference is not None else math.inf
    if margin.ratio_low is not None and margin.ratio_high is not None and _finite(high_group.estimate):
        lowest_ratio = max(margin.ratio_low, 1 / margin.ratio_high)
        allowed = min(allowed, (1 - lowest_ratio) * high_group.estimate)
    detectable = detectable_gap(margin.metric, high_group.estimate, _denominator(low_group), _denominator(high_group),
                                confidence=confidence, direction="lower")
    small = [f"{g.group} has n = {g.n}" for g in (high_group, low_group) if g.n < min_group_size]
    if small:
        verdict = INSUFFICIENT
        reason = f"{' and '.join(small)}, below the plan's smallest group of {min_group_size}"
    elif not _finite(gap.ci_low, gap.ci_high, allowed):
        verdict, reason = INSUFFICIENT, gap.note or "no interval for the gap"
    else:
        verdict = interval_verdict(gap.ci_low, gap.ci_high, 0.0, allowed)
        span = f"interval [{gap.ci_low:.3f}, {gap.ci_high:.3f}]"
        reason = {MEETS: f"{span} stays within the allowed {allowed:.3f}",
                  FAILS: f"{span} lies above the allowed {allowed:.3f}",
                  INSUFFICIENT: f"{span} straddles the allowed {allowed:.3f}"}[verdict]
    if verdict == INSUFFICIENT:
        reason += _detectable_text(detectable, confidence)
    return GapVerdict(source=gap.source, attribute=gap.attribute, metric=gap.metric, group_max=gap.group_a,
                      group_min=gap.group_b, difference=gap.difference, ci_low=gap.ci_low, ci_high=gap.ci_high,
                      p_value=gap.p_value, allowed=allowed, verdict=verdict, reason=reason, minimum_detectable_gap=detectable)


def verdicts_from_audit(result: AuditResult, plan: AuditPlan) -> tuple[tuple[GroupVerdict, ...], tuple[GapVerdict, ...]]:
    """Verdicts for every planned (source, attribute, group, metric) against the reference group, and for
    every planned max - min gap.
    Groups of missing demographics ("UNK") and empty groups are not judged: they are no demographic group."""
    by_group = {(g.source, g.attribute, g.group, g.metric): g for g in result.groups}
    by_gap = {(g.source, g.attribute, g.metric, g.comparison, g.group_a, g.group_b): g for g in result.gaps}
    references = {(s, a): g for s, a, g in result.settings.reference_groups}
    # A pooled ("ALL") gap that does not hold within the sources is about the mix of sources, not the model.
    mixed = {(c.attribute, c.metric, frozenset((c.group_a, c.group_b))): c.reading for c in pooled_gap_checks(result)
             if c.reading not in ("persists within sources", "no clear gap")}
    groups, gaps = [], []
    for source in result.settings.sources:
        for attribute in plan.attributes:
            reference_name = references.get((source, attribute))
            for margin in plan.metrics:
                reference = by_group.get((source, attribute, reference_name, margin.metric))
                if reference is None:
                    continue
                members = [g for (s, a, _, m), g in by_group.items()
                           if s == source and a == attribute and m == margin.metric and g.n > 0 and g.group != "UNK"]
                for group in members:
                    if group.group == reference_name:
                        continue
                    comparison = by_gap.get((source, attribute, margin.metric, "vs-reference", group.group,
                                             reference_name))
                    verdict = group_verdict(
                        group=group, reference=reference, comparison=comparison, margin=margin,
                        min_group_size=plan.min_group_size, confidence=plan.confidence)
                    reading = mixed.get((attribute, margin.metric, frozenset((group.group, reference_name))))
                    if source == "ALL" and reading:
                        note = f"pooled over sources, this gap {reading}: read it per source"
                        verdict = dataclasses.replace(verdict, reason=f"{verdict.reason}; {note}" if verdict.reason
                                                      else note)
                    groups.append(verdict)
                maxmin = [g for g in result.gaps if g.source == source and g.attribute == attribute
                          and g.metric == margin.metric and g.comparison == "max-min"]
                for gap in maxmin:
                    high = by_group.get((source, attribute, gap.group_a, margin.metric))
                    low = by_group.get((source, attribute, gap.group_b, margin.metric))
                    if high is None or low is None or gap.group_a == gap.group_b:
                        continue
                    gaps.append(gap_verdict(
                        gap=gap, high_group=high, low_group=low, margin=margin,
                        min_group_size=plan.min_group_size, confidence=plan.confidence))
    return tuple(groups), tuple(gaps)


def verdict_counts(verdicts) -> dict[str, int]:
    """How many verdicts of each state (all three states present, in order)."""
    counts = dict.fromkeys(VERDICT_STATES, 0)
    for verdict in verdicts:
        counts[verdict.verdict] += 1
    return counts
