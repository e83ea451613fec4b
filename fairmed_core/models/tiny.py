"""Build the tiny FairMedGemma: a real ``Gemma3ForConditionalGeneration`` small enough to train and run on a CPU.

Same classes, processor and chat format as MedGemma-4B, so every code path (loading, prompting, generation,
training) is the one a real checkpoint takes; only the sizes differ. The pieces:

- a word-level tokenizer over a given corpus (the benchmark's questions, reasoning and answers) with the
  Gemma 3 special tokens; words carry their leading space so decoding is lossless for in-vocabulary text;
- ``Gemma3ImageProcessorPil`` at the benchmark's image size (the default processor needs torchvision);
- a Gemma 3 chat template (user/model turns, ``<start_of_image>`` where the image goes);
- a model config whose facts were measured on transformers 5.23 (see DESIGN.md section 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    PreTrainedTokenizerFast,
)

from fairmed_core.models.tiny_config import TinyModelConfig

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TinyModelConfig",
    "build_processor",
    "build_tiny_model",
    "build_tokenizer",
    "pre_tokenize",
]

# Ids 0-3 follow Gemma's convention (pad 0, eos 1, bos 2, unk 3); the turn and image markers keep Gemma's names.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>")
# Reasoning tags are ordinary (non-special) added tokens: decoding with skip_special_tokens keeps them.
REASONING_TOKENS = ("<think>", "</think>")
# A word with its leading space, one other character with its leading space, or one whitespace character.
_PIECE = r" ?[A-Za-z0-9'\-]+| ?[^A-Za-z0-9'\-\s]|\s"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def pre_tokenize(text: str) -> list[str]:
    """Split text the way the tiny tokenizer does (special and reasoning tokens are kept whole)."""
    specials = "|".join(re.escape(token) for token in (*SPECIAL_TOKENS, *REASONING_TOKENS))
    pieces: list[str] = []
    for chunk in re.split(f"({specials})", text):
        if chunk in SPECIAL_TOKENS or chunk in REASONING_TOKENS:
            continue
        pieces.extend(re.findall(_PIECE, chunk))
    return pieces


def build_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level Gemma-3-style tokenizer whose vocabulary is every piece of ``corpus`` (sorted, so the same
    corpus always gives the same ids). Out-of-vocabulary words become ``<unk>``."""
    pieces = sorted({piece for text in corpus for piece in pre_tokenize(text)})
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *REASONING_TOKENS, *pieces))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(_PIECE), behavior="isolated")
    backend.decoder = decoders.Fuse()  # pieces carry their own spaces
    # Registered as added tokens so they are matched whole before the pre-tokenizer splits the text.
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in REASONING_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_soft_token>"},
        clean_up_tokenization_spaces=False,
        padding_side="left",  # decoder-only generation pads on the left
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig) -> Gemma3Processor:
    """The Gemma 3 processor: PIL image processor at ``config.image_size``, ``image_tokens`` per image."""
    image_processor = Gemma3ImageProcessorPil(
        size={"height": config.image_size, "width": config.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                           image_seq_length=config.image_tokens)


def _gemma3_config(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig) -> Gemma3Config:
    ids = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_hidden,
        "intermediate_size": config.text_intermediate,
        "num_hidden_layers": config.text_layers,
        "num_attention_heads": config.text_heads,
        "num_key_value_heads": config.text_kv_heads,
        # Both default to 256 in Gemma3TextConfig; a small model must set them or attention is mis-scaled.
        "head_dim": config.head_dim,
        "query_pre_attn_scalar": config.head_dim,
        "max_position_embeddings": config.max_positions,
        "sliding_window": config.sliding_window,
        "pad_token_id": ids("<pad>"),
        "eos_token_id": [ids("<eos>"), ids("<end_of_turn>")],
        "bos_token_id": ids("<bos>"),
    }
    vision_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": config.vision_hidden,
        "intermediate_size": 2 * config.vision_hidden,
        "num_hidden_layers": config.vision_layers,
        "num_attention_heads": config.vision_heads,
        "image_size": config.image_size,
        "patch_size": config.patch_size,
        "vision_use_head": False,
    }
    return Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=config.image_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        pad_token_id=ids("<pad>"),
        eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
        bos_token_id=ids("<bos>"),
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig | None = None, *,
                     seed: int = 0) -> Gemma3ForConditionalGeneration:
    """A freshly initialised tiny ``Gemma3ForConditionalGeneration`` (fp32) for ``tokenizer``'s vocabulary."""
    config = config or TinyModelConfig()
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(_gemma3_config(tokenizer, config))
    # The projector's weight starts at zero, so a fresh model ignores the image; give it a normal init.
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config.pad_token_id = ids("<pad>")
    model.generation_config.bos_token_id = ids("<bos>")
    model.generation_config.eos_token_id = [ids("<eos>"), ids("<end_of_turn>")]
    return model
