"""FairGRPOTrainer: the rewards, the GRPO dataset, TRL's GRPO untouched for method 'grpo', FairGRPO's advantages
in place of TRL's (exactly as ``fairgrpo_advantages`` computes them), statistics through a checkpoint and a
resume, the baselines, a hand-written GRPO loss equal to TRL's, and the errors raised before training starts.

Small settings on CPU with the tiny model: 8 prompts from three domains, G = 4, completions of at most 24 tokens,
2 steps, no KL, fp32.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

from fairmed_core.data import read_manifest
from fairmed_core.data.schema import UNKNOWN
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.answers import FORMAT_INSTRUCTION
from fairmed_core.models.generation import _suppressed_token_ids
from fairmed_core.models.loading import load_model
from fairmed_core.training import fairgrpo_trainer as trainer_module
from fairmed_core.training import fairgrpo_weights
from fairmed_core.training import methods as methods_module
from fairmed_core.training.fairgrpo_trainer import (
    STATISTICS_FILE,
    FairGRPOConfig,
    FairGRPOTrainer,
    GroupBalancedRepeatSampler,
    grpo_dataset,
    prompt_group_key,
)
from fairmed_core.training.grpo_config import GRPOJobConfig
from fairmed_core.training.rewards import (
    ClassBalancedAccuracyReward,
    accuracy_reward,
    class_weights,
    completion_text,
    format_reward,
)

G = 4
N_PROMPTS = 8

GOOD_YES = "<think> there is an opacity . </think> \\boxed{yes}"
GOOD_NO = "<think> clear lungs . </think> \\boxed{no}"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """A private copy of the tiny model (nothing here should write into it, but a trainer must not be able to)."""
    target = tmp_path_factory.mktemp("fairgrpo-model") / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture(scope="module")
def fair_dataset(default_manifest):
    """Eight training cases from three domains with known and unknown demographics."""
    dataset = read_manifest(default_manifest)
    train = dataset.cases[dataset.cases["split"] == "train"]
    picked = []
    for source, count in (("synth_cxr", 3), ("synth_derm", 3), ("synth_mammo", 2)):
        rows = train[train["dataset"] == source]
        known = rows[rows["sex"] != UNKNOWN].head(count - 1)
        unknown = rows[(rows["sex"] == UNKNOWN) & (rows["age_group"] == UNKNOWN)].head(1)
        picked.extend([*known.index, *unknown.index])
    cases = train.loc[picked]
    assert len(cases) == N_PROMPTS and cases["dataset"].nunique() == 3
    return dataclasses.replace(dataset, cases=cases)


@pytest.fixture(scope="module")
def train_data(fair_dataset):
    return grpo_dataset(fair_dataset)


def settings(tmp_path, name, **overrides) -> dict:
    """The test settings: one generation batch of 8 prompts x G = 4 per step, 2 steps, fp32 on CPU."""
    values = dict(
        output_dir=str(tmp_path / f"run-{name}"), per_device_train_batch_size=N_PROMPTS * G, num_generations=G,
        max_completion_length=24, max_steps=2, beta=0.0, bf16=False, use_cpu=True, report_to="none",
        logging_steps=1, save_strategy="no", gradient_checkpointing=False, learning_rate=1e-3, seed=0,
    )
    values.update(overrides)
    return values


def config(tmp_path, method="fairgrpo", **overrides) -> FairGRPOConfig:
    return FairGRPOConfig(method=method, **settings(tmp_path, method, **overrides))


def trainer_for(model_dir, data, args, **kwargs) -> FairGRPOTrainer:
    loaded = load_model(model_dir)
    return FairGRPOTrainer(model=loaded.model, args=args, train_dataset=data, processing_class=loaded.processor,
                           **kwargs)


def staircase_reward(completions, case_id, **kwargs):
    """A reward that does not depend on the model: rollout j of a prompt scores 1 when j < 1 + crc(case) % 3, so
    every prompt has 1 to 3 successes out of 4 (no zero-std prompt) and the cases differ in mean reward."""
    rewards = []
    for index, case in enumerate(case_id):
        successes = 1 + zlib.crc32(str(case).encode()) % (G - 1)
        rewards.append(1.0 if index % G < successes else 0.0)
    return rewards


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


# ------------------------------------------------------------------------------------------------------------
# Rewards
# ------------------------------------------------------------------------------------------------------------


def test_accuracy_reward_on_hand_made_completions():
    completions = [
        GOOD_YES,  # right
        GOOD_NO,  # wrong
        "<think> x </think> \\boxed{\\text{Yes}}.",  # right after normalising
        "no box at all: yes",  # malformed
        "<think> x </think> \\boxed{}",  # empty box
        "<think> x </think> \\boxed{yes",  # unclosed box
        [{"role": "assistant", "content": GOOD_YES}],  # conversational, string content
        [{"role": "assistant", "content": [{"type": "text", "text": GOOD_NO}]}],  # content blocks
        [{"role": "assistant", "content": [{"type": "image"}]}],  # no text
        None,  # not a completion
        "\\boxed{maybe}",  # outside the choices
        "\\boxed{no} and later \\boxed{yes}",  # the last box counts
    ]
    answers = ["yes", "yes", "yes", "yes", "yes", "yes", "Yes", "no", "no", "no", "maybe", "yes"]
    choices = [["no", "yes"]] * len(completions)
    expected = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert accuracy_reward(completions, answers, choices=choices, demo=[""] * 12, dataset=["d"] * 12) == expected
    # Without choices an off-label answer that matches counts (nothing restricts it).
    assert accuracy_reward(["\\boxed{maybe}"], ["maybe"]) == [1.0]
    assert accuracy_reward([GOOD_YES, GOOD_YES], [None, ""]) == [0.0, 0.0]  # a case without an answer scores 0


def test_format_reward_needs_think_tags_and_a_box_in_the_label_set():
    completions = [GOOD_YES, "\\boxed{yes}", "<think> x </think> yes", "<think> x </think> \\boxed{maybe}",
                   [{"role": "assistant", "content": GOOD_NO}], 42]
    assert format_reward(completions, choices=[["no", "yes"]] * 6) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert completion_text([{"role": "user", "content": "q"}]) is None


def test_prompt_group_key_reads_columns_then_demo():
    assert prompt_group_key({"demo": "sex: Female, age: 68"}) == "F,A3"
    assert prompt_group_key({"demo": "", "sex": "M", "age_group": "A1"}) == "M,A1"
    assert prompt_group_key({"demo": "sex: Female", "sex": "UNK", "age_group": None}) == "F,UNK"
    assert prompt_group_key({"demo": None}) == UNKNOWN
    assert prompt_group_key({"demo": "skin tone: dark"}, ("skin_tone",)) == "dark"


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------


def test_grpo_dataset_builds_conversational_image_prompts(fair_dataset, train_data):
    from PIL import Image

    assert len(train_data) == N_PROMPTS
    for name in ("prompt", "images", "answer", "choices", "demo", "dataset", "case_id", "sex", "age_group"):
        assert name in train_data.column_names
    cases = fair_dataset.cases
    assert list(train_data["case_id"]) == list(cases["case_id"])
    assert list(train_data["answer"]) == list(cases["answer"])
    assert list(train_data["demo"]) == [d or "" for d in cases["demo"]]
    assert list(train_data["dataset"]) == list(cases["dataset"])
    row = train_data[0]
    (turn,) = row["prompt"]
    assert turn["role"] == "user"
    assert [item["type"] for item in turn["content"]] == ["image", "text"]
    assert turn["content"][1]["text"].endswith(FORMAT_INSTRUCTION)
    assert "<image>" not in turn["content"][1]["text"]
    (image,) = row["images"]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert row["choices"] == ["no", "yes"]
    assert len(grpo_dataset(fair_dataset, split="train", limit=3)) == 3
    with pytest.raises(FairMedInputError, match="no 'test' cases"):
        grpo_dataset(fair_dataset, split="test")


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------


def test_grpo_method_is_trls_grpo_and_its_loss_is_finite(model_dir, train_data, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    ours = trainer_for(model_dir, train_data, config(tmp_path, "grpo"))
    ours.train()
    losses = logged(ours, "loss")
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert ours.fairgrpo_last_batch is not None
    assert torch.equal(ours.fairgrpo_last_batch.advantages, ours.fairgrpo_last_batch.grpo_advantages)

    # Plain TRL with the same settings and the same suppressed tokens: the same batches, rewards and losses.
    loaded = load_model(model_dir)
    suppress = list(ours.generation_config.suppress_tokens)
    assert set(_suppressed_token_ids(loaded.processor.tokenizer)) <= set(suppress)
    plain_args = GRPOConfig(**settings(tmp_path, "plain"), generation_kwargs={"suppress_tokens": suppress})
    plain = GRPOTrainer(model=loaded.model, reward_funcs=accuracy_reward, args=plain_args, train_dataset=train_data,
                        processing_class=loaded.processor)
    plain.train()
    assert logged(plain, "loss") == pytest.approx(losses, rel=1e-6, abs=1e-7)
    assert logged(plain, "reward") == logged(ours, "reward")
    assert list(plain._logs["advantages"]) == pytest.approx(list(ours._logs["advantages"]), abs=1e-6)


def test_fairgrpo_replaces_advantages_exactly_as_fairgrpo_advantages_says(model_dir, train_data, tmp_path,
                                                                          monkeypatch):
    calls = []
    original = fairgrpo_weights.fairgrpo_advantages

    def recording(rewards, domains, groups, statistics, weighting):
        before = copy.deepcopy(statistics)
        result = original(rewards, domains, groups, statistics, weighting)
        calls.append((torch.as_tensor(rewards).clone(), tuple(domains), tuple(groups), before, weighting,
                      (torch.as_tensor(result[0]), result[1])))
        return result

    monkeypatch.setattr(methods_module, "fairgrpo_advantages", recording)
    trainer = trainer_for(model_dir, train_data, config(tmp_path, "fairgrpo"), reward_funcs=[staircase_reward])
    batches = []
    score = trainer._generate_and_score_completions

    def keep(inputs):
        output = score(inputs)
        batches.append((trainer.fairgrpo_last_batch, output["advantages"].clone()))
        return output

    monkeypatch.setattr(trainer, "_generate_and_score_completions", keep)
    trainer.train()
    assert len(calls) == len(batches) == 2
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))

    for (rewards, domains, groups, before, weighting, (advantages, info)), (batch, used) in zip(calls, batches):
        assert rewards.shape == (N_PROMPTS, G)
        assert sorted(Counter(domains).values()) == [2, 3, 3]  # every prompt once, with its own domain
        assert UNKNOWN in groups and any(g != UNKNOWN for g in groups)
        # The trainer used exactly what the pure function returns for this batch and these statistics.
        replay, replay_info = original(rewards, domains, groups, copy.deepcopy(before), weighting)
        assert torch.equal(replay, advantages)
        assert torch.equal(used, advantages.reshape(-1).to(used.dtype))
        assert torch.equal(batch.advantages, used)
        # ... and it differs from TRL's GRPO advantages of the same batch by the prompt weight over the batch std
        # (TRL divides by std + 1e-4, FairGRPO by std + 1e-6).
        std = rewards.double().std(dim=1, keepdim=True)
        grpo = batch.grpo_advantages.view(N_PROMPTS, G).double()
        weights = torch.as_tensor(info.prompt_weights, dtype=torch.float64)[:, None]
        expected = grpo * (std + 1e-4) / (std + 1e-6) * weights / (info.batch_std + 1e-6)
        torch.testing.assert_close(advantages.double(), expected, rtol=1e-5, atol=1e-6)
        assert len(set(info.prompt_weights.round(6).tolist())) > 1  # not one common factor
        assert not torch.allclose(advantages.double() / advantages.double().abs().max(),
                                  grpo / grpo.abs().max(), atol=1e-3)
        assert [g.weight for g in info.groups] == [g.weight for g in replay_info.groups]

    stats = trainer.fairgrpo_statistics
    assert stats.steps == 2 and sum(t.prompts for t in stats.domains.values()) == 2 * N_PROMPTS
    # The weights per group are logged under fairgrpo/weight/<domain>/<group>.
    last_info = calls[-1][-1][1]
    for record in last_info.groups:
        assert logged(trainer, f"fairgrpo/weight/{record.domain}/{record.group}")[-1] == pytest.approx(record.weight)
    assert any(key.startswith("group_reward/") for key in trainer.state.log_history[-2])
    # Where the signal went, per domain: the share of |advantage| actually used and the zero-variance prompts.
    batch = batches[-1][0]
    per_prompt = batch.advantages.view(N_PROMPTS, G).double().abs().sum(dim=1)
    shares = []
    for domain in sorted(set(batch.domains)):
        rows = [i for i, d in enumerate(batch.domains) if d == domain]
        share = logged(trainer, f"advantage_share/{domain}")[-1]
        assert share == pytest.approx(float(per_prompt[rows].sum() / per_prompt.sum()))
        flat = [bool((batch.rewards[i] == batch.rewards[i, 0]).all()) for i in rows]
        assert logged(trainer, f"domain_zero_std/{domain}")[-1] == pytest.approx(sum(flat) / len(rows))
        shares.append(share)
    assert sum(shares) == pytest.approx(1.0)


def test_fairgrpo_statistics_are_saved_with_the_checkpoint_and_restored_on_resume(model_dir, train_data, tmp_path):
    args = config(tmp_path, "fairgrpo", save_strategy="steps", save_steps=2)
    first = trainer_for(model_dir, train_data, args)
    first.train()
    saved = tmp_path / "run-fairgrpo" / "checkpoint-2" / STATISTICS_FILE
    assert saved.is_file()
    assert json.loads(saved.read_text()) == first.fairgrpo_statistics.to_dict()
    assert first.fairgrpo_statistics.steps == 2

    resumed = trainer_for(model_dir, train_data, config(tmp_path, "fairgrpo", save_strategy="no", max_steps=3))
    assert resumed.fairgrpo_statistics.steps == 0
    resumed.train(resume_from_checkpoint=str(saved.parent))
    stats = resumed.fairgrpo_statistics
    assert stats.steps == 3  # 2 restored + 1 new; without the restore it would be 1
    assert sum(t.prompts for t in stats.domains.values()) == 3 * N_PROMPTS
    before = first.fairgrpo_statistics
    for key, tally in before.groups.items():
        assert stats.groups[key].prompts >= tally.prompts


def test_fairgrpo_without_demographics_clusters_every_prompt(model_dir, train_data, tmp_path):
    trainer = trainer_for(model_dir, train_data, config(tmp_path, "fairgrpo_nd", max_steps=1),
                          reward_funcs=[staircase_reward])
    trainer.train()
    info = trainer.fairgrpo_last_batch.info
    assert all(group.startswith("cluster-") for group in info.prompt_groups)
    assert all(record.latent for record in info.groups)


def test_group_dro_multiplies_grpo_advantages_by_the_group_weights(model_dir, train_data, tmp_path):
    args = config(tmp_path, "grpo_dro", dro_step_size=0.5, save_strategy="steps", save_steps=2)
    trainer = trainer_for(model_dir, train_data, args, reward_funcs=[staircase_reward])
    trainer.train()
    batch = trainer.fairgrpo_last_batch
    keys = list(zip(batch.domains, batch.groups))
    per_prompt = torch.tensor([batch.dro_multipliers[k] for k in keys], dtype=torch.float64)
    assert float(per_prompt.mean()) == pytest.approx(1.0)
    expected = batch.grpo_advantages.double() * per_prompt.repeat_interleave(G)
    torch.testing.assert_close(batch.advantages.double(), expected, rtol=1e-6, atol=1e-7)
    # Harder groups (lower mean reward) gained weight.
    log_weights = trainer.group_dro_log_weights
    means = {k: float(batch.rewards[[i for i, key in enumerate(keys) if key == k]].mean()) for k in set(keys)}
    easiest, hardest = max(means, key=means.get), min(means, key=means.get)
    if means[easiest] > means[hardest]:
        assert log_weights[hardest] > log_weights[easiest]
    saved = json.loads((tmp_path / "run-grpo_dro" / "checkpoint-2" / trainer_module.DRO_WEIGHTS_FILE).read_text())
    assert len(saved["log_weights"]) == len(log_weights)
    assert any(key.startswith("grpo_dro/weight/") for key in trainer.state.log_history[-2])


def test_group_resampling_gives_each_group_an_equal_expected_share():
    keys = ["a"] * 90 + ["b"] * 9 + ["c"] * 1
    sampler = GroupBalancedRepeatSampler(list(range(100)), keys, mini_repeat_count=G, batch_size=10, seed=0)
    drawn = []
    for _ in range(60):
        drawn.extend(list(sampler))
    assert all(len(set(drawn[i:i + G])) == 1 for i in range(0, len(drawn), G))  # rollouts stay together
    share = Counter(keys[index] for index in drawn[::G])
    total = sum(share.values())
    for key in "abc":
        assert share[key] / total == pytest.approx(1 / 3, abs=0.03)


def test_group_resampling_trains(model_dir, train_data, tmp_path):
    trainer = trainer_for(model_dir, train_data, config(tmp_path, "grpo_resample", max_steps=1))
    assert isinstance(trainer._get_train_sampler(), GroupBalancedRepeatSampler)
    trainer.train()
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))


def test_rloo_trains_with_the_authors_leave_one_out_advantages(model_dir, train_data, tmp_path):
    # No data source needed: RLOO uses none (the per-source logs are then left out).
    trainer = trainer_for(model_dir, train_data.remove_columns("dataset"), config(tmp_path, "rloo", max_steps=1),
                          reward_funcs=[staircase_reward])
    trainer.train()
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))
    batch = trainer.fairgrpo_last_batch
    rewards = batch.rewards.double()
    # The authors' formula, element by element: r_i * G / (G - 1) - mean * G / (G - 1).
    expected = rewards * G / (G - 1) - rewards.mean(dim=1, keepdim=True) * G / (G - 1)
    torch.testing.assert_close(batch.advantages.double(), expected.reshape(-1), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(batch.advantages, batch.grpo_advantages, atol=1e-3)  # not GRPO's std scaling
    assert batch.domains is None and list(trainer._logs["advantages"])[-N_PROMPTS * G:] == pytest.approx(
        batch.advantages.tolist())


def test_class_weights_make_each_answer_of_a_source_weigh_the_same():
    answers = ["yes"] * 1 + ["no"] * 3 + ["yes"] * 2 + ["no"] * 2
    sources = ["a"] * 4 + ["b"] * 4
    weights = class_weights(answers, sources)
    assert weights == {("a", "yes"): 2.0, ("a", "no"): pytest.approx(2 / 3), ("b", "yes"): 1.0, ("b", "no"): 1.0}
    for source in ("a", "b"):  # the weights average 1 over the source's cases, and each answer's total is equal
        per_case = [weights[(src, answer)] for answer, src in zip(answers, sources) if src == source]
        assert sum(per_case) / len(per_case) == pytest.approx(1.0)
        totals = Counter()
        for answer, src in zip(answers, sources):
            if src == source:
                totals[answer] += weights[(src, answer)]
        assert totals["yes"] == pytest.approx(totals["no"])


def test_class_balanced_reward_weighs_right_answers_only():
    reward = ClassBalancedAccuracyReward({("a", "yes"): 2.0, ("a", "no"): 0.5})
    completions = ["<think> x </think> \\boxed{yes}", "<think> x </think> \\boxed{no}",
                   "<think> x </think> \\boxed{no}", "<think> x </think> \\boxed{yes}", "garbage"]
    answers = ["yes", "yes", "no", "no", "yes"]
    assert reward(completions, answers, dataset=["a"] * 5) == [2.0, 0.0, 0.5, 0.0, 0.0]
    assert reward(completions, answers, dataset=["a"] * 5) == [
        a * w for a, w in zip(accuracy_reward(completions, answers), [2.0, 2.0, 0.5, 0.5, 2.0])]


def test_class_balanced_reward_is_refused_where_the_prompt_spread_would_divide_it_away(tmp_path):
    with pytest.raises(FairMedInputError, match="scale_rewards"):
        config(tmp_path, "grpo", reward="class_balanced")
    with pytest.raises(FairMedInputError, match="within_prompt_scale"):
        config(tmp_path, "fairgrpo", reward="class_balanced")
    with pytest.raises(FairMedInputError, match="within_prompt_scale"):
        GRPOJobConfig(method="fairgrpo", reward="class_balanced")
    config(tmp_path, "grpo", reward="class_balanced", scale_rewards="none")
    config(tmp_path, "rloo", reward="class_balanced")  # RLOO never divides by the prompt's spread
    config(tmp_path, "fairgrpo", reward="class_balanced", within_prompt_scale=False)
    # The job sets TRL's reward scaling off itself: GRPO has no other way to keep the weight.
    assert GRPOJobConfig(method="grpo", reward="class_balanced").trainer_options()["scale_rewards"] == "none"
    assert GRPOJobConfig(method="grpo").trainer_options()["scale_rewards"] == "group"
    with pytest.raises(FairMedInputError, match="unknown reward"):
        GRPOJobConfig(method="grpo", reward="f1")


def test_grpo_with_the_class_balanced_reward_centres_the_weighted_rewards(model_dir, train_data, tmp_path):
    trainer = trainer_for(model_dir, train_data,
                          config(tmp_path, "grpo", reward="class_balanced", scale_rewards="none", max_steps=1))
    trainer.train()
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))
    batch = trainer.fairgrpo_last_batch
    weights = class_weights(_column_of(train_data, "answer"), _column_of(train_data, "dataset"))
    allowed = {0.0, *(round(w, 6) for w in weights.values())}
    assert {round(float(r), 6) for r in batch.rewards.reshape(-1)} <= allowed
    assert max(weights.values()) > 1.0 > min(weights.values())  # the benchmark's answers are not balanced
    # GRPO's advantages, centred within each prompt and not scaled: the weighted reward minus the prompt's mean.
    expected = batch.rewards.double() - batch.rewards.double().mean(dim=1, keepdim=True)
    torch.testing.assert_close(batch.advantages.double(), expected.reshape(-1), rtol=1e-5, atol=1e-5)


def _column_of(data, name):
    return list(data[name])


def test_reinforce_plus_plus_trains_with_batch_whitened_rewards(model_dir, train_data, tmp_path):
    trainer = trainer_for(model_dir, train_data, config(tmp_path, "reinforce_plus_plus", max_steps=1))
    trainer.train()
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))
    batch = trainer.fairgrpo_last_batch
    rewards, lengths = batch.rewards.double().reshape(-1), batch.completion_lengths.double().reshape(-1)
    assert lengths.min() >= 1 and lengths.max() <= 24
    # Whitened over every completion token of the batch (verl's masked_whiten), one value per completion.
    tokens = torch.repeat_interleave(rewards, lengths.long())
    expected = (rewards - tokens.mean()) / torch.sqrt(tokens.var(unbiased=True) + 1e-8)
    torch.testing.assert_close(batch.advantages.double(), expected, rtol=1e-5, atol=1e-5)
    assert logged(trainer, "advantage_share/synth_cxr")  # with sources, the per-source logs are kept


def test_reference_grpo_loss_equals_trls(model_dir, train_data, tmp_path):
    """TRL 1.16's default loss ('dapo'): the token-level clipped surrogate summed over the completion tokens of
    the batch and divided by the number of completion tokens of the generation batch (per process, per
    accumulation step). Written out here so a TRL upgrade that changes the objective fails this test."""
    trainer = trainer_for(model_dir, train_data, config(tmp_path, "fairgrpo", max_steps=1),
                          reward_funcs=[staircase_reward])
    trainer.train()
    assert trainer.loss_type == "dapo", "TRL's default GRPO loss changed: update this reference"
    assert trainer.beta == 0.0 and trainer.epsilon_low == trainer.epsilon_high == pytest.approx(0.2)
    inputs = dict(trainer._buffered_inputs[0])
    model = trainer.model
    model.train()

    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    mask = inputs["completion_mask"].double()
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=inputs["pixel_values"],
                       token_type_ids=inputs["token_type_ids"]).logits
    width = completion_ids.shape[1]
    logits = logits[:, -width - 1:-1, :].double() / trainer.temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)

    # TRL's own log-probabilities (fused LM head, token_type_ids passed) agree with a plain forward.
    with torch.no_grad():
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, width, pixel_values=inputs["pixel_values"],
            token_type_ids=inputs["token_type_ids"], num_images=inputs.get("num_images"))
    torch.testing.assert_close(trl_logps.double() * mask, logps * mask, rtol=1e-4, atol=1e-4)

    # Old log-probs off the current ones, so that the ratio is clipped on both sides.
    offsets = 0.4 * torch.sin(torch.arange(logps.numel(), dtype=torch.float64)).view_as(logps)
    old = logps + offsets
    inputs["old_per_token_logps"] = old.float()
    advantages = inputs["advantages"].double().unsqueeze(1)
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - 0.2, 1 + 0.2)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    normalizer = float(inputs["num_items_in_batch"]) / trainer.accelerator.num_processes
    normalizer *= trainer.current_gradient_accumulation_steps / trainer.args.steps_per_generation
    reference = float((per_token * mask).sum() / normalizer)
    assert bool(((ratio > 1.2) & (advantages > 0) & (mask > 0)).any())
    assert bool(((ratio < 0.8) & (advantages < 0) & (mask > 0)).any())

    with torch.no_grad():
        loss = trainer.compute_loss(model, inputs)
    assert float(loss) == pytest.approx(reference, rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Errors before training starts
# ------------------------------------------------------------------------------------------------------------


def test_a_row_without_a_data_source_is_refused(model_dir, train_data, tmp_path):
    blank = train_data.map(lambda row, i: {"dataset": "" if i == 3 else row["dataset"]}, with_indices=True)
    with pytest.raises(FairMedInputError, match="row 3 has no 'dataset' value"):
        trainer_for(model_dir, blank, config(tmp_path, "fairgrpo"))
    with pytest.raises(FairMedInputError, match="'dataset' column"):
        trainer_for(model_dir, train_data.remove_columns("dataset"), config(tmp_path, "fairgrpo_nd"))
    trainer_for(model_dir, train_data.remove_columns("dataset"), config(tmp_path, "grpo"))  # GRPO needs none


def test_one_domain_is_fine_and_only_logged(model_dir, train_data, tmp_path, caplog):
    single = train_data.map(lambda row: {"dataset": "only"})
    with caplog.at_level("INFO", logger=trainer_module.__name__):
        trainer = trainer_for(model_dir, single, config(tmp_path, "fairgrpo"))
    assert trainer.fairgrpo_summary.domains == {"only": N_PROMPTS}
    assert "one domain" in caplog.text


def test_fairgrpo_without_any_demographics_points_to_the_nd_variant(model_dir, train_data, tmp_path):
    anonymous = train_data.map(lambda row: {"demo": "", "sex": UNKNOWN, "age_group": UNKNOWN})
    with pytest.raises(FairMedInputError, match="fairgrpo_nd"):
        trainer_for(model_dir, anonymous, config(tmp_path, "fairgrpo"))
    with pytest.raises(FairMedInputError, match="no training case has demographics"):
        trainer_for(model_dir, anonymous, config(tmp_path, "grpo_dro"))
    trainer = trainer_for(model_dir, anonymous, config(tmp_path, "fairgrpo_nd"))
    assert set(group for _, group in trainer.fairgrpo_summary.groups) == {UNKNOWN}


def test_answers_outside_the_label_set_are_refused(model_dir, fair_dataset, train_data, tmp_path):
    with pytest.raises(FairMedInputError, match="not one of the labels"):
        grpo_dataset(fair_dataset, label_values=("yes",))
    odd = train_data.map(lambda row, i: {"answer": "maybe" if i == 5 else row["answer"]}, with_indices=True)
    with pytest.raises(FairMedInputError, match=r"row 5.*'maybe' is not one of the labels"):
        trainer_for(model_dir, odd, config(tmp_path, "grpo"))  # the row's choices
    odd = odd.remove_columns("choices")
    trainer_for(model_dir, odd, config(tmp_path, "grpo"))  # no label set known: any answer
    with pytest.raises(FairMedInputError, match="'maybe' is not one of the labels"):
        trainer_for(model_dir, odd, config(tmp_path, "grpo", label_values=["yes", "no"]))
    missing = train_data.map(lambda row, i: {"answer": "" if i == 0 else row["answer"]}, with_indices=True)
    with pytest.raises(FairMedInputError, match="row 0 has no answer"):
        trainer_for(model_dir, missing, config(tmp_path, "fairgrpo"))


def test_num_generations_must_divide_the_generation_batch(tmp_path):
    with pytest.raises(FairMedInputError, match="num_generations") as caught:
        config(tmp_path, per_device_train_batch_size=6, num_generations=4)
    assert isinstance(caught.value, ValueError)  # still a ValueError for TRL-minded callers
    with pytest.raises(FairMedInputError, match="num_generations"):
        config(tmp_path, generation_batch_size=10, num_generations=4, per_device_train_batch_size=2)
    with pytest.raises(FairMedInputError, match="unknown method"):
        config(tmp_path, method="fair")
    with pytest.raises(FairMedInputError, match="rescale"):
        config(tmp_path, rescale="sometimes")
    with pytest.raises(FairMedInputError, match="format_reward_weight"):
        config(tmp_path, format_reward_weight=-1.0)


def test_kl_with_an_in_memory_model_asks_for_a_saved_folder(model_dir, train_data, tmp_path):
    loaded = load_model(model_dir)
    loaded.model.config._name_or_path = "somewhere/on-the-hub"
    with pytest.raises(FairMedInputError, match="save_pretrained"):
        FairGRPOTrainer(model=loaded.model, args=config(tmp_path, beta=0.04), train_dataset=train_data,
                        processing_class=loaded.processor)


def test_group_dro_with_the_class_balanced_reward_divides_by_what_each_prompt_could_earn(model_dir, train_data,
                                                                                        tmp_path):
    args = config(tmp_path, "grpo_dro", reward="class_balanced", scale_rewards="none", dro_step_size=0.5,
                  max_steps=1)
    trainer = trainer_for(model_dir, train_data, args)
    trainer.train()
    batch = trainer.fairgrpo_last_batch
    weights = class_weights(_column_of(train_data, "answer"), _column_of(train_data, "dataset"))
    assert batch.attainable is not None and set(np.round(batch.attainable, 6)) <= {round(w, 6) for w in
                                                                                   weights.values()}
    # A right rollout earns its prompt's attainable reward, a wrong one 0.
    for row, attainable in zip(batch.rewards.double().numpy(), batch.attainable):
        assert set(np.round(row, 6)) <= {0.0, round(float(attainable), 6)}
    # One step from zero: each group's log-weight is step size x its class-weighted error.
    keys = list(zip(batch.domains, batch.groups))
    means = batch.rewards.double().numpy().mean(axis=1)
    for key, value in trainer.group_dro_log_weights.items():
        rows = [i for i, k in enumerate(keys) if k == key]
        error = 1.0 - means[rows].sum() / batch.attainable[rows].sum()
        assert 0.0 <= error <= 1.0
        assert value == pytest.approx(0.5 * error)
    # Right/wrong rewards: no attainable rewards to gather.
    plain = trainer_for(model_dir, train_data, config(tmp_path / "plain", "grpo_dro", max_steps=1))
    plain.train()
    assert plain.fairgrpo_last_batch.attainable is None
