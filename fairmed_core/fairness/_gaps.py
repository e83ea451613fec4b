"""Between-group gaps of a metric, their bootstrap tests, multiple-comparison corrections and summaries.

Conventions, chosen to agree with fairlearn where fairlearn has a definition:

* max-min gap = largest minus smallest group value (fairlearn ``difference(method="between_groups")``),
  ratio = smallest / largest (fairlearn ``ratio(method="between_groups")``); fairlearn's ``to_overall``
  difference is the largest absolute "vs-overall" difference.
* Groups whose value is undefined (NaN) are left out and named in the note; empty groups are not compared.
* Pairwise tests: a permutation test of the group labels within the source (``_permutation``), exact under
  the null hypothesis (its type-I error is at most alpha at every group size). A Wald test on the bootstrap
  SE (:func:`wald_p_value`, the audit's test before) is kept for comparisons: measured anti-conservative for
  small groups (``benchmarks/audit_validity.py``). p-values are corrected within the (source, attribute, metric) family by Holm (step-down, controls the
  family-wise error rate) or Benjamini-Hochberg (step-up, controls the false discovery rate).
* Intervals of a difference: Newcombe's hybrid score interval for a proportion metric (two independent
  groups), the percentile bootstrap of the difference otherwise.
* max-min rows are tested too (permutation test of the range: "are all groups equal?"), as one test of
  their own, not part of the pairwise family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from fairmed_core.fairness._bootstrap import bootstrap_standard_error, percentile_interval
from fairmed_core.fairness._intervals import minimum_detectable_gap, mover_difference_interval
from fairmed_core.fairness._metric_spec import SPEC_BY_NAME
from fairmed_core.fairness._results import Estimate, GapEstimate

SIGNIFICANCE_LEVEL = 0.05
POWER = 0.8
"""Power at which the minimum detectable gap is stated."""
_MAX_NAMED = 4
_MAX_PAIR_SAMPLES = 2_000_000  # resampled differences held at once (16 MB)
MAX_PAIRWISE_GROUPS = 40
"""Above this many non-empty groups in one partition (780 pairs), there are no pairwise rows or pairwise tests:
the max-min row tests all groups at once and the vs-reference rows compare each group with the reference, so
the cost and the table stay linear in the number of groups (a table with hundreds of sites stays usable)."""
_Z_SUM = 2.8015852  # z_{0.975} + z_{0.80}: the normal-approximation detectable gap is this many SEs


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries are not tests and stay NaN.

    Sorted ascending, ``p_(i)`` becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))`` (1-based ``j``).
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (q-values); NaN entries stay NaN.

    Sorted ascending, ``p_(i)`` becomes ``min_{j>=i} min(1, m p_(j) / j)``.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    scaled = np.minimum(1.0, m * p[order] / np.arange(1, m + 1))
    out[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return out


CORRECTIONS = {
    "holm": holm,
    "bh": benjamini_hochberg,
    "none": lambda p: np.asarray(p, dtype=float).copy(),
}
CORRECTION_ALIASES = {
    "holm": "holm",
    "bh": "bh",
    "fdr_bh": "bh",
    "benjamini-hochberg": "bh",
    "benjamini_hochberg": "bh",
    "none": "none",
}


def wald_p_value(difference: np.ndarray, standard_error: np.ndarray) -> np.ndarray:
    """Two-sided p-value of ``difference / standard_error`` under N(0, 1); SE 0 gives 1 (no gap) or 0."""
    difference = np.asarray(difference, dtype=float)
    standard_error = np.asarray(standard_error, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(difference) / standard_error
    p = 2.0 * ndtr(-z)
    degenerate = standard_error == 0
    p = np.where(degenerate, np.where(difference == 0, 1.0, 0.0), p)
    return np.where(np.isnan(difference) | np.isnan(standard_error), np.nan, p)


@dataclass(frozen=True, eq=False)
class MetricPartition:
    """One metric over the groups of one (source, attribute), with what its intervals and tests need.

    ``boot`` is ``(n_boot, n_groups)`` or None without a bootstrap; ``overall_boot`` holds the union of the
    groups in the same resamples (so group-vs-overall differences keep their correlation). ``successes`` and
    ``denominators`` are set for a proportion metric with closed-form intervals (Newcombe for differences);
    ``pair_p_values`` maps a pair ``(i, j)``, ``i < j``, to its permutation p-value, and ``range_p_value`` is
    the permutation p-value of the max - min gap; None (NaN) without tests.
    """

    source: str
    attribute: str
    metric: str
    groups: tuple[str, ...]
    n: np.ndarray
    estimate: np.ndarray
    reasons: tuple[str, ...]
    boot: np.ndarray | None
    overall_estimate: float
    overall_boot: np.ndarray | None
    reference: str | None
    group_low: np.ndarray | None = None
    group_high: np.ndarray | None = None
    successes: np.ndarray | None = None
    denominators: np.ndarray | None = None
    pair_p_values: Mapping[tuple[int, int], float] | None = None
    range_p_value: float = float("nan")
    test_method: str = ""

    @property
    def interval_method(self) -> str:
        if self.group_low is None:
            return "percentile bootstrap"
        return "Newcombe hybrid score" if SPEC_BY_NAME[self.metric].proportion else "MOVER from score intervals"


def _name_groups(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


def _undefined_note(part: MetricPartition, indices: Sequence[int]) -> str:
    described = [f"{part.groups[i]} ({part.reasons[i] or 'undefined'})" for i in indices]
    return f"{part.metric} undefined for {_name_groups(described)}"


def _interval(samples: np.ndarray | None, confidence: float) -> tuple[float, float]:
    if samples is None:
        return float("nan"), float("nan")
    low, high = percentile_interval(samples[:, None], confidence=confidence)
    return float(low[0]), float(high[0])


def range_over_groups(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """max - min over the masked groups (last axis), NaN-aware; NaN where fewer than two are defined."""
    chosen = values[..., mask]
    defined = ~np.isnan(chosen)
    top = np.where(defined, chosen, -np.inf).max(axis=-1, initial=-np.inf)
    bottom = np.where(defined, chosen, np.inf).min(axis=-1, initial=np.inf)
    return np.where(defined.sum(axis=-1) >= 2, top - bottom, np.nan)


def min_over_groups(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    chosen = values[..., mask]
    defined = ~np.isnan(chosen)
    low = np.where(defined, chosen, np.inf).min(axis=-1, initial=np.inf)
    return np.where(defined.any(axis=-1), low, np.nan)


def std_over_groups(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sample standard deviation (ddof=1) over the masked, defined groups; NaN with fewer than two."""
    chosen = values[..., mask]
    defined = ~np.isnan(chosen)
    count = defined.sum(axis=-1)
    total = np.where(defined, chosen, 0.0).sum(axis=-1)
    mean = np.divide(total, count, out=np.zeros(count.shape), where=count > 0)
    squares = np.where(defined, (chosen - mean[..., None]) ** 2, 0.0).sum(axis=-1)
    variance = np.full(count.shape, np.nan)
    np.divide(squares, count - 1, out=variance, where=count >= 2)
    return np.sqrt(variance)


