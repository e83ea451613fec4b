"""One case under review: the model's answer on the case's image and on its true counterfactual.

The synthetic benchmark keeps each case's latent patient, so ``render`` draws the same patient with one
sensitive attribute changed (other sex, age group or skin tone) and nothing else: the *true* counterfactual,
which diffusion editing of real images can only approximate. Both images go to the model in one batch with the
same question and decoding options, so any difference in the answer is the attribute's doing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fairmed_core.data.schema import AGE_GROUPS
from fairmed_core.data.synth import RENDER_KEYWORDS, SKIN_TONES, SynthCase, attribute_region, case_from_record, render
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.generation import Generation, GenerationOptions, generate_answers
from fairmed_core.models.loading import LoadedModel

__all__ = ["CounterfactualChange", "CaseReview", "counterfactual_choices", "counterfactual_image", "review_case"]

# The attribute names of the data contract, and the keyword ``render`` takes for each.


@dataclass(frozen=True)
class CounterfactualChange:
    """Which attribute the counterfactual changes, from what to what (group keys: ``F``, ``A4``, ``dark``)."""

    attribute: str
    factual: str
    counterfactual: str

    def describe(self) -> str:
        return f"{self.attribute} {self.factual} -> {self.counterfactual}"


@dataclass(frozen=True)
class CaseReview:
    """The model's answers on one case and, where asked, on its true counterfactual."""

    case_id: str
    question: str
    truth: str
    image: Image.Image
    answer: Generation
    change: CounterfactualChange | None = None
    counterfactual: Image.Image | None = None
    counterfactual_answer: Generation | None = None
    changed_pixel_share: float | None = None  # share of pixels the counterfactual is allowed to change

    @property
    def answer_changed(self) -> bool | None:
        """Whether the counterfactual changed the parsed answer (a format failure counts as its own answer)."""
        if self.counterfactual_answer is None:
            return None
        return _outcome(self.answer) != _outcome(self.counterfactual_answer)


def _outcome(generation: Generation) -> str:
    return generation.answer if generation.format_ok and generation.answer is not None else "(format failure)"


def _synth_case(record: Mapping) -> SynthCase:
    try:
        return case_from_record(record)
    except (FairMedInputError, KeyError, TypeError, ValueError) as error:
        raise FairMedInputError(
            "this case has no latent patient to re-render, so it has no true counterfactual",
            row=None, hint="true counterfactuals exist for the synthetic benchmark (fairmed synth) only",
        ) from error


def _factual_group(case: SynthCase, attribute: str) -> str | None:
    if attribute == "sex":
        return case.sex
    if attribute == "age_group":
        return case.age_group
    if attribute == "skin_tone":
        return case.skin_tone
    return None


def counterfactual_choices(record: Mapping) -> dict[str, tuple[str, ...]]:
    """For each attribute the case's true counterfactual can change, the groups it can be changed to.

    Empty for cases that are not from the synthetic benchmark. Skin tone exists for dermoscopy only."""
    try:
        case = case_from_record(record)
    except (FairMedInputError, KeyError, TypeError, ValueError):
        return {}
    options = {"sex": ("M", "F"), "age_group": AGE_GROUPS}
    if case.skin_tone is not None:
        options["skin_tone"] = SKIN_TONES
    return {attribute: tuple(g for g in groups if g != _factual_group(case, attribute))
            for attribute, groups in options.items()}


def counterfactual_image(record: Mapping, attribute: str, group: str) -> tuple[Image.Image, CounterfactualChange,
                                                                                   float]:
    """The case drawn with ``attribute`` set to ``group``; returns the image, the change, and the share of
    pixels the change is allowed to touch (``attribute_region``)."""
    case = _synth_case(record)
    choices = counterfactual_choices(record)
    if attribute not in choices:
        raise FairMedInputError(f"attribute {attribute!r} has no counterfactual for a {case.source} case",
                                column=attribute, hint=f"choose one of {sorted(choices)}")
    if group not in choices[attribute]:
        raise FairMedInputError(f"{group!r} is not another {attribute} group for this case", column=attribute,
                                hint=f"choose one of {list(choices[attribute])}")
    pixels = render(case, **{RENDER_KEYWORDS[attribute]: group})
    region = attribute_region(case, RENDER_KEYWORDS[attribute])
    change = CounterfactualChange(attribute, str(_factual_group(case, attribute)), group)
    return Image.fromarray(np.ascontiguousarray(pixels)), change, float(region.mean())


def review_case(
    loaded: LoadedModel,
    record: Mapping,
    image: Image.Image,
    *,
    change: tuple[str, str] | None = None,
    options: GenerationOptions | None = None,
    choices: tuple[str, ...] | None = None,
) -> CaseReview:
    """Answer the case (its stored ``image``) and, with ``change=(attribute, group)``, its true counterfactual.

    Both go through ``generate_answers`` in one call, with the same question and options; sampling is seeded,
    so the pair is reproducible."""
    question = str(record["problem"])
    images = [[image]]
    counterfactual, made, share = None, None, None
    if change is not None:
        counterfactual, made, share = counterfactual_image(record, *change)
        images.append([counterfactual])
    answers = generate_answers(loaded, [question] * len(images), images, options, choices=choices)
    return CaseReview(
        case_id=str(record["case_id"]), question=question, truth=str(record["answer"]), image=image,
        answer=answers[0], change=made, counterfactual=counterfactual,
        counterfactual_answer=answers[1] if counterfactual is not None else None, changed_pixel_share=share,
    )
