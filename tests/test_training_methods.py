"""The method registry and the paper's baselines against the authors' code.

The oracles below restate, step by step and in the same control flow, functions of the authors' released
training code: repository DDVD233/mirl, file verl/trainer/ppo/core_algos.py, commit
5c0adf68e4c8640ae503f7aebf203c7521ed649d (compute_rloo_outcome_advantage,
compute_reinforce_plus_plus_outcome_advantage with verl's masked_mean / masked_var / masked_whiten from
verl/utils/torch_functional.py, _select_k_elbow and _cluster_info_question). Token-level rewards are built as
verl builds an outcome reward: the score on the last valid token of each response, zeros elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError
from fairmed_core.training import methods
from fairmed_core.training.fairgrpo_weights import (
    FairGRPOStatistics,
    FairGRPOWeighting,
    choose_k_by_elbow_authors,
    cluster_unknown_groups,
    cluster_unknown_groups_authors,
    fairgrpo_advantages,
)
from fairmed_core.training.grpo_config import GRPOJobConfig
from fairmed_core.training.methods import (
    METHODS,
    check_method_data,
    reinforce_plus_plus_advantages,
    rloo_advantages,
    training_method,
)

# ----------------------------------------------------------------------------------------------- the oracles


def _oracle_rloo(token_level_rewards, response_mask, index):
    scores = token_level_rewards.sum(dim=-1)
    id2score = defaultdict(list)
    id2mean = {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx] = torch.tensor(0.0)
            elif len(id2score[idx]) > 1:
                id2mean[idx] = torch.mean(torch.stack(id2score[idx]))
            else:
                raise ValueError(f"no score in prompt index: {idx}")
        for i in range(bsz):
            response_num = len(id2score[index[i]])
            if response_num > 1:
                scores[i] = scores[i] * response_num / (response_num - 1) - id2mean[index[i]] * response_num / (
                    response_num - 1)
        scores = scores.unsqueeze(-1) * response_mask
    return scores, scores


def _oracle_masked_mean(values, mask, axis=None):
    s = (values * mask).sum(axis=axis) if axis is not None else (values * mask).sum()
    return s / (mask.sum(axis=axis) + 1e-8) if axis is not None else s / (mask.sum() + 1e-8)


def _oracle_masked_var(values, mask, unbiased=True):
    mean = _oracle_masked_mean(values, mask)
    centered_values = values - mean
    variance = _oracle_masked_mean(centered_values**2, mask)
    if unbiased:
        mask_sum = mask.sum()
        if mask_sum == 0:
            raise ValueError("At least one element in the mask has to be 1.")
        if mask_sum == 1:
            raise ValueError("The sum of the mask is one, which can cause a division by zero.")
        bessel_correction = mask_sum / (mask_sum - 1)
        variance = variance * bessel_correction
    return variance


def _oracle_masked_whiten(values, mask, shift_mean=True):
    mean, var = _oracle_masked_mean(values, mask), _oracle_masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def _oracle_reinforce_plus_plus(token_level_rewards, response_mask, gamma=1.0):
    with torch.no_grad():
        returns = torch.zeros_like(token_level_rewards)
        running_return = 0
        for t in reversed(range(token_level_rewards.shape[1])):
            running_return = token_level_rewards[:, t] + gamma * running_return
            returns[:, t] = running_return
            running_return = running_return * response_mask[:, t]
        advantages = _oracle_masked_whiten(returns, response_mask)
        advantages = advantages * response_mask
    return advantages, returns


def _oracle_select_k_elbow(vals, k_max=10, tol=0.10):
    unique_cnt = len(np.unique(vals, axis=0))
    k_cap = min(k_max, unique_cnt)
    ks = range(1, k_cap + 1)
    inertias = [KMeans(n_clusters=k, n_init="auto", random_state=0).fit(vals).inertia_ for k in ks]
    if len(inertias) == 1:
        return 1
    drops = np.diff(inertias) * -1.0
    for i in range(1, len(drops)):
        if drops[i] < tol * drops[i - 1]:
            return i + 1
    return ks[-1]


def _oracle_cluster_info_question(vectors):
    X = np.stack(vectors, axis=0)
    k_opt = _oracle_select_k_elbow(X, k_max=3)
    km = KMeans(n_clusters=k_opt, n_init="auto", random_state=0).fit(X)
    centroids = km.cluster_centers_
    assignments = km.labels_
    _, counts = np.unique(assignments, return_counts=True)
    counts = counts.astype(float)
    return k_opt, assignments, counts, centroids


# ----------------------------------------------------------------------------------------------- helpers


def _token_level(rewards: np.ndarray, lengths: np.ndarray, width: int):
    """verl's outcome reward layout: the score on each response's last valid token; the response mask."""
    flat_rewards, flat_lengths = rewards.reshape(-1), lengths.reshape(-1)
    scores = torch.zeros(len(flat_rewards), width, dtype=torch.float32)
    mask = torch.zeros(len(flat_rewards), width, dtype=torch.float32)
    for row, (reward, length) in enumerate(zip(flat_rewards, flat_lengths, strict=True)):
        mask[row, :length] = 1.0
        scores[row, length - 1] = float(reward)
    return scores, mask


def _random_batch(seed: int):
    rng = np.random.default_rng(seed)
    n_prompts, generations = int(rng.integers(1, 9)), int(rng.integers(2, 9))
    if seed % 2:
        rewards = rng.integers(0, 2, size=(n_prompts, generations)).astype(np.float64)  # the accuracy reward
    else:
        rewards = rng.random((n_prompts, generations)).round(3)  # a graded reward (0.5 x F1 + format terms)
    lengths = rng.integers(1, 25, size=(n_prompts, generations))
    return rewards, lengths


# ----------------------------------------------------------------------------------------------- RLOO, REINFORCE++


@pytest.mark.parametrize("seed", range(12))
def test_rloo_is_the_authors_estimator(seed):
    rewards, lengths = _random_batch(seed)
    scores, mask = _token_level(rewards, lengths, 24)
    index = np.repeat([f"q{i}" for i in range(rewards.shape[0])], rewards.shape[1])
    expected, _ = _oracle_rloo(scores, mask, index)
    ours = rloo_advantages(rewards)
    # Every valid token of a response carries the response's advantage: TRL's one per completion.
    per_response = expected[:, 0].reshape(rewards.shape).double().numpy()
    np.testing.assert_allclose(ours, per_response, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(expected, torch.as_tensor(ours.reshape(-1, 1), dtype=torch.float32) * mask)
    # ... which is the leave-one-out baseline exactly (their G / (G - 1) factor is that identity).
    generations = rewards.shape[1]
    leave_one_out = rewards - (rewards.sum(axis=1, keepdims=True) - rewards) / (generations - 1)
    np.testing.assert_allclose(ours, leave_one_out, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_reinforce_plus_plus_is_the_authors_estimator(seed):
    rewards, lengths = _random_batch(seed)
    if rewards.size < 2:
        return
    scores, mask = _token_level(rewards, lengths, 24)
    expected, _ = _oracle_reinforce_plus_plus(scores, mask)
    ours = reinforce_plus_plus_advantages(rewards, lengths)
    # With gamma 1 a response's advantage is the same on each of its tokens: one value per completion.
    for row, length in enumerate(lengths.reshape(-1)):
        assert torch.allclose(expected[row, :length], expected[row, 0].expand(length))
    np.testing.assert_allclose(ours, expected[:, 0].reshape(rewards.shape).double().numpy(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(expected, torch.as_tensor(ours.reshape(-1, 1), dtype=torch.float32) * mask,
                               rtol=1e-4, atol=1e-5)


def test_reinforce_plus_plus_weighs_responses_by_their_length_and_has_no_prompt_baseline():
    rewards = np.array([[1.0, 0.0], [1.0, 1.0]])
    same = reinforce_plus_plus_advantages(rewards, np.full((2, 2), 5))
    # A prompt whose rollouts all succeed still gets a positive advantage (GRPO and RLOO give it 0).
    assert (same[1] > 0).all() and np.allclose(rloo_advantages(rewards)[1], 0.0)
    longer = reinforce_plus_plus_advantages(rewards, np.array([[5, 50], [5, 5]]))
    assert longer[0, 1] > same[0, 1]  # more failing tokens pull the token mean down
    with pytest.raises(FairMedInputError, match="completion tokens"):
        reinforce_plus_plus_advantages(np.array([[1.0, 0.0]]), np.array([[1, 0]]))


# ----------------------------------------------------------------------------------------------- clustering


@pytest.mark.parametrize("seed", range(10))
def test_authors_clustering_is_their_kmeans_on_the_raw_list(seed):
    rng = np.random.default_rng(100 + seed)
    generations = int(rng.integers(2, 7))
    n = int(rng.integers(1, 40))
    # Few distinct binary vectors, many repeats: where a weighted, deduplicated fit would differ.
    pool = rng.integers(0, 2, size=(int(rng.integers(1, 6)), generations)).astype(np.float32)
    vectors = [pool[i] for i in rng.integers(0, len(pool), size=n)]
    k_opt, assignments, counts, centroids = _oracle_cluster_info_question(vectors)
    ours = cluster_unknown_groups_authors({"d": np.stack(vectors)})["d"]
    assert ours.n_clusters == k_opt
    for position in range(n):
        key = ours.labels[position]
        index = ours.keys.index(key)
        label = assignments[position]
        assert ours.cluster_sizes[index] == counts[label]  # N_g
        assert ours.centroid_mean_rewards[index] == pytest.approx(float(centroids[label].mean()), abs=1e-7)


@pytest.mark.parametrize(("inertias", "k"), [
    ([5.0], 1), ([5.0, 1.0], 2), ([5.0, 1.0, 0.95], 2), ([5.0, 1.0, 0.5], 3), ([5.0, 4.9, 4.8], 3),
    ([5.0, 0.0, 0.0], 2), ([5.0, 5.0, 5.0], 3),
])
def test_authors_elbow_rule(inertias, k):
    """Hand-worked: the 1 -> 2 drop is never tested, so k = 1 only when one k was tried; 2 when the 2 -> 3 drop
    is under a tenth of the 1 -> 2 drop; else 3 (FairMed's default rule gives 1 for [5, 4.9, 4.8])."""
    assert choose_k_by_elbow_authors(inertias) == k


def test_authors_clustering_through_fairgrpo_uses_each_prompts_own_label_over_steps():
    """Three steps of FairGRPO with every prompt clustered: the weights of this batch's prompts are the
    authors' (cluster size and centroid mean of the label their own vector got in a fit on the raw history)."""
    rng = np.random.default_rng(7)
    weighting = FairGRPOWeighting(cluster_all=True, clustering="authors")
    stats = FairGRPOStatistics()
    history: list[np.ndarray] = []
    for _ in range(3):
        rewards = rng.integers(0, 2, size=(6, 4)).astype(np.float64)
        domains = ["d"] * 6
        _, info = fairgrpo_advantages(rewards, domains, None, stats, weighting)
        history.extend(rewards.astype(np.float32))
        k_opt, assignments, counts, centroids = _oracle_cluster_info_question(history)
        assert info.clusters[0].n_clusters == k_opt
        n_all = len(history)
        mean_all = float(np.mean(np.stack(history)))
        t_d = max(np.sqrt(n_all) * mean_all, 1e-6)
        for row in range(6):
            label = assignments[n_all - 6 + row]
            factor = t_d * np.sqrt(counts[label]) * float(centroids[label].mean())
            expected = 1.0 / factor if np.isfinite(1.0 / factor) and factor > 0 else 1.0
            assert info.prompt_weights[row] == pytest.approx(expected, rel=1e-5)
    # The raw history travels with the statistics (checkpoint) and comes back unchanged.
    again = FairGRPOStatistics.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.unknown_reward_history["d"], stats.unknown_reward_history["d"])
    assert len(stats.unknown_reward_history["d"]) == 18


