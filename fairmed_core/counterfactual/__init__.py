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

from .config import NUM_TRAIN_TIMESTEPS, CounterfactualGeneratorConfig
from .generator import CounterfactualGenerator, GeneratorInfo, load_generator
from .measure import BenchmarkMeasurement, SourceMeasurement, measure_on_benchmark
from .training import TrainingSummary, export_generator, train_generator

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "CounterfactualGeneratorConfig",
    "CounterfactualGenerator",
    "GeneratorInfo",
    "load_generator",
    "TrainingSummary",
    "train_generator",
    "export_generator",
    "BenchmarkMeasurement",
    "SourceMeasurement",
    "measure_on_benchmark",
]
