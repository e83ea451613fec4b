"""The attribute classifier that judges a counterfactual's effectiveness: does the edited image show the target group?

One job: learn, from a dataset's real training images, to tell the groups of one sensitive attribute apart (one
small CNN per data source, because a woman's chest X-ray and a woman's skin patch share nothing), report how well
it does on held-out real images, and save/load it as safetensors.

Effectiveness is only as trustworthy as this classifier: its balanced accuracy on the real validation images is
stored with it and shown next to every effectiveness score. A classifier near chance on a source says the
effectiveness of that source's pairs cannot be judged, and the validity table says so instead of passing them.

Training: cross-entropy weighted by inverse group frequency (the benchmark has 57 male mammograms against 1,753
female ones; unweighted, "always F" is 97% accurate and useless here), Adam, a fixed number of epochs, seeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fairmed_core.data.schema import UNKNOWN, Dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json

__all__ = ["AttributeClassifier", "SourceClassifierInfo", "load_attribute_classifier", "train_attribute_classifier"]

FORMAT = "fairmed-attribute-classifier"
CONFIG_FILE = "classifier_config.json"
WEIGHTS_FILE = "model.safetensors"
_WIDTH = 16


def _network(channels: int, classes: int) -> torch.nn.Module:
    """Three strided convolutions and a linear read-out (~15k parameters at width 16): enough to see breast
    shadows, hair strands or glandular texture at 64x64, small enough to train in seconds per source."""
    w = _WIDTH
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, w, 5, stride=2, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8 * w, classes))


def _batch(images: Sequence[Image.Image], mode: str) -> torch.Tensor:
    arrays = np.stack([np.asarray(image.convert(mode), dtype=np.float32) for image in images])
    if arrays.ndim == 3:
        arrays = arrays[:, None]
    else:
        arrays = arrays.transpose(0, 3, 1, 2)
    return torch.from_numpy(arrays / 127.5 - 1.0)


@dataclass(frozen=True)
class SourceClassifierInfo:
    """One source's classifier: its image mode, the training images per group, and its held-out quality."""

    source: str
    mode: str  # "L" or "RGB"
    train_counts: Mapping[str, int]
    val_balanced_accuracy: float | None  # None when the validation split lacks a group
    val_n: int

    @property
    def trustworthy(self) -> bool:
        """Whether its judgement of effectiveness means something: clearly better than chance (0.75 balanced
        accuracy for two groups is a conservative bar; a coin is 0.5)."""
        return self.val_balanced_accuracy is not None and self.val_balanced_accuracy >= 0.75


class AttributeClassifier:
    """Per-source CNNs that give P(group | image) for one attribute's groups."""

    def __init__(self, attribute: str, classes: tuple[str, ...], infos: Mapping[str, SourceClassifierInfo],
                 networks: Mapping[str, torch.nn.Module]) -> None:
        self.attribute = attribute
        self.classes = tuple(classes)
        self.infos = dict(infos)
        self.networks = {s: n.eval() for s, n in networks.items()}

    def probabilities(self, images: Sequence[Image.Image], sources: Sequence[str]) -> np.ndarray:
        """P(group | image) for each image under its source's network: (n, len(classes))."""
        images, sources = list(images), [str(s) for s in sources]
        if len(images) != len(sources):
            raise FairMedInputError(f"{len(images)} images for {len(sources)} sources", hint="one source per image")
        out = np.zeros((len(images), len(self.classes)))
        for source in dict.fromkeys(sources):
            if source not in self.networks:
                raise FairMedInputError(f"the attribute classifier has no network for source {source!r}",
                                        column="source", hint=f"it knows {sorted(self.networks)}")
            rows = [i for i, s in enumerate(sources) if s == source]
            with torch.no_grad():
                logits = self.networks[source](_batch([images[i] for i in rows], self.infos[source].mode))
            out[rows] = torch.softmax(logits, dim=1).numpy()
        return out

    def probability_of(self, images: Sequence[Image.Image], sources: Sequence[str],
                       groups: Sequence[str]) -> np.ndarray:
        """P(the given group | image) for each image: the effectiveness score when ``groups`` are the targets."""
        probabilities = self.probabilities(images, sources)
        columns = []
        for row, group in enumerate(groups):
            if group not in self.classes:
                raise FairMedInputError(f"{self.attribute} {group!r} is not a group of the attribute classifier",
                                        row=row, hint=f"it knows {list(self.classes)}")
            columns.append(self.classes.index(group))
        return probabilities[np.arange(len(columns)), columns]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{source}.{name}": value.detach().contiguous()
                   for source, network in self.networks.items() for name, value in network.state_dict().items()}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        atomic_write_json(folder / CONFIG_FILE, {
            "format": FORMAT, "attribute": self.attribute, "classes": list(self.classes), "width": _WIDTH,
            "sources": {s: {"mode": i.mode, "train_counts": dict(i.train_counts),
                            "val_balanced_accuracy": i.val_balanced_accuracy, "val_n": i.val_n}
                        for s, i in self.infos.items()}})
        return folder


