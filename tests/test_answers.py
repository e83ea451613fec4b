"""Parsing of FairGRPO-format completions is total and exact on the cases that matter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairmed_core.models.answers import FORMAT_INSTRUCTION, build_prompt, parse_completion


def test_well_formed_completion_gives_reasoning_and_answer():
    parsed = parse_completion("<think>Dense blob in the left lower zone.</think> \\boxed{Yes}", choices=["yes", "no"])
    assert parsed.answer == "yes" and parsed.reasoning == "Dense blob in the left lower zone."
    assert parsed.format_ok and parsed.failure == ""


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("\\boxed{\\text{No}}.", "no"),
        ("first \\boxed{yes} then changed my mind \\boxed{no}", "no"),
        ("\\boxed{ Malignant melanoma. }", "malignant melanoma"),
        ("\\boxed{a{b}c}", "a{b}c"),
        ("\\boxed{yes} and an unclosed \\boxed{no", "yes"),
    ],
)
def test_last_closed_box_is_the_answer(completion, answer):
    assert parse_completion(completion).answer == answer


@pytest.mark.parametrize(
    ("completion", "failure"),
    [
        ("<think>hmm</think> yes", "no \\boxed{} answer"),
        ("\\boxed{}", "empty \\boxed{} answer"),
        ("\\boxed{  . }", "empty \\boxed{} answer"),
        ("\\boxed{maybe}", "not one of"),
        (None, "not text"),
    ],
)
def test_format_failures_are_named_not_raised(completion, failure):
    parsed = parse_completion(completion, choices=["yes", "no"])
    assert failure in parsed.failure and not parsed.format_ok


def test_answer_without_think_tags_parses_but_is_not_well_formatted():
    parsed = parse_completion("\\boxed{no}", choices=["yes", "no"])
    assert parsed.answer == "no" and not parsed.format_ok


def test_prompt_carries_the_format_instruction():
    prompt = build_prompt("<image> Is there an opacity in this chest X-ray? ")
    assert prompt.startswith("<image> Is there an opacity") and prompt.endswith(FORMAT_INSTRUCTION)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab{}\\<>/ boxedthink.")), max_size=60))
def test_parsing_is_total(text):
    parsed = parse_completion(text, choices=["yes", "no"])  # never raises
    if parsed.failure:
        assert not parsed.format_ok  # every failure is counted as a format failure
    else:
        assert parsed.answer in ("yes", "no")
