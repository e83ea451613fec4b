"""The Training page under AppTest: the form starts a background run per method, finished runs show their
reward, gap and per-group curves and FairGRPO weights, and a run's test evaluation opens on the audit page."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.files import LEARNABLE_START
from fairmed_core.jobs.configs import JOB_FILE, GRPOTrainingJobConfig, job_argv
from fairmed_core.jobs.grpo_training import GRPOJobConfig, run_grpo_training
from fairmed_core.runs.jobs import list_jobs, read_job
from fairmed_core.runs.workspace import TINY_MODEL, Workspace
from fairmed_core.settings import config_to_dict, read_config
from tests.conftest import REPO_ROOT

APP = str(REPO_ROOT / "app.py")
SMALL = dict(steps=2, prompts_per_step=4, num_generations=2, eval_every=1, eval_limit=24, save_every=2,
             max_completion_length=32, test_split="val")


@pytest.fixture(scope="module")
def trained_workspace(default_workspace, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("training-ws")
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    manifest = default_workspace / "datasets" / "synth-default" / "manifest.jsonl"
    for method in ("grpo", "fairgrpo"):
        run_grpo_training(tiny_model_dir, manifest, Workspace(root).run_dir(f"{method}-small"),
                          GRPOJobConfig(method=method, **SMALL))
    return root


def _chart_titles(at: AppTest) -> list[str]:
    return [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]


def _page(root, monkeypatch) -> AppTest:
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(root))
    monkeypatch.chdir(REPO_ROOT)
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/training.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_finished_runs_show_their_training_dynamics(trained_workspace, monkeypatch):
    at = _page(trained_workspace, monkeypatch)
    assert at.title[0].value == "Training" and not at.error, [e.value for e in at.error]
    assert len(at.multiselect(key="training_runs").value) == 2
    table = next(frame.value for frame in at.dataframe if "Test accuracy (0-1)" in frame.value.columns)
    assert set(table["Method"]) == {"GRPO", "FairGRPO (EQPO)"} and (table["Steps"] == 2).all()
    assert not [c for c in table.columns if "_" in c]  # words with units, not snake_case
    assert (table["Held-out sources averaged"] == "chest X-ray, dermoscopy, mammography").all()
    titles = _chart_titles(at)
    assert any(t.startswith("Mean reward") for t in titles) and any("over training" in t for t in titles)
    assert any(" per sex group" in t for t in titles)
    at.selectbox(key="training_group_run").set_value("fairgrpo-small").run()
    assert not at.exception and not at.error
    assert any(t.startswith("FairGRPO weight") for t in _chart_titles(at))
    assert any(t.startswith("Share of the absolute advantage per source") for t in _chart_titles(at))
    signal = next(frame.value for frame in at.dataframe if "Mean share of |advantage| (0-1)" in frame.value.columns)
    assert set(signal["Source"]) <= {"chest X-ray", "dermoscopy", "mammography"} and len(signal) >= 1
    assert signal["Mean share of |advantage| (0-1)"].between(0, 1).all()
    at.selectbox(key="training_gap").set_value("equal_opportunity_difference").run()
    assert not at.exception and not at.error
    at.selectbox(key="training_audit_run").set_value("fairgrpo-small").run()
    at.button(key="training_audit").click().run()
    assert at.title[0].value == "Fairness audit"
    assert at.selectbox(key="audit_run_choice").value.startswith("fairgrpo-small/evaluation")


def test_new_runs_show_per_source_curves_the_labelled_mean_and_their_held_out_sample(trained_workspace,
                                                                                     monkeypatch):
    at = _page(trained_workspace, monkeypatch)
    assert at.radio(key="training_view").value == "per_source"  # per-source curves first
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    # F1 by default: accuracy can stay flat while a model learns to find a rare finding
    assert at.selectbox(key="training_held_out_metric").value == "f1"
    f1 = next(c for c in charts if c["layout"]["title"]["text"].startswith("Held-out F1 per step"))
    assert f1["layout"]["title"]["text"] == "Held-out F1 per step, per source (val split)"
    assert [a["text"] for a in f1["layout"]["annotations"]] == ["chest X-ray", "dermoscopy", "mammography"]
    line = ("held-out sample: 24 of 600 val cases, stratified by source and group: chest X-ray 8, dermoscopy 8, "
            "mammography 8; seed 0")
    assert {c.value for c in at.caption} >= {f"**{run}-small**: {line}" for run in ("grpo", "fairgrpo")}
    groups = next(frame.value for frame in at.dataframe if "Cases in the sample" in frame.value.columns)
    assert groups["Cases in the sample"].sum() == 24 and "chest X-ray" in set(groups["Source"])
    at.radio(key="training_view").set_value("mean").run()
    assert not at.exception and not at.error
    titles = _chart_titles(at)
    assert "Held-out F1 per step, mean over chest X-ray, dermoscopy, mammography (val split)" in titles
    figure = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                  if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Held-out F1"))
    assert {trace["name"] for trace in figure["data"]} == {"grpo-small", "fairgrpo-small"}
    at.selectbox(key="training_attribute").set_value("sex").run()
    at.selectbox(key="training_gap").set_value("accuracy").run()
    assert not at.exception and not at.error
    figure = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if json.loads(c.proto.spec)["layout"]
                  ["title"]["text"].startswith("Accuracy (share of cases, 0-1) over training, mean over chest X-ray"))
    assert len(figure["data"]) == 2 and all(_values(trace["y"]) for trace in figure["data"])


def test_the_mean_over_sources_leaves_out_a_source_where_a_statistic_is_undefined():
    from fairmed_core.runs.training_store import mean_over_sources

    summary = pd.DataFrame([
        {"run": "r", "step": 0, "source": "synth_cxr", "attribute": "sex", "predictive_parity": None},
        {"run": "r", "step": 0, "source": "synth_derm", "attribute": "sex", "predictive_parity": 10.0},
        {"run": "r", "step": 0, "source": "synth_mammo", "attribute": "sex", "predictive_parity": 20.0},
        {"run": "r", "step": 0, "source": "ALL", "attribute": "sex", "predictive_parity": 99.0},
        {"run": "r", "step": 1, "source": "synth_cxr", "attribute": "sex", "predictive_parity": 3.0},
        {"run": "r", "step": 1, "source": "synth_derm", "attribute": "sex", "predictive_parity": 6.0},
        {"run": "r", "step": 1, "source": "synth_mammo", "attribute": "age_group", "predictive_parity": 50.0},
    ])
    mean = mean_over_sources(summary, "predictive_parity", "sex")
    assert mean.to_dict("records") == [{"run": "r", "step": 0, "value": 15.0, "n_sources": 2},
                                       {"run": "r", "step": 1, "value": 4.5, "n_sources": 2}]


def test_the_form_starts_a_background_run(default_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    at = _page(root, monkeypatch)  # the sidebar's default model: the shipped tiny FairMedGemma
    assert any("No training jobs" in c.value for c in at.caption)
    at.multiselect(key="training_methods").set_value(["fairgrpo"])
    for key, value in (("steps", 1), ("prompts_per_step", 4), ("num_generations", 2), ("eval_every", 1),
                       ("eval_limit", 12), ("max_completion_length", 24)):
        at.number_input(key=f"training_{key}").set_value(value)
    at.button[0].click().run()
    assert not at.exception
    assert any("Started 1 run" in s.value for s in at.success)
    job = list_jobs(Workspace(root))[0]
    assert job.labels["method"] == "fairgrpo"
    # The page handed the job the config it built and checked: job.json in the run folder, read back equal.
    job_file = Workspace(root).run_dir(job.name) / JOB_FILE
    assert list(job.argv) == job_argv(["train", "fairgrpo"], job_file, job_file.parent)
    assert (job.labels["config"], job.labels["out"]) == (str(job_file), str(job_file.parent))  # what resume reads
    config = read_config(GRPOTrainingJobConfig, job_file)
    assert config.model == str(TINY_MODEL) and config.training.method == "fairgrpo"
    assert (config.training.steps, config.training.num_generations, config.training.eval_limit) == (1, 2, 12)
    assert config_to_dict(config) == json.loads(job_file.read_text())
    deadline = time.monotonic() + 400
    while read_job(job.path).status == "running" and time.monotonic() < deadline:
        time.sleep(1)
    assert read_job(job.path).status == "finished", read_job(job.path).log_tail()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert job.name in at.multiselect(key="training_runs").value


@pytest.mark.parametrize(("key", "value", "message"), [
    ("num_generations", 1, "num_generations must be at least 2"),
    ("learning_rate", -0.001, "learning_rate must be positive"),
    ("rescale", "none", None),  # a good FairGRPO option: only there to show the option is on the form
])
def test_a_bad_setting_is_refused_on_the_page_and_starts_no_job(default_workspace, tmp_path, monkeypatch, key,
                                                                value, message):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    at = _page(root, monkeypatch)
    if message is None:
        assert at.selectbox(key=f"training_{key}").options == ["batch", "zero_mean", "none"]
        return
    at.multiselect(key="training_methods").set_value(["grpo", "fairgrpo"])
    at.number_input(key=f"training_{key}").set_value(value)
    at.button[0].click().run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not at.success and list_jobs(Workspace(root)) == []
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())


def test_the_class_balanced_reward_is_refused_where_fairgrpo_would_divide_it_away(default_workspace, tmp_path,
                                                                                  monkeypatch):
    """Chosen on the form with FairGRPO's within-prompt scaling on (its default), the class-balanced reward is
    refused before any job starts, with the setting to change; with the scaling off both methods start."""
    root = _fresh_workspace(default_workspace, tmp_path)
    at = _page(root, monkeypatch)
    at.multiselect(key="training_methods").set_value(["grpo", "fairgrpo"])
    at.selectbox(key="training_reward").set_value("class_balanced")
    at.button[0].click().run()
    assert not at.exception
    assert any("within_prompt_scale" in e.value and "class-balanced reward" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not at.success and list_jobs(Workspace(root)) == []
    at.checkbox(key="training_within_prompt_scale").uncheck()
    for key, value in (("steps", 1), ("prompts_per_step", 4), ("num_generations", 2), ("eval_every", 1),
                       ("eval_limit", 12), ("max_completion_length", 24)):
        at.number_input(key=f"training_{key}").set_value(value)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    jobs = list_jobs(Workspace(root))
    assert sorted(job.labels["method"] for job in jobs) == ["fairgrpo", "grpo"]
    for job in jobs:
        config = read_config(GRPOTrainingJobConfig, Workspace(root).run_dir(job.name) / JOB_FILE)
        assert config.training.reward == "class_balanced" and not config.training.within_prompt_scale
        assert config.training.trainer_options()["scale_rewards"] == "none"  # GRPO keeps the weight
    deadline = time.monotonic() + 400
    while any(read_job(job.path).status == "running" for job in jobs) and time.monotonic() < deadline:
        time.sleep(1)
    assert [read_job(job.path).status for job in jobs] == ["finished", "finished"], \
        [read_job(job.path).log_tail() for job in jobs]


SHIPPED = REPO_ROOT / "assets" / "models"


def _values(array) -> list:
    """A trace's x or y as a list: plotly writes numpy arrays as base64 ``bdata`` in the chart spec."""
    if isinstance(array, dict) and "bdata" in array:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _fresh_workspace(default_workspace, tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "datasets").symlink_to(default_workspace / "datasets", target_is_directory=True)
    return root


