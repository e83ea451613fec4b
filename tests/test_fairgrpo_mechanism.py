"""The controlled FairGRPO check (benchmarks/fairgrpo_mechanism.py) runs, and its arms differ only by advantages."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
mechanism = pytest.importorskip("fairgrpo_mechanism")


def test_each_arm_trains_and_reports_per_group_accuracy():
    rows = [mechanism.train(method, 0, steps=15, prompts=16, generations=4, lr=0.05) for method in mechanism.METHODS]
    for row in rows:
        assert 0 <= row["minority"] <= 1 and 0 <= row["majority"] <= 1
        assert row["gap"] == pytest.approx(row["majority"] - row["minority"])
    # The same seed, prompts and optimiser: the arms end apart only because their advantages differ (weights
    # left at 1 by a bug would make grpo and fairgrpo coincide).
    assert {rows[0]["accuracy"], rows[0]["minority"]} != {rows[1]["accuracy"], rows[1]["minority"]}
    frame = pd.DataFrame(rows * 2).assign(seed=[0, 0, 0, 1, 1, 1])
    text = mechanism.markdown(frame, seeds=2, steps=15, seconds=1.0)
    assert text.startswith(mechanism.SECTION) and "| fairgrpo |" in text
