"""Model comparison on the same cases: paired intervals (coverage by simulation), gaps, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score

from fairmed_core.errors import FairMedInputError
from fairmed_core.report.comparison import compare_runs
from fairmed_core.runs.workspace import ASSETS

MODELS = ASSETS / "models"


def _paired_runs(rng, n_per_group=300):
    """Two groups; run B copies run A's answer 80% of the time, else answers afresh with a better recall."""
    group = np.repeat(["F", "M"], n_per_group)
    y = rng.random(group.size) < 0.4
    recall_a = np.where(group == "F", 0.70, 0.55)
    pred_a = np.where(y, rng.random(group.size) < recall_a, rng.random(group.size) < 0.10)
    fresh = np.where(y, rng.random(group.size) < 0.85, rng.random(group.size) < 0.10)
    pred_b = np.where(rng.random(group.size) < 0.8, pred_a, fresh)
    ids = [f"c{i}" for i in range(group.size)]
    label = np.where(y, "yes", "no")
    a = pd.DataFrame({"case_id": ids, "source": "s", "sex": group, "y_true": label,
                      "y_pred": np.where(pred_a, "yes", "no")})
    b = a.assign(y_pred=np.where(pred_b, "yes", "no"))
    # Population truth: P(B says yes | y=1, group) = 0.8 recall_a + 0.2 x 0.85
    truth = {g: 0.2 * (0.85 - r) for g, r in (("F", 0.70), ("M", 0.55))}
    return a, b, truth


def test_paired_interval_covers_the_true_change_at_the_nominal_rate():
    rng = np.random.default_rng(20261203)
    replicates, hits = 200, {"F": 0, "M": 0}
    for replicate in range(replicates):
        a, b, truth = _paired_runs(rng)
        result = compare_runs([a, b], ["A", "B"], attributes=["sex"], metrics=["recall"], n_boot=400,
                              seed=replicate)
        for change in result.changes:
            if change.source == "s":
                hits[change.group] += change.ci_low <= truth[change.group] <= change.ci_high
    mc_error = 3 * np.sqrt(0.95 * 0.05 / replicates)  # 3 Monte Carlo standard errors = 0.046
    for group, hit in hits.items():
        assert abs(hit / replicates - 0.95) <= mc_error, (group, hit / replicates)
    print(f"coverage over {replicates} replicates: {hits}")


def test_pairing_narrows_the_interval_compared_with_independent_runs():
    rng = np.random.default_rng(1)
    a, b, _ = _paired_runs(rng, n_per_group=400)
    paired = compare_runs([a, b], ["A", "B"], attributes=["sex"], metrics=["recall"], n_boot=500)
    shuffled = b.assign(y_pred=b["y_pred"].sample(frac=1.0, random_state=0).to_numpy(), y_true=b["y_true"])
    # Break the pairing but keep labels: answers permuted within the positives and negatives of each group.
    for (group, label), index in b.groupby(["sex", "y_true"]).groups.items():
        shuffled.loc[index, "y_pred"] = b.loc[index, "y_pred"].sample(frac=1.0, random_state=0).to_numpy()
    unpaired = compare_runs([a, shuffled], ["A", "B"], attributes=["sex"], metrics=["recall"], n_boot=500)
    width = {c.group: c.ci_high - c.ci_low for c in paired.changes if c.source == "s"}
    width_unpaired = {c.group: c.ci_high - c.ci_low for c in unpaired.changes if c.source == "s"}
    assert all(width[g] < 0.7 * width_unpaired[g] for g in width)


def test_values_match_scikit_learn_and_outcomes_read_the_interval():
    grpo = pd.read_csv(MODELS / "tiny-fairmedgemma-grpo" / "evaluation" / "predictions.csv")
    fair = pd.read_csv(MODELS / "tiny-fairmedgemma-fairgrpo" / "evaluation" / "predictions.csv")
    result = compare_runs([grpo, fair.sample(frac=1.0, random_state=0)], ["grpo", "fairgrpo"],
                          attributes=["sex"], metrics=["recall", "fpr"], n_boot=300)
    change = next(c for c in result.changes if (c.source, c.group, c.metric) == ("synth_derm", "F", "recall"))
    part = fair[(fair.source == "synth_derm") & (fair.sex == "F")]
    assert change.candidate_value == pytest.approx(recall_score(part.y_true, part.y_pred, pos_label="yes"))
    for c in result.changes:
        if c.outcome in ("better", "worse"):
            assert not c.ci_low <= 0 <= c.ci_high
        elif c.outcome == "no clear change":
            assert c.ci_low <= 0 <= c.ci_high
    assert {g.outcome for g in result.gap_changes} <= {"narrowed", "widened", "no clear change", "undefined"}
    assert any(g.source == "ALL" for g in result.gap_changes)


def test_a_clear_improvement_is_called_better_and_its_gap_narrowed():
    rng = np.random.default_rng(3)
    a, _, _ = _paired_runs(rng, n_per_group=500)
    better = a.copy()
    # B finds every positive case of group M: M's recall rises, the F-M recall gap closes.
    better.loc[(better.sex == "M") & (better.y_true == "yes"), "y_pred"] = "yes"
    result = compare_runs([a, better], ["A", "B"], attributes=["sex"], metrics=["recall"], n_boot=300)
    m = next(c for c in result.changes if c.source == "s" and c.group == "M")
    assert m.outcome == "better"
    gap = next(g for g in result.gap_changes if g.source == "s")
    assert gap.baseline_gap > 0.1 and gap.outcome in ("narrowed", "widened")


def test_runs_on_different_cases_are_refused_naming_the_ids():
    a, b, _ = _paired_runs(np.random.default_rng(0), n_per_group=10)
    b = b.assign(case_id=b.case_id.where(b.case_id != "c3", "x99"))
    with pytest.raises(FairMedInputError, match=r"1 case id\(s\) of 'A' are not in 'B': c3.*'B' are not in 'A': x99"):
        compare_runs([a, b], ["A", "B"], attributes=["sex"])
    with pytest.raises(FairMedInputError, match="more than once: c0"):
        compare_runs([a, pd.concat([a, a.head(1)])], ["A", "B"], attributes=["sex"])
    with pytest.raises(FairMedInputError, match="other true labels"):
        compare_runs([a, a.assign(y_true="yes")], ["A", "B"], attributes=["sex"])


def test_a_format_failure_is_scored_as_the_audit_scores_it():
    frame = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "source": "s", "sex": "F",
                          "y_true": ["yes", "yes", "no", "no"], "y_pred": ["yes", "yes", "no", "no"]})
    failed = frame.assign(y_pred=["(format failure)", "yes", "(format failure)", "no"])
    result = compare_runs([frame, failed], ["A", "B"], attributes=["sex"], metrics=["recall", "fpr"], n_boot=50)
    values = {c.metric: c.candidate_value for c in result.changes}
    # As the audit's default ("wrong"): the failed positive is missed, the failed negative is no false alarm.
    assert values == {"recall": 0.5, "fpr": 0.0}
    from fairmed_core.fairness import audit

    audited = audit(failed, label_col="y_true", pred_col="y_pred", sensitive=["sex"], metrics=["recall", "fpr"],
                    n_boot=0).groups_frame().set_index(["attribute", "metric"])  # fmt: skip
    assert audited.loc[("overall", "recall"), "estimate"] == values["recall"]
    assert audited.loc[("overall", "fpr"), "estimate"] == values["fpr"]
