"""Counterfactual invariance tests: flip table, ECA and the conditional-independence test, on known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from fairmed_core.counterfactual.invariance import (
    FORMAT_FAILURE,
    OVERALL,
    CITestResult,
    conditional_independence_test,
    counterfactual_accuracy,
    flip_table,
    mcnemar_p_values,
    wilson_interval,
)
from fairmed_core.errors import FairMedInputError

torch.set_num_threads(1)

# --------------------------------------------------------------------------------------------------------
# Hand-computed statistics
# --------------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_hand_computation():
    # 3 of 10, z = 1.959964: centre (0.3 + z^2/20) / (1 + z^2/10) = 0.355507,
    # half-width z sqrt(0.021 + z^2/400) / (1 + z^2/10) = 0.247715 (R's binom.confint: 0.1077913, 0.6032219).
    low, high = wilson_interval(3, 10)
    assert low == pytest.approx(0.1077913, abs=1e-6)
    assert high == pytest.approx(0.6032219, abs=1e-6)
    # 0 of 10: the lower bound is exactly 0, the upper z^2 / (n + z^2).
    z2 = 1.959964 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), abs=1e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(FairMedInputError):
        wilson_interval(11, 10)


def test_mcnemar_exact_mid_p_and_chi2_on_a_tiny_table():
    # b = 1, c = 6: P(X <= 1 | Binomial(7, 1/2)) = (1 + 7) / 128, two-sided 16/128; mid-p subtracts P(X = 1).
    p = mcnemar_p_values(1, 6)
    assert p["exact"] == pytest.approx(16 / 128, abs=1e-12)
    assert p["mid-p"] == pytest.approx(16 / 128 - 7 / 128, abs=1e-12)
    # (|1 - 6| - 1)^2 / 7 = 16/7 on 1 df: p = erfc(sqrt(x / 2)).
    assert p["chi2-cc"] == pytest.approx(math.erfc(math.sqrt(16 / 7 / 2)), abs=1e-12)
    assert mcnemar_p_values(0, 0) == {"exact": 1.0, "mid-p": 1.0, "chi2-cc": 1.0}
    assert mcnemar_p_values(3, 3)["mid-p"] == pytest.approx(1.0)
    assert mcnemar_p_values(3, 3)["chi2-cc"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------------
# Flip table
# --------------------------------------------------------------------------------------------------------


def _pairs(group: str, counts: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(group, f, c) for (f, c), k in counts.items() for _ in range(k)]
    return pd.DataFrame(rows, columns=["sex", "answer", "counterfactual_answer"])


def test_flip_table_tiny_table_matches_hand_computation():
    pairs = _pairs("F", {("yes", "no"): 1, ("no", "yes"): 6, ("yes", "yes"): 2, ("no", "no"): 1})
    table = flip_table(pairs, group_cols=["sex"])
    row = table.row("sex", "F")
    assert (row.n_pairs, row.flips, row.b, row.c) == (10, 7, 1, 6)
    assert row.flip_rate == pytest.approx(0.7)
    assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(7, 10))
    assert row.p_value == row.p_exact == pytest.approx(0.125)
    assert row.p_midp == pytest.approx(9 / 128)
    assert table.positive == "yes"
    assert table.row(OVERALL, OVERALL).flips == 7


def test_flip_table_directional_flips_in_one_group_only():
    # F: 30% of 200 pairs flip, mostly yes -> no; M: 2% flip, evenly in both directions.
    female = _pairs("F", {("yes", "no"): 50, ("no", "yes"): 10, ("yes", "yes"): 70, ("no", "no"): 70})
    male = _pairs("M", {("yes", "no"): 2, ("no", "yes"): 2, ("yes", "yes"): 98, ("no", "no"): 98})
    table = flip_table(pd.concat([female, male], ignore_index=True), group_cols=("sex",))
    f, m = table.row("sex", "F"), table.row("sex", "M")
    assert f.flip_rate == pytest.approx(0.30) and m.flip_rate == pytest.approx(0.02)
    assert f.ci_low > m.ci_high  # the intervals separate
    assert f.p_value < 1e-6 and m.p_value == pytest.approx(1.0)
    # Holm over the two groups: sorted p = (p_F, p_M) -> (2 p_F, max(2 p_F, p_M)).
    assert f.p_value_holm == pytest.approx(2 * f.p_value)
    assert f.p_value_holm < 0.01 and m.p_value_holm > 0.05
    frame = table.frame()
    assert list(frame["group"]) == [OVERALL, "F", "M"]
    assert frame.loc[0, "n_pairs"] == 400


def test_flip_table_format_failures_are_their_own_outcome():
    pairs = pd.DataFrame({
        "sex": ["F"] * 5,
        "answer": ["yes", None, None, "no", ""],
        "counterfactual_answer": ["no", "yes", np.nan, "no", "yes"],
    })
    row = flip_table(pairs, group_cols=["sex"]).row("sex", "F")
    # yes->no flips; failure->yes flips; failure->failure does not; no->no does not; ""->yes flips.
    assert row.flips == 3
    assert row.n_format_failure == 3
    assert (row.b, row.c) == (1, 0)  # only pairs with a parsed answer on both sides
    notes = flip_table(pairs, group_cols=["sex"]).notes
    assert any(FORMAT_FAILURE in note for note in notes)


def test_flip_table_empty_and_missing_groups():
    pairs = pd.DataFrame({
        "sex": pd.Categorical(["F", "F", None], categories=["F", "M"]),
        "answer": ["yes", "no", "yes"],
        "counterfactual_answer": ["yes", "yes", "no"],
    })
    table = flip_table(pairs, group_cols=["sex"])
    assert [r.group for r in table.rows if r.attribute == "sex"] == ["F", "UNK"]
    assert any("M" in note and "omitted" in note for note in table.notes)
    assert any("UNK" in note for note in table.notes)


def test_flip_table_binary_inference_and_non_binary_answers():
    numeric = pd.DataFrame({"g": ["a"] * 4, "answer": [1, 1, 0, 0], "counterfactual_answer": [0, 1, 1, 0]})
    assert flip_table(numeric, group_cols=["g"]).positive == 1
    letters = pd.DataFrame({"g": ["a"] * 3, "answer": ["A", "B", "C"], "counterfactual_answer": ["B", "B", "C"]})
    table = flip_table(letters, group_cols=["g"])
    row = table.row("g", "a")
    assert row.flips == 1 and row.b is None and math.isnan(row.p_value) and math.isnan(row.p_value_holm)
    assert "binary" in row.note
    # Two unnamed answers: the rate is reported, McNemar needs positive=.
    two = pd.DataFrame({"g": ["a"] * 3, "answer": ["mass", "none", "mass"],
                        "counterfactual_answer": ["none", "none", "mass"]})
    assert flip_table(two, group_cols=["g"]).positive is None
    named = flip_table(two, group_cols=["g"], positive="mass").row("g", "a")
    assert (named.b, named.c) == (1, 0)


def test_flip_table_variant_selection_and_errors():
    pairs = _pairs("F", {("yes", "no"): 1, ("no", "yes"): 6})
    assert flip_table(pairs, group_cols=["sex"], test="mid-p").row("sex", "F").p_value == pytest.approx(9 / 128)
    with pytest.raises(FairMedInputError) as error:
        flip_table(pairs, group_cols=["age_group"])
    assert error.value.column == "age_group"
    with pytest.raises(FairMedInputError):
        flip_table(pairs.to_dict(), group_cols=["sex"])
    with pytest.raises(FairMedInputError):
        flip_table(pairs.iloc[:0], group_cols=["sex"])
    with pytest.raises(FairMedInputError):
        flip_table(pairs, group_cols=["sex"], test="bowker")
    with pytest.raises(dataclasses.FrozenInstanceError):
        flip_table(pairs, group_cols=["sex"]).rows[0].flips = 0


# --------------------------------------------------------------------------------------------------------
# Counterfactual accuracy
# --------------------------------------------------------------------------------------------------------


def test_counterfactual_accuracy():
    result = counterfactual_accuracy(["yes", "no", None, "yes"], pd.Series(["yes", "yes", None, "no"]))
    assert (result.n, result.n_agree, result.n_format_failure) == (4, 2, 1)
    assert result.eca == pytest.approx(0.5)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(2, 4))
    assert counterfactual_accuracy(np.array([1, 0, 1]), [1, 0, 1]).eca == 1.0
    with pytest.raises(FairMedInputError):
        counterfactual_accuracy(["yes"], ["yes", "no"])
    with pytest.raises(FairMedInputError):
        counterfactual_accuracy([], [])


# --------------------------------------------------------------------------------------------------------
# Conditional-independence test on synthetic data with a known answer
# --------------------------------------------------------------------------------------------------------

_SHIFT = 1.5  # how much the dependent model's decision moves with the attribute


def _synthetic(seed: int, n: int, d: int = 4):
    """z ~ N(0, I), a ~ Bernoulli(1/2); an invariant model 1[z.w > 0] and a dependent one that also uses a."""
    rng = np.random.default_rng(10_000 + seed)
    z = rng.standard_normal((n, d))
    a = rng.integers(0, 2, n)
    w = np.ones(d) / math.sqrt(d)

    def invariant(z, a):
        return (z @ w > 0).astype(int)

    def dependent(z, a):
        return (z @ w + _SHIFT * (a - 0.5) > 0).astype(int)

    return z, a, invariant, dependent


def test_ci_test_separates_dependent_from_invariant_model_and_agrees_with_eca():
    z, a, invariant, dependent = _synthetic(0, 1000)
    fair = conditional_independence_test(z, a, invariant(z, a), seed=0)
    biased = conditional_independence_test(z, a, dependent(z, a), seed=0)
    assert isinstance(fair, CITestResult) and fair.alternative == "greater"
    assert biased.p_value < 0.01 and biased.statistic > 0 and biased.mean_u > biased.mean_v
    assert fair.p_value > 0.05
    # Ground truth from the true counterfactual (same z, attribute flipped): the invariant model never changes.
    assert counterfactual_accuracy(invariant(z, a), invariant(z, 1 - a)).eca == 1.0
    eca_biased = counterfactual_accuracy(dependent(z, a), dependent(z, 1 - a))
    assert eca_biased.ci_high < 0.6  # P(|z.w| > 0.75) = 0.45
    # Bookkeeping: one head per attribute value plus h, stratified split.
    assert [h.name for h in biased.heads] == ["g[a=0]", "g[a=1]", "h"]
    assert biased.heads[0].n_train + biased.heads[1].n_train == biased.heads[2].n_train == biased.n_train
    assert biased.n_train + biased.n_test == 1000
    assert all(math.isfinite(h.final_loss) for h in biased.heads)


def test_ci_test_is_repeatable_and_two_sided_matches_the_authors_variant():
    z, a, _, dependent = _synthetic(1, 600)
    threads = torch.get_num_threads()
    one = conditional_independence_test(z, a, dependent(z, a), seed=3, epochs=100)
    again = conditional_independence_test(z, a, dependent(z, a), seed=3, epochs=100)
    assert one == again
    assert torch.get_num_threads() == threads
    two = conditional_independence_test(z, a, dependent(z, a), seed=3, epochs=100, alternative="two-sided")
    assert two.statistic == one.statistic
    assert two.p_value == pytest.approx(2 * min(one.p_value, 1 - one.p_value), rel=1e-9, abs=1e-300)


@pytest.mark.slow
def test_ci_test_type_one_error_over_thirty_seeds():
    """The invariant model is rejected at 0.05 in at most ~15% of 30 synthetic data sets (measured: 0/30)."""
    p_values = []
    for seed in range(30):
        z, a, invariant, _ = _synthetic(100 + seed, 800)
        p_values.append(conditional_independence_test(z, a, invariant(z, a), seed=seed).p_value)
    rejection_rate = float(np.mean(np.asarray(p_values) < 0.05))
    assert rejection_rate <= 0.15, rejection_rate


def test_ci_test_input_errors_and_degenerate_cases():
    z, a, invariant, _ = _synthetic(2, 200)
    y = invariant(z, a)
    with pytest.raises(FairMedInputError, match="predictions"):
        conditional_independence_test(z, a, y[:-1])
    with pytest.raises(FairMedInputError, match="attribute values"):
        conditional_independence_test(z, a[:-1], y)
    with pytest.raises(FairMedInputError, match="0/1"):
        conditional_independence_test(z, a, np.where(y == 1, 2, 0))
    with pytest.raises(FairMedInputError, match="one value"):
        conditional_independence_test(z, np.zeros(200), y)
    with pytest.raises(FairMedInputError, match="2-D"):
        conditional_independence_test(z[:, 0], a, y)
    bad = z.copy()
    bad[7, 1] = np.nan
    with pytest.raises(FairMedInputError) as error:
        conditional_independence_test(bad, a, y)
    assert error.value.row == 7
    # A rare attribute value: the error names it.
    labels = np.where(np.arange(200) < 10, "rare", "common")
    with pytest.raises(FairMedInputError, match="'rare'"):
        conditional_independence_test(z, labels, y)
    # Constant predictions: nothing can depend on the attribute.
    for constant in (0, 1):
        result = conditional_independence_test(z, a, np.full(200, constant))
        assert result.p_value == 1.0 and "no dependence" in result.note and result.heads == ()
