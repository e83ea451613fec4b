"""Save and load audits in the workspace: the JSON the CLI writes plus the three tables as CSV."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairmed_core.fairness import AuditResult
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text

__all__ = ["SavedAudit", "list_saved_audits", "save_audit"]


def save_audit(result: AuditResult, directory: str | Path, *, predictions: pd.DataFrame | None = None) -> Path:
    """Write ``audit.json``, ``groups.csv``, ``gaps.csv``, ``summary.csv`` (and the predictions) into ``directory``;
    with format failures also ``format_failures.csv``, with the paper's protocol ``paper_sources.csv``,
    ``paper_attributes.csv`` and ``paper_groups.csv``.

    Each file is written atomically; ``audit.json`` goes last, so its presence marks a complete audit.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        atomic_write_text(directory / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(directory / "groups.csv", result.groups_frame().to_csv(index=False))
    atomic_write_text(directory / "gaps.csv", result.gaps_frame().to_csv(index=False))
    atomic_write_text(directory / "summary.csv", result.summary_frame().to_csv(index=False))
    if result.format_failure_rates:
        atomic_write_text(directory / "format_failures.csv", result.format_failures_frame().to_csv(index=False))
    paper = result.paper_summary
    if paper is not None:
        atomic_write_text(directory / "paper_sources.csv", paper.sources_frame().to_csv(index=False))
        atomic_write_text(directory / "paper_attributes.csv", paper.attributes_frame().to_csv(index=False))
        atomic_write_text(directory / "paper_groups.csv", paper.groups_frame().to_csv(index=False))
    atomic_write_json(directory / "audit.json", result.to_json_dict())
    return directory / "audit.json"



@dataclass(frozen=True)
class SavedAudit:
    """A complete saved audit in the workspace (``audits/<name>/``) whose predictions were saved with it."""

    name: str
    path: Path
    settings: dict

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.csv"

    def label(self) -> str:
        attributes = ", ".join(self.settings.get("sensitive") or [])
        return f"{self.name}: {self.settings.get('n_rows', '?')} rows, attributes {attributes}"


def list_saved_audits(audits_dir: str | Path) -> list[SavedAudit]:
    """Saved audits under ``audits_dir`` that can be reopened (audit.json and predictions.csv), newest first;
    unreadable folders are skipped."""
    root = Path(audits_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        audit_file = folder / "audit.json"
        if not (audit_file.is_file() and (folder / "predictions.csv").is_file()):
            continue
        try:
            settings = json.loads(audit_file.read_text(encoding="utf-8"))["settings"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
            continue
        if isinstance(settings, dict):
            found.append(SavedAudit(name=folder.name, path=folder, settings=settings))
    return sorted(found, key=lambda a: (a.path / "audit.json").stat().st_mtime, reverse=True)
