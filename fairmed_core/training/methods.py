"""The GRPO-family training methods, registered in one place: what each needs, how it draws prompts, how it turns
one step's rewards into advantages, and the state it keeps across steps.

A method is a small frozen :class:`TrainingMethod`; :data:`METHODS` lists them in the paper's order, and the
trainer (``fairgrpo_trainer``), the job settings (``GRPOJobConfig``'s choices), the command line (one
``fairmed train <name>`` each, with its help) and the Training page (labels and help) all read it. Adding a
method is adding an entry here. The module imports no torch, so the pages and ``fairmed --help`` read it fast.

Every method keeps TRL's policy loss (the clipped surrogate of ``GRPOTrainer``, trl 1.16.0, loss_type 'dapo' by
default); a method only chooses the prompts and the per-completion advantages that loss multiplies. The advantage
functions take the whole gathered batch (:class:`RolloutBatch`: the ``(n_prompts, G)`` reward matrix, each
prompt's data source and demographic group, the completion lengths and TRL's own GRPO advantages), the method's
state and its options, and return a :class:`MethodStep`.

The paper (arXiv 2510.19893; v2, June 2026, renames FairGRPO to EQPO and FairMedGemma-4B to EquiMedGemma-4B)
compares seven methods; RLOO and REINFORCE++ follow the authors' verl estimators (DDVD233/mirl,
``verl/trainer/ppo/core_algos.py``); docs/FAIRGRPO_DEVIATIONS.md lists where FairMed departs from their code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fairmed_core.data.schema import UNKNOWN, attribute_value, parse_demo
from fairmed_core.errors import FairMedInputError
from fairmed_core.training.fairgrpo_weights import (
    FairGRPOStatistics,
    FairGRPOStepInfo,
    FairGRPOWeighting,
    fairgrpo_advantages,
)
from fairmed_core.training.rewards import REWARDS

__all__ = [
    "DRO_WEIGHTS_FILE",
    "METHODS",
    "METHOD_NAMES",
    "MethodOptions",
    "MethodState",
    "MethodStep",
    "RolloutBatch",
    "STATISTICS_FILE",
    "TrainingMethod",
    "check_method_data",
    "check_reward",
    "group_dro_step",
    "prompt_domain",
    "prompt_group_key",
    "reinforce_plus_plus_advantages",
    "rloo_advantages",
    "training_method",
]

STATISTICS_FILE = "fairgrpo_statistics.json"
DRO_WEIGHTS_FILE = "group_dro_weights.json"
_DRO_FORMAT = "fairmed.group_dro_weights"
# verl's masked_mean / masked_whiten constants (verl/utils/torch_functional.py in the authors' fork).
_VERL_MEAN_EPS = 1e-8
_VERL_WHITEN_EPS = 1e-8


# --------------------------------------------------------------------------------------------------------------
# What a method sees and returns
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RolloutBatch:
    """One generation batch, gathered over processes: ``rewards`` ``(n_prompts, G)`` (the weighted sum of the
    reward functions; unscorable completions 0), each prompt's data source and demographic group key (None where
    the data has no ``dataset`` column), ``completion_lengths`` ``(n_prompts, G)`` (the completion tokens the loss
    counts), TRL's GRPO advantages ``(n_prompts, G)`` of the same batch, and ``attainable`` ``(n_prompts,)``: the
    reward a fully right rollout of the prompt earns (None: 1 for every prompt, as right/wrong rewards are)."""

    rewards: np.ndarray
    domains: tuple[str, ...] | None
    groups: tuple[str, ...] | None
    completion_lengths: np.ndarray
    grpo_advantages: np.ndarray
    attainable: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class MethodStep:
    """What a method made of one batch: the per-completion advantages ``(n_prompts, G)`` the loss uses, numbers to
    log (name -> value), and for inspection FairGRPO's step info or Group DRO's multiplier per group."""

    advantages: np.ndarray
    metrics: Mapping[str, float] = field(default_factory=dict)
    info: FairGRPOStepInfo | None = None
    dro_multipliers: dict[tuple[str, str], float] | None = None


@dataclass(frozen=True)
class MethodOptions:
    """The settings a method's advantages read: FairGRPO's weighting and Group DRO's step size."""

    weighting: FairGRPOWeighting = field(default_factory=FairGRPOWeighting)
    dro_step_size: float = 0.01

    @classmethod
    def of(cls, settings: Any) -> MethodOptions:
        """From a FairGRPOConfig or a GRPOJobConfig (anything with ``weighting()`` and ``dro_step_size``)."""
        return cls(weighting=settings.weighting(), dro_step_size=float(settings.dro_step_size))


