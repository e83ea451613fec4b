"""How unlike the model's training images an image is: an out-of-distribution score for single-case answers.

One job: say whether an image lies outside what the model was trained on, so a page can say "its answer means
nothing" instead of showing a confident answer about a flat grey square. Two views of the image are compared with
the training images of the same model (a sample of the benchmark's train split, equal shares per source):

- its **vision-tower embedding**: the model's own SigLIP patch embeddings (before the projector), mean-pooled;
- its **image statistics**: intensity quantiles per channel, contrast, edge and fine-texture energy, colourfulness.

In each view the distance is the mean Euclidean distance to the ``k`` nearest training images after
standardising each dimension on the training images: k-nearest neighbours rather than a Mahalanobis distance,
because the training images form one cluster per source (chest X-ray, dermoscopy, mammography), which one
Gaussian would blur. The second view exists because the first one is blind to some images that are plainly
out of scope: measured on the shipped tiny FairMedGemma, a flat grey image lies at 0.6 times the calibrated
threshold of the vision-tower distance (random noise at 1.3 times), but at 9 times that of the image statistics.

Each view's threshold is calibrated on held-out images of the same dataset (the val split): the
``1 - (1 - quantile) / 2`` quantile of the held-out distances, so that with both views about ``1 - quantile``
(1% by default) of ordinary held-out images are flagged. A flagged image is unlike anything the model was trained
on and its answer says nothing; an unflagged one is not thereby in scope.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairmed_core.data.schema import Dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.loading import LoadedModel
from fairmed_core.models.prompting import to_model_image

__all__ = ["ImageNovelty", "NoveltyReference", "fit_novelty_reference", "image_embeddings", "image_novelty",
           "image_statistics"]

VISION_VIEW = "vision-tower embedding"
STATISTICS_VIEW = "image statistics"
_STATISTICS_SIZE = 64  # images are compared at this size, whatever their own


def image_embeddings(loaded: LoadedModel, images: Sequence[Image.Image], *, batch_size: int = 32) -> np.ndarray:
    """One vector per image: the model's vision-tower patch embeddings (before the projector), mean-pooled;
    images are prepared exactly as for generation (``to_model_image``, the model's image processor)."""
    image_processor = loaded.processor.image_processor
    vectors = []
    for start in range(0, len(images), batch_size):
        chunk = [to_model_image(image) for image in images[start:start + batch_size]]
        pixels = image_processor(images=chunk, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            features = loaded.model.get_image_features(pixel_values=pixels.to(loaded.device, loaded.dtype))
        patches = features.last_hidden_state if hasattr(features, "last_hidden_state") else features
        vectors.append(patches.float().mean(dim=1).cpu().numpy())
    return np.concatenate(vectors).astype(np.float64) if vectors else np.zeros((0, 0))


def image_statistics(images: Sequence[Image.Image]) -> np.ndarray:
    """One vector per image: 5 intensity quantiles per RGB channel, contrast (grey-level standard deviation),
    mean horizontal and vertical edge strength, fine-texture (Laplacian) energy and colourfulness, on 0-1 pixels
    at 64x64."""
    rows = []
    for image in images:
        pixels = np.asarray(to_model_image(image).convert("RGB").resize((_STATISTICS_SIZE, _STATISTICS_SIZE),
                                                                        Image.BILINEAR), dtype=np.float64) / 255
        grey = pixels.mean(axis=2)
        laplacian = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
        quantiles = np.quantile(pixels.reshape(-1, 3), [0.05, 0.25, 0.5, 0.75, 0.95], axis=0).ravel()
        rows.append(np.concatenate([quantiles, [grey.std(), np.abs(np.diff(grey, axis=1)).mean(),
                                                np.abs(np.diff(grey, axis=0)).mean(), np.abs(laplacian).mean(),
                                                (pixels.max(axis=2) - pixels.min(axis=2)).mean()]]))
    return np.array(rows)


@dataclass(frozen=True, eq=False)
class _NearestNeighbours:
    """One view: standardised training vectors and the threshold calibrated on held-out ones."""

    name: str
    reference: np.ndarray  # (n_reference, d), standardised
    mean: np.ndarray
    scale: np.ndarray
    k: int
    threshold: float
    held_out: np.ndarray  # sorted held-out distances

    @classmethod
    def fit(cls, name: str, train: np.ndarray, held_out: np.ndarray, k: int, quantile: float) -> _NearestNeighbours:
        mean, scale = train.mean(axis=0), train.std(axis=0)
        scale = np.where(scale > 1e-8, scale, 1.0)  # a constant dimension carries no distance
        view = cls(name, (train - mean) / scale, mean, scale, k, float("nan"), np.zeros(0))
        distances = np.sort(view.distances(held_out)[0])
        return cls(name, view.reference, mean, scale, k, float(np.quantile(distances, quantile)), distances)

    def distances(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean distance to the ``k`` nearest reference vectors, and the index of the nearest one."""
        standardised = (np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale
        squared = ((standardised[:, None, :] - self.reference[None, :, :]) ** 2).sum(axis=2)
        nearest = np.argsort(squared, axis=1)[:, : self.k]
        return np.sqrt(np.take_along_axis(squared, nearest, axis=1)).mean(axis=1), nearest[:, 0]


@dataclass(frozen=True, eq=False)
class NoveltyReference:
    """Both views fitted on one model and one dataset's training images, calibrated on its held-out ones."""

    vision: _NearestNeighbours
    statistics: _NearestNeighbours
    sources: tuple[str, ...]  # the source of each reference image
    quantile: float  # the overall share of held-out images allowed above a threshold is 1 - quantile
    dataset: str
    reference_split: str
    held_out_split: str
    n_held_out: int

    @property
    def n_reference(self) -> int:
        return len(self.sources)


@dataclass(frozen=True)
class ImageNovelty:
    """The out-of-distribution score of one image: in each view, its distance as a multiple of the calibrated
    threshold (above 1: flagged), and the share of held-out benchmark images that lie closer (0-1)."""

    vision_ratio: float
    statistics_ratio: float
    vision_held_out_below: float
    statistics_held_out_below: float
    nearest_source: str  # the source of the training image closest in the vision-tower view

    @property
    def unusual(self) -> bool:
        """Unlike the training images in either view: the model's answer about it means nothing."""
        return self.vision_ratio > 1 or self.statistics_ratio > 1

    @property
    def reasons(self) -> tuple[str, ...]:
        """Which views flag the image, in words."""
        found = []
        if self.vision_ratio > 1:
            found.append(f"to the model's own vision tower it is {self.vision_ratio:.1f} times farther from the "
                         "training images than the calibrated threshold")
        if self.statistics_ratio > 1:
            found.append(f"its intensity, contrast and texture are {self.statistics_ratio:.1f} times farther from "
                         "those of the training images than the calibrated threshold")
        return tuple(found)


def _sample(cases: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    rows = cases[cases["split"].astype(str) == split]
    if rows.empty:
        return rows
    # An equal share per source, so a small source is represented in the reference.
    share = max(1, n // rows["dataset"].nunique())
    return pd.concat([frame.sample(n=min(len(frame), share), random_state=seed)
                      for _, frame in rows.groupby("dataset")])


def fit_novelty_reference(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    reference_split: str = "train",
    held_out_split: str = "val",
    n_reference: int = 600,
    n_held_out: int = 300,
    k: int = 5,
    quantile: float = 0.99,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> NoveltyReference:
    """Embed ``n_reference`` images of the training split and calibrate both views' thresholds on
    ``n_held_out`` images of the held-out split (equal shares per source in both). About a dozen seconds on a
    CPU for the tiny model; compute it once per model and keep it (the page caches it in memory)."""
    if not 0 < quantile < 1:
        raise FairMedInputError(f"the quantile must be in (0, 1), got {quantile}", column="quantile")
    splits = set(dataset.cases["split"].astype(str))
    for split in (reference_split, held_out_split):
        if split not in splits:
            raise FairMedInputError(f"dataset {dataset.name!r} has no {split!r} split for the out-of-distribution "
                                    "check", column="split", hint=f"it has {sorted(splits)}")
    reference = _sample(dataset.cases, reference_split, n_reference, seed)
    held_out = _sample(dataset.cases, held_out_split, n_held_out, seed)
    if len(reference) <= k or len(held_out) < 20:
        raise FairMedInputError(f"too few images to calibrate the out-of-distribution check ({len(reference)} "
                                f"reference, {len(held_out)} held out)", hint=f"it needs more than {k} and 20")
    ids = [*reference["case_id"].astype(str), *held_out["case_id"].astype(str)]
    images = []
    for done, case_id in enumerate(ids, 1):
        images.append(dataset.load_image(case_id))
        if progress is not None and done % 50 == 0:
            progress(done, len(ids))
    n = len(reference)
    per_view = 1 - (1 - quantile) / 2  # two views: each may flag half the allowed share
    embeddings, statistics = image_embeddings(loaded, images), image_statistics(images)
    vision = _NearestNeighbours.fit(VISION_VIEW, embeddings[:n], embeddings[n:], k, per_view)
    stats = _NearestNeighbours.fit(STATISTICS_VIEW, statistics[:n], statistics[n:], k, per_view)
    if progress is not None:
        progress(len(ids), len(ids))
    return NoveltyReference(vision, stats, tuple(reference["dataset"].astype(str)), quantile, dataset.name,
                            reference_split, held_out_split, len(held_out))


def image_novelty(loaded: LoadedModel, reference: NoveltyReference,
                  images: Sequence[Image.Image]) -> list[ImageNovelty]:
    """The out-of-distribution score of each image against ``reference`` (fitted with the same model)."""
    vision, nearest = reference.vision.distances(image_embeddings(loaded, images))
    statistics, _ = reference.statistics.distances(image_statistics(images))

    def below(view: _NearestNeighbours, distance: float) -> float:
        return float(np.searchsorted(view.held_out, distance) / len(view.held_out))

    return [ImageNovelty(float(v / reference.vision.threshold), float(s / reference.statistics.threshold),
                         below(reference.vision, v), below(reference.statistics, s), reference.sources[i])
            for v, s, i in zip(vision, statistics, nearest)]
