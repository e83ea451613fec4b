"""The fairness audit: per-group metrics, gaps, tests and summaries with bootstrap intervals, in one call."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._bootstrap import multinomial_rows, percentile_interval
from fairmed_core.fairness._calibration import (
    N_ECE_BINS,
    N_FINE_BINS,
    N_FINE_BINS_ECE_ONLY,
    bootstrap_partition,
    _resampled_statistics,
    calibration_cells,
    exact_auroc_by_group,
    exact_ece,
)
from fairmed_core.fairness._counts import (
    OVERALL_ATTRIBUTE,
    POOLED_SCOPE,
    Block,
    Layout,
    build_layout,
    stratum_confusion_counts,
    unit_counts,
)
from fairmed_core.fairness._encode import EncodedTable, encode_table
from fairmed_core.fairness._format_failures import check_policy, score_format_failures
from fairmed_core.fairness._gaps import (
    CORRECTION_ALIASES,
    MAX_PAIRWISE_GROUPS,
    MetricPartition,
    SummaryInputs,
    mean_over,
    partition_gaps,
    summary_statistics,
    to_estimate,
)
from fairmed_core.fairness._intervals import INTERVAL_METHODS, proportion_interval
from fairmed_core.fairness._columns import PredictionColumns, resolve_columns
from fairmed_core.fairness._metric_spec import METRIC_SPECS, SPEC_BY_NAME
from fairmed_core.fairness._metrics import CONFUSION_METRICS, confusion_metrics, undefined_reasons
from fairmed_core.fairness._permutation import cell_parts, permutation_p_value, permuted_group_counts
from fairmed_core.fairness._paper_protocol import check_protocol, paper_protocol_of_table
from fairmed_core.fairness._predictions import MISSING_GROUP, validate_predictions
from fairmed_core.fairness._results import (
    METRICS,
    SUMMARY_STATISTICS,
    AuditResult,
    AuditSettings,
    FairnessSummary,
    GapEstimate,
    GroupEstimate,
)

PERMUTATION_TEST = "permutation test of group labels within source"
MIN_CLASS_CASES = 5
"""Fewer positives (or negatives) than this make class-conditional metrics of a group unreliable."""

MEAN_OVER_ATTRIBUTES = "mean over attributes"
MEAN_OVER_SOURCES = "mean over sources"
_IN_MEMORY_SOURCE = "<predictions table>"
_SCORE_METRICS = tuple(spec.name for spec in METRIC_SPECS if spec.needs_score)
_MULTICLASS_AUROC_REASON = (
    "AUROC needs one score per class; a multi-class table has one score column, read as the "
    "confidence of the predicted class"
)


def _check_settings(
    *,
    metrics: Sequence[str],
    n_boot: int,
    confidence: float,
    correction: str,
    min_group_size: int,
    seed: int,
) -> tuple[tuple[str, ...], str]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise FairMedInputError(
            f"unknown metric(s) {unknown}" if unknown else "no metric requested",
            hint=f"choose from {', '.join(METRICS)}",
        )
    if not isinstance(n_boot, numbers.Integral) or isinstance(n_boot, bool) or n_boot < 0:
        raise FairMedInputError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    if not isinstance(confidence, numbers.Real) or not 0.0 < float(confidence) < 1.0:
        raise FairMedInputError(f"confidence must be between 0 and 1, got {confidence!r}")
    key = str(correction).lower()
    if key not in CORRECTION_ALIASES:
        raise FairMedInputError(
            f"unknown correction {correction!r}", hint="use 'holm', 'bh' (Benjamini-Hochberg) or 'none'"
        )
    if not isinstance(min_group_size, numbers.Integral) or min_group_size < 0:
        raise FairMedInputError(f"min_group_size must be a whole number >= 0, got {min_group_size!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise FairMedInputError(f"seed must be a whole number >= 0, got {seed!r}")
    ordered = tuple(m for m in METRICS if m in metrics)
    return ordered, CORRECTION_ALIASES[key]


def _small_group_reasons(
    unit_n: np.ndarray, class_counts: np.ndarray, table: EncodedTable, min_group_size: int
) -> list[str]:
    reasons = []
    for n, per_class in zip(unit_n, class_counts, strict=True):
        parts = []
        if n == 0:
            parts.append("empty group (no rows)")
        else:
            if n < min_group_size:
                parts.append(f"n = {int(n)} is below min_group_size = {min_group_size}")
            if table.binary:
                positives, negatives = int(per_class[1]), int(per_class[0])
                if positives < MIN_CLASS_CASES:
                    parts.append(
                        f"only {positives} positive cases (< {MIN_CLASS_CASES}): recall, F1 and "
                        "TPR-based gaps are unreliable"
                    )
                if negatives < MIN_CLASS_CASES:
                    parts.append(
                        f"only {negatives} negative cases (< {MIN_CLASS_CASES}): specificity, FPR and "
                        "FPR-based gaps are unreliable"
                    )
            else:
                rarest = int(np.argmin(per_class))
                if per_class[rarest] < MIN_CLASS_CASES:
                    parts.append(
                        f"class {table.classes[rarest]!r} has only {int(per_class[rarest])} cases "
                        f"(< {MIN_CLASS_CASES}): its class-conditional metrics are unreliable"
                    )
                outside = int(n - per_class.max())
                if outside < MIN_CLASS_CASES:
                    parts.append(
                        f"only {outside} cases outside the most common class (< {MIN_CLASS_CASES}): "
                        "specificity and FPR are unreliable"
                    )
        reasons.append("; ".join(parts))
    return reasons


def _score_metrics(
    table: EncodedTable, layout: Layout, *, n_boot: int, n_fine: int, rng
) -> tuple[np.ndarray, np.ndarray | None, dict[int, np.ndarray]]:
    """AUROC and ECE per unit: estimates ``(n_units, 2)``, draws ``(n_boot, n_units, 2)`` and, per block,
    the pooled draws ``(n_boot, 2)`` used for its group-vs-overall gaps."""
    estimates = np.full((layout.n_units, 2), np.nan)
    draws = np.full((n_boot, layout.n_units, 2), np.nan) if n_boot else None
    pooled: dict[int, np.ndarray] = {}
    overall_auroc: dict[str, float] = {}
    score_orders: dict[str, np.ndarray] = {}
    for index, block in enumerate(layout.blocks):
        in_scope = slice(None) if block.scope_index is None else table.source_codes == block.scope_index
        score = table.score[in_scope]
        target = table.calibration_target[in_scope]
        if block.attribute_index is None:
            group = np.zeros(score.size, dtype=np.int64)
        else:
            group = table.attributes[block.attribute_index].codes[in_scope]
        n_groups = len(block.groups)
        if table.binary:
            if block.scope not in score_orders:
                score_orders[block.scope] = np.argsort(score, kind="stable")
            order = score_orders[block.scope]
            auroc = exact_auroc_by_group(score, target, group, n_groups, score_order=order)
            if block.scope not in overall_auroc:
                overall_auroc[block.scope] = float(
                    exact_auroc_by_group(
                        score, target, np.zeros(score.size, dtype=np.int64), 1, score_order=order
                    )[0]
                )
        else:
            auroc = np.full(n_groups, np.nan)
            overall_auroc[block.scope] = float("nan")
        counts, sums = calibration_cells(score, target, group, n_groups, n_fine=n_fine)
        estimates[block.units, 0] = auroc
        estimates[block.units, 1] = exact_ece(counts, sums)
        if n_boot:
            result = bootstrap_partition(
                counts, sums, auroc, overall_auroc[block.scope], n_boot=n_boot, rng=rng
            )
            draws[:, block.units, :] = result.groups
            pooled[index] = result.pooled
    return estimates, draws, pooled


def _score_reasons(
    table: EncodedTable, unit_n: np.ndarray, class_counts: np.ndarray, estimates
) -> np.ndarray:
    reasons = np.full(estimates.shape, "", dtype=object)
    empty = unit_n == 0
    reasons[empty, :] = "empty group (no rows)"
    if table.binary:
        single = ~empty & ((class_counts[:, 0] == 0) | (class_counts[:, 1] == 0))
        reasons[single, 0] = "only one class in the group: AUROC needs positive and negative cases"
    else:
        reasons[~empty, 0] = _MULTICLASS_AUROC_REASON
    return np.where(np.isnan(estimates), reasons, "")


def _reference_for(
    block: Block, units: np.ndarray, unit_n: np.ndarray, requested: Mapping[str, str]
) -> str | None:
    """The requested reference group if it is among ``block.groups``, else the largest of them."""
    if block.attribute in requested:
        return requested[block.attribute] if requested[block.attribute] in block.groups else None
    sizes = unit_n[units]
    if sizes.sum() == 0:
        return None
    return block.groups[int(np.argmax(sizes))]  # the largest group, the usual default reference


_UNDERCOVERING = {
    "auroc": (30, "percentile bootstrap: below 95% coverage in groups under 30 cases (0.84 in the simulation "
              "study, docs/RESULTS.md)"),
    "ece": (10**12, "ECE is biased upward in small groups and its interval undercovers (simulation: 0.37 at "
            "10-29 cases, 0.64 at 30-99, 0.85 at 100+; docs/RESULTS.md): compare groups of similar size"),
}
"""Where the simulation study measured a bootstrap interval below its nominal coverage, said beside the number."""
MIN_BOOTSTRAP_CASES = 10
"""A bootstrap interval of a group with fewer cases than this is not reported: too few distinct resamples."""
_MAX_CHUNK_VALUES = 4_000_000


def _partition_cells(layout: Layout, unit_cells: np.ndarray) -> dict[int, np.ndarray]:
    """Per block, the counts ``(n_strata, n_groups, K * K)`` of the partition it reports.

    A source's block is one stratum (its groups); a pooled block's strata are the sources, so that resampling
    and permutation both keep each source's share of every group.
    """
    per_source: dict[str, list[np.ndarray]] = {}
    cells: dict[int, np.ndarray] = {}
    for index, block in enumerate(layout.blocks):
        if block.scope_index is not None:
            cells[index] = unit_cells[block.units][None]
            per_source.setdefault(block.attribute, []).append(cells[index][0])
    for index, block in enumerate(layout.blocks):
        if block.scope_index is None:
            stacked = per_source.get(block.attribute)
            cells[index] = np.stack(stacked) if stacked else unit_cells[block.units][None]
    return cells


def _partition_bootstrap(
    table: EncodedTable, layout: Layout, cells: Mapping[int, np.ndarray], *, n_boot: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap stratified by the reported partition: confusion metrics ``(n_boot, n_units, 8)`` of every
    group, and ``(n_boot, n_blocks, 8)`` of the union of each block's groups in the same resamples.

    Each (source, group) of an attribute keeps its size; a pooled group is the sum of its sources'
    resamples. Different attributes are resampled independently (each is its own report).
    """
    k = table.n_classes
    scoring = {"binary": table.binary, "failure_class": table.failure_class}
    n_metrics = len(CONFUSION_METRICS)
    groups = np.empty((n_boot, layout.n_units, n_metrics))
    unions = np.empty((n_boot, len(layout.blocks), n_metrics))
    chunk = max(1, min(n_boot, _MAX_CHUNK_VALUES // max(1, layout.n_units * k * k)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        pooled: dict[str, np.ndarray] = {}
        drawn: dict[int, np.ndarray] = {}
        for index, block in enumerate(layout.blocks):
            if block.scope_index is not None:
                drawn[index] = multinomial_rows(cells[index][0], n_boot=b, rng=rng)
                pooled[block.attribute] = pooled.get(block.attribute, 0.0) + drawn[index]
        for index, block in enumerate(layout.blocks):
            if block.scope_index is None:
                drawn[index] = pooled.get(block.attribute)
                if drawn[index] is None:  # no sources: the pooled scope is the only stratum
                    drawn[index] = multinomial_rows(cells[index][0], n_boot=b, rng=rng)
            draws = drawn[index].reshape(b, len(block.groups), k, k)
            groups[start : start + b, block.units] = confusion_metrics(draws, **scoring)
            unions[start : start + b, index] = confusion_metrics(draws.sum(axis=1), **scoring)
    return groups, unions


def _source_stratified_unit_metrics(
    table: EncodedTable, layout: Layout, stratum_counts: np.ndarray, *, n_boot: int, rng
) -> np.ndarray:
    """Confusion metrics ``(n_boot, n_units, 8)`` of every unit under one bootstrap stratified by source only.

    One resample serves every attribute at once, so statistics averaged over attributes (the aggregate
    summary rows) keep the correlation they have in the data (the same cases are grouped by sex and by age).
    """
    k = table.n_classes
    strata_of_source = [
        layout.membership[layout.block(block.scope, OVERALL_ATTRIBUTE).units.start].indices
        for block in layout.blocks
        if block.attribute == OVERALL_ATTRIBUTE and (block.scope_index is not None or not table.sources)
    ]
    out = np.empty((n_boot, layout.n_units, len(CONFUSION_METRICS)))
    chunk = max(1, min(n_boot, _MAX_CHUNK_VALUES // max(1, (layout.n_strata + layout.n_units) * k * k)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = np.zeros((b, layout.n_strata, k * k))
        for strata in strata_of_source:
            flat = stratum_counts[strata].reshape(-1)
            n = int(flat.sum())
            if n:
                draws[:, strata] = rng.multinomial(n, flat / n, size=b).reshape(b, strata.size, k * k)
        units = unit_counts(layout, draws).reshape(b, layout.n_units, k, k)
        out[start : start + b] = confusion_metrics(
            units, binary=table.binary, failure_class=table.failure_class
        )
    return out


@dataclass(frozen=True, eq=False)
class _PartitionTests:
    """Permutation p-values of one block: per metric, pairs ``(i, j)`` -> p and the all-groups-equal p."""

    pairs: dict[str, dict[tuple[int, int], float]]
    all_groups: dict[str, float]


def _defined_range(values: np.ndarray) -> np.ndarray:
    """max - min over the last axis ignoring NaN; NaN where fewer than two values are defined (such a
    permutation is left out of the permutation p-value, see ``permutation_p_value``)."""
    defined = ~np.isnan(values)
    top = np.where(defined, values, -np.inf).max(axis=-1)
    bottom = np.where(defined, values, np.inf).min(axis=-1)
    return np.where(defined.sum(axis=-1) >= 2, top - bottom, np.nan)


def _test_pairs_and_all(present, paired, names, observed_and_permuted, pairs: dict, all_groups: dict) -> None:
    """Fill ``pairs[name][(i, j)]`` with the permutation p-value of |m_i - m_j| for every pair of ``paired``, and
    ``all_groups[name]`` with that of the range over ``present`` (two or more groups).

    ``observed_and_permuted(members)`` gives the members' observed metrics ``(groups, metrics)`` and their
    values under relabelling ``(P, groups, metrics)``."""
    for position, i in enumerate(paired):
        for j in paired[position + 1 :]:
            observed, values = observed_and_permuted([i, j])
            statistic = np.abs(observed[0] - observed[1])
            permuted = np.abs(values[:, 0] - values[:, 1])
            for name, p in zip(names, permutation_p_value(statistic, permuted), strict=True):
                pairs[name][(i, j)] = float(p)
    if len(present) >= 2:
        observed, values = observed_and_permuted(present)
        statistic = _defined_range(observed.T)
        permuted = _defined_range(np.moveaxis(values, 1, 2))  # (P, metrics)
        for name, p in zip(names, permutation_p_value(statistic, permuted), strict=True):
            all_groups[name] = float(p)


def _partition_tests(
    table: EncodedTable, cells: np.ndarray, kept: Sequence[int], metrics: Sequence[str], *, n_permutations: int, rng
) -> _PartitionTests:
    """Permutation tests (group labels exchanged within each stratum and, for a proportion, within its
    denominator) of every pair of non-empty groups and of all groups at once, for the confusion metrics."""
    k = table.n_classes
    present = [g for g in kept if cells[:, g].sum() > 0]
    paired = present if len(present) <= MAX_PAIRWISE_GROUPS else []
    pairs: dict[str, dict[tuple[int, int], float]] = {m: {} for m in metrics}
    all_groups: dict[str, float] = {}
    by_conditioning: dict[str, list[str]] = {}
    for metric in metrics:
        by_conditioning.setdefault(SPEC_BY_NAME[metric].conditioning, []).append(metric)
    for conditioning, names in by_conditioning.items():
        parts = cell_parts(k, conditioning)
        columns = [CONFUSION_METRICS.index(m) for m in names]

        def observed_and_permuted(members: list[int]) -> tuple[np.ndarray, np.ndarray]:
            sub = cells[:, members]
            observed = confusion_metrics(
                sub.sum(axis=0).reshape(len(members), k, k), binary=table.binary, failure_class=table.failure_class
            )
            permuted = permuted_group_counts(sub, parts, n_permutations=n_permutations, rng=rng)
            values = confusion_metrics(
                permuted.reshape(n_permutations, len(members), k, k),
                binary=table.binary,
                failure_class=table.failure_class,
            )
            return observed[:, columns], values[..., columns]  # (groups, m), (P, groups, m)

        _test_pairs_and_all(present, paired, names, observed_and_permuted, pairs, all_groups)
    return _PartitionTests(pairs=pairs, all_groups=all_groups)




N_FINE_BINS_TESTS = 20
"""Score bins for the permutation tests of AUROC and ECE (two per ECE bin): pairs inside a 0.05-wide bin count
as ties in the test statistic. The observed and the permuted statistics use the same bins, so the test stays
exact; coarser bins cost some power on AUROC and make each permutation cheap (40 cells instead of 2,000)."""


def _score_cells_by_stratum(table: EncodedTable, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """(label, fine score bin) counts and score sums of the block's groups per stratum, ``(S, G, 2 * n_fine)``;
    the strata are the sources of a pooled block, or the one source of a source's block."""
    in_scope = np.ones(table.n_rows, dtype=bool) if block.scope_index is None else table.source_codes == block.scope_index
    n_groups = len(block.groups)
    group = (
        np.zeros(int(in_scope.sum()), dtype=np.int64)
        if block.attribute_index is None
        else table.attributes[block.attribute_index].codes[in_scope]
    )
    if block.scope_index is None and table.sources:
        stratum, n_strata = table.source_codes[in_scope], len(table.sources)
    else:
        stratum, n_strata = np.zeros(group.size, dtype=np.int64), 1
    counts, sums = calibration_cells(
        table.score[in_scope], table.calibration_target[in_scope], stratum * n_groups + group,
        n_strata * n_groups, n_fine=N_FINE_BINS_TESTS,
    )  # fmt: skip
    return counts.reshape(n_strata, n_groups, -1), sums.reshape(n_strata, n_groups, -1)


def _score_partition_tests(
    counts: np.ndarray, sums: np.ndarray, kept: Sequence[int], metrics: Sequence[str], *, n_permutations: int, rng
) -> _PartitionTests:
    """Permutation tests of AUROC and ECE between the groups of one block (labels exchanged within strata).

    Statistics come from the binned cells with each cell's pooled mean score, for the observed split and
    every permuted split alike."""
    total = counts.sum(axis=(0, 1))
    used = np.flatnonzero(total > 0)
    mean_score = sums.sum(axis=(0, 1))[used] / total[used]
    cells = counts[:, :, used].astype(np.int64)
    columns = [_SCORE_METRICS.index(m) for m in metrics]

    def statistics(group_counts: np.ndarray) -> np.ndarray:
        """(..., G, c) counts -> (..., G, metrics)."""
        lead = group_counts.shape[:-1]
        auroc, ece, _ = _resampled_statistics(
            group_counts.reshape(-1, used.size).astype(float), used, mean_score, n_fine=N_FINE_BINS_TESTS
        )
        return np.stack([auroc, ece], axis=-1).reshape(*lead, 2)[..., columns]

    present = [g for g in kept if cells[:, g].sum() > 0]
    paired = present if len(present) <= MAX_PAIRWISE_GROUPS else []
    pairs: dict[str, dict[tuple[int, int], float]] = {m: {} for m in metrics}
    all_groups: dict[str, float] = {}
    parts = (np.arange(used.size),)

    def observed_and_permuted(members: list[int]) -> tuple[np.ndarray, np.ndarray]:
        sub = cells[:, members]
        permuted = permuted_group_counts(sub, parts, n_permutations=n_permutations, rng=rng)
        return statistics(sub.sum(axis=0)), statistics(permuted)

    _test_pairs_and_all(present, paired, metrics, observed_and_permuted, pairs, all_groups)
    return _PartitionTests(pairs=pairs, all_groups=all_groups)


@dataclass(frozen=True, eq=False)
class _GroupIntervals:
    """Interval of every (unit, metric) with its method and, where there is none, why.

    ``successes``/``denominators`` hold the counts of the proportion metrics of a binary task when a
    closed-form method is used (None otherwise); ``denominators_all`` the number of cases behind every
    metric (the group size for non-proportions).
    """

    low: np.ndarray
    high: np.ndarray
    method: np.ndarray
    note: np.ndarray
    successes: np.ndarray | None
    denominators: np.ndarray | None
    denominators_all: np.ndarray


def _group_intervals(
    table: EncodedTable,
    unit_cells: np.ndarray,
    unit_n: np.ndarray,
    estimates: np.ndarray,
    draws: np.ndarray | None,
    *,
    confidence: float,
    method: str,
) -> _GroupIntervals:
    """Score (Wilson) or exact (Clopper-Pearson) intervals for the proportions of a binary task and for F1
    (through the Jaccard index, of which it is a monotone function); the percentile bootstrap of the reported
    partition for everything else, where the group has enough cases."""
    shape = estimates.shape
    low, high = np.full(shape, np.nan), np.full(shape, np.nan)
    methods = np.full(shape, "", dtype=object)
    notes = np.full(shape, "", dtype=object)
    denominators_all = np.repeat(unit_n[:, None], shape[1], axis=1).astype(np.int64)
    successes = denominators = None
    if draws is not None:
        b_low, b_high = percentile_interval(draws.reshape(draws.shape[0], -1), confidence=confidence)
        low, high = b_low.reshape(shape), b_high.reshape(shape)
        methods[:] = "percentile bootstrap"
    closed_form = table.binary and method != "bootstrap"
    if closed_form:
        successes = np.zeros(shape)
        denominators = np.zeros(shape)
    for column, name in enumerate(METRICS):
        spec = SPEC_BY_NAME[name]
        if table.binary and spec.closed_form:
            x = unit_cells[:, list(spec.success_cells)].sum(axis=1)
            n = unit_cells[:, list(spec.denominator_cells)].sum(axis=1)
            if spec.proportion:
                denominators_all[:, column] = n
            if closed_form:
                successes[:, column], denominators[:, column] = x, n
                p_low, p_high = proportion_interval(x, n, confidence=confidence, method=method)
                low[:, column], high[:, column] = spec.from_proportion(p_low), spec.from_proportion(p_high)
                methods[:, column] = method if spec.proportion else f"{method} on the Jaccard index"
                continue
        if draws is None:
            methods[:, column] = ""
            continue
        too_few = unit_n < MIN_BOOTSTRAP_CASES
        low[too_few, column] = high[too_few, column] = np.nan
        if name in _UNDERCOVERING:
            limit, text = _UNDERCOVERING[name]
            notes[~too_few & (unit_n < limit), column] = text
        for unit in np.flatnonzero(too_few & (unit_n > 0)):
            notes[unit, column] = (
                f"not estimable with n = {int(unit_n[unit])} (a bootstrap interval needs at least "
                f"{MIN_BOOTSTRAP_CASES} cases)"
            )
    undefined = np.isnan(estimates)
    low[undefined] = high[undefined] = np.nan
    methods[np.isnan(low)] = ""
    return _GroupIntervals(low, high, methods, notes, successes, denominators, denominators_all)


def _check_reference_groups(
    reference_groups: Mapping[str, str] | None, table: EncodedTable
) -> dict[str, str]:
    if reference_groups is None:
        return {}
    if not isinstance(reference_groups, Mapping):
        raise FairMedInputError("reference_groups must map attribute name -> group name")
    levels = {a.name: a.levels for a in table.attributes}
    checked = {}
    for attribute, group in reference_groups.items():
        if attribute not in levels:
            raise FairMedInputError(
                f"reference_groups names an unknown attribute; attributes: {', '.join(levels)}",
                column=str(attribute),
            )
        name = str(group).strip()
        if name not in levels[attribute]:
            raise FairMedInputError(
                f"reference group {group!r} does not occur; groups: {', '.join(levels[attribute])}",
                column=str(attribute),
            )
        checked[attribute] = name
    return checked


def audit(
    predictions: pd.DataFrame,
    *,
    label_col: str | None = None,
    pred_col: str | None = None,
    sensitive: Sequence[str] | None = None,
    columns: PredictionColumns | None = None,
    intersect: bool | Sequence[str] = False,
    score_col: str | None = None,
    source_col: str | None = None,
    positive_label=None,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    confidence: float = 0.95,
    reference_groups: Mapping[str, str] | None = None,
    correction: str = "holm",
    min_group_size: int = 30,
    seed: int = 0,
    unknown_in_gaps: bool = False,
    interval_method: str = "wilson",
    format_failures: str = "wrong",
    protocol: str = "fairmed",
) -> AuditResult:
    """Audit a predictions table for group disparities, with bootstrap intervals for every number.

    The columns are named either by ``columns`` (a :class:`PredictionColumns`, what the layers above pass) or by
    the fairlearn-style keywords ``label_col``, ``pred_col``, ``sensitive``, ``score_col`` and ``source_col``.

    Per source (and pooled as source "ALL"), per sensitive attribute (plus, with ``intersect=True`` and two
    or more attributes, their intersection named like "sex x age_group" with groups like "F,A3"; with
    ``intersect=["sex", "age_group"]`` the intersection of those attributes only) and per
    group: n, prevalence and the metrics in ``metrics``; then gaps between groups (max-min, pairwise,
    vs-reference, vs-overall) with Wald tests corrected by ``correction`` ("holm", "bh" or "none"), and the
    FairGRPO summary (predictive parity, equal opportunity and equalized odds differences, sigma F1,
    F1_ES), averaged over attributes within a source and then over sources. Aggregates use the single
    attributes, not their intersection.

    The task is binary when ``positive_label`` is given or the labels and predictions lie in {0, 1},
    {"no", "yes"} or {False, True} (positive 1 / "yes" / True); otherwise multi-class with macro averages
    (see ``fairmed_core.fairness._metrics``). AUROC and ECE need ``score_col`` (P(positive) for binary; the
    confidence of the predicted class for multi-class, where AUROC is undefined) and are left out without
    it. Missing attribute values form the group "UNK". Undefined values are NaN with a reason, never 0.
    ``reference_groups`` maps an attribute to its reference group (default: the largest group of each
    source). Groups with fewer than ``min_group_size`` cases, or fewer than 5 positives or negatives, are
    flagged. The "UNK" group (and intersections with an unknown part) is reported with its metrics but left
    out of gaps and summaries unless ``unknown_in_gaps=True``: missing demographics are not a demographic
    group, and a gap to them says nothing about the groups a reviewer asked about.

    Intervals (``interval_method``, validated by simulation in ``benchmarks/audit_validity.py``): on a
    binary task the proportions (accuracy, precision, recall, specificity, FPR, FDR, selection rate) get the
    Wilson score interval ("wilson", default) or the Clopper-Pearson exact interval ("clopper-pearson") from
    their counts, F1 the same interval of the Jaccard index J = TP / (TP + FP + FN) mapped through
    F1 = 2J / (1 + J), and differences between two groups Newcombe's score interval (MOVER for F1); AUROC,
    ECE, every multi-class metric and the summaries use the percentile bootstrap of the reported partition: each
    (source, group) of the attribute keeps its size and is resampled as one multinomial draw of its
    confusion cells (a pooled group is the sum of its sources' draws), so the cost does not grow with the
    number of rows and a small group is never fixed by stratifying on other attributes. A bootstrap
    interval of a group under 10 cases is not reported ("not estimable"). ``interval_method="bootstrap"``
    uses the bootstrap for proportions too (the old behaviour, kept for comparison). Aggregate summary rows
    resample stratified by source only, so the attributes they average stay correlated.

    Tests: every pairwise and max-min gap of a confusion metric has a permutation test of the group labels
    within each source (and within the metric's denominator: positives for recall, predicted positives for
    precision), with ``n_boot`` permutations; exact at any group size. AUROC/ECE gaps are permutation
    tests too, on (label, score bin) cells with 20 score bins. ``n_boot=0`` skips resampling: proportion intervals stay (closed form),
    bootstrap intervals and p-values are NaN.
    Results are deterministic for a given ``seed``.

    Predictions equal to "(format failure)" are scored by ``format_failures`` ("wrong", "other_label" or
    "abstain"; see ``fairmed_core.fairness._format_failures``) and their rate per group is attached. With
    ``protocol="fairgrpo_paper"`` the FairGRPO paper's own statistics (the authors' evaluation code, see
    ``fairmed_core.fairness._paper_protocol``) are attached as ``paper_summary`` beside FairMed's, which are
    unchanged; ``protocol="fairmed"`` (default) computes FairMed's alone.
    """
    if interval_method not in INTERVAL_METHODS:
        raise FairMedInputError(
            f"unknown interval method {interval_method!r}", hint=f"choose from {', '.join(INTERVAL_METHODS)}"
        )
    protocol, format_failures = check_protocol(protocol), check_policy(format_failures)
    metrics_requested, correction_key = _check_settings(
        metrics=metrics,
        n_boot=n_boot,
        confidence=confidence,
        correction=correction,
        min_group_size=min_group_size,
        seed=seed,
    )
    columns = resolve_columns(columns, label_col=label_col, pred_col=pred_col, sensitive=sensitive,
                              score_col=score_col, source_col=source_col)
    label_col, pred_col, score_col, source_col = columns.label, columns.prediction, columns.score, columns.source
    sensitive = list(columns.sensitive)
    frame = validate_predictions(
        predictions,
        source_name=_IN_MEMORY_SOURCE,
        columns=columns,
        extra_prediction_values=() if positive_label is None else (positive_label,),
    )
    scored_frame, failure_rates = score_format_failures(
        frame, columns=columns, policy=format_failures, positive_label=positive_label, pooled=POOLED_SCOPE,
    )
    table = encode_table(
        scored_frame,
        label_col=label_col,
        pred_col=pred_col,
        sensitive=sensitive,
        score_col=score_col,
        source_col=source_col,
        positive_label=positive_label,
        intersect=intersect,
        source_name=_IN_MEMORY_SOURCE,
    )
    requested_references = _check_reference_groups(reference_groups, table)
    reported = tuple(m for m in metrics_requested if score_col is not None or m not in _SCORE_METRICS)
    n_boot = int(n_boot)
    confidence = float(confidence)
    confusion_rng, score_rng, joint_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )

    layout = build_layout(table)
    k = table.n_classes
    stratum_counts = stratum_confusion_counts(table, layout)
    unit_cells = unit_counts(layout, stratum_counts)  # (n_units, K * K)
    counts = unit_cells.reshape(layout.n_units, k, k)
    unit_n = counts.sum(axis=(1, 2))
    class_counts = counts.sum(axis=2)[:, : table.n_scored_classes]  # true cases per class
    partition_cells = _partition_cells(layout, unit_cells)

    estimates = np.full((layout.n_units, len(METRICS)), np.nan)
    reasons = np.full((layout.n_units, len(METRICS)), "", dtype=object)
    n_confusion = len(CONFUSION_METRICS)
    estimates[:, :n_confusion] = confusion_metrics(counts, binary=table.binary, failure_class=table.failure_class)
    reasons[:, :n_confusion] = undefined_reasons(counts, binary=table.binary, failure_class=table.failure_class)
    draws = np.full((n_boot, layout.n_units, len(METRICS)), np.nan) if n_boot else None
    union_draws = np.full((n_boot, len(layout.blocks), len(METRICS)), np.nan) if n_boot else None
    joint_draws = None
    if n_boot:
        draws[:, :, :n_confusion], union_draws[:, :, :n_confusion] = _partition_bootstrap(
            table, layout, partition_cells, n_boot=n_boot, rng=confusion_rng
        )
        joint_draws = _source_stratified_unit_metrics(
            table, layout, stratum_counts, n_boot=n_boot, rng=joint_rng
        )
    # The score bootstrap is the expensive part; skip it when no score metric was asked for, and use the
    # finer grid only when AUROC (which needs the score order) is resampled.
    n_fine = N_FINE_BINS if table.binary and "auroc" in reported else N_FINE_BINS_ECE_ONLY
    if score_col is not None and any(m in reported for m in _SCORE_METRICS):
        score_estimates, score_draws, pooled_score_draws = _score_metrics(
            table, layout, n_boot=n_boot, n_fine=n_fine, rng=score_rng
        )
        estimates[:, n_confusion:] = score_estimates
        reasons[:, n_confusion:] = _score_reasons(table, unit_n, class_counts, score_estimates)
        if n_boot:
            draws[:, :, n_confusion:] = score_draws
            for index, pooled in pooled_score_draws.items():
                union_draws[:, index, n_confusion:] = pooled

    interval = _group_intervals(
        table, unit_cells, unit_n, estimates, draws, confidence=confidence, method=interval_method
    )

    small_reasons = _small_group_reasons(unit_n, class_counts, table, min_group_size)
    # Binary: positives. Multi-class: the rarest class, the one that limits class-conditional metrics.
    n_positive = class_counts[:, 1] if table.binary else class_counts.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = np.where(unit_n > 0, n_positive / np.maximum(unit_n, 1), np.nan)

    metric_column = {m: METRICS.index(m) for m in METRICS}
    tested_metrics = tuple(m for m in reported if m in CONFUSION_METRICS)
    gaps: list[GapEstimate] = []
    references: list[tuple[str, str, str]] = []
    summaries: list[FairnessSummary] = []
    per_scope_rows: dict[str, list[dict[str, tuple[np.ndarray, np.ndarray | None]]]] = {}
    for index, block in enumerate(layout.blocks):
        if block.attribute == OVERALL_ATTRIBUTE:
            continue
        overall_unit = layout.block(block.scope, OVERALL_ATTRIBUTE).units.start
        kept = [i for i, g in enumerate(block.groups) if unknown_in_gaps or not _is_unknown_group(g)]
        units = block.units.start + np.asarray(kept, dtype=int)
        compared = dataclasses.replace(block, groups=tuple(block.groups[i] for i in kept))
        reference = _reference_for(compared, units, unit_n, requested_references)
        if reference is not None:
            references.append((block.scope, block.attribute, reference))
        sizes = unit_n[units]
        tests = None
        if n_boot and tested_metrics:
            tests = _partition_tests(
                table, partition_cells[index], kept, tested_metrics, n_permutations=n_boot, rng=test_rng
            )
        score_tested = [m for m in _SCORE_METRICS if m in reported and score_col is not None]
        if n_boot and score_tested:
            score_tests = _score_partition_tests(
                *_score_cells_by_stratum(table, block), kept, score_tested, n_permutations=n_boot, rng=test_rng
            )
            tests = score_tests if tests is None else _PartitionTests(
                pairs={**tests.pairs, **score_tests.pairs}, all_groups={**tests.all_groups, **score_tests.all_groups}
            )
        position_of = {unit_group: position for position, unit_group in enumerate(kept)}
        for metric in reported:
            column = metric_column[metric]
            boot = overall_boot = None
            if draws is not None:
                boot = draws[:, units, column]
                overall_boot = union_draws[:, index, column]
            closed_form = interval.successes is not None and SPEC_BY_NAME[metric].closed_form
            pair_p = range_p = None
            if tests is not None and metric in tests.pairs:
                pair_p = {
                    (position_of[i], position_of[j]): p for (i, j), p in tests.pairs[metric].items()
                }
                range_p = tests.all_groups.get(metric, float("nan"))
            gaps.extend(
                partition_gaps(
                    MetricPartition(
                        source=block.scope,
                        attribute=block.attribute,
                        metric=metric,
                        groups=compared.groups,
                        n=sizes,
                        estimate=estimates[units, column],
                        reasons=tuple(str(r) for r in reasons[units, column]),
                        boot=boot,
                        overall_estimate=float(estimates[overall_unit, column]),
                        overall_boot=overall_boot,
                        reference=reference,
                        group_low=interval.low[units, column] if closed_form else None,
                        group_high=interval.high[units, column] if closed_form else None,
                        successes=interval.successes[units, column] if closed_form else None,
                        denominators=interval.denominators[units, column] if closed_form else None,
                        pair_p_values=pair_p,
                        range_p_value=float("nan") if range_p is None else range_p,
                        test_method=PERMUTATION_TEST if pair_p is not None else "",
                    ),
                    confidence=confidence,
                    correction=correction_key,
                )
            )
        summary, _ = _attribute_summary(
            compared, units, estimates, draws, union_draws[:, index] if n_boot else None, overall_unit, sizes,
            confidence=confidence, metric_column=metric_column,
        )  # fmt: skip
        summaries.append(summary)
        if not table.attributes[block.attribute_index].is_intersection:
            joint_overall = None if joint_draws is None else joint_draws[:, overall_unit]
            _, statistics = _attribute_summary(
                compared, units, estimates, joint_draws, joint_overall, overall_unit, sizes,
                confidence=confidence, metric_column=metric_column,
            )  # fmt: skip
            per_scope_rows.setdefault(block.scope, []).append(statistics)

    summaries.extend(_aggregate_summaries(per_scope_rows, table, confidence=confidence))

    detectable = {
        (g.source, g.attribute, g.metric, g.group_a): g.minimum_detectable_gap
        for g in gaps
        if g.comparison == "vs-reference"
    }
    groups: list[GroupEstimate] = []
    for block in layout.blocks:
        for offset, group in enumerate(block.groups):
            unit = block.units.start + offset
            for metric in reported:
                column = metric_column[metric]
                groups.append(
                    GroupEstimate(
                        source=block.scope,
                        attribute=block.attribute,
                        group=group,
                        n=int(unit_n[unit]),
                        n_positive=int(n_positive[unit]),
                        prevalence=float(prevalence[unit]),
                        small_group=bool(small_reasons[unit]),
                        small_group_reason=small_reasons[unit],
                        metric=metric,
                        estimate=float(estimates[unit, column]),
                        ci_low=float(interval.low[unit, column]),
                        ci_high=float(interval.high[unit, column]),
                        undefined_reason=str(reasons[unit, column]),
                        denominator=int(interval.denominators_all[unit, column]),
                        interval_method=str(interval.method[unit, column]),
                        interval_note=str(interval.note[unit, column]),
                        minimum_detectable_gap=float(
                            detectable.get((block.scope, block.attribute, metric, group), float("nan"))
                        ),
                    )
                )

    settings = AuditSettings(
        label_col=label_col,
        pred_col=pred_col,
        sensitive=tuple(sensitive),
        intersect=intersect if isinstance(intersect, bool) else tuple(intersect),
        score_col=score_col,
        source_col=source_col,
        positive_label=table.positive_label,
        task=table.task,
        classes=table.label_values,
        metrics=reported,
        n_boot=n_boot,
        confidence=confidence,
        correction=correction_key,
        min_group_size=int(min_group_size),
        seed=int(seed),
        n_rows=table.n_rows,
        sources=(*table.sources, POOLED_SCOPE),
        reference_groups=tuple(references),
        bootstrap=(
            f"percentile bootstrap, {n_boot} resamples, stratified by the reported partition (each source "
            f"x the groups of the attribute reported; aggregate rows by source only); confusion metrics from "
            f"multinomial draws of confusion counts; AUROC/ECE from multinomial draws of (label, score bin) "
            f"cells with {n_fine} fine bins in {N_ECE_BINS} ECE bins"
        ),
        interval_method=(
            f"{interval_method} for proportions of a binary task and for F1 (on the Jaccard index, F1 = 2J / "
            "(1 + J)); Newcombe hybrid score / MOVER for differences of two groups; percentile bootstrap for "
            "AUROC, ECE, multi-class metrics, group-vs-overall differences and summaries"
            if table.binary and interval_method != "bootstrap"
            else "percentile bootstrap for every metric and difference"
        ),
        tests=(
            f"{PERMUTATION_TEST}, {n_boot} permutations, for pairwise and max-min gaps (within the "
            "metric's denominator for proportions; AUROC/ECE on (label, score bin) cells with "
            f"{N_FINE_BINS_TESTS} bins); {correction_key} correction within each (source, attribute, metric)"
            if n_boot
            else "none (n_boot = 0)"
        ),
        format_failures=format_failures,
        protocol=protocol,
    )
    paper = None
    if protocol == "fairgrpo_paper":  # on the unscored table: the paper scores a failure as no condition
        paper = paper_protocol_of_table(frame, columns)
    return AuditResult(
        settings=settings, groups=tuple(groups), gaps=tuple(gaps), summaries=tuple(summaries),
        format_failure_rates=failure_rates, paper_summary=paper,
    )


def _is_unknown_group(group: str) -> bool:
    """True for the missing-demographics group and for intersections with an unknown part ("F,UNK")."""
    return MISSING_GROUP in str(group).split(",")


def _attribute_summary(
    block: Block,
    units: np.ndarray,
    estimates: np.ndarray,
    draws: np.ndarray | None,
    overall_draws: np.ndarray | None,
    overall_unit: int,
    sizes: np.ndarray,
    *,
    confidence: float,
    metric_column: Mapping[str, int],
) -> tuple[FairnessSummary, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """The FairGRPO summary of one (source, attribute) over the groups ``block.groups`` at ``units``.

    ``draws`` are the resampled metrics of every unit and ``overall_draws`` ``(n_boot, metrics)`` the
    overall value in the same resamples (None without a bootstrap).
    """

    def inputs(values: np.ndarray, overall: np.ndarray) -> SummaryInputs:
        return SummaryInputs(
            recall=values[..., metric_column["recall"]],
            fpr=values[..., metric_column["fpr"]],
            fdr=values[..., metric_column["fdr"]],
            f1=values[..., metric_column["f1"]],
            overall_f1=overall[..., metric_column["f1"]],
            overall_accuracy=overall[..., metric_column["accuracy"]],
        )

    group_values = estimates[units]  # (n_groups, metrics)
    defined = {
        m: (sizes > 0) & ~np.isnan(group_values[:, metric_column[m]]) for m in ("recall", "fpr", "fdr", "f1")
    }
    point = summary_statistics(inputs(group_values[None], estimates[overall_unit][None]), defined)
    boot = None
    if draws is not None:
        boot = summary_statistics(inputs(draws[:, units], overall_draws), defined)
    statistics = {
        name: (point[name][0], None if boot is None else boot[name])
        for name in (*SUMMARY_STATISTICS, "worst_group_f1")
    }
    f1_values = np.where(defined["f1"], group_values[:, metric_column["f1"]], np.nan)
    worst = block.groups[int(np.nanargmin(f1_values))] if defined["f1"].any() else ""
    return _summary_from(block.scope, block.attribute, statistics, worst, confidence), statistics


def _summary_from(
    source: str,
    attribute: str,
    statistics: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    worst_group: str,
    confidence: float,
) -> FairnessSummary:
    estimate = {
        name: to_estimate(float(point), samples, confidence=confidence)
        for name, (point, samples) in statistics.items()
    }
    return FairnessSummary(
        source=source,
        attribute=attribute,
        predictive_parity=estimate["predictive_parity"],
        equal_opportunity_difference=estimate["equal_opportunity_difference"],
        equalized_odds_difference=estimate["equalized_odds_difference"],
        sigma_f1=estimate["sigma_f1"],
        f1=estimate["f1"],
        f1_es=estimate["f1_es"],
        accuracy=estimate["accuracy"],
        worst_group=worst_group,
        worst_group_f1=estimate["worst_group_f1"],
    )


def _mean_statistics(
    rows: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray | None]]],
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    out = {}
    for name in rows[0]:
        point = mean_over([r[name][0] for r in rows])
        samples = None if rows[0][name][1] is None else mean_over([r[name][1] for r in rows])
        out[name] = (point, samples)
    return out


def _aggregate_summaries(
    per_scope_rows: Mapping[str, list[dict[str, tuple[np.ndarray, np.ndarray | None]]]],
    table: EncodedTable,
    *,
    confidence: float,
) -> list[FairnessSummary]:
    """Mean over attributes within each source, then mean over the sources (not the pooled "ALL")."""
    aggregated = {scope: _mean_statistics(rows) for scope, rows in per_scope_rows.items()}
    summaries = [
        _summary_from(scope, MEAN_OVER_ATTRIBUTES, statistics, "", confidence)
        for scope, statistics in aggregated.items()
    ]
    sources = [s for s in table.sources if s in aggregated] or [POOLED_SCOPE]
    across = _mean_statistics([aggregated[s] for s in sources])
    summaries.append(_summary_from(MEAN_OVER_SOURCES, MEAN_OVER_ATTRIBUTES, across, "", confidence))
    return summaries