def _ratio(a: float, b: float) -> tuple[float, str]:
    if np.isnan(a) or np.isnan(b):
        return float("nan"), ""
    if b == 0:
        return float("nan"), "ratio undefined: denominator is 0"
    return float(a / b), ""


@dataclass(frozen=True, eq=False)
class _PairStatistics:
    """Arrays over a list of pairs (a, b); b None means the overall value."""

    difference: np.ndarray
    ratio: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    standard_error: np.ndarray
    resamples_used: np.ndarray
    minimum_detectable_gap: np.ndarray


def _detectable_gap(
    part: MetricPartition, a_index: np.ndarray, b_index: np.ndarray, se: np.ndarray, *, confidence: float
) -> np.ndarray:
    """Minimum gap from group b that a test at 5% detects with 80% power, given both groups' sizes.

    Proportions: Cohen's arcsine rule on the counts, in the direction that is worse for group a;
    other metrics: 2.80 standard errors of the difference (normal approximation), the standard error read
    off the closed-form difference interval where there is one, else the bootstrap's.
    """
    spec = SPEC_BY_NAME[part.metric]
    if part.successes is None or not spec.proportion:
        if part.group_low is not None:
            low, high = _mover(part, a_index, b_index)
            z = float(ndtri(0.5 + confidence / 2.0))
            return _Z_SUM * (high - low) / (2.0 * z)
        return _Z_SUM * se
    direction = {True: "lower", False: "higher", None: "either"}[spec.higher_is_better]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate_b = part.successes[b_index] / part.denominators[b_index]
    return minimum_detectable_gap(
        rate_b,
        part.denominators[a_index],
        part.denominators[b_index],
        alpha=SIGNIFICANCE_LEVEL,
        power=POWER,
        direction=direction,
    )


