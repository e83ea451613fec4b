"""Save and load audits in the workspace: the JSON the CLI writes plus the three tables as CSV.

Group, attribute and source names come from the user's file, and a spreadsheet runs a cell that starts with
``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) as a formula; the CSV tables written here quote such
cells with a leading ``'`` (``spreadsheet_safe_csv``). JSON keeps the names exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairmed_core.data.labels import attribute_label
from fairmed_core.fairness import AuditResult, PredictionColumns
from fairmed_core.files import read_json_object
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text

__all__ = ["SavedAudit", "list_saved_audits", "save_audit", "spreadsheet_safe", "spreadsheet_safe_csv"]

_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _safe_cell(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_TRIGGERS) else value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells and column names that a spreadsheet would run as a formula start with ``'``.

    Numbers are left alone (a negative gap stays a number); only text is quoted, as OWASP's CSV-injection
    guidance recommends.
    """
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or isinstance(out[column].dtype, (pd.CategoricalDtype, pd.StringDtype)):
            out[column] = out[column].astype(object).map(_safe_cell)
    out.columns = [_safe_cell(column) for column in out.columns]
    return out


def spreadsheet_safe_csv(frame: pd.DataFrame) -> str:
    """``frame`` as CSV text for a person to open, formula-like text quoted (see ``spreadsheet_safe``)."""
    return spreadsheet_safe(frame).to_csv(index=False)


def save_audit(result: AuditResult, directory: str | Path, *, predictions: pd.DataFrame | None = None) -> Path:
    """Write ``audit.json``, ``groups.csv``, ``gaps.csv``, ``summary.csv`` (and the predictions) into ``directory``;
    with format failures also ``format_failures.csv``, with the paper's protocol ``paper_sources.csv``,
    ``paper_attributes.csv`` and ``paper_groups.csv``.

    Each file is written atomically; ``audit.json`` goes last, so its presence marks a complete audit. The
    result tables are written spreadsheet-safe; ``predictions.csv`` is the user's own table, kept as given so
    that it reads back unchanged.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if predictions is not None:
        atomic_write_text(directory / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(directory / "groups.csv", spreadsheet_safe_csv(result.groups_frame()))
    atomic_write_text(directory / "gaps.csv", spreadsheet_safe_csv(result.gaps_frame()))
    atomic_write_text(directory / "summary.csv", spreadsheet_safe_csv(result.summary_frame()))
    if result.format_failure_rates:
        atomic_write_text(directory / "format_failures.csv", spreadsheet_safe_csv(result.format_failures_frame()))
    paper = result.paper_summary
    if paper is not None:
        atomic_write_text(directory / "paper_sources.csv", spreadsheet_safe_csv(paper.sources_frame()))
        atomic_write_text(directory / "paper_attributes.csv", spreadsheet_safe_csv(paper.attributes_frame()))
        atomic_write_text(directory / "paper_groups.csv", spreadsheet_safe_csv(paper.groups_frame()))
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

    @property
    def columns(self) -> PredictionColumns:
        """The audited table's columns as the audit recorded them, to audit its saved predictions again."""
        settings = self.settings
        return PredictionColumns(settings["label_col"], settings["pred_col"], tuple(settings.get("sensitive") or ()),
                                 settings.get("score_col"), settings.get("source_col"))

    def label(self) -> str:
        attributes = ", ".join(attribute_label(a) for a in self.settings.get("sensitive") or [])
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
        settings = (read_json_object(audit_file) or {}).get("settings")
        if isinstance(settings, dict) and {"label_col", "pred_col"} <= set(settings):
            found.append(SavedAudit(name=folder.name, path=folder, settings=settings))
    return sorted(found, key=lambda a: (a.path / "audit.json").stat().st_mtime, reverse=True)