def test_default_clustering_keeps_no_raw_history_and_the_option_is_checked():
    stats = FairGRPOStatistics()
    fairgrpo_advantages(np.ones((2, 3)), ["d", "d"], None, stats, FairGRPOWeighting(cluster_all=True))
    assert stats.unknown_reward_history == {}
    with pytest.raises(FairMedInputError, match="unknown clustering 'mine'"):
        FairGRPOWeighting(clustering="mine")
    assert GRPOJobConfig(clustering="authors").weighting().clustering == "authors"
    assert GRPOJobConfig(method="fairgrpo_nd").weighting().cluster_all


# ----------------------------------------------------------------------------------------------- the registry


def test_the_registry_holds_the_papers_seven_methods_with_their_names():
    labels = {name: method.label for name, method in METHODS.items()}
    assert labels == {"grpo": "GRPO", "rloo": "RLOO", "reinforce_plus_plus": "REINFORCE++",
                      "grpo_resample": "GRPO + group resampling", "grpo_dro": "GRPO + Group DRO",
                      "fairgrpo_nd": "FairGRPO without demographics (EQPO-ND)", "fairgrpo": "FairGRPO (EQPO)"}
    assert all(dataclasses.is_dataclass(m) and m.help and not m.help.endswith(".") for m in METHODS.values())
    assert [m.name for m in METHODS.values() if m.needs_demographics] == ["grpo_resample", "grpo_dro", "fairgrpo"]
    assert [m.name for m in METHODS.values() if m.prompt_sampling == "group_balanced"] == ["grpo_resample"]
    assert "EQPO" in METHODS["fairgrpo"].help and "EQPO" in METHODS["fairgrpo_nd"].help
    with pytest.raises(FairMedInputError, match="unknown method 'ppo'.*use one of"):
        training_method("ppo")
    # The job settings and the trainer's state files read it.
    from fairmed_core.training.grpo_config import METHODS as JOB_METHODS

    assert JOB_METHODS == tuple(METHODS)
    assert METHODS["fairgrpo"].state_file(GRPOJobConfig()) == methods.STATISTICS_FILE
    assert METHODS["fairgrpo"].state_file(GRPOJobConfig(statistics="batch_local")) is None
    assert METHODS["grpo_dro"].state_file(GRPOJobConfig(method="grpo_dro")) == methods.DRO_WEIGHTS_FILE
    assert METHODS["rloo"].state_file(GRPOJobConfig(method="rloo")) is None