def _mover(part: MetricPartition, a_index: np.ndarray, b_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = mover_difference_interval(
        part.estimate[a_index], part.group_low[a_index], part.group_high[a_index],
        part.estimate[b_index], part.group_low[b_index], part.group_high[b_index],
    )  # fmt: skip
    return np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)


def _pair_statistics(
    part: MetricPartition, pairs: Sequence[tuple[int, int | None]], *, confidence: float
) -> _PairStatistics:
    """Difference, ratio, interval, bootstrap SE and detectable gap for every pair at once."""
    a_index = np.array([a for a, _ in pairs], dtype=np.int64)
    value_a = part.estimate[a_index]
    value_b = np.array(
        [part.overall_estimate if b is None else part.estimate[b] for _, b in pairs], dtype=float
    )
    difference = value_a - value_b
    ratio = np.full(len(pairs), np.nan)
    np.divide(value_a, value_b, out=ratio, where=~np.isnan(difference) & (value_b != 0))
    nan = np.full(len(pairs), np.nan)
    low, high, se, count = nan.copy(), nan.copy(), nan.copy(), np.zeros(len(pairs), dtype=int)
    between_groups = bool(pairs) and all(b is not None for _, b in pairs)
    # Differences of two groups with closed-form intervals need no resampled differences at all.
    if part.boot is not None and pairs and not (between_groups and part.group_low is not None):
        # In chunks of pairs, so that a partition with many groups costs memory linear in its groups.
        chunk = max(1, _MAX_PAIR_SAMPLES // max(1, part.boot.shape[0]))
        for start in range(0, len(pairs), chunk):
            block = pairs[start : start + chunk]
            b_samples = np.stack([part.overall_boot if b is None else part.boot[:, b] for _, b in block], axis=1)
            samples = part.boot[:, a_index[start : start + len(block)]] - b_samples
            samples[:, np.isnan(difference[start : start + len(block)])] = np.nan
            low[start : start + len(block)], high[start : start + len(block)] = percentile_interval(
                samples, confidence=confidence
            )
            se[start : start + len(block)], count[start : start + len(block)] = bootstrap_standard_error(samples)
    detectable = nan.copy()
    if between_groups:
        b_index = np.array([b for _, b in pairs], dtype=np.int64)
        detectable = _detectable_gap(part, a_index, b_index, se, confidence=confidence)
        if part.group_low is not None:  # two independent groups: MOVER (Newcombe for proportions)
            low, high = _mover(part, a_index, b_index)
    undefined = np.isnan(difference)
    low, high = np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)
    return _PairStatistics(difference, ratio, low, high, se, count, detectable)


def _pair_p_values(part: MetricPartition, pairs: Sequence[tuple[int, int]], stats: _PairStatistics) -> np.ndarray:
    """Raw two-sided permutation p-values of the pairs (NaN without tests or where a value is undefined)."""
    if part.pair_p_values is None:
        return np.full(len(pairs), np.nan)
    p = np.array([part.pair_p_values.get((min(a, b), max(a, b)), np.nan) for a, b in pairs], dtype=float)
    return np.where(np.isnan(stats.difference), np.nan, p)


