"""The method comparison's per-step table (benchmarks/fairgrpo_methods.py ``step_table``): held-out F1 and
predictive parity averaged over sources within a seed and step, then mean ± sd over seeds, at evenly spread
steps; on hand-made curves whose values are known."""

from __future__ import annotations

import sys

import pandas as pd

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from fairgrpo_methods import step_table  # noqa: E402


def _curves() -> pd.DataFrame:
    rows = []
    for method, slope in (("grpo", 1.0), ("fairgrpo", -1.0)):
        for seed in (0, 1):
            for step in range(0, 90, 10):  # 9 evaluations: steps 0..80
                for source, offset in (("synth_cxr", 0.0), ("synth_mammo", 10.0)):
                    # PP over sources: 25 + slope * step / 10 + seed (seeds differ by 1 pp)
                    rows.append({"step": step, "source": source, "method": method, "seed": seed,
                                 "f1": 0.5 + 0.001 * step, "accuracy": 0.8,
                                 "predictive_parity": 20.0 + offset + slope * step / 10 + seed})
    return pd.DataFrame(rows)


def test_step_table_averages_sources_within_a_seed_then_over_seeds():
    lines = step_table(_curves(), points=5)
    f1_header = next(i for i, line in enumerate(lines) if line.startswith("Held-out F1"))
    pp_header = next(i for i, line in enumerate(lines) if line.startswith("Held-out predictive parity"))
    assert lines[f1_header + 2] == "| method | step 0 | step 20 | step 40 | step 60 | step 80 |"
    assert lines[f1_header + 4] == ("| grpo | 0.500 ± 0.000 | 0.520 ± 0.000 | 0.540 ± 0.000 | 0.560 ± 0.000 | "
                                    "0.580 ± 0.000 |")
    # seeds 0 and 1 differ by 1 pp: sd 0.707; GRPO's gap grows, FairGRPO's shrinks
    assert lines[pp_header + 4] == ("| grpo | 25.500 ± 0.707 | 27.500 ± 0.707 | 29.500 ± 0.707 | 31.500 ± 0.707 | "
                                    "33.500 ± 0.707 |")
    assert lines[pp_header + 5] == ("| fairgrpo | 25.500 ± 0.707 | 23.500 ± 0.707 | 21.500 ± 0.707 | "
                                    "19.500 ± 0.707 | 17.500 ± 0.707 |")
    assert step_table(pd.DataFrame()) == []
    # fewer evaluations than points: every step once
    few = _curves()[lambda f: f["step"] <= 20]
    assert step_table(few, points=5)[3] == "| method | step 0 | step 10 | step 20 |"
