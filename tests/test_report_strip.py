"""The audit's verdict strip: counts from intervals, worst recorded group, small-group and near-constant lines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fairmed_core.fairness import audit
from fairmed_core.report.strip import verdict_strip
from fairmed_core.report.verdicts import FAILS, INSUFFICIENT, MEETS


def _table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 3000
    sex = rng.choice(["F", "M", "UNK"], n, p=[0.5, 0.45, 0.05])
    y = (rng.random(n) < 0.4).astype(int)
    recall = np.where(sex == "F", 0.5, 0.85)  # women's recall well outside the band, clear of it
    pred = np.where(y == 1, rng.random(n) < recall, rng.random(n) < 0.1).astype(int)
    return pd.DataFrame({"y": y, "pred": pred, "sex": sex})


def test_strip_counts_band_verdicts_from_intervals_and_names_the_worst_recorded_group():
    result = audit(_table(), label_col="y", pred_col="pred", sensitive=["sex"], metrics=["recall", "accuracy"],
                   n_boot=200, reference_groups={"sex": "M"})  # fmt: skip
    strip = verdict_strip(result, source="ALL", attribute="sex", band=(0.8, 1.25))
    recall = next(v for v in strip.verdicts if v.metric == "recall")
    assert recall.group == "F" and recall.verdict == FAILS
    assert recall.ci_high < recall.band_low  # the whole interval is below the band read at the reference
    assert all(v.verdict in (FAILS, MEETS, INSUFFICIENT) for v in strip.verdicts)
    assert "1 of 2 group-vs-reference comparisons are outside" in strip.lines[0]
    assert "Recall (TPR, sensitivity) female vs male" in strip.lines[0]
    worst = next(line for line in strip.lines if line.startswith("Lowest-performing"))
    assert "female" in worst and "not recorded" not in worst


def test_strip_suppresses_ratio_verdicts_where_the_model_almost_always_answers_no():
    frame = _table(1)
    blind = frame.assign(source="blind", pred=(np.random.default_rng(2).random(len(frame)) < 0.01).astype(int))
    both = pd.concat([frame.assign(source="seeing"), blind], ignore_index=True)
    result = audit(both, label_col="y", pred_col="pred", sensitive=["sex"], source_col="source",
                   metrics=["recall", "specificity"], n_boot=100)  # fmt: skip
    strip = verdict_strip(result, source="blind", attribute="sex")
    assert "blind" in strip.suppressed_sources and "ALL" in strip.suppressed_sources
    assert all(v.verdict == INSUFFICIENT and "suppressed" in v.reason for v in strip.verdicts)
    assert any("ratio verdicts are suppressed" in line for line in strip.lines)
    seeing = verdict_strip(result, source="seeing", attribute="sex")
    assert any(v.verdict == FAILS for v in seeing.verdicts)
