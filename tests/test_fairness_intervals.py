"""Closed-form intervals, the minimum detectable gap and the permutation tests, each against an oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, fisher_exact

from fairmed_core.fairness import (
    audit,
    clopper_pearson_interval,
    minimum_detectable_gap,
    newcombe_difference_interval,
    wilson_interval,
)
from fairmed_core.fairness._permutation import cell_parts, permutation_p_value, permuted_group_counts


@pytest.mark.parametrize("x,n", [(0, 5), (1, 10), (7, 25), (24, 25), (25, 25), (300, 1000)])
def test_wilson_and_clopper_pearson_equal_scipy(x, n):
    for method, ours in (("wilson", wilson_interval), ("exact", clopper_pearson_interval)):
        expected = binomtest(x, n).proportion_ci(0.95, method=method)
        low, high = ours(x, n, confidence=0.95)
        assert float(low) == pytest.approx(expected.low, abs=1e-9), method
        assert float(high) == pytest.approx(expected.high, abs=1e-9), method


def test_intervals_are_nan_for_an_empty_denominator_and_never_zero_width_inside():
    low, high = wilson_interval(np.array([0, 3]), np.array([0, 3]), confidence=0.95)
    assert np.isnan(low[0]) and np.isnan(high[0])
    assert high[1] == 1.0 and low[1] < 1.0
    x = np.arange(1, 25)
    low, high = wilson_interval(x, np.full(x.shape, 25), confidence=0.95)
    assert (high - low > 0.05).all()


def test_newcombe_matches_the_published_example():
    """Newcombe (1998), Stat Med 17:873, the 56/70 vs 48/80 example, method 10: 0.0524 to 0.3339."""
    low, high = newcombe_difference_interval(56, 70, 48, 80, confidence=0.95)
    assert float(low) == pytest.approx(0.0524, abs=5e-4)
    assert float(high) == pytest.approx(0.3339, abs=5e-4)


def test_minimum_detectable_gap_gives_80_percent_power_by_simulation():
    """Two groups of 200 and 400 at a reference rate of 0.7: a gap of the returned size is detected by a
    two-proportion z test in about 80% of simulated studies."""
    gap = float(minimum_detectable_gap(0.7, 200, 400))
    assert 0.09 < gap < 0.14
    rng = np.random.default_rng(3)
    a = rng.binomial(200, 0.7 - gap, size=4000) / 200
    b = rng.binomial(400, 0.7, size=4000) / 400
    se = np.sqrt(a * (1 - a) / 200 + b * (1 - b) / 400)
    power = np.mean(np.abs(a - b) / se > 1.959964)
    assert power == pytest.approx(0.80, abs=0.03)


def test_minimum_detectable_gap_directions_and_hopeless_sizes():
    lower = float(minimum_detectable_gap(0.9, 25, 400, direction="lower"))
    higher = float(minimum_detectable_gap(0.9, 25, 400, direction="higher"))
    assert higher < lower  # near 1 a rise is detected sooner than a fall (the arcsine scale stretches there)
    assert float(minimum_detectable_gap(0.9, 25, 400, direction="either")) == pytest.approx(higher)
    assert np.isinf(minimum_detectable_gap(0.02, 3, 3, direction="lower"))
    assert np.isnan(minimum_detectable_gap(np.nan, 25, 400)) and np.isnan(minimum_detectable_gap(0.5, 0, 10))


def test_permuted_counts_keep_group_sizes_within_each_part_and_stratum():
    cells = np.array([[[10, 2, 3, 5], [4, 4, 1, 0]], [[0, 0, 2, 2], [6, 1, 0, 3]]])  # (strata, groups, 2x2)
    rng = np.random.default_rng(0)
    permuted = permuted_group_counts(cells, cell_parts(2, "true"), n_permutations=500, rng=rng)
    assert permuted.shape == (500, 2, 4)
    # Within each true class (cells 0-1 negatives, 2-3 positives) each group keeps its number of cases.
    for part in ((0, 1), (2, 3)):
        np.testing.assert_array_equal(permuted[:, :, list(part)].sum(axis=2), np.broadcast_to(
            cells[:, :, list(part)].sum(axis=(0, 2)), (500, 2)))  # fmt: skip
    np.testing.assert_array_equal(permuted.sum(axis=1), np.broadcast_to(cells.sum(axis=(0, 1)), (500, 4)))


def test_two_group_permutation_test_of_a_proportion_is_fishers_exact_test():
    """Permuting groups among the positives only is Fisher's exact test of the recall 2 x 2 table."""
    # F: 18 of 24 positives found; M: 6 of 14. Negatives are irrelevant to recall.
    rows = [("F", 1, 1)] * 18 + [("F", 1, 0)] * 6 + [("M", 1, 1)] * 6 + [("M", 1, 0)] * 8
    rows += [("F", 0, 0)] * 30 + [("M", 0, 1)] * 12 + [("M", 0, 0)] * 5
    frame = pd.DataFrame(rows, columns=["sex", "y", "pred"])
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], metrics=["recall"],
                   n_boot=20000, seed=4)  # fmt: skip
    pair = result.gaps_frame().query("comparison == 'pairwise'").iloc[0]
    _, expected = fisher_exact([[18, 6], [6, 8]])
    assert pair.p_value_raw == pytest.approx(expected, abs=0.008)
    assert pair.test_method.startswith("permutation")