@dataclass(frozen=True)
class MethodState:
    """State a method keeps across steps and saves with every checkpoint, as ``file`` (JSON) in the folder.

    ``new(groups)`` starts it from the training set's (domain, group) keys; ``kept(options)`` says whether these
    options keep any (FairGRPO's batch-local statistics keep none)."""

    file: str
    new: Callable[[Sequence[tuple[str, str]]], Any]
    to_json: Callable[[Any, MethodOptions], dict]
    from_json: Callable[[Mapping[str, Any], str], Any]
    kept: Callable[[MethodOptions], bool] = lambda options: True


Advantages = Callable[[RolloutBatch, Any, MethodOptions], MethodStep]


@dataclass(frozen=True)
class TrainingMethod:
    """One training method: its name (the command, ``fairmed train <name>``), the paper's label, a one-line help,
    what data it needs, how prompts are drawn, how advantages are computed (None: TRL's GRPO advantages, untouched)
    and the state it keeps."""

    name: str
    label: str
    help: str
    needs_source: bool
    needs_demographics: bool
    prompt_sampling: Literal["uniform", "group_balanced"]
    advantages: Advantages | None
    state: MethodState | None = None
    clusters_every_prompt: bool = False  # FairGRPO's weighting ignores the demographics (the ND variant)
    # The setting under which the advantages divide by each prompt's own reward spread (TRL's GRPO advantages:
    # "scale_rewards"; FairGRPO's: "within_prompt_scale"); None where they never do (RLOO, REINFORCE++). A
    # per-prompt reward weight (the class-balanced reward) cancels under that division.
    spread_setting: str | None = None

    def divides_by_prompt_spread(self, settings: Any) -> bool:
        """Whether, under ``settings`` (a FairGRPOConfig or a job config), each prompt's advantages are divided by
        the spread of its own rewards."""
        if self.spread_setting is None:
            return False
        value = getattr(settings, self.spread_setting, True)
        return value is True or value == "group"

    def state_file(self, settings: Any) -> str | None:
        """The checkpoint file of this method's state under ``settings`` (None: it keeps none)."""
        if self.state is None or not self.state.kept(MethodOptions.of(settings)):
            return None
        return self.state.file


# --------------------------------------------------------------------------------------------------------------
# Keys of a prompt
# --------------------------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def prompt_domain(row: Mapping[str, Any]) -> str | None:
    """The prompt's data source (its ``dataset`` value, stripped); None when missing."""
    value = row.get("dataset")
    return None if _missing(value) else str(value).strip()


def prompt_group_key(row: Mapping[str, Any], attributes: Sequence[str] = ("sex", "age_group")) -> str:
    """The demographic group key of one prompt: each attribute from the column of that name where the row has a
    known value there, else from its ``demo`` string; joined (``"F,A3"``), or ``"UNK"`` when no attribute is known (the
    same rule as ``fairgrpo_weights.demographic_group_key``)."""
    parsed: dict[str, str] | None = None
    values = []
    for attribute in attributes:
        value = row.get(attribute)
        key = UNKNOWN if _missing(value) else attribute_value(attribute, value)
        if key != UNKNOWN:
            values.append(key)
            continue
        if parsed is None:
            demo = row.get("demo")
            parsed = parse_demo(demo if isinstance(demo, str) else None)
        values.append(parsed.get(attribute, UNKNOWN))
    if all(value == UNKNOWN for value in values):
        return UNKNOWN
    return ",".join(values)


