"""Supervised targets for the benchmark: a short reasoning grounded in the case's latent findings (what is seen,
where, how large), then the manifest answer in ``\\boxed{}``, in the FairGRPO format.

The reasoning follows the manifest answer, not the hidden truth: a case whose label was flipped by the
benchmark's label-noise knob is described as its (noisy) label says, as a real report written with that label
would be. Locations use the radiological convention (the patient's right is on the image's left).
"""

from __future__ import annotations

import itertools

from fairmed_core.data.synth import SynthCase

__all__ = ["reasoning_target", "target_corpus", "reasoning_text"]

_SIZES = ("small", "medium", "large")
_CXR_ZONES = ("upper", "middle", "lower")
_SIDES = ("right", "left")
_MAMMO_REGIONS = ("upper", "central", "lower")
_MAMMO_DEPTHS = ("posterior", "middle", "anterior")


def _tercile(value: float, low: float, high: float) -> int:
    """0, 1 or 2: which third of [low, high] ``value`` falls in."""
    fraction = (value - low) / (high - low)
    return min(2, max(0, int(fraction * 3)))


def _cxr(case: SynthCase, positive: bool) -> str:
    if not positive:
        return "both lungs are clear , no opacity is seen ."
    latent = case.latent
    side = _SIDES[0] if latent.finding_x < latent.shift_x else _SIDES[1]
    zone = _CXR_ZONES[_tercile((latent.finding_y - latent.shift_y) / latent.scale, -0.30, 0.50)]
    size = _SIZES[_tercile(latent.finding_size, 0.15, 0.25)]
    return f"there is a {size} opacity in the {zone} zone of the {side} lung ."


def _derm(case: SynthCase, positive: bool) -> str:
    size = _SIZES[_tercile(case.latent.finding_size, 0.16, 0.38)]
    if positive:
        return f"the lesion is {size} with an irregular border and uneven dark colour ."
    return f"the lesion is {size} with a regular border and even colour ."


def _mammo(case: SynthCase, positive: bool) -> str:
    if not positive:
        return "the breast tissue shows no mass ."
    latent = case.latent
    dx = (latent.finding_x - latent.shift_x + 1.0) / (1.15 * latent.scale)
    dy = (latent.finding_y - latent.shift_y) / (0.72 * latent.scale)
    radius = (dx * dx + dy * dy) ** 0.5
    region = _MAMMO_REGIONS[_tercile(dy / max(radius, 1e-9), -0.78, 0.78)]
    depth = _MAMMO_DEPTHS[_tercile(radius, 0.25, 0.75)]
    size = _SIZES[_tercile(latent.finding_size, 0.16, 0.28)]
    return f"there is a {size} mass in the {region} {depth} breast ."


_DESCRIBE = {"synth_cxr": _cxr, "synth_derm": _derm, "synth_mammo": _mammo}


def reasoning_text(case: SynthCase, answer: str | None = None) -> str:
    """The reasoning sentence for ``case`` as ``answer`` ("yes"/"no"; default: the manifest answer) says."""
    answer = case.answer if answer is None else answer
    return _DESCRIBE[case.source](case, answer == "yes")


def reasoning_target(case: SynthCase) -> str:
    """The full SFT target: ``<think> reasoning </think> \\boxed{answer}``."""
    return f"<think> {reasoning_text(case)} </think> \\boxed{{{case.answer}}}"


def target_corpus() -> list[str]:
    """Every reasoning sentence and answer the targets can produce (the tiny tokenizer's vocabulary source)."""
    sentences = ["both lungs are clear , no opacity is seen .", "the breast tissue shows no mass ."]
    sentences += [f"there is a {s} opacity in the {z} zone of the {side} lung ."
                  for s, z, side in itertools.product(_SIZES, _CXR_ZONES, _SIDES)]
    sentences += [f"the lesion is {s} with an irregular border and uneven dark colour ." for s in _SIZES]
    sentences += [f"the lesion is {s} with a regular border and even colour ." for s in _SIZES]
    sentences += [f"there is a {s} mass in the {r} {d} breast ."
                  for s, r, d in itertools.product(_SIZES, _MAMMO_REGIONS, _MAMMO_DEPTHS)]
    return [f"<think> {sentence} </think> \\boxed{{{answer}}}" for sentence in sentences
            for answer in ("yes", "no")]
