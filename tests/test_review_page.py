"""The Review page under Streamlit's AppTest: plan from the shipped FairGRPO model's evaluation, save and lock it,
build the evidence pack against the GRPO baseline, download it, and record a decision."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")


@pytest.fixture()
def app(tmp_path, monkeypatch, default_workspace):
    workspace = tmp_path / "workspace"
    (workspace / "datasets").mkdir(parents=True)
    # the embedded benchmark is already written once per session: link it instead of writing it again
    (workspace / "datasets" / "synth-default").symlink_to(default_workspace / "datasets" / "synth-default")
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(workspace))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/review.py").run()
    return at, workspace


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_review_page_plans_builds_signs_and_verifies(app):
    at, workspace = app
    _no_errors(at)
    assert at.title[0].value == "Review"
    assert at.selectbox(key="review_run").value.startswith("shipped/tiny-fairmedgemma-fairgrpo")
    baselines = at.multiselect(key="review_baselines_shipped/tiny-fairmedgemma-fairgrpo").value
    assert len(baselines) == 1 and baselines[0].startswith("shipped/tiny-fairmedgemma-grpo")
    slug = "shipped_tiny-fairmedgemma-fairgrpo"
    assert at.button(key="review_build").disabled  # no saved plan yet
    at.text_input(key=f"plan_decision_{slug}").set_value("approve for a supervised pilot")
    at.button(key=f"plan_save_{slug}").click().run()
    _no_errors(at)
    plan_file = workspace / "reviews" / slug / "plan.json"
    assert json.loads(plan_file.read_text())["decision_requested"] == "approve for a supervised pilot"
    at.checkbox(key="review_pdf").uncheck()
    at.button(key="review_build").click().run()
    _no_errors(at)
    packs = sorted((workspace / "reviews" / slug).glob("pack-*"))
    assert len(packs) == 1 and (packs[0] / "pack.html").is_file()
    assert (plan_file.parent / "plan.json.lock.json").is_file()  # building locked the plan
    assert any("Verified" in s.value for s in at.success)
    labels = [b.label for b in at.get("download_button")]
    assert "Download pack.html" in labels and "Download pack.json" in labels
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"Meets the margin", "Fails the margin", "Insufficient evidence"}
    form_inputs = [t for t in at.text_input if t.label.startswith("Reviewers")]
    form_inputs[0].set_value("Dr A, Dr B")
    at.radio[0].set_value("approve")
    at.button[-1].click().run()
    _no_errors(at)
    decisions = [json.loads(line) for line in (packs[0] / "decisions.jsonl").read_text().splitlines()]
    assert decisions[0]["reviewers"] == ["Dr A", "Dr B"] and decisions[0]["decision"] == "approve"


def test_a_plan_naming_a_missing_attribute_shows_an_error_and_cannot_be_saved(app):
    at, _ = app
    slug = "shipped_tiny-fairmedgemma-fairgrpo"
    editor_key = f"plan_metrics_{slug}"
    at.session_state[editor_key] = {"edited_rows": {0: {"metric": "auroc"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    errors = [e.value for e in at.error]
    assert any("metrics[0].metric" in e and "auroc" in e for e in errors), errors
    assert at.button(key=f"plan_save_{slug}").disabled
