"""The RL-headroom benchmark's arithmetic (benchmarks/grpo_headroom.py): F1, the disagreeing share, the sampled
policy's F1 and the threshold chosen on val, on hand-made answers whose results are known."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from grpo_headroom import f1_score, headroom  # noqa: E402


def test_f1_of_the_positive_class():
    truth = np.array([True, True, False, False])
    assert f1_score(truth, np.array([True, False, True, False])) == pytest.approx(0.5)
    assert f1_score(truth, truth) == 1.0
    assert f1_score(np.zeros(3, bool), np.zeros(3, bool)) == 0.0


def test_headroom_finds_the_threshold_a_shy_model_needs():
    # A shy model: it says yes to positives in 1 of 4 samples and never to negatives, so greedy decoding (no)
    # misses every positive while a threshold at s >= 0.25 separates the classes perfectly.
    samples = 4
    truth = np.array([True] * 4 + [False] * 6)
    draws = np.zeros((10, samples), dtype=bool)
    for case in range(4):
        draws[case, case % samples] = True
    frame = pd.DataFrame({"source": "cxr", "truth": truth, "yes": False, "s": draws.mean(axis=1)})
    table = headroom(frame, frame, draws, samples).set_index("source")
    row = table.loc["cxr"]
    assert row["greedy_f1"] == 0.0 and row["disagreeing"] == pytest.approx(0.4)
    assert row["threshold"] == pytest.approx(0.25) and row["threshold_f1"] == 1.0 and row["best_f1"] == 1.0
    # one sampled answer per case finds exactly one positive (1 of 4 true positives, no false ones)
    assert row["sampled_f1"] == pytest.approx(2 * 1 / (4 + 1))
    assert table.loc["mean over sources", "cases"] == 10 and table.loc["mean over sources", "positives"] == 4
