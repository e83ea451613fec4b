"""Classification metrics computed from confusion counts, vectorised over any leading axes.

The same formulas serve the point estimates (counts of the data) and the bootstrap (resampled counts of
shape ``(..., K, K)``), which is what makes the count bootstrap exact with respect to the row bootstrap.

Definitions (``counts[..., i, j]`` = cases with true class ``i`` predicted as ``j``):

* Binary (``K == 2``, class 1 is the positive label): the usual one-class metrics of the positive class.
* Multi-class: each class ``c`` is scored one-vs-rest and the metric is the macro average over the classes
  *present in the group* (in its true labels or its predictions), skipping classes whose one-vs-rest value
  is undefined. This is scikit-learn's ``average="macro"`` with ``labels=None`` and ``zero_division=np.nan``
  (it averages over ``unique_labels(y_true, y_pred)`` of the group and ignores NaN classes); for accuracy,
  specificity, FPR, FDR and selection rate it is the FairGRPO paper's "one-vs-rest per condition, macro over
  conditions present". Note that multi-class *accuracy* is therefore the macro one-vs-rest accuracy, not the
  top-1 accuracy.

An undefined value (a zero denominator) is NaN, never 0: scikit-learn's default ``zero_division`` would
return 0 and fairlearn's rate functions return 0 for a group with no positives, which would read as
"the model misses every case" when in truth there is nothing to measure. :func:`undefined_reasons` says why.
"""

from __future__ import annotations

import numpy as np

from fairmed_core.fairness._metric_spec import CONFUSION_SPECS

CONFUSION_METRICS = tuple(spec.name for spec in CONFUSION_SPECS)
"""Metrics that are functions of the confusion matrix alone, in the column order of :func:`confusion_metrics`
(the order of their rows in ``_metric_spec.METRIC_SPECS``)."""


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _one_vs_rest_counts(counts: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-class (tp, fp, fn, tn, n) with the class on the last axis."""
    counts = np.asarray(counts, dtype=float)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    actual = counts.sum(axis=-1)
    predicted = counts.sum(axis=-2)
    n = actual.sum(axis=-1, keepdims=True)
    fn = actual - tp
    fp = predicted - tp
    tn = n - actual - predicted + tp
    return tp, fp, fn, tn, n


def _per_class_metrics(tp, fp, fn, tn, n) -> np.ndarray:
    """Stack the confusion metrics on a new last axis (in CONFUSION_METRICS order), each from its spec's cells."""
    cells = (tn, fp, fn, tp)  # the order of _metric_spec's cell indices (true * 2 + predicted)
    return np.stack([spec.from_cells(cells) for spec in CONFUSION_SPECS], axis=-1)


def confusion_metrics(counts: np.ndarray, *, binary: bool, failure_class: int | None = None) -> np.ndarray:
    """Metrics of shape ``(..., M)`` (M = ``len(CONFUSION_METRICS)``) from confusion counts of shape ``(..., K, K)``.

    For ``binary`` the positive class must be index 1 of a 2 x 2 matrix. ``failure_class`` (multi-class) is the
    index of the format-failure column: a failure counts against the true class (a false negative) but is not
    a class of its own in the macro average.
    """
    tp, fp, fn, tn, n = _one_vs_rest_counts(counts)
    if binary:
        return _per_class_metrics(tp[..., 1], fp[..., 1], fn[..., 1], tn[..., 1], n[..., 0])
    per_class = _per_class_metrics(tp, fp, fn, tn, n)  # (..., K, M)
    present = (tp + fp + fn) > 0  # in the group's true labels or predictions
    if failure_class is not None:
        present[..., failure_class] = False
    valid = present[..., None] & ~np.isnan(per_class)
    total = np.where(valid, per_class, 0.0).sum(axis=-2)
    count = valid.sum(axis=-2)
    return _ratio(total, count.astype(float))


def undefined_reasons(counts: np.ndarray, *, binary: bool, failure_class: int | None = None) -> np.ndarray:
    """Object array ``(..., M)`` of human reasons why each metric is undefined ("" where it is defined)."""
    tp, fp, fn, tn, n = _one_vs_rest_counts(counts)
    values = confusion_metrics(counts, binary=binary, failure_class=failure_class)
    reasons = np.full(values.shape, "", dtype=object)
    empty = n[..., 0] == 0
    if binary:
        cells = (tn[..., 1], fp[..., 1], fn[..., 1], tp[..., 1])
        by_metric = {spec.name: (sum(cells[i] for i in spec.denominator_cells) == 0, spec.undefined)
                     for spec in CONFUSION_SPECS if spec.undefined}
    else:
        present = (tp + fp + fn) > 0
        if failure_class is not None:
            present[..., failure_class] = False
        single = present.sum(axis=-1) == 1
        generic = "undefined for every class present in the group"
        # A one-vs-rest share of the negatives needs a second class; any other share can be undefined for every
        # class present, each for its own reason.
        by_metric = {spec.name: (single, "only one class present: no one-vs-rest negatives")
                     if spec.denominator == "negative cases" else (np.ones_like(empty), generic)
                     for spec in CONFUSION_SPECS if spec.undefined}
    for column, metric in enumerate(CONFUSION_METRICS):
        undefined = np.isnan(values[..., column])
        reason = np.where(empty, "empty group (no rows)", "")
        if metric in by_metric:
            condition, text = by_metric[metric]
            reason = np.where(~empty & condition, text, reason)
        reasons[..., column] = np.where(undefined, reason, "")
        still_blank = undefined & (reasons[..., column] == "")
        reasons[..., column] = np.where(still_blank, "zero denominator", reasons[..., column])
    return reasons
