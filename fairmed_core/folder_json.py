"""Read the JSON file that says what a saved folder is (a generator's or a classifier's config), with errors
that name the folder or the file and say what was expected."""

from __future__ import annotations

import json
from pathlib import Path

from fairmed_core.errors import FairMedInputError

__all__ = ["read_folder_json"]


def read_folder_json(folder: Path, name: str, *, what: str, folder_hint: str, written_by: str) -> tuple[Path, object]:
    """``(path, parsed JSON)`` of ``folder / name``; refuses a missing folder ("``what`` folder not found",
    ``folder_hint``), a missing file (asking whether the folder was written by ``written_by``) and an unreadable
    or garbled file."""
    if not folder.is_dir():
        raise FairMedInputError(f"{what} folder not found", source=str(folder), hint=folder_hint)
    path = folder / name
    if not path.is_file():
        raise FairMedInputError(f"missing {name}", source=str(folder),
                                hint=f"is this a folder written by {written_by}?")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"unreadable {name}: {error}", source=str(path)) from error
