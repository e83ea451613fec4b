"""Does a gap seen with the sources pooled persist within the sources? (Simpson's paradox check.)

A pooled gap between two groups can come from the mix of sources alone: if men are mostly chest X-rays, where a
model finds almost nothing, men's pooled recall is low whatever the model does for men within each source. The
check compares each pooled pairwise gap with its source-standardised version: the within-source differences
``d_s = m_s(a) - m_s(b)`` averaged over the sources where both groups have a value, weighted by the two groups'
cases in the source (``w_s``). Its interval treats the sources as independent samples, each difference with the
standard error read off its own interval (Newcombe's for rates): ``SE = sqrt(sum_s w_s^2 SE_s^2)``, a normal
approximation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

POOLED = "ALL"


@dataclass(frozen=True)
class PooledGapCheck:
    """One pooled pairwise gap beside its source-standardised version and what that says.

    ``reading`` is "persists within sources" (the standardised interval excludes 0 on the same side),
    "reverses within sources" (it excludes 0 on the other side), "comes from the mix of sources" (the pooled
    interval excludes 0, the standardised one does not), or "no clear gap" (neither excludes 0).
    """

    attribute: str
    metric: str
    group_a: str
    group_b: str
    pooled_difference: float
    pooled_ci_low: float
    pooled_ci_high: float
    standardised_difference: float
    standardised_ci_low: float
    standardised_ci_high: float
    sources: tuple[str, ...]
    reading: str

    def describe(self) -> str:
        pooled = f"{self.pooled_difference:+.3f} [{self.pooled_ci_low:+.3f}, {self.pooled_ci_high:+.3f}]"
        within = (
            f"{self.standardised_difference:+.3f} [{self.standardised_ci_low:+.3f}, {self.standardised_ci_high:+.3f}]"
        )
        return (f"{self.metric} {self.group_a} minus {self.group_b}: pooled {pooled}, within sources {within}: "
                f"{self.reading}")


def _excludes_zero(low: float, high: float) -> bool:
    return bool(low > 0 or high < 0)


def pooled_gap_checks(result, *, confidence: float | None = None) -> list[PooledGapCheck]:
    """Every pooled pairwise gap of ``result`` (an ``AuditResult`` with a source column) with its check."""
    if len(result.settings.sources) <= 2:  # one source (plus "ALL"): nothing is pooled
        return []
    confidence = result.settings.confidence if confidence is None else confidence
    z = float(ndtri(0.5 + confidence / 2.0))
    sizes = {(g.source, g.attribute, g.group): g.n for g in result.groups}
    by_source = {}
    for gap in result.gaps:
        if gap.comparison == "pairwise" and gap.source != POOLED:
            by_source.setdefault((gap.attribute, gap.metric, gap.group_a, gap.group_b), []).append(gap)
    checks = []
    for gap in result.gaps:
        if gap.comparison != "pairwise" or gap.source != POOLED or np.isnan(gap.difference):
            continue
        rows = [r for r in by_source.get((gap.attribute, gap.metric, gap.group_a, gap.group_b), [])
                if not np.isnan(r.difference) and not np.isnan(r.ci_low) and not np.isnan(r.ci_high)]
        if not rows:
            continue
        weights = np.array([sizes[(r.source, r.attribute, r.group_a)] + sizes[(r.source, r.attribute, r.group_b)]
                            for r in rows], dtype=float)
        weights /= weights.sum()
        differences = np.array([r.difference for r in rows])
        standard_errors = np.array([(r.ci_high - r.ci_low) / (2 * z) for r in rows])
        standardised = float(weights @ differences)
        half = z * float(np.sqrt(np.sum(weights**2 * standard_errors**2)))
        low, high = standardised - half, standardised + half
        if _excludes_zero(low, high) and np.sign(standardised) == np.sign(gap.difference):
            reading = "persists within sources"
        elif _excludes_zero(low, high):
            reading = "reverses within sources (Simpson's paradox)"
        elif _excludes_zero(gap.ci_low, gap.ci_high):
            reading = "comes from the mix of sources"
        else:
            reading = "no clear gap"
        checks.append(PooledGapCheck(
            attribute=gap.attribute, metric=gap.metric, group_a=gap.group_a, group_b=gap.group_b,
            pooled_difference=gap.difference, pooled_ci_low=gap.ci_low, pooled_ci_high=gap.ci_high,
            standardised_difference=standardised, standardised_ci_low=low, standardised_ci_high=high,
            sources=tuple(r.source for r in rows), reading=reading,
        ))  # fmt: skip
    return checks
