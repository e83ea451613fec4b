"""Evaluation runs on disk: one folder per run with its settings, predictions table and audit.

``run.json`` is written last, so its presence marks a complete run: a run interrupted half-way is never
listed, and an existing run folder is never overwritten.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import AuditResult
from fairmed_core.runs.audit_store import save_audit
from fairmed_core.files import shipped_fairgrad_dirs
from fairmed_core.runs.workspace import Workspace, atomic_write_json, atomic_write_text, shipped_model_dirs

__all__ = ["EvaluationRun", "list_evaluations", "new_run_name", "read_evaluation", "save_evaluation"]

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"


@dataclass(frozen=True)
class EvaluationRun:
    """A complete evaluation run: where it is and what ``run.json`` says about it."""

    name: str
    path: Path
    info: dict
    audit: AuditResult | None = None  # set when the run was just made; read runs keep it in audit/audit.json

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS_FILE

    def label(self) -> str:
        """One line for a picker: model, data, split, size, accuracy."""
        info = self.info
        accuracy = info.get("accuracy")
        acc = f", accuracy {accuracy:.3f}" if isinstance(accuracy, (int, float)) else ""
        return (f"{self.name}: {info.get('model', '?')} on {info.get('dataset', '?')} "
                f"[{info.get('split', 'all')}], {info.get('n_cases', '?')} cases{acc}")


def new_run_name(model_name: str, split: str | None, *, now: float | None = None) -> str:
    """``eval-<model>-<split>-<UTC timestamp>`` with unsafe characters replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    raw = f"eval-{model_name}-{split or 'all'}-{stamp}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:100]


def save_evaluation(directory: str | Path, predictions: pd.DataFrame, info: dict,
                    audit: AuditResult | None = None) -> EvaluationRun:
    """Write ``predictions.csv``, the audit (``audit/``) and ``run.json`` (last) into a new ``directory``."""
    path = Path(directory)
    if (path / RUN_FILE).exists():
        raise FairMedInputError(f"run folder {str(path)!r} already holds a run", hint="choose another run name")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / PREDICTIONS_FILE, predictions.to_csv(index=False))
    if audit is not None:
        save_audit(audit, path / "audit")
    atomic_write_json(path / RUN_FILE, info)
    return EvaluationRun(name=path.name, path=path, info=info, audit=audit)


def read_evaluation(directory: str | Path) -> EvaluationRun:
    """The run in ``directory``; an error if it is incomplete or its ``run.json`` is unreadable."""
    path = Path(directory)
    run_file = path / RUN_FILE
    if not run_file.is_file() or not (path / PREDICTIONS_FILE).is_file():
        raise FairMedInputError("not a complete evaluation run (run.json or predictions.csv missing)",
                                source=str(path))
    try:
        info = json.loads(run_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"run.json is not valid JSON: {error}", source=str(run_file)) from error
    return EvaluationRun(name=path.name, path=path, info=info if isinstance(info, dict) else {})


def list_evaluations(workspace: Workspace, *, shipped: bool = False,
                     kinds: Sequence[str] | None = None) -> list[EvaluationRun]:
    """Complete evaluation runs in the workspace (``runs/<name>/`` and a training run's ``runs/<name>/evaluation/``),
    newest first, then the shipped models' test evaluations (``shipped/<model>``) and the shipped FairGrad runs
    (``shipped/<run>``, from ``assets/fairgrad/``) when ``shipped``; only runs
    whose ``run.json`` kind is one of ``kinds``, when given; unreadable folders are skipped."""
    if kinds is not None:
        wanted = set(kinds)
        return [run for run in list_evaluations(workspace, shipped=shipped) if run.info.get("kind") in wanted]
    runs = []
    if shipped:
        folders = [model / "evaluation" for model in shipped_model_dirs()] + shipped_fairgrad_dirs()
        for folder in folders:
            if (folder / RUN_FILE).is_file():
                try:
                    run = read_evaluation(folder)
                except FairMedInputError:
                    continue
                name = folder.parent.name if folder.name == "evaluation" else folder.name
                runs.append(EvaluationRun(name=f"shipped/{name}", path=run.path, info=run.info))
    if not workspace.runs.is_dir():
        return runs
    found = []
    for folder in workspace.runs.iterdir():
        # A training run keeps the evaluation of its final model in <run>/evaluation/.
        for candidate, name in ((folder, folder.name), (folder / "evaluation", f"{folder.name}/evaluation")):
            if candidate.is_dir() and (candidate / RUN_FILE).is_file():
                try:
                    run = read_evaluation(candidate)
                except FairMedInputError:
                    continue
                found.append(EvaluationRun(name=name, path=run.path, info=run.info))
    return sorted(found, key=lambda run: (run.path / RUN_FILE).stat().st_mtime, reverse=True) + runs
