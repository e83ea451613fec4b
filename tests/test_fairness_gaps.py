"""Gaps, tests, corrections and summaries against hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import MEAN_OVER_ATTRIBUTES, MEAN_OVER_SOURCES, audit, benjamini_hochberg, holm
from fairmed_core.fairness._gaps import wald_p_value


def _rows(group: str, tp: int, fn: int, fp: int, tn: int, **extra) -> pd.DataFrame:
    y = [1] * tp + [1] * fn + [0] * fp + [0] * tn
    pred = [1] * tp + [0] * fn + [1] * fp + [0] * tn
    return pd.DataFrame({"y": y, "pred": pred, "sex": group, **extra})


@pytest.fixture(scope="module")
def hand_table() -> pd.DataFrame:
    # F: recall .8, fpr .1, fdr 1/9, f1 16/19 | M: recall .6, fpr .3, fdr 3/9, f1 12/19
    # X: recall .75, fpr 0, fdr 0, f1 6/7     | overall: TP 17, FN 7, FP 4, TN 22
    return pd.concat(
        [_rows("F", 8, 2, 1, 9), _rows("M", 6, 4, 3, 7), _rows("X", 3, 1, 0, 6)], ignore_index=True
    )


@pytest.fixture(scope="module")
def hand_result(hand_table):
    return audit(hand_table, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=200, seed=1)


def _gap(result, metric, comparison, a=None, b=None):
    g = result.gaps_frame()
    g = g[(g.metric == metric) & (g.comparison == comparison)]
    if a is not None:
        g = g[(g.group_a == a) & (g.group_b == b)]
    assert len(g) == 1, g
    return g.iloc[0]


def test_max_min_gap_and_ratio(hand_result):
    recall = _gap(hand_result, "recall", "max-min")
    assert (recall.group_a, recall.group_b) == ("F", "M")
    assert recall.difference == pytest.approx(0.2)
    assert recall.ratio == pytest.approx(0.6 / 0.8)
    assert recall.ci_low <= recall.difference <= recall.ci_high
    # The max-min row carries one permutation test that all groups are equal (uncorrected).
    assert 0 < recall.p_value_raw <= 1 and recall.p_value == recall.p_value_raw
    assert recall.test_method.startswith("permutation test")
    fdr = _gap(hand_result, "fdr", "max-min")
    assert (fdr.group_a, fdr.group_b) == ("M", "X")
    assert fdr.difference == pytest.approx(3 / 9)
    assert fdr.ratio == 0.0


def test_pairwise_vs_reference_and_vs_overall_gaps(hand_result):
    pair = _gap(hand_result, "recall", "pairwise", "F", "M")
    assert pair.difference == pytest.approx(0.2)
    assert pair.ratio == pytest.approx(0.8 / 0.6)
    assert 0 <= pair.p_value_raw <= pair.p_value <= 1
    # Default reference: the largest group (F and M tie at 20; the first wins).
    reference = _gap(hand_result, "recall", "vs-reference", "M", "F")
    assert reference.difference == pytest.approx(-0.2)
    assert reference.ratio == pytest.approx(0.6 / 0.8)
    assert reference.p_value_raw == pair.p_value_raw and reference.p_value == pair.p_value
    overall = _gap(hand_result, "recall", "vs-overall", "X", "ALL")
    assert overall.difference == pytest.approx(0.75 - 17 / 24)
    assert overall.ratio == pytest.approx(0.75 / (17 / 24))
    # fpr of X is 0: the ratio to X is undefined and says so.
    to_zero = _gap(hand_result, "fpr", "pairwise", "F", "X")
    assert np.isnan(to_zero.ratio) and "denominator is 0" in to_zero.note


def test_summary_statistics_by_hand(hand_result):
    s = hand_result.summary_frame().set_index(["source", "attribute"]).loc[("ALL", "sex")]
    f1 = np.array([16 / 19, 12 / 19, 6 / 7])
    sigma = np.std(f1, ddof=1)
    assert s.predictive_parity == pytest.approx(100 * 3 / 9)
    assert s.equal_opportunity_difference == pytest.approx(20.0)
    assert s.equalized_odds_difference == pytest.approx(0.3)  # max(TPR gap .2, FPR gap .3)
    assert s.sigma_f1 == pytest.approx(sigma)
    assert s.f1 == pytest.approx(34 / 45)
    assert s.f1_es == pytest.approx((34 / 45) / (1 + sigma))
    assert s.accuracy == pytest.approx(39 / 50)
    assert s.worst_group == "M" and s.worst_group_f1 == pytest.approx(12 / 19)
    for column in ("predictive_parity", "sigma_f1", "f1_es", "worst_group_f1"):
        assert s[f"{column}_ci_low"] <= s[f"{column}_ci_high"]


def test_reference_group_can_be_chosen(hand_table):
    result = audit(
        hand_table,
        label_col="y",
        pred_col="pred",
        sensitive=["sex"],
        reference_groups={"sex": "X"},
        n_boot=50,
    )
    rows = result.gaps_frame().query("comparison == 'vs-reference' and metric == 'recall'")
    assert set(rows.group_b) == {"X"} and set(rows.group_a) == {"F", "M"}
    assert ("ALL", "sex", "X") in result.settings.reference_groups
    with pytest.raises(FairMedInputError, match="does not occur"):
        audit(hand_table, label_col="y", pred_col="pred", sensitive=["sex"], reference_groups={"sex": "Q"})
    with pytest.raises(FairMedInputError, match="unknown attribute"):
        audit(hand_table, label_col="y", pred_col="pred", sensitive=["sex"], reference_groups={"age": "A"})


def test_holm_by_hand():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # Step-down monotonicity: the second-smallest can not be smaller than the smallest's adjusted value.
    np.testing.assert_allclose(holm([0.04, 0.041, 0.9]), [0.12, 0.12, 0.9])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    assert holm([]).size == 0


def test_benjamini_hochberg_by_hand():
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    # Step-up: a larger p further down pulls the adjusted value of a smaller one down.
    np.testing.assert_allclose(benjamini_hochberg([0.04, 0.041, 0.9]), [0.0615, 0.0615, 0.9])
    np.testing.assert_allclose(benjamini_hochberg([0.2, np.nan, 0.9]), [0.4, np.nan, 0.9])
    assert np.all(benjamini_hochberg([0.01, 0.02, 0.3]) <= holm([0.01, 0.02, 0.3]))


def test_wald_p_value():
    assert wald_p_value(0.196, 0.1) == pytest.approx(0.05, abs=1e-4)
    assert wald_p_value(-0.196, 0.1) == pytest.approx(0.05, abs=1e-4)
    assert wald_p_value(0.0, 0.0) == 1.0 and wald_p_value(0.1, 0.0) == 0.0
    assert np.isnan(wald_p_value(np.nan, 0.1))


@pytest.mark.parametrize("correction", ["holm", "bh", "none"])
def test_corrections_are_applied_within_each_source_attribute_metric_family(correction):
    rng = np.random.default_rng(2)
    n = 900
    frame = pd.DataFrame({"y": rng.integers(0, 2, n), "age": rng.choice(["A1", "A2", "A3", "A4"], n)})
    frame["pred"] = np.where(rng.random(n) < np.where(frame.age == "A4", 0.6, 0.85), frame.y, 1 - frame.y)
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["age"], n_boot=300, correction=correction
    )
    adjust = {"holm": holm, "bh": benjamini_hochberg, "none": lambda p: np.asarray(p)}[correction]
    pairwise = result.gaps_frame().query("comparison == 'pairwise'")
    for _, family in pairwise.groupby(["source", "attribute", "metric"]):
        assert len(family) == 6
        np.testing.assert_allclose(family.p_value, adjust(family.p_value_raw.to_numpy()))
        assert (family.significant == (family.p_value < 0.05)).all()
    assert pairwise.query("metric == 'accuracy'").significant.any()  # A4 is clearly worse


def test_nan_group_metric_gaps_use_defined_groups_with_a_note():
    frame = pd.concat(
        [_rows("F", 8, 2, 1, 9), _rows("M", 6, 4, 3, 7), _rows("X", 0, 0, 2, 8)], ignore_index=True
    )
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=100)
    max_min = _gap(result, "recall", "max-min")
    assert max_min.difference == pytest.approx(0.2)
    assert "computed over the 2 groups with a defined value" in max_min.note
    assert "X (no positive cases" in max_min.note
    pair = _gap(result, "recall", "pairwise", "F", "X")
    assert np.isnan(pair.difference) and np.isnan(pair.p_value) and not pair.significant
    assert "recall undefined for X" in pair.note
    s = result.summary_frame().set_index(["source", "attribute"]).loc[("ALL", "sex")]
    assert s.equal_opportunity_difference == pytest.approx(20.0)
    assert s.worst_group == "X"  # F1 of X is defined (0: two false positives) and the worst


def test_single_group_attribute_gives_a_noted_max_min_row_and_no_pairs():
    frame = _rows("F", 8, 2, 1, 9)
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=50)
    gaps = result.gaps_frame()
    assert set(gaps.comparison) == {"max-min", "vs-overall"}
    max_min = gaps[gaps.comparison == "max-min"]
    assert max_min.difference.isna().all()
    assert max_min.note.str.contains("single group").all()
    assert np.isnan(result.summary_frame().sigma_f1.iloc[0])


def test_missing_attribute_values_are_their_own_unk_group():
    frame = pd.concat([_rows("F", 8, 2, 1, 9), _rows("M", 6, 4, 3, 7)], ignore_index=True)
    frame.loc[[0, 11], "sex"] = None
    frame.loc[[1], "sex"] = ""
    frame.loc[[2], "sex"] = "unknown"
    frame.loc[[3], "sex"] = np.nan
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], n_boot=0)
    g = result.groups_frame().query("attribute == 'sex' and metric == 'accuracy'").set_index("group")
    assert list(g.index) == ["F", "M", "UNK"]
    assert g.loc["UNK", "n"] == 5 and g.n.sum() == len(frame)


def test_intersection_attribute_and_small_group_flags():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "sex": rng.choice(["F", "M"], n),
            "age_group": rng.choice(["A1", "A2", "A3"], n, p=[0.49, 0.49, 0.02]),
        }
    )
    frame["pred"] = frame.y
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex", "age_group"], intersect=True, n_boot=0
    )
    g = result.groups_frame().query("metric == 'f1'")
    inter = g[g.attribute == "sex x age_group"]
    assert list(inter.group) == ["F,A1", "F,A2", "F,A3", "M,A1", "M,A2", "M,A3"]
    small = inter.set_index("group").loc["F,A3"]
    assert small.small_group and "below min_group_size = 30" in small.small_group_reason
    assert "positive cases (< 5)" in small.small_group_reason
    large = inter.set_index("group").loc["F,A1"]
    assert not large.small_group and large.small_group_reason == ""
    summary = result.summary_frame()
    assert "sex x age_group" in set(summary.attribute)


def test_aggregation_means_over_attributes_then_over_sources():
    rng = np.random.default_rng(8)
    n = 3000
    frame = pd.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "sex": rng.choice(["F", "M"], n),
            "age": rng.choice(["A1", "A2", "A3"], n),
            "site": rng.choice(["s1", "s2", "s3"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    frame["pred"] = np.where(rng.random(n) < 0.8, frame.y, 1 - frame.y)
    result = audit(
        frame, label_col="y", pred_col="pred", sensitive=["sex", "age"], source_col="site", intersect=True,
        n_boot=100,
    )  # fmt: skip
    s = result.summary_frame().set_index(["source", "attribute"])
    columns = ["predictive_parity", "equal_opportunity_difference", "sigma_f1", "f1_es", "worst_group_f1"]
    for site in ("s1", "s2", "s3", "ALL"):
        expected = s.loc[[(site, "sex"), (site, "age")], columns].mean()  # the intersection is left out
        np.testing.assert_allclose(s.loc[(site, MEAN_OVER_ATTRIBUTES), columns], expected)
    expected = s.loc[[(site, MEAN_OVER_ATTRIBUTES) for site in ("s1", "s2", "s3")], columns].mean()
    np.testing.assert_allclose(s.loc[(MEAN_OVER_SOURCES, MEAN_OVER_ATTRIBUTES), columns], expected)
    aggregate = s.loc[(MEAN_OVER_SOURCES, MEAN_OVER_ATTRIBUTES)]
    assert (
        aggregate.predictive_parity_ci_low
        <= aggregate.predictive_parity
        <= aggregate.predictive_parity_ci_high
    )
    assert aggregate.worst_group == ""
    # Per-source F1 is the source's overall F1.
    g = result.groups_frame().query("attribute == 'overall' and metric == 'f1'").set_index("source")
    assert s.loc[("s2", "sex"), "f1"] == pytest.approx(g.loc["s2", "estimate"])


def test_json_view_is_json_safe_and_complete(hand_result):
    import json

    payload = hand_result.to_json_dict()
    text = json.dumps(payload, allow_nan=False)
    assert set(payload) == {"settings", "groups", "gaps", "summary"}
    first = payload["groups"][0]
    assert {"source", "attribute", "group", "n", "n_positive", "prevalence", "small_group"} <= set(first)
    assert set(first["recall"]) == {
        "estimate", "ci_low", "ci_high", "undefined_reason", "denominator", "interval_method", "interval_note",
        "minimum_detectable_gap",
    }  # fmt: skip
    assert len(payload["gaps"]) == len(hand_result.gaps_frame())
    assert "NaN" not in text