def test_a_fresh_workspace_opens_on_the_shipped_runs_curves(default_workspace, tmp_path, monkeypatch):
    at = _page(_fresh_workspace(default_workspace, tmp_path), monkeypatch)
    assert not at.error, [e.value for e in at.error]
    runs = at.multiselect(key="training_runs")
    # it opens on the runs from the learnable start (it under-calls some findings), every source in its curves
    assert sorted(runs.value) == [f"{LEARNABLE_START.name}-fairgrpo (shipped)",
                                  f"{LEARNABLE_START.name}-grpo (shipped)"]
    assert any("training records shipped with" in c.value and LEARNABLE_START.name in c.value
               and "under-calls" in c.value and "200 steps" in c.value for c in at.caption)
    table = next(frame.value for frame in at.dataframe if "Test accuracy (0-1)" in frame.value.columns)
    assert (table["Steps"] == 200).all()
    assert (table["Held-out sources averaged"] == "chest X-ray, dermoscopy, mammography").all()
    assert sum(c.value.startswith(f"**{LEARNABLE_START.name}-")
               and "held-out sample: 300 of 600 val cases, stratified "
               "by source and group: chest X-ray 100, dermoscopy 100, mammography 100" in c.value
               for c in at.caption) == 2  # one line per run
    charts = {json.loads(chart.proto.spec)["layout"]["title"]["text"]: json.loads(chart.proto.spec)
              for chart in at.get("plotly_chart")}
    # opens on F1 per source: mammography F1 rises from the start's under-calling
    f1 = charts["Held-out F1 per step, per source (val split)"]
    assert [a["text"] for a in f1["layout"]["annotations"]] == ["chest X-ray", "dermoscopy", "mammography"]
    grpo = next(trace for trace in f1["data"] if trace["name"].startswith(f"{LEARNABLE_START.name}-grpo")
                and trace["xaxis"] == "x3")  # the mammography panel
    assert _values(grpo["y"])[-1] > _values(grpo["y"])[0] + 0.1, _values(grpo["y"])
    # the class-balanced reward is named on the reward axis (its rewards exceed 1)
    reward = next(spec for title, spec in charts.items() if title.startswith("Mean reward"))
    assert reward["layout"]["yaxis"]["title"]["text"] == "Mean reward per rollout (0: wrong)"
    assert any(c.value.startswith("Class-balanced reward: a right answer earns the inverse share") for c in at.caption)
    # accuracy hides it: the same run's mammography accuracy barely moves
    at.selectbox(key="training_held_out_metric").set_value("accuracy").run()
    assert not at.exception and not at.error
    charts = {json.loads(chart.proto.spec)["layout"]["title"]["text"]: json.loads(chart.proto.spec)
              for chart in at.get("plotly_chart")}
    accuracy = charts["Held-out accuracy per step, per source (val split)"]
    grpo = next(trace for trace in accuracy["data"] if trace["name"].startswith(f"{LEARNABLE_START.name}-grpo")
                and trace["xaxis"] == "x3")
    assert abs(_values(grpo["y"])[-1] - _values(grpo["y"])[0]) < 0.05, _values(grpo["y"])
    at.selectbox(key="training_held_out_metric").set_value("f1").run()
    at.radio(key="training_view").set_value("mean").run()
    assert not at.exception and not at.error
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]
    assert "Held-out F1 per step, mean over chest X-ray, dermoscopy, mammography (val split)" in titles
    at.selectbox(key="training_held_out_metric").set_value("accuracy")
    at.radio(key="training_view").set_value("per_source").run()
    runs = at.multiselect(key="training_runs")
    # the older shipped records (from tiny-fairmedgemma, 40 steps) stay selectable
    assert "tiny-fairmedgemma-grpo (shipped with the model: GRPO, 40 steps)" in runs.options
    runs.set_value(["tiny-fairmedgemma-fairgrpo (shipped)", "tiny-fairmedgemma-grpo (shipped)"]).run()
    assert not at.exception and not at.error
    table = next(frame.value for frame in at.dataframe if "Test accuracy (0-1)" in frame.value.columns)
    assert set(table["Method"]) == {"GRPO", "FairGRPO (EQPO)"} and (table["Steps"] == 40).all()
    assert table["Run"].str.endswith(" (shipped)").all()
    # the shipped records evaluated the first 300 val cases: two sources, and the table says which
    assert (table["Held-out sources averaged"] == "chest X-ray, dermoscopy").all()
    charts = {json.loads(chart.proto.spec)["layout"]["title"]["text"]: json.loads(chart.proto.spec)
              for chart in at.get("plotly_chart")}
    # per source by default: one panel per source evaluated, GRPO and FairGRPO overlaid in each
    assert at.radio(key="training_view").value == "per_source"
    for prefix in ("Held-out accuracy per step, per source", "Predictive parity"):
        figure = next(spec for title, spec in charts.items() if title.startswith(prefix))
        panels = [a["text"] for a in figure["layout"]["annotations"]]
        assert panels[:2] == ["chest X-ray", "dermoscopy"]
        lines = [trace for trace in figure["data"] if "name" in trace]  # not an empty panel's axis holder
        assert {trace["name"] for trace in lines} == {
            "tiny-fairmedgemma-fairgrpo (shipped)", "tiny-fairmedgemma-grpo (shipped)"}
        # held-out at step 0 and every 10 of the 40 steps
        assert all(_values(trace["x"]) == [0, 10, 20, 30, 40] for trace in lines)
    gap = next(spec for title, spec in charts.items() if title.startswith("Predictive parity"))
    assert [a["text"] for a in gap["layout"]["annotations"]][2:] == ["no value at any step"]  # PP on chest X-ray
    accuracy = next(spec for title, spec in charts.items() if title.startswith("Held-out accuracy"))
    assert accuracy["layout"]["yaxis"]["range"] == [0, 1.02]  # a share on its whole scale, not a 0.6 pp zoom
    assert accuracy["layout"]["yaxis"]["title"]["text"] == "Accuracy (share of cases, 0-1)"
    # the old records did not store their sample: said so, not guessed
    captions = [c.value for c in at.caption]
    assert sum("held-out sample composition not recorded (older run: first 300 cases of the val split)" in c
               for c in captions) == 2
    # the aggregate names the sources it averages
    at.radio(key="training_view").set_value("mean").run()
    assert not at.exception and not at.error
    titles = _chart_titles(at)
    assert "Held-out accuracy per step, mean over chest X-ray, dermoscopy (val split)" in titles
    assert any(t.startswith("Predictive parity (FDR gap, pp) over training, mean over chest X-ray, dermoscopy")
               for t in titles)
    at.selectbox(key="training_group_run").set_value("tiny-fairmedgemma-fairgrpo (shipped)").run()
    assert not at.exception and not at.error
    assert any(t.startswith("FairGRPO weight") for t in _chart_titles(at))


