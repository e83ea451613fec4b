"""FairGRPO training: a thin subclass of TRL's ``GRPOTrainer`` (trl 1.16.0) and the data it trains on.

``FairGRPOTrainer`` runs one of the methods registered in :mod:`fairmed_core.training.methods`
(``FairGRPOConfig.method``; the registry says how each draws prompts, computes advantages and keeps state, and
the module docstrings there give the formulas). The policy loss is always TRL's (the clipped surrogate, loss_type
'dapo' by default); a method only supplies the prompts and the per-completion advantages:

- ``"grpo"``: TRL's GRPO, untouched: same sampling, same rewards, same advantages, same loss. The only
  FairMed additions are the special tokens suppressed in sampling (DESIGN section 3; TRL suppresses only the
  image token) and, where the data has a ``dataset`` column, per-group mean rewards in the logs
  (``group_reward/<domain>/<group>``); neither changes an update.
- ``"rloo"`` and ``"reinforce_plus_plus"``: the paper's RLOO and REINFORCE++ baselines, advantages as the authors'
  verl estimators compute them (``methods.rloo_advantages``, ``methods.reinforce_plus_plus_advantages``).
- ``"fairgrpo"`` / ``"fairgrpo_nd"``: FairGRPO (arXiv 2510.19893; EQPO in its v2). After TRL scores the
  rollouts, the gathered ``(n_prompts, G)`` reward matrix, each prompt's domain (``dataset`` column) and
  demographic group go through ``fairgrpo_weights.fairgrpo_advantages``, whose advantages replace TRL's for this
  process's slice. The statistics persist across steps and are saved with every checkpoint
  (``fairgrpo_statistics.json``) and restored on resume. The ND variant clusters every prompt by its rewards.
- ``"grpo_dro"``: GRPO's advantages of a prompt of group g multiplied by online Group DRO weights
  (``methods.group_dro_step``); the log-weights are saved with checkpoints (``group_dro_weights.json``).
- ``"grpo_resample"``: GRPO on group-balanced prompts (``GroupBalancedRepeatSampler``): every (domain, group)
  pair has the same expected share of the batches.

Overridden TRL methods (TRL has no public advantage hook): ``_calculate_rewards`` (keeps the gathered reward
matrix), ``_generate_and_score_completions`` (replaces ``output["advantages"]`` and logs the weights),
``_get_train_sampler`` (group-balanced sampling), ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``
(method state into and out of the checkpoint folder, the same pattern TRL uses for its entropy controller).
Multi-process: TRL gathers the rewards of all processes before it normalises; the domain and group keys are
gathered with accelerate's ``gather_object`` in the same (process-major) order, so every rank computes the same
weights and keeps identical statistics.

Logged per generation batch (averaged by TRL over the logging window): ``fairgrpo/weight/<domain>/<group>``
(``1 / (T_d * T_g)``, or 1.0 where the fallback keeps the advantage unscaled),
``fairgrpo/temperature/<domain>`` and ``fairgrpo/temperature/<domain>/<group>``, ``fairgrpo/batch_std``,
``fairgrpo/fallback_prompts``, ``fairgrpo/clusters/<domain>``; ``grpo_dro/weight/<domain>/<group>`` (q_g) and
``grpo_dro/multiplier/<domain>/<group>`` (w_g); for every method ``group_reward/<domain>/<group>``,
``domain_zero_std/<domain>`` (fraction of the domain's prompts whose G rewards are all equal: no gradient) and
``advantage_share/<domain>`` (the domain's share of the batch's total absolute advantage, as used).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import gather_object
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from fairmed_core.data.schema import UNKNOWN, Dataset, open_image
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json
from fairmed_core.models.answers import normalise_answer
from fairmed_core.models.generation import _suppressed_token_ids
from fairmed_core.models.prompting import chat_messages, to_model_image
from fairmed_core.training.checkpoints import atomic_checkpoint
from fairmed_core.training.fairgrpo_weights import (
    CLUSTERINGS,
    FairGRPOStatistics,
    FairGRPOStepInfo,
    FairGRPOWeighting,
)
from fairmed_core.training.latent_groups import pair_counts
from fairmed_core.training.methods import (
    DRO_WEIGHTS_FILE,
    METHOD_NAMES,
    STATISTICS_FILE,
    MethodOptions,
    MethodStep,
    RolloutBatch,
    _missing,
    check_method_data,
    check_reward,
    prompt_domain,
    prompt_group_key,
    training_method,
)
from fairmed_core.training.rewards import ClassBalancedAccuracyReward, accuracy_reward, class_weights, format_reward

METHODS = METHOD_NAMES  # the registered methods' names (fairmed_core.training.methods)

__all__ = [
    "DRO_WEIGHTS_FILE",
    "FairGRPOBatch",
    "FairGRPOConfig",
    "FairGRPOTrainer",
    "GroupBalancedRepeatSampler",
    "METHODS",
    "STATISTICS_FILE",
    "TrainingDataSummary",
    "check_training_data",
    "grpo_dataset",
    "method_state_file",
    "prompt_domain",
    "prompt_group_key",
]

logger = logging.getLogger(__name__)

# Columns grpo_dataset writes itself; attribute columns with these names are not copied.
_RESERVED_COLUMNS = ("prompt", "images", "answer", "choices", "demo", "dataset", "case_id", "split")


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


def _config_error(error: ValueError) -> FairMedInputError:
    """TRL's batch-geometry ValueErrors as a FairMedInputError that says what to change."""
    message = str(error)
    return FairMedInputError(
        message,
        column="num_generations",
        hint="each prompt's num_generations rollouts must fit whole in the generation batch "
        "(per_device_train_batch_size x processes x steps_per_generation, or generation_batch_size): "
        "make the generation batch a multiple of num_generations",
    )


