"""A model folder's chat template is code from whoever sent it: rendered within a size and a step limit, with a
one-line error naming the folder (issue 13: nested loops held the shared model lock forever)."""

from __future__ import annotations

import shutil
import sys

import pytest
from transformers import AutoProcessor

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import TINY_MODEL
from fairmed_core.models.chat_template import MAX_TEMPLATE_CHARS, render_chat_template, within_steps
from fairmed_core.models.loading import load_model
from fairmed_core.models.prompting import chat_messages, prompt_texts

# 10^10 loop iterations: hours unbounded (Jinja's sandbox caps each range at 100,000 items, not their product).
NESTED_LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture()
def processor():
    return AutoProcessor.from_pretrained(TINY_MODEL)


def test_the_shipped_template_renders_as_before(processor):
    conversations = [chat_messages("Is there an opacity?", 1), chat_messages("<image> and <image>?", 2)]
    expected = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    assert render_chat_template(processor, conversations) == expected
    assert prompt_texts(processor, ["Is there an opacity?"], [1]) == expected[:1]


def test_a_template_with_nested_loops_is_stopped_by_its_step_count(processor):
    processor.chat_template = NESTED_LOOPS
    tracer = sys.gettrace()
    with pytest.raises(FairMedInputError, match=r"did not finish within 100,000 steps per conversation"):
        prompt_texts(processor, ["Is there an opacity?"], [1])
    assert sys.gettrace() is tracer  # the trace function is gone again (a debugger or coverage keeps its own)


def test_the_step_count_sees_only_template_code():
    # Python code outside a template runs untraced: a long loop here is not counted.
    assert within_steps(lambda: sum(range(200_000)), steps=10) == sum(range(200_000))


@pytest.mark.parametrize(("template", "message"), [
    ("x" * (MAX_TEMPLATE_CHARS + 1), f"{MAX_TEMPLATE_CHARS + 1:,} characters, over the {MAX_TEMPLATE_CHARS:,}"),
    ("{{ raise_exception('no system turn allowed') }}", "the chat template fails: no system turn allowed"),
    ("{% for message in messages %}", "the chat template fails: Unexpected end of template"),
])
def test_oversized_and_failing_templates_are_one_line_errors(processor, template, message):
    processor.chat_template = template
    with pytest.raises(FairMedInputError) as caught:
        render_chat_template(processor, [chat_messages("Is there an opacity?", 1)])
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_model_folder_with_a_pathological_template_is_refused_at_load(tmp_path):
    folder = shutil.copytree(TINY_MODEL, tmp_path / "model", ignore=shutil.ignore_patterns("evaluation"))
    (folder / "chat_template.jinja").write_text(NESTED_LOOPS)
    with pytest.raises(FairMedInputError, match="did not finish within") as caught:
        load_model(folder, device="cpu")
    assert str(folder) in str(caught.value)
