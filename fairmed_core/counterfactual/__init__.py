"""Diffusion counterfactuals (DESIGN section 6): a class-conditional diffusion model trained on a dataset's
images with a sensitive attribute as class, which redraws an image with that attribute changed.

- ``train_generator(manifest, out_dir, config)`` trains (and resumes) one; ``export_generator`` copies it
  without its training state for shipping.
- ``load_generator(folder)`` loads one (safetensors only); ``check_compatible(dataset, attribute)`` says
  whether it fits a dataset.
- ``CounterfactualGenerator.counterfactuals(images, sources, factual, target)`` edits: DDIM inversion under the
  factual group, regeneration under the target group with classifier-free guidance; ``reconstruct`` is the null
  intervention.
- ``measure_on_benchmark`` compares its edits with the synthetic benchmark's true counterfactuals.
"""

import importlib

# Loaded on first use (PEP 562): the settings modules stay light (no torch, no diffusers), so the command line
# and the pages can build a counterfactual job's config without importing the generator.
_EXPORTS = {
    "NUM_TRAIN_TIMESTEPS": "config", "CounterfactualGeneratorConfig": "config",
    "CounterfactualGenerator": "generator", "GeneratorInfo": "generator", "load_generator": "generator",
    "BenchmarkMeasurement": "measure", "SourceMeasurement": "measure", "measure_on_benchmark": "measure",
    "TrainingSummary": "training", "export_generator": "training", "train_generator": "training",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
