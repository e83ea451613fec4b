"""The settings of a FairGrad run, on the image benchmark or on a table of one's own, checked when built.

Kept apart from the estimator and the jobs (which import torch) so the command line and the pages can build and
check them before any job starts. The names here are the ones the estimator accepts: ``METHODS`` and
``OBJECTIVES`` (the keys of ``fairmed_core.training.fairgrad.FAIRNESS_OBJECTIVES``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from fairmed_core.errors import FairMedInputError

__all__ = ["FairGradImageConfig", "FairGradTabularConfig", "METHODS", "MODELS", "OBJECTIVES", "RESERVED_COLUMNS",
           "check_training_numbers"]

METHODS = ("erm", "penalty", "fairgrad")  # the training methods, in the order pages list them
OBJECTIVES = ("equalized_odds", "equal_opportunity", "demographic_parity")  # one fairness loss per attribute
MODELS = ("logistic", "mlp")  # the models of a tabular run
# Columns a predictions table writes itself: a tabular run's attribute cannot have one of these names.
RESERVED_COLUMNS = ("case_id", "source", "split", "y_true", "y_pred", "score", "model")


def check_training_numbers(config) -> None:
    """Refuse a FairGrad run config whose numbers cannot train: ``epochs``, ``batch_size`` (and ``width`` or
    ``hidden`` where present) positive whole numbers, ``warmup_epochs`` zero or more, ``learning_rate`` a positive
    number, ``penalty_weight`` zero or more; the error names the setting."""
    for name, least in (("epochs", 1), ("batch_size", 1), ("width", 1), ("hidden", 1), ("warmup_epochs", 0)):
        value = getattr(config, name, least)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise FairMedInputError(f"{name} must be a whole number >= {least}, got {value!r}", column=name)
    for name, positive in (("learning_rate", True), ("penalty_weight", False)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                value <= 0 if positive else value < 0):
            raise FairMedInputError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got "
                                    f"{value!r}", column=name, hint="e.g. 3e-3" if positive else "e.g. 1.0")


@dataclass(frozen=True)
class FairGradImageConfig:
    """How the per-source CNNs are trained (defaults measured on the benchmark's chest X-rays: ERM reaches test
    AUROC 0.90 in about 10 s per source on one CPU thread)."""

    method: str = field(default="fairgrad", metadata={"help": "erm, penalty or fairgrad", "choices": METHODS})
    attributes: tuple[str, ...] = field(default=("sex",), metadata={
        "help": "sensitive attribute with its own fairness objective (repeat)", "flag": "--attribute"})
    objective: str = field(default="equalized_odds", metadata={"help": "fairness objective for every attribute",
                                                               "choices": OBJECTIVES})
    penalty_weight: float = field(default=1.0, metadata={"help": "fairness weight of the penalty method"})
    epochs: int = field(default=15, metadata={"help": "training epochs per source"})
    warmup_epochs: int = field(default=8, metadata={"help": "ERM epochs before the fairness objectives start"})
    learning_rate: float = field(default=3e-3, metadata={"help": "Adam learning rate", "flag": "--lr"})
    batch_size: int = field(default=64, metadata={"help": "images per step"})
    width: int = field(default=8, metadata={"help": "channels of the CNN's first convolution"})
    seed: int = field(default=0, metadata={"help": "initialisation and shuffling seed"})
    split: str = field(default="test", metadata={"help": "split to predict (training uses 'train')"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FairMedInputError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise FairMedInputError(f"unknown fairness objective {self.objective!r}",
                                    hint=f"known: {sorted(OBJECTIVES)}")
        if self.method != "erm" and not self.attributes:
            raise FairMedInputError(f"method {self.method!r} needs at least one sensitive attribute")
        check_training_numbers(self)

    @property
    def model_name(self) -> str:
        attributes = "+".join(self.attributes) if self.method != "erm" else "none"
        return f"cnn-{self.method}-{attributes}-seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FairGradTabularConfig:
    """How a table is read, split and trained on (training defaults: those of the SUPPORT2 benchmark,
    ``benchmarks/fairgrad_support2.py``, where ERM's test AUROC matches scikit-learn's logistic regression)."""

    label: str = field(metadata={"help": "outcome column"})
    positive_label: str | None = field(default=None, metadata={
        "help": "the label's value that means the outcome happened (not needed for a 0/1 or boolean label)"})
    attributes: tuple[str, ...] = field(default=(), metadata={
        "help": "sensitive attribute column with its own fairness objective (repeat)", "flag": "--attribute"})
    objective: str = field(default="equalized_odds", metadata={
        "help": "fairness objective of every attribute (equalized_odds, equal_opportunity or demographic_parity), "
                "or ATTR=OBJECTIVE for one attribute (repeat)", "keyed": "objectives"})
    objectives: Mapping[str, str] = field(default_factory=dict, metadata={
        "help": "ATTR=OBJECTIVE: the objective of one attribute, overriding `objective` (repeat)",
        "flag": "--objective-for"})
    method: str = field(default="fairgrad", metadata={"help": "erm, penalty or fairgrad", "choices": METHODS})
    model: str = field(default="logistic", metadata={"help": "logistic or mlp (one hidden layer)",
                                                     "choices": MODELS})
    hidden: int = field(default=32, metadata={"help": "width of the MLP's hidden layer"})
    epochs: int = field(default=100, metadata={"help": "training epochs"})
    warmup_epochs: int = field(default=0, metadata={"help": "ERM epochs before the fairness objectives start"})
    learning_rate: float = field(default=1e-2, metadata={"help": "Adam learning rate", "flag": "--lr"})
    weight_decay: float = field(default=1e-4, metadata={"help": "Adam weight decay"})
    batch_size: int = field(default=256, metadata={"help": "rows per step"})
    penalty_weight: float = field(default=1.0, metadata={"help": "fairness weight of the penalty method"})
    test_fraction: float = field(default=0.2, metadata={"help": "share of rows held out for the test split"})
    seed: int = field(default=0, metadata={"help": "split, initialisation and shuffling seed"})
    numeric: tuple[str, ...] | None = field(default=None, metadata={"help": "columns to read as numbers",
                                                                     "nargs": "+"})
    categorical: tuple[str, ...] | None = field(default=None, metadata={
        "help": "columns to one-hot encode (text feature columns must be declared)", "nargs": "+"})
    drop: tuple[str, ...] = field(default=(), metadata={
        "help": "columns to ignore (identifiers, dates, free text, other outcomes)", "nargs": "+"})

    def __post_init__(self) -> None:
        for name in ("attributes", "drop", "numeric", "categorical"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "objectives", dict(self.objectives or {}))
        if self.method not in METHODS:
            raise FairMedInputError(f"method must be one of {list(METHODS)}, got {self.method!r}")
        if self.model not in MODELS:
            raise FairMedInputError(f"model must be one of {list(MODELS)}, got {self.model!r}")
        for attribute, objective in (("(every attribute)", self.objective), *self.objectives.items()):
            if objective not in OBJECTIVES:
                raise FairMedInputError(f"unknown fairness objective {objective!r} for {attribute}",
                                        hint=f"known: {sorted(OBJECTIVES)}")
        unknown = sorted(set(self.objectives) - set(self.attributes))
        if unknown:
            raise FairMedInputError(f"objectives name {unknown}, which are not among the attributes "
                                    f"{list(self.attributes)}", column=unknown[0])
        if not self.attributes:
            raise FairMedInputError("name at least one sensitive attribute column",
                                    hint="the run is audited per group of each attribute")
        for attribute in self.attributes:
            if attribute in RESERVED_COLUMNS:
                raise FairMedInputError(f"an attribute cannot be called {attribute!r}: the predictions table uses "
                                        "that name", column=attribute, hint="rename the column in the table")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise FairMedInputError(f"test_fraction must be between 0.05 and 0.5, got {self.test_fraction}")
        check_training_numbers(self)

    def objective_of(self, attribute: str) -> str:
        return self.objectives.get(attribute, self.objective)

    @property
    def model_name(self) -> str:
        attributes = "+".join(self.attributes) if self.method != "erm" else "none"
        return f"{self.model}-{self.method}-{attributes}-seed{self.seed}"

    def to_dict(self) -> dict:
        values = asdict(self)
        values["objectives"] = {attribute: self.objective_of(attribute) for attribute in self.attributes}
        return values
