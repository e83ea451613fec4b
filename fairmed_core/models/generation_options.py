"""How a model decodes (greedy or seeded sampling, length and batch limits), checked when built.

Kept apart from generation itself (which imports torch) so the command line and the pages can build and check
decoding settings before any job starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fairmed_core.errors import FairMedInputError

__all__ = ["GenerationOptions"]


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode. Greedy by default (an audit should be reproducible); sampling is seeded."""

    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding", "flag": "--sample"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=64, metadata={"help": "answer length limit in tokens"})
    batch_size: int = field(default=16, metadata={"help": "cases per forward pass"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise FairMedInputError(f"max new tokens must be at least 1, got {self.max_new_tokens}",
                                    column="max_new_tokens")
        if self.batch_size < 1:
            raise FairMedInputError(f"batch size must be at least 1, got {self.batch_size}", column="batch_size")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise FairMedInputError(
                f"sampling needs temperature > 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}")

    def to_dict(self) -> dict:
        return asdict(self)
