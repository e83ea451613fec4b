"""Save and load audits in the workspace: the JSON the CLI writes plus the three tables as CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairmed_core.fairness import AuditResult
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text

__all__ = ["save_audit"]


def save_audit(result: AuditResult, directory: str | Path, *, predictions: pd.DataFrame | None = None) -> Path:
    """Write ``audit.json``, ``groups.csv``, ``gaps.csv``, ``summary.csv`` (and the predictions) into ``directory``.

    Each file is written atomically; ``audit.json`` goes last, so its presence marks a complete audit.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        atomic_write_text(directory / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(directory / "groups.csv", result.groups_frame().to_csv(index=False))
    atomic_write_text(directory / "gaps.csv", result.gaps_frame().to_csv(index=False))
    atomic_write_text(directory / "summary.csv", result.summary_frame().to_csv(index=False))
    atomic_write_json(directory / "audit.json", result.to_json_dict())
    return directory / "audit.json"

