"""FairGrad on the image benchmark: per-source CNNs whose predictions become an audited run like any model's."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fairmed_core.cli import main
from fairmed_core.data import read_manifest
from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.fairgrad_images import FairGradImageConfig, fairgrad_image_predictions, image_matrix
from fairmed_core.runs.eval_store import list_evaluations
from fairmed_core.runs.jobs import PROGRESS_ENV
from fairmed_core.runs.workspace import Workspace


@pytest.fixture(scope="module")
def dataset(default_manifest):
    return read_manifest(default_manifest)


def test_image_rows_are_channels_first(dataset):
    derm = dataset.cases[dataset.cases["dataset"] == "synth_derm"]["case_id"].head(3).tolist()
    rows, shape = image_matrix(dataset, derm)
    assert shape == (3, 64, 64) and rows.shape == (3, 3 * 64 * 64)
    image = dataset.load_image(derm[0]).convert("RGB")
    red = rows[0, : 64 * 64].reshape(64, 64)
    assert abs(red[10, 20] - image.getpixel((20, 10))[0] / 255) < 1e-9
    cxr = dataset.cases[dataset.cases["dataset"] == "synth_cxr"]["case_id"].head(2).tolist()
    assert image_matrix(dataset, cxr)[1] == (1, 64, 64)


def test_the_cli_stores_an_audited_run_the_audit_page_lists(default_manifest, tmp_path, capsys, monkeypatch):
    progress_file = tmp_path / "progress.json"
    monkeypatch.setenv(PROGRESS_ENV, str(progress_file))  # as a background job is run
    workspace = Workspace(tmp_path / "ws")
    out = workspace.run_dir("fairgrad-test")
    assert main(["train", "fairgrad", "--data", str(default_manifest), "--out", str(out), "--method", "fairgrad",
                 "--attribute", "sex", "--attribute", "skin_tone", "--epochs", "2", "--warmup-epochs", "1",
                 "--n-boot", "50"]) == 0
    assert "2400 cases" in capsys.readouterr().out
    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert set(predictions["source"]) == {"synth_cxr", "synth_derm", "synth_mammo"} and len(predictions) == 2400
    assert set(predictions["y_pred"]) <= {"yes", "no"} and predictions["score"].between(0, 1).all()
    assert (predictions["model"] == "cnn-fairgrad-sex+skin_tone-seed0").all()
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "fairgrad-images" and info["training"]["warmup_epochs"] == 1
    history = pd.read_csv(out / "training_history.csv")
    # skin tone is recorded for dermoscopy only: the other sources optimise sex alone
    assert history.groupby("source").size().to_dict() == {"synth_cxr": 2, "synth_derm": 2, "synth_mammo": 2}
    assert history.loc[history["source"] == "synth_derm", "fairness_skin_tone"].notna().all()
    assert history.loc[history["source"] == "synth_cxr", "fairness_skin_tone"].isna().all()
    assert [run.name for run in list_evaluations(workspace)] == ["fairgrad-test"]
    # progress counts epochs over all sources, and the last report is the finished count
    assert json.loads(progress_file.read_text()) == {"done": 6, "total": 6, "what": "epochs (all sources)"}


def test_erm_needs_no_attribute_and_the_fair_methods_do(dataset):
    with pytest.raises(FairMedInputError, match="needs at least one sensitive attribute"):
        FairGradImageConfig(method="penalty", attributes=())
    with pytest.raises(FairMedInputError, match="method must be one of"):
        FairGradImageConfig(method="dro")
    with pytest.raises(FairMedInputError, match="no attribute 'race'"):
        fairgrad_image_predictions(dataset, FairGradImageConfig(attributes=("race",), epochs=1, warmup_epochs=0))


def test_a_run_folder_in_use_is_refused(default_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["train", "fairgrad", "--data", str(default_manifest), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "x"
