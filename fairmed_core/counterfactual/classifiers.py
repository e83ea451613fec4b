"""Small binary image classifiers that FairMed reviews like any model: trained, saved, loaded and asked for answers.

One job: give the counterfactual-invariance tests (``invariance.py``) image models whose reliance on a sensitive
attribute is known, so the tests can be checked against the truth on the synthetic benchmark.

* :func:`train_image_classifier` fits a ``SmallCNN`` (``fairmed_core.training.fairgrad``, ~3k parameters) to
  images of one source and their answers; :class:`ImageClassifier` returns probabilities
  (:meth:`~ImageClassifier.predict_proba`) and the dataset's answer strings (:meth:`~ImageClassifier.answers`).
* :meth:`ImageClassifier.save` writes ``model.safetensors`` and ``classifier_config.json``;
  :func:`load_image_classifier` reads them back (safetensors only: pickled weights are refused unread).
* :class:`AttributeBlindClassifier` runs a classifier on each benchmark case re-drawn with the attribute fixed
  (``render(case, sex="F")``). Its answer cannot depend on the attribute by construction, so its counterfactual
  accuracy is exactly 1: the invariant reference of the benchmark. It needs the latent patient, so it exists on
  the synthetic benchmark only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fairmed_core.data.schema import NO, YES
from fairmed_core.data.synth import RENDER_KEYWORDS, SynthCase, render_many
from fairmed_core.errors import FairMedInputError
from fairmed_core.folder_json import read_folder_json
from fairmed_core.settings import config_from_dict
from fairmed_core.training.fairgrad import SmallCNN

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "AttributeBlindClassifier",
    "ImageClassifier",
    "ImageClassifierConfig",
    "load_image_classifier",
    "train_image_classifier",
]

FORMAT = "fairmed-image-classifier"
CONFIG_FILE = "classifier_config.json"
WEIGHTS_FILE = "model.safetensors"
KINDS = ("small_cnn",)
_MODES = {"L": 1, "RGB": 3}
# Pickle-based weight files: torch.load / pickle on them can run arbitrary code, so they are refused unread.
_PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_RENDER_KEYWORD = {**RENDER_KEYWORDS, "age": "age"}  # "age" too: render's own name


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class ImageClassifierConfig:
    """What a saved classifier is; the field help strings are its documentation (``classifier_config.json``)."""

    source: str = _help("the data source (manifest ``dataset``) the classifier was trained on, e.g. synth_derm")
    image_mode: str = _help("PIL mode of its input images: 'L' (grayscale) or 'RGB'")
    image_size: int = _help("side of its square input images in pixels")
    labels: tuple[str, str] = _help("the answer strings (positive, negative), as the dataset writes them",
                                    default=(YES, NO))
    threshold: float = _help("the answer is labels[0] when the predicted probability is at least this", default=0.5)
    kind: str = _help(f"network architecture, one of {KINDS}", default="small_cnn")
    width: int = _help("channels of the first convolution (the second has twice as many)", default=8)
    channel_mean: tuple[float, ...] = _help("per-channel mean of the training pixels (0..1), subtracted on input",
                                            default=())
    channel_std: tuple[float, ...] = _help("per-channel standard deviation of the training pixels, divided out",
                                           default=())

    def __post_init__(self) -> None:
        for name in ("labels", "channel_mean", "channel_std"):  # tuples even when read from JSON lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.image_mode not in _MODES:
            problems.append(f"image_mode must be 'L' or 'RGB', got {self.image_mode!r}")
        if not isinstance(self.image_size, int) or self.image_size < 8:
            problems.append(f"image_size must be an integer of at least 8, got {self.image_size!r}")
        if len(self.labels) != 2 or len(set(self.labels)) != 2 or not all(isinstance(v, str) and v
                                                                          for v in self.labels):
            problems.append(f"labels must be two distinct answer strings (positive, negative), got {self.labels!r}")
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if not isinstance(self.width, int) or self.width < 1:
            problems.append(f"width must be a positive integer, got {self.width!r}")
        channels = _MODES.get(self.image_mode, 0)
        if channels and (len(self.channel_mean) != channels or len(self.channel_std) != channels
                         or any(not s > 0 for s in self.channel_std)):
            problems.append(f"channel_mean and channel_std need {channels} values (std > 0) for mode "
                            f"{self.image_mode!r}, got {self.channel_mean!r} and {self.channel_std!r}")
        if problems:
            raise FairMedInputError("; ".join(problems), hint="see ImageClassifierConfig field help")

    @property
    def channels(self) -> int:
        return _MODES[self.image_mode]

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, *, source_file: str | None = None) -> ImageClassifierConfig:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FairMedInputError(f"{CONFIG_FILE} is not an image classifier's", source=source_file,
                                    hint=f"expected \"format\": \"{FORMAT}\"")
        values = {k: v for k, v in data.items() if k != "format"}
        # A saved classifier names every setting: a missing one means the file is not what it claims to be.
        missing = sorted(f.name for f in fields(cls) if f.name not in values)
        if missing:
            raise FairMedInputError(f"{CONFIG_FILE} lacks {missing}", source=source_file)
        try:
            return config_from_dict(cls, values, what="classifier")
        except FairMedInputError as error:
            raise FairMedInputError(f"{CONFIG_FILE}: {error.message}", source=source_file, column=error.column,
                                    hint=error.hint) from None


def _as_array(image, row: int) -> np.ndarray:
    """A uint8 array HxW or HxWxC from a PIL image (or an array, e.g. straight from ``render``)."""
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim in (2, 3):
        return image
    raise FairMedInputError(f"expected a PIL image (or a uint8 image array), got {type(image).__name__}",
                            column="image", row=row)


def _mode_of(array: np.ndarray) -> str | None:
    if array.ndim == 2:
        return "L"
    return "RGB" if array.shape[2] == 3 else None


def _pixels(images: Sequence, *, mode: str | None, size: int | None) -> np.ndarray:
    """Stack images into a float32 (n, channels, size, size) array in 0..1, refusing other modes and sizes."""
    if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
        raise FairMedInputError("expected a list of images, got a single image", hint="wrap it in a list")
    if len(images) == 0:
        raise FairMedInputError("no images given")
    arrays = []
    for row, image in enumerate(images):
        array = _as_array(image, row)
        found = _mode_of(array)
        if mode is None:
            mode = found
        if found is None or found != mode:
            raise FairMedInputError(f"image mode is {found or array.shape}, expected {mode!r}", column="image",
                                    row=row, hint="convert the images to the classifier's mode first")
        if size is None:
            size = array.shape[0]
        if array.shape[:2] != (size, size):
            raise FairMedInputError(f"image is {array.shape[1]}x{array.shape[0]}, expected {size}x{size}",
                                    column="image", row=row)
        arrays.append(array)
    stacked = np.stack(arrays).astype(np.float32)
    stacked *= np.float32(1.0 / 255.0)
    return stacked[:, None] if stacked.ndim == 3 else np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


class ImageClassifier:
    """A trained binary image classifier: ``predict_proba`` gives P(positive), ``answers`` the answer strings."""

    def __init__(self, config: ImageClassifierConfig, network: SmallCNN) -> None:
        self.config = config
        self.network = network.eval()

    def _inputs(self, images: Sequence) -> torch.Tensor:
        pixels = _pixels(images, mode=self.config.image_mode, size=self.config.image_size)
        mean = np.asarray(self.config.channel_mean, dtype=np.float32)[None, :, None, None]
        std = np.asarray(self.config.channel_std, dtype=np.float32)[None, :, None, None]
        return torch.from_numpy((pixels - mean) / std)

    def predict_proba(self, images: Sequence[Image.Image], *, batch_size: int = 256) -> np.ndarray:
        """P(positive answer) for each image, float64 array of shape (n,)."""
        inputs = self._inputs(images)
        with torch.no_grad():
            logits = [self.network(inputs[i:i + batch_size]).squeeze(1) for i in range(0, len(inputs), batch_size)]
        return torch.sigmoid(torch.cat(logits)).double().numpy()

    def answers(self, images: Sequence[Image.Image]) -> list[str]:
        """The dataset's answer string for each image: labels[0] when P(positive) >= threshold, else labels[1]."""
        return self.answers_from_proba(self.predict_proba(images))

    def answers_from_proba(self, probabilities: np.ndarray) -> list[str]:
        positive, negative = self.config.labels
        return [positive if p >= self.config.threshold else negative for p in np.asarray(probabilities)]

    def save(self, folder: str | Path) -> Path:
        """Write ``model.safetensors`` (the weights) and ``classifier_config.json``; return the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().contiguous() for name, tensor in self.network.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        (folder / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        return folder


def _labels_as_targets(labels: Sequence, answers: tuple[str, str]) -> np.ndarray:
    positive, negative = answers
    targets = np.empty(len(labels), dtype=np.float32)
    for row, label in enumerate(labels):
        if isinstance(label, (bool, np.bool_)) or (isinstance(label, (int, np.integer)) and label in (0, 1)):
            targets[row] = float(label)
        elif label == positive or label == negative:
            targets[row] = float(label == positive)
        else:
            raise FairMedInputError(f"label {label!r} is neither {positive!r} nor {negative!r} (nor 0/1)",
                                    column="label", row=row, hint="pass answers=(positive, negative) to match")
    return targets


def train_image_classifier(
    images: Sequence[Image.Image],
    labels: Sequence,
    *,
    source: str,
    seed: int,
    epochs: int = 15,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.0,
    width: int = 8,
    answers: tuple[str, str] = (YES, NO),
    threshold: float = 0.5,
) -> ImageClassifier:
    """Fit a ``SmallCNN`` to ``images`` (PIL images or uint8 arrays, all of one mode and size) and ``labels``
    (the dataset's answer strings ``answers = (positive, negative)``, or booleans / 0-1) by binary cross-entropy
    with Adam, mini-batches shuffled by ``seed``. Plain empirical risk: whatever predicts the labels in the
    training set, a sensitive attribute included, is learnt. Deterministic for a given seed on one thread."""
    if len(images) != len(labels):
        raise FairMedInputError(f"{len(images)} images but {len(labels)} labels",
                                hint="pass one label per image, in the same order")
    if epochs < 1 or batch_size < 1:
        raise FairMedInputError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}")
    targets = _labels_as_targets(labels, tuple(answers))
    if np.all(targets == targets[0]):
        raise FairMedInputError("every training label is the same: nothing to learn", column="label")
    pixels = _pixels(images, mode=None, size=None)
    mean = pixels.mean(axis=(0, 2, 3))
    std = np.maximum(pixels.std(axis=(0, 2, 3)), 1e-3)
    config = ImageClassifierConfig(source=source, image_mode="L" if pixels.shape[1] == 1 else "RGB",
                                   image_size=int(pixels.shape[-1]), labels=tuple(answers), threshold=threshold,
                                   width=width, channel_mean=tuple(float(m) for m in mean),
                                   channel_std=tuple(float(s) for s in std))
    inputs = torch.from_numpy((pixels - mean[None, :, None, None]) / std[None, :, None, None])
    target = torch.from_numpy(targets)
    torch.manual_seed(seed)
    network = SmallCNN((config.channels, config.image_size, config.image_size), width=width)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(network(inputs[batch]).squeeze(1), target[batch])
            loss.backward()
            optimizer.step()
    return ImageClassifier(config, network)


def load_image_classifier(folder: str | Path) -> ImageClassifier:
    """Load a folder written by :meth:`ImageClassifier.save`. Weights are read from safetensors only; a folder
    with pickled weights is refused unread. Raises ``FairMedInputError`` naming the file for a missing folder,
    config or weights, a garbled file, or weights that do not fit the config."""
    folder = Path(folder).expanduser()
    config_path, data = read_folder_json(folder, CONFIG_FILE, what="classifier",
                                         folder_hint="give a folder written by ImageClassifier.save",
                                         written_by="ImageClassifier.save")
    config = ImageClassifierConfig.from_dict(data, source_file=str(config_path))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLED_SUFFIXES)
        if pickled:
            raise FairMedInputError(
                f"the classifier's weights are pickled ({', '.join(pickled)}) and are refused unread: loading a "
                "pickle can run arbitrary code", source=str(folder),
                hint=f"save them as safetensors ({WEIGHTS_FILE}), e.g. with ImageClassifier.save")
        raise FairMedInputError(f"missing {WEIGHTS_FILE}", source=str(folder),
                                hint="is this a folder written by ImageClassifier.save?")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise FairMedInputError(f"unreadable {WEIGHTS_FILE}: {error}", source=str(weights)) from None
    network = SmallCNN((config.channels, config.image_size, config.image_size), width=config.width)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FairMedInputError(f"the weights in {WEIGHTS_FILE} do not fit {CONFIG_FILE}: {str(error)[:300]}",
                                source=str(weights)) from None
    return ImageClassifier(config, network)


class AttributeBlindClassifier:
    """A classifier that sees every benchmark case re-drawn with ``attribute`` fixed to ``value``.

    The input is ``render(case, <attribute>=value)``: the case's latent patient with the attribute's appearance
    replaced by that of ``value``, so a case and its counterfactual on the attribute give the same image and
    the same answer. Its counterfactual accuracy on that attribute is 1 exactly, whatever ``classifier`` learnt
    (train it on images drawn the same way for it to be any good). Benchmark cases only: it needs the latent
    patient (``fairmed_core.data.synth.case_from_record``).
    """

    def __init__(self, classifier: ImageClassifier, *, attribute: str = "sex", value: str = "F") -> None:
        if attribute not in _RENDER_KEYWORD:
            raise FairMedInputError(f"unknown attribute {attribute!r}", hint="one of sex, age_group, skin_tone")
        self.classifier = classifier
        self.attribute = attribute
        self.value = value

    def blind_images(self, cases: Sequence[SynthCase]) -> list[np.ndarray]:
        """The images the classifier sees: each case drawn with the attribute fixed."""
        if any(not isinstance(case, SynthCase) for case in cases):
            raise FairMedInputError("an attribute-blind classifier needs synthetic benchmark cases (SynthCase)",
                                    hint="rebuild them from the manifest with case_from_record")
        return render_many(list(cases), **{_RENDER_KEYWORD[self.attribute]: self.value})

    def predict_proba(self, cases: Sequence[SynthCase]) -> np.ndarray:
        return self.classifier.predict_proba(self.blind_images(cases))

    def answers(self, cases: Sequence[SynthCase]) -> list[str]:
        return self.classifier.answers(self.blind_images(cases))