def _pair_gaps(
    part: MetricPartition,
    pairs: Sequence[tuple[int, int | None]],
    stats: _PairStatistics,
    *,
    comparison: str,
    p_raw: np.ndarray,
    p_adjusted: np.ndarray,
) -> list[GapEstimate]:
    """Gap rows for pairs (a, b) of group indices; b None compares with the overall value."""
    n_boot = 0 if part.boot is None else part.boot.shape[0]
    between_groups = comparison != "vs-overall"
    interval_method = part.interval_method if between_groups else "percentile bootstrap"
    gaps = []
    for k, (a, b) in enumerate(pairs):
        notes = []
        if np.isnan(stats.difference[k]):
            undefined = [i for i in ([a] if b is None else [a, b]) if np.isnan(part.estimate[i])]
            notes.append(
                _undefined_note(part, undefined) if undefined else f"{part.metric} undefined overall"
            )
        else:
            if np.isnan(stats.ratio[k]):
                notes.append("ratio undefined: denominator is 0")
            if comparison != "vs-overall" and int((part.n > 0).sum()) > MAX_PAIRWISE_GROUPS:
                notes.append(f"not tested pair by pair: more than {MAX_PAIRWISE_GROUPS} groups (the max-min row "
                             "tests all groups at once)")
            if n_boot and interval_method == "percentile bootstrap" and stats.resamples_used[k] < n_boot:
                notes.append(
                    f"interval from {int(stats.resamples_used[k])} of {n_boot} resamples "
                    "(undefined in the rest)"
                )
        p = float(p_adjusted[k])
        gaps.append(
            GapEstimate(
                source=part.source,
                attribute=part.attribute,
                metric=part.metric,
                comparison=comparison,
                group_a=part.groups[a],
                group_b="ALL" if b is None else part.groups[b],
                difference=float(stats.difference[k]),
                ratio=float(stats.ratio[k]),
                ci_low=float(stats.ci_low[k]),
                ci_high=float(stats.ci_high[k]),
                p_value_raw=float(p_raw[k]),
                p_value=p,
                significant=bool(p < SIGNIFICANCE_LEVEL),
                note="; ".join(notes),
                interval_method=interval_method if not np.isnan(stats.ci_low[k]) else "",
                test_method=part.test_method if not np.isnan(p_raw[k]) else "",
                minimum_detectable_gap=float(stats.minimum_detectable_gap[k]),
            )
        )
    return gaps


def _max_min_gap(part: MetricPartition, *, confidence: float) -> GapEstimate:
    present = part.n > 0
    defined = present & ~np.isnan(part.estimate)
    notes = []
    undefined = np.flatnonzero(present & ~defined)
    if undefined.size:
        notes.append(
            f"computed over the {int(defined.sum())} groups with a defined value; "
            + _undefined_note(part, undefined.tolist())
        )
    empty = [part.groups[i] for i in np.flatnonzero(~present)]
    if empty:
        notes.append(f"empty groups not compared: {_name_groups(empty)}")
    nan = float("nan")
    if defined.sum() < 2:
        if len(part.groups) == 1:
            notes.insert(0, f"the attribute has a single group ({part.groups[0]}): nothing to compare")
        else:
            notes.insert(0, "fewer than two groups with a defined value: nothing to compare")
        only = np.flatnonzero(defined)
        name = part.groups[only[0]] if only.size else ""
        return GapEstimate(
            part.source, part.attribute, part.metric, "max-min", name, name,
            nan, nan, nan, nan, nan, nan, False, "; ".join(notes),
        )  # fmt: skip
    values = np.where(defined, part.estimate, np.nan)
    top, bottom = int(np.nanargmax(values)), int(np.nanargmin(values))
    difference = float(values[top] - values[bottom])
    ratio, ratio_note = _ratio(float(values[bottom]), float(values[top]))
    if ratio_note:
        notes.append("ratio undefined: the largest value is 0")
    ci_low = ci_high = nan
    if part.boot is not None:
        ci_low, ci_high = _interval(range_over_groups(part.boot, defined), confidence)
    p = float(part.range_p_value)
    return GapEstimate(
        part.source, part.attribute, part.metric, "max-min", part.groups[top], part.groups[bottom],
        difference, ratio, ci_low, ci_high, p, p, bool(p < SIGNIFICANCE_LEVEL), "; ".join(notes),
        interval_method="percentile bootstrap" if not np.isnan(ci_low) else "",
        test_method=f"{part.test_method} of the range (all groups equal)" if not np.isnan(p) else "",
    )  # fmt: skip