def test_permutation_p_value_counts_ties_as_extreme_and_is_never_zero():
    p = permutation_p_value(np.array([0.2, 0.5, np.nan]), np.array([[0.2, 0.1, 0.0], [0.1 + 0.1, 0.6, 0.0]]))
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx(2 / 3) and np.isnan(p[2])
    assert permutation_p_value(np.array([9.0]), np.zeros((99, 1)))[0] == pytest.approx(0.01)


def test_a_small_group_gets_a_real_interval_not_a_collapsed_one():
    """The shipped-card bug: 25 men in one source with one error were reported as accuracy [0.96, 0.96]
    because strata crossed every attribute. Reproduce the table shape and check the interval."""
    rng = np.random.default_rng(0)
    ages = ["A1"] + list(rng.choice(["A2", "A3", "A4"], 24))
    men = pd.DataFrame({"sex": "M", "age_group": ages, "skin_tone": rng.choice(["I", "II"], 25),
                        "y": 0, "pred": 0})  # fmt: skip
    men.loc[0, "pred"] = 1  # the one error, alone in its age group
    women = pd.DataFrame({"sex": "F", "age_group": rng.choice(["A1", "A2", "A3", "A4"], 400),
                          "skin_tone": rng.choice(["I", "II"], 400), "y": rng.integers(0, 2, 400)})  # fmt: skip
    women["pred"] = np.where(rng.random(400) < 0.8, women.y, 1 - women.y)
    frame = pd.concat([men, women], ignore_index=True)
    for method in ("wilson", "bootstrap"):
        result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex", "age_group", "skin_tone"],
                       metrics=["accuracy", "specificity"], n_boot=500, seed=0, interval_method=method)  # fmt: skip
        groups = result.groups_frame().set_index(["attribute", "group", "metric"])
        accuracy = groups.loc[("sex", "M", "accuracy")]
        assert accuracy.estimate == pytest.approx(0.96)
        assert accuracy.ci_low < 0.90 and accuracy.ci_high >= 0.99, method


def test_bootstrap_metric_of_a_tiny_group_is_not_estimable():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"sex": ["M"] * 3 + ["F"] * 200, "y": rng.integers(0, 2, 203),
                          "score": rng.random(203)})  # fmt: skip
    frame["pred"] = (frame.score > 0.5).astype(int)
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="score",
                   metrics=["auroc", "accuracy"], n_boot=200)  # fmt: skip
    groups = result.groups_frame().set_index(["attribute", "group", "metric"])
    auroc = groups.loc[("sex", "M", "auroc")]
    assert np.isnan(auroc.ci_low) and auroc.interval_note.startswith("not estimable with n = 3")
    assert not np.isnan(groups.loc[("sex", "M", "accuracy")].ci_low)  # Wilson holds at any n


