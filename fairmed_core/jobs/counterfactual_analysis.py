"""The counterfactual-analysis job: edit a dataset's cases with a trained generator, ask the model under review
about both images of every pair, and store the pairs, their validity and the tests (flip rates with McNemar, the
conditional-independence test) as a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fairmed_core.counterfactual import load_generator
from fairmed_core.counterfactual.analysis import (ClassifierPredictor, CounterfactualAnalysis, VLMPredictor,
                                                  generator_classifier, run_counterfactual_analysis)
from fairmed_core.data import read_manifest
from fairmed_core.models.loading import load_model

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import CounterfactualAnalysisJobConfig

__all__ = ["load_predictor", "run"]


def load_predictor(config: CounterfactualAnalysisJobConfig):
    """The model under review: a Gemma 3 image-text model folder, or a FairMed image classifier folder."""
    folder = Path(config.model)
    if (folder / "classifier_config.json").is_file():
        from fairmed_core.counterfactual.classifiers import load_image_classifier

        return ClassifierPredictor(load_image_classifier(folder), name=str(folder))
    return VLMPredictor(load_model(folder, adapter=config.adapter, device=config.device), config.generation,
                        name=str(folder))


def run(config: CounterfactualAnalysisJobConfig, out_dir: str | Path,
        progress: Callable[[int, int, str], None] | None = None) -> CounterfactualAnalysis:
    """Analyse ``config.model`` with ``config.generator`` on ``config.data``; the run is written to ``out_dir``."""
    generator = load_generator(config.generator)
    dataset = read_manifest(config.data)
    generator.check_compatible(dataset, config.attribute)
    predictor = load_predictor(config)
    return run_counterfactual_analysis(
        predictor, generator, dataset, config.analysis, out_dir=out_dir, classifier=generator_classifier(generator),
        progress=None if progress is None else lambda stage, done, total: progress(done, total, stage))
