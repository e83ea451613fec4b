"""The settings of the SFT warm start, checked when built (kept apart from the training loop, which imports torch
and transformers, so the command line and the pages can check them before a job starts)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from fairmed_core.errors import FairMedInputError
from fairmed_core.models.tiny_config import TinyModelConfig
from fairmed_core.settings import config_from_dict

__all__ = ["SFTConfig"]


# What an undersampling rule can select on: the synthetic cases' demographics, or their manifest answer.
UNDERSAMPLE_ATTRIBUTES = ("sex", "age_group", "skin_tone", "answer")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised warm start settings; ``model`` sizes the tiny model."""

    epochs: int = field(default=12, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=32, metadata={"help": "cases per optimiser step"})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate", "flag": "--lr"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.05, metadata={"help": "share of steps with linear warmup"})
    vision_warmup_epochs: int = field(default=0, metadata={
        "help": "epochs fitting the vision tower to the finding (a head per source) before SFT; 0: none"})
    vision_warmup_lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate of the vision warm-up"})
    freeze_vision_tower: bool = field(default=False, metadata={
        "help": "train only the projector and the language model in SFT (the vision tower stays as the warm-up "
                "left it: full SFT at 2e-3 was measured to wash out what the warm-up taught)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    split: str = field(default="train", metadata={"help": "manifest split to train on"})
    sources: tuple[str, ...] | None = field(default=None, metadata={
        "help": "train on this data source only (repeat; default all)", "flag": "--source"})
    max_cases: int | None = field(default=None, metadata={"help": "train on the first N cases only (tests)"})
    # Why: a warm start that has seen few cases of a group leaves a representation-driven disparity in the model,
    # which reinforcement learning on a split that holds the group can then reduce (issue 16).
    undersample: tuple[str, ...] = field(default=(), metadata={
        "help": "keep only a fraction of one group's cases, as SOURCE:ATTRIBUTE:GROUP:FRACTION (e.g. "
                "synth_cxr:sex:F:0.1; ATTRIBUTE 'answer' selects by the manifest answer, e.g. "
                "synth_mammo:answer:yes:0.25; repeat); the cases kept are drawn with the seed"})
    seed: int = field(default=0, metadata={"help": "initialisation and shuffling seed"})
    model: TinyModelConfig = field(default_factory=TinyModelConfig, metadata={"help": "tiny model sizes",
                                                                              "prefix": "model-"})

    def __post_init__(self) -> None:
        if isinstance(self.undersample, str):
            object.__setattr__(self, "undersample", (self.undersample,))
        object.__setattr__(self, "undersample", tuple(self.undersample))
        self.undersampling()  # checked where declared
        if self.sources is not None:
            object.__setattr__(self, "sources", tuple(self.sources))
        if isinstance(self.vision_warmup_epochs, bool) or not isinstance(self.vision_warmup_epochs, int) or (
                self.vision_warmup_epochs < 0):
            raise FairMedInputError(f"vision_warmup_epochs must be 0 or more, got {self.vision_warmup_epochs!r}",
                                    column="vision_warmup_epochs")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FairMedInputError(f"{name} must be at least 1, got {value!r}", column=name)
        if self.max_cases is not None and (isinstance(self.max_cases, bool) or not isinstance(self.max_cases, int)
                                           or self.max_cases < 1):
            raise FairMedInputError(f"max_cases must be a positive whole number, got {self.max_cases!r}",
                                    column="max_cases")
        for name in ("learning_rate", "vision_warmup_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise FairMedInputError(f"{name} must be positive, got {value!r}", column=name, hint="e.g. 2e-3")

    def undersampling(self) -> dict[tuple[str, str, str], float]:
        """``(source, attribute, group) -> fraction kept`` from the ``undersample`` entries."""
        rules: dict[tuple[str, str, str], float] = {}
        for entry in self.undersample:
            parts = str(entry).split(":")
            fraction = None
            if len(parts) == 4:
                try:
                    fraction = float(parts[3])
                except ValueError:
                    fraction = None
            if fraction is None or not all(parts[:3]) or not 0.0 <= fraction <= 1.0:
                raise FairMedInputError(f"undersample entry {entry!r} is not SOURCE:ATTRIBUTE:GROUP:FRACTION with a "
                                        "fraction from 0 to 1", column="undersample", hint="e.g. synth_cxr:sex:F:0.1")
            if parts[1] not in UNDERSAMPLE_ATTRIBUTES:
                raise FairMedInputError(f"undersample entry {entry!r} names attribute {parts[1]!r}",
                                        column="undersample", hint=f"one of {UNDERSAMPLE_ATTRIBUTES}")
            rules[(parts[0], parts[1], parts[2])] = fraction
        return rules

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SFTConfig:
        return config_from_dict(cls, data, what="SFT")
