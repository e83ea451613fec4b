"""Sources where a model gives one answer to every case: their rate gaps are 0 by construction, not by fairness."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fairmed_core.data.labels import source_label
from fairmed_core.plain import python_scalar


@dataclass(frozen=True)
class OneAnswer:
    """A source (``"ALL"`` without a source column) whose ``n`` predictions are all ``answer``."""

    source: str
    answer: object
    n: int

    def describe(self) -> str:
        where = "" if self.source == "ALL" else f"In the {source_label(self.source)} source, "
        sentence = f"{where}the model answers {self.answer!r} to all {self.n:,} cases"
        return sentence[0].upper() + sentence[1:]


def one_answer_sources(frame: pd.DataFrame, pred_col: str, source_col: str | None = None) -> list[OneAnswer]:
    """The sources of ``frame`` (or the whole frame) whose predictions in ``pred_col`` take a single value.

    Such a model has the same TPR (and FPR, and selection rate) in every group -- all 0 or all 1 -- so equal
    opportunity, equalized odds and demographic parity gaps are exactly 0 there while it detects nothing. A
    reviewer must be told before reading those gaps as fairness."""
    if pred_col not in frame.columns:
        raise KeyError(f"no prediction column {pred_col!r}")
    if source_col is None or source_col not in frame.columns:
        blocks = [("ALL", frame[pred_col])]
    else:
        blocks = [(str(source), block[pred_col]) for source, block in frame.groupby(source_col, sort=True)]
    found = []
    for source, predictions in blocks:
        values = predictions.dropna().unique()
        if len(predictions) and len(values) == 1:
            found.append(OneAnswer(source=source, answer=python_scalar(values[0]), n=int(len(predictions))))
    return found


NEAR_CONSTANT_RATE = 0.05
"""A source whose recall or specificity is below this answers (almost) one way to every case."""


@dataclass(frozen=True)
class NearConstant:
    """A source where the model (almost) always gives one answer: ``metric`` (recall or specificity) is
    ``value``, under :data:`NEAR_CONSTANT_RATE`, over ``n`` cases of that class."""

    source: str
    metric: str
    value: float
    n: int

    def describe(self) -> str:
        where = "" if self.source == "ALL" else f"In the {source_label(self.source)} source, "
        if self.metric == "recall":
            what = f"the model finds {100 * self.value:.1f}% of the {self.n:,} positive cases (it almost always answers no)"
        else:
            what = (f"the model clears {100 * self.value:.1f}% of the {self.n:,} negative cases (it almost always "
                    "answers yes)")
        sentence = where + what
        return sentence[0].upper() + sentence[1:]


def near_constant_sources(result, *, threshold: float = NEAR_CONSTANT_RATE) -> list[NearConstant]:
    """Sources of a binary audit (``AuditResult``) where recall or specificity is under ``threshold``.

    There a ratio of two groups' rates compares near-zero numbers (0.01 against 0.02 is "half"), so ratio-based
    verdicts say nothing; the model does not tell cases apart in that source, which is the finding. Only the
    metrics the audit reported are checked (the audit page always computes recall and specificity)."""
    if result.settings.task != "binary":
        return []
    pooled_only = len(result.settings.sources) == 1  # no source column: "ALL" is the only scope
    found = []
    for g in result.groups:
        if g.attribute != "overall" or g.metric not in ("recall", "specificity"):
            continue
        if g.source == "ALL" and not pooled_only:
            continue
        if g.estimate == g.estimate and g.estimate < threshold:
            found.append(NearConstant(source=g.source, metric=g.metric, value=g.estimate, n=g.denominator))
    return found