@dataclass
class FairGRPOConfig(GRPOConfig):
    """``GRPOConfig`` plus the fairness method and its settings. TRL's own defaults are kept (no KL, clip 0.2,
    loss_type 'dapo' = token-mean over the accumulated batch, temperature 1.0: the FairGRPO authors' setup)."""

    method: str = field(
        default="fairgrpo",
        metadata={"help": "the training method, one of fairmed_core.training.methods.METHODS: "
                  + "; ".join(f"'{name}' ({training_method(name).label})" for name in METHOD_NAMES)},
    )
    group_attributes: list[str] = field(
        default_factory=lambda: ["sex", "age_group"],
        metadata={"help": "attributes whose joined keys form a demographic group ('F,A3'); read from columns of "
                  "that name where present, else from the `demo` string"},
    )
    format_reward_weight: float = field(
        default=0.0,
        metadata={"help": "weight of the format reward added to the accuracy reward (default rewards only)"},
    )
    reward: str = field(
        default="exact",
        metadata={"help": "the default correctness reward: 'exact' (1 right, 0 wrong; the authors') or "
                  "'class_balanced' (right answers weighted by the inverse share of their answer within the "
                  "source: rewards.ClassBalancedAccuracyReward)"},
    )
    label_values: list[str] | None = field(
        default=None,
        metadata={"help": "allowed answers; every training answer must be one of them. None: each row's "
                  "`choices` column where present, else any non-empty answer"},
    )
    rescale: str = field(
        default="batch",
        metadata={"help": "FairGRPO batch rescale: 'batch' (authors' code), 'zero_mean' (paper's text), 'none'"},
    )
    statistics: str = field(
        default="persistent",
        metadata={"help": "FairGRPO statistics: 'persistent' (all steps so far, saved with checkpoints) or "
                  "'batch_local'"},
    )
    cluster_unknown: bool = field(
        default=True, metadata={"help": "FairGRPO: cluster prompts with unknown demographics by their rewards"}
    )
    sort_reward_vectors: bool = field(
        default=False, metadata={"help": "FairGRPO: sort each prompt's rollout rewards before clustering"}
    )
    max_clusters: int = field(default=3, metadata={"help": "FairGRPO: largest k of the elbow rule"})
    elbow_fraction: float = field(default=0.1, metadata={"help": "FairGRPO: elbow rule threshold"})
    within_prompt_scale: bool = field(
        default=True, metadata={"help": "FairGRPO: divide by the within-prompt std (False: only centre)"}
    )
    fairgrpo_eps: float = field(
        default=1e-6, metadata={"help": "FairGRPO: eps of the within-prompt std, T_d floor and batch std"}
    )
    dro_step_size: float = field(
        default=0.01, metadata={"help": "Group DRO: step size eta of the exponentiated-gradient weight update"}
    )
    clustering: str = field(
        default="fairmed", metadata={"help": f"FairGRPO: how prompts without demographics are clustered, one of "
                                     f"{CLUSTERINGS} (FairGRPOWeighting.clustering)"}
    )

    def __post_init__(self) -> None:
        training_method(self.method)  # an unknown name is refused, naming the known ones
        if isinstance(self.group_attributes, str):
            self.group_attributes = [self.group_attributes]
        self.group_attributes = [str(a).strip() for a in self.group_attributes]
        if not self.group_attributes or not all(self.group_attributes):
            raise FairMedInputError("group_attributes must name at least one attribute", column="group_attributes",
                                    hint="e.g. ['sex', 'age_group']")
        if not (math.isfinite(self.format_reward_weight) and self.format_reward_weight >= 0.0):
            raise FairMedInputError(
                f"format_reward_weight must be a number >= 0, got {self.format_reward_weight!r}",
                column="format_reward_weight", hint="FairGRPO's temperatures need non-negative rewards",
            )
        if not (math.isfinite(self.dro_step_size) and self.dro_step_size > 0.0):
            raise FairMedInputError(f"dro_step_size must be positive, got {self.dro_step_size!r}",
                                    column="dro_step_size")
        check_reward(self)
        if self.label_values is not None:
            self.label_values = [str(v) for v in self.label_values]
            if not self.label_values or not all(normalise_answer(v) for v in self.label_values):
                raise FairMedInputError("label_values must be non-empty answers", column="label_values")
        self.weighting()  # checks the FairGRPO options (FairMedInputError)
        try:
            super().__post_init__()
        except ValueError as error:
            text = str(error)
            if "num_generations" in text or "generations per prompt" in text or "global batch size" in text:
                raise _config_error(error) from error
            raise
        method = training_method(self.method)
        if method.advantages is not None and self.multi_objective_aggregation != "sum_then_normalize":
            raise FairMedInputError(
                f"{method.label} computes its advantages from the summed reward",
                column="multi_objective_aggregation", hint="use 'sum_then_normalize' (TRL's default)",
            )

    def weighting(self) -> FairGRPOWeighting:
        """The ``FairGRPOWeighting`` these settings describe (``cluster_all`` where the method clusters every
        prompt: 'fairgrpo_nd')."""
        return FairGRPOWeighting(
            rescale=self.rescale,
            statistics=self.statistics,
            cluster_unknown=self.cluster_unknown,
            cluster_all=training_method(self.method).clusters_every_prompt,
            sort_reward_vectors=self.sort_reward_vectors,
            max_clusters=self.max_clusters,
            elbow_fraction=self.elbow_fraction,
            within_prompt_scale=self.within_prompt_scale,
            eps=self.fairgrpo_eps,
            seed=self.seed,
            clustering=self.clustering,
        )


