"""A trained counterfactual generator: loading it safely, checking it fits a dataset, and editing images.

One job: turn (image, source, factual group, target group) into the image the generator believes the same
patient would have in the target group, with every input checked first so a mismatch is a clear
``FairMedInputError`` instead of a silent wrong edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import UNet2DModel
from PIL import Image
from safetensors.torch import load_file

from fairmed_core.counterfactual import checkpoint as ckpt
from fairmed_core.counterfactual.config import CounterfactualGeneratorConfig, check_steps
from fairmed_core.counterfactual.editing import depth_of, from_tensor, invert, regenerate, to_tensor
from fairmed_core.data.schema import UNKNOWN, Dataset
from fairmed_core.errors import FairMedInputError

__all__ = ["CounterfactualGenerator", "GeneratorInfo", "build_unet", "load_generator"]

_CHANNELS = {"L": 1, "RGB": 3}  # the image modes a generator accepts, and their channel counts


def build_unet(config: CounterfactualGeneratorConfig) -> UNet2DModel:
    """The class-conditional UNet of ``config``. Self-attention only at the deepest level (and in the middle
    block): attention at 32x32 and 16x16 made a CPU training step about three times slower (measured here) for
    64x64 images whose structure the convolutions already see."""
    levels = len(config.block_out_channels)
    down = ("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",)
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups,
        down_block_types=down,
        up_block_types=up,
        num_class_embeds=config.num_class_embeds,
    )


@dataclass(frozen=True)
class GeneratorInfo:
    """What a trained generator is: its settings and what it saw in training (treat the mappings as read-only)."""

    config: CounterfactualGeneratorConfig
    source_modes: Mapping[str, str]  # source -> "L" or "RGB", as its training images were
    class_counts: Mapping[str, Mapping[str, int]]  # source -> group -> training images
    step: int  # optimiser steps trained
    train_seconds: float  # wall-clock training time, summed over resumed runs

    def to_dict(self) -> dict:
        return {
            "format": ckpt.FORMAT,
            "version": 1,
            "config": self.config.to_dict(),
            "source_modes": dict(self.source_modes),
            "class_counts": {s: dict(c) for s, c in self.class_counts.items()},
            "step": int(self.step),
            "train_seconds": round(float(self.train_seconds), 1),
        }

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str | None = None) -> GeneratorInfo:
        try:
            config = CounterfactualGeneratorConfig.from_dict(data["config"])
            modes = {str(k): str(v) for k, v in data["source_modes"].items()}
            counts = {str(s): {str(v): int(n) for v, n in c.items()} for s, c in data["class_counts"].items()}
            step, seconds = int(data["step"]), float(data["train_seconds"])
        except FairMedInputError as error:
            raise FairMedInputError(f"bad generator settings: {error.message}", source=source,
                                    column=error.column, hint=error.hint) from error
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FairMedInputError(f"{ckpt.CONFIG_FILE} is incomplete or malformed ({error!r})",
                                    source=source) from error
        if set(modes) != set(config.sources) or set(counts) != set(config.sources) or \
                not set(modes.values()) <= set(_CHANNELS):
            raise FairMedInputError(f"{ckpt.CONFIG_FILE}: source_modes (L or RGB) and class_counts must cover "
                                    f"the sources {list(config.sources)}", source=source)
        return cls(config, modes, counts, step, seconds)


class CounterfactualGenerator:
    """A trained class-conditional diffusion model and the edits it makes (see ``editing`` for the method)."""

    def __init__(self, info: GeneratorInfo, unet: UNet2DModel, scheduler_config: Mapping,
                 directory: Path | None = None) -> None:
        self.info = info
        # Channels-last: the convolutions run faster on CPU in this layout (benchmarks/bench_counterfactual.py).
        self.unet = unet.eval().to(memory_format=torch.channels_last)
        self.scheduler_config = dict(scheduler_config)
        self.directory = directory

    @property
    def config(self) -> CounterfactualGeneratorConfig:
        return self.info.config

    def __repr__(self) -> str:
        return (f"CounterfactualGenerator(attribute={self.config.attribute!r}, classes={self.config.classes}, "
                f"sources={self.config.sources}, image_size={self.config.image_size}, step={self.info.step})")

    # -- checks ----------------------------------------------------------------------------------------------
    def trained_on(self, source: str, value: str) -> bool:
        """Whether training saw images of this (source, group)."""
        return self.info.class_counts.get(source, {}).get(value, 0) > 0

    def _check_group(self, source: str, value: object, column: str, row: int | None) -> None:
        attribute = self.config.attribute
        if source not in self.config.sources:
            raise FairMedInputError(f"this generator was not trained on source {source!r}", column="source",
                                    row=row, hint=f"it knows {list(self.config.sources)}")
        if not isinstance(value, str) or value not in self.config.classes:
            raise FairMedInputError(f"{attribute} {value!r} is a group this generator never saw", column=column,
                                    row=row, hint=f"it knows {list(self.config.classes)}")
        if not self.trained_on(source, value):
            raise FairMedInputError(f"this generator saw no {source} images with {attribute} {value!r}",
                                    column=column, row=row,
                                    hint="it cannot make or invert that group for this source")

    def _check_image(self, image: object, source: str, row: int | None) -> None:
        if not isinstance(image, Image.Image):
            raise FairMedInputError(f"expected a PIL image, got {type(image).__name__}", column="image", row=row)
        size = self.config.image_size
        if image.size != (size, size):
            raise FairMedInputError(f"image is {image.size[0]}x{image.size[1]}, this generator works on "
                                    f"{size}x{size}", column="image", row=row,
                                    hint="use a generator trained at this image size")
        expected = self.info.source_modes[source]
        if image.mode != expected:
            raise FairMedInputError(f"image mode is {image.mode!r} ({len(image.getbands())} channels), but "
                                    f"{source} images were {expected!r} ({_CHANNELS[expected]} channels) in "
                                    "training", column="image", row=row,
                                    hint="convert the images to the mode the generator was trained on")

    def _check_batch(self, images: Sequence, sources: Sequence, groups: Mapping[str, Sequence]) -> None:
        count = len(images)
        for name, values in {"sources": sources, **groups}.items():
            if len(values) != count:
                raise FairMedInputError(f"{len(values)} {name} for {count} images", column=name,
                                        hint="give one per image")
        for row, (image, source) in enumerate(zip(images, sources)):
            for name, values in groups.items():
                self._check_group(str(source), values[row], name, row)
            self._check_image(image, str(source), row)

    def check_compatible(self, dataset: Dataset, attribute: str) -> None:
        """Raise ``FairMedInputError`` unless this generator can edit ``attribute`` on ``dataset``: same
        attribute, every source and every known group seen in training, images of its size and modes (one image
        per source is opened)."""
        if attribute != self.config.attribute:
            raise FairMedInputError(f"this generator edits {self.config.attribute!r}, not {attribute!r}",
                                    column=attribute, hint=f"train a generator for {attribute!r}")
        if attribute not in dataset.cases.columns:
            raise FairMedInputError(f"dataset {dataset.name!r} has no {attribute!r} column", column=attribute)
        cases = dataset.cases
        for source in dataset.sources:
            if source not in self.config.sources:
                raise FairMedInputError(f"this generator was not trained on source {source!r}",
                                        column="dataset", hint=f"it knows {list(self.config.sources)}")
            rows = cases[cases["dataset"].astype(str) == source]
            for value in sorted(set(rows[attribute].astype(str)) - {UNKNOWN}):
                self._check_group(source, value, attribute, None)
            case_id = str(rows["case_id"].iloc[0])
            try:
                self._check_image(dataset.load_image(case_id), source, None)
            except FairMedInputError as error:
                raise FairMedInputError(f"case {case_id}: {error.message}", source=str(dataset.image_path(case_id)),
                                        hint=error.hint) from error

    # -- edits -----------------------------------------------------------------------------------------------
    def _labels(self, sources: Sequence[str], values: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.tensor([self.config.class_id(s, v) for s, v in zip(sources, values)], dtype=torch.long)
        nulls = torch.tensor([self.config.null_id(s) for s in sources], dtype=torch.long)
        return labels, nulls

    def _settings(self, guidance: float | None, steps: int | None, strength: float | None,
                  batch_size: int) -> tuple[float, int, int]:
        """Validated (guidance, steps, depth): the config's defaults where None."""
        guidance = self.config.guidance if guidance is None else float(guidance)
        if not guidance > 0:
            raise FairMedInputError(f"guidance must be positive, got {guidance}", column="guidance")
        strength = self.config.strength if strength is None else float(strength)
        if not 0 < strength <= 1:
            raise FairMedInputError(f"strength must be in (0, 1], got {strength}", column="strength")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise FairMedInputError(f"batch_size must be a positive integer, got {batch_size!r}",
                                    column="batch_size")
        steps = check_steps(self.config.inversion_steps if steps is None else steps)
        return guidance, steps, depth_of(steps, strength)

    def invert(self, images: Sequence[Image.Image], sources: Sequence[str], factual: Sequence[str], *,
               steps: int | None = None, strength: float | None = None, batch_size: int = 16) -> torch.Tensor:
        """Each image's DDIM latent under its factual group, (B, 3, H, W): pure noise at strength 1, a partly
        noised image below. ``regenerate`` with the same steps and strength maps it back."""
        _, steps, depth = self._settings(None, steps, strength, batch_size)
        images, sources, factual = list(images), [str(s) for s in sources], list(factual)
        self._check_batch(images, sources, {"factual": factual})
        chunks = []
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            labels, _ = self._labels(sources[start:stop], factual[start:stop])
            chunks.append(invert(self.unet, self.scheduler_config, to_tensor(images[start:stop]), labels, steps,
                                 depth))
        return torch.cat(chunks) if chunks else torch.empty(0, 3, self.config.image_size, self.config.image_size)

    def regenerate(self, latents: torch.Tensor, sources: Sequence[str], target: Sequence[str],
                   modes: Sequence[str], *, guidance: float | None = None, steps: int | None = None,
                   strength: float | None = None, batch_size: int = 16) -> list[Image.Image]:
        """Images from ``invert``'s latents (same steps and strength) under the ``target`` groups with
        classifier-free guidance, in the given modes. One inversion serves several targets this way."""
        guidance, steps, depth = self._settings(guidance, steps, strength, batch_size)
        sources, target, modes = [str(s) for s in sources], list(target), list(modes)
        if not len(latents) == len(sources) == len(target) == len(modes):
            raise FairMedInputError(f"{len(latents)} latents, {len(sources)} sources, {len(target)} targets and "
                                    f"{len(modes)} modes", hint="give one of each per image")
        for row, (source, value) in enumerate(zip(sources, target)):
            self._check_group(source, value, "target", row)
        results: list[Image.Image] = []
        for start in range(0, len(sources), batch_size):
            stop = start + batch_size
            labels, nulls = self._labels(sources[start:stop], target[start:stop])
            edited = regenerate(self.unet, self.scheduler_config, latents[start:stop], labels, nulls, guidance,
                                steps, depth)
            results.extend(from_tensor(edited, modes[start:stop]))
        return results

    def counterfactuals(self, images: Sequence[Image.Image], sources: Sequence[str], factual: Sequence[str],
                        target: Sequence[str], *, guidance: float | None = None, steps: int | None = None,
                        strength: float | None = None, batch_size: int = 16) -> list[Image.Image]:
        """Each image redrawn with the attribute set to its ``target`` group: DDIM inversion under ``factual``
        (no guidance), then DDIM under ``target`` with classifier-free guidance; None takes the config's
        guidance, steps and strength. Deterministic; outputs have the inputs' modes (``L`` stays ``L``)."""
        self._settings(guidance, steps, strength, batch_size)  # refuse bad settings before the slow inversion
        images, sources = list(images), [str(s) for s in sources]
        self._check_batch(images, sources, {"factual": list(factual), "target": list(target)})
        latents = self.invert(images, sources, factual, steps=steps, strength=strength, batch_size=batch_size)
        return self.regenerate(latents, sources, target, [image.mode for image in images], guidance=guidance,
                               steps=steps, strength=strength, batch_size=batch_size)

    def reconstruct(self, images: Sequence[Image.Image], sources: Sequence[str], factual: Sequence[str], *,
                    guidance: float | None = None, steps: int | None = None, strength: float | None = None,
                    batch_size: int = 16) -> list[Image.Image]:
        """The null intervention (target = factual) with the same procedure and guidance as a counterfactual:
        what the composition check compares with the input (a perfect generator returns it unchanged)."""
        return self.counterfactuals(images, sources, factual, factual, guidance=guidance, steps=steps,
                                    strength=strength, batch_size=batch_size)


