"""FairGrad on a hospital's own table: read a CSV with :func:`read_tabular`, train ERM, the fixed-weight penalty or
FairGrad on a seeded stratified train split, and store the test predictions as an audited evaluation run.

The run has the layout of the image runs (:mod:`fairmed_core.jobs.fairgrad_images`), so the Fairness audit
page and :mod:`fairmed_core.runs.fairgrad_report` open it the same way: ``predictions.csv`` (``case_id,
source, split``, one column per attribute, ``y_true, y_pred, score, model``), ``audit/``, ``run.json`` (kind
``"fairgrad-tabular"``) and ``training_history.csv``. The table is one source, named after the file's stem.

Answers are written as ``"yes"`` (the label equals the positive value) and ``"no"``, as the image runs write them;
``run.json`` keeps the label column and its positive value. The encoding (``tabular_pipeline``) is fitted on the
training rows only, so nothing about the test rows leaks into training.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.fairgrad_images import write_training_history
from fairmed_core.models.prediction_audit import audit_predictions
from fairmed_core.plain import python_scalar
from fairmed_core.runs.eval_store import EvaluationRun, save_evaluation
from fairmed_core.training.fairgrad import FAIRNESS_OBJECTIVES, METHODS, FairGradClassifier, check_training_numbers
from fairmed_core.training.tabular import TabularData, read_tabular, tabular_pipeline

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import FairGradTabularJobConfig

__all__ = ["FairGradTabularConfig", "RUN_KIND", "fairgrad_tabular_predictions", "run", "run_fairgrad_tabular"]

RUN_KIND = "fairgrad-tabular"
MODELS = ("logistic", "mlp")
POSITIVE, NEGATIVE = "yes", "no"
_RESERVED_COLUMNS = ("case_id", "source", "split", "y_true", "y_pred", "score", "model")


@dataclass(frozen=True)
class FairGradTabularConfig:
    """How a table is read, split and trained on (training defaults: those of the SUPPORT2 benchmark,
    ``benchmarks/fairgrad_support2.py``, where ERM's test AUROC matches scikit-learn's logistic regression)."""

    label: str = field(metadata={"help": "outcome column"})
    positive_label: str | None = field(default=None, metadata={
        "help": "the label's value that means the outcome happened (not needed for a 0/1 or boolean label)"})
    attributes: tuple[str, ...] = field(default=(), metadata={
        "help": "sensitive attribute column with its own fairness objective (repeat)", "flag": "--attribute"})
    objective: str = field(default="equalized_odds", metadata={
        "help": "fairness objective of every attribute (equalized_odds, equal_opportunity or demographic_parity), "
                "or ATTR=OBJECTIVE for one attribute (repeat)", "keyed": "objectives"})
    objectives: Mapping[str, str] = field(default_factory=dict, metadata={
        "help": "ATTR=OBJECTIVE: the objective of one attribute, overriding `objective` (repeat)",
        "flag": "--objective-for"})
    method: str = field(default="fairgrad", metadata={"help": "erm, penalty or fairgrad", "choices": METHODS})
    model: str = field(default="logistic", metadata={"help": "logistic or mlp (one hidden layer)",
                                                     "choices": MODELS})
    hidden: int = field(default=32, metadata={"help": "width of the MLP's hidden layer"})
    epochs: int = field(default=100, metadata={"help": "training epochs"})
    warmup_epochs: int = field(default=0, metadata={"help": "ERM epochs before the fairness objectives start"})
    learning_rate: float = field(default=1e-2, metadata={"help": "Adam learning rate", "flag": "--lr"})
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam weight decay"})
    batch_size: int = field(default=256, metadata={"help": "rows per step"})
    penalty_weight: float = field(default=1.0, metadata={"help": "fairness weight of the penalty method"})
    test_fraction: float = field(default=0.2, metadata={"help": "share of rows held out for the test split"})
    seed: int = field(default=0, metadata={"help": "split, initialisation and shuffling seed"})
    numeric: tuple[str, ...] | None = field(default=None, metadata={"help": "columns to read as numbers",
                                                                     "nargs": "+"})
    categorical: tuple[str, ...] | None = field(default=None, metadata={
        "help": "columns to one-hot encode (text feature columns must be declared)", "nargs": "+"})
    drop: tuple[str, ...] = field(default=(), metadata={
        "help": "columns to ignore (identifiers, dates, free text, other outcomes)", "nargs": "+"})

    def __post_init__(self) -> None:
        for name in ("attributes", "drop", "numeric", "categorical"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "objectives", dict(self.objectives or {}))
        if self.method not in METHODS:
            raise FairMedInputError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.model not in MODELS:
            raise FairMedInputError(f"model must be one of {list(MODELS)}, got {self.model!r}")
        for attribute, objective in (("(every attribute)", self.objective), *self.objectives.items()):
            if objective not in FAIRNESS_OBJECTIVES:
                raise FairMedInputError(f"unknown fairness objective {objective!r} for {attribute}",
                                        hint=f"known: {sorted(FAIRNESS_OBJECTIVES)}")
        unknown = sorted(set(self.objectives) - set(self.attributes))
        if unknown:
            raise FairMedInputError(f"objectives name {unknown}, which are not among the attributes "
                                    f"{list(self.attributes)}", column=unknown[0])
        if not self.attributes:
            raise FairMedInputError("name at least one sensitive attribute column",
                                    hint="the run is audited per group of each attribute")
        for attribute in self.attributes:
            if attribute in _RESERVED_COLUMNS:
                raise FairMedInputError(f"an attribute cannot be called {attribute!r}: the predictions table uses "
                                        "that name", column=attribute, hint="rename the column in the table")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise FairMedInputError(f"test_fraction must be between 0.05 and 0.5, got {self.test_fraction}")
        check_training_numbers(self)

    def objective_of(self, attribute: str) -> str:
        return self.objectives.get(attribute, self.objective)

    @property
    def model_name(self) -> str:
        attributes = "+".join(self.attributes) if self.method != "erm" else "none"
        return f"{self.model}-{self.method}-{attributes}-seed{self.seed}"

    def to_dict(self) -> dict:
        values = asdict(self)
        values["objectives"] = {attribute: self.objective_of(attribute) for attribute in self.attributes}
        return values


def _split(data: TabularData, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Train and test rows, stratified on label x attributes where every such stratum has two rows or more,
    else on the label alone; and a note saying which."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(data.y, minlength=2)
    if counts.min() < 2 or min(counts) * test_fraction < 1:
        raise FairMedInputError(
            f"the label {data.label!r} has {int(counts.min())} rows of its rarer outcome: too few to put some in "
            "both the training and the test split", source=data.source, column=data.label,
            hint="use a larger table, or a larger test fraction")
    rows = np.arange(data.n_rows)
    strata = pd.Series(data.y).astype(str)
    for attribute in data.attributes:
        strata = strata + "|" + data.sensitive[attribute].astype(str)
    joint = strata.value_counts()
    n_test = int(np.ceil(test_fraction * data.n_rows))
    if joint.min() >= 2 and len(joint) <= n_test and len(joint) <= data.n_rows - n_test:
        stratify, note = strata.to_numpy(), f"split stratified on label x {' x '.join(data.attributes)}"
    else:
        stratify, note = data.y, "split stratified on the label (some label x group cells have fewer than 2 rows)"
    train, test = train_test_split(rows, test_size=test_fraction, stratify=stratify, random_state=seed)
    return np.sort(train), np.sort(test), note


def fairgrad_tabular_predictions(
    data: TabularData, config: FairGradTabularConfig, *, source: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, FairGradClassifier, dict]:
    """Split, encode, train and predict the test rows; returns the predictions table, the fitted model and
    facts for ``run.json`` (split sizes, the split note, the encoded width). ``progress(done, total)`` is
    called after every training epoch."""
    train, test, split_note = _split(data, config.test_fraction, config.seed)
    encoder = tabular_pipeline(data).fit(data.X.iloc[train])
    X_train, X_test = encoder.transform(data.X.iloc[train]), encoder.transform(data.X.iloc[test])
    attributes = list(config.attributes) if config.method != "erm" else []
    model = FairGradClassifier(
        model=config.model, hidden=config.hidden, method=config.method if attributes else "erm",
        objectives={attribute: config.objective_of(attribute) for attribute in attributes},
        penalty_weight=config.penalty_weight, epochs=config.epochs, warmup_epochs=config.warmup_epochs,
        batch_size=config.batch_size, lr=config.learning_rate, weight_decay=config.weight_decay,
        random_state=config.seed)
    sensitive = data.sensitive.iloc[train][attributes].reset_index(drop=True) if attributes else None
    on_epoch = None if progress is None else (lambda record: progress(record.epoch + 1, config.epochs))
    model.fit(X_train, data.y[train], sensitive_features=sensitive, epoch_callback=on_epoch)
    score = model.predict_proba(X_test)[:, 1]
    # rows named by their line in the file (the header is line 1), so a reviewer can find the patient
    frame = pd.DataFrame({"case_id": [f"row{position + 2}" for position in test], "source": source,
                          "split": "test"})
    for attribute in data.attributes:
        frame[attribute] = data.sensitive[attribute].iloc[test].astype(str).to_numpy()
    frame["y_true"] = np.where(data.y[test] == 1, POSITIVE, NEGATIVE)
    frame["y_pred"] = np.where(score >= 0.5, POSITIVE, NEGATIVE)
    frame["score"] = score
    frame["model"] = config.model_name
    facts = {"n_train": int(len(train)), "n_test": int(len(test)), "split_note": split_note,
             "encoded_features": int(X_train.shape[1])}
    return frame, model, facts


def run_fairgrad_tabular(table_path: str | Path, out_dir: str | Path, config: FairGradTabularConfig, *,
                         n_boot: int = 1000, progress: Callable[[int, int], None] | None = None) -> EvaluationRun:
    """Read ``table_path``, train on its train split, predict its test split, audit and store the run
    (``predictions.csv``, ``audit/``, ``run.json``, ``training_history.csv``) in the new folder ``out_dir``.
    ``progress(done, total)`` counts training epochs (0 of N once the table is read and split)."""
    from sklearn.metrics import roc_auc_score

    started = time.time()
    table_path = Path(table_path)
    data = read_tabular(table_path, label=config.label, positive_label=config.positive_label,
                        attributes=config.attributes, numeric=config.numeric, categorical=config.categorical,
                        drop=config.drop)
    source = table_path.stem or "table"
    if progress is not None:
        progress(0, config.epochs)
    predictions, model, facts = fairgrad_tabular_predictions(data, config, source=source, progress=progress)
    elapsed = time.time() - started
    attributes = list(data.attributes)
    result = audit_predictions(predictions, attributes, positive_label=POSITIVE, n_boot=n_boot, seed=config.seed)
    y_true = (predictions["y_true"] == POSITIVE).to_numpy().astype(int)
    info = {
        "kind": RUN_KIND,
        "model": config.model_name,
        "model_dir": None,
        "dataset": source,
        "table": str(table_path.resolve()),
        "manifest_root": None,
        "split": "test",
        "n_cases": len(predictions),
        "attributes": attributes,
        "positive_label": POSITIVE,
        "label": data.label,
        "label_positive_value": str(python_scalar(data.positive_label)),
        "label_positive_rate": round(data.positive_rate, 4),
        "accuracy": float((predictions["y_true"] == predictions["y_pred"]).mean()),
        "auroc": float(roc_auc_score(y_true, predictions["score"])),
        "format_failure_rate": 0.0,
        "training": config.to_dict(),
        "features": {"numeric": list(data.numeric), "categorical": list(data.categorical)},
        **facts,
        "notes": list(data.notes),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_time_s": round(elapsed, 2),
        "cases_per_s": round(len(predictions) / elapsed, 2) if elapsed > 0 else None,
    }
    run = save_evaluation(out_dir, predictions, info, result)
    write_training_history(run.path, {source: model})
    return run


def run(config: FairGradTabularJobConfig, out_dir: str | Path,
        progress: Callable[[int, int, str], None] | None = None) -> EvaluationRun:
    """``fairmed train fairgrad-tabular``: :func:`run_fairgrad_tabular` on the table ``config`` names."""
    if not Path(config.table).is_file():
        raise FairMedInputError("the table does not exist or is not a file", source=config.table)
    return run_fairgrad_tabular(config.table, out_dir, config.fairgrad, n_boot=config.n_boot,
                                progress=None if progress is None else lambda done, total: progress(done, total,
                                                                                                      "epochs"))
