"""FairGRPO advantage weighting (arXiv 2510.19893) as pure functions: rewards in, advantages and weights out.

DESIGN section 4 gives the formulas, taken from the authors' released code; for rollout i of prompt q:

1. within-prompt normalisation ``s = (r - mean_G(r)) / (std_G(r) + eps)`` with the unbiased std --
   ``within_prompt_advantages``;
2. hierarchical temperatures from statistics over ALL steps so far -- ``FairGRPOStatistics`` keeps them:
   domain ``T_d = max(sqrt(N_d) * rbar_d, eps)`` (``domain_temperature``), demographic group inside the domain
   ``T_g = sqrt(N_g) * rbar_g`` (``group_temperature``); the scaled advantage is ``s / (T_d * T_g)``, and where
   that is NaN or infinite (``rbar_g = 0``, a group never seen) the unscaled ``s`` is kept -- ``fairgrpo_weights``;
3. batch rescale: divide by the batch std of the scaled advantages (+eps), without re-centring (the code), or
   re-centre as well (the paper's text) -- ``fairgrpo_advantages``.

Prompts whose demographics are unknown (``"UNK"``) are grouped by their vectors of G rollout rewards: per domain,
K-means (k = 1..3 by the elbow rule) over all UNK vectors seen so far, refit each step; the cluster size is N_g
and the centroid's mean is rbar_g -- ``cluster_unknown_groups`` (FairMed's default: 10 seeded restarts on the
distinct vectors), or ``cluster_unknown_groups_authors`` (``clustering="authors"``: the authors' one k-means++
start with seed 0 on the raw list, and their elbow rule; docs/FAIRGRPO_DEVIATIONS.md).

``fairgrpo_advantages`` is the one call a TRL ``GRPOTrainer`` subclass makes per step. TRL gathers the reward
matrix of the whole (all-process) batch before it normalises; call this on that gathered ``(n_prompts, G)``
matrix with the gathered per-prompt domains and groups on every rank, and every rank computes the same weights
and the same statistics with no further communication. Where ranks do keep statistics of their own slices,
``FairGRPOStatistics.merge`` sums them (``to_dict`` is the JSON form to gather and to save with a checkpoint).

Where DESIGN is silent, this module chooses (and the docstrings below repeat):
- the batch is counted before its temperatures are computed, so "all steps so far" includes this one (else the
  first step would have N = 0 everywhere);
- rbar is the mean over rollouts (reward sum / rollouts seen); N counts prompts, as DESIGN says;
- one ``eps`` (1e-6) for the within-prompt std, the T_d floor and the batch std; the batch std is unbiased;
- rewards must be finite and non-negative (a negative mean reward would flip advantages, not shrink them) and
  G >= 2; these are errors, not silent corrections;
- the elbow rule compares the k=1 -> 2 drop, which has no previous drop, with the inertia at k=1;
- a prompt is UNK when its group key is ``"UNK"``; ``demographic_group_key`` gives "UNK" only when no attribute
  is known, so partly known demographics ("F,UNK") form a group of their own;
- UNK reward vectors are kept as distinct vectors with counts (the same K-means objective, a bounded history);
  with ``clustering="authors"`` the raw list is kept as well, since one k-means++ start depends on its order.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fairmed_core.data.schema import UNKNOWN, parse_demo
from fairmed_core.errors import FairMedInputError

__all__ = [
    "CLUSTERINGS",
    "DomainTemperature",
    "FairGRPOStatistics",
    "FairGRPOStepInfo",
    "FairGRPOWeighting",
    "FairGRPOWeights",
    "GroupTemperature",
    "LatentGroups",
    "RewardTally",
    "RewardVectors",
    "choose_k_by_elbow",
    "choose_k_by_elbow_authors",
    "cluster_unknown_groups",
    "cluster_unknown_groups_authors",
    "demographic_group_key",
    "domain_temperature",
    "fairgrpo_advantages",
    "fairgrpo_weights",
    "group_temperature",
    "within_prompt_advantages",
]

# The authors' code uses one small epsilon for the within-prompt std, the domain temperature floor and the
# batch std (DESIGN section 4 writes 1e-6 for the first). TRL's own GRPO normalisation uses 1e-4.
DEFAULT_EPS = 1e-6
CLUSTER_PREFIX = "cluster-"
# How prompts without demographics are clustered: FairMed's default and the authors' code (DESIGN section 4).
CLUSTERINGS = ("fairmed", "authors")
_STATISTICS_FORMAT = "fairmed.fairgrpo_statistics"
_STATISTICS_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairGRPOWeighting:
    """How FairGRPO weights advantages. Defaults follow the authors' released code (DESIGN section 4)."""

    rescale: Literal["batch", "zero_mean", "none"] = field(
        default="batch",
        metadata={
            "help": "after the temperatures: 'batch' divides by the batch std (+eps) without re-centring (the "
            "authors' code); 'zero_mean' also subtracts the batch mean (the paper's text); 'none' keeps the "
            "temperature-scaled advantages (for inspection)"
        },
    )
    statistics: Literal["persistent", "batch_local"] = field(
        default="persistent",
        metadata={
            "help": "'persistent': N and mean reward over all steps so far, kept in a FairGRPOStatistics that is "
            "saved with the checkpoint; 'batch_local': from the current batch only (the authors' earlier code)"
        },
    )
    cluster_unknown: bool = field(
        default=True,
        metadata={"help": "group prompts with unknown demographics (UNK) by K-means on their rollout rewards; "
                  "False treats UNK as one ordinary group"},
    )
    cluster_all: bool = field(
        default=False,
        metadata={"help": "ignore the demographics and cluster every prompt: the paper's 'FairGRPO without "
                  "demographics' (ND) baseline"},
    )
    sort_reward_vectors: bool = field(
        default=False,
        metadata={"help": "sort each prompt's rollout rewards before clustering (rollout order is arbitrary); "
                  "the authors' code clusters the vectors as they come"},
    )
    max_clusters: int = field(default=3, metadata={"help": "largest k tried by the elbow rule, per domain"})
    elbow_fraction: float = field(
        default=0.1,
        metadata={"help": "the elbow rule stops at the first k whose next inertia drop is below this fraction "
                  "of the previous drop"},
    )
    within_prompt_scale: bool = field(
        default=True,
        metadata={"help": "divide by the within-prompt std (+eps) as GRPO does; False only centres (Dr. GRPO)"},
    )
    eps: float = field(
        default=DEFAULT_EPS,
        metadata={"help": "added to the within-prompt and batch stds, and the floor of the domain temperature"},
    )
    seed: int = field(default=0, metadata={"help": "K-means seed; clustering is deterministic given it"})
    clustering: Literal["fairmed", "authors"] = field(
        default="fairmed",
        metadata={
            "help": "how prompts without demographics are clustered: 'fairmed' (K-means with 10 restarts seeded by "
            "the run seed on the distinct reward vectors, weighted by their counts; FairMed's elbow rule) or "
            "'authors' (the authors' code: one k-means++ start with random_state 0 on the raw list of vectors, "
            "their elbow rule, each prompt in the cluster K-means gave it; docs/FAIRGRPO_DEVIATIONS.md)"
        },
    )

    def __post_init__(self) -> None:
        if self.clustering not in CLUSTERINGS:
            raise FairMedInputError(
                f"unknown clustering {self.clustering!r}", column="clustering", hint="use 'fairmed' or 'authors'"
            )
        if self.rescale not in ("batch", "zero_mean", "none"):
            raise FairMedInputError(
                f"unknown rescale {self.rescale!r}", column="rescale", hint="use 'batch', 'zero_mean' or 'none'"
            )
        if self.statistics not in ("persistent", "batch_local"):
            raise FairMedInputError(
                f"unknown statistics {self.statistics!r}",
                column="statistics",
                hint="use 'persistent' or 'batch_local'",
            )
        if int(self.max_clusters) != self.max_clusters or self.max_clusters < 1:
            raise FairMedInputError(
                f"max_clusters must be a whole number >= 1, got {self.max_clusters!r}", column="max_clusters"
            )
        if not 0.0 < self.elbow_fraction < 1.0:
            raise FairMedInputError(
                f"elbow_fraction must lie in (0, 1), got {self.elbow_fraction!r}", column="elbow_fraction"
            )
        if not (math.isfinite(self.eps) and self.eps > 0.0):
            raise FairMedInputError(f"eps must be a positive number, got {self.eps!r}", column="eps")


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------


