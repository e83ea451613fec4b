"""Rewards for GRPO/FairGRPO on the FairGRPO answer format: the binary accuracy reward and an optional format reward.

Both follow TRL's reward-function protocol: ``reward(completions, **columns) -> list[float]``, one number per
completion, where every dataset column (``answer``, ``demo``, ``dataset``, ``choices``, ...) arrives as a keyword
argument holding one value per completion. Completions may be plain strings or conversational (a list of
messages whose last assistant turn holds the text, as a string or as ``{"type": "text"}`` blocks).

Scoring is total, like the parser it uses (``fairmed_core.models.answers.parse_completion``): a malformed,
empty or non-text completion scores 0.0, never an exception, so a format failure is an ordinary (bad) outcome.
No TRL import here: the same functions score held-out evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fairmed_core.models.answers import normalise_answer, parse_completion

__all__ = ["REWARDS", "ClassBalancedAccuracyReward", "accuracy_reward", "class_weights", "completion_text",
           "format_reward"]

# The correctness rewards a GRPO job can train with (GRPOJobConfig.reward): the authors' right/wrong reward, or the
# same reward weighted so that each source's two answers count equally (see ClassBalancedAccuracyReward).
REWARDS = ("exact", "class_balanced")


def completion_text(completion: Any) -> str | None:
    """The text of one completion: a string as is; for a conversation, the last assistant turn's text (string
    content, or its text blocks joined). None when there is no text to read (the completion then scores 0)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, Sequence) or not completion:
        return None
    messages = [m for m in completion if isinstance(m, Mapping)]
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
    if not assistant:
        return None
    content = assistant[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        texts = [
            block.get("text") for block in content
            if isinstance(block, Mapping) and block.get("type", "text") == "text" and isinstance(block.get("text"), str)
        ]
        return "".join(texts) if texts else None
    return None


def _per_completion(values: Any, n: int) -> list[Any]:
    """A column as one value per completion (a single value is broadcast)."""
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        return [values] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{len(values)} values for {n} completions: pass one per completion")
    return values


def _choices_of(choices: Any) -> list[str] | None:
    if choices is None or isinstance(choices, str) or not isinstance(choices, Sequence):
        return None
    kept = [str(choice) for choice in choices if choice is not None and str(choice).strip()]
    return kept or None


def _target(answer: Any) -> str | None:
    if answer is None or isinstance(answer, bool):
        return None
    text = normalise_answer(str(answer))
    return text or None


def accuracy_reward(completions: Sequence[Any], answer: Sequence[Any], choices: Sequence[Any] | None = None,
                    **kwargs: Any) -> list[float]:
    """1.0 where the completion's last ``\\boxed{}`` answer equals the case's ``answer`` (both normalised:
    case, ``\\text{}`` wrappers, outer punctuation), else 0.0.

    With a ``choices`` column (a list of allowed answers per case, as ``grpo_dataset`` writes it), an answer
    outside the choices is a format failure and scores 0.0. No box, an empty box, a completion that is not text,
    a case without an answer: 0.0. Extra columns (``demo``, ``dataset``, TRL's ``trainer_state``...) are ignored.
    """
    completions = list(completions)
    n = len(completions)
    answers = _per_completion(answer, n)
    choice_lists = _per_completion(choices, n) if choices is not None else [None] * n
    rewards = []
    for completion, target_answer, row_choices in zip(completions, answers, choice_lists, strict=True):
        target = _target(target_answer)
        text = completion_text(completion)
        if target is None or text is None:
            rewards.append(0.0)
            continue
        parsed = parse_completion(text, choices=_choices_of(row_choices))
        ok = parsed.answer is not None and not parsed.failure and normalise_answer(parsed.answer) == target
        rewards.append(1.0 if ok else 0.0)
    return rewards


def format_reward(completions: Sequence[Any], choices: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
    """1.0 where the completion follows the FairGRPO format (reasoning in ``<think> </think>``, an answer in
    ``\\boxed{}``, one of ``choices`` when the column is there), else 0.0. Correctness is not checked."""
    completions = list(completions)
    n = len(completions)
    choice_lists = _per_completion(choices, n) if choices is not None else [None] * n
    rewards = []
    for completion, row_choices in zip(completions, choice_lists, strict=True):
        text = completion_text(completion)
        if text is None:
            rewards.append(0.0)
            continue
        rewards.append(1.0 if parse_completion(text, choices=_choices_of(row_choices)).format_ok else 0.0)
    return rewards


def class_weights(answers: Sequence[Any], sources: Sequence[Any]) -> dict[tuple[str, str], float]:
    """Per (source, normalised answer): ``n_source / (k_source * n_source,answer)``, with ``k_source`` the number of
    answers the source has, so that over a source's cases the weights average 1 and every answer's cases carry the
    same total weight (inverse-frequency weights, as scikit-learn's ``class_weight="balanced"``)."""
    counts: dict[str, dict[str, int]] = {}
    for answer, source in zip(answers, sources, strict=True):
        target = _target(answer)
        if target is None:
            continue
        per_source = counts.setdefault(str(source), {})
        per_source[target] = per_source.get(target, 0) + 1
    weights = {}
    for source, per_answer in counts.items():
        total = sum(per_answer.values())
        for answer, n in per_answer.items():
            weights[(source, answer)] = total / (len(per_answer) * n)
    return weights


class ClassBalancedAccuracyReward:
    """The accuracy reward times the weight of the case's answer within its source (:func:`class_weights` of the
    training data): a right answer on a rare answer earns more, so that the expected reward per source is its
    balanced accuracy (the mean of sensitivity and specificity) instead of its accuracy.

    Why: with the right/wrong reward, every prompt whose rollouts disagree pulls equally, and the common answer's
    prompts outnumber the rare one's, so the policy learns to give the common answer (on the benchmark: recall
    falls, specificity rises, accuracy stays, F1 falls; docs/RESULTS.md). The weight is a constant per prompt (all
    G rollouts share the case), so it survives only advantages that do not divide by the prompt's own reward
    spread: GRPO with ``scale_rewards="none"`` (centred only), RLOO, REINFORCE++, FairGRPO with
    ``within_prompt_scale=False``. A departure from the authors' reward (docs/FAIRGRPO_DEVIATIONS.md)."""

    __name__ = "class_balanced_accuracy_reward"  # TRL logs each reward function under its name

    def __init__(self, weights: Mapping[tuple[str, str], float]):
        if not weights:
            raise ValueError("no training answers to weigh")
        self.weights = dict(weights)

    def attainable(self, answer: Any, dataset: Any) -> float:
        """The reward a right answer to this case earns: its answer's weight within its source (1 for an answer
        the training data did not weigh)."""
        return self.weights.get((str(dataset), _target(answer) or ""), 1.0)

    def __call__(self, completions: Sequence[Any], answer: Sequence[Any], dataset: Sequence[Any] | None = None,
                 choices: Sequence[Any] | None = None, **kwargs: Any) -> list[float]:
        completions = list(completions)
        n = len(completions)
        right = accuracy_reward(completions, answer, choices)
        answers = _per_completion(answer, n)
        sources = _per_completion(dataset, n)
        return [value * self.attainable(target, source)
                for value, target, source in zip(right, answers, sources, strict=True)]
