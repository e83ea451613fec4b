"""How an audit scores format failures (answers that could not be parsed), and their rate per group.

A predictions table marks a format failure with the prediction ``"(format failure)"`` (what
``fairmed_core.models.evaluation.evaluate_dataset`` writes). The audit scores it by one of three documented
choices, recorded in its settings:

* ``"wrong"`` (default): wrong for the true class and a false alarm for no class. On binary data it is never a
  positive call: a missed positive on a positive case, and on a negative case no false positive (as the
  FairGRPO authors' evaluation scores it for the positive class). On multi-class data it is a false negative
  of the true class; it is not a class of its own in macro averages.
* ``"other_label"``: binary data only, FairMed's scoring before this choice existed: the other label, so a
  failure on a negative case is a false positive (which raises FPR, FDR and predictive parity). Multi-class data
  has no single other label, so it is scored as ``"wrong"`` there.
* ``"abstain"``: left out of every metric; the failures are counted per group.

Whatever the choice, the share of format failures is reported per source and group beside the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._columns import PredictionColumns
from fairmed_core.fairness._predictions import FORMAT_FAILURE, implicit_positive_label

__all__ = ["FORMAT_FAILURE", "FORMAT_FAILURE_POLICIES", "FormatFailureRate", "score_format_failures"]

FORMAT_FAILURE_POLICIES = ("wrong", "other_label", "abstain")


@dataclass(frozen=True)
class FormatFailureRate:
    """Format failures among the ``n`` cases of one group (attribute "overall", group "ALL": the whole source)."""

    source: str
    attribute: str
    group: str
    n: int
    failures: int
    rate: float


def check_policy(policy: object) -> str:
    """The policy name, or an error naming the choices."""
    if policy not in FORMAT_FAILURE_POLICIES:
        raise FairMedInputError(
            f"unknown format_failures {policy!r}",
            hint="use 'wrong' (wrong for the true class), 'other_label' (binary: the other label) or "
            "'abstain' (left out of the metrics, counted per group)",
        )
    return str(policy)


def is_format_failure(predictions: pd.Series) -> np.ndarray:
    """Rows whose prediction is the format-failure marker."""
    if pd.api.types.is_numeric_dtype(predictions) or pd.api.types.is_bool_dtype(predictions):
        return np.zeros(len(predictions), dtype=bool)  # a numeric column cannot hold the marker
    return np.asarray(predictions.to_numpy(dtype=object) == FORMAT_FAILURE, dtype=bool)


def failure_rates(
    frame: pd.DataFrame,
    failed: np.ndarray,
    *,
    sensitive: Sequence[str],
    source_col: str | None,
    pooled: str,
) -> tuple[FormatFailureRate, ...]:
    """Failures per source (and pooled as ``pooled``), overall and per group of each attribute."""
    scopes = [(pooled, np.ones(len(frame), dtype=bool))]
    if source_col is not None:
        sources = frame[source_col].astype(str).to_numpy()
        scopes = [(s, sources == s) for s in pd.unique(sources)] + scopes
    rows = []
    for scope, in_scope in scopes:
        blocks = [("overall", pd.Series(["ALL"] * len(frame), index=frame.index))]
        blocks += [(a, frame[a].astype(str)) for a in sensitive]
        for attribute, groups in blocks:
            values = groups.to_numpy()
            for group in pd.unique(values[in_scope]):
                rows_in = in_scope & (values == group)
                n = int(rows_in.sum())
                count = int(failed[rows_in].sum())
                rows.append(FormatFailureRate(scope, attribute, str(group), n, count, count / n))
    return tuple(rows)


def score_format_failures(
    frame: pd.DataFrame,
    *,
    columns: PredictionColumns,
    policy: str,
    positive_label: object,
    pooled: str,
) -> tuple[pd.DataFrame, tuple[FormatFailureRate, ...]]:
    """The table the metrics are computed on under ``policy``, and the failure rates per group (empty when no
    prediction is a format failure). ``frame`` is a validated predictions table."""
    label_col, pred_col, source_col, sensitive = columns.label, columns.prediction, columns.source, columns.sensitive
    failed = is_format_failure(frame[pred_col])
    if not failed.any():
        return frame, ()
    if positive_label is None:
        values = set(pd.unique(frame[label_col]).tolist()) | set(pd.unique(frame[pred_col]).tolist())
        positive_label = implicit_positive_label(values - {FORMAT_FAILURE})
    rates = failure_rates(frame, failed, sensitive=sensitive, source_col=source_col, pooled=pooled)
    scored = apply_policy(frame, failed, label_col=label_col, pred_col=pred_col, policy=policy,
                          positive_label=positive_label)
    return scored, rates


def apply_policy(
    frame: pd.DataFrame,
    failed: np.ndarray,
    *,
    label_col: str,
    pred_col: str,
    policy: str,
    positive_label: object,
) -> pd.DataFrame:
    """The table the metrics are computed on: failures kept as the marker ("wrong"), replaced by the other
    label (``"other_label"`` on binary data) or dropped ("abstain")."""
    if not failed.any():
        return frame
    if policy == "abstain":
        kept = frame.loc[~failed]
        if kept.empty:
            raise FairMedInputError(
                "every prediction is a format failure: nothing is left to score with format_failures='abstain'",
                column=pred_col,
                hint="score them as wrong answers (format_failures='wrong') to audit this table",
            )
        return kept
    if policy == "other_label" and positive_label is not None:
        out = frame.copy()
        predictions = out[pred_col].astype(object).to_numpy(copy=True)
        truth = out[label_col].astype(object).to_numpy()
        on_negative = failed & (truth.astype(str) != str(positive_label))
        predictions[on_negative] = positive_label
        out[pred_col] = predictions  # on positive cases the marker stays: it is encoded as the negative class
        return out
    return frame
