"""How close a generator's edits come to the synthetic benchmark's true counterfactuals.

One job: on a sample of benchmark cases, measure (in 0..255 pixel units, mean absolute error)
- reconstruction: the null intervention against the input (composition; 0 is perfect);
- counterfactual: the generated counterfactual against the true one from ``render`` (the same latent patient
  drawn with the other group);
- baseline: the unchanged factual image against the true counterfactual. A generator that does not beat this
  has not learned the attribute's appearance better than doing nothing.
Both counterfactual errors are also given inside ``attribute_region`` (the pixels the attribute may change):
outside it the true counterfactual equals the factual image, so there the baseline is exactly 0 and the
generator can only lose (its reconstruction error); inside it is where the edit has to happen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fairmed_core.counterfactual.analysis import true_counterfactual
from fairmed_core.counterfactual.generator import CounterfactualGenerator
from fairmed_core.counterfactual.validity import make_pairs, mean_absolute_error
from fairmed_core.data.synth import RENDER_KEYWORDS
from fairmed_core.data.schema import UNKNOWN, Dataset
from fairmed_core.errors import FairMedInputError

__all__ = ["BenchmarkMeasurement", "SourceMeasurement", "measure_on_benchmark"]


@dataclass(frozen=True)
class SourceMeasurement:
    """Mean absolute errors (0..255) over one source's (or all) measured cases."""

    source: str
    n: int
    reconstruction_mae: float
    counterfactual_mae: float
    baseline_mae: float
    region_counterfactual_mae: float
    region_baseline_mae: float


@dataclass(frozen=True)
class BenchmarkMeasurement:
    """The measurement over all cases (``overall``) and per source, with the edit settings and the time taken."""

    attribute: str
    guidance: float
    steps: int
    strength: float
    case_ids: tuple[str, ...]
    overall: SourceMeasurement
    per_source: tuple[SourceMeasurement, ...]
    seconds: float


def _other(classes: tuple[str, ...], value: str) -> str:
    return classes[(classes.index(value) + 1) % len(classes)]


def _summary(source: str, rows: list[dict]) -> SourceMeasurement:
    def mean(key: str) -> float:
        values = [r[key] for r in rows if not np.isnan(r[key])]
        return float(np.mean(values)) if values else float("nan")

    return SourceMeasurement(source, len(rows), mean("reconstruction"), mean("counterfactual"), mean("baseline"),
                             mean("region_counterfactual"), mean("region_baseline"))


def measure_on_benchmark(generator: CounterfactualGenerator, dataset: Dataset, *, n: int = 32,
                         split: str = "test", guidance: float | None = None, steps: int | None = None,
                         strength: float | None = None, batch_size: int = 16) -> BenchmarkMeasurement:
    """Measure ``n`` cases of ``split`` with a known attribute, taken in manifest order round-robin over the
    sources so each source gets its share; each case's target is the next group of the generator's classes
    (the other one for a binary attribute)."""
    config = generator.config
    attribute = config.attribute
    if attribute not in RENDER_KEYWORDS:
        raise FairMedInputError(f"the benchmark has no true counterfactual for {attribute!r}", column=attribute,
                                hint=f"one of {sorted(RENDER_KEYWORDS)}")
    generator.check_compatible(dataset, attribute)
    cases = dataset.cases
    usable = cases[(cases["split"].astype(str) == split) & (cases[attribute].astype(str) != UNKNOWN)]
    queues = {}
    for source in config.sources:
        rows = usable[usable["dataset"].astype(str) == source]
        rows = rows[[generator.trained_on(source, _other(config.classes, str(v))) for v in rows[attribute]]]
        queues[source] = rows.to_dict(orient="records")
    picked: list[dict] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues.values()):
        picked.extend(q[depth] for q in queues.values() if depth < len(q) and len(picked) < n)
        depth += 1
    if not picked:
        raise FairMedInputError(f"no {split} cases with a known {attribute!r} to measure on", column=attribute)

    began = time.perf_counter()
    target = [_other(config.classes, str(r[attribute])) for r in picked]
    # make_pairs inverts once and regenerates under the factual group (the null edit) and the target.
    pairs = make_pairs(generator, [dataset.load_image(str(r["case_id"])) for r in picked],
                       [str(r["case_id"]) for r in picked], [str(r["dataset"]) for r in picked],
                       [str(r[attribute]) for r in picked], [[goal] for goal in target],
                       truths=lambda i, goal: true_counterfactual(picked[i], attribute, goal), reversibility=False,
                       guidance=guidance, steps=steps, strength=strength, batch_size=batch_size)
    rows = [{
        "source": pair.source,
        "reconstruction": pair.validity.composition_mae,
        "counterfactual": mean_absolute_error(pair.counterfactual, pair.truth),
        "baseline": mean_absolute_error(pair.factual, pair.truth),
        "region_counterfactual": pair.validity.truth_mae,
        "region_baseline": pair.validity.baseline_mae,
    } for pair in pairs]
    per_source = tuple(_summary(s, [r for r in rows if r["source"] == s]) for s in config.sources
                       if any(r["source"] == s for r in rows))
    return BenchmarkMeasurement(
        attribute=attribute,
        guidance=config.guidance if guidance is None else float(guidance),
        steps=config.inversion_steps if steps is None else int(steps),
        strength=config.strength if strength is None else float(strength),
        case_ids=tuple(str(r["case_id"]) for r in picked),
        overall=_summary("all", rows),
        per_source=per_source,
        seconds=time.perf_counter() - began,
    )
