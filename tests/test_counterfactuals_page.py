"""The Counterfactuals page under Streamlit's AppTest: generated pairs beside the originals and the true
counterfactuals with the model's answers and validity badges, a batch analysis saved as a run and shown with its
tests, and bad generator folders shown as error boxes. A tiny generator trained by the fixtures stands in for the
shipped one (fast); one test runs the shipped generator when it is there."""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

import fairmed_core.runs.workspace as workspace_module
from fairmed_core.runs.workspace import TINY_MODEL
from tests.conftest import REPO_ROOT
from tests.test_counterfactual_generator import _one_thread, small_manifest, trained  # noqa: F401
from tests.test_inference_page import _everything_shown, _no_errors, workspace  # noqa: F401 - a fixture

pytestmark = [pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="shipped tiny model missing"),
              pytest.mark.usefixtures("_one_thread")]

APP = str(REPO_ROOT / "app.py")
SHIPPED = workspace_module.SHIPPED_GENERATORS


def _open(workspace, monkeypatch, shipped) -> AppTest:
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(workspace))
    monkeypatch.setattr(workspace_module, "SHIPPED_GENERATORS", shipped)
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.switch_page("pages/counterfactuals.py").run()
    return at


@pytest.fixture()
def page(workspace, trained, monkeypatch, tmp_path):
    """The page with only the tiny generator (in the workspace), shipped generators hidden."""
    shutil.copytree(trained[0], workspace / "generators" / "tiny")
    at = _open(workspace, monkeypatch, tmp_path / "no-shipped")
    _no_errors(at)
    return at


def test_pairs_show_original_generated_difference_and_true_counterfactual(page):
    shown = _everything_shown(page)
    assert "Edits **sex**" in shown and "tiny (workspace)" in page.selectbox(key="cf_generator").options
    page.selectbox(key="cf_source").set_value("synth_derm").run()
    page.select_slider(key="cf_pairs_steps").set_value(10).run()
    page.button(key="cf_generate").click().run()
    _no_errors(page)
    captions = [c for image in page.get("image") for c in image.captions]
    assert "Original" in captions, captions
    assert any(c.startswith("Generated: M") for c in captions), captions
    assert any(c.startswith("Difference (stretched") for c in captions), captions
    assert any(c.startswith("True counterfactual: M") for c in captions), captions
    shown = _everything_shown(page)
    assert "reconstruction" in shown and "vs true counterfactual" in shown  # validity badges
    assert "Model on the original" in shown and "Model on the generated M" in shown
    assert "Model on the true counterfactual" in shown


def test_batch_analysis_is_saved_and_shows_its_tests(page, workspace):
    page.tabs[1].number_input(key="cf_batch_n").set_value(6).run()
    page.toggle(key="cf_batch_reverse").set_value(False).run()
    page.select_slider(key="cf_batch_steps").set_value(10).run()
    page.button(key="cf_batch_run").click().run()
    _no_errors(page)
    saved = [p for p in (workspace / "runs").iterdir() if (p / "tests.json").is_file()]
    assert len(saved) == 1 and len(list((saved[0] / "pairs").glob("*_counterfactual.png"))) == 6
    labels = [m.label for m in page.get("metric")]
    assert {"Pairs", "Valid pairs", "Flip rate", "McNemar p", "CI test p"} <= set(labels), labels
    assert page.get("plotly_chart"), "the flip-rate chart is missing"
    shown = _everything_shown(page)
    assert "true** counterfactuals" in shown and saved[0].name in page.selectbox(key="cf_saved").options
    # Reopened later, the saved run is listed and shown without running anything.
    again = AppTest.from_file(APP, default_timeout=300)
    again.run()
    again.switch_page("pages/counterfactuals.py").run()
    _no_errors(again)
    assert "Flip rate" in [m.label for m in again.get("metric")]


def test_without_a_generator_the_page_says_how_to_train_one(workspace, monkeypatch, tmp_path):
    at = _open(workspace, monkeypatch, tmp_path / "no-shipped")
    assert not at.exception
    assert any("fairmed train counterfactual" in w.value for w in at.warning)


def test_a_broken_generator_folder_is_an_error_box(workspace, monkeypatch, tmp_path):
    broken = workspace / "generators" / "broken"
    broken.mkdir(parents=True)
    (broken / "generator_config.json").write_text("{not json")
    at = _open(workspace, monkeypatch, tmp_path / "no-shipped")
    assert not at.exception
    assert at.error and "generator_config.json" in at.error[0].value


@pytest.mark.skipif(not (SHIPPED / "synth-sex" / "generator_config.json").is_file(),
                    reason="no shipped generator")
def test_the_shipped_generator_makes_a_pair_on_the_benchmark(workspace, monkeypatch):
    at = _open(workspace, monkeypatch, SHIPPED)
    _no_errors(at)
    assert "synth-sex (shipped)" in at.selectbox(key="cf_generator").options
    at.button(key="cf_generate").click().run()
    _no_errors(at)
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("Generated:") for c in captions) and any(c.startswith("True counterfactual") for c in
                                                                      captions)