# --------------------------------------------------------------------------------------------------------------
# Keys of a prompt
# --------------------------------------------------------------------------------------------------------------


def method_state_file(args) -> str | None:
    """The file a checkpoint keeps the method's state in (FairGRPO statistics, Group DRO weights); None for the
    stateless methods. ``args``: a FairGRPOConfig, or the job's GRPOJobConfig (read before the model loads)."""
    return training_method(args.method).state_file(args)


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def _case_images(case: Mapping[str, Any]) -> list:
    paths = case.get("image_paths")
    if isinstance(paths, str):
        paths = [paths]
    elif isinstance(paths, (list, tuple, np.ndarray)) and len(paths) > 0:
        paths = list(paths)
    else:  # no list of images: the single image_path, if any
        paths = [] if _missing(case.get("image_path")) else [case.get("image_path")]
    return [to_model_image(open_image(path)) for path in paths]


def grpo_dataset(dataset: Dataset, split: str | None = "train", limit: int | None = None, *,
                 label_values: Sequence[str] | None = None):
    """The HF ``datasets.Dataset`` ``FairGRPOTrainer`` trains on, from a FairMed ``Dataset``.

    One row per case of ``split`` (None: every case), the first ``limit`` of them: ``prompt`` (one user turn:
    the case's images as image items, where its ``<image>`` markers put them, then the question with the
    FairGRPO instruction), ``images`` (8-bit RGB PIL images, loaded now: DICOM and 16-bit files included),
    ``answer``, ``choices`` (the label set, for the reward), ``demo``, ``dataset``, ``case_id``, ``split``, and
    the dataset's attribute columns (``sex``, ``age_group``, ...; group keys). Answers must lie in
    ``label_values`` (default: the dataset's label values).
    """
    import datasets  # TRL depends on it; imported here so the module loads fast

    cases = dataset.cases
    if split is not None:
        present = sorted(str(s) for s in cases["split"].dropna().unique())
        cases = cases[cases["split"] == split]
        if cases.empty:
            raise FairMedInputError(f"no {split!r} cases in dataset {dataset.name!r}", column="split",
                                    hint=f"splits present: {present}")
    if limit is not None:
        if int(limit) != limit or limit < 1:
            raise FairMedInputError(f"limit must be a whole number >= 1, got {limit!r}", column="limit")
        cases = cases.head(int(limit))
    labels = [str(v) for v in (label_values if label_values is not None else dataset.label_values)]
    label_keys = {normalise_answer(v) for v in labels}
    attributes = [a for a in dataset.attributes if a not in _RESERVED_COLUMNS]
    rows: dict[str, list] = {name: [] for name in ("prompt", "images", "answer", "choices", "demo", "dataset",
                                                   "case_id", "split", *attributes)}
    for position, case in enumerate(cases.to_dict("records")):
        answer = case.get("answer")
        if _missing(answer) or normalise_answer(str(answer)) not in label_keys:
            raise FairMedInputError(
                f"case {case['case_id']!r} has answer {answer!r}, not one of the labels {labels}",
                column="answer", row=position, hint="fix the answer, or pass the full label set as label_values",
            )
        images = _case_images(case)
        try:
            prompt = chat_messages(str(case["problem"]), len(images))
        except FairMedInputError as error:
            raise FairMedInputError(f"case {case['case_id']!r}: {error.message}", column=error.column,
                                    row=position, hint=error.hint) from error
        rows["prompt"].append(prompt)
        rows["images"].append(images)
        rows["answer"].append(str(answer))
        rows["choices"].append(list(labels))
        rows["demo"].append("" if _missing(case.get("demo")) else str(case["demo"]))
        rows["dataset"].append("" if _missing(case.get("dataset")) else str(case["dataset"]))
        rows["case_id"].append(str(case["case_id"]))
        rows["split"].append("" if _missing(case.get("split")) else str(case["split"]))
        for attribute in attributes:
            value = case.get(attribute)
            rows[attribute].append(UNKNOWN if _missing(value) else str(value))
    counts = [len(images) for images in rows["images"]]
    if counts and min(counts) == 0:
        if max(counts) > 0:
            raise FairMedInputError("a GRPO dataset must be all image cases or all text-only cases",
                                    column="images", row=counts.index(0))
        del rows["images"]
    return datasets.Dataset.from_dict(rows)


