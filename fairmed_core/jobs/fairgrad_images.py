"""FairGrad on the image benchmark: one small CNN per data source, trained with ERM, the fixed-weight penalty or
FairGrad, whose test predictions are stored as an evaluation run the audit page opens like any model's.

Each source gets its own model (its images differ in channels and anatomy, as the reference classifier does);
pixels are scaled to 0..1 and flattened, and ``FairGradClassifier(model="cnn")`` standardises them per pixel.
Missing demographics are the group ``UNK`` of their attribute: they count in the fairness loss as one more
group, as the audit reports them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fairmed_core.data import Dataset, read_manifest
from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_text
from fairmed_core.models.prediction_audit import audit_predictions
from fairmed_core.runs.eval_store import EvaluationRecord, EvaluationRun, save_evaluation
from fairmed_core.training.fairgrad import FairGradClassifier
from fairmed_core.training.fairgrad_config import FairGradImageConfig

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import FairGradImagesJobConfig

__all__ = ["FairGradImageConfig", "fairgrad_image_predictions", "image_matrix", "run", "run_fairgrad_images"]



def image_matrix(dataset: Dataset, case_ids: Sequence[str]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The cases' images as rows of 0..1 pixels, and their ``(channels, height, width)``; every image of one
    call must share a size and mode."""
    images = [dataset.load_image(case_id) for case_id in case_ids]
    modes = {image.mode for image in images}
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        raise FairMedInputError(f"images of one source differ in size: {sorted(sizes)[:4]}",
                                hint="resize the images of a source to one size first")
    rgb = bool(modes - {"L", "1", "I;16", "I", "F"})
    arrays = [np.asarray(image.convert("RGB" if rgb else "L"), dtype=np.float64) / 255.0 for image in images]
    width, height = images[0].size
    shape = (3, height, width) if rgb else (1, height, width)
    # channels first, as the CNN reshapes each row to (channels, height, width)
    rows = [array.transpose(2, 0, 1).reshape(-1) if rgb else array.reshape(-1) for array in arrays]
    return np.stack(rows), shape


def _attributes_of(dataset: Dataset, rows: pd.DataFrame, wanted: Sequence[str]) -> list[str]:
    """The wanted attributes this source records (skin tone exists for dermoscopy only)."""
    present = []
    for attribute in wanted:
        if attribute not in dataset.attributes:
            raise FairMedInputError(f"dataset {dataset.name!r} has no attribute {attribute!r}", column=attribute,
                                    hint=f"attributes: {list(dataset.attributes)}")
        if (rows[attribute].astype(str) != UNKNOWN).any():
            present.append(attribute)
    return present


def _epoch_progress(progress: Callable[[int, int], None] | None, done_before: int, total: int):
    """An ``epoch_callback`` reporting epochs over all sources to ``progress`` (None without one)."""
    if progress is None:
        return None
    return lambda record: progress(done_before + record.epoch + 1, total)


