"""Point estimates of the audit equal fairlearn's MetricFrame / scikit-learn on many random tables.

The tables are small on purpose so that they contain empty intersection groups, single-class groups and
groups with no predicted positives. Where scikit-learn would return 0 with an UndefinedMetricWarning we use
``zero_division=np.nan`` in the oracle and check separately that the default 0 is *not* what we report.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.utils.multiclass import unique_labels

from fairmed_core.fairness import METRICS, audit

NAN = np.nan
CONFUSION = ("accuracy", "precision", "recall", "specificity", "f1", "fpr", "fdr", "selection_rate", "npv")


# ---------------------------------------------------------------- oracle metric functions (sklearn/fairlearn)


def _binary_oracles() -> dict:
    """One sklearn/fairlearn function per metric (slow: ~2.5 ms per call; used on few tables)."""
    return {
        "accuracy": accuracy_score,
        "precision": lambda y, p: precision_score(y, p, zero_division=NAN),
        "recall": lambda y, p: recall_score(y, p, zero_division=NAN),
        "specificity": lambda y, p: recall_score(y, p, pos_label=0, labels=[0, 1], zero_division=NAN),
        "f1": lambda y, p: f1_score(y, p, zero_division=NAN),
        "fpr": lambda y, p: 1.0 - recall_score(y, p, pos_label=0, labels=[0, 1], zero_division=NAN),
        "fdr": lambda y, p: 1.0 - precision_score(y, p, zero_division=NAN),
        "selection_rate": selection_rate,
        "npv": lambda y, p: precision_score(y, p, pos_label=0, zero_division=NAN),
    }


def _one_vs_rest_macro(binary_metric):
    """Macro average over unique_labels(y, p) of a binary metric of (y == c, p == c), ignoring NaN."""

    def metric(y, p):
        y, p = np.asarray(y), np.asarray(p)
        values = [binary_metric(y == c, p == c) for c in unique_labels(y, p)]
        return np.nanmean(values) if not np.all(np.isnan(values)) else NAN

    return metric


def _multiclass_oracles() -> dict:
    return {
        "accuracy": _one_vs_rest_macro(accuracy_score),
        "precision": lambda y, p: precision_score(y, p, average="macro", zero_division=NAN),
        "recall": lambda y, p: recall_score(y, p, average="macro", zero_division=NAN),
        "specificity": _one_vs_rest_macro(lambda t, q: recall_score(~t, ~q, zero_division=NAN)),
        "f1": lambda y, p: f1_score(y, p, average="macro", zero_division=NAN),
        "fpr": _one_vs_rest_macro(lambda t, q: 1.0 - recall_score(~t, ~q, zero_division=NAN)),
        "fdr": _one_vs_rest_macro(lambda t, q: 1.0 - precision_score(t, q, zero_division=NAN)),
        "selection_rate": _one_vs_rest_macro(lambda t, q: selection_rate(t, q, pos_label=True)),
        "npv": _one_vs_rest_macro(lambda t, q: precision_score(~t, ~q, zero_division=NAN)),
    }


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if not np.all(np.isnan(values)) else NAN


def _all_metrics_binary(y, p) -> np.ndarray:
    """All nine confusion metrics from one sklearn precision_recall_fscore_support call per group (fast oracle).

    Per-class output with labels [0, 1]: class 1 gives precision, recall, F1; recall of class 0 is the
    specificity and precision of class 0 the negative predictive value. Same zero_division=nan semantics as the
    named functions above.
    """
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, labels=[0, 1], average=None, zero_division=NAN
    )
    return np.array(
        [accuracy_score(y, p), precision[1], recall[1], recall[0], f1[1], 1 - recall[0],
         1 - precision[1], selection_rate(y, p, pos_label=1), precision[0]]
    )  # fmt: skip


def _all_metrics_multiclass(y, p) -> np.ndarray:
    """Macro one-vs-rest over unique_labels(y, p): sklearn per-class P/R/F and multilabel confusion matrices."""
    labels = unique_labels(y, p)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, labels=labels, average=None, zero_division=NAN
    )
    (tn, fp), (fn, tp) = np.moveaxis(multilabel_confusion_matrix(y, p, labels=labels), 0, -1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = tn + fp + fn + tp
        per_class = [(tp + tn) / n, tn / (tn + fp), fp / (tn + fp), fp / (tp + fp), (tp + fp) / n, tn / (tn + fn)]
    accuracy, specificity, fpr, fdr, selection, npv = (_nanmean(v) for v in per_class)
    return np.array(
        [accuracy, _nanmean(precision), _nanmean(recall), specificity, _nanmean(f1), fpr, fdr, selection, npv]
    )


# ---------------------------------------------------------------- random tables


def _random_table(rng: np.random.Generator, *, multiclass: bool) -> pd.DataFrame:
    n = int(rng.integers(1, 70))
    classes = ["a", "b", "c", "d"][: int(rng.integers(3, 5))] if multiclass else [0, 1]
    y = rng.choice(classes, n, p=rng.dirichlet(np.ones(len(classes)) * 0.7))
    copy = rng.random(n) < rng.uniform(0.2, 0.95)
    guess = rng.choice(classes, n, p=rng.dirichlet(np.ones(len(classes)) * 0.7))
    pred = np.where(copy, y, guess)
    if not multiclass:
        # A model that almost never predicts positive leaves whole groups without predicted positives.
        pred = np.where(rng.random(n) < rng.uniform(0.0, 1.0) ** 3, 0, pred)
    sex = rng.choice(["F", "M"], n, p=rng.dirichlet([1.0, 1.0]))
    age = rng.choice(["A1", "A2", "A3"], n, p=rng.dirichlet([0.6, 0.6, 0.6]))
    frame = pd.DataFrame({"y": y, "pred": pred, "sex": sex, "age": age})
    # The implicit label set of a multi-class table is what it shows; keep predictions among labels.
    if multiclass:
        frame.loc[~frame["pred"].isin(frame["y"].unique()), "pred"] = frame["y"]
    return frame


def _ours(result, attribute: str, source: str = "ALL") -> pd.DataFrame:
    g = result.groups_frame()
    g = g[(g.source == source) & (g.attribute == attribute)]
    return g.pivot(index="group", columns="metric", values="estimate")


def _fairlearn_by_group(frame, features, oracles) -> tuple[pd.DataFrame, pd.Series]:
    """MetricFrame by group and overall; ``oracles`` is a dict of scalar metrics or one vector metric."""
    vector = callable(oracles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(
            metrics={"all": oracles} if vector else oracles,
            y_true=frame["y"],
            y_pred=frame["pred"],
            sensitive_features=frame[features],
        )
    by_group, overall = mf.by_group, mf.overall
    if vector:
        unpack = lambda v: v if isinstance(v, np.ndarray) else np.full(len(CONFUSION), NAN)  # noqa: E731
        by_group = pd.DataFrame([unpack(v) for v in by_group["all"]], index=by_group.index, columns=CONFUSION)
        overall = pd.Series(overall["all"], index=CONFUSION)
    if isinstance(by_group.index, pd.MultiIndex):
        by_group.index = [",".join(map(str, key)) for key in by_group.index]
    by_group.index = by_group.index.map(str)
    return by_group, overall


def _assert_frames_match(ours: pd.DataFrame, theirs: pd.DataFrame, metrics, context: str) -> None:
    assert set(theirs.index) <= set(ours.index), context
    for metric in metrics:
        expected = theirs[metric].astype(float).to_numpy()
        got = ours.loc[theirs.index, metric].astype(float).to_numpy()
        np.testing.assert_allclose(
            got, expected, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=f"{context}: {metric}"
        )


@pytest.mark.slow
@pytest.mark.parametrize(("multiclass", "n_tables"), [(False, 120), (True, 80)], ids=["binary", "multiclass"])
def test_point_estimates_equal_metricframe_on_random_tables(multiclass, n_tables):
    rng = np.random.default_rng(20240 + multiclass)
    oracle = _all_metrics_multiclass if multiclass else _all_metrics_binary
    seen = {"empty": 0, "single_class": 0, "no_predicted_positive": 0}
    for table_index in range(n_tables):
        frame = _random_table(rng, multiclass=multiclass)
        result = audit(
            frame, label_col="y", pred_col="pred", sensitive=["sex", "age"], intersect=True, n_boot=0
        )
        # The intersection holds the hard cases (empty and tiny groups); single attributes are checked
        # in the per-source test below.
        theirs, overall = _fairlearn_by_group(frame, ["sex", "age"], oracle)
        _assert_frames_match(_ours(result, "sex x age"), theirs, CONFUSION, f"table {table_index}")
        over = _ours(result, "overall").loc["ALL"]
        np.testing.assert_allclose(
            over[list(CONFUSION)].astype(float), overall[list(CONFUSION)].astype(float),
            rtol=1e-12, equal_nan=True,
        )  # fmt: skip
        g = result.groups_frame()
        g = g[g.attribute == "sex x age"]
        seen["empty"] += int((g.n == 0).any())
        if not multiclass:
            seen["single_class"] += int(((g.n > 0) & ((g.n_positive == 0) | (g.n_positive == g.n))).any())
            precision = g[g.metric == "precision"]
            seen["no_predicted_positive"] += int(
                precision.undefined_reason.str.contains("no predicted positives").any()
            )
    # The generator must actually exercise the hard cases.
    assert seen["empty"] > 10
    if not multiclass:
        assert seen["single_class"] > 10 and seen["no_predicted_positive"] > 10


@pytest.mark.parametrize("multiclass", [False, True], ids=["binary", "multiclass"])
def test_point_estimates_equal_named_sklearn_metrics_in_metricframe(multiclass):
    """Same check with one named sklearn/fairlearn function per metric (average="macro" for multi-class)."""
    rng = np.random.default_rng(99 + multiclass)
    oracles = _multiclass_oracles() if multiclass else _binary_oracles()
    for table_index in range(6):
        frame = _random_table(rng, multiclass=multiclass)
        result = audit(
            frame, label_col="y", pred_col="pred", sensitive=["sex", "age"], intersect=True, n_boot=0
        )
        theirs, _ = _fairlearn_by_group(frame, ["sex", "age"], oracles)
        _assert_frames_match(_ours(result, "sex x age"), theirs, CONFUSION, f"table {table_index}")


@pytest.mark.slow
def test_point_estimates_per_source_equal_metricframe_on_the_source_subset():
    rng = np.random.default_rng(7)
    oracles = _all_metrics_binary
    for _ in range(25):
        frame = _random_table(rng, multiclass=False)
        frame["site"] = rng.choice(["s1", "s2"], len(frame))
        result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], source_col="site", n_boot=0)
        for site in frame["site"].unique():
            subset = frame[frame.site == site]
            theirs, _ = _fairlearn_by_group(subset, ["sex"], oracles)
            ours = _ours(result, "sex", source=site)
            _assert_frames_match(ours, theirs, CONFUSION, f"source {site}")
            # Groups of the table that this source lacks are reported as empty, not dropped.
            absent = sorted(set(ours.index) - set(theirs.index))
            g = result.groups_frame()
            rows = g[(g.source == site) & (g.attribute == "sex") & g.group.isin(absent)]
            assert (rows.n == 0).all() and rows.estimate.isna().all()
            assert (rows.undefined_reason == "empty group (no rows)").all()
        # The pooled source "ALL" is the whole table.
        theirs, overall = _fairlearn_by_group(frame, ["sex"], oracles)
        _assert_frames_match(_ours(result, "sex"), theirs, CONFUSION, "pooled")
        pooled = _ours(result, "overall").loc["ALL", list(CONFUSION)].astype(float)
        np.testing.assert_allclose(pooled, overall[list(CONFUSION)].astype(float), rtol=1e-12, equal_nan=True)


def test_fairlearn_rate_functions_agree_where_defined():
    rng = np.random.default_rng(11)
    for _ in range(20):
        frame = _random_table(rng, multiclass=False)
        theirs, _ = _fairlearn_by_group(
            frame,
            ["sex"],
            {
                "recall": true_positive_rate,
                "specificity": true_negative_rate,
                "fpr": false_positive_rate,
                "fnr": false_negative_rate,
            },
        )
        ours = _ours(audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0), "sex")
        for metric in ("recall", "specificity", "fpr"):
            defined = ~ours.loc[theirs.index, metric].isna()
            np.testing.assert_allclose(
                ours.loc[theirs.index[defined], metric], theirs.loc[defined, metric], rtol=1e-12
            )
        defined = ~ours.loc[theirs.index, "recall"].isna()
        np.testing.assert_allclose(
            1 - ours.loc[theirs.index[defined], "recall"], theirs.loc[defined, "fnr"], atol=1e-12
        )


def test_undefined_metrics_are_nan_with_a_reason_where_sklearn_and_fairlearn_return_zero():
    # Group F: no positives and nothing predicted positive. Group M: normal.
    frame = pd.DataFrame(
        {
            "y": [0, 0, 0, 1, 0, 1, 1, 0],
            "pred": [0, 0, 0, 1, 1, 0, 1, 0],
            "sex": ["F", "F", "F", "M", "M", "M", "M", "M"],
        }
    )
    f = frame[frame.sex == "F"]
    with pytest.warns(UndefinedMetricWarning):
        assert precision_score(f.y, f.pred) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert recall_score(f.y, f.pred) == 0.0
    assert true_positive_rate(f.y, f.pred) == 0.0  # fairlearn: silently 0
    g = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0).groups_frame()
    g = g[(g.attribute == "sex") & (g.group == "F")].set_index("metric")
    for metric in ("precision", "fdr", "recall", "f1"):
        assert np.isnan(g.loc[metric, "estimate"]), metric
        assert g.loc[metric, "undefined_reason"], metric
    assert g.loc["precision", "undefined_reason"] == "no predicted positives (TP + FP = 0)"
    assert g.loc["recall", "undefined_reason"] == "no positive cases in the group (TP + FN = 0)"
    assert g.loc["specificity", "estimate"] == 1.0 and g.loc["specificity", "undefined_reason"] == ""
    assert g.loc["accuracy", "estimate"] == 1.0


@pytest.mark.slow
def test_named_disparity_metrics_equal_fairlearn():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(30):
        n = int(rng.integers(40, 300))
        frame = pd.DataFrame(
            {
                "y": rng.integers(0, 2, n),
                "sex": rng.choice(["F", "M", "X"], n),
            }
        )
        frame["pred"] = np.where(rng.random(n) < rng.uniform(0.5, 0.9), frame.y, 1 - frame.y)
        result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
        g = _ours(result, "sex")
        if g[["recall", "fpr", "selection_rate"]].isna().any().any():
            continue
        checked += 1
        kwargs = {"y_true": frame.y, "y_pred": frame.pred, "sensitive_features": frame.sex}
        summary = result.summary_frame().set_index(["source", "attribute"]).loc[("ALL", "sex")]
        assert summary.equalized_odds_difference == pytest.approx(
            equalized_odds_difference(**kwargs), abs=1e-12
        )
        assert summary.equal_opportunity_difference == pytest.approx(
            100 * equal_opportunity_difference(**kwargs), abs=1e-10
        )
        gaps = result.gaps_frame().set_index(["attribute", "metric", "comparison"])
        max_min = gaps.loc[("sex", "selection_rate", "max-min")]
        assert max_min.difference == pytest.approx(demographic_parity_difference(**kwargs), abs=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mf = MetricFrame(metrics=selection_rate, **kwargs)
        assert max_min.ratio == pytest.approx(mf.ratio(), abs=1e-12)
        to_overall = gaps.loc[("sex", "selection_rate", "vs-overall")].difference.abs().max()
        assert to_overall == pytest.approx(mf.difference(method="to_overall"), abs=1e-12)
    assert checked > 20


def _hand_ece(y, s, bins=10):
    y, s = np.asarray(y, float), np.asarray(s, float)
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = (s >= lo) & ((s < hi) if k < bins - 1 else (s <= hi))
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - s[inside].mean())
    return total


def test_auroc_equals_sklearn_and_ece_equals_hand_computation():
    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(5, 400))
        y = rng.integers(0, 2, n)
        score = np.clip(rng.normal(0.35 + 0.3 * y, 0.25), 0, 1)
        if trial % 3 == 0:
            score = np.round(score, 1)  # heavy ties, and scores exactly on bin edges
        frame = pd.DataFrame(
            {"y": y, "pred": (score > 0.5).astype(int), "s": score, "sex": rng.choice(["F", "M"], n)}
        )
        result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="s", n_boot=0)
        g = result.groups_frame()
        for group, rows in frame.groupby("sex"):
            ours = g[(g.attribute == "sex") & (g.group == group)].set_index("metric").estimate
            if rows.y.nunique() == 2:
                assert ours["auroc"] == pytest.approx(roc_auc_score(rows.y, rows.s), abs=1e-12)
            else:
                assert np.isnan(ours["auroc"])
            assert ours["ece"] == pytest.approx(_hand_ece(rows.y, rows.s), abs=1e-12)
        overall = g[g.attribute == "overall"].set_index("metric").estimate
        assert overall["ece"] == pytest.approx(_hand_ece(y, score), abs=1e-12)


def test_multiclass_ece_is_top_label_calibration_and_auroc_is_explained():
    rng = np.random.default_rng(4)
    n = 300
    y = rng.choice(["cat", "dog", "eel"], n)
    pred = np.where(rng.random(n) < 0.7, y, rng.choice(["cat", "dog", "eel"], n))
    confidence = rng.uniform(0.3, 1.0, n)
    frame = pd.DataFrame({"y": y, "pred": pred, "conf": confidence, "sex": rng.choice(["F", "M"], n)})
    g = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="conf", n_boot=0
    ).groups_frame()
    overall = g[g.attribute == "overall"].set_index("metric")
    assert overall.loc["ece", "estimate"] == pytest.approx(_hand_ece(y == pred, confidence), abs=1e-12)
    assert np.isnan(overall.loc["auroc", "estimate"])
    assert "one score per class" in overall.loc["auroc", "undefined_reason"]


def test_positive_label_and_implicit_binary_labels():
    frame = pd.DataFrame(
        {
            "y": ["yes", "no", "yes", "no", "yes", "no"],
            "pred": ["yes", "yes", "no", "no", "yes", "no"],
            "sex": ["F", "F", "F", "M", "M", "M"],
        }
    )
    implicit = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
    assert implicit.settings.task == "binary" and implicit.settings.positive_label == "yes"
    explicit_no = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], positive_label="no", n_boot=0
    )
    g = explicit_no.groups_frame()
    recall = g[(g.attribute == "overall") & (g.metric == "recall")].estimate.item()
    assert recall == pytest.approx(recall_score(frame.y, frame.pred, pos_label="no"))
    three = frame.assign(y=["x", "y", "z", "x", "y", "z"], pred=["x", "y", "y", "x", "z", "z"])
    multi = audit(three, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
    assert multi.settings.task == "multiclass"
    one_vs_rest = audit(
        three, label_col="y", pred_col="pred", sensitive=["sex"], positive_label="x", n_boot=0
    )
    g = one_vs_rest.groups_frame()
    f1 = g[(g.attribute == "overall") & (g.metric == "f1")].estimate.item()
    assert f1 == pytest.approx(f1_score(three.y == "x", three.pred == "x"))


def test_metrics_argument_limits_reported_metrics_and_scores_add_auroc_ece():
    frame = pd.DataFrame({"y": [0, 1] * 10, "pred": [0, 1, 1, 0] * 5, "sex": ["F"] * 10 + ["M"] * 10})
    without_scores = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
    assert set(without_scores.groups_frame().metric) == set(METRICS) - {"auroc", "ece"}
    only = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], metrics=["f1", "recall"], n_boot=0)
    assert set(only.groups_frame().metric) == {"recall", "f1"}
    assert set(only.gaps_frame().metric) == {"recall", "f1"}