def test_the_data_check_names_what_a_method_needs():
    groups = ["F,A1", UNKNOWN, "M,A2"]
    assert check_method_data("fairgrpo", ["a", "a", "b"], groups, ("sex", "age_group")) == {
        ("a", "F,A1"): 1, ("a", UNKNOWN): 1, ("b", "M,A2"): 1}
    with pytest.raises(FairMedInputError, match="row 1 has no 'dataset' value"):
        check_method_data("grpo_dro", ["a", "", "b"], groups, ("sex",))
    with pytest.raises(FairMedInputError, match="needs each case's data source"):
        check_method_data("fairgrpo_nd", None, groups, ("sex",))
    for name in ("grpo", "rloo", "reinforce_plus_plus"):
        assert check_method_data(name, None, groups, ("sex",)) == {}
    for name in ("fairgrpo", "grpo_dro", "grpo_resample"):
        with pytest.raises(FairMedInputError, match="no training case has demographics"):
            check_method_data(name, ["a"] * 3, [UNKNOWN] * 3, ("sex", "age_group"))
    assert check_method_data("fairgrpo_nd", ["a"] * 3, [UNKNOWN] * 3, ("sex",)) == {("a", UNKNOWN): 3}


def test_group_dro_loss_is_the_error_rate_whatever_a_right_answer_earns():
    """Hand-worked. Two groups, every rollout right. Group a's prompts have the rare answer (a right rollout earns
    2.0), group b's the common one (0.5). Their losses are both 0, so their weights stay equal; dividing by the
    mean reward alone (loss 1 - 2.0 = -1 against 1 - 0.5 = 0.5) would move weight to b for nothing."""
    rewards = np.array([[2.0, 2.0], [2.0, 2.0], [0.5, 0.5]])
    domains, groups = ["s", "s", "s"], ["a", "a", "b"]
    log_weights: dict = {}
    q, multipliers, per_prompt = methods.group_dro_step(rewards, domains, groups, log_weights, 0.5,
                                                        attainable=[2.0, 2.0, 0.5])
    assert log_weights == {("s", "a"): 0.0, ("s", "b"): 0.0}
    assert q == {("s", "a"): 0.5, ("s", "b"): 0.5}
    # Each group's share of the batch is q; a has two prompts, b one: multipliers 3/4 and 3/2 (mean over prompts 1).
    assert multipliers == pytest.approx({("s", "a"): 0.75, ("s", "b"): 1.5})
    assert per_prompt.mean() == pytest.approx(1.0)
    # Half right in a (earned 2.0 of 4.0 attainable over its two prompts' means): loss 0.5; b all wrong: loss 1.
    log_weights = {}
    methods.group_dro_step(np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]]), domains, groups, log_weights, 0.5,
                           attainable=[2.0, 2.0, 0.5])
    assert log_weights == pytest.approx({("s", "a"): 0.25, ("s", "b"): 0.5})
    # Right/wrong rewards (attainable 1 everywhere, the default): the loss is 1 - mean reward.
    log_weights, explicit = {}, {}
    right_wrong = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    methods.group_dro_step(right_wrong, domains, groups, log_weights, 0.5)
    methods.group_dro_step(right_wrong, domains, groups, explicit, 0.5, attainable=np.ones(3))
    assert log_weights == explicit == pytest.approx({("s", "a"): 0.5 * 0.25, ("s", "b"): 0.5})
    for bad in ([1.0, 0.0, 1.0], [1.0, 1.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(ValueError, match="attainable"):
            methods.group_dro_step(right_wrong, domains, groups, {}, 0.5, attainable=bad)


def test_a_cluster_of_all_zero_reward_vectors_has_mean_reward_exactly_zero():
    """scikit-learn's K-means centres the data and adds the mean back, leaving ~1e-17 in the centroid of all-zero
    vectors; T_g = sqrt(N_g) * rbar_g then weighted those prompts by ~1e15 (a shipped run logged 1.4e15) instead
    of the fallback the formula means for rbar_g = 0. Both clusterings give 0 exactly, and the other clusters
    their members' mean reward."""
    rng = np.random.default_rng(0)
    vectors = np.vstack([np.zeros((30, 4)), rng.integers(0, 2, (20, 4)) * 0.7, np.full((10, 4), 1.4)])
    assert 0.0 < KMeans(3, n_init=10, random_state=0).fit(vectors).cluster_centers_.mean(axis=1).min() < 1e-15
    for groups in (cluster_unknown_groups({"d": vectors})["d"], cluster_unknown_groups_authors({"d": vectors})["d"]):
        means = groups.centroid_mean_rewards
        assert means[0] == 0.0 and groups.cluster_sizes[0] == (vectors.sum(axis=1) == 0).sum()  # 30 + 3 drawn
        assert means[-1] == pytest.approx(1.4)
