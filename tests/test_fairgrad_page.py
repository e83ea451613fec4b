"""The FairGrad page under AppTest: the training form starts background jobs, finished runs are compared on a
Pareto plot with their gradient conflicts, and a run opens on the audit page."""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.data import read_manifest
from fairmed_core.jobs.fairgrad_images import FairGradImageConfig, run_fairgrad_images
from fairmed_core.runs.jobs import list_jobs, read_job
from fairmed_core.runs.workspace import Workspace
from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")


@pytest.fixture(scope="module")
def trained_workspace(default_workspace, tmp_path_factory):
    """A workspace with two finished runs (ERM and FairGrad, 2 epochs each) beside the embedded benchmark."""
    root = tmp_path_factory.mktemp("fairgrad-ws")
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    dataset = read_manifest(default_workspace / "datasets" / "synth-default" / "manifest.jsonl")
    workspace = Workspace(root)
    for method in ("erm", "fairgrad"):
        config = FairGradImageConfig(method=method, attributes=("sex", "skin_tone"), epochs=2, warmup_epochs=1)
        run_fairgrad_images(dataset, workspace.run_dir(f"fg-{method}"), config, n_boot=50)
    return root


def _page(root, monkeypatch) -> AppTest:
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(root))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/fairgrad.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_finished_runs_are_compared_on_a_pareto_plot(trained_workspace, monkeypatch):
    at = _page(trained_workspace, monkeypatch)
    assert at.title[0].value == "FairGrad"
    assert not at.error, [e.value for e in at.error]
    assert len(at.multiselect(key="fairgrad_compare_runs").value) == 2
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the Pareto plot and the conflicts of the FairGrad run
    at.selectbox(key="fairgrad_compare_attribute").set_value("skin_tone").run()
    assert not at.exception and not at.error
    summary = at.dataframe[-1].value
    assert set(summary.index.get_level_values("Source")) == {"dermoscopy"}  # only dermoscopy records skin tone
    assert set(summary.index.get_level_values("Method")) == {"ERM (no fairness objective)", "FairGrad"}
    # Issue 15, observation 8: readable headers with their unit, no snake_case
    assert "Equalized odds difference (0-1)" in summary.columns and "Runs" in summary.columns
    assert not any("_" in str(column) for column in [*summary.columns, *summary.index.names]), summary.columns
    at.selectbox(key="fairgrad_audit_run").set_value("fg-fairgrad").run()
    at.button(key="fairgrad_audit").click().run()
    assert at.title[0].value == "Fairness audit"
    assert at.selectbox(key="audit_run_choice").value.startswith("fg-fairgrad")


