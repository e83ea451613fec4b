"""Evaluation runs on disk: one folder per run with its settings, predictions table and audit.

``run.json`` is written last, so its presence marks a complete run: a run interrupted half-way is never
listed, and an existing run folder is never overwritten.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fairmed_core.data.sampling import SampleComposition
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import AuditResult
from fairmed_core.runs.audit_store import save_audit
from fairmed_core.files import read_json_object, shipped_fairgrad_dirs
from fairmed_core.runs.workspace import Workspace, atomic_write_json, atomic_write_text, shipped_model_dirs
from fairmed_core.settings import JsonRecord

__all__ = ["EvaluationRecord", "EvaluationRun", "list_evaluations", "new_run_name", "read_evaluation",
           "save_evaluation"]

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.csv"


@dataclass(frozen=True)
class EvaluationRecord(JsonRecord):
    """What ``run.json`` says about an evaluation run: the model, the data, the size and the headline numbers,
    written by the evaluation and FairGrad jobs and read back by the pages, the CLI and the review documents.

    Fields a kind of run does not have stay None (a FairGrad run has no model folder or decoding; only a run on a
    table has ``table``, ``label`` and the split sizes). ``training`` and ``generation`` are the JSON form of the
    job's own settings (its config dataclass's), kept as written: a record outlives the config that wrote it."""

    kind: str  # "evaluation", "fairgrad-images" or "fairgrad-tabular"
    model: str
    dataset: str
    n_cases: int
    split: str | None = None  # None: every case
    sample: Mapping[str, Any] | None = None  # which cases of the split (SampleComposition's JSON); None: older run
    attributes: tuple[str, ...] = ()
    positive_label: str | None = None
    accuracy: float | None = None  # share of cases answered correctly, 0-1
    format_failure_rate: float | None = None  # share of answers that could not be read, 0-1
    format_failures: str | None = None  # how the audit scored them
    model_dir: str | None = None
    adapter: str | None = None
    device: str | None = None
    dtype: str | None = None
    manifest_root: str | None = None
    generation: Mapping[str, Any] | None = None  # decoding settings (GenerationOptions)
    training: Mapping[str, Any] | None = None  # the FairGrad settings of a FairGrad run
    started_utc: str | None = None
    wall_time_s: float | None = None
    cases_per_s: float | None = None
    # A FairGrad run on a table: the table, its outcome column and split, the AUROC of its score.
    table: str | None = None
    label: str | None = None
    label_positive_value: str | None = None
    label_positive_rate: float | None = None  # share of rows with the outcome, 0-1
    auroc: float | None = None
    features: Mapping[str, Any] | None = None
    n_train: int | None = None
    n_test: int | None = None
    split_note: str | None = None
    encoded_features: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def method(self) -> str | None:
        """The training method of a FairGrad run (None for a plain evaluation)."""
        method = (self.training or {}).get("method")
        return None if method is None else str(method)


@dataclass(frozen=True)
class EvaluationRun:
    """A complete evaluation run: where it is and what its ``run.json`` says (``record``)."""

    name: str
    path: Path
    record: EvaluationRecord
    audit: AuditResult | None = None  # set when the run was just made; read runs keep it in audit/audit.json

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def sample(self) -> SampleComposition | None:
        """Which cases of the split were answered (``run.json``'s ``"sample"``); None for a run written before
        evaluations recorded it (those answered the first N cases, or all of them)."""
        data = self.record.sample
        return None if data is None else SampleComposition.from_json(data, source=str(self.path / RUN_FILE))

    def label(self) -> str:
        """One line for a picker: model, data, split, size, accuracy."""
        record = self.record
        acc = f", accuracy {record.accuracy:.3f}" if record.accuracy is not None else ""
        return (f"{self.name}: {record.model} on {record.dataset} [{record.split or 'all'}], {record.n_cases} "
                f"cases{acc}")


def new_run_name(model_name: str, split: str | None, *, now: float | None = None) -> str:
    """``eval-<model>-<split>-<UTC timestamp>`` with unsafe characters replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    raw = f"eval-{model_name}-{split or 'all'}-{stamp}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:100]


def save_evaluation(directory: str | Path, predictions: pd.DataFrame, record: EvaluationRecord,
                    audit: AuditResult | None = None) -> EvaluationRun:
    """Write ``predictions.csv``, the audit (``audit/``) and ``run.json`` (last) into a new ``directory``."""
    path = Path(directory)
    if (path / RUN_FILE).exists():
        raise FairMedInputError(f"run folder {str(path)!r} already holds a run", hint="choose another run name")
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / PREDICTIONS_FILE, predictions.to_csv(index=False))
    if audit is not None:
        save_audit(audit, path / "audit")
    atomic_write_json(path / RUN_FILE, record.to_json())
    return EvaluationRun(name=path.name, path=path, record=record, audit=audit)


def read_evaluation(directory: str | Path) -> EvaluationRun:
    """The run in ``directory``; an error if it is incomplete or its ``run.json`` is unreadable."""
    path = Path(directory)
    run_file = path / RUN_FILE
    if not run_file.is_file() or not (path / PREDICTIONS_FILE).is_file():
        raise FairMedInputError("not a complete evaluation run (run.json or predictions.csv missing)",
                                source=str(path))
    data = read_json_object(run_file)
    if data is None:
        raise FairMedInputError("run.json is not a readable JSON object", source=str(run_file))
    return EvaluationRun(name=path.name, path=path, record=EvaluationRecord.from_json(data, source=str(run_file)))


def list_evaluations(workspace: Workspace, *, shipped: bool = False,
                     kinds: Sequence[str] | None = None) -> list[EvaluationRun]:
    """Complete evaluation runs in the workspace (``runs/<name>/`` and a training run's ``runs/<name>/evaluation/``),
    newest first, then the shipped models' test evaluations (``shipped/<model>``) and the shipped FairGrad runs
    (``shipped/<run>``, from ``assets/fairgrad/``) when ``shipped``; only runs
    whose ``run.json`` kind is one of ``kinds``, when given; unreadable folders are skipped."""
    if kinds is not None:
        wanted = set(kinds)
        return [run for run in list_evaluations(workspace, shipped=shipped) if run.record.kind in wanted]
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
                runs.append(EvaluationRun(name=f"shipped/{name}", path=run.path, record=run.record))
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
                found.append(EvaluationRun(name=name, path=run.path, record=run.record))
    return sorted(found, key=lambda run: (run.path / RUN_FILE).stat().st_mtime, reverse=True) + runs
