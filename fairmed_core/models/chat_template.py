"""Chat templates from a model folder, rendered within bounds: a size limit and a step limit.

A model folder's chat template is Jinja code from whoever sent the folder. transformers renders it in Jinja's
sandbox (no file or attribute access), but with no bound on time: nested loops (issue 13's probe) held the
dashboard's shared model lock forever. Here a template is refused over ``MAX_TEMPLATE_CHARS``, and a render
counts the template's executed lines (a Python trace function, on the rendering thread only, on the
template's own compiled code only) and stops at ``STEPS_PER_CONVERSATION`` per conversation with a one-line
error. The count, not a clock: the same template and input stop at the same place on any machine and under
any load. What the count does not see is one Python call doing much work (a filter over a huge string); the
sandbox caps ``range`` at 100,000 items and questions are capped in length (``prompting.MAX_QUESTION_CHARS``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from fairmed_core.errors import FairMedInputError

__all__ = ["MAX_TEMPLATE_CHARS", "STEPS_PER_CONVERSATION", "check_chat_template", "render_chat_template",
           "within_steps"]

# The largest chat templates in common use are a few thousand characters (Gemma 3's about 1,500, Llama 3.1's
# tool-calling one about 5,000).
MAX_TEMPLATE_CHARS = 64 * 1024
# The shipped templates take about 30 lines per conversation; real ones with tool handling a few hundred.
STEPS_PER_CONVERSATION = 100_000
_TEMPLATE_FILE = "<template>"  # what Jinja names the code it compiles from a string

T = TypeVar("T")


class _OutOfSteps(Exception):
    pass


def within_steps(render: Callable[[], T], steps: int) -> T:
    """``render()``, stopped with ``_OutOfSteps`` once Jinja template code has executed ``steps`` lines."""
    left = steps

    def on_line(frame, event, arg):
        nonlocal left
        if event == "line":
            left -= 1
            if left < 0:
                raise _OutOfSteps
        return on_line

    def on_call(frame, event, arg):
        # Only the template's own frames get a line tracer: the rest of the call runs at full speed.
        return on_line if frame.f_code.co_filename == _TEMPLATE_FILE else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        return render()
    finally:
        sys.settrace(previous)


def _templates(processor) -> dict[str, str]:
    template = getattr(processor, "chat_template", None)
    if template is None:
        template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    if isinstance(template, dict):
        return {str(k): v for k, v in template.items() if isinstance(v, str)}
    return {"default": template} if isinstance(template, str) else {}


def _source(processor) -> str | None:
    tokenizer = getattr(processor, "tokenizer", processor)
    return getattr(tokenizer, "name_or_path", None) or None


def check_chat_template(processor, source: str | None = None) -> None:
    """Refuse a processor whose chat template is longer than ``MAX_TEMPLATE_CHARS``."""
    for name, template in _templates(processor).items():
        if len(template) > MAX_TEMPLATE_CHARS:
            raise FairMedInputError(
                f"the chat template{'' if name == 'default' else f' {name!r}'} is {len(template):,} characters, "
                f"over the {MAX_TEMPLATE_CHARS:,} allowed", source=source or _source(processor),
                hint="use the model's original chat_template.jinja")


def render_chat_template(processor, conversations: Sequence[list[dict]]) -> list[str]:
    """Each conversation chat-templated (ending with the model turn's opening), within the size and step
    limits; a template that fails or runs past its steps is a one-line error naming the model folder."""
    import jinja2

    check_chat_template(processor)
    steps = STEPS_PER_CONVERSATION * max(1, len(conversations))
    try:
        return within_steps(lambda: processor.apply_chat_template(list(conversations), add_generation_prompt=True,
                                                                  tokenize=False), steps)
    except _OutOfSteps:
        raise FairMedInputError(
            f"the chat template did not finish within {STEPS_PER_CONVERSATION:,} steps per conversation "
            "(a loop that runs too long)", source=_source(processor),
            hint="use the model's original chat_template.jinja") from None
    except jinja2.TemplateError as error:
        raise FairMedInputError(f"the chat template fails: {error}", source=_source(processor),
                                hint="use the model's original chat_template.jinja") from error