def test_a_run_that_appears_later_is_listed_and_its_curves_grow(default_workspace, tmp_path, monkeypatch):
    from fairmed_core.runs.training_store import list_training_runs

    root = _fresh_workspace(default_workspace, tmp_path)
    at = _page(root, monkeypatch)
    assert not any(label.startswith("live-run") for label in at.multiselect(key="training_runs").options)
    # A run started in a shell after the page opened: config and the first records, no training.json yet.
    run = root / "runs" / "live-run"
    run.mkdir(parents=True)
    source = SHIPPED / "tiny-fairmedgemma-grpo" / "training"
    (run / "config.json").write_text((source / "config.json").read_text())
    lines = (source / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:12]) + "\n")
    (live,) = list_training_runs(Workspace(root))
    assert live.writing(within_s=120) and not live.writing(within_s=120, now=time.time() + 600)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # the new run joins the choice without a reload, first, beside the shipped runs already shown
    assert at.multiselect(key="training_runs").value == ["live-run", f"{LEARNABLE_START.name}-fairgrpo (shipped)",
                                                          f"{LEARNABLE_START.name}-grpo (shipped)"]

    def reward_steps() -> int:
        figure = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                      if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Mean reward"))
        return max(_values(figure["data"][0]["x"]))

    before = reward_steps()
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    at.run()
    assert not at.exception and reward_steps() > before