def check_method_data(method: TrainingMethod | str, domains: Sequence[Any] | None, groups: Sequence[str],
                      group_attributes: Sequence[str]) -> dict[tuple[str, str], int]:
    """Refuse training data the method cannot use (``FairMedInputError``); return the prompt count per
    (domain, group) key (empty where the data has no sources and the method needs none).

    ``domains``: each training prompt's ``dataset`` value (None: the data has no such column); ``groups``: each
    prompt's group key (:func:`prompt_group_key`). A method that needs a source needs one per prompt (one value
    for all is fine); one that needs demographics needs a known group on at least one prompt. The trainer runs
    this on its dataset; the job, the command line and the Training page run it on the case table before any
    job starts."""
    method = training_method(method) if isinstance(method, str) else method
    if domains is None:
        if method.needs_source:
            raise FairMedInputError(
                f"method {method.name!r} needs each case's data source in a 'dataset' column; the data has none",
                column="dataset", hint="add the source (modality or site) per case; one value for all cases is fine",
            )
        return {}
    keys: Counter = Counter()
    for row, (domain, group) in enumerate(zip(domains, groups, strict=True)):
        if _missing(domain):
            if method.needs_source:
                raise FairMedInputError(
                    f"row {row} has no 'dataset' value (its data source)", column="dataset", row=row,
                    hint="fill in the source of every case; one value for all cases is fine",
                )
            return {}  # sources are only logged for this method: without all of them, nothing is
        keys[(str(domain).strip(), group)] += 1
    if method.needs_demographics and all(group == UNKNOWN for _, group in keys):
        clusters = method.name == "fairgrpo"
        hint = ("use method='fairgrpo_nd' (FairGRPO without demographics), which clusters every prompt by its "
                "rollout rewards" if clusters else
                "this baseline balances known groups; use 'fairgrpo_nd' for data without demographics")
        raise FairMedInputError(
            f"no training case has demographics ({', '.join(group_attributes)}) in 'demo' or attribute "
            f"columns: method {method.name!r} would see one unknown group"
            + (" and cluster every prompt" if clusters else ""),
            column="demo", hint=hint,
        )
    return dict(keys)


# --------------------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------------------


def rloo_advantages(rewards: Any) -> np.ndarray:
    """RLOO (Ahmadian et al. 2024) as the authors' ``compute_rloo_outcome_advantage`` computes it:
    ``A_i = r_i * G / (G - 1) - mean_G(r) * G / (G - 1)``, which is exactly the leave-one-out baseline
    ``r_i - mean_(j != i) r_j``. No division by a standard deviation."""
    matrix = np.asarray(rewards, dtype=np.float64)
    generations = matrix.shape[1]
    if generations < 2:
        raise FairMedInputError(f"RLOO needs at least 2 rollouts per prompt, got G = {generations}",
                                column="num_generations")
    scale = generations / (generations - 1)
    return matrix * scale - matrix.mean(axis=1, keepdims=True) * scale


