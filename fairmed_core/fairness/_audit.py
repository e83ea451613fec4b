"""The fairness audit: per-group metrics, gaps, tests and summaries with bootstrap intervals, in one call."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._bootstrap import percentile_interval, stratified_count_draws
from fairmed_core.fairness._calibration import (
    N_ECE_BINS,
    N_FINE_BINS,
    N_FINE_BINS_ECE_ONLY,
    bootstrap_partition,
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
    MetricPartition,
    SummaryInputs,
    mean_over,
    partition_gaps,
    summary_statistics,
    to_estimate,
)
from fairmed_core.fairness._metrics import CONFUSION_METRICS, confusion_metrics, undefined_reasons
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

MIN_CLASS_CASES = 5
"""Fewer positives (or negatives) than this make class-conditional metrics of a group unreliable."""

MEAN_OVER_ATTRIBUTES = "mean over attributes"
MEAN_OVER_SOURCES = "mean over sources"
_IN_MEMORY_SOURCE = "<predictions table>"
_SCORE_METRICS = ("auroc", "ece")
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
    if not isinstance(seed, numbers.Integral):
        raise FairMedInputError(f"seed must be an integer, got {seed!r}")
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


def _confusion_bootstrap(
    table: EncodedTable, layout: Layout, stratum_counts: np.ndarray, *, n_boot: int, rng
) -> np.ndarray:
    """Confusion metrics of every unit in every resample, ``(n_boot, n_units, 8)``."""
    k = table.n_classes
    out = np.empty((n_boot, layout.n_units, len(CONFUSION_METRICS)))
    done = 0
    for draws in stratified_count_draws(stratum_counts, n_boot=n_boot, rng=rng):
        units = unit_counts(layout, draws)  # (b, n_units, k * k)
        b = units.shape[0]
        out[done : done + b] = confusion_metrics(
            units.reshape(b, layout.n_units, k, k), binary=table.binary, failure_class=table.failure_class
        )
        done += b
    return out


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
    label_col: str,
    pred_col: str,
    sensitive: Sequence[str],
    intersect: bool = False,
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
    format_failures: str = "wrong",
    protocol: str = "fairmed",
) -> AuditResult:
    """Audit a predictions table for group disparities, with bootstrap intervals for every number.

    Per source (and pooled as source "ALL"), per sensitive attribute (plus, with ``intersect=True`` and two
    or more attributes, their intersection named like "sex x age_group" with groups like "F,A3") and per
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

    Intervals: percentile intervals at ``confidence`` from ``n_boot`` stratified bootstrap resamples (strata
    = source x every sensitive attribute), drawn as multinomial resamples of confusion counts, so the cost
    does not grow with the number of rows; AUROC/ECE resample binned scores (see
    ``fairmed_core.fairness._calibration``). ``n_boot=0`` skips the bootstrap (intervals and p-values NaN).
    Results are deterministic for a given ``seed``.

    Predictions equal to "(format failure)" are scored by ``format_failures`` ("wrong", "other_label" or
    "abstain"; see ``fairmed_core.fairness._format_failures``) and their rate per group is attached. With
    ``protocol="fairgrpo_paper"`` the FairGRPO paper's own statistics (the authors' evaluation code, see
    ``fairmed_core.fairness._paper_protocol``) are attached as ``paper_summary`` beside FairMed's, which are
    unchanged; ``protocol="fairmed"`` (default) computes FairMed's alone.
    """
    protocol, format_failures = check_protocol(protocol), check_policy(format_failures)
    metrics_requested, correction_key = _check_settings(
        metrics=metrics,
        n_boot=n_boot,
        confidence=confidence,
        correction=correction,
        min_group_size=min_group_size,
        seed=seed,
    )
    sensitive = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    frame = validate_predictions(
        predictions,
        source_name=_IN_MEMORY_SOURCE,
        label_col=label_col,
        pred_col=pred_col,
        sensitive=sensitive,
        score_col=score_col,
        source_col=source_col,
        extra_prediction_values=() if positive_label is None else (positive_label,),
    )
    scored_frame, failure_rates = score_format_failures(
        frame, label_col=label_col, pred_col=pred_col, sensitive=sensitive, source_col=source_col,
        policy=format_failures, positive_label=positive_label, pooled=POOLED_SCOPE,
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
    confusion_rng, score_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))

    layout = build_layout(table)
    k = table.n_classes
    stratum_counts = stratum_confusion_counts(table, layout)
    counts = unit_counts(layout, stratum_counts).reshape(layout.n_units, k, k)
    unit_n = counts.sum(axis=(1, 2))
    class_counts = counts.sum(axis=2)[:, : table.n_scored_classes]  # true cases per class

    estimates = np.full((layout.n_units, len(METRICS)), np.nan)
    reasons = np.full((layout.n_units, len(METRICS)), "", dtype=object)
    n_confusion = len(CONFUSION_METRICS)
    estimates[:, :n_confusion] = confusion_metrics(counts, binary=table.binary, failure_class=table.failure_class)
    reasons[:, :n_confusion] = undefined_reasons(counts, binary=table.binary, failure_class=table.failure_class)
    draws = np.full((n_boot, layout.n_units, len(METRICS)), np.nan) if n_boot else None
    if n_boot:
        draws[:, :, :n_confusion] = _confusion_bootstrap(
            table, layout, stratum_counts, n_boot=n_boot, rng=confusion_rng
        )
    pooled_score_draws: dict[int, np.ndarray] = {}
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

    if n_boot:
        flat_low, flat_high = percentile_interval(draws.reshape(n_boot, -1), confidence=confidence)
        ci_low = flat_low.reshape(estimates.shape)
        ci_high = flat_high.reshape(estimates.shape)
        undefined = np.isnan(estimates)
        ci_low[undefined] = np.nan
        ci_high[undefined] = np.nan
    else:
        ci_low = np.full(estimates.shape, np.nan)
        ci_high = np.full(estimates.shape, np.nan)

    small_reasons = _small_group_reasons(unit_n, class_counts, table, min_group_size)
    # Binary: positives. Multi-class: the rarest class, the one that limits class-conditional metrics.
    n_positive = class_counts[:, 1] if table.binary else class_counts.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = np.where(unit_n > 0, n_positive / np.maximum(unit_n, 1), np.nan)

    metric_column = {m: METRICS.index(m) for m in METRICS}
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
                        ci_low=float(ci_low[unit, column]),
                        ci_high=float(ci_high[unit, column]),
                        undefined_reason=str(reasons[unit, column]),
                    )
                )

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
        for metric in reported:
            column = metric_column[metric]
            if draws is None:
                boot = overall_boot = None
            else:
                boot = draws[:, units, column]
                if metric in _SCORE_METRICS:
                    overall_boot = pooled_score_draws[index][:, _SCORE_METRICS.index(metric)]
                else:
                    overall_boot = draws[:, overall_unit, column]
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
                    ),
                    confidence=confidence,
                    correction=correction_key,
                )
            )
        summary, statistics = _attribute_summary(
            compared, units, estimates, draws, overall_unit, sizes, confidence=confidence,
            metric_column=metric_column,
        )
        summaries.append(summary)
        is_single = not table.attributes[block.attribute_index].is_intersection
        if is_single:
            per_scope_rows.setdefault(block.scope, []).append(statistics)

    summaries.extend(_aggregate_summaries(per_scope_rows, table, confidence=confidence))

    settings = AuditSettings(
        label_col=label_col,
        pred_col=pred_col,
        sensitive=tuple(sensitive),
        intersect=bool(intersect),
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
            f"stratified percentile bootstrap, {n_boot} resamples, strata = source x "
            f"{' x '.join(sensitive)}; confusion metrics from multinomial draws of confusion counts; "
            f"AUROC/ECE from multinomial draws of (label, score bin) cells with {n_fine} fine bins "
            f"in {N_ECE_BINS} ECE bins"
        ),
        format_failures=format_failures,
        protocol=protocol,
    )
    paper = None
    if protocol == "fairgrpo_paper":  # on the unscored table: the paper scores a failure as no condition
        paper = paper_protocol_of_table(
            frame, label_col=label_col, pred_col=pred_col, sensitive=sensitive, source_col=source_col
        )
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
    overall_unit: int,
    sizes: np.ndarray,
    *,
    confidence: float,
    metric_column: Mapping[str, int],
) -> tuple[FairnessSummary, dict[str, tuple[np.ndarray, np.ndarray | None]]]:
    """The FairGRPO summary of one (source, attribute) over the groups ``block.groups`` at ``units``."""

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
        boot = summary_statistics(inputs(draws[:, units], draws[:, overall_unit]), defined)
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