def _balanced_accuracy(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float | None:
    recalls = [float((predicted[truth == c] == c).mean()) for c in range(classes) if (truth == c).any()]
    return float(np.mean(recalls)) if len(recalls) == classes else None


def _fit(images: torch.Tensor, labels: torch.Tensor, classes: int, *, epochs: int, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = _network(images.shape[1], classes)
    counts = torch.bincount(labels, minlength=classes).float()
    weights = counts.sum() / (classes * counts.clamp(min=1))
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), 64):
            rows = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(network(images[rows]), labels[rows], weight=weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return network.eval()


def train_attribute_classifier(dataset: Dataset, attribute: str, classes: Sequence[str] | None = None, *,
                               sources: Sequence[str] | None = None, epochs: int = 12,
                               seed: int = 0) -> AttributeClassifier:
    """Train one network per source on the ``train`` split's images with a known ``attribute`` in ``classes``
    (all known groups when None), and score each on the ``val`` split (balanced accuracy)."""
    if attribute not in dataset.cases.columns:
        raise FairMedInputError(f"dataset {dataset.name!r} has no attribute {attribute!r}", column=attribute)
    cases = dataset.cases
    values = cases[attribute].astype(str)
    classes = tuple(classes) if classes else tuple(sorted(set(values) - {UNKNOWN}))
    if len(classes) < 2:
        raise FairMedInputError(f"{attribute} has fewer than two known groups {list(classes)}", column=attribute)
    infos, networks = {}, {}
    for source in sources or dataset.sources:
        rows = cases[(cases["dataset"].astype(str) == source) & values.isin(classes)]
        train = rows[rows["split"].astype(str) == "train"]
        seen = sorted(set(train[attribute].astype(str)))
        if len(seen) < 2:
            continue  # one group only in this source (skin tone outside dermatology): nothing to tell apart
        first = dataset.load_image(str(train["case_id"].iloc[0]))
        mode = "RGB" if first.mode == "RGB" else "L"

        def tensors(frame):
            images = [dataset.load_image(str(c)) for c in frame["case_id"]]
            labels = torch.tensor([classes.index(str(v)) for v in frame[attribute]], dtype=torch.long)
            return _batch(images, mode), labels

        x, y = tensors(train)
        network = _fit(x, y, len(classes), epochs=epochs, seed=seed)
        val = rows[rows["split"].astype(str) == "val"]
        score = None
        if len(val):
            vx, vy = tensors(val)
            with torch.no_grad():
                predicted = network(vx).argmax(dim=1).numpy()
            score = _balanced_accuracy(vy.numpy(), predicted, len(classes))
        counts = {c: int((train[attribute].astype(str) == c).sum()) for c in classes}
        infos[source] = SourceClassifierInfo(source, mode, counts, score, int(len(val)))
        networks[source] = network
    if not networks:
        raise FairMedInputError(f"no source has training images of two {attribute} groups", column=attribute)
    return AttributeClassifier(attribute, classes, infos, networks)


def load_attribute_classifier(folder: str | Path) -> AttributeClassifier:
    """Load a classifier saved by ``AttributeClassifier.save`` (safetensors only)."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise FairMedInputError(f"missing {CONFIG_FILE} or {WEIGHTS_FILE}", source=str(folder),
                                hint="save one with AttributeClassifier.save")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT or config.get("width") != _WIDTH:
            raise ValueError(f"not a {FORMAT} of width {_WIDTH}")
        classes = tuple(config["classes"])
        tensors = load_file(str(weights_path))
        infos, networks = {}, {}
        for source, item in config["sources"].items():
            infos[source] = SourceClassifierInfo(source, item["mode"], dict(item["train_counts"]),
                                                 item["val_balanced_accuracy"], int(item["val_n"]))
            network = _network(3 if item["mode"] == "RGB" else 1, len(classes))
            prefix = f"{source}."
            network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            networks[source] = network
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise FairMedInputError(f"unreadable attribute classifier: {str(error)[:300]}", source=str(folder)) from error
    return AttributeClassifier(config["attribute"], classes, infos, networks)