def reinforce_plus_plus_advantages(rewards: Any, completion_lengths: Any) -> np.ndarray:
    """REINFORCE++ (Hu 2025) as the authors' ``compute_reinforce_plus_plus_outcome_advantage`` computes it with an
    outcome reward and gamma = 1 (their setting): every completion token's return is the completion's reward, and
    the returns are whitened over all valid tokens of the batch (verl's ``masked_whiten``: mean and unbiased
    variance over the tokens, ``(R - mean) / sqrt(var + 1e-8)``). Each token of completion i then carries
    ``(r_i - m) / sqrt(v + 1e-8)``, with m and v weighted by the completion lengths L_i:
    ``m = sum L_i r_i / (sum L_i + 1e-8)``, ``v = sum L_i (r_i - m)^2 / (sum L_i + 1e-8) * sum L / (sum L - 1)``:
    one advantage per completion, which is what TRL's loss takes. No per-prompt baseline."""
    matrix = np.asarray(rewards, dtype=np.float64)
    lengths = np.asarray(completion_lengths, dtype=np.float64)
    if lengths.shape != matrix.shape:
        raise FairMedInputError(f"{lengths.shape} completion lengths for rewards of shape {matrix.shape}")
    tokens = float(lengths.sum())
    if tokens <= 1:
        # verl refuses this too (masked_var: "The sum of the mask is one").
        raise FairMedInputError("REINFORCE++ whitens over the batch's completion tokens; this batch has "
                                f"{tokens:.0f}", hint="use more prompts or longer completions")
    mean = float((lengths * matrix).sum()) / (tokens + _VERL_MEAN_EPS)
    variance = float((lengths * (matrix - mean) ** 2).sum()) / (tokens + _VERL_MEAN_EPS) * tokens / (tokens - 1)
    return (matrix - mean) / math.sqrt(variance + _VERL_WHITEN_EPS)


def _trl_grpo(batch: RolloutBatch, state: Any, options: MethodOptions) -> MethodStep:
    return MethodStep(advantages=batch.grpo_advantages)


def _rloo(batch: RolloutBatch, state: Any, options: MethodOptions) -> MethodStep:
    return MethodStep(advantages=rloo_advantages(batch.rewards))


def _reinforce_plus_plus(batch: RolloutBatch, state: Any, options: MethodOptions) -> MethodStep:
    return MethodStep(advantages=reinforce_plus_plus_advantages(batch.rewards, batch.completion_lengths))


def _fairgrpo(batch: RolloutBatch, state: FairGRPOStatistics, options: MethodOptions) -> MethodStep:
    weighting = options.weighting
    stats = state if weighting.statistics == "persistent" else None
    advantages, info = fairgrpo_advantages(batch.rewards, batch.domains, batch.groups, stats, weighting)
    return MethodStep(advantages=np.asarray(advantages, dtype=np.float64), metrics=_fairgrpo_metrics(info),
                      info=info)


def _fairgrpo_metrics(info: FairGRPOStepInfo) -> dict[str, float]:
    metrics = {"fairgrpo/batch_std": info.batch_std, "fairgrpo/fallback_prompts": float(info.fallback_prompts)}
    for record in info.domains:
        if math.isfinite(record.temperature):
            metrics[f"fairgrpo/temperature/{record.domain}"] = record.temperature
    for record in info.groups:
        metrics[f"fairgrpo/weight/{record.domain}/{record.group}"] = record.weight
        if math.isfinite(record.temperature):
            metrics[f"fairgrpo/temperature/{record.domain}/{record.group}"] = record.temperature
    for clusters in info.clusters:
        metrics[f"fairgrpo/clusters/{clusters.domain}"] = float(clusters.n_clusters)
    return metrics


