"""The Counterfactuals page under Streamlit's AppTest: generated pairs beside the originals and the true
counterfactuals with the model's answers and validity badges, a batch analysis saved as a run and shown with its
tests, and bad generator folders shown as error boxes. A tiny generator trained by the fixtures stands in for the
shipped one (fast); one test runs the shipped generator when it is there."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

import fairmed_core.runs.workspace as workspace_module
from fairmed_core.runs.workspace import TINY_MODEL
from tests.conftest import REPO_ROOT
from fairmed_core.counterfactual import analysis as analysis_module
from fairmed_core.counterfactual import load_generator
from fairmed_core.counterfactual.analysis import AnalysisSettings, ModelAnswer, run_counterfactual_analysis
from fairmed_core.data import read_manifest
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
    assert any(c.startswith("Generated: male") for c in captions), captions
    assert any(c.startswith("Difference (stretched") for c in captions), captions
    assert any(c.startswith("True counterfactual: male") for c in captions), captions
    shown = _everything_shown(page)
    # Every badge: unit and threshold whether it passed or not, and an icon and a word besides the colour.
    assert "reconstruction error" in shown and "grey levels (0-255), threshold 12" in shown, shown
    assert "distance to the true counterfactual" in shown and "unedited image" in shown
    assert ":material/check_circle: pass:" in shown or ":material/cancel: fail:" in shown
    assert "effectiveness not checked" in shown  # the tiny generator has no classifier: invalid, and said so
    # A readable case label in the header, not the raw id.
    case_id = page.multiselect(key="cf_cases").value[0]
    assert f"#### Case {int(case_id.rsplit('-', 1)[1])}, dermoscopy" in shown and case_id not in shown
    assert "Model on the original" in shown and "Model on the generated male" in shown
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
    assert {"Valid pairs", "Flip rate, valid pairs", "Flip rate, all pairs (valid or not)", "McNemar p, valid pairs",
            "CI test p"} <= set(labels), labels
    assert page.get("plotly_chart"), "the flip-rate chart is missing"
    shown = _everything_shown(page)
    assert "true** counterfactuals" in shown and saved[0].name in page.selectbox(key="cf_saved").options
    # Reopened later, the saved run is listed and shown without running anything.
    again = AppTest.from_file(APP, default_timeout=300)
    again.run()
    again.switch_page("pages/counterfactuals.py").run()
    _no_errors(again)
    assert "Flip rate, valid pairs" in [m.label for m in again.get("metric")]


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


class _ScriptedModel:
    """A model under review whose answers are given in advance: the original, the generated and the true
    counterfactual images of each pair, in the order ``run_counterfactual_analysis`` asks them."""

    def __init__(self, factual, generated, true, name="scripted"):
        self.script, self.name = (list(factual), list(generated), list(true)), name

    def answer(self, images, questions, progress=None):
        factual, generated, true = self.script
        n = len(images) // 3
        answers = factual[:n] + generated[:n] + true[:n]
        assert len(answers) == len(images), (len(answers), len(images))
        return [ModelAnswer(a, f"reasoning {a}") for a in answers]


def _judging_classifier(first_valid: int):
    """An attribute classifier that recognises the target in the first ``first_valid`` pairs only."""
    sources = ("synth_cxr", "synth_derm", "synth_mammo")
    info = SimpleNamespace(trustworthy=True, val_balanced_accuracy=0.9)
    return SimpleNamespace(attribute="sex", infos={s: info for s in sources},
                           probability_of=lambda images, s, t: [0.9 if i < first_valid else 0.1
                                                                for i in range(len(images))])


def test_saved_analysis_headline_counts_valid_pairs_and_a_true_counterfactual_change_gets_the_banner(
        workspace, trained, small_manifest, monkeypatch, tmp_path):
    """Observation 6 of issue 15: six pairs, five invalid, the one generated flip on an invalid pair, and a
    no -> yes change on a true counterfactual. The headline read 16.7% with no banner; it now reads the valid
    pairs (0.0%) with all pairs beside it, and the banner names the true counterfactual's change."""
    out = workspace / "runs" / "counterfactual-scripted"
    run_counterfactual_analysis(
        _ScriptedModel(["no"] * 6, ["no", "yes", "no", "no", "no", "no"], ["yes", "no", "no", "no", "no", "no"]),
        load_generator(trained[0]), read_manifest(small_manifest),
        AnalysisSettings(n=6, reversibility=False, steps=10,
                         thresholds=analysis_module.ValidityThresholds(composition_mae=255.0)),
        out_dir=out, classifier=_judging_classifier(1))
    shutil.copytree(trained[0], workspace / "generators" / "tiny")
    at = _open(workspace, monkeypatch, tmp_path / "no-shipped")
    _no_errors(at)
    metrics = {m.label: m.value for m in at.get("metric")}
    assert metrics["Valid pairs"] == "1 of 6"
    assert metrics["Flip rate, valid pairs"] == "0.0%"
    assert metrics["Flip rate, all pairs (valid or not)"] == "16.7%"
    banners = [w.value for w in at.warning]
    assert any("not counterfactually invariant" in w and "1 of 6 true counterfactuals" in w for w in banners), \
        banners
    shown = _everything_shown(at)
    assert "Valid pairs: 0.0% (0 of 1 pairs" in shown and "All pairs, valid or not: 16.7% (1 of 6 pairs" in shown
    tables = [t.value for t in at.dataframe]
    pairs = next(t for t in tables if "Case" in t.columns)
    assert all(label.startswith("case ") and "-" not in label.split(",")[0] for label in pairs["Case"]), pairs
    assert {"female", "male"} >= set(pairs["From"]) and "Reconstruction error (grey levels 0-255)" in pairs
    flips = next(t for t in tables if "Pairs counted" in t.columns)
    assert set(flips["Pairs counted"]) == {"valid pairs", "all pairs"} and "all groups" in set(flips["Group"])


