"""Counterfactual pairs and the validity of each (Monteiro et al., ICLR 2023): is this edit a counterfactual at all?

One job: make a batch of (factual, counterfactual) image pairs with a generator and score every pair on
- effectiveness: P(target group | counterfactual) from an attribute classifier trained on real images
  (``attribute_classifier``); it passes at 0.5 or more; where there is no classifier, or it is too weak on the
  source to be trusted, the pair is marked "effectiveness not judged" rather than passed;
- composition: the null intervention (target = factual) should give the image back; mean absolute error in
  0..255 grey levels between the reconstruction and the input;
- reversibility: counterfactual -> back to the factual group should give the image back; the same error;
- on the synthetic benchmark, the distance to the true counterfactual (``render`` with the target group) in the
  pixels the attribute may change, against the do-nothing baseline (the factual image itself).

A pair that fails a threshold is marked with the reasons (``PairValidity.failures``), never dropped: the
reviewer decides whether a flip on an invalid pair counts. One inversion of the factual image serves the
reconstruction and every target; reversibility inverts each counterfactual once more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from fairmed_core.counterfactual.attribute_classifier import AttributeClassifier
from fairmed_core.counterfactual.generator import CounterfactualGenerator
from fairmed_core.counterfactual.settings import ValidityThresholds
from fairmed_core.errors import FairMedInputError

LATENT_GRID = 8

__all__ = ["CounterfactualPair", "PairValidity", "ValidityCheck", "ValidityThresholds", "make_pairs",
           "mean_absolute_error", "validity_checks"]

GREY_LEVELS = "grey levels (0-255)"
PROBABILITY = "(probability, 0-1)"


@dataclass(frozen=True)
class PairValidity:
    """The validity scores of one pair; None where a check was not run (no classifier, no truth)."""

    effectiveness: float | None
    effectiveness_judged: bool  # the classifier of this source is trustworthy (see AttributeClassifier)
    composition_mae: float | None
    reversibility_mae: float | None
    truth_mae: float | None = None  # vs the true counterfactual, inside the attribute's region
    baseline_mae: float | None = None  # the factual image vs the true counterfactual, same region
    failures: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.failures

    @classmethod
    def from_record(cls, record) -> PairValidity:
        """The validity of one row of a pairs table (``pairs.csv``: empty cells are checks not run; ``failures``
        joined by "; ")."""
        def number(key: str) -> float | None:
            value = record.get(key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                return None
            return None if np.isnan(value) else value

        failures = record.get("failures")
        failures = () if failures is None or failures != failures or not str(failures) else \
            tuple(str(failures).split("; "))
        judged = record.get("effectiveness_judged")
        return cls(number("effectiveness"), str(judged) == "True", number("composition_mae"),
                   number("reversibility_mae"), number("truth_mae"), number("baseline_mae"), failures)


@dataclass(frozen=True)
class ValidityCheck:
    """One check of a pair as a reader sees it: what was measured, in which unit, against which threshold, and
    whether it passed (None: measured but not judged, e.g. by an attribute classifier too weak to trust)."""

    name: str
    value: float
    unit: str
    passed: bool | None
    threshold: str  # the rule, with its number: "threshold 12", "needs 0.5 or more", "unedited image 8.1"

    def describe(self) -> str:
        """ "reconstruction error 9.0 grey levels (0-255), threshold 12" """
        value = f"{self.value:.2f}" if self.unit == PROBABILITY else f"{self.value:.1f}"
        return f"{self.name} {value} {self.unit}, {self.threshold}"


def validity_checks(validity: PairValidity, thresholds: ValidityThresholds | None = None) -> tuple[ValidityCheck,
                                                                                                   ...]:
    """Every check that was run on a pair, with its unit and threshold, passed or failed by the same rules as
    ``make_pairs`` (so a badge and the pair's ``failures`` never disagree)."""
    thresholds = thresholds or ValidityThresholds()
    checks = []
    if validity.effectiveness is not None:
        passed = validity.effectiveness >= thresholds.effectiveness if validity.effectiveness_judged else None
        rule = f"needs {thresholds.effectiveness:g} or more" + (
            "" if validity.effectiveness_judged else "; not judged: the attribute classifier is too weak here")
        checks.append(ValidityCheck("target group recognised", validity.effectiveness, PROBABILITY, passed,
                                    rule))
    if validity.composition_mae is not None:
        checks.append(ValidityCheck("reconstruction error", validity.composition_mae, GREY_LEVELS,
                                    validity.composition_mae <= thresholds.composition_mae,
                                    f"threshold {thresholds.composition_mae:g}"))
    if validity.reversibility_mae is not None:
        checks.append(ValidityCheck("there-and-back error", validity.reversibility_mae, GREY_LEVELS,
                                    validity.reversibility_mae <= thresholds.reversibility_mae,
                                    f"threshold {thresholds.reversibility_mae:g}"))
    if validity.truth_mae is not None and validity.baseline_mae is not None:
        # Informative, not part of validity: the edit should come closer to the truth than doing nothing.
        checks.append(ValidityCheck("distance to the true counterfactual", validity.truth_mae, GREY_LEVELS,
                                    validity.truth_mae < validity.baseline_mae,
                                    f"unedited image {validity.baseline_mae:.1f}"))
    return tuple(checks)


@dataclass(frozen=True)
class CounterfactualPair:
    """One case edited to one target group, with its validity."""

    case_id: str
    source: str
    attribute: str
    factual_group: str
    target_group: str
    factual: Image.Image
    counterfactual: Image.Image
    validity: PairValidity
    reconstruction: Image.Image | None = None
    truth: Image.Image | None = None  # the benchmark's true counterfactual, when known
    # The factual image's DDIM inversion, average-pooled to (3, 8, 8) and flattened: the abducted latent Z of
    # the conditional-independence test (the noise that, under the factual group, regenerates the image).
    latent: np.ndarray | None = None


def mean_absolute_error(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray,
                        mask: np.ndarray | None = None) -> float:
    """Mean absolute grey-level difference (0..255), over ``mask`` (HxW) when given."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise FairMedInputError(f"images of shapes {x.shape} and {y.shape} cannot be compared")
    difference = np.abs(x - y)
    if mask is None:
        return float(difference.mean())
    if difference.ndim == 3:
        mask = np.repeat(mask[:, :, None], difference.shape[2], axis=2)
    return float(difference[mask].mean()) if mask.any() else float("nan")


def _judge(effectiveness: float | None, judged: bool, composition: float | None, reversibility: float | None,
           thresholds: ValidityThresholds) -> tuple[str, ...]:
    failures = []
    if effectiveness is not None and judged and effectiveness < thresholds.effectiveness:
        failures.append(f"not effective (P(target) {effectiveness:.2f} < {thresholds.effectiveness:g})")
    if composition is not None and composition > thresholds.composition_mae:
        failures.append(f"not composable (reconstruction error {composition:.1f} > {thresholds.composition_mae:g})")
    if reversibility is not None and reversibility > thresholds.reversibility_mae:
        failures.append(f"not reversible (there-and-back error {reversibility:.1f} > "
                        f"{thresholds.reversibility_mae:g})")
    # A pair whose effectiveness nobody could check is not shown as valid: an edit that reconstructs well but
    # never changed the attribute would otherwise pass every other check.
    if effectiveness is None:
        failures.append("effectiveness not checked (no attribute classifier)")
    elif not judged:
        failures.append("effectiveness not judged (the attribute classifier is too weak on this source)")
    return tuple(failures)


def make_pairs(
    generator: CounterfactualGenerator,
    images: Sequence[Image.Image],
    case_ids: Sequence[str],
    sources: Sequence[str],
    factual: Sequence[str],
    targets: Sequence[Sequence[str]],
    *,
    classifier: AttributeClassifier | None = None,
    thresholds: ValidityThresholds | None = None,
    truths: Callable[[int, str], tuple[Image.Image, np.ndarray] | None] | None = None,
    reversibility: bool = True,
    guidance: float | None = None,
    steps: int | None = None,
    strength: float | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[CounterfactualPair]:
    """Edit image ``i`` to every group in ``targets[i]`` and score each pair.

    ``truths(i, target)`` may return (true counterfactual, attribute region mask) for the benchmark.
    ``progress(done, total)`` counts images. Pairs come in input order, targets in the given order."""
    thresholds = thresholds or ValidityThresholds()
    images, case_ids, sources = list(images), [str(c) for c in case_ids], [str(s) for s in sources]
    factual, targets = [str(v) for v in factual], [list(t) for t in targets]
    n = len(images)
    if not len(case_ids) == len(sources) == len(factual) == len(targets) == n:
        raise FairMedInputError(f"{n} images, {len(case_ids)} case ids, {len(sources)} sources, {len(factual)} "
                                f"factual groups and {len(targets)} target lists", hint="give one of each per image")
    if classifier is not None and classifier.attribute != generator.config.attribute:
        raise FairMedInputError(f"the attribute classifier judges {classifier.attribute!r}, the generator edits "
                                f"{generator.config.attribute!r}")
    edit = {"guidance": guidance, "steps": steps, "strength": strength, "batch_size": batch_size}
    inversion = {"steps": steps, "strength": strength, "batch_size": batch_size}
    pairs: list[CounterfactualPair] = []
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        chunk = [images[i] for i in rows]
        chunk_sources = [sources[i] for i in rows]
        chunk_factual = [factual[i] for i in rows]
        modes = [image.mode for image in chunk]
        latents = generator.invert(chunk, chunk_sources, chunk_factual, **inversion)
        pooled = torch.nn.functional.adaptive_avg_pool2d(latents, LATENT_GRID).flatten(1).numpy()
        reconstructions = generator.regenerate(latents, chunk_sources, chunk_factual, modes, **edit)
        # Every (image, target) of this chunk regenerated in one go, then inverted back in one go.
        flat = [(row_index, target) for row_index, i in enumerate(rows) for target in targets[i]]
        if not flat:
            continue
        flat_latents = torch.stack([latents[row_index] for row_index, _ in flat])
        flat_sources = [chunk_sources[row_index] for row_index, _ in flat]
        flat_targets = [target for _, target in flat]
        flat_modes = [modes[row_index] for row_index, _ in flat]
        edited = generator.regenerate(flat_latents, flat_sources, flat_targets, flat_modes, **edit)
        returned: list[Image.Image | None] = [None] * len(flat)
        if reversibility:
            back = generator.invert(edited, flat_sources, flat_targets, **inversion)
            returned = generator.regenerate(back, flat_sources, [chunk_factual[r] for r, _ in flat], flat_modes,
                                            **edit)
        effective = (classifier.probability_of(edited, flat_sources, flat_targets) if classifier is not None
                     else [None] * len(flat))
        for k, (row_index, target) in enumerate(flat):
            i = rows[row_index]
            judged = classifier is not None and sources[i] in classifier.infos and \
                classifier.infos[sources[i]].trustworthy
            effectiveness = None if effective[k] is None else float(effective[k])
            composition = mean_absolute_error(reconstructions[row_index], images[i])
            there_and_back = None if returned[k] is None else mean_absolute_error(returned[k], images[i])
            truth_image, truth_mae, baseline_mae = None, None, None
            known = truths(i, target) if truths is not None else None
            if known is not None:
                truth_image, region = known
                truth_mae = mean_absolute_error(edited[k], truth_image, region)
                baseline_mae = mean_absolute_error(images[i], truth_image, region)
            validity = PairValidity(effectiveness, judged, composition, there_and_back, truth_mae, baseline_mae,
                                    _judge(effectiveness, judged, composition, there_and_back, thresholds))
            pairs.append(CounterfactualPair(case_ids[i], sources[i], generator.config.attribute, factual[i], target,
                                            images[i], edited[k], validity, reconstructions[row_index],
                                            truth_image, pooled[row_index].copy()))
        if progress is not None:
            progress(rows[-1] + 1, n)
    return pairs
