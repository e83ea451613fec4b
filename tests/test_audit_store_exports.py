"""Saved audits: group names from the user's file cannot run as spreadsheet formulas in the CSV exports."""

from __future__ import annotations

import json

import pandas as pd

from fairmed_core.fairness import audit
from fairmed_core.runs.audit_store import save_audit, spreadsheet_safe


def test_formula_like_text_is_quoted_and_numbers_are_not():
    frame = pd.DataFrame({"group": ["=HYPERLINK(\"http://x\")", "+1", "-cmd", "@SUM(A1)", "\tx", "F", "a=b"],
                          "gap": [-0.5, 0.1, 0.2, -1.0, 0.0, 0.3, 0.4]})
    safe = spreadsheet_safe(frame)
    assert list(safe["group"]) == ["'=HYPERLINK(\"http://x\")", "'+1", "'-cmd", "'@SUM(A1)", "'\tx", "F", "a=b"]
    assert list(safe["gap"]) == list(frame["gap"])  # a negative number stays a number
    assert list(frame["group"])[0].startswith("=")  # the input is not modified


def test_saved_audit_csvs_quote_injected_group_names_and_json_keeps_them(tmp_path):
    n = 80
    predictions = pd.DataFrame({
        "label": [i % 2 for i in range(n)],
        "pred": [(i // 2) % 2 for i in range(n)],
        "site": ["=cmd|' /C calc'!A0" if i % 2 else "@north" for i in range(n)],
    })
    result = audit(predictions, label_col="label", pred_col="pred", sensitive=["site"], n_boot=0)
    save_audit(result, tmp_path, predictions=predictions)
    groups = pd.read_csv(tmp_path / "groups.csv", keep_default_na=False)
    names = set(groups["group"])
    assert "'=cmd|' /C calc'!A0" in names and "'@north" in names
    assert not any(str(name).startswith(("=", "+", "-", "@")) for name in names)
    for table in ("gaps.csv", "summary.csv"):
        text = (tmp_path / table).read_text()
        assert not any(cell.startswith(("=", "+", "@")) for line in text.splitlines() for cell in line.split(","))
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert "=cmd|' /C calc'!A0" in {g["group"] for g in saved["groups"]}
    # The user's own predictions are kept as given, so they read back unchanged.
    assert pd.read_csv(tmp_path / "predictions.csv")["site"].tolist() == predictions["site"].tolist()
