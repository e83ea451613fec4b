"""The generator folder on disk: its layout, the atomic replacement of a whole checkpoint, and safe reading.

One job: a generator folder is always either the previous complete checkpoint or the next complete one, and
reading it never unpickles anything that came from disk.

Layout (diffusers' own format for the network and scheduler, so ``UNet2DModel.from_pretrained`` reads it too)::

    DIR/generator_config.json       settings, per-source image modes, training image counts, step, seconds
    DIR/unet/config.json            UNet2DModel config
    DIR/unet/diffusion_pytorch_model.safetensors
    DIR/scheduler/scheduler_config.json   DDIM (v-prediction, cosine, trailing spacing, no clipping)
    DIR/training_state.pt           only while training: raw weights, optimiser, RNG, losses (plain tensors,
                                    read with ``torch.load(weights_only=True)``); a shipped generator drops it

A checkpoint is written complete into a hidden sibling ``.DIR.tmp`` and swapped in by two renames
(``DIR -> .DIR.old``, ``.DIR.tmp -> DIR``); ``recover`` finishes or undoes a swap a crash interrupted, so a run
killed at any moment resumes from its last complete checkpoint. Files in DIR that training does not write
(a README card) are carried over to each new checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import fsync_tree
from fairmed_core.folder_json import read_folder_json

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "SCHEDULER_DIR",
    "STATE_FILE",
    "UNET_DIR",
    "WEIGHTS_FILE",
    "read_metadata",
    "read_training_state",
    "recover",
    "replace_folder",
    "weights_path",
]

FORMAT = "fairmed-counterfactual-generator"
CONFIG_FILE = "generator_config.json"
UNET_DIR = "unet"
SCHEDULER_DIR = "scheduler"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
STATE_FILE = "training_state.pt"
# Pickle-based weight files: torch.load / pickle on them can run arbitrary code, so they are refused unread.
_PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _siblings(target: Path) -> tuple[Path, Path]:
    return target.with_name(f".{target.name}.tmp"), target.with_name(f".{target.name}.old")


def recover(target: str | Path) -> None:
    """Finish or undo a checkpoint swap that a crash interrupted (see the module docstring)."""
    target = Path(target)
    temporary, old = _siblings(target)
    if not target.exists() and old.exists():
        # ".old" only exists once ".tmp" was complete, so a crash between the two renames leaves a good ".tmp".
        (temporary if temporary.exists() else old).rename(target)
    if old.exists():
        shutil.rmtree(old)
    if temporary.exists():  # an incomplete checkpoint: the crash came while writing it
        shutil.rmtree(temporary)


def replace_folder(target: str | Path, fill: Callable[[Path], None]) -> Path:
    """Replace the folder ``target`` by what ``fill(folder)`` writes, atomically as seen by readers that call
    ``recover`` first; files of the old folder that ``fill`` did not write are carried over."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    temporary, old = _siblings(target)
    temporary.mkdir()
    try:
        fill(temporary)
        if target.exists():
            for item in target.iterdir():
                if not (temporary / item.name).exists():
                    if item.is_dir():
                        shutil.copytree(item, temporary / item.name)
                    else:
                        shutil.copy2(item, temporary / item.name)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    fsync_tree(temporary)  # on disk before the renames publish it: a power cut cannot leave renamed empty files
    if target.exists():
        target.rename(old)
    temporary.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def weights_path(folder: str | Path) -> Path:
    """The UNet's safetensors file; a folder holding only pickled weights is refused without reading them."""
    folder = Path(folder)
    unet = folder / UNET_DIR
    path = unet / WEIGHTS_FILE
    if path.is_file():
        return path
    pickled = sorted(p.name for p in unet.glob("*") if p.suffix in _PICKLED_SUFFIXES) if unet.is_dir() else []
    if pickled:
        raise FairMedInputError(
            f"the generator's weights are pickled ({', '.join(pickled)}) and are refused unread: loading a pickle "
            "can run arbitrary code",
            source=str(unet),
            hint=f"save them as safetensors (unet.save_pretrained(..., safe_serialization=True) writes {WEIGHTS_FILE})",
        )
    raise FairMedInputError(f"missing {UNET_DIR}/{WEIGHTS_FILE}", source=str(folder),
                            hint="is this a folder written by train_generator?")


def read_metadata(folder: str | Path) -> dict:
    """``generator_config.json`` of a generator folder, checked to be one (after finishing an interrupted swap)."""
    folder = Path(folder).expanduser()
    recover(folder)
    path, metadata = read_folder_json(
        folder, CONFIG_FILE, what="generator", written_by="train_generator",
        folder_hint="train one with train_generator, or give the folder of a shipped generator")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise FairMedInputError(f"{CONFIG_FILE} is not a counterfactual generator's", source=str(path),
                                hint=f"expected \"format\": \"{FORMAT}\"")
    for name in (f"{UNET_DIR}/config.json", f"{SCHEDULER_DIR}/scheduler_config.json"):
        if not (folder / name).is_file():
            raise FairMedInputError(f"missing {name}", source=str(folder))
    return metadata


def read_training_state(folder: Path) -> dict | None:
    """The training state to resume from, or None when the folder has none. Plain tensors only: anything else
    in the file makes ``weights_only`` loading fail instead of running code."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here means "cannot resume from this file"
        raise FairMedInputError(f"cannot read the training state: {error}", source=str(path),
                                hint="train with resume=False to start over") from error
