"""The ``fairmed`` command: synth, reference, card and audit, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from fairmed_core.cli import main
from fairmed_core.data import read_manifest
from fairmed_core.fairness import METRICS
from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS

AUDIT_ARGS = ["--label-col", "y_true", "--pred-col", "y_pred", "--score-col", "score", "--source-col", "source"]


def test_synth_writes_a_manifest_the_reader_loads_back(tmp_path):
    out = tmp_path / "bench"
    assert main(["synth", "--out", str(out), "--n", "90", "--seed", "3"]) == 0
    dataset = read_manifest(out / "manifest.jsonl")
    assert len(dataset) == 90
    assert set(dataset.sources) == {"synth_cxr", "synth_derm", "synth_mammo"}
    assert all((out / "img").joinpath(p).exists() for p in [*map(lambda s: s.split("/img/")[-1],
                                                               dataset.cases["image_path"])])


def test_synth_is_deterministic_by_seed(tmp_path):
    for name in ("a", "b"):
        assert main(["synth", "--out", str(tmp_path / name), "--n", "30", "--seed", "7"]) == 0
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (tmp_path / "b" / "manifest.jsonl").read_bytes()


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["synth", "--out", str(tmp_path), "--n", "10"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_audit_json_has_groups_and_gaps_with_intervals(tmp_path):
    out = tmp_path / "audit.json"
    code = main(["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", "--sensitive", "age_group",
                 "--intersect", *AUDIT_ARGS, "--n-boot", "200", "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    frame = pd.read_csv(REFERENCE_PREDICTIONS)
    attributes = {g["attribute"] for g in payload["groups"]}
    assert {"sex", "age_group", "sex x age_group", "overall"} <= attributes
    for entry in payload["groups"]:
        assert isinstance(entry["n"], int)
        for metric in METRICS:
            assert set(entry[metric]) >= {"estimate", "ci_low", "ci_high"}
    female = next(g for g in payload["groups"]
                  if g["source"] == "ALL" and g["attribute"] == "sex" and g["group"] == "F")
    rows = frame[frame["sex"] == "F"]
    assert female["n"] == len(rows)
    assert female["accuracy"]["estimate"] == pytest.approx((rows["y_true"] == rows["y_pred"]).mean())
    assert female["accuracy"]["ci_low"] <= female["accuracy"]["estimate"] <= female["accuracy"]["ci_high"]
    gap_keys = {"attribute", "metric", "difference", "ratio", "ci_low", "ci_high", "p_value"}
    assert payload["gaps"] and all(gap_keys <= set(g) for g in payload["gaps"])
    pairwise = [g for g in payload["gaps"] if g["comparison"] == "pairwise"]
    assert all(g["p_value"] is None or g["p_value"] >= g["p_value_raw"] - 1e-12 for g in pairwise)


def test_audit_reports_the_unknown_group_but_keeps_it_out_of_gaps(tmp_path):
    out = tmp_path / "audit.json"
    assert main(["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", *AUDIT_ARGS,
                 "--n-boot", "0", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert any(g["group"] == "UNK" for g in payload["groups"])
    assert not any("UNK" in (g["group_a"], g["group_b"]) for g in payload["gaps"])
    assert main(["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", *AUDIT_ARGS, "--n-boot", "0",
                 "--unknown-in-gaps", "--json", str(out)]) == 0
    assert any("UNK" in (g["group_a"], g["group_b"]) for g in json.loads(out.read_text())["gaps"])


@pytest.mark.parametrize(
    ("content", "extra", "expected"),
    [
        ("case_id,y_true,y_pred,sex\n", [], "no data rows"),
        ("case_id,truth,y_pred,sex\n1,yes,no,F\n", [], "'y_true'"),
        ("case_id,y_true,y_pred,sex\n1,yes,no,F\n2,maybe,no,M\n", ["--label-values", "yes", "no"], "row 3"),
        ("case_id,y_true,y_pred,sex,score\n1,yes,no,F,high\n", ["--score-col", "score"], "'score'"),
        ("\x89PNG\r\n\x1a\n\x00\x00junk", [], "PNG"),
    ],
    ids=["zero-rows", "missing-column", "label-outside-set", "non-numeric-score", "junk-bytes"],
)
def test_bad_predictions_exit_2_with_file_column_row_and_no_traceback(tmp_path, content, extra, expected):
    path = tmp_path / "preds.csv"
    path.write_bytes(content.encode("latin-1"))
    result = subprocess.run(
        [sys.executable, "-m", "fairmed_core.cli", "audit", str(path), "--sensitive", "sex",
         "--label-col", "y_true", "--pred-col", "y_pred", "--n-boot", "10", *extra],
        capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr and expected.lower() in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1


def test_audit_of_a_missing_file_exits_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope.csv"), "--sensitive", "sex", "--label-col", "y",
                 "--pred-col", "p"]) == 2
    assert "nope.csv" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_reference_predictions_are_reproduced_by_the_cli(default_manifest, tmp_path):
    out = tmp_path / "reference.csv"
    assert main(["reference", "--data", str(default_manifest), "--out", str(out)]) == 0
    shipped = pd.read_csv(REFERENCE_PREDICTIONS)
    fresh = pd.read_csv(out)
    # L-BFGS stops at its tolerance along a path that depends on the CPU's BLAS kernels: scores measured 4e-4 apart
    # between two machines here. So scores agree to a tolerance, and an answer may flip only for a case whose score
    # sits within it of the 0.5 threshold (one shipped case scores 0.49996).
    assert abs(fresh["score"] - shipped["score"]).max() < 2e-3
    on_threshold = (shipped["score"] - 0.5).abs() < 2e-3
    assert on_threshold.sum() <= 20
    pd.testing.assert_frame_equal(fresh[~on_threshold].drop(columns="score"),
                                  shipped[~on_threshold].drop(columns="score"))


def test_card_prints_group_sizes(default_manifest, capsys, tmp_path):
    out = tmp_path / "card.json"
    assert main(["card", "--data", str(default_manifest), "--json", str(out)]) == 0
    card = json.loads(out.read_text())
    assert card["n_cases"] == 6000
    assert "synth_derm" in capsys.readouterr().out