def test_a_change_only_on_an_invalid_pair_is_named_but_is_no_verdict(workspace, trained, small_manifest,
                                                                      monkeypatch, tmp_path):
    out = workspace / "runs" / "counterfactual-invalid-flip"
    run_counterfactual_analysis(
        _ScriptedModel(["no"] * 6, ["no", "yes", "no", "no", "no", "no"], ["no"] * 6),
        load_generator(trained[0]), read_manifest(small_manifest),
        AnalysisSettings(n=6, reversibility=False, steps=10,
                         thresholds=analysis_module.ValidityThresholds(composition_mae=255.0)),
        out_dir=out, classifier=_judging_classifier(1))
    shutil.copytree(trained[0], workspace / "generators" / "tiny")
    at = _open(workspace, monkeypatch, tmp_path / "no-shipped")
    _no_errors(at)
    assert not any("not counterfactually invariant" in w.value for w in at.warning)
    assert any("invalid generated pair" in i.value for i in at.info)


def test_pairs_tab_banner_fires_on_a_no_to_yes_change_on_the_true_counterfactual(page, monkeypatch):
    """The per-case banner used to read only the generated pair's flip, so a change on the true counterfactual
    (here no -> yes, with the generated pair unchanged) showed no banner."""
    monkeypatch.setattr(analysis_module, "VLMPredictor",
                        lambda loaded, name=None: _ScriptedModel(["no"] * 4, ["no"] * 4, ["yes"] * 4))
    page.selectbox(key="cf_source").set_value("synth_derm").run()
    page.select_slider(key="cf_pairs_steps").set_value(10).run()
    page.button(key="cf_generate").click().run()
    _no_errors(page)
    banners = [w.value for w in page.warning]
    assert any("not counterfactually invariant" in w and "true counterfactual (no -> yes)" in w for w in banners), \
        banners
