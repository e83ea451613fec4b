"""The settings of a counterfactual generator, and how its class ids are laid out.

One job: say what a generator is (which attribute, which groups, which data sources, which network and
training schedule) and check it, so training, loading and editing agree on one description.

Class ids. The condition is the pair (data source, attribute group), because the same group looks different
in each modality (a woman's chest X-ray and a woman's skin patch share nothing). Every source gets one id per
group plus its OWN null id for classifier-free guidance: source ``s`` (index in ``sources``) and group ``c``
(index in ``classes``) is ``s * (len(classes) + 1) + c``, and the source's null id is
``s * (len(classes) + 1) + len(classes)``. A per-source null (rather than one global null) keeps the guidance
direction ``v(target) - v(null)`` about the attribute only: with a global null it would also push towards
"looks like this modality", which the inversion already fixes.

Channels. Every source is trained and edited as RGB: grayscale ("L") images are replicated to three channels
on the way in and averaged back to "L" on the way out, so one network serves all sources and an edited image
comes back in the mode it came in. Which mode each source had in training is recorded; images of another mode
(channel count) are refused rather than silently converted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError
from fairmed_core.settings import config_from_dict

__all__ = ["NUM_TRAIN_TIMESTEPS", "CounterfactualGeneratorConfig", "check_steps"]

# The diffusion schedule is fixed (DESIGN section 6): v-prediction on the cosine schedule, 1,000 training
# timesteps. Edits need a step count that divides it, so inversion and regeneration visit the same timesteps.
NUM_TRAIN_TIMESTEPS = 1000


def _comma_separated(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class CounterfactualGeneratorConfig:
    """What to train: the attribute and its groups, the sources, the UNet's size and the training schedule.

    Empty ``classes`` or ``sources`` mean "every known group / every source of the training data"; the
    generator saved after training records the resolved values.
    """

    attribute: str = field(default="sex", metadata={"help": "sensitive attribute: the condition"})
    classes: tuple[str, ...] = field(default=(), metadata={
        "help": "comma-separated groups to learn, e.g. F,M (default: every known group); cases of other groups "
                "are not used", "parse": _comma_separated})
    sources: tuple[str, ...] = field(default=(), metadata={
        "help": "data source (the manifest's `dataset`) to learn (repeat; default all)", "flag": "--source"})
    image_size: int = field(default=64, metadata={"help": "image side the UNet works at, in pixels"})
    block_out_channels: tuple[int, ...] = field(default=(16, 32, 64, 64), metadata={
        "help": "UNet channels per level", "nargs": "+"})
    layers_per_block: int = field(default=1, metadata={"help": "UNet ResNet layers per level"})
    norm_num_groups: int = field(default=8, metadata={"help": "group-norm groups (must divide every level's "
                                                               "channels)"})
    train_steps: int = field(default=1000, metadata={"help": "optimiser steps in all", "flag": "--steps"})
    batch_size: int = field(default=16, metadata={"help": "images per optimiser step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW peak learning rate", "flag": "--lr"})
    warmup_steps: int = field(default=50, metadata={"help": "steps of linear learning-rate warmup"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    ema_decay: float = field(default=0.995, metadata={
        "help": "EMA decay of the saved weights (0: no EMA; when on, the saved UNet holds the EMA weights)"})
    p_uncond: float = field(default=0.1, metadata={
        "help": "share of training examples shown with the source's null class (for guidance)"})
    class_balance: float = field(default=0.5, metadata={
        "help": "a case's sampling weight is (cases of its class) ** -class_balance"})
    guidance: float = field(default=2.0, metadata={
        "help": "classifier-free guidance scale used when regenerating under the target (edit default)"})
    inversion_steps: int = field(default=50, metadata={
        "help": "DDIM steps of the whole chain, inversion and regeneration; must divide 1000 (edit default)"})
    # Share of the chain an edit inverts: 1 goes to pure noise; less keeps the image's coarse content (tone,
    # anatomy, position) and regenerates only what the last steps of the chain decide (finer features).
    strength: float = field(default=1.0, metadata={"help": "share of the chain an edit inverts, in (0, 1] "
                                                           "(edit default)"})
    checkpoint_every: int = field(default=100, metadata={"help": "save a resumable checkpoint every N steps"})
    seed: int = field(default=0, metadata={"help": "initialisation, sampling and noise seed"})

    def __post_init__(self) -> None:
        # Tuples even when given lists (JSON round trips), so the dataclass stays hashable and comparable.
        for name in ("classes", "sources", "block_out_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        def fail(message: str, name: str, hint: str | None = None) -> None:
            raise FairMedInputError(message, column=name, hint=hint)

        if not self.attribute or not isinstance(self.attribute, str):
            fail("attribute must be a non-empty name such as 'sex'", "attribute")
        for name in ("classes", "sources"):
            values = getattr(self, name)
            if any(not isinstance(v, str) or not v for v in values):
                fail(f"{name} must be non-empty strings, got {values!r}", name)
            if len(set(values)) != len(values):
                fail(f"{name} has duplicates: {values!r}", name)
        if UNKNOWN in self.classes:
            fail("'UNK' (unknown) cannot be a class: cases with an unknown attribute are not used", "classes")
        if len(self.classes) == 1:
            fail("a counterfactual needs at least two groups", "classes")
        for name in ("image_size", "layers_per_block", "norm_num_groups", "train_steps", "batch_size",
                     "inversion_steps", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}", name)
        if self.warmup_steps < 0:
            fail(f"warmup_steps must be 0 or more, got {self.warmup_steps}", "warmup_steps")
        if not self.block_out_channels or any(int(c) < 1 for c in self.block_out_channels):
            fail(f"block_out_channels must be positive, got {self.block_out_channels!r}", "block_out_channels")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            fail(f"norm_num_groups {self.norm_num_groups} must divide every block width {self.block_out_channels}",
                 "norm_num_groups")
        downsampling = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size % downsampling:
            fail(f"image_size {self.image_size} must be a multiple of {downsampling} for "
                 f"{len(self.block_out_channels)} UNet levels", "image_size")
        if not self.learning_rate > 0:
            fail(f"learning_rate must be positive, got {self.learning_rate}", "learning_rate")
        if not 0 <= self.ema_decay < 1:
            fail(f"ema_decay must be in [0, 1), got {self.ema_decay}", "ema_decay")
        if not 0 < self.p_uncond < 1:
            fail(f"p_uncond must be in (0, 1): guidance needs both conditional and null training, "
                 f"got {self.p_uncond}", "p_uncond")
        if not 0 <= self.class_balance <= 1:
            fail(f"class_balance must be in [0, 1], got {self.class_balance}", "class_balance")
        if not self.guidance > 0:
            fail(f"guidance must be positive, got {self.guidance}", "guidance")
        check_steps(self.inversion_steps, "inversion_steps")
        if not 0 < self.strength <= 1:
            fail(f"strength must be in (0, 1], got {self.strength}", "strength")

    # -- class ids -------------------------------------------------------------------------------------------
    @property
    def num_class_embeds(self) -> int:
        """Class embeddings of the UNet: one per (source, group) and one null per source."""
        return len(self.sources) * (len(self.classes) + 1)

    def class_id(self, source: str, value: str) -> int:
        """The class id of (source, group); see the module docstring for the layout."""
        return self.sources.index(source) * (len(self.classes) + 1) + self.classes.index(value)

    def null_id(self, source: str) -> int:
        """The source's null (unconditional) class id for classifier-free guidance."""
        return self.sources.index(source) * (len(self.classes) + 1) + len(self.classes)

    # -- (de)serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("classes", "sources", "block_out_channels"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> CounterfactualGeneratorConfig:
        return config_from_dict(cls, data, what="generator")

    def same_model(self, other: CounterfactualGeneratorConfig) -> bool:
        """Whether ``other`` trains the same model (only the step count, checkpointing and edit defaults may
        differ): what a resumed training run requires."""
        free = {"train_steps", "checkpoint_every", "guidance", "inversion_steps", "strength"}
        mine, theirs = self.to_dict(), other.to_dict()
        return all(mine[k] == theirs[k] for k in mine if k not in free)


def check_steps(steps: object, name: str = "steps") -> int:
    """A DDIM step count that divides the training timesteps, so the inverse and forward schedulers visit the
    same timesteps (the inverse scheduler steps by ``1000 // steps``; the forward one by ``1000 / steps``)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or NUM_TRAIN_TIMESTEPS % steps:
        divisors = [d for d in range(2, 201) if NUM_TRAIN_TIMESTEPS % d == 0]
        raise FairMedInputError(f"{name} must divide {NUM_TRAIN_TIMESTEPS}, got {steps!r}", column=name,
                                hint=f"e.g. one of {divisors}")
    return steps