def group_dro_step(rewards: Any, domains: Sequence[str], groups: Sequence[str], log_weights: dict,
                   step_size: float, attainable: Any = None,
                   ) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float], np.ndarray]:
    """Online Group DRO (Sagawa et al., ICLR 2020), one step: for every (domain, group) present, its loss
    ``l_g = 1 - (sum of its prompts' mean rewards) / (sum of their attainable rewards)`` and
    ``log q_g += step_size * l_g`` (in place; a group not seen before starts at the mean log-weight);
    ``q = softmax(log q)``. Returns q per group, the multiplier ``w_g = q_g / sum_(h in batch) q_h * P / P_g`` per
    group in the batch, and the multiplier per prompt.

    ``attainable`` (per prompt; None: all 1) is the reward a right rollout earns. With right/wrong rewards the loss
    is the group's error rate, ``1 - mean reward``. With the class-balanced reward a right answer earns its
    answer's weight, so a group with more of the rare answer would score a higher mean reward at the same accuracy
    (and read as easier); dividing by what its prompts could earn makes the loss the group's class-weighted error
    in [0, 1]."""
    keys = list(zip(domains, groups, strict=True))
    prompt_means = np.asarray(rewards, dtype=np.float64).mean(axis=1)
    scale = np.ones_like(prompt_means) if attainable is None else np.asarray(attainable, dtype=np.float64)
    if scale.shape != prompt_means.shape or not np.all(np.isfinite(scale)) or np.any(scale <= 0.0):
        raise ValueError(f"attainable rewards must be one positive number per prompt, got {scale!r}")
    present = sorted(set(keys))
    start = float(np.mean(list(log_weights.values()))) if log_weights else 0.0
    for key in present:
        rows = [i for i, k in enumerate(keys) if k == key]
        loss = 1.0 - float(prompt_means[rows].sum() / scale[rows].sum())
        log_weights[key] = log_weights.get(key, start) + step_size * loss
    names = sorted(log_weights)
    values = np.array([log_weights[k] for k in names], dtype=np.float64)
    q = np.exp(values - values.max())
    q_of = dict(zip(names, (q / q.sum()).tolist(), strict=True))
    in_batch = sum(q_of[k] for k in present)
    counts = Counter(keys)
    multipliers = {k: q_of[k] / in_batch * len(keys) / counts[k] for k in present}
    return q_of, multipliers, np.array([multipliers[k] for k in keys], dtype=np.float64)


def _group_dro(batch: RolloutBatch, state: dict, options: MethodOptions) -> MethodStep:
    q_of, multipliers, per_prompt = group_dro_step(batch.rewards, batch.domains, batch.groups, state,
                                                   options.dro_step_size, batch.attainable)
    metrics = {f"grpo_dro/weight/{d}/{g}": value for (d, g), value in q_of.items()}
    metrics |= {f"grpo_dro/multiplier/{d}/{g}": value for (d, g), value in multipliers.items()}
    return MethodStep(advantages=batch.grpo_advantages * per_prompt[:, None], metrics=metrics,
                      dro_multipliers=multipliers)


# --------------------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------------------


def _dro_to_json(log_weights: dict, options: MethodOptions) -> dict:
    names = sorted(log_weights)
    return {"format": _DRO_FORMAT, "version": 1, "step_size": options.dro_step_size,
            "domains": [d for d, _ in names], "groups": [g for _, g in names],
            "log_weights": [float(log_weights[k]) for k in names]}


def _dro_from_json(payload: Mapping[str, Any], source: str) -> dict:
    try:
        if payload.get("format") != _DRO_FORMAT:
            raise ValueError("missing format marker")
        return {(str(d), str(g)): float(w)
                for d, g, w in zip(payload["domains"], payload["groups"], payload["log_weights"], strict=True)}
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise FairMedInputError(f"not Group DRO weights: {error}", source=source) from error


_FAIRGRPO_STATE = MethodState(
    file=STATISTICS_FILE,
    new=lambda groups: FairGRPOStatistics(),
    to_json=lambda stats, options: stats.to_dict(),
    from_json=lambda payload, source: FairGRPOStatistics.from_dict(payload, source=source),
    kept=lambda options: options.weighting.statistics == "persistent",
)
_DRO_STATE = MethodState(file=DRO_WEIGHTS_FILE, new=lambda groups: {key: 0.0 for key in sorted(groups)},
                         to_json=_dro_to_json, from_json=_dro_from_json)


# --------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------

_FAIRGRPO_NAMES = "FairGRPO, renamed EQPO (Equitable Group Relative Policy Optimization) in the paper's v2"

