"""Shared test setup: offline hub settings, one thread, and a workspace holding the embedded benchmark."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def link_case_images(record: dict, from_folder: Path, to_folder: Path) -> dict:
    """Hard-link (or copy) a manifest record's images from ``from_folder`` to the same relative paths under
    ``to_folder``, so a manifest written there names images inside its own folder, as manifests must."""
    import shutil

    for relative in record["images"]:
        target = to_folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(from_folder / relative, target)
            except OSError:  # another file system
                shutil.copyfile(from_folder / relative, target)
    return record


@pytest.fixture(scope="session")
def default_workspace(tmp_path_factory) -> Path:
    """A workspace whose datasets/synth-default is the embedded benchmark, written once per test session."""
    from fairmed_core.data import ensure_default_dataset

    root = tmp_path_factory.mktemp("workspace")
    ensure_default_dataset(root / "datasets")
    return root


@pytest.fixture(scope="session")
def default_manifest(default_workspace) -> Path:
    return default_workspace / "datasets" / "synth-default" / "manifest.jsonl"


@pytest.fixture(scope="session")
def tiny_model_dir(default_manifest, tmp_path_factory) -> Path:
    """A tiny FairMedGemma trained for a few steps on the benchmark (fast; answers in the right format, not
    well). Tests that need the shipped, fully trained model use ``assets/models/tiny-fairmedgemma``."""
    import torch

    from fairmed_core.training.sft import SFTConfig, train_sft

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-model")
    train_sft(default_manifest, out, SFTConfig(epochs=2, max_cases=192, batch_size=16, learning_rate=3e-3))
    return out