def test_the_form_starts_a_background_job_per_method(default_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    at = _page(root, monkeypatch)
    assert any("No FairGrad jobs" in c.value for c in at.caption)
    at.multiselect(key="fairgrad_methods").set_value(["erm"])
    at.number_input(key="fairgrad_epochs").set_value(1)
    at.number_input(key="fairgrad_warmup").set_value(0)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception
    assert any("Started 1 job" in s.value for s in at.success)
    jobs = list_jobs(Workspace(root))
    assert len(jobs) == 1 and jobs[0].labels["method"] == "erm"
    deadline = time.monotonic() + 300
    while read_job(jobs[0].path).status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    job = read_job(jobs[0].path)
    assert job.status == "finished", job.log_tail()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(label.startswith(jobs[0].name) for label in at.multiselect(key="fairgrad_compare_runs").value)


def test_penalty_without_an_attribute_is_refused_before_starting(default_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    at = _page(root, monkeypatch)
    at.multiselect(key="fairgrad_methods").set_value(["penalty"])
    at.multiselect(key="fairgrad_attributes").set_value([])
    at.button[0].click().run()
    assert any("need at least one sensitive attribute" in w.value for w in at.warning)
    assert list_jobs(Workspace(root)) == []


def _table_workspace(default_workspace, tmp_path):
    """A workspace with the benchmark and one table of the user's own in tables/."""
    from tests.test_fairgrad_tabular import clinic_table

    root = tmp_path / "ws"
    (root / "tables").mkdir(parents=True)
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    clinic_table().to_csv(root / "tables" / "clinic.csv", index=False)
    return root


def test_a_table_in_the_workspace_is_trained_on_and_compared(default_workspace, tmp_path, monkeypatch):
    root = _table_workspace(default_workspace, tmp_path)
    at = _page(root, monkeypatch)
    at.radio(key="fairgrad_data").set_value("A tabular CSV").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="fgt_table").value == "clinic.csv"
    # the form's first guesses, read from the header
    assert at.selectbox(key="fgt_label_clinic.csv").value == "outcome"
    assert at.selectbox(key="fgt_positive_clinic.csv_outcome").value == "died"
    assert at.multiselect(key="fgt_attributes_clinic.csv").value == ["sex", "race"]
    assert at.multiselect(key="fgt_drop_clinic.csv").value == ["patient_id"]
    assert at.multiselect(key="fgt_categorical_clinic.csv").value == ["ward"]
    at.selectbox(key="fgt_objective_clinic.csv_race").set_value("equal_opportunity")
    at.multiselect(key="fgt_methods").set_value(["erm", "fairgrad"])
    at.number_input(key="fgt_epochs").set_value(4)
    at.number_input(key="fgt_warmup").set_value(1)
    at.button(key="fgt_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Started 2 job" in s.value for s in at.success)
    jobs = list_jobs(Workspace(root))
    assert sorted(job.labels["method"] for job in jobs) == ["erm", "fairgrad"]
    assert all(job.labels["kind"] == "fairgrad-tabular" for job in jobs)
    deadline = time.monotonic() + 300
    while any(read_job(job.path).status == "running" for job in jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    for job in jobs:
        assert read_job(job.path).status == "finished", read_job(job.path).log_tail()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    chosen = at.multiselect(key="fairgrad_compare_runs").value
    assert len(chosen) == 2 and all(" on clinic, accuracy" in label for label in chosen)
    assert len(at.get("plotly_chart")) == 2  # the Pareto plot and the FairGrad run's gradient conflicts
    assert at.selectbox(key="fairgrad_compare_attribute").options == ["sex", "race"]
    at.selectbox(key="fairgrad_compare_attribute").set_value("race").run()
    summary = at.dataframe[-1].value
    assert set(summary.index.get_level_values("Source")) == {"clinic"}
    assert set(summary.index.get_level_values("Method")) == {"ERM (no fairness objective)", "FairGrad"}


def test_a_bad_choice_on_a_table_is_shown_and_starts_nothing(default_workspace, tmp_path, monkeypatch):
    root = _table_workspace(default_workspace, tmp_path)
    at = _page(root, monkeypatch)
    at.radio(key="fairgrad_data").set_value("A tabular CSV").run()
    at.multiselect(key="fgt_categorical_clinic.csv").set_value([])  # 'ward' is text: it must be declared
    at.button(key="fgt_start").click().run()
    assert not at.exception
    assert any("ward" in e.value and "not declared" in e.value for e in at.error), [e.value for e in at.error]
    assert list_jobs(Workspace(root)) == []
    (root / "tables" / "broken.csv").write_bytes(b"\x00\x01\x02binary junk\xff\xfe")
    at.run()
    at.selectbox(key="fgt_table").set_value("broken.csv").run()
    assert not at.exception and any("broken.csv" in e.value for e in at.error), [e.value for e in at.error]


def _copy_run(source, target, *, answer: str | None = None):
    """A copy of a finished run; with ``answer``, its model answers that to every case (a collapsed model)."""
    import shutil

    import pandas as pd

    shutil.copytree(source, target)
    if answer is not None:
        predictions = pd.read_csv(target / "predictions.csv", keep_default_na=False, na_values=[""])
        predictions.assign(y_pred=answer).to_csv(target / "predictions.csv", index=False)


def test_image_runs_and_table_runs_are_never_on_one_plot(trained_workspace, default_workspace, tmp_path,
                                                           monkeypatch):
    from fairmed_core.jobs.fairgrad_tabular import FairGradTabularConfig, run_fairgrad_tabular
    from tests.test_fairgrad_tabular import FAST

    root = _table_workspace(default_workspace, tmp_path)
    for name in ("fg-erm", "fg-fairgrad"):
        _copy_run(trained_workspace / "runs" / name, root / "runs" / name)
    config = FairGradTabularConfig(label="outcome", positive_label="died", attributes=("sex", "race"),
                                   categorical=("ward",), drop=("patient_id",), method="erm", **FAST)
    run_fairgrad_tabular(root / "tables" / "clinic.csv", Workspace(root).run_dir("tab-erm"), config, n_boot=20)
    at = _page(root, monkeypatch)
    assert not at.error, [e.value for e in at.error]
    data = at.selectbox(key="fairgrad_compare_data")
    # the newest run's data first, then the shipped runs' data (images predicted on val, a table)
    assert data.options[:2] == ["Table clinic", "Benchmark images (synth-default, test split)"], data.options

    def plotted_sources() -> set[str]:
        spec = json.loads(at.get("plotly_chart")[0].proto.spec)
        return {trace["name"].split(", ")[-1] for trace in spec["data"]}

    assert [label.split(" ")[0] for label in at.multiselect(key="fairgrad_compare_runs").value] == ["tab-erm"]
    assert plotted_sources() == {"clinic"}
    data.set_value("Benchmark images (synth-default, test split)").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    chosen = at.multiselect(key="fairgrad_compare_runs")
    assert sorted(label.split(" ")[0] for label in chosen.value) == ["fg-erm", "fg-fairgrad"]
    assert not any("clinic" in label or "shipped" in label for label in chosen.options)
    assert plotted_sources() <= {"chest X-ray", "dermoscopy", "mammography"}, plotted_sources()


def test_a_model_that_answers_yes_to_everyone_is_called_collapsed(trained_workspace, default_workspace, tmp_path,
                                                                   monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    _copy_run(trained_workspace / "runs" / "fg-erm", root / "runs" / "fg-yes", answer="yes")
    _copy_run(trained_workspace / "runs" / "fg-erm", root / "runs" / "fg-no", answer="no")
    at = _page(root, monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning]
    yes = next(w for w in warnings if "answer yes to every case" in w)
    no = next(w for w in warnings if "answer no to every case" in w)
    assert "positive rate 100%" in yes and "fg-yes on chest X-ray" in yes and "fg-no" not in yes
    assert "positive rate 0%" in no and "fg-no on dermoscopy" in no and "fg-yes" not in no


def _values(array) -> list:
    """A plotly spec's array: a list, or numbers packed as base64 with their dtype."""
    if isinstance(array, dict):
        import base64

        import numpy as np

        return list(np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]))
    return list(array)


def test_a_fresh_workspace_opens_on_the_shipped_runs_with_their_curves(default_workspace, tmp_path, monkeypatch):
    """Issue 15, observation 7: the page opens on the FairGrad runs shipped in assets/fairgrad/ (labelled
    shipped), images and table apart, with the Pareto plot and the gradient-conflict curve drawn."""
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    at = _page(root, monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("runs shipped with FairMed" in caption.value for caption in at.caption)
    data = at.selectbox(key="fairgrad_compare_data")
    assert data.options == ["Benchmark images (synth-default, val split)", "Table support2_like_sepsis"]
    chosen = at.multiselect(key="fairgrad_compare_runs").value
    assert len(chosen) == 3 and all("(shipped, " in label for label in chosen), chosen
    pareto, conflicts = (json.loads(chart.proto.spec) for chart in at.get("plotly_chart"))
    # one point per method and source, named in words
    assert len(pareto["data"]) == 9 and "FairGrad, chest X-ray" in {trace["name"] for trace in pareto["data"]}
    # the FairGrad run's curve: one line per source over its 15 epochs
    assert [len(_values(trace["x"])) for trace in conflicts["data"]] == [15, 15, 15]
    assert {trace["name"] for trace in conflicts["data"]} == {"chest X-ray", "dermoscopy", "mammography"}

    data.set_value("Table support2_like_sepsis").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    chosen = at.multiselect(key="fairgrad_compare_runs").value
    assert sorted(label.split(" ")[0] for label in chosen) == [
        f"fairgrad-support2-like-{method}-s0" for method in ("erm", "fairgrad", "penalty")]
    assert at.selectbox(key="fairgrad_compare_attribute").options == ["race", "sex"]
    assert len(json.loads(at.get("plotly_chart")[0].proto.spec)["data"]) == 3
    # a shipped run opens on the audit page like a run of the workspace
    at.selectbox(key="fairgrad_audit_run").set_value("shipped/fairgrad-support2-like-fairgrad-s0").run()
    at.button(key="fairgrad_audit").click().run()
    assert at.title[0].value == "Fairness audit"
    assert at.selectbox(key="audit_run_choice").value.startswith("shipped/fairgrad-support2-like-fairgrad-s0")


def test_shipped_runs_are_small_records_that_name_no_machine():
    from fairmed_core.files import SHIPPED_FAIRGRAD, shipped_fairgrad_dirs

    folders = shipped_fairgrad_dirs()
    assert len(folders) == 6
    for folder in folders:
        assert sorted(path.name for path in folder.iterdir()) == ["predictions.csv", "run.json",
                                                                 "training_history.csv"]
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        assert info["shipped"] is True and not str(info.get("table") or "").startswith("/")
        assert not str(info.get("manifest_root") or "").startswith("/")
    total = sum(path.stat().st_size for path in SHIPPED_FAIRGRAD.rglob("*") if path.is_file())
    assert total < 1_000_000, total
