"""Questions come from users' files: an overlong question or one holding the model's control tokens is refused
with a clear error before the tokenizer sees it."""

from __future__ import annotations

import pytest
from transformers import AutoProcessor

from fairmed_core.errors import FairMedInputError
from fairmed_core.models.prompting import (
    MAX_QUESTION_CHARS,
    chat_messages,
    check_question,
    control_tokens_of,
    prompt_texts,
)
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(REPO_ROOT / "assets" / "models" / "tiny-fairmedgemma")


def test_a_question_at_the_limit_is_kept_and_one_over_it_is_refused_naming_its_start():
    question = "<image> Is there a nodule? " + "x" * (MAX_QUESTION_CHARS - 27)
    assert len(question) == MAX_QUESTION_CHARS and check_question(question) == question
    with pytest.raises(FairMedInputError) as caught:
        chat_messages(question + "y", 1)
    text = str(caught.value)
    assert f"{MAX_QUESTION_CHARS + 1:,} characters" in text and "'<image> Is there a nodule?" in text
    assert caught.value.column == "problem"


def test_a_thirty_megabyte_question_is_refused_before_the_tokenizer(processor, monkeypatch):
    monkeypatch.setattr(type(processor), "apply_chat_template",
                        lambda *a, **k: pytest.fail("the tokenizer must not see it"))
    with pytest.raises(FairMedInputError, match="characters, more than"):
        prompt_texts(processor, ["<image> " + "a" * 30_000_000], [1])


@pytest.mark.parametrize("token", ["<image_soft_token>", "<start_of_image>", "<end_of_turn>", "<bos>"])
def test_a_question_holding_a_control_token_is_refused(processor, token):
    assert token in control_tokens_of(processor)
    with pytest.raises(FairMedInputError) as caught:
        prompt_texts(processor, ["<image> fine", f"<image> Is there {token} a mass?"], [1, 1])
    assert repr(token) in str(caught.value) and "<image>" in str(caught.value)


def test_ordinary_angle_brackets_and_the_image_marker_are_kept(processor):
    texts = prompt_texts(processor, ["<image> Is the mass < 2 cm or > 3 cm? <think> is fine"], [1])
    assert len(texts) == 1 and "< 2 cm" in texts[0]
    assert "<image>" not in control_tokens_of(processor)


def test_a_question_that_is_not_text_is_refused():
    with pytest.raises(FairMedInputError, match="not text"):
        check_question(None)
