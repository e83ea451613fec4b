"""Deterministic DDIM inversion and guided regeneration: the two halves of a diffusion counterfactual.

One job: move a batch of images to noise under their factual class and back to images under a target class.

- Inversion runs the DDIM inverse scheduler under the factual class WITHOUT guidance (scale 1). Guidance during
  inversion makes each step a worse approximation of the reverse step (the guided field is not the model's
  score), so the noise it finds regenerates the image less faithfully; the attribute change is left to the
  regeneration.
- Regeneration runs DDIM (eta 0, no noise: the result is a function of the image) under the target class with
  classifier-free guidance ``v = v_null + w * (v_target - v_null)``; linear in ``v`` is linear in the noise
  estimate too, since both are linear in the network output for the same sample.
- Both schedulers use ``timestep_spacing="trailing"`` and ``set_alpha_to_one=True`` and a step count dividing
  1,000, so the inverse pass visits exactly the timesteps the forward pass comes back through, ending at
  alpha_bar = 1 (the clean image); ``clip_sample=False`` because clipping the predicted clean image breaks the
  invertibility.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, UNet2DModel
from PIL import Image

__all__ = [
    "SCHEDULER_SETTINGS", "depth_of", "from_tensor", "guided_velocity", "invert", "regenerate", "to_tensor",
]

SCHEDULER_SETTINGS = {
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "timestep_spacing": "trailing",
    "steps_offset": 0,
}


def _inverse_settings(scheduler_config: Mapping) -> dict:
    """The DDIM config without the keys only the forward scheduler has (thresholding...), which the inverse
    scheduler would otherwise warn about on every edit."""
    accepted = set(inspect.signature(DDIMInverseScheduler.__init__).parameters)
    return {k: v for k, v in scheduler_config.items() if k in accepted}


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Images (``L`` or ``RGB``, one size) as a float batch (B, 3, H, W) in [-1, 1]; ``L`` is replicated."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1.0


def from_tensor(batch: torch.Tensor, modes: Sequence[str]) -> list[Image.Image]:
    """The inverse of ``to_tensor``: clamp, round to 0..255, and average the channels for ``L`` images."""
    pixels = ((batch.detach().float().clamp(-1, 1) + 1.0) * 127.5).permute(0, 2, 3, 1).numpy()
    images = []
    for array, mode in zip(pixels, modes):
        if mode == "L":
            images.append(Image.fromarray(np.rint(array.mean(axis=2)).astype(np.uint8), mode="L"))
        else:
            images.append(Image.fromarray(np.rint(array).astype(np.uint8), mode="RGB"))
    return images


def _layout_of(unet: UNet2DModel) -> torch.memory_format:
    """The memory layout of the network's convolutions; inputs are given the same one (a mismatch makes every
    convolution convert). ``CounterfactualGenerator`` puts its UNet in channels-last, which convolves faster
    on CPU (docs/BENCHMARKS.md)."""
    weight = unet.conv_in.weight
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def guided_velocity(unet: UNet2DModel, sample: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor,
                    null_labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
    """The network's v-prediction under ``labels``, with classifier-free guidance against ``null_labels``
    when ``guidance != 1`` (conditional and null passes share one batch)."""
    times = timestep.expand(sample.shape[0])
    layout = _layout_of(unet)
    if guidance == 1.0 or null_labels is None:
        return unet(sample.contiguous(memory_format=layout), times, class_labels=labels).sample
    both = unet(torch.cat([sample, sample]).contiguous(memory_format=layout), torch.cat([times, times]),
                class_labels=torch.cat([labels, null_labels])).sample
    conditional, unconditional = both.chunk(2)
    return unconditional + guidance * (conditional - unconditional)


def depth_of(steps: int, strength: float) -> int:
    """How many of ``steps`` DDIM steps an edit of ``strength`` inverts (at least one)."""
    return max(1, min(steps, round(strength * steps)))


@torch.no_grad()
def invert(unet: UNet2DModel, scheduler_config: Mapping, images: torch.Tensor, labels: torch.Tensor,
           steps: int, depth: int | None = None) -> torch.Tensor:
    """DDIM inversion: the latent that DDIM under ``labels`` (no guidance) maps back to ``images``; with
    ``depth`` < ``steps`` only the first ``depth`` steps of the chain (a partly noised image, not pure noise)."""
    scheduler = DDIMInverseScheduler.from_config(_inverse_settings(scheduler_config))
    scheduler.set_timesteps(steps)
    sample = images
    for timestep in scheduler.timesteps[: steps if depth is None else depth]:
        velocity = guided_velocity(unet, sample, timestep, labels, None, 1.0)
        sample = scheduler.step(velocity, timestep, sample).prev_sample
    return sample


@torch.no_grad()
def regenerate(unet: UNet2DModel, scheduler_config: Mapping, noise: torch.Tensor, labels: torch.Tensor,
               null_labels: torch.Tensor, guidance: float, steps: int, depth: int | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from ``noise`` under ``labels`` with classifier-free guidance ``guidance``;
    with ``depth`` the last ``depth`` steps of the chain, the ones ``invert`` with that depth went up."""
    scheduler = DDIMScheduler.from_config(dict(scheduler_config))
    scheduler.set_timesteps(steps)
    sample = noise
    for timestep in scheduler.timesteps[steps - (steps if depth is None else depth):]:
        velocity = guided_velocity(unet, sample, timestep, labels, null_labels, guidance)
        sample = scheduler.step(velocity, timestep, sample, eta=0.0).prev_sample
    return sample
