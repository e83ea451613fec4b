"""Training runs on disk (``runs/<id>/`` with config.json and metrics.jsonl): listing them and reading their
curves, without importing torch or TRL (the dashboard lists runs often)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import read_json_object
from fairmed_core.runs.workspace import Workspace
from fairmed_core.settings import JsonRecord

__all__ = ["METRICS_FILE", "FINISHED_FILE", "TrainingResult", "TrainingRun", "eval_frame", "list_training_runs",
           "read_metrics", "summary_frame", "train_frame"]

METRICS_FILE = "metrics.jsonl"
FINISHED_FILE = "training.json"
CONFIG_FILE = "config.json"
KIND = "grpo-training"


@dataclass(frozen=True)
class TrainingResult(JsonRecord):
    """How a training run ended: what ``training.json`` holds, and what the training job returns. A helper rank
    of a multi-process launch returns one with its ``rank`` and writes nothing (rank 0 writes the run)."""

    method: str
    steps: int
    train_time_s: float | None = None
    seconds_per_step: float | None = None
    resumed_from: str | None = None  # the checkpoint the run resumed from
    test_accuracy: float | None = None  # of the final model on the test split, when it was evaluated
    rank: int | None = None


@dataclass(frozen=True)
class TrainingRun:
    """A training run folder: its settings, and how it ended (None while it runs or after it was killed)."""

    name: str
    path: Path
    config: dict
    finished: TrainingResult | None

    @property
    def method(self) -> str:
        return str(self.config.get("job", {}).get("method", "?"))

    def records(self) -> list[dict]:
        return read_metrics(self.path)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a folder or the file); unreadable lines are skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def _finished(folder: Path) -> TrainingResult | None:
    """The run's ``training.json``; None when it is missing or unreadable (a run still going, or killed)."""
    data = read_json_object(folder / FINISHED_FILE)
    try:
        return None if data is None else TrainingResult.from_json(data, source=str(folder / FINISHED_FILE))
    except FairMedInputError:
        return None


def list_training_runs(workspace: Workspace) -> list[TrainingRun]:
    """GRPO-family training runs in the workspace, newest first."""
    if not workspace.runs.is_dir():
        return []
    runs = []
    for folder in workspace.runs.iterdir():
        config = read_json_object(folder / CONFIG_FILE) if folder.is_dir() else None
        if config is None or config.get("kind") != KIND:
            continue
        runs.append(TrainingRun(name=folder.name, path=folder, config=config, finished=_finished(folder)))
    return sorted(runs, key=lambda run: (run.path / CONFIG_FILE).stat().st_mtime, reverse=True)


def eval_frame(records: list[dict]) -> pd.DataFrame:
    """The held-out evaluation records as one long table (step, source, attribute, group, metric, n, value)."""
    rows = [{"step": r["step"], **g} for r in records if r.get("kind") == "eval" for g in r.get("groups", [])]
    return pd.DataFrame(rows, columns=["step", "source", "attribute", "group", "metric", "n", "value"])


def summary_frame(records: list[dict]) -> pd.DataFrame:
    """The FairGRPO gap statistics of every held-out evaluation (step, source, attribute, PP, EOD, ...)."""
    rows = [{"step": r["step"], **s} for r in records if r.get("kind") == "eval" for s in r.get("summary", [])]
    return pd.DataFrame(rows)


def train_frame(records: list[dict]) -> pd.DataFrame:
    """TRL's per-step logs (reward, reward_std, kl, entropy, FairGRPO weights, ...), one row per step."""
    rows = [r for r in records if r.get("kind") == "train" and "reward" in r]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last") if rows else pd.DataFrame(columns=["step"])
