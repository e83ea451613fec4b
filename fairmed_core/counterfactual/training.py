"""Training a counterfactual generator on a dataset's training images, resumable from its last checkpoint.

One job: fit the class-conditional UNet (v-prediction on the cosine schedule) to the training split's images
whose attribute is known, and keep a complete, resumable checkpoint on disk while doing it.

- Data: split ``train``, attribute known (``UNK`` cases are skipped: their class is exactly what is missing),
  group in ``classes`` and source in ``sources`` (empty = all). Images must be the configured size and ``L`` or
  ``RGB``; each source has one mode (see ``config`` for the RGB rule).
- Sampling: with replacement, a case's weight (cases of its (source, group)) ** -class_balance, so rare groups
  (the few male mammograms) are seen more often than their share without being memorised as at full balance.
- Each example is shown with its source's null class with probability ``p_uncond`` (classifier-free guidance).
- AdamW at a constant rate after a linear warmup (constant so a run can be extended by resuming with more
  steps), gradient clipping at norm 1, and an EMA of the weights (warmed up as (1 + step) / (10 + step)).
- Every ``checkpoint_every`` steps and at the end the whole folder is replaced atomically (``checkpoint``); the
  training state (raw weights, optimiser, the sampling RNG, the loss history) makes a resumed run continue
  exactly where the checkpoint was taken: same batches, same losses as an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from fairmed_core.counterfactual import checkpoint as ckpt
from fairmed_core.counterfactual.config import NUM_TRAIN_TIMESTEPS, CounterfactualGeneratorConfig
from fairmed_core.counterfactual.editing import SCHEDULER_SETTINGS
from fairmed_core.counterfactual.generator import GeneratorInfo, build_unet
from fairmed_core.data import read_manifest
from fairmed_core.data.schema import UNKNOWN, Dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json

__all__ = ["TrainingData", "TrainingSummary", "export_generator", "load_training_data", "train_generator"]

_MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class TrainingData:
    """The training images (uint8, N x 3 x H x W), their class ids, and what the generator records about them."""

    config: CounterfactualGeneratorConfig  # with classes and sources resolved
    images: torch.Tensor
    labels: torch.Tensor
    nulls: torch.Tensor  # each image's source null class id
    source_modes: dict[str, str]
    class_counts: dict[str, dict[str, int]]


@dataclass(frozen=True)
class TrainingSummary:
    """What a training call did: the folder, the step reached, every step's loss since step 0 (over resumed
    runs too), the total training time, and the step it resumed from (0 for a fresh start)."""

    directory: Path
    step: int
    losses: tuple[float, ...]
    seconds: float
    resumed_from: int


def load_training_data(dataset: Dataset, config: CounterfactualGeneratorConfig) -> TrainingData:
    """Select and load the training images (see the module docstring) and resolve ``classes``/``sources``."""
    attribute = config.attribute
    cases = dataset.cases
    if attribute not in cases.columns:
        raise FairMedInputError(f"dataset {dataset.name!r} has no attribute {attribute!r}", column=attribute,
                                hint=f"its attributes are {list(dataset.attributes)}")
    values = cases[attribute].astype(str)
    sources = cases["dataset"].astype(str)
    keep = (cases["split"].astype(str) == "train") & (values != UNKNOWN)
    if config.sources:
        unknown = sorted(set(config.sources) - set(sources))
        if unknown:
            raise FairMedInputError(f"sources {unknown} are not in dataset {dataset.name!r}", column="sources",
                                    hint=f"it has {list(dataset.sources)}")
        keep &= sources.isin(config.sources)
    if config.classes:
        keep &= values.isin(config.classes)
    rows = cases[keep]
    if rows.empty:
        raise FairMedInputError(f"no training cases with a known {attribute!r}", column=attribute,
                                hint="training uses split 'train' cases whose attribute is not UNK")
    classes = config.classes or tuple(sorted(set(values[keep])))
    chosen = config.sources or tuple(sorted(set(sources[keep])))
    config = replace(config, classes=classes, sources=chosen)
    if len(classes) < 2:
        raise FairMedInputError(f"the training cases have only one {attribute} group {list(classes)}",
                                column=attribute, hint="a counterfactual needs at least two groups")

    size = config.image_size
    arrays, labels, nulls = [], [], []
    modes: dict[str, str] = {}
    counts = {s: {c: 0 for c in classes} for s in chosen}
    for case_id, source, value in zip(rows["case_id"].astype(str), rows["dataset"].astype(str),
                                      rows[attribute].astype(str)):
        image = dataset.load_image(case_id)
        where = str(dataset.image_path(case_id))
        if image.size != (size, size):
            raise FairMedInputError(f"image is {image.size[0]}x{image.size[1]}, expected {size}x{size}",
                                    source=where, hint="set image_size to the dataset's image size")
        if image.mode not in ("L", "RGB"):
            raise FairMedInputError(f"image mode {image.mode!r} is not supported", source=where,
                                    hint="convert the images to L (grayscale) or RGB")
        if modes.setdefault(source, image.mode) != image.mode:
            raise FairMedInputError(f"{source} mixes {modes[source]!r} and {image.mode!r} images", source=where,
                                    hint="one mode per source: convert them to one")
        arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
        labels.append(config.class_id(source, value))
        nulls.append(config.null_id(source))
        counts[source][value] += 1
    empty = [c for c in classes if not any(counts[s][c] for s in chosen)]
    if empty:
        raise FairMedInputError(f"{attribute} {empty} has no training cases in dataset {dataset.name!r}",
                                column=attribute, hint="drop it from classes, or add cases of that group: a "
                                                       "generator cannot learn a group it never sees")
    return TrainingData(
        config=config,
        images=torch.from_numpy(np.stack(arrays)),
        labels=torch.tensor(labels, dtype=torch.long),
        nulls=torch.tensor(nulls, dtype=torch.long),
        source_modes=modes,
        class_counts=counts,
    )


def _scheduler_config() -> dict:
    scheduler = DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, **SCHEDULER_SETTINGS)
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def _save(out_dir: Path, info: GeneratorInfo, inference_unet, state: dict) -> None:
    def fill(folder: Path) -> None:
        inference_unet.save_pretrained(folder / ckpt.UNET_DIR, safe_serialization=True)
        DDIMScheduler.from_config(_scheduler_config()).save_pretrained(folder / ckpt.SCHEDULER_DIR)
        atomic_write_json(folder / ckpt.CONFIG_FILE, info.to_dict())
        torch.save(state, folder / ckpt.STATE_FILE)

    ckpt.replace_folder(out_dir, fill)


def _resume_state(out_dir: Path, data: TrainingData) -> tuple[dict, GeneratorInfo] | None:
    ckpt.recover(out_dir)
    if not (out_dir / ckpt.STATE_FILE).is_file():
        if out_dir.is_dir() and (out_dir / ckpt.CONFIG_FILE).is_file():
            raise FairMedInputError("this folder holds a finished generator without its training state",
                                    source=str(out_dir), hint="train into another folder, or with resume=False")
        return None
    info = GeneratorInfo.from_dict(ckpt.read_metadata(out_dir), source=str(out_dir / ckpt.CONFIG_FILE))
    if not info.config.same_model(data.config):
        raise FairMedInputError("this folder holds a generator trained with other settings", source=str(out_dir),
                                hint="use the same settings (only train_steps may grow), another folder, "
                                     "or resume=False")
    if info.class_counts != data.class_counts or info.source_modes != data.source_modes:
        raise FairMedInputError("the training data differ from the data this checkpoint was trained on",
                                source=str(out_dir), hint="train into another folder, or with resume=False")
    state = ckpt.read_training_state(out_dir)
    return state, info


def train_generator(
    manifest: str | Path | Dataset,
    out_dir: str | Path,
    config: CounterfactualGeneratorConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    resume: bool = True,
) -> TrainingSummary:
    """Train (or, with ``resume`` and a checkpoint in ``out_dir``, continue training) a generator into
    ``out_dir``; ``progress(step, total)`` is called after every step. Returns the summary; load the result
    with ``load_generator(out_dir)``."""
    config = config or CounterfactualGeneratorConfig()
    dataset = manifest if isinstance(manifest, Dataset) else read_manifest(manifest)
    out_dir = Path(out_dir).expanduser()
    data = load_training_data(dataset, config)
    config = data.config

    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        unet = build_unet(config)
    ema = copy.deepcopy(unet).requires_grad_(False) if config.ema_decay > 0 else None
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = torch.Generator().manual_seed(config.seed)
    start, losses, seconds = 0, [], 0.0

    resumed = _resume_state(out_dir, data) if resume else None
    if resumed is not None:
        state, info = resumed
        unet.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        if ema is not None:
            from safetensors.torch import load_file

            ema.load_state_dict(load_file(str(ckpt.weights_path(out_dir))))
        start, seconds = int(state["step"]), float(state["seconds"])
        losses = state["losses"].tolist()

    scheduler = DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction")
    counts = torch.bincount(data.labels, minlength=config.num_class_embeds).double()
    weights = counts[data.labels] ** -config.class_balance
    total = config.train_steps
    began = time.perf_counter()
    unet.train()
    for step in range(start, total):
        for group in optimiser.param_groups:
            group["lr"] = config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps))
        index = torch.multinomial(weights, config.batch_size, replacement=True, generator=rng)
        clean = data.images[index].float() / 127.5 - 1.0
        noise = torch.randn(clean.shape, generator=rng)
        timesteps = torch.randint(0, NUM_TRAIN_TIMESTEPS, (config.batch_size,), generator=rng)
        dropped = torch.rand(config.batch_size, generator=rng) < config.p_uncond
        labels = torch.where(dropped, data.nulls[index], data.labels[index])
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = scheduler.get_velocity(clean, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps, class_labels=labels).sample, target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), _MAX_GRAD_NORM)
        optimiser.step()
        if ema is not None:
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for averaged, current in zip(ema.parameters(), unet.parameters()):
                    averaged.lerp_(current, 1 - decay)
        losses.append(float(loss.detach()))
        done = step + 1
        if done % config.checkpoint_every == 0 or done == total:
            elapsed = seconds + time.perf_counter() - began
            info = GeneratorInfo(config, data.source_modes, data.class_counts, done, elapsed)
            state = {"step": done, "seconds": elapsed, "losses": torch.tensor(losses, dtype=torch.float64),
                     "model": unet.state_dict(), "optimizer": optimiser.state_dict(), "rng": rng.get_state()}
            _save(out_dir, info, ema if ema is not None else unet, state)
        if progress is not None:
            progress(done, total)
    if start < total:  # else the checkpoint already had the requested steps and nothing ran
        seconds += time.perf_counter() - began
    return TrainingSummary(out_dir, max(start, total), tuple(losses), seconds, start)


_EDIT_SETTINGS = ("guidance", "inversion_steps", "strength")
_SHIPPED_SUBFOLDERS = ("attribute_classifier",)  # safetensors + JSON folders that travel with a generator


def export_generator(folder: str | Path, out_dir: str | Path, *, edit_defaults: dict | None = None) -> Path:
    """Copy a trained generator without its training state (what is shipped: the safetensors UNet, the
    scheduler, ``generator_config.json``, the attribute classifier and any card), replacing ``out_dir``
    atomically. ``edit_defaults`` may set new default edit settings (guidance, inversion_steps, strength), e.g.
    the ones the validity measurement chose; nothing that changes the network can be set."""
    folder = Path(folder).expanduser()
    metadata = ckpt.read_metadata(folder)
    ckpt.weights_path(folder)
    edit_defaults = dict(edit_defaults or {})
    unknown = sorted(set(edit_defaults) - set(_EDIT_SETTINGS))
    if unknown:
        raise FairMedInputError(f"only edit settings can be changed on export, not {unknown}",
                                hint=f"one of {list(_EDIT_SETTINGS)}")
    metadata["config"] = CounterfactualGeneratorConfig.from_dict({**metadata["config"], **edit_defaults}).to_dict()

    def fill(target: Path) -> None:
        for name in (ckpt.UNET_DIR, ckpt.SCHEDULER_DIR):
            (target / name).mkdir()
        (target / ckpt.UNET_DIR / "config.json").write_bytes((folder / ckpt.UNET_DIR / "config.json").read_bytes())
        (target / ckpt.UNET_DIR / ckpt.WEIGHTS_FILE).write_bytes(ckpt.weights_path(folder).read_bytes())
        name = f"{ckpt.SCHEDULER_DIR}/scheduler_config.json"
        (target / name).write_bytes((folder / name).read_bytes())
        (target / ckpt.CONFIG_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        for extra in folder.iterdir():
            if extra.is_file() and extra.suffix == ".md":
                (target / extra.name).write_bytes(extra.read_bytes())
            elif extra.is_dir() and extra.name in _SHIPPED_SUBFOLDERS:
                shutil.copytree(extra, target / extra.name)

    return ckpt.replace_folder(out_dir, fill)
