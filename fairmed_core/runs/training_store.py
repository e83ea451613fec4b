"""Training runs on disk (``runs/<id>/`` with config.json and metrics.jsonl): listing them and reading their
curves, without importing torch or TRL (the dashboard lists runs often)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairmed_core.data.sampling import SampleComposition
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import read_json_object
from fairmed_core.runs.workspace import Workspace, shipped_model_dirs
from fairmed_core.settings import JsonRecord

__all__ = ["METRICS_FILE", "FINISHED_FILE", "TrainingResult", "TrainingRun", "eval_frame", "held_out_sources",
           "list_training_runs", "mean_over_sources", "read_metrics", "shipped_training_runs", "summary_frame",
           "train_frame"]
_AGGREGATE_SOURCES = ("ALL", "mean over sources")  # the pooled and the averaged rows, not a source

METRICS_FILE = "metrics.jsonl"
FINISHED_FILE = "training.json"
CONFIG_FILE = "config.json"
KIND = "grpo-training"
SHIPPED_SUFFIX = " (shipped)"  # a workspace run's name cannot hold a space, so a shipped name never clashes


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
    """A training run folder: its settings, and how it ended (None while it runs or after it was killed);
    ``shipped`` for the training record a shipped model carries (``assets/models/<model>/training/``)."""

    name: str
    path: Path
    config: dict
    finished: TrainingResult | None
    shipped: bool = False

    @property
    def method(self) -> str:
        return str(self.config.get("job", {}).get("method", "?"))

    def records(self) -> list[dict]:
        return read_metrics(self.path)

    @property
    def held_out_sample(self) -> SampleComposition | None:
        """The cases its held-out evaluations answered (config.json's ``"held_out_sample"``); None for a run
        from before it was recorded."""
        data = self.config.get("held_out_sample")
        return None if data is None else SampleComposition.from_json(data, source=str(self.path / CONFIG_FILE))

    def held_out_description(self) -> str:
        """One line on the cases behind its held-out curves; an older run's is said to be unrecorded, with what
        that version of FairMed did (the first N cases of the split), not guessed."""
        sample = self.held_out_sample
        if sample is not None:
            return sample.describe()
        job = self.config.get("job", {})
        limit, split = job.get("eval_limit"), job.get("eval_split", "val")
        cases = f"first {limit} cases" if limit else "every case"
        return f"held-out sample composition not recorded (older run: {cases} of the {split} split)"

    def writing(self, *, within_s: float, now: float | None = None) -> bool:
        """Whether the run is unfinished and its metrics were written in the last ``within_s`` seconds: a run
        going on now, whether the page or a shell started it (a killed run stops counting after that)."""
        if self.finished is not None or self.shipped:
            return False
        try:
            written = (self.path / METRICS_FILE).stat().st_mtime
        except OSError:
            written = (self.path / CONFIG_FILE).stat().st_mtime if (self.path / CONFIG_FILE).exists() else 0.0
        return (time.time() if now is None else now) - written <= within_s


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


def shipped_training_runs() -> list[TrainingRun]:
    """The training records of the shipped models (``assets/models/<model>/training/``), one run each, named
    ``<model> (shipped)``; models without a readable record are left out."""
    runs = []
    for model in shipped_model_dirs():
        folder = model / "training"
        config = read_json_object(folder / CONFIG_FILE)
        if config is None or config.get("kind") != KIND:
            continue
        runs.append(TrainingRun(name=f"{model.name}{SHIPPED_SUFFIX}", path=folder, config=config,
                                finished=_finished(folder), shipped=True))
    return runs


def eval_frame(records: list[dict]) -> pd.DataFrame:
    """The held-out evaluation records as one long table (step, source, attribute, group, metric, n, value)."""
    rows = [{"step": r["step"], **g} for r in records if r.get("kind") == "eval" for g in r.get("groups", [])]
    return pd.DataFrame(rows, columns=["step", "source", "attribute", "group", "metric", "n", "value"])


def summary_frame(records: list[dict]) -> pd.DataFrame:
    """The FairGRPO gap statistics of every held-out evaluation (step, source, attribute, PP, EOD, ...)."""
    rows = [{"step": r["step"], **s} for r in records if r.get("kind") == "eval" for s in r.get("summary", [])]
    return pd.DataFrame(rows)


def held_out_sources(records: list[dict]) -> list[str]:
    """The sources the held-out evaluations answered cases of (what "mean over sources" averages), in order."""
    sources = (s.get("source") for r in records if r.get("kind") == "eval" for s in r.get("summary", []))
    return [s for s in dict.fromkeys(sources) if s not in (None, *_AGGREGATE_SOURCES)]


def mean_over_sources(summary: pd.DataFrame, statistic: str, attribute: str) -> pd.DataFrame:
    """One statistic of one attribute (or "mean over attributes") averaged over the sources at each step (and
    run, when ``summary`` has a ``run`` column), by the audit's rule: a source where it is undefined is left out.
    Columns: [run,] step, value, n_sources (how many sources the mean holds)."""
    keys = ["run", "step"] if "run" in summary.columns else ["step"]
    if summary.empty or statistic not in summary.columns:
        return pd.DataFrame(columns=[*keys, "value", "n_sources"])
    rows = summary[~summary["source"].isin(_AGGREGATE_SOURCES) & (summary["attribute"] == attribute)]
    values = pd.to_numeric(rows[statistic], errors="coerce")
    grouped = values.groupby([rows[k] for k in keys], sort=False)
    out = pd.DataFrame({"value": grouped.mean(), "n_sources": grouped.count()}).reset_index()
    return out.dropna(subset=["value"])


def train_frame(records: list[dict]) -> pd.DataFrame:
    """TRL's per-step logs (reward, reward_std, kl, entropy, FairGRPO weights, ...), one row per step."""
    rows = [r for r in records if r.get("kind") == "train" and "reward" in r]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last") if rows else pd.DataFrame(columns=["step"])
