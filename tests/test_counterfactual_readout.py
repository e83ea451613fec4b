"""How counterfactual results read: validity checks with units and thresholds that agree with the pair's
failures, the invariance verdict on valid pairs and true counterfactuals first, and readable labels for codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairmed_core.counterfactual.analysis import invariance_verdict
from fairmed_core.counterfactual.validity import PairValidity, ValidityThresholds, _judge, validity_checks
from fairmed_core.data.labels import answer_label, case_label, finding_name, group_label, source_label


@pytest.mark.parametrize("composition", [3.0, 12.0, 12.5, 40.0])
@pytest.mark.parametrize("effectiveness,judged", [(0.9, True), (0.2, True), (0.2, False)])
def test_every_check_states_unit_and_threshold_and_agrees_with_the_failures(composition, effectiveness, judged):
    thresholds = ValidityThresholds()
    failures = _judge(effectiveness, judged, composition, 9.0, thresholds)
    checks = {c.name: c for c in validity_checks(
        PairValidity(effectiveness, judged, composition, 9.0, 4.0, 6.5, failures), thresholds)}
    reconstruction = checks["reconstruction error"]
    assert reconstruction.passed == (not any("composable" in f for f in failures))
    assert reconstruction.describe() == f"reconstruction error {composition:.1f} grey levels (0-255), threshold 12"
    assert checks["there-and-back error"].describe().endswith("grey levels (0-255), threshold 15")
    recognised = checks["target group recognised"]
    assert recognised.passed == (None if not judged else effectiveness >= 0.5)
    assert recognised.describe().startswith(f"target group recognised {effectiveness:.2f} (probability, 0-1), "
                                            "needs 0.5 or more")
    truth = checks["distance to the true counterfactual"]
    assert truth.passed and truth.describe() == "distance to the true counterfactual 4.0 grey levels (0-255), " \
                                                "unedited image 6.5"


def test_a_saved_row_gives_back_the_same_validity():
    row = {"effectiveness": "0.75", "effectiveness_judged": True, "composition_mae": 9.0,
           "reversibility_mae": float("nan"), "truth_mae": None, "baseline_mae": np.nan,
           "failures": "not composable (reconstruction error 13.0 > 12); not reversible (x)"}
    validity = PairValidity.from_record(row)
    assert validity.effectiveness == 0.75 and validity.effectiveness_judged
    assert validity.reversibility_mae is None and validity.truth_mae is None and len(validity.failures) == 2
    assert PairValidity.from_record({**row, "failures": float("nan")}).valid


def _pairs(**columns) -> pd.DataFrame:
    base = {"answer": ["no"] * 4, "counterfactual_answer": ["no"] * 4, "valid": [True, False, False, False],
            "true_counterfactual_answer": ["no"] * 4, "true_flipped": [False] * 4}
    base.update(columns)
    return pd.DataFrame(base)


def test_a_flip_on_an_invalid_pair_is_no_evidence():
    verdict = invariance_verdict(_pairs(counterfactual_answer=["no", "yes", "no", "no"]))
    assert (verdict.n_flipped, verdict.n_valid_flipped, verdict.n_valid) == (1, 0, 1)
    assert not verdict.not_invariant and verdict.only_invalid_flips
    assert verdict.invalid_changes == ("no -> yes",)


@pytest.mark.parametrize("true_answer", ["yes", None])
def test_any_change_on_the_true_counterfactual_counts_no_to_yes_included(true_answer):
    verdict = invariance_verdict(_pairs(true_counterfactual_answer=["no", "no", true_answer, "no"],
                                        true_flipped=[False, False, True, False]))
    assert verdict.not_invariant and verdict.n_true_flipped == 1 and verdict.n_true == 4
    assert verdict.true_changes == (f"no -> {true_answer or 'no answer'}",)


def test_a_flip_on_a_valid_pair_counts_and_pairs_without_truth_are_not_counted_as_true():
    verdict = invariance_verdict(_pairs(counterfactual_answer=["yes", "no", "no", "no"],
                                        true_counterfactual_answer=[np.nan] * 4, true_flipped=[np.nan] * 4))
    assert verdict.not_invariant and verdict.n_valid_flipped == 1 and verdict.n_true == 0


def test_codes_read_as_words():
    assert group_label("A2") == "age 26-50" and group_label("UNK") == "not recorded" and group_label("F") == "female"
    assert group_label("dark") == "dark skin" and group_label("site-7") == "site-7"
    assert source_label("synth_cxr") == "chest X-ray" and source_label("hospital_a") == "hospital_a"
    assert finding_name("synth_derm") == "suspicious lesion" and finding_name("synth_mammo") == "mass"
    assert finding_name("elsewhere") is None
    assert answer_label("yes", "synth_cxr") == "yes (opacity)" and answer_label("no", "synth_mammo") == "no (no mass)"
    assert answer_label("no", "hospital_a") == "no" and answer_label("(format failure)", "synth_cxr") == \
        "(format failure)"
    assert case_label("synth_cxr-0000000005", "synth_cxr") == "case 5, chest X-ray"
    assert case_label("0000000005") == "case 5"
    assert case_label("CXR-A17", "hospital_a") == "case CXR-A17, hospital_a"


def test_the_flip_chart_draws_valid_pairs_solid_and_all_pairs_hatched_in_percent():
    from fairmed_core.viz import flip_rates_figure

    def rows(flips: int, n: int) -> pd.DataFrame:
        return pd.DataFrame({"attribute": ["ALL", "factual_group", "source"], "group": ["ALL", "A2", "synth_cxr"],
                             "n_pairs": [n] * 3, "flips": [flips] * 3, "flip_rate": [flips / n] * 3,
                             "ci_low": [0.0] * 3, "ci_high": [0.5] * 3})

    figure = flip_rates_figure(rows(0, 1), all_pairs=rows(1, 6))
    valid, every = figure.data
    assert valid.name == "valid pairs" and not valid.marker.pattern.shape
    assert every.name == "all pairs (valid or not)" and every.marker.pattern.shape == "/"
    assert list(valid.x) == ["all groups", "age 26-50", "chest X-ray"]
    assert every.y[0] == pytest.approx(100 / 6) and figure.layout.yaxis.ticksuffix == "%"
    assert len(flip_rates_figure(rows(1, 6)).data) == 1
