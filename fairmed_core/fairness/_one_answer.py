"""Sources where a model gives one answer to every case: their rate gaps are 0 by construction, not by fairness."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fairmed_core.plain import python_scalar


@dataclass(frozen=True)
class OneAnswer:
    """A source (``"ALL"`` without a source column) whose ``n`` predictions are all ``answer``."""

    source: str
    answer: object
    n: int

    def describe(self) -> str:
        where = "" if self.source == "ALL" else f"In {self.source}, "
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
