"""The counterfactual-generator job: train (or resume) the class-conditional diffusion generator of a dataset's
images, then the attribute classifier that judges its edits, and write the generator's card."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fairmed_core.counterfactual import TrainingSummary, load_generator, train_generator
from fairmed_core.counterfactual.analysis import CLASSIFIER_DIR
from fairmed_core.counterfactual.attribute_classifier import AttributeClassifier, train_attribute_classifier
from fairmed_core.counterfactual.card import write_generator_card
from fairmed_core.data import read_manifest

if TYPE_CHECKING:
    from fairmed_core.jobs.configs import GeneratorTrainingJobConfig

__all__ = ["GeneratorTrainingResult", "run"]


@dataclass(frozen=True)
class GeneratorTrainingResult:
    """The generator's training summary, its attribute classifier (None with 0 classifier epochs), its card."""

    summary: TrainingSummary
    classifier: AttributeClassifier | None
    card: Path


def run(config: GeneratorTrainingJobConfig, out_dir: str | Path,
        progress: Callable[[int, int, str], None] | None = None, *, restart: bool = False) -> GeneratorTrainingResult:
    """Train into ``out_dir`` (resuming from its last checkpoint unless ``restart``), then the classifier."""
    generator_config = config.generator
    dataset = read_manifest(config.data)
    summary = train_generator(dataset, out_dir, generator_config, resume=not restart,
                              progress=None if progress is None else lambda d, t: progress(d, t, "steps"))
    classifier = None
    if config.classifier_epochs:
        generator = load_generator(out_dir)
        classifier = train_attribute_classifier(dataset, generator_config.attribute, generator.config.classes,
                                                sources=generator.config.sources, epochs=config.classifier_epochs,
                                                seed=generator_config.seed)
        classifier.save(Path(out_dir) / CLASSIFIER_DIR)
    command = (f"fairmed train counterfactual --data {config.data} --attribute {generator_config.attribute} "
               f"--out {out_dir} --steps {generator_config.train_steps} --batch-size {generator_config.batch_size} "
               f"--lr {generator_config.learning_rate:g} --seed {generator_config.seed}")
    return GeneratorTrainingResult(summary, classifier, write_generator_card(out_dir, command=command))
