"""Model comparison on the same cases: per group and metric the change between runs with a paired interval,
which gaps narrowed or widened, and which groups got better or worse.

Paired bootstrap: cases are resampled jointly (one draw of a case carries its label and every run's answer),
stratified by the reported partition (source x the attribute's groups), so the interval of a change reflects
that both runs were scored on the same patients. As in the audit engine, a stratified case bootstrap of any
statistic of the stratum's joint cells (label x answer of each run) is one multinomial draw per stratum over
those cells, so a resample costs O(strata x cells) however many cases there are. Binary tasks only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import CONFUSION_SPECS, METRIC_SPECS, MISSING_GROUP

__all__ = ["COMPARABLE_METRICS", "ChangeEstimate", "Comparison", "GapChange", "compare_runs", "metrics_from_confusion"]

COMPARABLE_METRICS = tuple(spec.name for spec in CONFUSION_SPECS)  # the binary metrics of the confusion matrix
_HIGHER_IS_BETTER = {spec.name for spec in METRIC_SPECS if spec.higher_is_better is True}
_LOWER_IS_BETTER = {spec.name for spec in METRIC_SPECS if spec.higher_is_better is False}
POOLED = "ALL"
_MAX_RUNS = 6  # 2 ** (runs + 1) joint cells per stratum


@dataclass(frozen=True)
class ChangeEstimate:
    """One metric of one group: its value in the baseline and in a candidate run, and the paired change."""

    source: str
    attribute: str
    group: str
    metric: str
    baseline: str
    candidate: str
    n: int
    baseline_value: float
    candidate_value: float
    change: float
    ci_low: float
    ci_high: float
    outcome: str  # "better", "worse", "no clear change", "changed" (no better direction) or "undefined"


@dataclass(frozen=True)
class GapChange:
    """The max - min gap of a metric over an attribute's groups in the baseline and a candidate, and its change."""

    source: str
    attribute: str
    metric: str
    baseline: str
    candidate: str
    baseline_gap: float
    candidate_gap: float
    change: float
    ci_low: float
    ci_high: float
    outcome: str  # "narrowed", "widened", "no clear change" or "undefined"


@dataclass(frozen=True)
class Comparison:
    """Every change of every candidate against the baseline (the first run)."""

    runs: tuple[str, ...]
    n_cases: int
    n_boot: int
    confidence: float
    method: str
    changes: tuple[ChangeEstimate, ...]
    gap_changes: tuple[GapChange, ...]

    def changes_frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.changes])

    def gap_changes_frame(self) -> pd.DataFrame:
        return pd.DataFrame([g.__dict__ for g in self.gap_changes])


def metrics_from_confusion(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """The binary metrics of :data:`COMPARABLE_METRICS` from confusion counts (NaN for a zero denominator)."""
    cells = (tn, fp, fn, tp)  # the order of the metric spec table's cell indices
    return {spec.name: spec.from_cells(cells) for spec in CONFUSION_SPECS}


def _aligned(frames: Sequence[pd.DataFrame], names: Sequence[str], id_col: str, label_col: str) -> list[pd.DataFrame]:
    """The runs' tables in the first run's case order; an error naming the ids when their cases differ."""
    for frame, name in zip(frames, names, strict=True):
        if id_col not in frame.columns:
            raise FairMedInputError(f"run {name!r} has no {id_col!r} column to pair cases by", column=id_col)
        duplicated = frame[id_col][frame[id_col].duplicated()].astype(str).unique()
        if len(duplicated):
            raise FairMedInputError(f"run {name!r} lists case id(s) more than once: {', '.join(duplicated[:5])}",
                                    column=id_col)
    base_ids = pd.Index(frames[0][id_col].astype(str))
    out = [frames[0].assign(**{id_col: base_ids}).set_index(id_col)]
    for frame, name in zip(frames[1:], names[1:], strict=True):
        ids = pd.Index(frame[id_col].astype(str))
        only_base, only_this = base_ids.difference(ids), ids.difference(base_ids)
        if len(only_base) or len(only_this):
            parts = []
            for missing, holder, lacker in ((only_base, names[0], name), (only_this, name, names[0])):
                if len(missing):
                    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                    parts.append(f"{len(missing)} case id(s) of {holder!r} are not in {lacker!r}: {shown}")
            raise FairMedInputError("runs compared must hold the same cases; " + "; ".join(parts), column=id_col)
        out.append(frame.assign(**{id_col: ids}).set_index(id_col).loc[base_ids])
    labels = out[0][label_col].astype(str)
    for frame, name in zip(out[1:], names[1:], strict=True):
        differ = labels.index[labels.to_numpy() != frame[label_col].astype(str).to_numpy()]
        if len(differ):
            raise FairMedInputError(f"run {name!r} gives other true labels than {names[0]!r} for case id(s) "
                                    f"{', '.join(differ[:5])}", column=label_col)
    return out


def _interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, which is what we want
        low, high = np.nanquantile(samples, [tail, 1 - tail], axis=0)
    return low, high


def _gap(values: np.ndarray) -> np.ndarray:
    """max - min over the last axis ignoring NaN; NaN where fewer than two groups are defined."""
    defined = (~np.isnan(values)).sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: masked below
        gap = np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)
    return np.where(defined >= 2, gap, np.nan)


