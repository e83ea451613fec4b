"""The pooled-gap check (Simpson's paradox) and near-constant sources, on tables where the answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairmed_core.fairness import audit, near_constant_sources, pooled_gap_checks


def _two_sources(rng, *, men_share_a: float, tpr: dict, n: int = 1500) -> pd.DataFrame:
    """Source a: hard (low recall), mostly men; source b: easy, mostly women. Recall per (source, sex) is
    ``tpr``; prevalence 0.4 everywhere."""
    frames = []
    for source, men_share in (("a", men_share_a), ("b", 1 - men_share_a)):
        sex = np.where(rng.random(n) < men_share, "M", "F")
        y = (rng.random(n) < 0.4).astype(int)
        rate = np.array([tpr[(source, s)] for s in sex])
        pred = np.where(y == 1, rng.random(n) < rate, rng.random(n) < 0.1).astype(int)
        frames.append(pd.DataFrame({"source": source, "sex": sex, "y": y, "pred": pred}))
    return pd.concat(frames, ignore_index=True)


def _recall_check(frame):
    result = audit(frame, label_col="y", pred_col="pred", sensitive=["sex"], source_col="source",
                   metrics=["recall"], n_boot=200, seed=0)  # fmt: skip
    (check,) = pooled_gap_checks(result)
    return check


def test_a_pooled_gap_made_by_the_mix_of_sources_is_named_so():
    rng = np.random.default_rng(0)
    same = {("a", "F"): 0.2, ("a", "M"): 0.2, ("b", "F"): 0.8, ("b", "M"): 0.8}
    check = _recall_check(_two_sources(rng, men_share_a=0.85, tpr=same))
    assert check.pooled_ci_low > 0.2  # women's pooled recall looks far higher
    assert check.standardised_ci_low < 0 < check.standardised_ci_high
    assert check.reading == "comes from the mix of sources"


def test_a_real_within_source_gap_persists():
    rng = np.random.default_rng(1)
    real = {("a", "F"): 0.6, ("a", "M"): 0.4, ("b", "F"): 0.8, ("b", "M"): 0.6}
    check = _recall_check(_two_sources(rng, men_share_a=0.5, tpr=real))
    assert check.reading == "persists within sources"
    assert check.standardised_difference == pytest.approx(0.2, abs=0.06)


def test_a_reversed_gap_is_simpsons_paradox():
    rng = np.random.default_rng(2)
    reversed_ = {("a", "F"): 0.1, ("a", "M"): 0.3, ("b", "F"): 0.7, ("b", "M"): 0.9}
    check = _recall_check(_two_sources(rng, men_share_a=0.9, tpr=reversed_))
    assert check.pooled_difference > 0 and check.standardised_ci_high < 0
    assert check.reading.startswith("reverses within sources")


def test_the_shipped_model_is_blind_on_chest_x_rays_and_its_pooled_sex_recall_gap_is_the_mix():
    """Issue 15, observation 1, on the shipped tiny FairMedGemma's test predictions."""
    from fairmed_core.runs.workspace import REPO_ROOT

    frame = pd.read_csv(REPO_ROOT / "assets/models/tiny-fairmedgemma/evaluation/predictions.csv",
                        keep_default_na=False, na_values=[""])  # fmt: skip
    result = audit(frame, label_col="y_true", pred_col="y_pred", sensitive=["sex"], source_col="source",
                   positive_label="yes", metrics=["recall", "specificity"], n_boot=200)  # fmt: skip
    near = near_constant_sources(result)
    assert [(n.source, n.metric) for n in near] == [("synth_cxr", "recall")]
    assert "1.1% of the 285 positive cases" in near[0].describe()
    recall = next(c for c in pooled_gap_checks(result) if c.metric == "recall")
    assert recall.pooled_ci_low > 0.2 and recall.reading != "persists within sources"
