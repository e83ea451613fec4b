"""The shipped GRPO- and FairGRPO-trained tiny FairMedGemmas: small, loadable, carded with their training record
and audit beside the SFT start's, listed in the sidebar and on the audit page."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.runs.eval_store import list_evaluations
from fairmed_core.runs.workspace import ASSETS, TINY_MODEL, Workspace, shipped_model_dirs
from tests.conftest import REPO_ROOT

SHIPPED = {method: ASSETS / "models" / f"tiny-fairmedgemma-{method}" for method in ("grpo", "fairgrpo")}
pytestmark = pytest.mark.skipif(not all((p / "config.json").is_file() for p in SHIPPED.values()),
                                reason="GRPO/FairGRPO models not shipped")


@pytest.mark.parametrize("method", list(SHIPPED))
def test_the_shipped_model_is_small_loadable_and_carded(method):
    from fairmed_core.models.loading import load_model

    folder = SHIPPED[method]
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 8_000_000, size
    loaded = load_model(folder, device="cpu")
    assert loaded.parameter_count == load_model(TINY_MODEL, device="cpu").parameter_count
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert f"fairmed train {method} " in card and "Against the SFT start" in card and "One seed" in card
    finished = json.loads((folder / "training" / "training.json").read_text(encoding="utf-8"))
    assert finished["method"] == method and finished["steps"] == 40
    evaluation = json.loads((folder / "evaluation" / "run.json").read_text(encoding="utf-8"))
    assert evaluation["split"] == "test" and evaluation["n_cases"] == 2400
    assert f"accuracy\n{evaluation['accuracy']:.3f}" in card or f"accuracy {evaluation['accuracy']:.3f}" in card


def test_shipped_models_are_offered_in_the_sidebar_and_their_evaluations_on_the_audit_page(tmp_path, monkeypatch,
                                                                                          default_workspace):
    assert shipped_model_dirs()[0] == TINY_MODEL and set(SHIPPED.values()) <= set(shipped_model_dirs())
    names = [run.name for run in list_evaluations(Workspace(tmp_path), shipped=True)]
    assert {"shipped/tiny-fairmedgemma-grpo", "shipped/tiny-fairmedgemma-fairgrpo"} <= set(names)
    assert list_evaluations(Workspace(tmp_path)) == []  # the default lists the workspace only
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(default_workspace))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    at.run()
    options = at.selectbox(key="model_choice").options
    assert "tiny-fairmedgemma-fairgrpo (shipped, CPU)" in options, options
