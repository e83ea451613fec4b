"""Save and load audits in the workspace: the JSON the CLI writes plus the three tables as CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairmed_core.fairness import AuditResult
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text

__all__ = ["save_audit"]


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

