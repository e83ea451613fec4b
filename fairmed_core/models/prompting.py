"""Turn cases into Gemma 3 chat inputs: the FairGRPO prompt, images in order, one processor call per batch.

A question in the data contract marks its images with ``<image>``; each marker becomes an image item of the
user turn, in order, and images without a marker go first (where the authors' prompts put them). Images are
normalised to 8-bit RGB first (16-bit, RGBA, palette and greyscale inputs all occur in medical data).

A question is text from a user's file, so it is checked before the tokenizer sees it: at most
``MAX_QUESTION_CHARS`` characters (a 30 MB question aborts the tokenizer), and none of the tokenizer's control
tokens (``<image_soft_token>`` in a question breaks the image-token count of the whole batch; ``<end_of_turn>``
would let a question write the model's turn). The chat template itself is rendered within a size and step
limit (``chat_template``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fairmed_core.errors import FairMedInputError
from fairmed_core.models.answers import build_prompt
from fairmed_core.models.chat_template import render_chat_template

__all__ = ["IMAGE_PLACEHOLDER", "MAX_QUESTION_CHARS", "chat_messages", "check_question", "control_tokens_of",
           "encode_prompts", "prompt_texts", "to_model_image"]

IMAGE_PLACEHOLDER = "<image>"
MAX_QUESTION_CHARS = 32_768
# Gemma's chat-turn markers are control tokens too, though tokenizers do not all list them as special.
_CHAT_CONTROL_TOKENS = ("<start_of_turn>", "<end_of_turn>")
_ANGLE_TOKEN = re.compile(r"<[^<>\s]{1,80}>")


def _question_start(question: str) -> str:
    start = " ".join(question.split())[:60]
    return repr(start + ("..." if len(question) > 60 else ""))


def check_question(question: object, *, control_tokens: frozenset[str] = frozenset()) -> str:
    """The question as text, refused when it is not text, longer than ``MAX_QUESTION_CHARS`` or holds one of
    ``control_tokens`` (besides the ``<image>`` marker)."""
    if not isinstance(question, str):
        raise FairMedInputError(f"the question is a {type(question).__name__}, not text", column="problem")
    if len(question) > MAX_QUESTION_CHARS:
        raise FairMedInputError(
            f"the question {_question_start(question)} is {len(question):,} characters, more than the "
            f"{MAX_QUESTION_CHARS:,} a question may have",
            column="problem", hint="shorten the question; put case notes in another field",
        )
    if control_tokens:
        for token in _ANGLE_TOKEN.findall(question.replace(IMAGE_PLACEHOLDER, " ")):
            if token in control_tokens:
                raise FairMedInputError(
                    f"the question {_question_start(question)} contains the model's control token {token!r}",
                    column="problem", hint=f"remove it; mark where an image goes with {IMAGE_PLACEHOLDER}",
                )
    return question


def control_tokens_of(processor) -> frozenset[str]:
    """The control tokens a question must not contain: the tokenizer's special tokens, the processor's image
    tokens and Gemma's chat-turn markers (the ``<image>`` marker of the data contract excepted)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    tokens = set(getattr(tokenizer, "all_special_tokens", ()) or ())
    for name in ("image_token", "boi_token", "eoi_token", "full_image_sequence"):
        value = getattr(processor, name, None)
        if isinstance(value, str) and value.strip():
            tokens.update(_ANGLE_TOKEN.findall(value))
    tokens.update(_CHAT_CONTROL_TOKENS)
    tokens.discard(IMAGE_PLACEHOLDER)
    return frozenset(token for token in tokens if isinstance(token, str) and token)


def to_model_image(image: Image.Image) -> Image.Image:
    """8-bit RGB for the processor: 16-bit and float images are min-max windowed, transparency is composited
    on black (the background of every modality we read), palette and greyscale are expanded."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(np.min(pixels)), float(np.max(pixels))
        scaled = np.zeros_like(pixels) if high <= low else (pixels - low) / (high - low)
        image = Image.fromarray(np.round(scaled * 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def chat_messages(question: str, n_images: int, *, format_instruction: bool = True) -> list[dict]:
    """One user turn: the question's text with an image item at each ``<image>`` marker (unmarked images first).

    With ``format_instruction`` the FairGRPO instruction (think tags, boxed answer) follows the question. A
    question over ``MAX_QUESTION_CHARS`` characters is refused (see ``check_question``)."""
    parts = check_question(question).split(IMAGE_PLACEHOLDER)
    n_markers = len(parts) - 1
    if n_markers > n_images:
        raise FairMedInputError(
            f"the question marks {n_markers} images with {IMAGE_PLACEHOLDER!r} but the case has {n_images}",
            column="problem",
        )
    content: list[dict] = [{"type": "image"} for _ in range(n_images - n_markers)]
    for index, part in enumerate(parts):
        text = part.strip()
        if index == len(parts) - 1 and format_instruction:
            text = build_prompt(text)
        if text:
            content.append({"type": "text", "text": text})
        if index < n_markers:
            content.append({"type": "image"})
    return [{"role": "user", "content": content}]


def prompt_texts(processor, questions: Sequence[str], image_counts: Sequence[int], *,
                 format_instruction: bool = True) -> list[str]:
    """The chat-templated prompt of each question, ending with the model turn's opening; a question holding one
    of the model's control tokens is refused (see ``check_question``)."""
    control_tokens = control_tokens_of(processor)
    conversations = [chat_messages(check_question(q, control_tokens=control_tokens), n,
                                   format_instruction=format_instruction)
                     for q, n in zip(questions, image_counts)]
    return render_chat_template(processor, conversations)  # bounded: the template came with the model folder


def encode_prompts(processor, questions: Sequence[str], images: Sequence[Sequence[Image.Image]], *,
                   max_prompt_tokens: int | None = None, format_instruction: bool = True):
    """Tokenise a batch (left-padded) with its images; refuse prompts longer than ``max_prompt_tokens``.

    Returns the processor's ``BatchFeature`` (``input_ids``, ``attention_mask``, ``token_type_ids``,
    ``pixel_values``)."""
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image lists")
    texts = prompt_texts(processor, questions, [len(group) for group in images],
                         format_instruction=format_instruction)
    model_images = [[to_model_image(image) for image in group] for group in images]
    has_images = any(model_images)
    if has_images and not all(model_images):
        raise FairMedInputError("a batch must be all image cases or all text-only cases", column="images")
    processor.tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    batch = processor(text=texts, images=model_images if has_images else None, return_tensors="pt",
                      padding=True)
    if max_prompt_tokens is not None:
        lengths = batch["attention_mask"].sum(dim=1)
        longest = int(lengths.max())
        if longest > max_prompt_tokens:
            row = int(lengths.argmax())
            raise FairMedInputError(
                f"the prompt is {longest} tokens (question and image tokens) but the model takes at most "
                f"{max_prompt_tokens} before its answer",
                column="problem", row=row,
                hint="shorten the question or lower max new tokens",
            )
    return batch
