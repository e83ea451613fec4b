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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.fairgrad_images import write_training_history
from fairmed_core.models.prediction_audit import audit_predictions
from fairmed_core.plain import python_scalar
from fairmed_core.runs.eval_store import EvaluationRecord, EvaluationRun, save_evaluation
from fairmed_core.training.fairgrad import FairGradClassifier
from fairmed_core.training.fairgrad_config import FairGradTabularConfig
from fairmed_core.training.tabular import TabularData, read_tabular, tabular_pipeline

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import FairGradTabularJobConfig

__all__ = ["FairGradTabularConfig", "RUN_KIND", "fairgrad_tabular_predictions", "run", "run_fairgrad_tabular"]

RUN_KIND = "fairgrad-tabular"
POSITIVE, NEGATIVE = "yes", "no"


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
    record = EvaluationRecord(
        kind=RUN_KIND,
        model=config.model_name,
        dataset=source,
        table=str(table_path.resolve()),
        split="test",
        n_cases=len(predictions),
        attributes=tuple(attributes),
        positive_label=POSITIVE,
        label=data.label,
        label_positive_value=str(python_scalar(data.positive_label)),
        label_positive_rate=round(data.positive_rate, 4),
        accuracy=float((predictions["y_true"] == predictions["y_pred"]).mean()),
        auroc=float(roc_auc_score(y_true, predictions["score"])),
        format_failure_rate=0.0,
        training=config.to_dict(),
        features={"numeric": list(data.numeric), "categorical": list(data.categorical)},
        **facts,
        notes=tuple(data.notes),
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        wall_time_s=round(elapsed, 2),
        cases_per_s=round(len(predictions) / elapsed, 2) if elapsed > 0 else None,
    )
    run = save_evaluation(out_dir, predictions, record, result)
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