def fairgrad_image_predictions(
    dataset: Dataset, config: FairGradImageConfig, *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, FairGradClassifier]]:
    """Train one CNN per source on ``train`` and predict ``config.split``; returns the predictions table
    (``case_id, source, split``, attributes, ``y_true, y_pred, score, model``) and the fitted models."""
    positive = dataset.positive_label
    if positive is None or len(dataset.label_values) != 2:
        raise FairMedInputError(f"FairGrad needs binary answers; dataset {dataset.name!r} has "
                                f"{list(dataset.label_values)}", column="answer")
    negative = next(value for value in dataset.label_values if value != positive)
    cases = dataset.cases
    frames, models = [], {}
    sources = [s for s in dataset.sources if ((cases["dataset"] == s) & (cases["split"] == config.split)).any()]
    if not sources:
        raise FairMedInputError(f"dataset {dataset.name!r} has no {config.split!r} cases", column="split")
    for index, source in enumerate(sources):
        rows = cases[cases["dataset"] == source]
        train, evaluate = rows[rows["split"] == "train"], rows[rows["split"] == config.split]
        y_train = (train["answer"] == positive).to_numpy().astype(int)
        if len(train) == 0 or y_train.min() == y_train.max():
            raise FairMedInputError(f"source {source!r} needs train cases with both answers", column="split")
        attributes = _attributes_of(dataset, train, config.attributes) if config.method != "erm" else []
        X_train, shape = image_matrix(dataset, list(train["case_id"]))
        X_eval, eval_shape = image_matrix(dataset, list(evaluate["case_id"]))
        if eval_shape != shape:
            raise FairMedInputError(f"source {source!r}: {config.split} images are {eval_shape}, train {shape}")
        model = FairGradClassifier(
            model="cnn", image_shape=shape, hidden=config.width, method=config.method if attributes else "erm",
            objectives={attribute: config.objective for attribute in attributes},
            penalty_weight=config.penalty_weight, epochs=config.epochs, warmup_epochs=config.warmup_epochs,
            batch_size=config.batch_size, lr=config.learning_rate, random_state=config.seed)
        sensitive = train[attributes].astype(str) if attributes else None
        model.fit(X_train, y_train, sensitive_features=sensitive,
                  epoch_callback=_epoch_progress(progress, index * config.epochs, len(sources) * config.epochs))
        score = model.predict_proba(X_eval)[:, 1]
        frame = evaluate[["case_id", "dataset", "split", *dataset.attributes]].rename(columns={"dataset": "source"})
        frames.append(frame.assign(y_true=evaluate["answer"].astype(str).to_numpy(),
                                   y_pred=np.where(score >= 0.5, positive, negative), score=score,
                                   model=config.model_name))
        models[source] = model
    return pd.concat(frames, ignore_index=True), models


def run_fairgrad_images(dataset: Dataset, out_dir: str | Path, config: FairGradImageConfig, *, n_boot: int = 1000,
                        progress: Callable[[int, int], None] | None = None) -> EvaluationRun:
    """Train, predict, audit and store the run (``predictions.csv``, ``audit/``, ``run.json``, and
    ``training_history.csv`` with the per-epoch losses and gradient conflicts of every source's model)."""
    started = time.time()
    predictions, models = fairgrad_image_predictions(dataset, config, progress=progress)
    elapsed = time.time() - started
    attributes = [a for a in dataset.attributes if a in predictions.columns]
    result = audit_predictions(predictions, attributes, positive_label=dataset.positive_label, n_boot=n_boot,
                               seed=config.seed)
    record = EvaluationRecord(
        kind="fairgrad-images",
        model=config.model_name,
        dataset=dataset.name,
        manifest_root=str(dataset.root),
        split=config.split,
        n_cases=len(predictions),
        attributes=tuple(attributes),
        positive_label=dataset.positive_label,
        accuracy=float((predictions["y_true"] == predictions["y_pred"]).mean()),
        format_failure_rate=0.0,
        training=config.to_dict(),
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        wall_time_s=round(elapsed, 2),
        cases_per_s=round(len(predictions) / elapsed, 2) if elapsed > 0 else None,
    )
    run = save_evaluation(out_dir, predictions, record, result)
    write_training_history(run.path, models)
    return run


def write_training_history(run_dir: Path, models: dict) -> Path:
    """``training_history.csv`` of a FairGrad run: per source (the keys of ``models``) and epoch, the task and
    fairness losses and the gradient conflicts (what the FairGrad page's conflict chart reads)."""
    history = [{"source": source, "epoch": record.epoch, "task_loss": record.task_loss,
                **{f"fairness_{attribute}": value for attribute, value in record.fairness_losses},
                "conflicting_pairs": record.conflicting_pairs, "mean_conflict_cosine": record.mean_conflict_cosine}
               for source, model in models.items() for record in model.history_]
    return atomic_write_text(Path(run_dir) / "training_history.csv", pd.DataFrame(history).to_csv(index=False))


def run(config: FairGradImagesJobConfig, out_dir: str | Path,
        progress: Callable[[int, int, str], None] | None = None) -> EvaluationRun:
    """``fairmed train fairgrad``: :func:`run_fairgrad_images` on the manifest ``config`` names."""
    return run_fairgrad_images(read_manifest(config.data), out_dir, config.fairgrad, n_boot=config.n_boot,
                               progress=None if progress is None
                               else lambda done, total: progress(done, total, "epochs (all sources)"))