def partition_gaps(part: MetricPartition, *, confidence: float, correction: str) -> list[GapEstimate]:
    """max-min, pairwise, vs-reference and vs-overall gaps of one metric over one (source, attribute).

    The pairwise tests of one partition are one family: their p-values are corrected together with
    ``correction`` ("holm", "bh" or "none"). vs-reference rows test the same hypotheses as pairwise rows,
    so they reuse the pairwise row's raw and corrected p-values instead of enlarging the family; the
    max-min row carries the permutation test that all groups are equal (one test, uncorrected);
    vs-overall rows are not tested (a group is part of the overall value).
    """
    gaps = [_max_min_gap(part, confidence=confidence)]
    present = [int(i) for i in np.flatnonzero(part.n > 0)]
    pairs = []
    if len(present) <= MAX_PAIRWISE_GROUPS:
        pairs = [(i, j) for position, i in enumerate(present) for j in present[position + 1 :]]
    stats = _pair_statistics(part, pairs, confidence=confidence)
    p_raw = _pair_p_values(part, pairs, stats)
    adjusted = CORRECTIONS[correction](p_raw)
    gaps += _pair_gaps(part, pairs, stats, comparison="pairwise", p_raw=p_raw, p_adjusted=adjusted)
    test_of_pair = {frozenset(pair): k for k, pair in enumerate(pairs)}
    if part.reference is not None and len(part.groups) > 1:
        r = part.groups.index(part.reference)
        if part.n[r] == 0:
            nan = float("nan")
            gaps.append(
                GapEstimate(
                    part.source, part.attribute, part.metric, "vs-reference", "", part.reference,
                    nan, nan, nan, nan, nan, nan, False,
                    f"reference group {part.reference} has no cases in this source",
                )  # fmt: skip
            )
        else:
            ref_pairs = [(g, r) for g in present if g != r]
            if pairs:
                which = np.array([test_of_pair[frozenset(pair)] for pair in ref_pairs], dtype=np.int64)
                ref_raw, ref_adjusted = p_raw[which], adjusted[which]
            else:
                ref_raw = ref_adjusted = np.full(len(ref_pairs), np.nan)
            gaps += _pair_gaps(
                part,
                ref_pairs,
                _pair_statistics(part, ref_pairs, confidence=confidence),
                comparison="vs-reference",
                p_raw=ref_raw,
                p_adjusted=ref_adjusted,
            )
    overall_pairs = [(g, None) for g in present]
    untested = np.full(len(overall_pairs), np.nan)
    gaps += _pair_gaps(
        part,
        overall_pairs,
        _pair_statistics(part, overall_pairs, confidence=confidence),
        comparison="vs-overall",
        p_raw=untested,
        p_adjusted=untested,
    )
    return gaps


@dataclass(frozen=True, eq=False)
class SummaryInputs:
    """Per-group recall, FPR, FDR and F1 (``(..., n_groups)``) and overall F1 and accuracy (``(...)``).

    Leading axes are () for the point estimate and (n_boot,) for the bootstrap; ``defined`` holds, per
    metric, the groups whose point estimate is defined (the groups a gap is computed over).
    """

    recall: np.ndarray
    fpr: np.ndarray
    fdr: np.ndarray
    f1: np.ndarray
    overall_f1: np.ndarray
    overall_accuracy: np.ndarray


def summary_statistics(inputs: SummaryInputs, defined: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """FairGRPO-paper statistics (see :class:`FairnessSummary`), vectorised over leading axes."""
    tpr_gap = range_over_groups(inputs.recall, defined["recall"])
    fpr_gap = range_over_groups(inputs.fpr, defined["fpr"])
    sigma_f1 = std_over_groups(inputs.f1, defined["f1"])
    return {
        "predictive_parity": 100.0 * range_over_groups(inputs.fdr, defined["fdr"]),
        "equal_opportunity_difference": 100.0 * tpr_gap,
        # fmax ignores a NaN side, as an undefined FPR gap should not hide a defined TPR gap.
        "equalized_odds_difference": np.fmax(tpr_gap, fpr_gap),
        "sigma_f1": sigma_f1,
        "f1": np.asarray(inputs.overall_f1, dtype=float),
        "f1_es": inputs.overall_f1 / (1.0 + sigma_f1),
        "accuracy": np.asarray(inputs.overall_accuracy, dtype=float),
        "worst_group_f1": min_over_groups(inputs.f1, defined["f1"]),
    }


def to_estimate(point: float, samples: np.ndarray | None, *, confidence: float) -> Estimate:
    low, high = _interval(samples, confidence) if not np.isnan(point) else (float("nan"),) * 2
    return Estimate(float(point), low, high)


def mean_over(rows: Sequence[np.ndarray]) -> np.ndarray:
    """NaN-ignoring mean of equally shaped arrays (an aggregate skips rows where a statistic is undefined)."""
    stacked = np.stack([np.asarray(r, dtype=float) for r in rows])
    defined = ~np.isnan(stacked)
    count = defined.sum(axis=0)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    out = np.full(count.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out
