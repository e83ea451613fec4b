"""The reference classifier to audit until the VLM lands: per-source logistic regression on downsampled pixels.

For each data source, the train split's images are area-averaged down to ``downsample`` x ``downsample`` pixels
(grayscale, or RGB when the source has colour images), standardised, and fitted with an L2-regularised
scikit-learn ``LogisticRegression``; the model then answers every case of the requested split. It is a real,
simple model: it reaches clearly-above-chance accuracy on the synthetic benchmark and inherits the disparities
its bias knobs create, which is what an audit needs to find. Deterministic (lbfgs, fixed ``seed``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from fairmed_core.data.schema import Dataset, open_image
from fairmed_core.errors import FairMedInputError

__all__ = ["reference_predictions", "image_features", "REFERENCE_MODEL", "REGULARISATION_C"]

REFERENCE_MODEL = "reference-logreg"
REGULARISATION_C = 0.05  # inverse L2 strength; chosen on the synthetic benchmark's val split


def image_features(image: Image.Image, *, downsample: int = 16, rgb: bool = False) -> np.ndarray:
    """Pixel features of one image: area-averaged to ``downsample`` x ``downsample``, scaled to 0..1, flattened."""
    image = image.convert("RGB" if rgb else "L")
    small = image.resize((downsample, downsample), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0


def _load(paths: pd.Series) -> list[Image.Image]:
    return [open_image(path) for path in paths]


def _matrix(images: list[Image.Image], *, downsample: int, rgb: bool) -> np.ndarray:
    return np.stack([image_features(image, downsample=downsample, rgb=rgb) for image in images])


def reference_predictions(
    dataset: Dataset, *, split: str = "test", downsample: int = 16, seed: int = 0
) -> pd.DataFrame:
    """Train the reference model per source on the ``train`` split and predict ``split``.

    Returns one row per predicted case with the columns ``case_id, source, split``, the dataset's attribute
    columns (``sex, age_group``, ``skin_tone`` where present, ...), ``y_true`` and ``y_pred`` (``"yes"``/``"no"``),
    ``score`` (the model's P(yes)) and ``model``. ``y_true`` is the manifest answer (what an auditor has).
    """
    if dataset.positive_label is None or len(dataset.label_values) != 2:
        raise FairMedInputError(
            f"the reference model needs binary answers; dataset {dataset.name!r} has {list(dataset.label_values)}",
            column="answer",
        )
    if downsample < 2:
        raise FairMedInputError("downsample must be at least 2 pixels", hint="the default is 16")
    cases = dataset.cases
    if not (cases["split"] == split).any():
        raise FairMedInputError(
            f"dataset {dataset.name!r} has no {split!r} cases",
            column="split",
            hint=f"splits present: {', '.join(sorted(cases['split'].unique()))}",
        )
    positive = dataset.positive_label
    negative = next(v for v in dataset.label_values if v != positive)
    model_name = f"{REFERENCE_MODEL}-{downsample}px"
    frames = []
    for source in dataset.sources:
        rows = cases[cases["dataset"] == source]
        evaluate = rows[rows["split"] == split]
        if evaluate.empty:
            continue
        train = rows[rows["split"] == "train"]
        y_train = (train["answer"] == positive).to_numpy()
        if len(train) == 0 or y_train.all() or not y_train.any():
            raise FairMedInputError(
                f"source {source!r} needs train cases with both answers to fit the reference model",
                column="split",
                hint="add 'split': 'train' cases of both classes for this source",
            )
        train_images, evaluate_images = _load(train["image_path"]), _load(evaluate["image_path"])
        rgb = any(image.mode not in ("L", "1", "I", "I;16", "F") for image in train_images + evaluate_images)
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=REGULARISATION_C, max_iter=5000, random_state=seed),
        )
        # One BLAS thread: on these small problems more threads are many times slower (and vary run to run).
        with threadpool_limits(limits=1):
            model.fit(_matrix(train_images, downsample=downsample, rgb=rgb), y_train)
            score = model.predict_proba(_matrix(evaluate_images, downsample=downsample, rgb=rgb))[:, 1]
        frame = evaluate[["case_id", "dataset", "split", *dataset.attributes]].rename(columns={"dataset": "source"})
        frame = frame.assign(
            y_true=evaluate["answer"].to_numpy(),
            y_pred=np.where(score >= 0.5, positive, negative),
            score=score,
            model=model_name,
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
