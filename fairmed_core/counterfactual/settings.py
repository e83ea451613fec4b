"""The settings of a counterfactual analysis: what to analyse, how to edit, and when a pair counts as valid.

Kept apart from the analysis itself (which imports torch and diffusers) so the command line and the pages can
build and check them before any job starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fairmed_core.errors import FairMedInputError

__all__ = ["AnalysisSettings", "ValidityThresholds"]


@dataclass(frozen=True)
class ValidityThresholds:
    """When a pair counts as valid. Errors are mean absolute grey-level differences (0..255)."""

    effectiveness: float = field(default=0.5, metadata={"help": "least P(target | counterfactual) of a valid pair",
                                                        "flag": "--min-effectiveness"})
    composition_mae: float = field(default=12.0, metadata={
        "help": "largest reconstruction error of a valid pair (grey levels, 0..255)", "flag": "--max-composition-error"})
    reversibility_mae: float = field(default=15.0, metadata={
        "help": "largest there-and-back error of a valid pair (grey levels, 0..255)",
        "flag": "--max-reversibility-error"})

    def __post_init__(self) -> None:
        if not 0 < self.effectiveness < 1:
            raise FairMedInputError(f"the effectiveness threshold must be in (0, 1), got {self.effectiveness}")
        for name in ("composition_mae", "reversibility_mae"):
            if not 0 < getattr(self, name) <= 255:
                raise FairMedInputError(f"the {name} threshold must be in (0, 255], got {getattr(self, name)}")


@dataclass(frozen=True)
class AnalysisSettings:
    """What to analyse and how to edit."""

    split: str = field(default="test", metadata={"help": "the split whose cases are edited"})
    n: int = field(default=48, metadata={"help": "cases to edit (stratified by source and factual group)"})
    group: str | None = field(default=None, metadata={"help": "only cases of this factual group"})
    targets: tuple[str, ...] = field(default=(), metadata={
        "help": "target group (repeat; default every other group)", "flag": "--target"})
    seed: int = field(default=0, metadata={"help": "sampling and CI-test seed"})
    guidance: float | None = field(default=None, metadata={"help": "classifier-free guidance (None: the generator's)"})
    steps: int | None = field(default=None, metadata={"help": "DDIM steps (None: the generator's)"})
    strength: float | None = field(default=None,
                                   metadata={"help": "share of the chain inverted (None: the generator's)"})
    batch_size: int = field(default=8, metadata={"help": "images per generator batch", "flag": "--generator-batch"})
    reversibility: bool = field(default=True, metadata={"help": "run the there-and-back check (one more inversion)"})
    thresholds: ValidityThresholds = field(default_factory=ValidityThresholds, metadata={
        "help": "when a pair counts as valid", "prefix": ""})

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise FairMedInputError(f"n must be a positive number of cases, got {self.n!r}", column="n")
        if self.batch_size < 1:
            raise FairMedInputError(f"batch_size must be positive, got {self.batch_size}", column="batch_size")

    def to_dict(self) -> dict:
        return asdict(self)