def test_every_number_records_how_its_interval_and_test_were_made():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"sex": rng.choice(["F", "M"], 300), "y": rng.integers(0, 2, 300),
                          "score": rng.random(300)})  # fmt: skip
    frame["pred"] = (frame.score > 0.5).astype(int)
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], score_col="score", n_boot=200)
    assert "wilson" in result.settings.interval_method and "permutation" in result.settings.tests
    groups = result.groups_frame()
    assert (groups.interval_method != "").all()
    pairs = result.gaps_frame().query("comparison == 'pairwise'").set_index("metric")
    assert pairs.loc["recall"].interval_method == "Newcombe hybrid score"
    assert pairs.loc["f1"].interval_method == "MOVER from score intervals"
    assert pairs.loc["auroc"].test_method.startswith("permutation")
    assert pairs.loc["recall"].minimum_detectable_gap > 0
    payload = result.to_json_dict()
    assert payload["settings"]["tests"] and payload["groups"][1]["recall"]["interval_method"] == "wilson"


def test_cli_audit_takes_the_interval_method_and_says_how_numbers_were_made(tmp_path, capsys):
    from fairmed_core.cli import AUDIT_INTERVAL_METHODS, main
    from fairmed_core.fairness import INTERVAL_METHODS
    from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS

    assert AUDIT_INTERVAL_METHODS == INTERVAL_METHODS
    out = tmp_path / "audit.json"
    args = ["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", "--label-col", "y_true", "--pred-col",
            "y_pred", "--source-col", "source", "--n-boot", "50", "--json", str(out)]  # fmt: skip
    assert main([*args, "--interval-method", "clopper-pearson"]) == 0
    printed = capsys.readouterr().out
    assert "intervals: clopper-pearson" in printed and "tests: permutation test" in printed
    payload = __import__("json").loads(out.read_text())
    recall = next(g["recall"] for g in payload["groups"] if g["attribute"] == "sex")
    assert recall["interval_method"] == "clopper-pearson"
    with pytest.raises((SystemExit, __import__("argparse").ArgumentError)):
        main([*args, "--interval-method", "normal"])


def test_hundreds_of_groups_cost_linear_rows_and_still_get_an_all_groups_test():
    """A table with 150 sites: no pairwise rows (11,175 pairs per metric), vs-reference rows and the max-min
    permutation test remain; each untested row says why."""
    rng = np.random.default_rng(5)
    n = 6000
    frame = pd.DataFrame({"y": rng.integers(0, 2, n), "site": rng.integers(0, 150, n).astype(str)})
    frame["pred"] = np.where(rng.random(n) < 0.8, frame.y, 1 - frame.y)
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["site"], metrics=["recall"], n_boot=100)
    gaps = result.gaps_frame()
    assert not (gaps.comparison == "pairwise").any()
    reference = gaps[gaps.comparison == "vs-reference"]
    assert len(reference) == 149 and reference.note.str.contains("not tested pair by pair").all()
    assert reference.ci_low.notna().all()  # Newcombe intervals still there
    assert 0 < gaps[gaps.comparison == "max-min"].p_value.iloc[0] <= 1


def test_count_permutations_have_the_distribution_of_shuffled_rows():
    """Dealing pooled cells out by hypergeometric draws is the same as shuffling group labels over rows: the
    permutation distributions of a binned AUROC gap agree (mean, spread, p-value) within Monte Carlo error."""
    from fairmed_core.fairness._calibration import binned_auroc

    rng = np.random.default_rng(3)
    y = (rng.random(55) < 0.3).astype(int)
    cell = y * 4 + rng.integers(0, 4, 55)
    group = np.r_[np.zeros(40, int), np.ones(15, int)]

    def counts(labels):
        c = np.zeros((2, 8))
        np.add.at(c, (labels, cell), 1)
        return c

    def gap(c):
        auroc = binned_auroc(c[..., 4:], c[..., :4])
        return np.abs(auroc[..., 0] - auroc[..., 1])

    observed = gap(counts(group))
    dealt = gap(permuted_group_counts(counts(group)[None].astype(int), (np.arange(8),), n_permutations=20000,
                                      rng=rng).astype(float))  # fmt: skip
    shuffled = np.array([gap(counts(rng.permutation(group))) for _ in range(20000)])
    assert np.nanmean(dealt) == pytest.approx(np.nanmean(shuffled), abs=0.004)
    assert np.nanstd(dealt) == pytest.approx(np.nanstd(shuffled), abs=0.004)
    p_dealt = permutation_p_value(np.array([observed]), dealt[:, None])[0]
    p_shuffled = permutation_p_value(np.array([observed]), shuffled[:, None])[0]
    assert p_dealt == pytest.approx(p_shuffled, abs=0.015)
