"""The FairGRPO answer format: the instruction appended to every question, and total parsing of completions.

The authors prompt for reasoning inside ``<think> </think>`` and the final answer inside ``\\boxed{}``.
Parsing is total: every string yields either an answer or a named format failure, never an exception, so
format failures can be counted per group like any other outcome.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FORMAT_INSTRUCTION", "ParsedCompletion", "build_prompt", "parse_completion"]

FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in \\boxed{}."
)

_THINK = re.compile(r"<think>(.*?)</think>", flags=re.DOTALL)
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion said: its reasoning, its answer (None when unparseable) and why it failed, if it did."""

    answer: str | None
    reasoning: str
    has_reasoning_tags: bool
    failure: str  # "" when the answer parsed and (with choices) is one of them

    @property
    def format_ok(self) -> bool:
        """The FairGRPO format: reasoning in think tags and an answer in a box."""
        return self.answer is not None and self.has_reasoning_tags and not self.failure


def build_prompt(question: str) -> str:
    """The question followed by the FairGRPO format instruction (image placeholders stay where they are)."""
    return f"{question.strip()} {FORMAT_INSTRUCTION}"


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, with nested braces balanced; None if there is no closed box."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 0
        for index in range(start + len("\\boxed"), len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len("\\boxed{") : index]
        start = text.rfind("\\boxed{", 0, start)  # unclosed: an earlier, closed box may still answer
    return None


def normalise_answer(raw: str) -> str:
    """A model's written answer as compared with the label: lower-cased, ``\\text{}`` unwrapped, outer punctuation
    and whitespace stripped ("\\text{Yes}." -> "yes"). It maps no spellings (a model that answers "1" did not
    answer "yes"); a dataset's label column is read through ``data.schema.canonical_label`` instead."""
    text = raw
    while True:
        unwrapped = _TEXT_WRAPPER.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    return re.sub(r"\s+", " ", text).strip().strip(".,;:!?\"'()[] ").lower()


def parse_completion(text: object, *, choices: Sequence[str] | None = None) -> ParsedCompletion:
    """Parse one completion; with ``choices`` the answer must be one of them (compared after normalising)."""
    if not isinstance(text, str):
        return ParsedCompletion(None, "", False, f"completion is {type(text).__name__}, not text")
    think = _THINK.search(text)
    reasoning = think.group(1).strip() if think else ""
    boxed = _last_boxed(text)
    if boxed is None:
        return ParsedCompletion(None, reasoning, think is not None, "no \\boxed{} answer")
    answer = normalise_answer(boxed)
    if not answer:
        return ParsedCompletion(None, reasoning, think is not None, "empty \\boxed{} answer")
    if choices is not None:
        by_key = {normalise_answer(choice): choice for choice in choices}
        if answer not in by_key:
            return ParsedCompletion(answer, reasoning, think is not None,
                                    f"answer {answer!r} is not one of {sorted(by_key)}")
        answer = by_key[answer]
    return ParsedCompletion(answer, reasoning, think is not None, "")
