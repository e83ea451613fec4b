"""FairGRPO's advantage weighting matches DESIGN section 4's formulas on hand-computed cases.

Expected numbers are worked out by hand in the comments (N, rbar, T and 1 / (T_d * T_g)), not recomputed with
the module; numpy is only the oracle for a plain std where a test checks the batch rescale.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairmed_core.errors import FairMedInputError
from fairmed_core.training.fairgrpo_weights import (
    FairGRPOStatistics,
    FairGRPOWeighting,
    choose_k_by_elbow,
    cluster_unknown_groups,
    demographic_group_key,
    domain_temperature,
    fairgrpo_advantages,
    fairgrpo_weights,
    group_temperature,
    within_prompt_advantages,
)

SQRT2 = math.sqrt(2.0)
EPS = 1e-6
NO_RESCALE = FairGRPOWeighting(rescale="none")

# Three prompts, G = 4: domain a has one F and one M prompt, domain b one F prompt.
REWARDS_A = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=float)
DOMAINS_A = ["a", "a", "b"]
GROUPS_A = ["F", "M", "F"]


def _weight_of(info, domain, group):
    (record,) = [g for g in info.groups if g.domain == domain and g.group == group]
    return record


# ---- step 1: within-prompt normalisation ------------------------------------------------------------------


def test_within_prompt_advantages_are_centred_and_divided_by_the_unbiased_std():
    rewards = np.array([[1, 0, 0, 0], [1, 1, 1, 1]], dtype=float)
    # Row 0: mean 0.25, deviations (0.75, -0.25, -0.25, -0.25), unbiased variance 0.75 / 3 = 0.25, std 0.5.
    expected_row0 = np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + EPS)
    advantages = within_prompt_advantages(rewards)
    np.testing.assert_allclose(advantages[0], expected_row0, rtol=1e-12)
    # Row 1: no spread, so no signal (0 / (0 + eps)).
    np.testing.assert_array_equal(advantages[1], np.zeros(4))
    np.testing.assert_allclose(within_prompt_advantages(rewards, scale=False)[0], [0.75, -0.25, -0.25, -0.25])


def test_within_prompt_advantages_keep_a_tensor_a_tensor():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float32)
    advantages = within_prompt_advantages(rewards)
    assert isinstance(advantages, torch.Tensor) and advantages.dtype == torch.float32
    # [1, 0]: mean 0.5, unbiased std sqrt(0.5).
    expected = 0.5 / (math.sqrt(0.5) + EPS)
    assert advantages[0].tolist() == pytest.approx([expected, -expected], rel=1e-6)


# ---- step 2: temperatures and weights ---------------------------------------------------------------------


def test_temperature_formulas():
    assert domain_temperature(4, 0.25) == pytest.approx(0.5)  # sqrt(4) * 0.25
    assert domain_temperature(4, 0.0) == EPS  # floored at eps
    assert domain_temperature(9, 0.0, eps=0.01) == 0.01
    assert math.isnan(domain_temperature(0, math.nan))  # never seen: no temperature
    assert group_temperature(9, 1 / 3) == pytest.approx(1.0)  # sqrt(9) / 3
    assert group_temperature(5, 0.0) == 0.0  # no floor for groups


def test_one_step_weights_and_advantages_match_the_hand_computation():
    statistics = FairGRPOStatistics()
    advantages, info = fairgrpo_advantages(REWARDS_A, DOMAINS_A, GROUPS_A, statistics, NO_RESCALE)
    # Domain a: N = 2, rewards 2 + 3 over 8 rollouts, rbar = 0.625, T_a = sqrt(2) * 0.625 = 0.8838835.
    # Domain b: N = 1, rbar = 0.25, T_b = 0.25.
    # (a, F): N 1, rbar 0.5 -> T 0.5; (a, M): N 1, rbar 0.75 -> T 0.75; (b, F): N 1, rbar 0.25 -> T 0.25.
    # Weights: 1 / (0.8838835 * 0.5) = 2.2627417; 1 / (0.8838835 * 0.75) = 1.5084945; 1 / (0.25 * 0.25) = 16.
    np.testing.assert_allclose(info.prompt_weights, [2.2627417, 1.5084945, 16.0], rtol=1e-7)
    (domain_a, domain_b) = info.domains
    assert (domain_a.prompts_seen, domain_a.mean_reward) == (2, 0.625)
    assert domain_a.temperature == pytest.approx(0.8838835, rel=1e-7)
    assert (domain_b.prompts_seen, domain_b.mean_reward, domain_b.temperature) == (1, 0.25, 0.25)
    assert _weight_of(info, "a", "M").temperature == 0.75
    assert not any(g.fallback or g.latent for g in info.groups)
    # s of [1,1,0,0]: mean 0.5, unbiased std sqrt(1/3); of [1,1,1,0]: std 0.5; of [1,0,0,0]: std 0.5.
    s0 = 0.5 / (math.sqrt(1 / 3) + EPS)
    expected = np.array(
        [
            [s0, s0, -s0, -s0],
            np.array([0.25, 0.25, 0.25, -0.75]) / (0.5 + EPS),
            np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + EPS),
        ]
    ) * np.array([[2.2627417], [1.5084945], [16.0]])
    np.testing.assert_allclose(advantages, expected, rtol=1e-7)


def test_batch_rescale_divides_by_the_batch_std_without_recentring():
    scaled, _ = fairgrpo_advantages(REWARDS_A, DOMAINS_A, GROUPS_A, FairGRPOStatistics(), NO_RESCALE)
    advantages, info = fairgrpo_advantages(REWARDS_A, DOMAINS_A, GROUPS_A, FairGRPOStatistics())
    batch_std = np.std(scaled, ddof=1)
    assert info.batch_std == pytest.approx(batch_std, rel=1e-12) and info.batch_mean == 0.0
    np.testing.assert_allclose(advantages, scaled / (batch_std + EPS), rtol=1e-12)


def test_zero_mean_rescale_has_mean_zero_and_unit_std():
    advantages, info = fairgrpo_advantages(
        REWARDS_A, DOMAINS_A, GROUPS_A, FairGRPOStatistics(), FairGRPOWeighting(rescale="zero_mean")
    )
    assert abs(advantages.mean()) < 1e-12
    assert np.std(advantages, ddof=1) == pytest.approx(1.0, rel=1e-5)
    # Every prompt's advantages are centred before weighting, so the code's rescale is already zero-mean.
    batch, _ = fairgrpo_advantages(REWARDS_A, DOMAINS_A, GROUPS_A, FairGRPOStatistics())
    np.testing.assert_allclose(advantages, batch, atol=1e-12)
    assert info.rescale == "zero_mean"


def test_single_prompt():
    advantages, info = fairgrpo_advantages([[1.0, 0.0]], ["a"], ["F"], FairGRPOStatistics())
    # N_d = N_g = 1, rbar 0.5: weight 1 / (0.5 * 0.5) = 4. Two opposite advantages +-x have unbiased std
    # sqrt(2) x, so after the rescale they are +-1 / sqrt(2).
    assert info.prompt_weights.tolist() == [4.0]
    np.testing.assert_allclose(advantages, [[1 / SQRT2, -1 / SQRT2]], rtol=1e-5)


def test_one_domain_one_group_the_weight_cancels_in_the_batch_rescale():
    rewards = np.array([[1, 0, 0, 1], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=float)
    advantages, info = fairgrpo_advantages(rewards, ["a"] * 3, ["F"] * 3, FairGRPOStatistics())
    # N = 3, rbar = 6 / 12 = 0.5: T_d = T_g = sqrt(3) * 0.5, weight 1 / (3 * 0.25) = 4/3 for all.
    np.testing.assert_allclose(info.prompt_weights, [4 / 3] * 3, rtol=1e-12)
    plain = within_prompt_advantages(rewards)
    np.testing.assert_allclose(advantages, plain / np.std(plain, ddof=1), rtol=1e-5)


# ---- persistence -------------------------------------------------------------------------------------------

STEP1 = np.array([[0, 0, 0, 1], [1, 1, 1, 1]], dtype=float)  # (a, F), (a, M)
STEP2 = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=float)  # same groups, now equally good


def test_persistent_statistics_carry_earlier_steps_into_the_temperatures():
    statistics = FairGRPOStatistics()
    _, first = fairgrpo_advantages(STEP1, ["a", "a"], ["F", "M"], statistics, NO_RESCALE)
    # Step 1: a: N 2, rbar 5/8; F: N 1, rbar 0.25; M: N 1, rbar 1.
    # w_F = 1 / (sqrt(2) * 0.625 * 0.25) = 4.5254834, w_M = 1 / (sqrt(2) * 0.625) = 1.1313708.
    np.testing.assert_allclose(first.prompt_weights, [4.5254834, 1.1313708], rtol=1e-7)
    _, second = fairgrpo_advantages(STEP2, ["a", "a"], ["F", "M"], statistics, NO_RESCALE)
    # Step 2 over both steps: a: N 4, rbar 9/16 -> T_a = 2 * 0.5625 = 1.125;
    # F: N 2, rbar 3/8 -> T_F = sqrt(2) * 0.375 = 0.5303301; M: N 2, rbar 6/8 -> T_M = 1.0606602.
    # w_F = 1 / (1.125 * 0.5303301) = 1.6761050, w_M = 1 / (1.125 * 1.0606602) = 0.8380525.
    np.testing.assert_allclose(second.prompt_weights, [1.6761050, 0.8380525], rtol=1e-7)
    assert statistics.steps == 2
    assert statistics.domain_tally("a").prompts == 4 and statistics.group_tally("a", "F").reward_sum == 3.0


def test_batch_local_statistics_see_only_the_current_batch():
    persistent = FairGRPOStatistics()
    fairgrpo_advantages(STEP1, ["a", "a"], ["F", "M"], persistent, NO_RESCALE)
    before = json.dumps(persistent.to_dict())
    config = FairGRPOWeighting(rescale="none", statistics="batch_local")
    _, info = fairgrpo_advantages(STEP2, ["a", "a"], ["F", "M"], persistent, config)
    # Batch only: a: N 2, rbar 0.5 -> T_a = sqrt(2) / 2; F and M: N 1, rbar 0.5 -> T 0.5.
    # Both weights 1 / (0.7071068 * 0.5) = 2.8284271: the history of F being harder is forgotten.
    np.testing.assert_allclose(info.prompt_weights, [2.8284271, 2.8284271], rtol=1e-7)
    assert json.dumps(persistent.to_dict()) == before  # left untouched
    _, no_statistics = fairgrpo_advantages(STEP2, ["a", "a"], ["F", "M"], None, config)
    np.testing.assert_array_equal(no_statistics.prompt_weights, info.prompt_weights)


# ---- the NaN / inf fallback ----------------------------------------------------------------------------------


def test_a_group_with_all_zero_rewards_keeps_unscaled_advantages():
    rewards = np.array([[0, 0, 0, 0], [1, 0, 1, 0]], dtype=float)
    advantages, info = fairgrpo_advantages(rewards, ["a", "a"], ["F", "M"], FairGRPOStatistics(), NO_RESCALE)
    # F: rbar 0 -> T_F = 0 -> 1 / 0 is infinite -> weight 1 (fallback). a: N 2, rbar 2/8 -> T_a = sqrt(2) / 4;
    # M: rbar 0.5 -> T_M = 0.5 -> w_M = 1 / (0.3535534 * 0.5) = 5.6568542.
    np.testing.assert_allclose(info.prompt_weights, [1.0, 5.6568542], rtol=1e-7)
    assert _weight_of(info, "a", "F").fallback and not _weight_of(info, "a", "M").fallback
    assert info.fallback_prompts == 1 and info.fallback_rollouts == 4
    np.testing.assert_array_equal(advantages[0], np.zeros(4))
    assert np.isfinite(advantages).all()


def test_a_domain_with_all_zero_rewards_gives_zero_finite_advantages():
    advantages, info = fairgrpo_advantages(np.zeros((2, 3)), ["a", "a"], ["F", "M"], FairGRPOStatistics())
    assert info.domains[0].temperature == EPS  # T_d floored; T_g = 0, so the product is 0
    np.testing.assert_array_equal(info.prompt_weights, [1.0, 1.0])
    np.testing.assert_array_equal(advantages, np.zeros((2, 3)))
    assert info.batch_std == 0.0


def test_a_group_or_domain_never_counted_falls_back_to_weight_one():
    statistics = FairGRPOStatistics().update([[1.0, 0.0]], ["a"], ["F"])
    weights = fairgrpo_weights(["a", "a", "b"], ["F", "M", "F"], statistics)
    # (a, F): T_a = T_F = 1 * 0.5 -> 4. (a, M) has N_g = 0, (b, F) a domain never seen: NaN -> 1.
    np.testing.assert_array_equal(weights.prompt_weights, [4.0, 1.0, 1.0])
    np.testing.assert_array_equal(weights.fallback, [False, True, True])


def test_a_weight_that_overflows_falls_back_to_the_unscaled_advantage():
    rewards = np.array([[1e-305, 0.0]])
    # T_d = max(5e-306, eps) = 1e-6 and T_g = 5e-306: 1 / 5e-312 overflows to inf, so s is kept unscaled.
    advantages, info = fairgrpo_advantages(rewards, ["a"], ["F"], FairGRPOStatistics(), NO_RESCALE)
    assert info.prompt_weights.tolist() == [1.0] and info.fallback_prompts == 1
    np.testing.assert_array_equal(advantages, within_prompt_advantages(rewards))


# ---- unknown demographics -------------------------------------------------------------------------------------


def test_all_unknown_batch_is_clustered_and_weighted_by_cluster():
    rewards = np.array([[1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=float)
    _, info = fairgrpo_advantages(rewards, ["a"] * 4, ["UNK"] * 4, FairGRPOStatistics(), NO_RESCALE)
    # Two distinct vectors, twice each: I_1 = 4 * 0.75 = 3, I_2 = 0, so k = 2 (the most there can be).
    # cluster-0 = [0,0,0,1]: N 2, rbar 0.25 -> T = sqrt(2) / 4; cluster-1 = [1,1,1,1]: N 2, rbar 1 -> sqrt(2).
    # a: N 4, rbar 10/16 -> T_a = 1.25. Weights 1 / (1.25 * 0.3535534) = 2.2627417, 1 / (1.25 * 1.4142136).
    assert info.prompt_groups == ("cluster-1", "cluster-0", "cluster-1", "cluster-0")
    np.testing.assert_allclose(info.prompt_weights, [0.5656854, 2.2627417, 0.5656854, 2.2627417], rtol=1e-7)
    (clusters,) = info.clusters
    assert clusters.inertias == (3.0, 0.0) and clusters.cluster_sizes.tolist() == [2, 2]
    assert all(g.latent for g in info.groups)


def test_unknown_prompts_are_clustered_over_every_step_so_far():
    statistics = FairGRPOStatistics()
    fairgrpo_advantages([[0, 0, 0, 1], [0, 0, 0, 1]], ["a", "a"], ["UNK", "UNK"], statistics, NO_RESCALE)
    _, info = fairgrpo_advantages([[1, 1, 1, 1], [1, 0, 0, 0]], ["a", "a"], ["UNK", "F"], statistics, NO_RESCALE)
    # UNK history: [0,0,0,1] x 2 and [1,1,1,1] x 1, so the clusters have sizes 2 and 1, not 0 and 1.
    (clusters,) = info.clusters
    assert clusters.cluster_sizes.tolist() == [2, 1]
    # a: N 4, rewards 1 + 1 + 4 + 1 = 7 of 16 -> T_a = 2 * 7/16 = 0.875. The UNK prompt: cluster-1, N 1, rbar 1
    # -> w = 1 / 0.875. The F prompt keeps its demographic group: N 1, rbar 0.25 -> w = 1 / (0.875 * 0.25).
    assert info.prompt_groups == ("cluster-1", "F")
    np.testing.assert_allclose(info.prompt_weights, [1 / 0.875, 1 / (0.875 * 0.25)], rtol=1e-12)


def test_without_demographics_every_prompt_is_clustered():
    rewards = np.array([[1, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1]], dtype=float)
    config = FairGRPOWeighting(rescale="none", cluster_all=True)
    _, info = fairgrpo_advantages(rewards, ["a"] * 4, ["F", "M", "M", "F"], FairGRPOStatistics(), config)
    assert info.prompt_groups == ("cluster-1", "cluster-0", "cluster-1", "cluster-0")
    _, no_groups = fairgrpo_advantages(rewards, ["a"] * 4, None, FairGRPOStatistics(), config)
    np.testing.assert_array_equal(no_groups.prompt_weights, info.prompt_weights)


def test_unknown_as_an_ordinary_group_when_clustering_is_off():
    config = FairGRPOWeighting(rescale="none", cluster_unknown=False)
    statistics = FairGRPOStatistics()
    _, info = fairgrpo_advantages([[1, 0], [1, 1]], ["a", "a"], ["UNK", "UNK"], statistics, config)
    # One group UNK: N 2, rbar 0.75, as is the domain: w = 1 / (sqrt(2) * 0.75) ** 2 = 1 / 1.125.
    assert info.prompt_groups == ("UNK", "UNK") and info.clusters == ()
    np.testing.assert_allclose(info.prompt_weights, [1 / 1.125] * 2, rtol=1e-12)
    assert statistics.unknown_reward_vectors == {}


def test_clustering_recovers_two_separated_groups_and_is_deterministic():
    rng = np.random.default_rng(7)
    high = 0.9 + 0.1 * rng.random((10, 6))
    low = 0.1 * rng.random((10, 6))
    vectors = np.empty((20, 6))
    vectors[0::2], vectors[1::2] = high, low
    first = cluster_unknown_groups({"a": vectors}, seed=3)["a"]
    assert first.n_clusters == 2
    assert first.labels == ("cluster-1", "cluster-0") * 10  # cluster-0 is the low-reward group
    assert first.cluster_sizes.tolist() == [10, 10]
    again = cluster_unknown_groups({"a": vectors}, seed=3)["a"]
    assert again.labels == first.labels and again.inertias == first.inertias
    np.testing.assert_array_equal(again.centroids, first.centroids)
    assert first.assign(vectors) == first.labels


def test_elbow_rule_picks_one_cluster_for_identical_vectors_and_for_one_prompt():
    same = cluster_unknown_groups({"a": np.full((5, 4), 0.5)})["a"]
    assert same.n_clusters == 1 and same.inertias == (0.0,) and same.cluster_sizes.tolist() == [5]
    single = cluster_unknown_groups({"a": [[1.0, 0.0, 1.0]]})["a"]
    assert single.n_clusters == 1 and single.labels == ("cluster-0",)


@pytest.mark.filterwarnings("error")
def test_fewer_distinct_vectors_than_k_caps_k_without_warnings():
    groups = cluster_unknown_groups({"a": [[1, 0, 0], [0, 0, 0], [1, 0, 0]]}, max_k=3)["a"]
    # Two distinct points: k tried 1..2 only. I_1 = 3 * mean-square spread = 2/3, I_2 = 0, so k = 2.
    assert len(groups.inertias) == 2 and groups.inertias[0] == pytest.approx(2 / 3)
    assert groups.n_clusters == 2 and groups.cluster_sizes.tolist() == [1, 2]


def test_sorting_reward_vectors_ignores_rollout_order():
    vectors = [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert cluster_unknown_groups({"a": vectors})["a"].n_clusters == 2
    assert cluster_unknown_groups({"a": vectors}, sort_vectors=True)["a"].n_clusters == 1


@pytest.mark.parametrize(
    ("inertias", "k"),
    [
        ([10.0, 9.5, 9.0], 1),  # the first split explains 0.5 < 10% of 10
        ([10.0, 1.0, 0.95], 2),  # drop 9, then 0.05 < 0.9
        ([10.0, 5.0, 2.0], 3),  # drops 5 and 3: no elbow within k <= 3
        ([0.0, 0.0, 0.0], 1),
        ([4.0], 1),
        ([10.0, 1.0, 1.5], 2),  # a worse local optimum at k = 3 is a negative drop
    ],
)
def test_choose_k_by_elbow(inertias, k):
    assert choose_k_by_elbow(inertias) == k


# ---- statistics persistence -----------------------------------------------------------------------------------


def _two_step_statistics() -> FairGRPOStatistics:
    statistics = FairGRPOStatistics()
    fairgrpo_advantages([[0.25, 0.5, 0.0], [1, 1, 0]], ["a", "b"], ["F,A3", "UNK"], statistics)
    fairgrpo_advantages([[0.125, 1, 1], [0, 0, 1]], ["a", "b"], ["UNK", "UNK"], statistics)
    return statistics


def test_statistics_round_trip_through_json_unchanged():
    statistics = _two_step_statistics()
    text = json.dumps(statistics.to_dict())
    restored = FairGRPOStatistics.from_dict(json.loads(text))
    assert json.dumps(restored.to_dict()) == text
    assert restored.to_dict()["domains"] == {
        "names": ["a", "b"], "prompts": [2, 2], "rollouts": [6, 6], "reward_sums": [2.875, 3.0]
    }
    step = np.array([[1, 0, 1], [0, 1, 1]], dtype=float)
    original_advantages, _ = fairgrpo_advantages(step, ["a", "b"], ["UNK", "F,A3"], statistics)
    restored_advantages, _ = fairgrpo_advantages(step, ["a", "b"], ["UNK", "F,A3"], restored)
    np.testing.assert_array_equal(original_advantages, restored_advantages)


def test_statistics_of_two_halves_merge_into_those_of_the_whole():
    rewards = np.array([[1, 0, 0.5], [1, 1, 1], [0, 0, 1], [0, 0, 1]])
    domains, groups = ["a", "a", "b", "b"], ["F", "UNK", "UNK", "M"]
    whole = FairGRPOStatistics().update(rewards, domains, groups)
    first = FairGRPOStatistics().update(rewards[:2], domains[:2], groups[:2])
    second = FairGRPOStatistics().update(rewards[2:], domains[2:], groups[2:])
    assert first.merge(second).to_dict() == whole.to_dict()


def test_a_batch_with_another_g_is_rejected_and_leaves_the_statistics_unchanged():
    statistics = _two_step_statistics()
    before = json.dumps(statistics.to_dict())
    with pytest.raises(FairMedInputError, match="num_generations"):
        fairgrpo_advantages([[1, 0, 1, 0]], ["b"], ["UNK"], statistics)
    assert json.dumps(statistics.to_dict()) == before


def test_malformed_statistics_are_a_clear_error():
    with pytest.raises(FairMedInputError, match="not FairGRPO statistics"):
        FairGRPOStatistics.from_dict({"steps": 1}, source="fairgrpo_statistics.json")
    broken = _two_step_statistics().to_dict()
    broken["domains"]["prompts"] = [1]
    with pytest.raises(FairMedInputError, match="fairgrpo_statistics.json"):
        FairGRPOStatistics.from_dict(broken, source="fairgrpo_statistics.json")


# ---- interface ----------------------------------------------------------------------------------------------


def test_tensor_rewards_give_tensor_advantages_and_json_metrics():
    rewards = torch.tensor(REWARDS_A, dtype=torch.float32)
    advantages, info = fairgrpo_advantages(rewards, DOMAINS_A, GROUPS_A, FairGRPOStatistics())
    assert isinstance(advantages, torch.Tensor) and advantages.dtype == torch.float32
    assert advantages.shape == (3, 4)
    metrics = info.metrics()
    assert metrics["fairgrpo/b/F/weight"] == 16.0
    json.dumps(metrics)


@pytest.mark.parametrize(
    ("rewards", "domains", "groups", "message"),
    [
        ([[1.0, -1.0]], ["a"], ["F"], "non-negative"),
        ([[1.0, math.nan]], ["a"], ["F"], "finite"),
        ([[1.0], [0.0]], ["a", "a"], ["F", "F"], "at least 2 rollouts"),
        ([[1.0, 0.0]], ["a", "b"], ["F"], "2 domains for 1 prompts"),
        ([[1.0, 0.0]], ["a"], [""], "non-empty string"),
        ([1.0, 0.0], ["a"], ["F"], "matrix"),
    ],
)
def test_bad_input_is_a_clear_error(rewards, domains, groups, message):
    with pytest.raises(FairMedInputError, match=message):
        fairgrpo_advantages(rewards, domains, groups, FairGRPOStatistics())


def test_errors_name_the_row_and_the_missing_statistics():
    with pytest.raises(FairMedInputError) as error:
        fairgrpo_advantages([[1.0, 0.0], [0.5, -0.5]], ["a", "a"], ["F", "M"], FairGRPOStatistics())
    assert error.value.row == 1 and error.value.column == "rewards"
    with pytest.raises(FairMedInputError, match="batch_local"):
        fairgrpo_advantages([[1.0, 0.0]], ["a"], ["F"], None)
    with pytest.raises(FairMedInputError, match="rescale"):
        FairGRPOWeighting(rescale="mean")


def test_demographic_group_key_from_demo_strings():
    assert demographic_group_key("sex: Female, age: 68") == "F,A3"
    assert demographic_group_key("") == "UNK" and demographic_group_key(None) == "UNK"
    assert demographic_group_key("sex: male") == "M,UNK"  # partly known: a group of its own, not clustered
    assert demographic_group_key("age: 80, sex: F", attributes=("age_group",)) == "A4"


# ---- property -------------------------------------------------------------------------------------------------


@st.composite
def _batches(draw):
    n_prompts = draw(st.integers(1, 6))
    n_generations = draw(st.integers(2, 5))
    binary = draw(st.booleans())
    element = st.sampled_from([0.0, 1.0]) if binary else st.floats(0.0, 1.0, allow_subnormal=False)
    rewards = np.array(
        draw(st.lists(st.lists(element, min_size=n_generations, max_size=n_generations),
                      min_size=n_prompts, max_size=n_prompts))
    )
    domains = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n_prompts, max_size=n_prompts))
    groups = draw(st.lists(st.sampled_from(["F", "M", "UNK"]), min_size=n_prompts, max_size=n_prompts))
    return rewards, domains, groups


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(_batches(), min_size=1, max_size=2), rescale=st.sampled_from(["batch", "zero_mean"]))
def test_weights_are_finite_and_positive_for_any_batch(batches, rescale):
    statistics = FairGRPOStatistics()
    config = FairGRPOWeighting(rescale=rescale)
    for rewards, domains, groups in batches:
        if statistics.unknown_reward_vectors and any(
            v.vectors.shape[1] != rewards.shape[1] for v in statistics.unknown_reward_vectors.values()
        ):
            statistics = FairGRPOStatistics()  # G changed between steps: a new run
        advantages, info = fairgrpo_advantages(rewards, domains, groups, statistics, config)
        assert np.isfinite(info.prompt_weights).all() and (info.prompt_weights > 0).all()
        assert np.isfinite(advantages).all() and advantages.shape == rewards.shape
        assert all(math.isfinite(g.weight) and g.weight > 0 for g in info.groups)
