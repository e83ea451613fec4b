"""Where FairMed keeps things on disk: the workspace folder with its datasets, runs and audits (files are
written atomically by :mod:`fairmed_core.files`, re-exported here).

A workspace is a plain folder (``$FAIRMED_WORKSPACE``, default ``./workspace``)::

    datasets/synth-default/   the embedded benchmark, generated on first use (manifest.jsonl, img/, config.json)
    audits/<name>/            saved audits (audit.json, groups.csv, gaps.csv, summary.csv, predictions.csv)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import (ASSETS, REFERENCE_PREDICTIONS, REPO_ROOT, SHIPPED_GENERATORS, TINY_MODEL,  # noqa: F401
                                TINY_MODEL_PREDICTIONS, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                shipped_model_dirs)

__all__ = ["Workspace", "CHECKOUT_WORKSPACE", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "REPO_ROOT", "ASSETS",
           "TINY_MODEL", "TINY_MODEL_PREDICTIONS", "SHIPPED_GENERATORS", "shipped_model_dirs"]

#: The dashboard's workspace when ``$FAIRMED_WORKSPACE`` is not set: the checkout's own ``workspace/`` folder,
#: whatever folder the server was started from.
CHECKOUT_WORKSPACE = REPO_ROOT / "workspace"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


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
