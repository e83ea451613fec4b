"""What the pages share: the sidebar (workspace and dataset), cached loaders, and error display.

Loaders are cached per process (``st.cache_data``) and keyed by file path and modification time, so an edited
file is re-read and an unchanged one is not.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from fairmed_core.data import Dataset, data_card, ensure_default_dataset, read_manifest
from fairmed_core.data.card import DataCard
from fairmed_core.errors import FairMedInputError
from fairmed_core.runs.workspace import (
    CHECKOUT_WORKSPACE,
    REFERENCE_PREDICTIONS,
    TINY_MODEL,
    TINY_MODEL_PREDICTIONS,
    Workspace,
    shipped_model_dirs,
)

DEFAULT_DATASET_LABEL = "synth-default (embedded benchmark)"
DEFAULT_MODEL_LABEL = "tiny-fairmedgemma (shipped, CPU)"

if PagesManager.uses_pages_directory:
    # Streamlit bug: when the very first request after the server starts is a page URL (/fairness_audit),
    # it runs that file in the legacy pages/ mode and never runs app.py, so the st.navigation menu and the
    # sidebar never appear. Every page imports this module: switch the flag off and rerun through app.py.
    PagesManager.uses_pages_directory = False
    st.rerun()


@st.cache_resource(show_spinner="Writing the embedded synthetic benchmark (first start only)...")
def _default_manifest(workspace_root: str) -> str:
    # cache_resource: one generation per process even when several browser sessions start at once.
    return str(ensure_default_dataset(Workspace(Path(workspace_root)).datasets))


@st.cache_data(show_spinner="Reading the dataset...", max_entries=4)
def _dataset(manifest: str, mtime: float) -> Dataset:
    return read_manifest(manifest)


@st.cache_data(show_spinner="Building the data card...", max_entries=4)
def _card(manifest: str, mtime: float) -> DataCard:
    return data_card(_dataset(manifest, mtime))


@st.cache_data(max_entries=8)
def _predictions_csv(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


@st.cache_resource(show_spinner="Loading the model (once per process)...", max_entries=2)
def _loaded_model(directory: str, mtime: float):
    # Imported here so pages that never run a model do not pay for importing transformers.
    from fairmed_core.models.loading import load_model

    return load_model(directory), threading.Lock()


def workspace() -> Workspace:
    """The workspace chosen when the server started: ``$FAIRMED_WORKSPACE`` (``fairmed dashboard --workspace``
    sets it), else the checkout's ``workspace/`` folder.

    Never taken from the page: a visitor must not be able to make the server write into a folder of their
    choosing (issue 13), so nothing in the session state can change it."""
    return Workspace.from_env(default=CHECKOUT_WORKSPACE)


def current_manifest() -> Path:
    """Manifest of the dataset chosen in the sidebar; the embedded benchmark is written on first use."""
    ws = workspace()
    default = Path(_default_manifest(str(ws.root)))
    choice = st.session_state.get("dataset_choice", DEFAULT_DATASET_LABEL)
    if choice == DEFAULT_DATASET_LABEL:
        return default
    return Path(choice)


def current_dataset() -> Dataset:
    manifest = current_manifest()
    return _dataset(str(manifest), manifest.stat().st_mtime)


def current_card() -> DataCard:
    manifest = current_manifest()
    return _card(str(manifest), manifest.stat().st_mtime)


def reference_predictions() -> pd.DataFrame:
    """The shipped predictions of the reference classifier on the embedded benchmark's test split."""
    return _predictions_csv(str(REFERENCE_PREDICTIONS), REFERENCE_PREDICTIONS.stat().st_mtime)


def _shipped_model_labels() -> dict[str, Path]:
    """The other shipped models (the GRPO- and FairGRPO-trained tiny FairMedGemmas), by their sidebar label."""
    return {f"{path.name} (shipped, CPU)": path for path in shipped_model_dirs() if path != TINY_MODEL}


def current_model_dir() -> Path:
    """The model folder chosen in the sidebar (the shipped tiny FairMedGemma by default)."""
    choice = st.session_state.get("model_choice", DEFAULT_MODEL_LABEL)
    if choice == DEFAULT_MODEL_LABEL:
        return TINY_MODEL
    return _shipped_model_labels().get(choice, Path(choice))


def current_model():
    """``(LoadedModel, lock)`` for the sidebar's model, loaded once per process and shared by all sessions.

    Generation must hold the lock: one model object serves every browser session, and concurrent
    ``generate`` calls on it would interleave their threads' work for no gain on a CPU."""
    directory = current_model_dir()
    config = directory / "config.json"
    return _loaded_model(str(directory), config.stat().st_mtime if config.exists() else 0.0)


def tiny_model_predictions() -> pd.DataFrame:
    """The shipped tiny FairMedGemma's predictions on the embedded benchmark's test split."""
    return _predictions_csv(str(TINY_MODEL_PREDICTIONS), TINY_MODEL_PREDICTIONS.stat().st_mtime)


def evaluation_predictions(path: Path) -> pd.DataFrame:
    """A stored evaluation run's predictions table."""
    return _predictions_csv(str(path), path.stat().st_mtime)


def show_input_error(error: Exception) -> None:
    """An error box the user can act on; the rest of the page keeps working."""
    if isinstance(error, FairMedInputError):
        st.error(f"**Cannot use this input.** {error}", icon=":material/error:")
    else:
        st.error(f"**Unexpected error** ({type(error).__name__}): {error}", icon=":material/error:")


def sidebar() -> None:
    """The shared sidebar: the workspace (read-only), dataset and model."""
    with st.sidebar:
        st.markdown("### FairMed")
        st.caption("Fairness review workbench for clinical AI")
        ws = workspace()
        st.markdown("**Workspace**", help="Datasets, runs, audits and jobs live here; the dashboard writes nowhere "
                    "else. It is chosen when the server starts: `fairmed dashboard --workspace DIR` or "
                    "`FAIRMED_WORKSPACE=DIR`, default the checkout's workspace/ folder.")
        st.code(str(ws.root), language=None)
        others = [str(p) for p in ws.dataset_manifests() if p.parent.name != "synth-default"]
        st.selectbox(
            "Dataset", [DEFAULT_DATASET_LABEL, *others], key="dataset_choice",
            help="Datasets in the workspace's datasets/ folder (one folder with a manifest.jsonl each). "
            "Write another benchmark with `fairmed synth --out WORKSPACE/datasets/NAME`.",
        )
        models = [*_shipped_model_labels(), *(str(p) for p in ws.model_dirs())]
        st.selectbox(
            "Model", [DEFAULT_MODEL_LABEL, *models], key="model_choice",
            help="Gemma 3 image-text checkpoints (MedGemma-4B, FairMedGemma, your own) in the workspace's "
            "models/ folder, one folder each with config.json, processor files and safetensors weights.",
        )
