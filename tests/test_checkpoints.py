"""Atomic checkpoints (issue 13): a folder is published whole, and a run killed during a save resumes to its end.

The kill is real: a ``fairmed train fairgrpo`` process that SIGKILLs itself in the middle of its step-2 save
(after the weights and optimizer, before the RNG and trainer state). benchmarks/kill_resume.py measures the same
with 20 kills at random moments."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fairmed_core.cli import main
from fairmed_core.files import TINY_MODEL, publish_folder
from fairmed_core.training.checkpoints import STAGING_DIR, interrupted_saves

FLAGS = ["--steps", "2", "--prompts", "2", "--generations", "2", "--save-every", "1", "--eval-every", "1000",
         "--eval-limit", "8", "--max-completion-length", "16", "--test-split", "none"]

# The training command, with a save that kills its own process once the step-2 save has written its weights.
_KILLED_IN_SAVE = """
import os, signal, sys
from transformers import Trainer
original = Trainer._save_rng_state
def killing(self, output_dir):
    if self.state.global_step == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, output_dir)
Trainer._save_rng_state = killing
from fairmed_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_publish_folder_replaces_the_whole_folder(tmp_path):
    staged, target = tmp_path / ".new", tmp_path / "model"
    staged.mkdir()
    (staged / "weights").write_bytes(b"new")
    target.mkdir()
    (target / "weights").write_bytes(b"old")
    (target / "stale").write_text("from the old folder")
    assert publish_folder(staged, target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or replaced folder left
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_bytes() == b"new"
    # carry_over keeps what the new folder does not have (a model card beside the weights).
    staged.mkdir()
    (staged / "weights").write_bytes(b"newer")
    (target / "README.md").write_text("card")
    publish_folder(staged, target, carry_over=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"weights": b"newer", "README.md": b"card"}


def _complete(folder, step) -> bool:
    from safetensors import safe_open

    state = json.loads((folder / "trainer_state.json").read_text())
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    statistics = json.loads((folder / "fairgrpo_statistics.json").read_text())
    return state["global_step"] == step and bool(names) and isinstance(statistics, dict)


@pytest.mark.slow  # a real training process (its imports alone take ~10 s), killed mid-save, then resumed
def test_a_run_killed_during_a_save_resumes_to_its_final_step(default_manifest, tmp_path, caplog):
    out = tmp_path / "run"
    argv = ["train", "fairgrpo", "--model", str(TINY_MODEL), "--data", str(default_manifest), "--out", str(out),
            *FLAGS]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_SAVE, *argv], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = out / "checkpoints"
    # The cut-short save is in the staging folder only; checkpoint-* names are complete checkpoints.
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-1"]
    assert _complete(checkpoints / "checkpoint-1", 1)
    assert interrupted_saves(checkpoints) == [checkpoints / STAGING_DIR / "checkpoint-2"]
    assert (checkpoints / STAGING_DIR / "checkpoint-2" / "model.safetensors").is_file()
    assert not (checkpoints / STAGING_DIR / "checkpoint-2" / "trainer_state.json").exists()

    with caplog.at_level("WARNING"):
        assert main([*argv, "--resume"]) == 0
    assert f"{STAGING_DIR}/checkpoint-2" in caplog.text and "stopped while saving" in caplog.text
    finished = json.loads((out / "training.json").read_text())
    assert finished["steps"] == 2 and finished["resumed_from"] == "checkpoint-1"
    assert _complete(checkpoints / "checkpoint-2", 2)
    assert not (checkpoints / STAGING_DIR).exists() and interrupted_saves(checkpoints) == []
    assert (out / "model" / "model.safetensors").is_file() and not (out / ".model.saving").exists()


@pytest.mark.parametrize("leftover", [True, False])
def test_interrupted_saves_names_only_staged_folders(tmp_path, leftover):
    (tmp_path / "checkpoint-3").mkdir()
    if leftover:
        (tmp_path / STAGING_DIR / "checkpoint-4").mkdir(parents=True)
    assert interrupted_saves(tmp_path) == ([tmp_path / STAGING_DIR / "checkpoint-4"] if leftover else [])
