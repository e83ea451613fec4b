"""Where reviews live in a workspace: ``reviews/<run>/plan.json`` (and its lock) and one folder per built pack,
``reviews/<run>/pack-<UTC time>/``, each with its decision log."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from fairmed_core.report.pack import MANIFEST

__all__ = ["ReviewFolder", "review_folder"]


@dataclass(frozen=True)
class ReviewFolder:
    """The review folder of one evaluation run."""

    path: Path

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    def packs(self) -> list[Path]:
        """Built packs (folders holding a manifest), newest first."""
        if not self.path.is_dir():
            return []
        found = [p for p in self.path.glob("pack-*") if (p / MANIFEST).is_file()]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def new_pack(self, *, now: float | None = None) -> Path:
        """A fresh pack folder name (not created): ``pack-YYYYmmdd-HHMMSS``, suffixed when taken."""
        stem = f"pack-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
        candidate, index = self.path / stem, 1
        while candidate.exists():
            index += 1
            candidate = self.path / f"{stem}-{index}"
        return candidate


def review_folder(workspace_root: str | Path, run_name: str) -> ReviewFolder:
    """The review folder of a run named like ``shipped/tiny-fairmedgemma-grpo`` (unsafe characters replaced)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name).strip("._") or "run"
    return ReviewFolder(Path(workspace_root) / "reviews" / safe[:100])