METHODS: dict[str, TrainingMethod] = {method.name: method for method in (
    TrainingMethod(
        name="grpo", label="GRPO",
        help="TRL's GRPO, untouched: rewards centred and scaled within each prompt's rollouts",
        needs_source=False, needs_demographics=False, prompt_sampling="uniform", advantages=None,
        spread_setting="scale_rewards"),
    TrainingMethod(
        name="rloo", label="RLOO",
        help="REINFORCE leave-one-out: each rollout's reward minus the mean of the prompt's other rollouts "
             "(the authors' verl estimator), in TRL's clipped loss",
        needs_source=False, needs_demographics=False, prompt_sampling="uniform", advantages=_rloo),
    TrainingMethod(
        name="reinforce_plus_plus", label="REINFORCE++",
        help="REINFORCE++: rewards whitened over all completion tokens of the batch, no per-prompt baseline "
             "(the authors' verl estimator, gamma 1), in TRL's clipped loss",
        needs_source=False, needs_demographics=False, prompt_sampling="uniform", advantages=_reinforce_plus_plus),
    TrainingMethod(
        name="grpo_resample", label="GRPO + group resampling",
        help="GRPO on prompts drawn so that every (source, demographic group) has the same expected share",
        needs_source=True, needs_demographics=True, prompt_sampling="group_balanced", advantages=None,
        spread_setting="scale_rewards"),
    TrainingMethod(
        name="grpo_dro", label="GRPO + Group DRO",
        help="GRPO whose advantages are weighted by online Group DRO weights (harder groups weigh more)",
        needs_source=True, needs_demographics=True, prompt_sampling="uniform", advantages=_group_dro,
        state=_DRO_STATE, spread_setting="scale_rewards"),
    TrainingMethod(
        name="fairgrpo_nd", label="FairGRPO without demographics (EQPO-ND)",
        help=f"{_FAIRGRPO_NAMES}, without demographics: every prompt is grouped by clustering its rollout rewards",
        needs_source=True, needs_demographics=False, prompt_sampling="uniform", advantages=_fairgrpo,
        state=_FAIRGRPO_STATE, clusters_every_prompt=True, spread_setting="within_prompt_scale"),
    TrainingMethod(
        name="fairgrpo", label="FairGRPO (EQPO)",
        help=f"{_FAIRGRPO_NAMES}: GRPO advantages scaled by source and demographic-group temperatures, so small "
             "and hard groups weigh more; prompts without demographics are clustered",
        needs_source=True, needs_demographics=True, prompt_sampling="uniform", advantages=_fairgrpo,
        state=_FAIRGRPO_STATE, spread_setting="within_prompt_scale"),
)}
METHOD_NAMES = tuple(METHODS)


def check_reward(settings: Any) -> None:
    """Refuse (``FairMedInputError``) an unknown reward, and a reward weighted per prompt (``"class_balanced"``)
    under advantages that divide each prompt by its own reward spread: every rollout of a prompt shares its case,
    so the weight would cancel. ``settings``: a FairGRPOConfig or a job config (``method``, ``reward`` and the
    method's ``spread_setting``)."""
    if settings.reward not in REWARDS:
        raise FairMedInputError(f"unknown reward {settings.reward!r}", column="reward", hint=f"one of {REWARDS}")
    method = training_method(settings.method)
    if settings.reward != "class_balanced" or not method.divides_by_prompt_spread(settings):
        return
    setting = method.spread_setting
    raise FairMedInputError(
        f"the class-balanced reward weighs each prompt by a constant, which {setting}="
        f"{getattr(settings, setting)!r} divides away (every rollout of a prompt shares its answer)", column=setting,
        hint="scale_rewards='none'" if setting == "scale_rewards" else
        "turn within_prompt_scale off (within_prompt_scale=False, --no-within-prompt-scale)")


def training_method(name: str) -> TrainingMethod:
    """The registered method of that name (``FairMedInputError`` naming the known ones otherwise)."""
    method = METHODS.get(name) if isinstance(name, str) else None
    if method is None:
        raise FairMedInputError(f"unknown method {name!r}", column="method", hint=f"use one of {list(METHODS)}")
    return method

