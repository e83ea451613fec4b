"""The Inference page under Streamlit's AppTest: a benchmark case beside its true counterfactual, an uploaded
image (PNG, DICOM without showing patient data, bad files as error boxes), and a split evaluated into a run the
Fairness audit page opens. The page runs the shipped tiny FairMedGemma (the sidebar's default)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from fairmed_core.data import read_manifest
from fairmed_core.models.answer_changes import read_answer_changes
from fairmed_core.runs.workspace import TINY_MODEL
from tests.conftest import REPO_ROOT
from tests.test_uploads import PHI, _dicom, _dx_pixels

pytestmark = pytest.mark.skipif(not (TINY_MODEL / "config.json").is_file(), reason="shipped tiny model missing")

APP = str(REPO_ROOT / "app.py")


@pytest.fixture()
def workspace(default_workspace, tmp_path):
    """A fresh workspace sharing the embedded benchmark (runs and models written here stay here)."""
    root = tmp_path / "workspace"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    return root


@pytest.fixture()
def page(workspace, monkeypatch):
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(workspace))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()  # through app.py first, so the page runs inside the navigation with the sidebar
    at.switch_page("pages/inference.py").run()
    _no_errors(at)
    return at


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _everything_shown(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "code", "text", "table",
                 "dataframe"):
        for element in at.get(kind):
            parts.append(str(getattr(element, "value", element)))
    parts.extend(caption for image in at.get("image") for caption in image.captions)
    return "\n".join(parts)


def test_a_case_is_answered_beside_its_true_counterfactual(page, default_manifest):
    assert page.title[0].value == "Inference"
    assert any("tiny-fairmedgemma" in c.value and "0.72M parameters" in c.value for c in page.caption)
    page.selectbox(key="inference_source").set_value("synth_cxr").run()
    page.selectbox(key="inference_group_sex").set_value("F").run()
    case_id = page.selectbox(key="inference_case").value
    shown_label = page.selectbox(key="inference_case").options[page.selectbox(key="inference_case").index]
    assert case_id.startswith("synth_cxr") and case_id not in shown_label
    assert shown_label.startswith(f"case {int(case_id.rsplit('-', 1)[1])}, chest X-ray (female")
    assert "truth: yes (opacity)" in shown_label or "truth: no (no opacity)" in shown_label
    assert page.selectbox(key="inference_cf_attribute").options == ["Sex", "Age group", "(none)"]
    assert page.selectbox(key="inference_cf_attribute").value == "sex"  # the counterfactual is shown by default
    assert page.selectbox(key="inference_cf_group").options == ["male"]
    page.button(key="inference_run_case").click().run()
    _no_errors(page)

    images = page.get("image")
    assert len(images) == 2
    captions = " ".join(caption for image in images for caption in image.captions)
    assert f"Case {int(case_id.rsplit('-', 1)[1])}, chest X-ray as recorded" in captions
    assert "sex female -> male" in captions
    answers = [e.value for e in [*page.success, *page.error, *page.info] if "Answer:" in e.value
               or "Format failure" in e.value]
    assert len(answers) == 2
    truth = read_manifest(default_manifest).cases.set_index("case_id").loc[case_id, "answer"]
    assert all(("(correct)" in a) or (f"ground truth is {truth}" in a) or "Format failure" in a for a in answers)
    verdicts = [e.value for e in [*page.success, *page.warning] if "sex female -> male" in e.value]
    assert len(verdicts) == 1 and ("Same answer" in verdicts[0] or "changed" in verdicts[0])
    assert sum("<div class='fm-reasoning'>" in m.value for m in page.markdown) == 2
    # Beside each of the two answers: what the shipped model is and is not.
    notes = [c.value for c in page.caption if "Research tool, synthetic-data model, not a medical device" in c.value]
    assert len(notes) == 2


def test_a_case_where_the_answer_changes_opens_in_one_pick_with_the_model_run(page):
    """Observation 7 of issue 15: finding a case whose answer changes took four tries by hand."""
    listed = page.selectbox(key="inference_change_pick").options
    assert len(listed) > 5 and listed[0] == "(choose a case to open it below)"
    assert any("cases where the answer changes" in e.label.lower() for e in page.get("expander"))
    assert any("true counterfactual pairs" in c.value and "%" in c.value for c in page.caption)
    stored = read_answer_changes(TINY_MODEL / "evaluation")
    case_id = stored.cases["case_id"].iloc[0]
    pair = stored.pairs[stored.pairs["case_id"] == case_id].iloc[0]
    page.selectbox(key="inference_change_pick").set_value(case_id).run()
    assert not page.exception
    assert not [e.value for e in page.error if "Answer:" not in e.value]  # a wrong answer is an error box
    # The case view shows that case with that counterfactual, already answered, and the banner fires.
    assert page.selectbox(key="inference_cf_attribute").value == pair["attribute"]
    assert page.selectbox(key="inference_cf_group").value == pair["counterfactual_group"]
    banners = [w.value for w in page.warning if "not counterfactually invariant" in w.value]
    assert len(banners) == 1, [w.value for w in page.warning]
    assert len(page.get("image")) == 2


def test_filters_narrow_the_case_list_to_the_chosen_groups(page, default_manifest):
    page.selectbox(key="inference_source").set_value("synth_derm").run()
    page.selectbox(key="inference_group_skin_tone").set_value("dark").run()
    _no_errors(page)
    cases = read_manifest(default_manifest).cases.set_index("case_id")
    listed = page.selectbox(key="inference_case").options
    expected = cases[(cases["split"] == "test") & (cases["dataset"] == "synth_derm") & (cases["skin_tone"] == "dark")]
    assert [label.split(" (")[0] for label in listed] == [f"case {int(c.rsplit('-', 1)[1])}, dermoscopy"
                                                          for c in expected.index[:300]]
    assert all("dark skin" in label for label in listed)
    assert page.selectbox(key="inference_cf_attribute").options == ["Sex", "Age group", "Skin tone", "(none)"]
    page.selectbox(key="inference_cf_attribute").set_value("skin_tone").run()
    assert page.selectbox(key="inference_cf_group").options == ["light skin", "medium skin"]


def test_a_case_without_a_counterfactual_shows_its_facts(page):
    page.selectbox(key="inference_cf_attribute").set_value("(none)").run()
    page.button(key="inference_run_case").click().run()
    _no_errors(page)
    assert len(page.get("image")) == 1
    facts = page.table[0].value
    assert {"Question", "Ground truth", "Demographics (as recorded)", "Sex", "Age group"} <= set(facts.index)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_uploaded_png_is_answered_without_a_ground_truth(page, default_manifest):
    dataset = read_manifest(default_manifest)
    case_id = dataset.cases[dataset.cases["dataset"] == "synth_cxr"]["case_id"].iloc[0]
    page.file_uploader(key="inference_upload").upload("chest.png", _png(dataset.load_image(case_id)), "image/png")
    page.run()
    _no_errors(page)
    assert page.get("image")[0].captions == ["chest.png (PNG, 64x64)"]
    page.button(key="inference_run_upload").click().run()
    _no_errors(page)
    assert any("no ground truth" in c.value.lower() for c in page.caption)
    assert any("Answer:" in i.value for i in page.info) or any("Format failure" in e.value for e in page.error)
    # A benchmark image passes the out-of-distribution check, and says so with its numbers.
    assert any("Out-of-distribution check passed" in c.value and "x threshold" in c.value for c in page.caption)
    assert not any("unlike anything" in w.value for w in page.warning)
    assert any("Research tool, synthetic-data model, not a medical device" in c.value for c in page.caption)


@pytest.mark.parametrize("image", [Image.new("L", (64, 64), 128),
                                   Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3),
                                                                                     dtype=np.uint8))],
                         ids=["flat grey", "random noise"])
def test_an_upload_unlike_the_training_images_is_flagged_beside_its_answer(page, image):
    """Observation 5 of issue 15: a flat grey image got a confident answer with no caveat."""
    page.file_uploader(key="inference_upload").upload("odd.png", _png(image), "image/png")
    page.run()
    page.button(key="inference_run_upload").click().run()
    _no_errors(page)
    flagged = [w.value for w in page.warning if "unlike anything the model was trained on" in w.value]
    assert len(flagged) == 1 and "its answer means nothing" in flagged[0] and "x threshold" in flagged[0]
    assert any("Research tool, synthetic-data model, not a medical device" in c.value for c in page.caption)


def test_a_16_bit_rgba_upload_lists_its_conversions(page):
    pixels = np.zeros((40, 50, 4), dtype=np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = 128
    page.file_uploader(key="inference_upload").upload("overlay.png", _png(Image.fromarray(pixels, "RGBA")))
    page.run()
    _no_errors(page)
    assert any(c.value.startswith("Converted:") and "alpha" in c.value for c in page.caption)


def test_a_dicom_upload_is_shown_without_patient_data(page):
    page.file_uploader(key="inference_upload").upload("study.dcm", _dicom(_dx_pixels(), WindowCenter=500,
                                                                          WindowWidth=1000))
    page.run()
    _no_errors(page)
    assert page.get("image")[0].captions == ["study.dcm (DICOM, 96x64, modality DX)"]
    page.button(key="inference_run_upload").click().run()
    _no_errors(page)
    shown = _everything_shown(page)
    for value in PHI:
        assert value not in shown


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("notes.png", b"this is not an image", "accepted formats are PNG, JPEG or DICOM"),
    ("scan.png", _png(Image.new("L", (64, 64), 90))[:60], "truncated or corrupt"),
])
def test_a_bad_upload_is_an_error_box_and_the_page_keeps_working(page, name, content, expected):
    page.file_uploader(key="inference_upload").upload(name, content)
    page.run()
    assert not page.exception
    errors = [e.value for e in page.error]
    assert len(errors) == 1 and name in errors[0] and expected.lower() in errors[0].lower()
    # The other tabs still work.
    page.selectbox(key="inference_cf_attribute").set_value("(none)").run()
    page.button(key="inference_run_case").click().run()
    assert not page.exception and len(page.get("image")) == 1


def test_a_split_is_evaluated_into_a_run_the_audit_page_opens(page, workspace):
    page.number_input(key="inference_eval_limit").set_value(24).run()
    page.button(key="inference_run_eval").click().run()
    _no_errors(page)
    runs = sorted((workspace / "runs").glob("*/run.json"))
    assert len(runs) == 1
    info = json.loads(runs[0].read_text())
    assert info["n_cases"] == 24 and info["split"] == "test" and info["model"] == "tiny-fairmedgemma"
    metrics = {m.label: m.value for m in page.metric}
    assert metrics["Cases"] == "24" and metrics["Accuracy"] == f"{100 * info['accuracy']:.1f}%"
    # a stratified sample, not the first 24 (all chest X-rays): its composition is stored and shown beside it
    assert {s: k for s, k, _ in info["sample"]["sources"]} == {"synth_cxr": 8, "synth_derm": 8, "synth_mammo": 8}
    predictions = pd.read_csv(runs[0].parent / "predictions.csv")
    assert predictions["source"].value_counts().to_dict() == {"synth_cxr": 8, "synth_derm": 8, "synth_mammo": 8}
    assert ("Cases answered: 24 of 2,400 test cases, stratified by source and group: chest X-ray 8, dermoscopy 8, "
            "mammography 8; seed 0") in [c.value for c in page.caption]
    assert (runs[0].parent / "audit" / "audit.json").is_file()

    page.button(key="inference_audit_run").click().run()
    _no_errors(page)
    assert page.title[0].value == "Fairness audit"
    assert page.radio(key="audit_source_kind").value == "A saved evaluation run"
    assert page.selectbox(key="audit_run_choice").value.startswith(runs[0].parent.name)
    assert len(page.get("plotly_chart")) >= 1


def test_a_broken_model_folder_is_an_error_box(workspace, monkeypatch):
    broken = workspace / "models" / "not-gemma"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(workspace))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert str(broken) in at.selectbox(key="model_choice").options
    # AppTest shows app.py's sidebar on the first page only, so the choice is made through the session state.
    at.session_state["model_choice"] = str(broken)
    at.switch_page("pages/inference.py").run()
    assert not at.exception
    assert at.title[0].value == "Inference"
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "not-gemma" in errors[0] and "'llama'" in errors[0]
