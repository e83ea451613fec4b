"""Atomic trainer checkpoints: a ``checkpoint-N`` folder appears complete, or not at all.

transformers' ``Trainer._save_checkpoint`` (which TRL's GRPO trainer calls) writes ``checkpoint-N`` in place, file
by file, so a run killed during a save left a torn folder that a resume then picked (issue 13). Inside
:func:`atomic_checkpoint` the trainer writes into a hidden staging folder, ``RUN/.saving/checkpoint-N``; when
every rank has written its part, the main process flushes the files to disk and renames the folder to
``RUN/checkpoint-N`` (:func:`fairmed_core.files.publish_folder`). ``checkpoint-*`` names are therefore only ever
complete checkpoints. What a killed save leaves is under ``.saving``: :func:`interrupted_saves` names it for a
resume to report, and the next save clears it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from fairmed_core.files import publish_folder

__all__ = ["STAGING_DIR", "atomic_checkpoint", "interrupted_saves"]

STAGING_DIR = ".saving"  # hidden: neither TRL's checkpoint search nor ours (checkpoint-*) ever sees it


def interrupted_saves(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders a killed save left half-written in ``run_dir``'s staging folder (never resumed from)."""
    staging = Path(run_dir) / STAGING_DIR
    return sorted(p for p in staging.iterdir() if p.is_dir()) if staging.is_dir() else []


@contextmanager
def atomic_checkpoint(trainer, trial=None) -> Iterator[Path]:
    """Make the trainer's checkpoint save inside this block atomic; yields the staging ``checkpoint-N`` folder
    (the method's own state files go there too, to be published with it).

    The trainer finds its checkpoint folder through ``_get_output_dir``; for this save only it answers the
    staging folder. If the block raises, nothing is published and the staging folder stays for
    :func:`interrupted_saves` to report."""
    run_dir = Path(trainer._get_output_dir(trial=trial))
    name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    staging = run_dir / STAGING_DIR
    main = trainer.args.should_save
    if main and staging.exists():
        shutil.rmtree(staging)  # what an earlier killed save left
    trainer.accelerator.wait_for_everyone()  # no rank writes into the staging folder before it is cleared
    trainer._get_output_dir = lambda trial=None: str(staging)  # an instance attribute: shadows the method
    try:
        yield staging / name
    finally:
        del trainer._get_output_dir
    trainer.accelerator.wait_for_everyone()  # every rank's files (its RNG state) are in before the rename
    if main:
        publish_folder(staging / name, run_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        # The save rotated old checkpoints in the staging folder, where there were none: rotate here.
        rotate_checkpoints(output_dir=str(run_dir), save_total_limit=trainer.args.save_total_limit,
                           best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=True)