def _group_outcome(metric: str, low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    if low <= 0 <= high:
        return "no clear change"
    up = low > 0
    if metric in _HIGHER_IS_BETTER:
        return "better" if up else "worse"
    if metric in _LOWER_IS_BETTER:
        return "worse" if up else "better"
    return "changed"


def _gap_outcome(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    if high < 0:
        return "narrowed"
    if low > 0:
        return "widened"
    return "no clear change"


def compare_runs(
    predictions: Sequence[pd.DataFrame],
    names: Sequence[str],
    *,
    attributes: Sequence[str],
    metrics: Sequence[str] = COMPARABLE_METRICS,
    positive_label: str = "yes",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    id_col: str = "case_id",
    label_col: str = "y_true",
    pred_col: str = "y_pred",
    source_col: str = "source",
) -> Comparison:
    """Compare runs on the same cases: each later run against the first (the baseline).

    Per source (and pooled over sources as "ALL") and per group of each attribute: every metric's value in
    both runs and the change with a paired percentile interval at ``confidence`` from ``n_boot`` stratified
    case resamples; per metric the change of the max - min gap over groups (missing demographics, "UNK",
    are reported but kept out of gaps). A change whose interval excludes 0 is "better"/"worse" (or a gap
    "narrowed"/"widened"); otherwise "no clear change". A "(format failure)" prediction counts as wrong.
    """
    if len(predictions) < 2 or len(predictions) != len(names):
        raise FairMedInputError("a comparison needs two or more runs, each with a name")
    if len(predictions) > _MAX_RUNS:
        raise FairMedInputError(f"compare at most {_MAX_RUNS} runs at once, got {len(predictions)}")
    if len(set(names)) < len(names):
        raise FairMedInputError(f"run names must differ: {list(names)}")
    unknown = [m for m in metrics if m not in COMPARABLE_METRICS]
    if unknown:
        raise FairMedInputError(f"cannot compare metric(s) {unknown}", hint=f"choose from {', '.join(COMPARABLE_METRICS)}")
    for frame, name in zip(predictions, names, strict=True):
        missing = [c for c in (label_col, pred_col, *attributes) if c not in frame.columns]
        if missing:
            raise FairMedInputError(f"run {name!r} has no column {missing[0]!r}", column=missing[0])
    frames = _aligned(predictions, names, id_col, label_col)
    base = frames[0]
    n = len(base)
    positive = str(positive_label)
    y = (base[label_col].astype(str) == positive).to_numpy()
    # A format failure is scored as the audit scores it by default ("wrong"): it is never a positive call, so on a
    # positive case it is a missed finding and on a negative case no false alarm (the FairGRPO authors' rule).
    answered = [(f[pred_col].astype(str) == positive).to_numpy() for f in frames]
    cells = y.astype(np.int64)
    for r, pred in enumerate(answered):
        cells = cells + (pred.astype(np.int64) << (r + 1))
    n_cells = 2 ** (len(frames) + 1)
    # confusion[r][cell] = one-hot of (tp, fp, fn, tn) of run r for that joint cell
    codes = np.arange(n_cells)
    truth = codes & 1
    confusion = []
    for r in range(len(frames)):
        said = (codes >> (r + 1)) & 1
        confusion.append(np.stack([truth & said, (1 - truth) & said, truth & (1 - said),
                                   (1 - truth) & (1 - said)], axis=1).astype(float))
    sources = base[source_col].astype(str).to_numpy() if source_col in base.columns else np.full(n, POOLED)
    rng = np.random.default_rng(seed)
    changes: list[ChangeEstimate] = []
    gap_changes: list[GapChange] = []
    for attribute in attributes:
        groups = base[attribute].astype("string").fillna(MISSING_GROUP).replace("", MISSING_GROUP).to_numpy(dtype=str)
        strata, stratum_of = np.unique(np.char.add(np.char.add(sources.astype(str), "\x1f"), groups),
                                       return_inverse=True)
        counts = np.zeros((len(strata), n_cells), dtype=np.int64)
        np.add.at(counts, (stratum_of, cells), 1)
        sizes = counts.sum(axis=1)
        draws = rng.multinomial(sizes, counts / sizes[:, None], size=(n_boot, len(strata)))
        # (1 + n_boot, strata, cells): the data first, then the resamples
        joint = np.concatenate([counts[None], draws], axis=0).astype(float)
        stratum_source = np.array([s.split("\x1f")[0] for s in strata])
        stratum_group = np.array([s.split("\x1f")[1] for s in strata])
        scopes = sorted(set(stratum_source)) + ([POOLED] if len(set(stratum_source)) > 1 else [])
        for scope in scopes:
            in_scope = np.ones(len(strata), bool) if scope == POOLED else stratum_source == scope
            names_in_scope = sorted(set(stratum_group[in_scope]))
            # membership (strata, groups) of this scope
            member = np.stack([(stratum_group == g) & in_scope for g in names_in_scope], axis=1).astype(float)
            group_cells = np.einsum("bsc,sg->bgc", joint, member)  # (1 + n_boot, groups, cells)
            group_n = group_cells[0].sum(axis=1).astype(int)
            values = []
            for r in range(len(frames)):
                tp, fp, fn, tn = np.moveaxis(group_cells @ confusion[r], -1, 0)
                values.append(metrics_from_confusion(tp, fp, fn, tn))
            in_gap = np.array([g != MISSING_GROUP for g in names_in_scope])
            for candidate in range(1, len(frames)):
                for metric in metrics:
                    before, after = values[0][metric], values[candidate][metric]
                    delta = after - before
                    low, high = _interval(delta[1:], confidence)
                    for j, group in enumerate(names_in_scope):
                        changes.append(ChangeEstimate(
                            source=scope, attribute=attribute, group=group, metric=metric, baseline=names[0],
                            candidate=names[candidate], n=int(group_n[j]), baseline_value=float(before[0, j]),
                            candidate_value=float(after[0, j]), change=float(delta[0, j]), ci_low=float(low[j]),
                            ci_high=float(high[j]), outcome=_group_outcome(metric, float(low[j]), float(high[j]))))
                    if in_gap.sum() >= 2:
                        gap_before, gap_after = _gap(before[:, in_gap]), _gap(after[:, in_gap])
                        gap_delta = gap_after - gap_before
                        glow, ghigh = _interval(gap_delta[1:, None], confidence)
                        gap_changes.append(GapChange(
                            source=scope, attribute=attribute, metric=metric, baseline=names[0],
                            candidate=names[candidate], baseline_gap=float(gap_before[0]),
                            candidate_gap=float(gap_after[0]), change=float(gap_delta[0]), ci_low=float(glow[0]),
                            ci_high=float(ghigh[0]), outcome=_gap_outcome(float(glow[0]), float(ghigh[0]))))
    method = (f"paired stratified percentile bootstrap, {n_boot} resamples of cases drawn jointly across runs, "
              f"strata = source x the attribute's groups, {confidence:.0%} intervals")
    return Comparison(runs=tuple(names), n_cases=n, n_boot=n_boot, confidence=confidence, method=method,
                      changes=tuple(changes), gap_changes=tuple(gap_changes))
