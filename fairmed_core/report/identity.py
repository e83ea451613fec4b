"""What exactly was reviewed: SHA-256 of the model's config and weight files, the run's files and the data.

The same records serve the pack's cover (model and data identity) and ``verify`` (recompute every hash later
and name what changed), so a file is identified the same way in both places.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fairmed_core.runs.eval_store import EvaluationRecord
from fairmed_core.runs.workspace import REPO_ROOT

__all__ = ["FileRecord", "ModelIdentity", "canonical_sha256", "case_ids_sha256", "file_record", "model_identity",
           "run_file_records", "sha256_file"]

_MODEL_FILES = ("config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja", "adapter_config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    """A file by role ("model config", "model weights", "run", "plan", "pack"), path, size and SHA-256."""

    role: str
    path: str
    bytes: int
    sha256: str

    @property
    def name(self) -> str:
        return Path(self.path).name


def file_record(path: str | Path, role: str) -> FileRecord:
    """Hash one file (its absolute path is kept, so ``verify`` finds it again)."""
    path = Path(path).resolve()
    return FileRecord(role=role, path=str(path), bytes=path.stat().st_size, sha256=sha256_file(path))


@dataclass(frozen=True)
class ModelIdentity:
    """The model under review: name, folder (None when not found on this machine), adapter and file hashes."""

    name: str
    folder: str | None
    adapter: str | None
    files: tuple[FileRecord, ...]
    note: str


def _find_folder(run_dir: Path, recorded: str | None) -> Path | None:
    """A shipped model's evaluation lives in ``<model>/evaluation``; otherwise ``run.json`` names the folder
    (relative to the current folder or the repository)."""
    if (run_dir.parent / "config.json").is_file():
        return run_dir.parent
    if recorded:
        for base in (Path.cwd(), REPO_ROOT):
            candidate = (base / recorded) if not Path(recorded).is_absolute() else Path(recorded)
            if (candidate / "config.json").is_file():
                return candidate
    return None


def model_identity(run_dir: str | Path, record: EvaluationRecord) -> ModelIdentity:
    """Identify the model of an evaluation run from its ``run.json`` (``record``) and hash its files."""
    run_dir = Path(run_dir)
    folder = _find_folder(run_dir, record.model_dir)
    name = record.model or "?"
    if folder is not None and name in ("model", "?"):
        name = folder.name
    files: list[FileRecord] = []
    note = ""
    if folder is None:
        note = (f"model folder {record.model_dir!r} recorded in run.json is not on this machine: its files "
                "are not hashed, and verify cannot check them")
    else:
        for filename in _MODEL_FILES:
            if (folder / filename).is_file():
                files.append(file_record(folder / filename, "model config"))
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
                files.append(file_record(path, "model weights"))
        if not any(f.role == "model weights" for f in files):
            note = f"no weight file found in {folder}"
    adapter = record.adapter
    if adapter:
        adapter_dir = Path(adapter)
        if adapter_dir.is_dir():
            for path in sorted(adapter_dir.iterdir()):
                if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES or path.name == "adapter_config.json"):
                    files.append(file_record(path, "adapter"))
        else:
            note = (note + "; " if note else "") + f"adapter folder {adapter!r} is not on this machine"
    return ModelIdentity(name=name, folder=str(folder.resolve()) if folder else None,
                         adapter=str(adapter) if adapter else None, files=tuple(files), note=note)


def run_file_records(run_dir: str | Path) -> tuple[FileRecord, ...]:
    """Hashes of an evaluation run's files (``run.json``, predictions, and the saved audit if any)."""
    run_dir = Path(run_dir)
    paths = [run_dir / "run.json", run_dir / "predictions.csv"]
    if (run_dir / "audit").is_dir():
        paths += sorted(p for p in (run_dir / "audit").iterdir() if p.is_file())
    return tuple(file_record(p, "run") for p in paths if p.is_file())


def case_ids_sha256(case_ids) -> str:
    """SHA-256 of the sorted case ids, one per line: the same cases give the same hash in any order."""
    text = "\n".join(sorted(str(c) for c in case_ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_sha256(payload) -> str:
    """SHA-256 of JSON with sorted keys and no whitespace (for hashing records, not files)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
