"""A FairGRPO training run from the CLI: run folder, held-out curves in metrics.jsonl, resume, final evaluation."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from fairmed_core.cli import main
from fairmed_core.errors import FairMedInputError
from fairmed_core.data.sampling import SampleComposition
from fairmed_core.jobs.grpo_training import GRPOJobConfig, eval_frame, read_metrics, run_grpo_training, summary_frame
from fairmed_core.runs.eval_store import read_evaluation

SMALL = ["--steps", "2", "--prompts", "4", "--generations", "2", "--eval-every", "1", "--eval-limit", "24",
         "--save-every", "1", "--max-completion-length", "32"]


@pytest.fixture(scope="module")
def run(tiny_model_dir, default_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    assert main(["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(out), *SMALL, "--test-split", "val"]) == 0
    return out


def test_a_run_writes_config_metrics_checkpoints_model_and_evaluation(run):
    config = json.loads((run / "config.json").read_text())
    assert config["job"]["method"] == "fairgrpo" and config["job"]["steps"] == 2
    records = read_metrics(run)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2]
    assert any(r["kind"] == "train" and "reward" in r for r in records)
    assert any(key.startswith("fairgrpo/weight/") for r in records if r["kind"] == "train" for key in r)
    curves = eval_frame(records)
    assert {"accuracy", "f1", "recall", "fdr", "format_failure"} <= set(curves["metric"])
    assert set(curves["step"]) == {0, 1, 2}
    gaps = summary_frame(records)
    assert {"predictive_parity", "equal_opportunity_difference", "sigma_f1", "f1_es"} <= set(gaps.columns)
    assert (run / "checkpoints" / "checkpoint-2" / "fairgrpo_statistics.json").is_file()
    assert (run / "model" / "config.json").is_file() and (run / "model" / "tokenizer.json").is_file()
    evaluation = read_evaluation(run / "evaluation")
    assert evaluation.record.split == "val" and evaluation.record.n_cases > 0
    finished = json.loads((run / "training.json").read_text())
    assert finished["steps"] == 2 and finished["method"] == "fairgrpo"


def test_held_out_evaluations_answer_a_recorded_stratified_sample_of_every_source(run):
    """Issue 16: the first 24 val cases are all chest X-rays; the held-out sample covers every source, the same
    cases at every step, and the run records its composition."""
    from fairmed_core.runs.training_store import TrainingRun, held_out_sources

    config = json.loads((run / "config.json").read_text())
    sample = SampleComposition.from_json(config["held_out_sample"])
    assert (sample.split, sample.n_sample, sample.n_split, sample.seed) == ("val", 24, 600, 0)
    assert {s: k for s, k, _ in sample.sources} == {"synth_cxr": 8, "synth_derm": 8, "synth_mammo": 8}
    records = read_metrics(run)
    assert {r["n_cases"] for r in records if r["kind"] == "eval"} == {24}
    assert held_out_sources(records) == ["synth_cxr", "synth_derm", "synth_mammo"]
    curves = eval_frame(records)
    overall = curves[(curves["attribute"] == "overall") & (curves["metric"] == "accuracy")]
    assert overall.groupby("step")["source"].apply(set).map(len).eq(4).all()  # three sources and ALL, each step
    per_step = overall[overall["source"] != "ALL"].groupby("step")["n"].apply(sorted)
    assert all(counts == [8, 8, 8] for counts in per_step)
    line = TrainingRun("run", run, config, None).held_out_description()
    assert line == ("held-out sample: 24 of 600 val cases, stratified by source and group: chest X-ray 8, "
                    "dermoscopy 8, mammography 8; seed 0")
    # the final evaluation (the whole split) records its composition too
    assert read_evaluation(run / "evaluation").sample.whole


def test_a_resume_whose_held_out_sample_changed_is_refused(run, tiny_model_dir, default_manifest, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "training.json").unlink()
    config = json.loads((copy / "config.json").read_text())
    config["held_out_sample"]["case_ids_sha256"] = "0" * 64  # as if the manifest's val cases had changed
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(FairMedInputError, match="held-out sample differs from the one this run recorded"):
        run_grpo_training(tiny_model_dir, default_manifest, copy, GRPOJobConfig(), resume=True)


def test_a_killed_run_resumes_from_its_last_checkpoint(run, tiny_model_dir, default_manifest, tmp_path):
    # Simulate a run killed after step 1: its step-2 checkpoint, final model and later records are gone.
    copy = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "checkpoint-2")
    for name in ("model", "evaluation"):
        shutil.rmtree(copy / name)
    (copy / "training.json").unlink()
    assert main(["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(copy), "--resume"]) == 0
    finished = json.loads((copy / "training.json").read_text())
    assert finished["resumed_from"] == "checkpoint-1" and finished["steps"] == 2
    steps = [r["step"] for r in read_metrics(copy) if r["kind"] == "eval"]
    assert steps == [0, 1, 2]  # the records after the checkpoint were recomputed, not duplicated



def _checkpoint(folder, step, *, state=True, statistics=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if statistics:
        (path / "fairgrpo_statistics.json").write_text("{}")
    return path


def test_resume_skips_half_written_checkpoints_naming_them(tmp_path, caplog):
    """Issue 13: a kill during a save left a checkpoint that --resume kept choosing."""
    from fairmed_core.jobs.grpo_training import resume_checkpoint

    good = _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 3, state=False, statistics=False)  # killed while writing the weights
    torn = _checkpoint(tmp_path, 4, statistics=False)
    (torn / "trainer_state.json").write_text('{"global_st')  # killed while writing trainer_state.json
    _checkpoint(tmp_path, 10, state=False)  # sorted by number, not by name
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(tmp_path, "fairgrpo_statistics.json") == good
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"checkpoint-{n}" in skipped for n in (3, 4, 10)) and "checkpoint-2" not in skipped
    assert resume_checkpoint(tmp_path) == good  # a stateless method: the same complete one
    assert resume_checkpoint(tmp_path / "missing") is None


def test_resume_needs_the_statistics_unless_told_to_reset_them(tmp_path, caplog):
    from fairmed_core.jobs.grpo_training import resume_checkpoint

    older = _checkpoint(tmp_path, 1)
    newest = _checkpoint(tmp_path, 2, statistics=False)  # killed between trainer_state.json and the statistics
    with caplog.at_level("WARNING"):
        assert resume_checkpoint(tmp_path, "fairgrpo_statistics.json") == older
    assert "checkpoint-2" in caplog.text and "fairgrpo_statistics.json" in caplog.text
    (older / "fairgrpo_statistics.json").unlink()
    with pytest.raises(FairMedInputError, match=r"fairgrpo_statistics\.json.*--reset-statistics") as error:
        resume_checkpoint(tmp_path, "fairgrpo_statistics.json")
    assert "checkpoint-2" in str(error.value)
    assert resume_checkpoint(tmp_path, "fairgrpo_statistics.json", reset_state=True) == newest


def test_a_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(run, tiny_model_dir,
                                                                             default_manifest, tmp_path):
    copy = shutil.copytree(run, tmp_path / "run")
    for name in ("model", "evaluation"):
        shutil.rmtree(copy / name)
    (copy / "training.json").unlink()
    # Killed while saving step 2: the folder exists, its trainer_state.json is torn.
    (copy / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "log_hist')
    assert main(["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(copy), "--resume"]) == 0
    finished = json.loads((copy / "training.json").read_text())
    assert finished["resumed_from"] == "checkpoint-1" and finished["steps"] == 2


def test_a_run_killed_after_its_final_checkpoint_finishes_without_training_past_it(run, tiny_model_dir,
                                                                                  default_manifest, tmp_path, capsys):
    """Issue 13: a kill after the final checkpoint made the resume train step 31 of 30."""
    copy = shutil.copytree(run, tmp_path / "run")
    for name in ("model", "evaluation"):
        shutil.rmtree(copy / name)
    (copy / "training.json").unlink()
    records = read_metrics(copy)
    assert main(["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(copy), "--resume"]) == 0
    finished = json.loads((copy / "training.json").read_text())
    assert finished["steps"] == 2 and finished["resumed_from"] == "checkpoint-2"
    assert sorted(p.name for p in (copy / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert read_metrics(copy) == records  # not one step trained
    assert (copy / "model" / "config.json").is_file() and read_evaluation(copy / "evaluation").record.n_cases > 0
    # The model is the checkpoint's, not the starting one.
    from safetensors.torch import load_file

    saved = load_file(copy / "model" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in load_file(run / "model" / "model.safetensors").items())
    capsys.readouterr()
    before = (copy / "training.json").read_text()
    assert main(["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(copy), "--resume"]) == 0
    assert "already finished (2 steps), nothing to train" in capsys.readouterr().out
    assert (copy / "training.json").read_text() == before


def test_resume_without_the_fairgrpo_statistics_is_refused_unless_reset(run, tiny_model_dir, default_manifest,
                                                                       tmp_path, capsys):
    """Issue 13: a missing statistics file made the run go on with statistics reset to zero and exit 0."""
    copy = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "checkpoint-2")
    for name in ("model", "evaluation"):
        shutil.rmtree(copy / name)
    (copy / "training.json").unlink()
    (copy / "checkpoints" / "checkpoint-1" / "fairgrpo_statistics.json").unlink()
    args = ["train", "fairgrpo", "--model", str(tiny_model_dir), "--data", str(default_manifest), "--out",
            str(copy), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "checkpoint-1/fairgrpo_statistics.json" in err and "--reset-statistics" in err
    assert len(err.strip().splitlines()) == 1 and not (copy / "training.json").exists()
    assert main([*args, "--reset-statistics"]) == 0
    assert json.loads((copy / "training.json").read_text())["steps"] == 2

def test_resume_without_a_checkpoint_and_a_used_folder_are_refused(tiny_model_dir, default_manifest, tmp_path,
                                                                   capsys):
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["train", "grpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(out), *SMALL]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep"
    assert main(["train", "grpo", "--model", str(tiny_model_dir), "--data", str(default_manifest),
                 "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_job_settings_are_checked():
    with pytest.raises(FairMedInputError, match="num_generations must be at least 2"):
        GRPOJobConfig(num_generations=1)
    with pytest.raises(FairMedInputError, match="unknown training settings"):
        GRPOJobConfig.from_dict({"stepz": 3})
    with pytest.raises(FairMedInputError, match="lora_rank must be 0"):
        GRPOJobConfig(lora_rank=-2)
    with pytest.raises(FairMedInputError, match="temperature must be positive"):
        GRPOJobConfig(temperature=0.0)


def test_a_lora_run_trains_only_the_language_model_projections_and_saves_a_merged_model(default_manifest, tmp_path):
    from safetensors.torch import load_file

    from fairmed_core.runs.workspace import TINY_MODEL

    out = tmp_path / "lora"
    # The shipped SFT model (its rollouts disagree on some prompts, so there is a gradient) and a large learning
    # rate, so that two LoRA steps move the merged weights visibly.
    assert main(["train", "grpo", "--model", str(TINY_MODEL), "--data", str(default_manifest), "--out", str(out),
                 *SMALL, "--lr", "5e-2", "--lora-rank", "4", "--temperature", "1.5", "--test-split", "none"]) == 0
    job = json.loads((out / "config.json").read_text())["job"]
    assert job["lora_rank"] == 4 and job["temperature"] == 1.5
    saved = out / "model"
    assert not (saved / "adapter_config.json").exists()  # a whole model folder, the adapter merged in
    base, tuned = load_file(TINY_MODEL / "model.safetensors"), load_file(saved / "model.safetensors")
    assert set(tuned) == set(base)
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    projections = re.compile(r".*language_model.*\.(q|k|v|o|gate|up|down)_proj\.weight$")
    assert changed and all(projections.match(name) for name in changed), sorted(changed)[:5]
    assert any("mlp" in name for name in changed) and any("self_attn" in name for name in changed)


def test_each_rank_of_a_multi_gpu_launch_loads_the_model_onto_its_own_gpu(monkeypatch):
    from fairmed_core.jobs import grpo_training as grpo_job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert grpo_job._training_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert grpo_job._training_device() is None  # one process: device_map="auto" over the visible GPUs
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert grpo_job._training_device() == "cuda:3"  # data parallel: a whole copy per rank, on its GPU
