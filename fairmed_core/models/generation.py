"""Generate answers for a list of cases in batches and parse them (think tags, boxed answer).

Batches are formed from prompts of equal token length where possible (sorted by length, order restored at
the end): less padding is faster, and greedy decoding of an unpadded batch equals decoding each case alone.
Special tokens (image, turn and padding markers) are suppressed: a sampled image token would break the next
forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from fairmed_core.errors import FairMedInputError
from fairmed_core.models.answers import parse_completion
from fairmed_core.models.generation_options import GenerationOptions
from fairmed_core.models.loading import LoadedModel
from fairmed_core.models.prompting import encode_prompts, prompt_texts

__all__ = ["Generation", "GenerationOptions", "generate_answers"]

_KEEP_TOKENS = ("<end_of_turn>", "<eos>")  # the stop tokens must stay possible


@dataclass(frozen=True)
class Generation:
    """One case's output: the raw completion, what parsing found in it, and what it cost."""

    completion: str
    answer: str | None
    reasoning: str
    format_ok: bool
    failure: str
    new_tokens: int
    generation_time_s: float  # the batch's wall time divided by its size


def _suppressed_token_ids(tokenizer) -> list[int]:
    keep = set(tokenizer.convert_tokens_to_ids(list(_KEEP_TOKENS)))
    special = set(tokenizer.all_special_ids)
    # all_special_ids lists only the named roles (bos, pad, image, ...); turn markers such as <start_of_turn>
    # (and Gemma's unused tokens) are special added tokens without a role, and must not be sampled either.
    special.update(int(token_id) for token_id, token in tokenizer.added_tokens_decoder.items() if token.special)
    for name in ("image_token_id", "boi_token_id", "eoi_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            special.add(int(token_id))
    return sorted(special - keep)


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda index: (lengths[index], index))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_answers(
    loaded: LoadedModel,
    questions: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
    options: GenerationOptions | None = None,
    *,
    choices: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """Answer every question (with its images) and parse the completions; results keep the input order.

    ``progress(done, total)`` is called after each batch. ``choices`` restricts valid answers (e.g. yes/no):
    anything else is a format failure."""
    options = options or GenerationOptions()
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image lists")
    processor, model = loaded.processor, loaded.model
    tokenizer = processor.tokenizer
    max_prompt_tokens = loaded.context_length - options.max_new_tokens
    texts = prompt_texts(processor, questions, [len(group) for group in images])
    # Text length orders the batches; image tokens are the same number per image for every case.
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1000 * len(group)
               for text, group in zip(texts, images)]
    results: list[Generation | None] = [None] * len(questions)
    suppress = _suppressed_token_ids(tokenizer)
    generator_kwargs = {
        "max_new_tokens": options.max_new_tokens,
        "do_sample": options.do_sample,
        "suppress_tokens": suppress,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if options.do_sample:
        generator_kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
    else:
        generator_kwargs.update(temperature=None, top_p=None, top_k=None)
    done = 0
    if options.do_sample:
        torch.manual_seed(options.seed)
    for batch_indices in _length_batches(lengths, options.batch_size):
        try:
            batch = encode_prompts(processor, [questions[i] for i in batch_indices],
                                   [images[i] for i in batch_indices], max_prompt_tokens=max_prompt_tokens)
        except FairMedInputError as error:
            if error.row is None:
                raise
            raise FairMedInputError(error.message, column=error.column, row=batch_indices[error.row],
                                    hint=error.hint) from error
        batch = batch.to(loaded.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(loaded.dtype)
        started = time.perf_counter()
        with torch.inference_mode():
            output = model.generate(**batch, **generator_kwargs)
        elapsed = time.perf_counter() - started
        new_tokens = output[:, batch["input_ids"].shape[1]:].cpu()
        stop_ids = set(tokenizer.convert_tokens_to_ids(list(_KEEP_TOKENS)))
        for row, index in enumerate(batch_indices):
            tokens = new_tokens[row].tolist()
            produced = next((n + 1 for n, t in enumerate(tokens) if t in stop_ids), len(tokens))
            completion = tokenizer.decode(tokens[:produced], skip_special_tokens=True)
            parsed = parse_completion(completion, choices=choices)
            results[index] = Generation(
                completion=completion, answer=parsed.answer, reasoning=parsed.reasoning,
                format_ok=parsed.format_ok, failure=parsed.failure, new_tokens=produced,
                generation_time_s=elapsed / len(batch_indices),
            )
        done += len(batch_indices)
        if progress is not None:
            progress(done, len(questions))
    return [result for result in results if result is not None]