@dataclass(frozen=True)
class TrainingDataSummary:
    """What the pre-training check found: prompts, domains and group keys with their prompt counts."""

    prompts: int
    domains: dict[str, int]
    groups: dict[tuple[str, str], int]


def _column(dataset, name: str) -> list:
    return list(dataset[name])


def check_training_data(dataset, config: FairGRPOConfig, *, needs_answer: bool = True) -> TrainingDataSummary | None:
    """Refuse, before training starts, data the method cannot train on (``FairMedInputError``).

    Every method: a ``prompt`` column; with the accuracy reward, an ``answer`` per row within the label set
    (``config.label_values``, else the row's ``choices``). Then what the method needs (``methods.check_method_data``):
    a ``dataset`` value per row where it needs a source (one domain is fine; it is logged), demographics on at
    least one row where it needs them (else 'fairgrpo_nd' is the method that needs none). Iterable datasets
    cannot be scanned: None.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        return None
    columns = set(dataset.column_names)
    if "prompt" not in columns:
        raise FairMedInputError("the training data has no 'prompt' column", column="prompt",
                                hint="build it with grpo_dataset()")
    n = len(dataset)
    if n == 0:
        raise FairMedInputError("the training data is empty", hint="check the split and limit")
    if needs_answer:
        if "answer" not in columns:
            raise FairMedInputError("the accuracy reward needs an 'answer' column", column="answer")
        answers = _column(dataset, "answer")
        choices = _column(dataset, "choices") if "choices" in columns and config.label_values is None else None
        fixed = None if config.label_values is None else {normalise_answer(v) for v in config.label_values}
        for row, answer in enumerate(answers):
            key = None if _missing(answer) else normalise_answer(str(answer))
            if not key:
                raise FairMedInputError(f"row {row} has no answer", column="answer", row=row,
                                        hint="every training case needs its ground-truth answer")
            allowed = fixed
            if allowed is None and choices is not None and choices[row]:
                allowed = {normalise_answer(str(c)) for c in choices[row]}
            if allowed is not None and key not in allowed:
                labels = config.label_values if config.label_values is not None else list(choices[row])
                raise FairMedInputError(f"answer {answer!r} is not one of the labels {labels}", column="answer",
                                        row=row, hint="fix the answer or widen the label set (label_values)")
    key_columns = [c for c in ("demo", *config.group_attributes) if c in columns]
    values = {c: _column(dataset, c) for c in key_columns}
    group_keys = [prompt_group_key({c: values[c][row] for c in key_columns}, config.group_attributes)
                  for row in range(n)]
    groups = check_method_data(config.method, _column(dataset, "dataset") if "dataset" in columns else None,
                               group_keys, config.group_attributes)
    domains = Counter()
    for (domain, _), count in groups.items():
        domains[domain] += count
    if len(domains) == 1:
        logger.info("all %d training prompts come from one domain (%s): FairGRPO's domain temperature is then a "
                    "common factor", n, next(iter(domains)))
    return TrainingDataSummary(prompts=n, domains=dict(domains), groups=dict(groups))


# --------------------------------------------------------------------------------------------------------------
# Resampling baseline
# --------------------------------------------------------------------------------------------------------------


class GroupBalancedRepeatSampler(RepeatSampler):
    """TRL's ``RepeatSampler`` layout (each prompt ``mini_repeat_count`` times in a row, chunks of
    ``batch_size`` prompts repeated ``repeat_count`` times), with the prompts drawn with replacement with
    probability ``1 / count(key)``: every key (a (domain, group) pair) has the same expected share."""

    def __init__(self, data_source, keys: Sequence[Any], mini_repeat_count: int, batch_size: int = 1,
                 repeat_count: int = 1, seed: int | None = None):
        super().__init__(data_source, mini_repeat_count, batch_size=batch_size, repeat_count=repeat_count,
                         shuffle=True, seed=seed)
        if len(keys) != self.num_samples:
            raise ValueError(f"{len(keys)} keys for {self.num_samples} prompts")
        counts = Counter(keys)
        self.keys = list(keys)
        self.weights = torch.tensor([1.0 / counts[key] for key in keys], dtype=torch.float64)

    def __iter__(self):
        indexes = torch.multinomial(self.weights, self.num_samples, replacement=True,
                                    generator=self.generator).tolist()
        chunks = [indexes[i:i + self.batch_size] for i in range(0, len(indexes), self.batch_size)]
        for chunk in chunks:
            if len(chunk) != self.batch_size:
                continue
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FairGRPOBatch:
    """One generation batch as the method saw it: the gathered ``(n_prompts, G)`` rewards (weighted sum over
    reward functions; unscorable rows as 0), each prompt's domain and group key, TRL's GRPO advantages and the
    advantages used (this process's slice, one per completion), and FairGRPO's step info (FairGRPO methods) or
    Group DRO's multipliers."""

    rewards: torch.Tensor
    domains: tuple[str, ...] | None  # None: the data has no sources (methods that need none)
    groups: tuple[str, ...] | None
    grpo_advantages: torch.Tensor
    advantages: torch.Tensor
    info: FairGRPOStepInfo | None = None
    dro_multipliers: dict[tuple[str, str], float] | None = None
    completion_lengths: torch.Tensor | None = None  # (n_prompts, G), gathered: the completion tokens the loss counts
    attainable: np.ndarray | None = None  # (n_prompts,): the reward a right rollout earns; None: 1 everywhere


def _class_balanced_reward(train_dataset) -> ClassBalancedAccuracyReward:
    """The class-balanced reward weighted by the training data's answers per source (``answer`` and ``dataset``
    columns of a map-style dataset)."""
    columns = set(getattr(train_dataset, "column_names", None) or ())
    if not {"answer", "dataset"} <= columns:
        raise FairMedInputError("the class-balanced reward needs the training data's 'answer' and 'dataset' columns",
                                column="reward", hint="build the data with grpo_dataset(), or use reward='exact'")
    return ClassBalancedAccuracyReward(class_weights(_column(train_dataset, "answer"),
                                                     _column(train_dataset, "dataset")))


class FairGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with FairGRPO advantages and the fairness baselines (see the module docstring).

    ``reward_funcs`` defaults to ``accuracy_reward`` (plus ``format_reward`` when
    ``args.format_reward_weight > 0``). ``processing_class`` defaults to the model folder's processor; its
    tokenizer is set to left padding (TRL left-pads prompts; the processor's ``token_type_ids`` must line up).
    """

    _tag_names = ["trl", "grpo", "fairmed", "fairgrpo"]

    def __init__(self, model, reward_funcs=None, args: FairGRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, *, reset_method_state: bool = False, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = FairGRPOConfig(output_dir=f"{Path(str(name)).name or 'model'}-FairGRPO")
        if not isinstance(args, FairGRPOConfig):
            raise TypeError(f"args must be a FairGRPOConfig, got {type(args).__name__} (use FairGRPOConfig("
                            "method='grpo', ...) for plain GRPO)")
        default_rewards = reward_funcs is None
        if default_rewards:
            reward_funcs = [accuracy_reward]
            if args.reward == "class_balanced":
                reward_funcs = [_class_balanced_reward(train_dataset)]
            if args.format_reward_weight > 0:
                reward_funcs.append(format_reward)
            if args.reward_weights is not None and len(args.reward_weights) != len(reward_funcs):
                raise FairMedInputError(
                    f"{len(args.reward_weights)} reward_weights for the {len(reward_funcs)} default rewards",
                    column="reward_weights", hint="leave reward_weights unset and use format_reward_weight",
                )
        elif args.reward != "exact":
            raise FairMedInputError("reward applies to the default rewards only", column="reward",
                                    hint="pass the reward function in reward_funcs instead")
        elif args.format_reward_weight:
            raise FairMedInputError(
                "format_reward_weight applies to the default rewards only", column="format_reward_weight",
                hint="pass format_reward in reward_funcs and its weight in reward_weights",
            )
        self._check_reference_model(model, args)
        self.fairgrpo_summary = check_training_data(train_dataset, args, needs_answer=default_rewards)
        self.method = training_method(args.method)
        if self.method.prompt_sampling == "group_balanced" and self.fairgrpo_summary is None:
            raise FairMedInputError("group resampling needs a map-style datasets.Dataset to count groups",
                                    hint="build the data with grpo_dataset()")
        if processing_class is not None and getattr(processing_class, "tokenizer", None) is not None:
            processing_class.tokenizer.padding_side = "left"

        # Method state: set before TRL's __init__, which already builds the train sampler's dataloader lazily.
        self.reset_method_state = reset_method_state  # resume without the saved state: start it from zero
        self._options = MethodOptions.of(args)
        groups = self.fairgrpo_summary.groups if self.fairgrpo_summary is not None else {}
        self.method_state = None if self.method.state is None else self.method.state.new(sorted(groups))
        self.fairgrpo_last_batch: FairGRPOBatch | None = None
        self._last_rewards_per_func: torch.Tensor | None = None

        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)

        if default_rewards and args.reward_weights is None and len(self.reward_funcs) == 2:
            self.reward_weights = torch.tensor([1.0, args.format_reward_weight], dtype=torch.float32)
        self._suppress_special_tokens()

    @property
    def fairgrpo_statistics(self) -> FairGRPOStatistics | None:
        """FairGRPO's statistics (the FairGRPO methods' state); None for the other methods."""
        return self.method_state if isinstance(self.method_state, FairGRPOStatistics) else None

    @property
    def group_dro_log_weights(self) -> dict[tuple[str, str], float] | None:
        """Group DRO's log-weights per (domain, group) (its state); None for the other methods."""
        return self.method_state if self.method.state is not None and self.method.state.file == DRO_WEIGHTS_FILE \
            else None

    # -- set-up ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_reference_model(model, args: FairGRPOConfig) -> None:
        if args.beta == 0.0 or isinstance(model, str):
            return
        try:
            from peft import PeftModel

            if isinstance(model, PeftModel):
                return
        except ImportError:  # pragma: no cover - peft is installed here
            pass
        source = getattr(model.config, "_name_or_path", "") or ""
        if not Path(source).is_dir():
            raise FairMedInputError(
                f"with beta={args.beta} TRL rebuilds the reference model from the model's folder, but this model "
                f"came from {source!r}, which is not a local folder",
                column="beta", hint="save the model with save_pretrained(folder) and pass the folder, or use beta=0",
            )

    def _suppress_special_tokens(self) -> None:
        """Sampling must not emit special tokens (an image token breaks the next forward; DESIGN section 3).
        TRL suppresses only the image token; a user's ``generation_kwargs['suppress_tokens']`` wins."""
        if self.use_vllm or "suppress_tokens" in (self.args.generation_kwargs or {}):
            return
        ids = sorted(set(_suppressed_token_ids(self._tokenizer)) | set(self.generation_kwargs.get("suppress_tokens")
                                                                     or []))
        self.generation_kwargs["suppress_tokens"] = ids
        self.generation_config.suppress_tokens = ids

    # -- sampler (resampling baseline) ----------------------------------------------------------------------

    def _get_train_sampler(self, dataset=None):
        if self.method.prompt_sampling != "group_balanced":
            return super()._get_train_sampler(dataset)
        dataset = self.train_dataset if dataset is None else dataset
        columns = set(dataset.column_names)
        key_columns = [c for c in ("dataset", "demo", *self.args.group_attributes) if c in columns]
        values = {c: _column(dataset, c) for c in key_columns}
        keys = []
        for row in range(len(dataset)):
            record = {c: values[c][row] for c in key_columns}
            keys.append((prompt_domain(record), prompt_group_key(record, self.args.group_attributes)))
        return GroupBalancedRepeatSampler(
            data_source=dataset,
            keys=keys,
            mini_repeat_count=self.num_generations,
            batch_size=self.args.generation_batch_size // self.num_generations,
            repeat_count=self.num_iterations * self.args.steps_per_generation,
            seed=self.args.seed,
        )

    # -- rewards and advantages -----------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func  # gathered over processes: (all completions, funcs)
        return rewards_per_func

    def _prompt_keys(self, inputs) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """(domains, groups) of every prompt of the gathered batch, in TRL's process-major order; (None, None)
        where the data has no sources (a method that needs none: no per-group logs)."""
        has_source = bool(inputs) and "dataset" in inputs[0]
        if not has_source and self.method.needs_source:
            raise FairMedInputError("a training row has no 'dataset' column", column="dataset")
        local = []
        for row in inputs:
            domain = prompt_domain(row) if has_source else None
            if domain is None and self.method.needs_source:
                raise FairMedInputError("a training row has no 'dataset' value (its data source)", column="dataset")
            local.append((domain, prompt_group_key(row, self.args.group_attributes)))
        every = [tuple(key) for key in gather_object(local)]  # every rank calls it: the same collectives
        generations = self.num_generations
        if len(every) % generations:
            raise RuntimeError(f"{len(every)} completions do not form prompts of {generations} rollouts")
        prompt_keys = every[::generations]
        for index, key in enumerate(every):
            if key != prompt_keys[index // generations]:
                raise RuntimeError("the rollouts of one prompt carry different domains or groups: the batch is not "
                                   "grouped by prompt")
        if any(domain is None for domain, _ in prompt_keys):
            return None, None
        return tuple(d for d, _ in prompt_keys), tuple(g for _, g in prompt_keys)

    def _prompt_attainable(self, inputs) -> np.ndarray | None:
        """Per prompt of the gathered batch, the reward a right rollout earns: the weighted sum over reward
        functions of each one's ``attainable(answer, dataset)`` (1 for a function without one: right/wrong and
        format rewards). None when no function has one (every prompt can earn the same), without a collective:
        the reward functions are the same on every rank."""
        if not any(hasattr(f, "attainable") for f in self.reward_funcs):
            return None
        weights = self.reward_weights.tolist()
        local = [sum(w * (f.attainable(row.get("answer"), row.get("dataset")) if hasattr(f, "attainable") else 1.0)
                     for f, w in zip(self.reward_funcs, weights, strict=True)) for row in inputs]
        every = gather_object(local)
        return np.asarray(every[::self.num_generations], dtype=np.float64)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training or self._last_rewards_per_func is None:
            return output  # evaluation: GRPO's advantages, and the method's state stays as it was
        domains, groups = self._prompt_keys(inputs)
        attainable = self._prompt_attainable(inputs)
        generations = self.num_generations
        device = output["advantages"].device
        rewards_per_func = self._last_rewards_per_func
        rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards = rewards.masked_fill(torch.isnan(rewards_per_func).all(dim=1), 0.0)  # unscorable: reward 0
        matrix = rewards.view(-1, generations).detach().float()
        local_n = len(inputs)
        process_slice = slice(self.accelerator.process_index * local_n,
                              (self.accelerator.process_index + 1) * local_n)
        grpo_advantages = output["advantages"].detach().clone()
        # Every rank calls both gathers (the same collectives), whatever the method.
        all_grpo = self.accelerator.gather(grpo_advantages).double().cpu().view(-1, generations)
        lengths = self.accelerator.gather(output["completion_mask"].sum(dim=1)).double().cpu().view(-1, generations)
        if domains is not None:
            self._log_group_rewards(matrix, domains, groups)

        step = MethodStep(advantages=all_grpo.numpy())
        if self.method.advantages is not None:
            batch = RolloutBatch(rewards=matrix.double().cpu().numpy(), domains=domains, groups=groups,
                                 completion_lengths=lengths.numpy(), grpo_advantages=all_grpo.numpy(),
                                 attainable=attainable)
            step = self.method.advantages(batch, self.method_state, self._options)
            flat = torch.as_tensor(step.advantages, dtype=torch.float64).reshape(-1)
            output["advantages"] = flat[process_slice].to(device=device, dtype=grpo_advantages.dtype)
            self._replace_logged_advantages(flat)
            metrics = self._metrics["train"]
            for name, value in step.metrics.items():
                metrics[name].append(value)
            if step.info is not None and not self.method.needs_demographics and groups is not None:
                # Grouped without demographics: how well the latent groups recover the (masked) true ones.
                pairs = pair_counts(domains, groups, step.info.prompt_groups, unknown=UNKNOWN)
                for name, value in pairs.metrics().items():
                    metrics[name].append(value)
        if domains is not None:
            self._log_domain_signal(matrix, domains, output["advantages"].detach())
        self.fairgrpo_last_batch = FairGRPOBatch(
            rewards=matrix.cpu(), domains=domains, groups=groups, grpo_advantages=grpo_advantages.cpu(),
            advantages=output["advantages"].detach().cpu(), info=step.info, dro_multipliers=step.dro_multipliers,
            completion_lengths=lengths, attainable=attainable,
        )
        return output

    # -- logging --------------------------------------------------------------------------------------------

    def _log_group_rewards(self, matrix: torch.Tensor, domains, groups) -> None:
        means = matrix.double().mean(dim=1).tolist()
        totals: dict[tuple[str, str], list[float]] = {}
        for domain, group, mean in zip(domains, groups, means, strict=True):
            totals.setdefault((domain, group), []).append(mean)
        for (domain, group), values in sorted(totals.items()):
            self._metrics["train"][f"group_reward/{domain}/{group}"].append(float(np.mean(values)))

    def _log_domain_signal(self, matrix: torch.Tensor, domains: Sequence[str], local_advantages: torch.Tensor) -> None:
        """Where this batch's learning signal went, per domain: the fraction of its prompts whose rollouts all
        got the same reward (no GRPO gradient, whatever the weighting) and its share of the batch's total
        absolute advantage (the advantages actually used, after any reweighting)."""
        advantages = self.accelerator.gather(local_advantages).double().cpu()  # every rank calls it
        per_prompt = advantages.abs().view(len(domains), -1).sum(dim=1)
        zero_std = (matrix.double().std(dim=1, unbiased=False) == 0).tolist()
        total = float(per_prompt.sum())
        metrics = self._metrics["train"]
        for domain in sorted(set(domains)):
            rows = [i for i, d in enumerate(domains) if d == domain]
            metrics[f"domain_zero_std/{domain}"].append(float(np.mean([zero_std[i] for i in rows])))
            share = float(per_prompt[rows].sum()) / total if total > 0 else 0.0
            metrics[f"advantage_share/{domain}"].append(share)

    def _replace_logged_advantages(self, flat: torch.Tensor) -> None:
        """TRL logged its GRPO advantages of this batch (completions table); log the ones used instead."""
        logged = self._logs["advantages"]
        values = flat.detach().cpu().tolist()
        if len(logged) >= len(values):
            offset = len(logged) - len(values)
            for index, value in enumerate(values):
                logged[offset + index] = value

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _method_state(self) -> dict[str, Any]:
        """File name -> JSON payload of the method's state (empty for stateless methods)."""
        name = self.method.state_file(self.args)
        return {} if name is None else {name: self.method.state.to_json(self.method_state, self._options)}

    def _save_checkpoint(self, model, trial):
        # Written into a staging folder and renamed into place complete, the method's state with it (issue 13).
        with atomic_checkpoint(self, trial) as folder:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                for name, payload in self._method_state().items():
                    atomic_write_json(folder / name, payload)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.load_method_state(checkpoint)

    def load_method_state(self, checkpoint: str | os.PathLike) -> bool:
        """Restore the method's state (FairGRPO statistics, Group DRO weights) from a checkpoint folder. A folder
        without it is an error, unless the trainer was made with ``reset_method_state=True``: then False (with a
        warning), and the state starts from zero."""
        folder = Path(checkpoint)
        expected = self._method_state()
        if not expected:
            return False
        name = next(iter(expected))
        path = folder / name
        if not path.is_file():
            if not self.reset_method_state:
                # Resuming with the state at zero would silently change the method mid-run (issue 13).
                raise FairMedInputError(
                    f"cannot resume {self.args.method}: the checkpoint has no {name}", source=str(path),
                    hint="pass --reset-statistics to resume with the statistics reset to zero")
            logger.warning("checkpoint %s has no %s: the %s state starts from zero", folder, name, self.args.method)
            return False
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FairMedInputError(f"cannot read {name}: {error}", source=str(path)) from error
        self.method_state = self.method.state.from_json(payload, str(path))
        return True
