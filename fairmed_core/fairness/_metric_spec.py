"""The one table of per-group metrics: what each is, which way is better, and how it is inferred.

Every place that needs to know something about a metric (the audit's interval method and test, the minimum
detectable gap, labels in figures and documents, the hover help, the reason a group's value is undefined, the
column order of the vectorised metrics) reads it from :data:`METRIC_SPECS`, so adding a metric of the confusion
matrix is adding a row here: its cells are its computation. (A score metric, AUROC or ECE, also needs its
computation in ``_calibration``.)

``conditioning`` names the rows a proportion metric is a share of, which is also what a permutation test of
"equal metric" must hold fixed: ``"true"`` (recall, specificity, FPR: a share of the cases with a given true
label), ``"predicted"`` (precision, FDR: a share of the cases with a given prediction), ``"all"`` (accuracy,
selection rate, and the metrics that are not proportions: F1, AUROC, ECE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricSpec:
    """One per-group metric.

    ``proportion``: on a binary task the metric is ``successes / denominator`` for counts of the confusion
    matrix (``success_cells`` and ``denominator_cells`` index the flattened 2 x 2 matrix ``true * 2 + pred``),
    so score intervals (Wilson, Clopper-Pearson) and exact conditional tests apply to it. F1 is not a
    proportion but a monotone function of one: F1 = 2J / (1 + J) with J = TP / (TP + FP + FN) (the Jaccard
    index, a proportion of the cases that are positive or predicted positive), so its closed-form interval is
    the proportion interval of J mapped through ``transform``. For a multi-class task the same cells are read
    one-vs-rest per class (``_metrics``).

    ``meaning`` is the plain-language hover help; ``undefined`` says why a binary group's value is undefined when
    its denominator is zero (shown beside the blank value).
    """

    name: str
    label: str
    higher_is_better: bool | None  # None: neither direction is better (selection rate)
    proportion: bool
    conditioning: str
    denominator: str
    success_cells: tuple[int, ...] = ()
    denominator_cells: tuple[int, ...] = ()
    needs_score: bool = False
    transform: str = "identity"
    meaning: str = ""
    undefined: str = ""

    @property
    def closed_form(self) -> bool:
        """True where a binary task's interval comes from counts (a proportion, or F1 through Jaccard)."""
        return bool(self.denominator_cells)

    def from_proportion(self, value):
        """Map a proportion (or its interval bound) of ``success_cells / denominator_cells`` to the metric."""
        if self.transform == "f1_from_jaccard":
            return 2.0 * value / (1.0 + value)
        return value

    def from_cells(self, cells) -> np.ndarray:
        """The metric from confusion cells ``(TN, FP, FN, TP)`` (arrays of any one shape; one-vs-rest per class for
        a multi-class task); NaN where its denominator is 0, never 0."""
        successes = sum(cells[i] for i in self.success_cells)
        denominator = sum(cells[i] for i in self.denominator_cells)
        if self.transform == "f1_from_jaccard":  # 2TP / (2TP + FP + FN), as written, not through J
            successes, denominator = 2 * successes, successes + denominator
        successes, denominator = np.asarray(successes, dtype=float), np.asarray(denominator, dtype=float)
        out = np.full(np.broadcast(successes, denominator).shape, np.nan)
        np.divide(successes, denominator, out=out, where=denominator > 0)
        return out


# Cells of the binary confusion matrix, flattened as true * 2 + predicted.
_TN, _FP, _FN, _TP = 0, 1, 2, 3

_NO_PREDICTED_POSITIVES = "no predicted positives (TP + FP = 0)"
_NO_NEGATIVES = "no negative cases in the group (TN + FP = 0)"

METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Accuracy", True, True, "all", "all cases", (_TN, _TP), (_TN, _FP, _FN, _TP),
               meaning="Share of cases the model answers correctly."),
    MetricSpec("precision", "Precision (PPV)", True, True, "predicted", "predicted positives", (_TP,), (_FP, _TP),
               meaning="Of the cases the model calls positive, the share that are positive (positive predictive "
               "value).", undefined=_NO_PREDICTED_POSITIVES),
    MetricSpec("recall", "Recall (TPR, sensitivity)", True, True, "true", "positive cases", (_TP,), (_FN, _TP),
               meaning="Of the positive cases, the share the model finds (sensitivity, true positive rate). A "
               "screening use cares most about this.", undefined="no positive cases in the group (TP + FN = 0)"),
    MetricSpec("specificity", "Specificity (TNR)", True, True, "true", "negative cases", (_TN,), (_TN, _FP),
               meaning="Of the negative cases, the share the model clears (true negative rate).",
               undefined=_NO_NEGATIVES),
    MetricSpec("f1", "F1", True, False, "all", "all cases", (_TP,), (_FP, _FN, _TP), transform="f1_from_jaccard",
               meaning="Harmonic mean of precision and recall: one number for how well positives are found without "
               "false alarms.", undefined="no positive cases and no predicted positives"),
    MetricSpec("fpr", "False positive rate", False, True, "true", "negative cases", (_FP,), (_TN, _FP),
               meaning="Of the negative cases, the share the model wrongly calls positive (false alarms; 1 - "
               "specificity).", undefined=_NO_NEGATIVES),
    MetricSpec("fdr", "False discovery rate", False, True, "predicted", "predicted positives", (_FP,), (_FP, _TP),
               meaning="Of the cases the model calls positive, the share that are negative (1 - precision). Its gap "
               "between groups x 100 is the FairGRPO paper's predictive parity (PP).",
               undefined=_NO_PREDICTED_POSITIVES),
    MetricSpec("selection_rate", "Selection rate", None, True, "all", "all cases", (_FP, _TP), (_TN, _FP, _FN, _TP),
               meaning="Share of all cases the model calls positive."),
    MetricSpec("npv", "Negative predictive value", True, True, "predicted", "predicted negatives", (_TN,), (_TN, _FN),
               meaning="Of the cases the model clears (calls negative), the share that are negative: how far a "
               "negative answer can be trusted.", undefined="no predicted negatives (TN + FN = 0)"),
    MetricSpec("auroc", "AUROC", True, False, "all", "all cases", needs_score=True,
               meaning="How well the score ranks positive above negative cases (0.5 = chance, 1 = perfect)."),
    MetricSpec("ece", "Expected calibration error", False, False, "all", "all cases", needs_score=True,
               meaning="Expected calibration error: how far the score's stated probability is from the observed "
               "rate, averaged over 10 score bins. Biased upward in small groups (see docs/RESULTS.md)."),
)

SPEC_BY_NAME = {spec.name: spec for spec in METRIC_SPECS}
CONFUSION_SPECS = tuple(spec for spec in METRIC_SPECS if not spec.needs_score)
"""The metrics that are functions of the confusion matrix alone, in table order (the vectorised metrics' columns)."""

GLOSSARY = {
    **{spec.name: spec.meaning for spec in METRIC_SPECS},
    "interval": "95% interval: the range of values the data are compatible with. Two groups whose intervals "
    "overlap may still differ; read the gap's own interval and test.",
    "permutation test": "Shuffles the group labels within each source many times to see how often a gap this "
    "large appears by chance alone; exact at any group size.",
    "Holm / Benjamini-Hochberg": "Corrections for testing many gaps at once: Holm keeps the chance of any false "
    "finding under 5%, Benjamini-Hochberg the share of false findings among those reported.",
    "minimum detectable gap": "The smallest gap to the reference group this sample would detect with 80% "
    "probability; smaller true gaps would usually go unseen.",
    "disparity band": "Acceptable ratio of a group's value to the reference group's (default 0.8-1.25, the "
    "four-fifths rule made symmetric); a review board should set its own.",
}
"""Plain-language meaning of every metric and every statistical term the audit shows, for hover help."""
