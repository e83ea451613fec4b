"""MedGemma-4B's architecture as a config, and random-weight checkpoints laid out like its hub folder.

``medgemma_4b_config()`` is the published ``config.json`` of google/medgemma-4b-it (the Gemma 3 4B image-text
architecture), read by transformers' own ``Gemma3Config``, so fields the checkpoint leaves to transformers'
conversions (``rope_scaling`` into ``rope_parameters``, ``sliding_window_pattern`` into ``layer_types``) are
converted exactly as they are when the real checkpoint loads. Overrides scale it down without changing its shape
rules: a 6-layer override keeps the 5 local : 1 global pattern, and so on.

``write_random_checkpoint`` writes a random-init model of such a config in the folder layout MedGemma ships
(``config.json``, ``generation_config.json``, sharded safetensors with an index, ``preprocessor_config.json``
with the ``Gemma3ImageProcessor`` type, ``processor_config.json``, tokenizer files). Tests use it to show that a
MedGemma-shaped folder goes through the same loading and generation code as the tiny model, without the 8 GB
of real weights; the GPU throughput script uses the full-size config for realistic timings.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

from fairmed_core.models.tiny import CHAT_TEMPLATE, build_tokenizer

__all__ = [
    "MEDGEMMA_4B_CONFIG",
    "MEDGEMMA_4B_GENERATION_CONFIG",
    "SCALED_DOWN_OVERRIDES",
    "medgemma_4b_config",
    "medgemma_4b_preprocessor_config",
    "scaled_down_medgemma_config",
    "write_random_checkpoint",
]

# google/medgemma-4b-it config.json as published (transformers 4.50 field names; Gemma3Config converts them).
MEDGEMMA_4B_CONFIG: Mapping = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255_999,
    "eoi_token_index": 256_000,
    "eos_token_id": [1, 106],
    "image_token_index": 262_144,
    "initializer_range": 0.02,
    "mm_tokens_per_image": 256,
    "model_type": "gemma3",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "cache_implementation": "hybrid",
        "final_logit_softcapping": None,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2560,
        "initializer_range": 0.02,
        "intermediate_size": 10240,
        "max_position_embeddings": 131_072,
        "model_type": "gemma3_text",
        "num_attention_heads": 8,
        "num_hidden_layers": 34,
        "num_key_value_heads": 4,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10_000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1_000_000.0,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": 262_208,
    },
    "torch_dtype": "bfloat16",
    "vision_config": {
        "attention_dropout": 0.0,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "torch_dtype": "bfloat16",
        "vision_use_head": False,
    },
}

# Its generation_config.json: sampling by default, which FairMed's greedy audits override explicitly.
MEDGEMMA_4B_GENERATION_CONFIG: Mapping = {
    "bos_token_id": 2,
    "cache_implementation": "hybrid",
    "do_sample": True,
    "eos_token_id": [1, 106],
    "pad_token_id": 0,
    "top_k": 64,
    "top_p": 0.95,
}

# MedGemma-4B's shape at CPU-test size: one 5:1 local/global block, 2:1 grouped-query attention, a head size
# decoupled from the hidden size, linear RoPE scaling on the global layers, 14-pixel SigLIP patches without a
# pooling head, and the patch grid average-pooled 2x2 into the image tokens (MedGemma: 64x64 -> 16x16).
SCALED_DOWN_OVERRIDES: Mapping = {
    "mm_tokens_per_image": 16,
    "text_config": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 16,
        "max_position_embeddings": 2048,
    },
    "vision_config": {
        "hidden_size": 64,
        "intermediate_size": 224,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 112,
        "patch_size": 14,
    },
}


def _merged(base: Mapping, overrides: Mapping) -> dict:
    """``base`` with ``overrides`` applied; the two sub-configs are merged key by key, not replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if key in ("text_config", "vision_config") and isinstance(value, Mapping):
            merged[key] = {**merged.get(key, {}), **copy.deepcopy(dict(value))}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def medgemma_4b_config(**overrides) -> Gemma3Config:
    """MedGemma-4B's ``Gemma3Config`` (4.30B parameters), with optional overrides.

    ``text_config`` and ``vision_config`` overrides are dicts merged into the published ones, e.g.
    ``medgemma_4b_config(text_config={"num_hidden_layers": 6})``; other keys replace top-level fields. The layer
    pattern is derived from ``sliding_window_pattern`` (5 local : 1 global) for any layer count."""
    return Gemma3Config.from_dict(_merged(MEDGEMMA_4B_CONFIG, overrides))


