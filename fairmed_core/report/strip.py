"""The audit's verdict strip: what a clinician should read first, in one line each, from intervals only.

For one source and attribute of an audit: how many group-vs-reference comparisons lie outside the acceptable
ratio band with their whole 95% interval (and how many inside, and how many the data cannot settle), the worst
group per metric, and the caveats that change how the rest reads: groups too small to support a claim, a
source where the model (almost) always gives one answer (there ratio verdicts are suppressed: a ratio of two
near-zero rates says nothing), and pooled gaps that come from the mix of sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fairmed_core.data.labels import attribute_label, group_label, source_label
from fairmed_core.fairness import (
    MISSING_GROUP,
    SPEC_BY_NAME,
    AuditResult,
    near_constant_sources,
    pooled_gap_checks,
)
from fairmed_core.report.verdicts import FAILS, INSUFFICIENT, MEETS, interval_verdict

FOUR_FIFTHS_BAND = (0.8, 1.25)
"""The default acceptable ratio band: the four-fifths rule of US employment law (29 CFR 1607.4(D)) made
symmetric, which fairness toolkits adopted as a rule of thumb; a review board should set its own."""


@dataclass(frozen=True)
class BandVerdict:
    """One group-vs-reference comparison of one metric against the ratio band, judged by its interval."""

    metric: str
    group: str
    reference: str
    difference: float
    ci_low: float
    ci_high: float
    band_low: float
    band_high: float
    verdict: str
    reason: str = ""


@dataclass(frozen=True)
class VerdictStrip:
    """Lines to show above an audit's numbers, most important first, and the verdicts behind them."""

    lines: tuple[str, ...]
    verdicts: tuple[BandVerdict, ...]
    suppressed_sources: tuple[str, ...]


def _band_verdicts(result: AuditResult, source: str, attribute: str, metrics, band, suppressed) -> list[BandVerdict]:
    estimates = {(g.group, g.metric): g.estimate for g in result.groups
                 if g.source == source and g.attribute == attribute}
    out = []
    for gap in result.gaps:
        if (gap.source, gap.attribute, gap.comparison) != (source, attribute, "vs-reference") or not gap.group_a:
            continue
        if gap.metric not in metrics:
            continue
        reference = estimates.get((gap.group_b, gap.metric), math.nan)
        if source in suppressed:
            verdict, reason = INSUFFICIENT, "near-constant answers in this source: ratio verdict suppressed"
            low = high = math.nan
        elif not math.isfinite(reference) or reference <= 0:
            verdict, reason, low, high = INSUFFICIENT, "the reference value is 0 or undefined", math.nan, math.nan
        else:
            low, high = (band[0] - 1) * reference, (band[1] - 1) * reference
            verdict, reason = interval_verdict(gap.ci_low, gap.ci_high, low, high), ""
        out.append(BandVerdict(gap.metric, gap.group_a, gap.group_b, gap.difference, gap.ci_low, gap.ci_high,
                               low, high, verdict, reason))  # fmt: skip
    return out


def _worst_groups(result: AuditResult, source: str, attribute: str, metrics) -> list[str]:
    parts = []
    for metric in metrics:
        rows = [g for g in result.groups if (g.source, g.attribute, g.metric) == (source, attribute, metric)
                and math.isfinite(g.estimate) and not g.small_group and MISSING_GROUP not in g.group.split(",")]
        better = SPEC_BY_NAME[metric].higher_is_better
        if len(rows) < 2 or better is None:
            continue
        worst = min(rows, key=lambda g: g.estimate if better else -g.estimate)
        label = SPEC_BY_NAME[metric].label
        parts.append(f"{label} {group_label(worst.group)} ({worst.estimate:.2f}, 95% CI "
                     f"{worst.ci_low:.2f}-{worst.ci_high:.2f})")
    return parts


def verdict_strip(result: AuditResult, *, source: str, attribute: str, metrics=None,
                  band: tuple[float, float] = FOUR_FIFTHS_BAND) -> VerdictStrip:
    """The strip for ``source`` and ``attribute`` of ``result`` (metrics: the audit's, by default)."""
    metrics = tuple(result.settings.metrics if metrics is None else metrics)
    near = near_constant_sources(result)
    # A near-constant source also distorts the pooled ratios it enters.
    suppressed = tuple(sorted({n.source for n in near} | ({"ALL"} if near else set())))
    verdicts = _band_verdicts(result, source, attribute, metrics, band, suppressed)
    counts = {state: sum(v.verdict == state for v in verdicts) for state in (FAILS, MEETS, INSUFFICIENT)}
    where = "all sources pooled" if source == "ALL" else source_label(source)
    lines = []
    failing = [v for v in verdicts if v.verdict == FAILS]
    head = (f"{where}, {attribute_label(attribute)}: {counts[FAILS]} of {len(verdicts)} group-vs-reference comparisons are outside "
            f"the {band[0]:g}-{band[1]:g} ratio band with their whole 95% interval; {counts[MEETS]} are inside it; "
            f"{counts[INSUFFICIENT]} cannot be settled by these data.")
    if failing:
        head += " Outside: " + "; ".join(
            f"{SPEC_BY_NAME[v.metric].label} {group_label(v.group)} vs {group_label(v.reference)} "
            f"({v.difference:+.2f})" for v in failing[:4]) + ("; ..." if len(failing) > 4 else "") + "."
    lines.append(head)
    worst = _worst_groups(result, source, attribute, metrics)
    if worst:
        lines.append("Lowest-performing group (among recorded groups large enough to support a claim): "
                     + "; ".join(worst) + ".")
    small = sorted({g.group for g in result.groups
                    if g.source == source and g.attribute == attribute and g.small_group and g.n > 0})
    if small:
        lines.append(f"Too small to support a claim: {', '.join(group_label(g) for g in small)} "
                     "(read their intervals, not their bars).")
    for item in near:
        if source in (item.source, "ALL"):
            lines.append(f"{item.describe()}: its gaps measure a model that does not tell cases apart there; "
                         "ratio verdicts are suppressed.")
    if source == "ALL":
        mixed = [c for c in pooled_gap_checks(result) if c.attribute == attribute and c.metric in metrics
                 and c.reading != "persists within sources" and c.reading != "no clear gap"]
        if mixed:
            lines.append("Pooled gaps that do not hold within sources: " + "; ".join(
                f"{SPEC_BY_NAME[c.metric].label} {group_label(c.group_a)} vs {group_label(c.group_b)} "
                f"{c.reading}" for c in mixed[:4]) + ". See each source.")
    return VerdictStrip(lines=tuple(lines), verdicts=tuple(verdicts), suppressed_sources=suppressed)
