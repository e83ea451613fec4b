"""Where FairMed keeps things on disk: the workspace folder with its datasets and audits, and atomic writes.

A workspace is a plain folder (``$FAIRMED_WORKSPACE``, default ``./workspace``)::

    datasets/synth-default/   the embedded benchmark, generated on first use (manifest.jsonl, img/, config.json)
    audits/<name>/            saved audits (audit.json, groups.csv, gaps.csv, summary.csv, predictions.csv)

Everything is written to a temporary file next to its target and renamed into place, so a killed process
never leaves a half-written file that a reader could mistake for a finished one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairmed_core.errors import FairMedInputError

__all__ = ["Workspace", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "REPO_ROOT", "ASSETS",
           "TINY_MODEL", "TINY_MODEL_PREDICTIONS", "SHIPPED_GENERATORS", "shipped_model_dirs"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS = REPO_ROOT / "assets"
REFERENCE_PREDICTIONS = ASSETS / "reference_predictions.csv"
TINY_MODEL = ASSETS / "models" / "tiny-fairmedgemma"  # the shipped CPU default model
TINY_MODEL_PREDICTIONS = TINY_MODEL / "evaluation" / "predictions.csv"  # its test-split evaluation
SHIPPED_GENERATORS = ASSETS / "counterfactual"  # counterfactual generators for the embedded benchmark
def shipped_model_dirs() -> list[Path]:
    """Model folders shipped in ``assets/models/`` (each with a ``config.json``): the tiny FairMedGemma first,
    then the GRPO- and FairGRPO-trained ones when present."""
    found = sorted(p.parent for p in (ASSETS / "models").glob("*/config.json") if p.is_file())
    return sorted(found, key=lambda p: (p != TINY_MODEL, p.name))


_UMASK = os.umask(0)
os.umask(_UMASK)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 text (see ``atomic_write_bytes``)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Atomically write strict JSON (NaN is refused: callers convert it to null first)."""
    return atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def _checked_name(name: str, kind: str) -> str:
    if not _SAFE_NAME.match(name):
        raise FairMedInputError(
            f"{kind} name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


@dataclass(frozen=True)
class Workspace:
    """A workspace folder and the well-known places inside it."""

    root: Path

    @classmethod
    def from_env(cls, default: str | Path = "workspace") -> "Workspace":
        """The workspace named by ``$FAIRMED_WORKSPACE``, else ``default`` (relative to the current folder)."""
        return cls(Path(os.environ.get("FAIRMED_WORKSPACE") or default).expanduser().resolve())

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def audits(self) -> Path:
        return self.root / "audits"

    @property
    def runs(self) -> Path:
        """Evaluation and training runs, one folder each."""
        return self.root / "runs"

    @property
    def models(self) -> Path:
        """Model folders (checkpoints) the user placed or trained in this workspace."""
        return self.root / "models"

    @property
    def generators(self) -> Path:
        """Counterfactual generators trained in this workspace (``fairmed train counterfactual``)."""
        return self.root / "generators"

    def generator_dirs(self) -> list[Path]:
        """Generator folders: the shipped ones, then this workspace's, each holding a ``generator_config.json``."""
        found = []
        for parent in (SHIPPED_GENERATORS, self.generators):
            if parent.is_dir():
                found += sorted(p.parent for p in parent.glob("*/generator_config.json") if p.is_file())
        return found

    def audit_dir(self, name: str) -> Path:
        """The folder of a saved audit; the name must be a plain file name (no path tricks)."""
        return self.audits / _checked_name(name, "audit")

    def run_dir(self, name: str) -> Path:
        """The folder of a run; the name must be a plain file name (no path tricks)."""
        return self.runs / _checked_name(name, "run")

    def model_dirs(self) -> list[Path]:
        """Folders under ``models/`` that hold a ``config.json``, sorted by name."""
        if not self.models.is_dir():
            return []
        return sorted(p.parent for p in self.models.glob("*/config.json") if p.is_file())

    def dataset_manifests(self) -> list[Path]:
        """Manifests of the datasets in this workspace (``datasets/*/manifest.jsonl``), sorted by name."""
        if not self.datasets.is_dir():
            return []
        return sorted(p for p in self.datasets.glob("*/manifest.jsonl") if p.is_file())
