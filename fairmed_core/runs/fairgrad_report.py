"""Compare FairGrad runs: per run, source and attribute, the accuracy-disparity numbers a Pareto plot needs, and
each run's per-epoch losses and gradient conflicts.

Gaps leave out cases without demographics (``UNK``); a model that answers no to everything has zero gaps, so the
positive rate is reported beside them to tell a collapsed model from a fair one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from fairlearn.metrics import equalized_odds_difference, true_positive_rate
from sklearn.metrics import roc_auc_score

from fairmed_core.runs.eval_store import EvaluationRun

__all__ = ["COMPARISON_COLUMNS", "compare_runs", "score_predictions", "training_history"]

COMPARISON_COLUMNS = ("run", "method", "seed", "source", "attribute", "n", "auroc", "accuracy", "positive_rate",
                      "eq_odds_diff", "eq_opp_diff")


def _tpr_gap(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> float:
    rates = [true_positive_rate(y_true[groups == g], y_pred[groups == g]) for g in np.unique(groups)
             if (y_true[groups == g] == 1).any()]
    return float(max(rates) - min(rates)) if len(rates) >= 2 else float("nan")


def score_predictions(predictions: pd.DataFrame, attributes: Sequence[str], *, positive: str = "yes") -> pd.DataFrame:
    """Per source and attribute: n, AUROC (when a ``score`` column exists), accuracy, positive rate, equalized
    odds difference and equal opportunity difference (TPR gap)."""
    rows = []
    for source, frame in predictions.groupby("source", sort=True):
        y_true = (frame["y_true"].astype(str) == positive).to_numpy().astype(int)
        y_pred = (frame["y_pred"].astype(str) == positive).to_numpy().astype(int)
        has_both = 0 < y_true.sum() < len(y_true)
        base = {"source": source, "n": len(frame),
                "auroc": float(roc_auc_score(y_true, frame["score"])) if "score" in frame and has_both else np.nan,
                "accuracy": float((y_true == y_pred).mean()), "positive_rate": float(y_pred.mean())}
        for attribute in attributes:
            if attribute not in frame:
                continue
            groups = frame[attribute].astype(str).to_numpy()
            known = groups != "UNK"
            if len(np.unique(groups[known])) < 2:
                continue  # the source does not record this attribute (skin tone outside dermoscopy)
            rows.append({**base, "attribute": attribute,
                         "eq_odds_diff": float(equalized_odds_difference(
                             y_true[known], y_pred[known], sensitive_features=groups[known])),
                         "eq_opp_diff": _tpr_gap(y_true[known], y_pred[known], groups[known])})
    return pd.DataFrame(rows)


def compare_runs(runs: Sequence[EvaluationRun], attributes: Sequence[str]) -> pd.DataFrame:
    """``score_predictions`` of every run, with its name, method and seed (columns ``COMPARISON_COLUMNS``)."""
    frames = []
    for run in runs:
        predictions = pd.read_csv(run.predictions_path, keep_default_na=False, na_values=[""])
        scored = score_predictions(predictions, attributes, positive=str(run.record.positive_label or "yes"))
        frames.append(scored.assign(run=run.name, method=run.record.method or run.record.model,
                                    seed=(run.record.training or {}).get("seed")))
    if not frames:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(COMPARISON_COLUMNS)]


def training_history(run: EvaluationRun) -> pd.DataFrame:
    """The run's per-epoch task and fairness losses and gradient conflicts (empty when it has none)."""
    path = run.path / "training_history.csv"
    if not path.is_file():
        return pd.DataFrame()
    return pd.read_csv(path)
