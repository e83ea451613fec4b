"""The count bootstrap: agreement with fairlearn's row bootstrap, coverage, determinism, building blocks."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
from sklearn.metrics import roc_auc_score

from fairmed_core.fairness import audit
from fairmed_core.fairness._bootstrap import (
    bootstrap_standard_error,
    multinomial_rows,
    percentile_interval,
)


def _binary_table(n: int, seed: int, *, with_score: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n, p=[0.6, 0.4])
    y = (rng.random(n) < np.where(sex == "F", 0.35, 0.5)).astype(int)
    score = np.clip(rng.normal(0.35 + 0.3 * y - 0.05 * (sex == "M"), 0.2), 0, 1)
    frame = pd.DataFrame({"y": y, "pred": (score > 0.5).astype(int), "sex": sex})
    if with_score:
        frame["score"] = score
    return frame


def _interval_table(result, metric: str) -> pd.DataFrame:
    g = result.groups_frame()
    return g[(g.attribute == "sex") & (g.metric == metric)].set_index("group")[
        ["estimate", "ci_low", "ci_high"]
    ]


@pytest.mark.slow
def test_intervals_agree_with_fairlearn_metricframe_bootstrap():
    """fairlearn resamples rows (200 resamples here, ~10 s); we resample counts (4,000 resamples).

    Both are percentile intervals of the same statistic, so they agree up to Monte Carlo error. With 200
    resamples a 2.5% quantile has a Monte Carlo SE of about 0.2 bootstrap SDs, so each endpoint must lie
    within 0.25 interval widths (about 1 bootstrap SD, 5 Monte Carlo SEs), and the widths within 25%.
    """
    frame = _binary_table(2000, seed=1)
    metrics = {"recall": true_positive_rate, "fpr": false_positive_rate, "selection_rate": selection_rate}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MetricFrame(
            metrics=metrics, y_true=frame.y, y_pred=frame.pred, sensitive_features=frame.sex,
            n_boot=200, ci_quantiles=[0.025, 0.975], random_state=0,
        )  # fmt: skip
    low, high = mf.by_group_ci
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=4000, seed=0, interval_method="bootstrap"
    )
    for metric in metrics:
        ours = _interval_table(result, metric)
        for group in ("F", "M"):
            width = high.loc[group, metric] - low.loc[group, metric]
            assert abs(ours.loc[group, "ci_low"] - low.loc[group, metric]) < 0.25 * width, (metric, group)
            assert abs(ours.loc[group, "ci_high"] - high.loc[group, metric]) < 0.25 * width, (metric, group)
            our_width = ours.loc[group, "ci_high"] - ours.loc[group, "ci_low"]
            assert our_width == pytest.approx(width, rel=0.25), (metric, group)


def test_count_bootstrap_equals_a_large_row_bootstrap():
    """A vectorised numpy row bootstrap with many resamples pins the intervals down tightly.

    The row bootstrap here is fairlearn's (plain, not stratified); the count bootstrap keeps group sizes
    fixed, which changes group-level intervals only at second order.
    """
    frame = _binary_table(2000, seed=1)
    y, pred, is_f = frame.y.to_numpy(), frame.pred.to_numpy(), (frame.sex == "F").to_numpy()
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(frame), size=(5000, len(frame)))
    yy, pp, ff = y[index], pred[index], is_f[index]
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=5000, seed=1, interval_method="bootstrap"
    )
    for group, member in (("F", ff), ("M", ~ff)):
        positives = (yy == 1) & member
        recall = (positives & (pp == 1)).sum(axis=1) / positives.sum(axis=1)
        selection = ((pp == 1) & member).sum(axis=1) / member.sum(axis=1)
        for metric, samples in (("recall", recall), ("selection_rate", selection)):
            low, high = np.quantile(samples, [0.025, 0.975])
            ours = _interval_table(result, metric).loc[group]
            assert ours.ci_low == pytest.approx(low, abs=0.08 * (high - low)), (metric, group)
            assert ours.ci_high == pytest.approx(high, abs=0.08 * (high - low)), (metric, group)


def _row_bootstrap(frame: pd.DataFrame, statistic, n_boot: int, seed: int) -> np.ndarray:
    """Stratified row bootstrap by sex, the definition the count bootstrap implements."""
    rng = np.random.default_rng(seed)
    out = {}
    for group, rows in frame.groupby("sex"):
        values = []
        for _ in range(n_boot):
            sample = rows.iloc[rng.integers(0, len(rows), len(rows))]
            values.append(statistic(sample))
        out[group] = np.quantile(values, [0.025, 0.975])
    return out


def _ece(sample: pd.DataFrame) -> float:
    bins = np.minimum((sample.score.to_numpy() * 10).astype(int), 9)
    total = 0.0
    for k in np.unique(bins):
        inside = bins == k
        total += inside.mean() * abs(
            sample.y.to_numpy()[inside].mean() - sample.score.to_numpy()[inside].mean()
        )
    return total


@pytest.mark.slow
def test_binned_auroc_and_ece_intervals_agree_with_a_row_bootstrap():
    frame = _binary_table(1500, seed=2, with_score=True)
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="score", n_boot=3000, seed=3
    )
    row_auroc = _row_bootstrap(frame, lambda s: roc_auc_score(s.y, s.score), 400, seed=4)
    row_ece = _row_bootstrap(frame, _ece, 400, seed=5)
    for metric, reference in (("auroc", row_auroc), ("ece", row_ece)):
        ours = _interval_table(result, metric)
        for group, (low, high) in reference.items():
            width = high - low
            assert abs(ours.loc[group, "ci_low"] - low) < 0.2 * width, (metric, group)
            assert abs(ours.loc[group, "ci_high"] - high) < 0.2 * width, (metric, group)
    auroc = _interval_table(result, "auroc")
    assert ((auroc.ci_low <= auroc.estimate) & (auroc.estimate <= auroc.ci_high)).all()


@pytest.mark.slow
def test_coverage_of_group_metric_and_gap_intervals_on_a_simulated_population():
    """True TPR is 0.8 (F) and 0.7 (M); 95% intervals should cover it about 95% of the time."""
    rng = np.random.default_rng(12)
    n_datasets, n = 200, 600
    covered_f = covered_gap = 0
    for _ in range(n_datasets):
        sex = rng.choice(["F", "M"], n)
        y = (rng.random(n) < 0.4).astype(int)
        tpr = np.where(sex == "F", 0.8, 0.7)
        pred = np.where(y == 1, rng.random(n) < tpr, rng.random(n) < 0.1).astype(int)
        frame = pd.DataFrame({"y": y, "pred": pred, "sex": sex})
        result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], metrics=["recall"],
                       n_boot=400, seed=int(rng.integers(1 << 30)))  # fmt: skip
        f = _interval_table(result, "recall").loc["F"]
        covered_f += f.ci_low <= 0.8 <= f.ci_high
        gap = result.gaps_frame().query("comparison == 'pairwise'").iloc[0]
        covered_gap += gap.ci_low <= 0.1 <= gap.ci_high
    # Binomial SD of a 95% coverage over 200 datasets is 1.5 points.
    assert 0.90 <= covered_f / n_datasets <= 0.99
    assert 0.90 <= covered_gap / n_datasets <= 0.99


def test_results_are_deterministic_for_a_seed():
    frame = _binary_table(800, seed=6, with_score=True)
    kwargs = dict(label_col="y", pred_col="pred", sensitive=["sex"], score_col="score", n_boot=200)
    first = audit(frame, seed=7, **kwargs)
    again = audit(frame, seed=7, **kwargs)
    other = audit(frame, seed=8, **kwargs)
    pd.testing.assert_frame_equal(first.groups_frame(), again.groups_frame())
    pd.testing.assert_frame_equal(first.gaps_frame(), again.gaps_frame())
    pd.testing.assert_frame_equal(first.summary_frame(), again.summary_frame())
    assert not first.groups_frame().ci_low.equals(other.groups_frame().ci_low)
    pd.testing.assert_series_equal(first.groups_frame().estimate, other.groups_frame().estimate)


def test_group_vs_overall_intervals_keep_the_correlation_between_group_and_overall():
    """The overall value contains the group, so their difference varies less than if they were independent.

    Both families draw the overall value in the same resamples as the groups (confusion metrics through
    the strata, AUROC/ECE through the sum of the group draws), which this checks through interval widths.
    """
    frame = _binary_table(3000, seed=10, with_score=True)
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="score", n_boot=1000, seed=2
    )
    g = result.groups_frame().set_index(["attribute", "group", "metric"])
    gaps = result.gaps_frame().query("comparison == 'vs-overall'").set_index(["metric", "group_a"])
    for metric in ("recall", "auroc", "ece"):
        group = g.loc[("sex", "F", metric)]
        overall = g.loc[("overall", "ALL", metric)]
        independent = np.hypot(group.ci_high - group.ci_low, overall.ci_high - overall.ci_low)
        gap = gaps.loc[(metric, "F")]
        assert gap.ci_low <= gap.difference <= gap.ci_high
        assert gap.ci_high - gap.ci_low < 0.9 * independent, metric


def test_ece_alone_uses_a_coarser_grid_with_the_same_estimate_and_interval():
    frame = _binary_table(3000, seed=11, with_score=True)
    kwargs = dict(label_col="y", pred_col="pred", sensitive=["sex"], score_col="score", n_boot=2000, seed=4)
    both = _interval_table(audit(frame, metrics=["auroc", "ece"], **kwargs), "ece")
    alone = _interval_table(audit(frame, metrics=["ece"], **kwargs), "ece")
    np.testing.assert_allclose(alone.estimate, both.estimate, rtol=1e-12)
    width = both.ci_high - both.ci_low
    assert ((alone.ci_low - both.ci_low).abs() < 0.1 * width).all()
    assert ((alone.ci_high - both.ci_high).abs() < 0.1 * width).all()


def test_no_bootstrap_keeps_closed_form_intervals_and_gives_no_tests():
    frame = _binary_table(300, seed=9)
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
    groups = result.groups_frame()
    # Every metric of a binary task without scores has a closed-form interval (F1 through the Jaccard index).
    assert groups.ci_low.notna().all()
    assert set(groups.interval_method) == {"wilson", "wilson on the Jaccard index"}
    assert set(groups[groups.interval_method != "wilson"].metric) == {"f1"}
    gaps = result.gaps_frame()
    assert gaps.p_value.isna().all() and not gaps.significant.any()
    between = gaps.comparison.isin(["pairwise", "vs-reference"])
    assert gaps[between].ci_low.notna().all()
    assert gaps[~between].ci_low.isna().all()


def test_multinomial_rows_are_multinomial_per_stratum():
    counts = np.array([[30, 10, 0, 60], [1, 1, 1, 1], [0, 0, 0, 0]])
    rng = np.random.default_rng(0)
    draws = multinomial_rows(counts, n_boot=20000, rng=rng)
    assert draws.shape == (20000, 3, 4)
    assert (draws[:, 2] == 0).all()  # an empty stratum stays empty
    draws, counts = draws[:, :2], counts[:2]
    assert (draws.sum(axis=2) == counts.sum(axis=1)).all()  # stratum sizes are kept
    assert (draws[:, 0, 2] == 0).all()  # an empty cell stays empty
    p = counts / counts.sum(axis=1, keepdims=True)
    n = counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(draws.mean(axis=0), n * p, atol=0.05 * n.max())
    np.testing.assert_allclose(draws.var(axis=0), n * p * (1 - p), rtol=0.05, atol=0.02)


def test_percentile_interval_matches_numpy_quantiles_with_and_without_nan():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(501, 6))
    low, high = percentile_interval(samples, confidence=0.9)
    np.testing.assert_allclose(low, np.quantile(samples, 0.05, axis=0))
    np.testing.assert_allclose(high, np.quantile(samples, 0.95, axis=0))
    samples[rng.random(samples.shape) < 0.2] = np.nan
    samples[:, 5] = np.nan
    low, high = percentile_interval(samples, confidence=0.95)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(low, np.nanquantile(samples, 0.025, axis=0), equal_nan=True)
        np.testing.assert_allclose(high, np.nanquantile(samples, 0.975, axis=0), equal_nan=True)
    se, count = bootstrap_standard_error(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(se, np.nanstd(samples, axis=0, ddof=1), equal_nan=True)
    assert count[5] == 0