def load_generator(folder: str | Path) -> CounterfactualGenerator:
    """Load a generator folder written by ``train_generator`` (weights from safetensors only; pickled weight
    files are refused unread). Raises ``FairMedInputError`` for a missing or inconsistent folder."""
    folder = Path(folder).expanduser()
    metadata = ckpt.read_metadata(folder)
    info = GeneratorInfo.from_dict(metadata, source=str(folder / ckpt.CONFIG_FILE))
    weights = ckpt.weights_path(folder)
    try:
        unet_config = json.loads((folder / ckpt.UNET_DIR / "config.json").read_text(encoding="utf-8"))
        scheduler_config = json.loads(
            (folder / ckpt.SCHEDULER_DIR / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"unreadable generator config: {error}", source=str(folder)) from error
    expected = {"num_class_embeds": info.config.num_class_embeds, "sample_size": info.config.image_size,
                "in_channels": 3, "out_channels": 3}
    wrong = {k: unet_config.get(k) for k, v in expected.items() if unet_config.get(k) != v}
    if wrong:
        raise FairMedInputError(f"unet/config.json does not match {ckpt.CONFIG_FILE}: {wrong}, expected "
                                f"{ {k: expected[k] for k in wrong} }", source=str(folder))
    if scheduler_config.get("prediction_type") != "v_prediction":
        raise FairMedInputError("the scheduler is not v-prediction", source=str(folder))
    unet = UNet2DModel.from_config(unet_config)
    try:
        unet.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise FairMedInputError(f"the weights do not fit the UNet config: {str(error)[:300]}",
                                source=str(weights)) from error
    return CounterfactualGenerator(info, unet, scheduler_config, directory=folder)