def _is_tensor(value: object) -> bool:
    # torch is optional here: if it was never imported, the value cannot be a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _reward_matrix(rewards: Any, *, min_generations: int = 2) -> np.ndarray:
    """Rewards as a float64 ``(n_prompts, G)`` array, checked: finite, non-negative, G >= 2."""
    if _is_tensor(rewards):
        import torch

        array = rewards.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            array = np.asarray(rewards, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise FairMedInputError(
                f"rewards are not numbers ({error})", column="rewards", hint="pass an (n_prompts, G) array"
            ) from error
    if array.ndim != 2 or array.shape[0] < 1:
        raise FairMedInputError(
            f"rewards must be an (n_prompts, G) matrix with at least one prompt, got shape {array.shape}",
            column="rewards",
            hint="reshape the flat rewards with .view(-1, num_generations)",
        )
    if array.shape[1] < min_generations:
        raise FairMedInputError(
            f"each prompt needs at least {min_generations} rollouts, got G = {array.shape[1]}",
            column="rewards",
            hint="GRPO compares rollouts of the same prompt; set num_generations >= 2",
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        raise FairMedInputError(
            "rewards must be finite",
            column="rewards",
            row=int(np.flatnonzero(~finite)[0]),
            hint="give an unscorable completion a reward (a format failure scores 0)",
        )
    negative = (array < 0.0).any(axis=1)
    if negative.any():
        # The temperatures read the mean reward as how easy a group is; a negative mean would flip the sign of
        # the advantages instead of shrinking them.
        raise FairMedInputError(
            "FairGRPO's temperatures need non-negative rewards (the accuracy reward lies in [0, 1])",
            column="rewards",
            row=int(np.flatnonzero(negative)[0]),
            hint="shift or rescale the reward so that it is >= 0",
        )
    return array + 0.0  # turns -0.0 into 0.0, so equal vectors are equal bytes


def _prompt_keys(keys: Any, n_prompts: int, column: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        raise FairMedInputError(
            f"{column} must give one key per prompt, got a single string", column=column, hint="pass a list"
        )
    keys = tuple(keys)
    if len(keys) != n_prompts:
        raise FairMedInputError(
            f"{len(keys)} {column} for {n_prompts} prompts",
            column=column,
            hint="give one key per prompt (one per row of rewards), not one per completion",
        )
    for row, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise FairMedInputError(
                f"{column} key {key!r} is not a non-empty string",
                column=column,
                row=row,
                hint=f"use {UNKNOWN!r} for unknown demographics" if column == "groups" else None,
            )
    return keys


def _like(values: np.ndarray, template: Any) -> Any:
    """``values`` as the type of ``template``: a tensor on its device (its float dtype), else a numpy array."""
    if _is_tensor(template):
        import torch

        dtype = template.dtype if template.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(values, dtype=dtype, device=template.device)
    template_dtype = getattr(template, "dtype", None)
    if isinstance(template, np.ndarray) and np.issubdtype(template_dtype, np.floating):
        return values.astype(template_dtype, copy=False)
    return values


def demographic_group_key(demo: str | None, *, attributes: Sequence[str] = ("sex", "age_group")) -> str:
    """The FairGRPO group key of a ``demo`` string: the join of its attribute keys (``"F,A3"``), or ``"UNK"``.

    A prompt is UNK (and clustered) only when none of ``attributes`` is known; one with some known attributes
    keeps its partial key (``"F,UNK"``) as a group of its own.
    """
    parsed = parse_demo(demo)
    values = [parsed.get(attribute, UNKNOWN) for attribute in attributes]
    if all(value == UNKNOWN for value in values):
        return UNKNOWN
    return ",".join(values)


# --------------------------------------------------------------------------------------------------------------
# Step 1: within-prompt normalisation
# --------------------------------------------------------------------------------------------------------------


def within_prompt_advantages(rewards: Any, *, scale: bool = True, eps: float = DEFAULT_EPS) -> Any:
    """GRPO's advantages of an ``(n_prompts, G)`` reward matrix: ``(r - mean_G(r)) / (std_G(r) + eps)``.

    The std is the unbiased one, as in TRL and the authors' code; ``scale=False`` only centres. Returns the type
    it was given (a tensor stays a tensor on its device). TRL's default eps is 1e-4; DESIGN's is 1e-6.
    """
    matrix = _reward_matrix(rewards)
    return _like(_within_prompt(matrix, scale=scale, eps=eps), rewards)


def _within_prompt(matrix: np.ndarray, *, scale: bool, eps: float) -> np.ndarray:
    centred = matrix - matrix.mean(axis=1, keepdims=True)
    if not scale:
        return centred
    return centred / (matrix.std(axis=1, ddof=1, keepdims=True) + eps)


# --------------------------------------------------------------------------------------------------------------
# Step 2: temperatures
# --------------------------------------------------------------------------------------------------------------


def domain_temperature(prompts_seen: float, mean_reward: float, *, eps: float = DEFAULT_EPS) -> float:
    """``T_d = max(sqrt(N_d) * rbar_d, eps)``; NaN when the domain was never seen (no mean reward)."""
    value = math.sqrt(prompts_seen) * mean_reward
    return value if math.isnan(value) else max(value, eps)


def group_temperature(prompts_seen: float, mean_reward: float) -> float:
    """``T_g = sqrt(N_g) * rbar_g`` -- no floor: a group whose mean reward is 0 gets T_g = 0 and the fallback."""
    return math.sqrt(prompts_seen) * mean_reward


@dataclass(frozen=True)
class RewardTally:
    """Prompts and rollouts seen in one domain or (domain, group), and the sum of their rewards."""

    prompts: int = 0
    rollouts: int = 0
    reward_sum: float = 0.0

    @property
    def mean_reward(self) -> float:
        """rbar: the mean of all rewards seen; NaN when nothing was seen."""
        return self.reward_sum / self.rollouts if self.rollouts else math.nan

    def __add__(self, other: RewardTally) -> RewardTally:
        return RewardTally(
            self.prompts + other.prompts, self.rollouts + other.rollouts, self.reward_sum + other.reward_sum
        )


@dataclass(frozen=True, eq=False)
class RewardVectors:
    """Distinct rollout-reward vectors of one domain's UNK prompts (``(m, G)``, lexicographically sorted) and
    how many prompts had each (``(m,)``). Storing distinct vectors with counts keeps the history small (binary
    rewards have at most 2**G distinct vectors) and gives K-means the same objective as the full list."""

    vectors: np.ndarray
    counts: np.ndarray

    @property
    def prompts(self) -> int:
        return int(self.counts.sum())

    def __add__(self, other: RewardVectors) -> RewardVectors:
        return _distinct_vectors(
            np.concatenate([self.vectors, other.vectors]), np.concatenate([self.counts, other.counts])
        )


def _distinct_vectors(vectors: np.ndarray, counts: np.ndarray) -> RewardVectors:
    distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
    summed = np.bincount(inverse.reshape(-1), weights=counts, minlength=len(distinct))
    return RewardVectors(distinct, np.rint(summed).astype(np.int64))


@dataclass(eq=False)
class FairGRPOStatistics:
    """What FairGRPO keeps across steps: per domain and per (domain, group) the prompts and rollouts seen and
    their reward sum, and per domain the rollout-reward vectors of its UNK prompts (for re-clustering).

    Mutable: ``update`` adds one step's batch (``fairgrpo_advantages`` calls it before computing temperatures,
    so the current batch counts as seen). ``to_dict``/``from_dict`` are the JSON form saved with a checkpoint;
    it holds plain arrays keyed by sorted names, and ``merge`` sums two of them (ranks that kept their own).
    """

    steps: int = 0
    domains: dict[str, RewardTally] = field(default_factory=dict)
    groups: dict[tuple[str, str], RewardTally] = field(default_factory=dict)
    unknown_reward_vectors: dict[str, RewardVectors] = field(default_factory=dict)
    # The same vectors as a raw list in the order seen (``(n, G)`` per domain), kept only for the authors'
    # clustering, whose single k-means++ start depends on the order and the duplicates.
    unknown_reward_history: dict[str, np.ndarray] = field(default_factory=dict)

    def domain_tally(self, domain: str) -> RewardTally:
        return self.domains.get(domain, RewardTally())

    def group_tally(self, domain: str, group: str) -> RewardTally:
        return self.groups.get((domain, group), RewardTally())

    def update(
        self,
        rewards: Any,
        domains: Sequence[str],
        groups: Sequence[str],
        *,
        keep_unknown_vectors: bool = True,
        sort_vectors: bool = False,
        keep_unknown_history: bool = False,
    ) -> FairGRPOStatistics:
        """Count one step's ``(n_prompts, G)`` rewards under each prompt's domain and group; keep the reward
        vectors of UNK prompts (sorted first with ``sort_vectors``) unless ``keep_unknown_vectors`` is False, and
        with ``keep_unknown_history`` also their raw list in row order (the authors' clustering)."""
        matrix = _reward_matrix(rewards)
        n_prompts, n_generations = matrix.shape
        domain_keys = _prompt_keys(domains, n_prompts, "domains")
        group_keys = _prompt_keys(groups, n_prompts, "groups")
        new_vectors: dict[str, RewardVectors] = {}
        new_history: dict[str, np.ndarray] = {}
        if keep_unknown_vectors:
            for domain in sorted(set(domain_keys)):
                rows = [i for i, (d, g) in enumerate(zip(domain_keys, group_keys)) if d == domain and g == UNKNOWN]
                if not rows:
                    continue
                kept = self.unknown_reward_vectors.get(domain)
                if kept is not None and kept.vectors.shape[1] != n_generations:
                    raise FairMedInputError(
                        f"domain {domain!r} has UNK reward vectors of length {kept.vectors.shape[1]} from earlier "
                        f"steps, this step has G = {n_generations}",
                        column="rewards",
                        hint="keep num_generations fixed during a run, or turn clustering off",
                    )
                vectors = np.sort(matrix[rows], axis=1) if sort_vectors else matrix[rows]
                new = _distinct_vectors(vectors, np.ones(len(rows), dtype=np.int64))
                new_vectors[domain] = new if kept is None else kept + new
                if keep_unknown_history:
                    history = self.unknown_reward_history.get(domain)
                    new_history[domain] = vectors if history is None else np.concatenate([history, vectors])
        # Checked everything above before changing anything: a rejected batch leaves the statistics as they were.
        for domain, group, row_sum in zip(domain_keys, group_keys, matrix.sum(axis=1), strict=True):
            step = RewardTally(1, n_generations, float(row_sum))
            self.domains[domain] = self.domain_tally(domain) + step
            self.groups[(domain, group)] = self.group_tally(domain, group) + step
        self.unknown_reward_vectors.update(new_vectors)
        self.unknown_reward_history.update(new_history)
        self.steps += 1
        return self

    def merge(self, other: FairGRPOStatistics) -> FairGRPOStatistics:
        """A new object with the sums of both; ``steps`` is the larger (ranks step together)."""
        merged = FairGRPOStatistics(steps=max(self.steps, other.steps))
        for source in (self, other):
            for domain, tally in source.domains.items():
                merged.domains[domain] = merged.domain_tally(domain) + tally
            for key, tally in source.groups.items():
                merged.groups[key] = merged.group_tally(*key) + tally
            for domain, vectors in source.unknown_reward_vectors.items():
                kept = merged.unknown_reward_vectors.get(domain)
                if kept is not None and kept.vectors.shape[1] != vectors.vectors.shape[1]:
                    raise FairMedInputError(
                        f"domain {domain!r}: UNK reward vectors of lengths {kept.vectors.shape[1]} and "
                        f"{vectors.vectors.shape[1]} cannot be merged",
                        hint="merge statistics of runs with the same num_generations",
                    )
                merged.unknown_reward_vectors[domain] = vectors if kept is None else kept + vectors
            for domain, history in source.unknown_reward_history.items():
                kept = merged.unknown_reward_history.get(domain)
                merged.unknown_reward_history[domain] = history if kept is None else np.concatenate([kept, history])
        return merged

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: parallel lists keyed by sorted names (floats round-trip exactly through JSON)."""
        domain_names = sorted(self.domains)
        group_keys = sorted(self.groups)
        unknown_names = sorted(self.unknown_reward_vectors)
        return {
            "format": _STATISTICS_FORMAT,
            "version": _STATISTICS_VERSION,
            "steps": int(self.steps),
            "domains": {
                "names": domain_names,
                "prompts": [int(self.domains[d].prompts) for d in domain_names],
                "rollouts": [int(self.domains[d].rollouts) for d in domain_names],
                "reward_sums": [float(self.domains[d].reward_sum) for d in domain_names],
            },
            "groups": {
                "domains": [d for d, _ in group_keys],
                "groups": [g for _, g in group_keys],
                "prompts": [int(self.groups[k].prompts) for k in group_keys],
                "rollouts": [int(self.groups[k].rollouts) for k in group_keys],
                "reward_sums": [float(self.groups[k].reward_sum) for k in group_keys],
            },
            "unknown_reward_vectors": {
                "domains": unknown_names,
                "vectors": [self.unknown_reward_vectors[d].vectors.tolist() for d in unknown_names],
                "counts": [self.unknown_reward_vectors[d].counts.tolist() for d in unknown_names],
            },
            # Optional (absent in files written before it existed): the raw list, for the authors' clustering.
            "unknown_reward_history": {
                "domains": sorted(self.unknown_reward_history),
                "vectors": [self.unknown_reward_history[d].tolist() for d in sorted(self.unknown_reward_history)],
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> FairGRPOStatistics:
        """Read ``to_dict``'s form back; ``source`` (a file name) goes into the error if it is malformed."""
        def fail(message: str) -> FairMedInputError:
            return FairMedInputError(
                f"not FairGRPO statistics: {message}",
                source=source,
                hint="load the fairgrpo statistics file saved with the same checkpoint",
            )

        if not isinstance(data, Mapping) or data.get("format") != _STATISTICS_FORMAT:
            raise fail("missing format marker")
        if data.get("version") != _STATISTICS_VERSION:
            raise fail(f"version {data.get('version')!r}, this FairMed reads version {_STATISTICS_VERSION}")
        try:
            stats = cls(steps=int(data["steps"]))
            block = data["domains"]
            for name, prompts, rollouts, total in zip(
                block["names"], block["prompts"], block["rollouts"], block["reward_sums"], strict=True
            ):
                stats.domains[str(name)] = _checked_tally(prompts, rollouts, total)
            block = data["groups"]
            for domain, group, prompts, rollouts, total in zip(
                block["domains"], block["groups"], block["prompts"], block["rollouts"], block["reward_sums"],
                strict=True,
            ):
                stats.groups[(str(domain), str(group))] = _checked_tally(prompts, rollouts, total)
            block = data["unknown_reward_vectors"]
            for domain, vectors, counts in zip(block["domains"], block["vectors"], block["counts"], strict=True):
                array = np.asarray(vectors, dtype=np.float64)
                count_array = np.asarray(counts, dtype=np.int64)
                if array.ndim != 2 or len(array) != len(count_array) or not np.isfinite(array).all():
                    raise ValueError(f"bad reward vectors for domain {domain!r}")
                stats.unknown_reward_vectors[str(domain)] = _distinct_vectors(array, count_array)
            block = data.get("unknown_reward_history", {"domains": [], "vectors": []})
            for domain, vectors in zip(block["domains"], block["vectors"], strict=True):
                array = np.asarray(vectors, dtype=np.float64)
                if array.ndim != 2 or not np.isfinite(array).all():
                    raise ValueError(f"bad reward history for domain {domain!r}")
                stats.unknown_reward_history[str(domain)] = array
        except (KeyError, TypeError, ValueError) as error:
            raise fail(str(error)) from error
        return stats


def _checked_tally(prompts: Any, rollouts: Any, reward_sum: Any) -> RewardTally:
    tally = RewardTally(int(prompts), int(rollouts), float(reward_sum))
    if tally.prompts < 0 or tally.rollouts < 0 or not (math.isfinite(tally.reward_sum) and tally.reward_sum >= 0):
        raise ValueError(f"bad counts {prompts!r}, {rollouts!r}, {reward_sum!r}")
    return tally


# --------------------------------------------------------------------------------------------------------------
# Unknown demographics: K-means on rollout-reward vectors
# --------------------------------------------------------------------------------------------------------------


def choose_k_by_elbow(inertias: Sequence[float], *, fraction: float = 0.1) -> int:
    """The elbow rule: the first k (1-based) whose next inertia drop is below ``fraction`` of the previous drop.

    ``inertias[k - 1]`` is the inertia with k clusters. Going from k=1 to k=2 has no previous drop; it is
    compared with the inertia at k=1 itself (two clusters that explain under 10% of the spread are one group).
    All-zero spread gives 1; when no drop is small, the largest k tried.
    """
    values = [float(value) for value in inertias]
    if len(values) <= 1:
        return 1
    previous = values[0]
    for k in range(1, len(values)):
        drop = values[k - 1] - values[k]
        if previous <= 0.0 or drop < fraction * previous:
            return k
        previous = drop
    return len(values)


@dataclass(frozen=True, eq=False)
class LatentGroups:
    """K-means clusters of one domain's UNK rollout-reward vectors.

    Clusters are ordered by centroid mean reward, lowest first, so ``cluster-0`` is the hardest group.
    ``cluster_sizes`` count prompts (N_g); ``labels`` give the cluster key of each vector that was clustered.
    """

    domain: str
    centroids: np.ndarray  # (k, G)
    cluster_sizes: np.ndarray  # (k,)
    inertias: tuple[float, ...]  # for k = 1 .. the largest tried
    labels: tuple[str, ...]
    sorted_vectors: bool = False
    member_mean_rewards: np.ndarray | None = None  # (k,): mean reward of each cluster's members (NaN: none)

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f"{CLUSTER_PREFIX}{index}" for index in range(self.n_clusters))

    @property
    def centroid_mean_rewards(self) -> np.ndarray:
        """rbar_g of each cluster: the mean reward of its prompts (``member_mean_rewards``, where the clustering
        recorded it and the cluster has members), else the mean of its centroid.

        The members' mean, not the centroid's: scikit-learn's K-means centres the data and adds the mean back,
        so the centroid of all-zero reward vectors comes out near 1e-17 (1e-7 in float32) instead of 0, and
        T_g = sqrt(N_g) * rbar_g then weighted those prompts by up to 1e15 (logged, and charted on the Training
        page) instead of the fallback the formula means for rbar_g = 0. At K-means' convergence the two agree
        up to that rounding."""
        means = self.centroids.mean(axis=1)
        if self.member_mean_rewards is None:
            return means
        members = np.asarray(self.member_mean_rewards, dtype=np.float64)
        return np.where(np.isfinite(members), members, means)

    def assign(self, reward_vectors: Any) -> tuple[str, ...]:
        """Cluster key of each ``(m, G)`` reward vector: the nearest centroid (the lower index on a tie)."""
        vectors = np.asarray(reward_vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[1] != self.centroids.shape[1]:
            raise FairMedInputError(
                f"reward vectors of shape {vectors.shape} for clusters of G = {self.centroids.shape[1]}",
                column="rewards",
            )
        if self.sorted_vectors:
            vectors = np.sort(vectors, axis=1)
        distances = ((vectors[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
        return tuple(f"{CLUSTER_PREFIX}{index}" for index in distances.argmin(axis=1))


def cluster_unknown_groups(
    reward_vectors_by_domain: Mapping[str, Any],
    *,
    counts_by_domain: Mapping[str, Any] | None = None,
    max_k: int = 3,
    elbow_fraction: float = 0.1,
    sort_vectors: bool = False,
    seed: int = 0,
    n_init: int = 10,
) -> dict[str, LatentGroups]:
    """Latent groups of prompts with unknown demographics, per domain, from their rollout-reward vectors.

    For each domain, K-means (scikit-learn) on its ``(m, G)`` vectors (each weighted by ``counts_by_domain``
    when given: how many prompts had that vector) for k = 1..``max_k``, capped at the number of distinct
    vectors; k by ``choose_k_by_elbow``. Deterministic given ``seed``. Domains with no vectors are left out.
    """
    from sklearn.cluster import KMeans

    if int(max_k) != max_k or max_k < 1:
        raise FairMedInputError(f"max_k must be a whole number >= 1, got {max_k!r}", column="max_k")
    result: dict[str, LatentGroups] = {}
    for domain in sorted(reward_vectors_by_domain):
        vectors = np.asarray(reward_vectors_by_domain[domain], dtype=np.float64)
        if vectors.size == 0:
            continue
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise FairMedInputError(
                f"reward vectors of domain {domain!r} must be a finite (n_prompts, G) matrix, got shape "
                f"{vectors.shape}",
                column="rewards",
            )
        if counts_by_domain is not None and domain in counts_by_domain:
            counts = np.asarray(counts_by_domain[domain], dtype=np.int64)
            if counts.shape != (len(vectors),) or (counts < 1).any():
                raise FairMedInputError(
                    f"counts of domain {domain!r} must be one positive count per vector", column="counts"
                )
        else:
            counts = np.ones(len(vectors), dtype=np.int64)
        if sort_vectors:
            vectors = np.sort(vectors, axis=1)
        vectors = vectors + 0.0
        # Distinct vectors with summed weights: the same K-means objective, a fixed input order (so the seed
        # alone decides the result), and no more clusters than distinct points.
        distinct, inverse = np.unique(vectors, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        weights = np.bincount(inverse, weights=counts, minlength=len(distinct))
        largest_k = min(int(max_k), len(distinct))

        centre = np.average(distinct, axis=0, weights=weights)
        inertias = [float((weights * ((distinct - centre) ** 2).sum(axis=1)).sum())]
        fits: dict[int, np.ndarray] = {1: centre[None, :]}
        for k in range(2, largest_k + 1):
            model = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(distinct, sample_weight=weights)
            inertias.append(float(model.inertia_))
            fits[k] = model.cluster_centers_
        chosen = choose_k_by_elbow(inertias, fraction=elbow_fraction)

        centroids = np.asarray(fits[chosen], dtype=np.float64)
        # Lowest centroid mean first; ties broken by the centroid's coordinates, so keys never depend on K-means'
        # arbitrary label order.
        tie_breaks = tuple(centroids[:, j] for j in reversed(range(centroids.shape[1])))
        order = np.lexsort(tie_breaks + (centroids.mean(axis=1),))
        centroids = centroids[order]
        # Labels by nearest centroid, so that sizes, labels and ``assign`` agree exactly.
        distances = ((distinct[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        distinct_labels = distances.argmin(axis=1)
        sizes = np.bincount(distinct_labels, weights=weights, minlength=len(centroids))
        sums = np.bincount(distinct_labels, weights=weights * distinct.mean(axis=1), minlength=len(centroids))
        result[domain] = LatentGroups(
            domain=domain,
            centroids=centroids,
            cluster_sizes=np.rint(sizes).astype(np.int64),
            inertias=tuple(inertias),
            labels=tuple(f"{CLUSTER_PREFIX}{index}" for index in distinct_labels[inverse]),
            sorted_vectors=sort_vectors,
            member_mean_rewards=_member_means(sums, sizes),
        )
    return result


def choose_k_by_elbow_authors(inertias: Sequence[float], *, fraction: float = 0.1) -> int:
    """The authors' elbow rule (``_select_k_elbow`` in DDVD233/mirl ``verl/trainer/ppo/core_algos.py``): with the
    drops ``d_k = inertia_k - inertia_(k+1)``, the first k >= 2 whose next drop is below ``fraction`` of the
    previous one (``d_k < fraction * d_(k-1)``), else the largest k tried. Unlike :func:`choose_k_by_elbow`, the
    1 -> 2 drop is never tested: k = 1 only when one k was tried (all vectors identical)."""
    values = [float(value) for value in inertias]
    if len(values) <= 1:
        return 1
    drops = [values[k] - values[k + 1] for k in range(len(values) - 1)]
    for index in range(1, len(drops)):
        if drops[index] < fraction * drops[index - 1]:
            return index + 1
    return len(values)


def cluster_unknown_groups_authors(
    reward_history_by_domain: Mapping[str, Any],
    *,
    max_k: int = 3,
    elbow_fraction: float = 0.1,
    sorted_vectors: bool = False,
) -> dict[str, LatentGroups]:
    """Latent groups as the authors' code forms them (``_cluster_info_question``): per domain, on the raw list of
    every UNK reward vector seen so far, in the order seen, duplicates included (float32, as their vectors are),
    ``KMeans(n_clusters=k, n_init="auto", random_state=0)`` -- one k-means++ start with seed 0 -- for k = 1 ..
    min(``max_k``, distinct vectors), k by :func:`choose_k_by_elbow_authors`; each vector's cluster is the label
    K-means gave it, N_g the cluster's size and rbar_g its centroid's mean.

    Clusters are renumbered lowest centroid mean first, as :func:`cluster_unknown_groups` does (keys only; sizes
    and means are the fit's). ``labels`` follow the input order, so the last rows are the current batch's.
    """
    from sklearn.cluster import KMeans

    if int(max_k) != max_k or max_k < 1:
        raise FairMedInputError(f"max_k must be a whole number >= 1, got {max_k!r}", column="max_k")
    result: dict[str, LatentGroups] = {}
    for domain in sorted(reward_history_by_domain):
        vectors = np.asarray(reward_history_by_domain[domain], dtype=np.float32)
        if vectors.size == 0:
            continue
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise FairMedInputError(
                f"reward vectors of domain {domain!r} must be a finite (n_prompts, G) matrix, got shape "
                f"{vectors.shape}",
                column="rewards",
            )
        largest_k = min(int(max_k), len(np.unique(vectors, axis=0)))
        fits = [KMeans(n_clusters=k, n_init="auto", random_state=0).fit(vectors) for k in range(1, largest_k + 1)]
        inertias = tuple(float(fit.inertia_) for fit in fits)
        fit = fits[choose_k_by_elbow_authors(inertias, fraction=elbow_fraction) - 1]
        centroids = np.asarray(fit.cluster_centers_, dtype=np.float64)
        labels = np.asarray(fit.labels_, dtype=np.int64)
        sizes = np.bincount(labels, minlength=len(centroids))
        sums = np.bincount(labels, weights=vectors.astype(np.float64).mean(axis=1), minlength=len(centroids))
        tie_breaks = tuple(centroids[:, j] for j in reversed(range(centroids.shape[1])))
        order = np.lexsort(tie_breaks + (centroids.mean(axis=1),))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        result[domain] = LatentGroups(
            domain=domain,
            centroids=centroids[order],
            cluster_sizes=sizes[order].astype(np.int64),
            inertias=inertias,
            labels=tuple(f"{CLUSTER_PREFIX}{index}" for index in rank[labels]),
            sorted_vectors=sorted_vectors,
            member_mean_rewards=_member_means(sums, sizes)[order],
        )
    return result


def _member_means(sums: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each cluster's mean reward from its members' summed (weighted) mean rewards; NaN for an empty cluster."""
    sizes = np.asarray(sizes, dtype=np.float64)
    return np.divide(sums, sizes, out=np.full(len(sizes), np.nan), where=sizes > 0)


# --------------------------------------------------------------------------------------------------------------
# Weights and advantages
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainTemperature:
    """A domain's temperature this step: ``T_d = max(sqrt(N_d) * rbar_d, eps)``."""

    domain: str
    prompts_seen: int  # N_d
    mean_reward: float  # rbar_d
    temperature: float  # T_d
    batch_prompts: int


@dataclass(frozen=True)
class GroupTemperature:
    """A (domain, group)'s temperature and the weight its prompts' advantages got this step.

    ``weight`` is ``1 / (T_d * T_g)``, or 1.0 where that is not finite (``fallback``: the advantages are kept
    unscaled). ``latent`` marks a K-means cluster of UNK prompts, whose N_g is its size and rbar_g its
    centroid's mean.
    """

    domain: str
    group: str
    prompts_seen: int  # N_g
    mean_reward: float  # rbar_g
    temperature: float  # T_g
    weight: float
    fallback: bool
    latent: bool
    batch_prompts: int


@dataclass(frozen=True, eq=False)
class FairGRPOWeights:
    """Per-prompt weights ``1 / (T_d * T_g)`` (1.0 where the fallback applies) and the temperatures behind them."""

    prompt_weights: np.ndarray  # (n_prompts,), finite and positive
    fallback: np.ndarray  # (n_prompts,) bool
    domains: tuple[DomainTemperature, ...]
    groups: tuple[GroupTemperature, ...]


def fairgrpo_weights(
    domains: Sequence[str],
    groups: Sequence[str],
    statistics: FairGRPOStatistics,
    *,
    latent_groups: Mapping[str, LatentGroups] | None = None,
    eps: float = DEFAULT_EPS,
) -> FairGRPOWeights:
    """The weight of each prompt's advantages: ``1 / (T_d * T_g)`` with N and rbar from ``statistics``.

    ``groups`` are the keys to weigh by: a demographic key, or for a clustered prompt its cluster key, whose
    N_g and rbar_g come from ``latent_groups[domain]`` (cluster size, centroid mean). Where ``1 / (T_d * T_g)``
    is NaN or infinite (rbar_g = 0, a group or domain with no count) the weight is 1.0: the unscaled advantage
    is kept, as the authors' code does. ``statistics`` must already count the batch (``update`` first).
    """
    if isinstance(domains, str):
        raise FairMedInputError("domains must give one key per prompt, got a single string", column="domains")
    domain_keys = tuple(domains)
    domain_keys = _prompt_keys(domain_keys, len(domain_keys), "domains")
    group_keys = _prompt_keys(groups, len(domain_keys), "groups")
    latent = dict(latent_groups or {})

    domain_records: dict[str, DomainTemperature] = {}
    for domain in sorted(set(domain_keys)):
        tally = statistics.domain_tally(domain)
        domain_records[domain] = DomainTemperature(
            domain=domain,
            prompts_seen=tally.prompts,
            mean_reward=tally.mean_reward,
            temperature=domain_temperature(tally.prompts, tally.mean_reward, eps=eps),
            batch_prompts=domain_keys.count(domain),
        )

    pairs = list(zip(domain_keys, group_keys, strict=True))
    group_records: dict[tuple[str, str], GroupTemperature] = {}
    for domain, group in sorted(set(pairs)):
        clusters = latent.get(domain)
        if clusters is not None and group in clusters.keys:
            index = clusters.keys.index(group)
            prompts_seen = int(clusters.cluster_sizes[index])
            mean_reward = float(clusters.centroid_mean_rewards[index])
            is_latent = True
        else:
            tally = statistics.group_tally(domain, group)
            prompts_seen, mean_reward, is_latent = tally.prompts, tally.mean_reward, False
        temperature = group_temperature(prompts_seen, mean_reward)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            raw = float(np.float64(1.0) / (np.float64(domain_records[domain].temperature) * temperature))
        # A zero or NaN temperature means "no information": keep the advantage as GRPO would.
        fallback = not (math.isfinite(raw) and raw > 0.0)
        group_records[(domain, group)] = GroupTemperature(
            domain=domain,
            group=group,
            prompts_seen=prompts_seen,
            mean_reward=mean_reward,
            temperature=temperature,
            weight=1.0 if fallback else raw,
            fallback=fallback,
            latent=is_latent,
            batch_prompts=pairs.count((domain, group)),
        )

    return FairGRPOWeights(
        prompt_weights=np.array([group_records[pair].weight for pair in pairs], dtype=np.float64),
        fallback=np.array([group_records[pair].fallback for pair in pairs], dtype=bool),
        domains=tuple(domain_records.values()),
        groups=tuple(group_records.values()),
    )


@dataclass(frozen=True, eq=False)
class FairGRPOStepInfo:
    """What one FairGRPO step did, for logging: temperatures and weights per domain and group, the clusters of
    UNK prompts, each prompt's group key and weight, and the batch rescale."""

    prompt_groups: tuple[str, ...]  # demographic or cluster key per prompt
    prompt_weights: np.ndarray  # (n_prompts,)
    domains: tuple[DomainTemperature, ...]
    groups: tuple[GroupTemperature, ...]
    clusters: tuple[LatentGroups, ...]
    rescale: str
    batch_mean: float  # subtracted by the rescale (0.0 unless 'zero_mean')
    batch_std: float  # std of the temperature-scaled advantages, before eps
    fallback_prompts: int  # prompts whose advantages were kept unscaled
    fallback_rollouts: int  # rollouts kept unscaled (includes the above)

    def metrics(self, prefix: str = "fairgrpo") -> dict[str, float]:
        """Flat ``name -> number`` for metrics.jsonl and the dashboard's per-step curves."""
        out: dict[str, float] = {
            f"{prefix}/batch_std": self.batch_std,
            f"{prefix}/fallback_prompts": float(self.fallback_prompts),
        }
        for record in self.domains:
            out[f"{prefix}/{record.domain}/temperature"] = record.temperature
            out[f"{prefix}/{record.domain}/mean_reward"] = record.mean_reward
        for record in self.groups:
            out[f"{prefix}/{record.domain}/{record.group}/weight"] = record.weight
            out[f"{prefix}/{record.domain}/{record.group}/temperature"] = record.temperature
        for clusters in self.clusters:
            out[f"{prefix}/{clusters.domain}/clusters"] = float(clusters.n_clusters)
        return out


def fairgrpo_advantages(
    rewards: Any,
    domains: Sequence[str],
    groups: Sequence[str] | None,
    statistics: FairGRPOStatistics | None,
    config: FairGRPOWeighting | None = None,
) -> tuple[Any, FairGRPOStepInfo]:
    """FairGRPO's advantages for one step's ``(n_prompts, G)`` rewards; returns ``(advantages, info)``.

    ``domains``: the data source of each prompt; ``groups``: its demographic key (``"UNK"`` when unknown; may
    be None with ``cluster_all``). With ``statistics='persistent'`` (default) the batch is added to
    ``statistics`` in place first, so N and rbar cover every step so far including this one; with
    ``'batch_local'`` they come from this batch alone and ``statistics`` (may be None) is left untouched.
    UNK prompts are clustered per domain over all UNK reward vectors kept so far, refit each step.

    Advantages come back as the type of ``rewards`` (a tensor on its device). Since every prompt's advantages
    are centred, the batch mean is zero up to rounding, and 'batch' and 'zero_mean' agree to rounding.
    """
    config = config if config is not None else FairGRPOWeighting()
    matrix = _reward_matrix(rewards)
    n_prompts = matrix.shape[0]
    domain_keys = _prompt_keys(domains, n_prompts, "domains")
    if config.cluster_all:
        group_keys = (UNKNOWN,) * n_prompts
    elif groups is None:
        raise FairMedInputError(
            "FairGRPO needs a demographic group per prompt", column="groups",
            hint=f"pass {UNKNOWN!r} where unknown, or set cluster_all=True for the no-demographics variant",
        )
    else:
        group_keys = _prompt_keys(groups, n_prompts, "groups")

    if config.statistics == "persistent":
        if statistics is None:
            raise FairMedInputError(
                "persistent FairGRPO statistics were not given",
                hint="keep one FairGRPOStatistics for the run (saved with its checkpoints), or use "
                "statistics='batch_local'",
            )
        stats = statistics
    else:
        stats = FairGRPOStatistics()
    clustering = config.cluster_all or config.cluster_unknown
    authors = config.clustering == "authors"
    stats.update(
        matrix, domain_keys, group_keys, keep_unknown_vectors=clustering, sort_vectors=config.sort_reward_vectors,
        keep_unknown_history=clustering and authors,
    )

    prompt_groups = list(group_keys)
    latent: dict[str, LatentGroups] = {}
    if clustering:
        unknown_domains = sorted({d for d, g in zip(domain_keys, group_keys) if g == UNKNOWN})
        if authors:
            latent = cluster_unknown_groups_authors(
                {d: stats.unknown_reward_history[d] for d in unknown_domains},
                max_k=config.max_clusters,
                elbow_fraction=config.elbow_fraction,
                sorted_vectors=config.sort_reward_vectors,
            )
        else:
            latent = cluster_unknown_groups(
                {d: stats.unknown_reward_vectors[d].vectors for d in unknown_domains},
                counts_by_domain={d: stats.unknown_reward_vectors[d].counts for d in unknown_domains},
                max_k=config.max_clusters,
                elbow_fraction=config.elbow_fraction,
                sort_vectors=config.sort_reward_vectors,
                seed=config.seed,
            )
        for domain in unknown_domains:
            rows = [i for i in range(n_prompts) if domain_keys[i] == domain and group_keys[i] == UNKNOWN]
            # The authors' code takes the label K-means gave the prompt's own vector: this batch's vectors are the
            # last ones of the domain's history. FairMed's default assigns the nearest centroid.
            keys = latent[domain].labels[-len(rows):] if authors else latent[domain].assign(matrix[rows])
            for row, key in zip(rows, keys, strict=True):
                prompt_groups[row] = key

    weights = fairgrpo_weights(domain_keys, prompt_groups, stats, latent_groups=latent, eps=config.eps)
    plain = _within_prompt(matrix, scale=config.within_prompt_scale, eps=config.eps)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = plain * weights.prompt_weights[:, None]
    # The weights are finite already; this catches an overflowing product, element by element as in the code.
    unscaled = ~np.isfinite(scaled)
    scaled = np.where(unscaled, plain, scaled)

    batch_std = float(scaled.std(ddof=1)) if scaled.size > 1 else 0.0
    batch_mean = 0.0
    if config.rescale == "zero_mean":
        batch_mean = float(scaled.mean())
        advantages = (scaled - batch_mean) / (batch_std + config.eps)
    elif config.rescale == "batch":
        advantages = scaled / (batch_std + config.eps)
    else:
        advantages = scaled

    fallback_rows = weights.fallback | unscaled.any(axis=1)
    info = FairGRPOStepInfo(
        prompt_groups=tuple(prompt_groups),
        prompt_weights=weights.prompt_weights,
        domains=weights.domains,
        groups=weights.groups,
        clusters=tuple(latent[d] for d in sorted(latent)),
        rescale=config.rescale,
        batch_mean=batch_mean,
        batch_std=batch_std,
        fallback_prompts=int(fallback_rows.sum()),
        fallback_rollouts=int((unscaled | weights.fallback[:, None]).sum()),
    )
    return _like(advantages, rewards), info