def scaled_down_medgemma_config(**overrides) -> Gemma3Config:
    """MedGemma-4B's architecture at CPU-test size (``SCALED_DOWN_OVERRIDES``, then ``overrides``)."""
    return Gemma3Config.from_dict(_merged(_merged(MEDGEMMA_4B_CONFIG, SCALED_DOWN_OVERRIDES), overrides))


def medgemma_4b_preprocessor_config(image_size: int = 896, image_seq_length: int = 256) -> dict:
    """MedGemma's preprocessor_config.json: the image processor's settings beside the processor class."""
    return {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_pan_and_scan": None,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Gemma3ImageProcessor",
        "image_seq_length": image_seq_length,
        "image_std": [0.5, 0.5, 0.5],
        "pan_and_scan_max_num_crops": None,
        "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None,
        "processor_class": "Gemma3Processor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }


def _write_json(path: Path, data: Mapping) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_random_checkpoint(directory: str | Path, config: Gemma3Config, tokenizer_corpus: Iterable[str], *,
                            seed: int = 0, max_shard_size: str | int = "2MB",
                            dtype: torch.dtype = torch.float32) -> Path:
    """Write a random-init model of ``config`` with a word-level tokenizer over ``tokenizer_corpus``, laid out
    like MedGemma's hub folder; returns the folder.

    The tokenizer (``fairmed_core.models.tiny.build_tokenizer``) has a few hundred entries at most, so the
    config's vocabulary size and special token ids (MedGemma: 262,208 entries, image token 262,144, begin/end of
    image 255,999/256,000, end of turn 106) are remapped to the tokenizer's: a 262k-row embedding would outweigh
    a test-sized model many times over. Weights are sharded at ``max_shard_size`` with an index, as MedGemma's
    are; the multimodal projector gets a normal init (transformers initialises it to zero, which would make the
    model ignore the image)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(tokenizer_corpus)
    ids = tokenizer.convert_tokens_to_ids
    eos_ids = [ids("<eos>"), ids("<end_of_turn>")]
    config = copy.deepcopy(config)
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.pad_token_id = ids("<pad>")
    config.text_config.bos_token_id = ids("<bos>")
    config.text_config.eos_token_id = eos_ids
    config.boi_token_index = ids("<start_of_image>")
    config.eoi_token_index = ids("<end_of_image>")
    config.image_token_index = ids("<image_soft_token>")
    config.eos_token_id = eos_ids

    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).to(dtype)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)
    generation = {**MEDGEMMA_4B_GENERATION_CONFIG, "bos_token_id": ids("<bos>"), "eos_token_id": eos_ids,
                  "pad_token_id": ids("<pad>")}
    for key, value in generation.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(folder, max_shard_size=max_shard_size)

    image_size = int(config.vision_config.image_size)
    image_processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE,
                                image_seq_length=config.mm_tokens_per_image)
    processor.save_pretrained(folder)
    # transformers 5 nests the image processor inside processor_config.json; MedGemma's folder (saved by 4.50)
    # keeps it in preprocessor_config.json under the torchvision-era type name. Write that layout.
    _write_json(folder / "preprocessor_config.json",
                medgemma_4b_preprocessor_config(image_size, config.mm_tokens_per_image))
    _write_json(folder / "processor_config.json",
                {"image_seq_length": config.mm_tokens_per_image, "processor_class": "Gemma3Processor"})
    return folder
