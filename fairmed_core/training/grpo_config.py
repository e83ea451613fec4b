"""The settings of a GRPO-family training run (GRPO, FairGRPO and its baselines), checked when built.

Kept apart from :mod:`fairmed_core.jobs.grpo_training` (which imports torch and TRL) so the Training page and the
command line can build and check a run's settings before any job starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from typing import TYPE_CHECKING

from fairmed_core.errors import FairMedInputError
from fairmed_core.settings import config_from_dict
from fairmed_core.training.fairgrpo_weights import CLUSTERINGS, DEFAULT_EPS, FairGRPOWeighting
from fairmed_core.training.methods import (
    METHOD_NAMES,
    check_method_data,
    check_reward,
    prompt_group_key,
    training_method,
)
from fairmed_core.training.rewards import REWARDS

if TYPE_CHECKING:
    from fairmed_core.data import Dataset

__all__ = ["GRPOJobConfig", "LORA_TARGET_MODULES", "METHODS"]

# The training methods' names, in the order the pages list them (the registry: fairmed_core.training.methods).
METHODS = METHOD_NAMES

# Module names inside Gemma3ForConditionalGeneration: only the language model's projections (the vision tower has
# q/k/v projections of its own, which an "all-linear" target would adapt too).
LORA_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _weighting_help(name: str) -> str:
    return "FairGRPO: " + next(f for f in fields(FairGRPOWeighting) if f.name == name).metadata["help"]


@dataclass(frozen=True)
class GRPOJobConfig:
    """A training job's settings; CPU defaults finish in minutes on the shipped tiny model."""

    method: str = field(default="fairgrpo", metadata={
        "help": "training method (" + "; ".join(f"{name}: {training_method(name).label}" for name in METHODS) + ")",
        "choices": METHODS})
    steps: int = field(default=60, metadata={"help": "optimizer steps"})
    prompts_per_step: int = field(default=8, metadata={
        "help": "prompts per step (per process when launched on several)", "flag": "--prompts"})
    num_generations: int = field(default=4, metadata={"help": "rollouts per prompt (G, at least 2)",
                                                      "flag": "--generations"})
    # 2e-4 collapsed plain GRPO on the tiny model to one answer within ~15 steps (benchmarks/fairgrpo_methods.py).
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate", "flag": "--lr"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient (the authors use 0)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature"})
    max_completion_length: int = field(default=40, metadata={"help": "rollout length limit in tokens"})
    eval_every: int = field(default=10, metadata={"help": "evaluate on the held-out split every N steps"})
    eval_split: str = field(default="val", metadata={"help": "held-out split for the training curves"})
    eval_limit: int | None = field(default=300, metadata={
        "help": "held-out cases per evaluation: a fixed stratified sample by source and group (seed 0: the same "
                "cases at every step and for every run on the same data); 0 or None: the whole split"})
    save_every: int = field(default=20, metadata={"help": "checkpoint every N steps"})
    train_limit: int | None = field(default=None, metadata={"help": "train on the first N train cases only"})
    group_attributes: tuple[str, ...] = field(default=("sex", "age_group"), metadata={
        "help": "attributes forming a demographic group (repeat the flag)", "flag": "--group-attribute"})
    test_split: str | None = field(default="test", metadata={
        "help": "split evaluated at the end ('none' or None: skip)"})
    seed: int = field(default=0, metadata={"help": "sampling and shuffling seed"})
    lora_rank: int = field(default=0, metadata={
        "help": "LoRA rank on the language model's attention and MLP projections (0: train every weight); the "
                "adapter is merged into the saved model"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass (less GPU memory, more time)"})
    # FairGRPO's own options (the defaults are the authors' code, DESIGN section 4).
    format_reward_weight: float = field(default=0.0, metadata={
        "help": "weight of the format reward added to the accuracy reward (0: accuracy only)"})
    reward: str = field(default="exact", metadata={
        "help": "correctness reward: 'exact' (1 right, 0 wrong; the authors') or 'class_balanced' (a right answer "
                "earns the inverse share of its answer within its source, so each source's two answers weigh "
                "equally; GRPO's advantages are then centred within each prompt but not divided by its spread, "
                "which would cancel the weight)", "choices": REWARDS})
    rescale: str = field(default="batch", metadata={"help": _weighting_help("rescale"),
                                                    "choices": ("batch", "zero_mean", "none")})
    statistics: str = field(default="persistent", metadata={"help": _weighting_help("statistics"),
                                                            "choices": ("persistent", "batch_local")})
    cluster_unknown: bool = field(default=True, metadata={"help": _weighting_help("cluster_unknown")})
    sort_reward_vectors: bool = field(default=False, metadata={"help": _weighting_help("sort_reward_vectors")})
    max_clusters: int = field(default=3, metadata={"help": _weighting_help("max_clusters")})
    elbow_fraction: float = field(default=0.1, metadata={"help": _weighting_help("elbow_fraction")})
    within_prompt_scale: bool = field(default=True, metadata={"help": _weighting_help("within_prompt_scale")})
    fairgrpo_eps: float = field(default=DEFAULT_EPS, metadata={"help": _weighting_help("eps")})
    clustering: str = field(default="fairmed", metadata={"help": _weighting_help("clustering"),
                                                         "choices": CLUSTERINGS})
    dro_step_size: float = field(default=0.01, metadata={
        "help": "Group DRO: step size eta of the exponentiated-gradient weight update"})

    def __post_init__(self) -> None:
        # One meaning for "all" and "skip" whichever way the value came (a form's 0, a flag's 'none', JSON null).
        if self.eval_limit == 0:
            object.__setattr__(self, "eval_limit", None)
        if isinstance(self.test_split, str) and self.test_split.lower() in ("none", ""):
            object.__setattr__(self, "test_split", None)
        if isinstance(self.group_attributes, str):
            object.__setattr__(self, "group_attributes", (self.group_attributes,))
        object.__setattr__(self, "group_attributes", tuple(self.group_attributes))
        training_method(self.method)  # an unknown name is refused, naming the known ones
        for name in ("steps", "prompts_per_step", "num_generations", "max_completion_length", "eval_every",
                     "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FairMedInputError(f"{name} must be a positive whole number, got {value!r}", column=name)
        for name in ("eval_limit", "train_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise FairMedInputError(f"{name} must be a positive whole number (or empty for all cases), got "
                                        f"{value!r}", column=name)
        if self.num_generations < 2:
            raise FairMedInputError("num_generations must be at least 2: GRPO compares rollouts of one prompt",
                                    column="num_generations", hint="use 2 or more rollouts per prompt")
        for name in ("learning_rate", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise FairMedInputError(f"{name} must be positive, got {value!r}", column=name,
                                        hint="e.g. 2e-5" if name == "learning_rate" else "e.g. 1.0")
        for name in ("beta", "format_reward_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value >= 0):
                raise FairMedInputError(f"{name} must be a number >= 0, got {value!r}", column=name)
        if isinstance(self.lora_rank, bool) or not isinstance(self.lora_rank, int) or self.lora_rank < 0:
            raise FairMedInputError(f"lora_rank must be 0 (full fine-tuning) or a positive whole number, got "
                                    f"{self.lora_rank!r}", column="lora_rank")
        if not self.group_attributes or not all(isinstance(a, str) and a.strip() for a in self.group_attributes):
            raise FairMedInputError("group_attributes must name at least one attribute", column="group_attributes",
                                    hint="e.g. sex and age_group")
        if not (isinstance(self.dro_step_size, (int, float)) and math.isfinite(self.dro_step_size)
                and self.dro_step_size > 0):
            raise FairMedInputError(f"dro_step_size must be positive, got {self.dro_step_size!r}",
                                    column="dro_step_size")
        check_reward(self)  # the job sets TRL's scale_rewards itself (below); FairGRPO's is an option
        self.weighting()  # the FairGRPO options, checked where they are declared

    @property
    def scale_rewards(self) -> str:
        """TRL's reward scaling for this job: off ('none', centred only) under the class-balanced reward, whose
        per-prompt weight a division by the prompt's spread would cancel; TRL's default ('group') otherwise."""
        return "none" if self.reward == "class_balanced" else "group"

    def weighting(self) -> FairGRPOWeighting:
        """The FairGRPO weighting these settings describe (``cluster_all`` where the method clusters every
        prompt: 'fairgrpo_nd')."""
        return FairGRPOWeighting(
            rescale=self.rescale, statistics=self.statistics, cluster_unknown=self.cluster_unknown,
            cluster_all=training_method(self.method).clusters_every_prompt,
            sort_reward_vectors=self.sort_reward_vectors, max_clusters=self.max_clusters,
            elbow_fraction=self.elbow_fraction, within_prompt_scale=self.within_prompt_scale, eps=self.fairgrpo_eps,
            seed=self.seed, clustering=self.clustering)

    def check_data(self, dataset: Dataset, split: str = "train") -> dict[tuple[str, str], int]:
        """Refuse, before any job starts, a dataset this run cannot train on (``FairMedInputError``): not yes/no
        answers, no cases in ``split``, and what the method needs (a data source per case; demographics on some
        case) among the cases it would train on (the first ``train_limit``). Returns the prompt count per
        (source, group). The trainer checks its own data again; this is the same check on the case table, cheap
        enough for the Training page and the command line to run first."""
        if dataset.positive_label is None:
            raise FairMedInputError("GRPO training here needs binary yes/no answers", source=str(dataset.root),
                                    column="answer", hint=f"this dataset's answers: {list(dataset.label_values)}")
        cases = dataset.cases[dataset.cases["split"] == split]
        if cases.empty:
            present = sorted(str(s) for s in dataset.cases["split"].dropna().unique())
            raise FairMedInputError(f"no {split!r} cases in dataset {dataset.name!r}", column="split",
                                    hint=f"splits present: {present}")
        if self.train_limit is not None:
            cases = cases.head(self.train_limit)
        records = cases[[c for c in ("demo", *self.group_attributes) if c in cases.columns]].to_dict("records")
        groups = [prompt_group_key(record, self.group_attributes) for record in records]
        return check_method_data(self.method, cases["dataset"].tolist(), groups, self.group_attributes)

    def trainer_options(self) -> dict:
        """The FairGRPOConfig keywords these settings fix beyond TRL's basic ones (method, reward and FairGRPO
        options; TRL's reward scaling, which the class-balanced reward needs off)."""
        return {"method": self.method, "group_attributes": list(self.group_attributes), "reward": self.reward,
                "scale_rewards": self.scale_rewards,
                "format_reward_weight": self.format_reward_weight, "rescale": self.rescale,
                "statistics": self.statistics, "cluster_unknown": self.cluster_unknown,
                "sort_reward_vectors": self.sort_reward_vectors, "max_clusters": self.max_clusters,
                "elbow_fraction": self.elbow_fraction, "within_prompt_scale": self.within_prompt_scale,
                "fairgrpo_eps": self.fairgrpo_eps, "dro_step_size": self.dro_step_size,
                "clustering": self.clustering}

    def to_dict(self) -> dict:
        return asdict(self)

    def peft_config(self):
        """The LoRA adapter spec for ``lora_rank > 0`` (None otherwise): rank r, alpha 2r, dropout 0, on the
        language model's q/k/v/o and gate/up/down projections; the vision tower and the projector stay frozen."""
        if not self.lora_rank:
            return None
        from peft import LoraConfig

        return LoraConfig(r=self.lora_rank, lora_alpha=2 * self.lora_rank, lora_dropout=0.0, bias="none",
                          target_modules=LORA_TARGET_MODULES)

    @classmethod
    def from_dict(cls, data: dict) -> GRPOJobConfig:
        return config_from_dict(cls, data, what="training")
