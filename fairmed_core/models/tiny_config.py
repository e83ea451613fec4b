"""The sizes of the tiny FairMedGemma, checked when built (kept apart from the model builder, which imports torch
and transformers, so a warm start's settings can be built and checked without them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TinyModelConfig"]


@dataclass(frozen=True)
class TinyModelConfig:
    """Sizes of the tiny FairMedGemma. ``image_size / patch_size`` must be a multiple of the square root of
    ``image_tokens`` (the projector average-pools the patch grid down to that many tokens)."""

    image_size: int = field(default=64, metadata={"help": "input image side in pixels"})
    patch_size: int = field(default=8, metadata={"help": "SigLIP patch side in pixels"})
    image_tokens: int = field(default=16, metadata={"help": "soft tokens per image (a perfect square)"})
    vision_hidden: int = field(default=96, metadata={"help": "SigLIP hidden size"})
    vision_layers: int = field(default=3, metadata={"help": "SigLIP encoder layers"})
    vision_heads: int = field(default=4, metadata={"help": "SigLIP attention heads"})
    text_hidden: int = field(default=128, metadata={"help": "Gemma 3 text hidden size"})
    text_layers: int = field(default=3, metadata={"help": "Gemma 3 decoder layers"})
    text_heads: int = field(default=4, metadata={"help": "query heads"})
    text_kv_heads: int = field(default=2, metadata={"help": "key/value heads (grouped-query attention)"})
    head_dim: int = field(default=32, metadata={"help": "attention head size"})
    text_intermediate: int = field(default=256, metadata={"help": "MLP width"})
    max_positions: int = field(default=1024, metadata={"help": "context length in tokens"})
    sliding_window: int = field(default=256, metadata={"help": "window of the local-attention layers"})

    def __post_init__(self) -> None:
        root = round(self.image_tokens ** 0.5)
        if root * root != self.image_tokens:
            raise ValueError(f"image_tokens must be a perfect square, got {self.image_tokens}")
        if self.image_size % self.patch_size or (self.image_size // self.patch_size) % root:
            raise ValueError(
                f"image_size/patch_size ({self.image_size}/{self.patch_size}) must be a multiple of "
                f"sqrt(image_tokens) = {root}"
            )

    def to_dict(self) -> dict:
        return asdict(self)
