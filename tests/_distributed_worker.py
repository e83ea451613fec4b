"""One rank of a multi-process FairGRPO run, for ``tests/test_fairgrpo_distributed.py``.

Launched by the test as ``accelerate launch --multi_gpu --num_processes 2 tests/_distributed_worker.py ...`` on a
CPU-only machine (accelerate hands the launch to ``torch.distributed.run``; ``use_cpu=True`` makes every rank
join a gloo process group). Each rank trains FairGRPO for a few steps on a tiny slice of the benchmark with a
reward that does not depend on the model, and writes into ``--out``:

    rank-<r>.json   per step: the case ids of this rank's prompts, the gathered reward matrix, domains and groups,
                    FairGRPO's prompt weights, group weights and batch std, this rank's advantages, and the
                    statistics after the step; the world size, this rank's index and the FairGRPO settings
    rank-<r>.pt     the flattened parameters before and after training (name order)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from fairmed_core.data import read_manifest  # noqa: E402
from fairmed_core.data.schema import UNKNOWN  # noqa: E402
from fairmed_core.models.loading import load_model  # noqa: E402
from fairmed_core.training.fairgrpo_trainer import FairGRPOConfig, FairGRPOTrainer, grpo_dataset  # noqa: E402

G = 4
PROMPTS_PER_RANK = 2
SOURCES = (("synth_cxr", 3), ("synth_derm", 3), ("synth_mammo", 2))  # 8 prompts, each source with one UNK case


def staircase_reward(completions, case_id, **kwargs):
    """Rollout j of a prompt scores 1 when j < 1 + crc(case) % 3: 1 to 3 successes out of G = 4 for every prompt
    (no zero-std prompt, so every step has a gradient), known to the test without the model."""
    rewards = []
    for index, case in enumerate(case_id):
        successes = 1 + zlib.crc32(str(case).encode()) % (G - 1)
        rewards.append(1.0 if index % G < successes else 0.0)
    return rewards


def training_cases(manifest: str):
    """Eight train cases from three sources, each source with known demographics and one fully unknown case."""
    dataset = read_manifest(manifest)
    train = dataset.cases[dataset.cases["split"] == "train"]
    picked = []
    for source, count in SOURCES:
        rows = train[train["dataset"] == source]
        known = rows[rows["sex"] != UNKNOWN].head(count - 1)
        unknown = rows[(rows["sex"] == UNKNOWN) & (rows["age_group"] == UNKNOWN)].head(1)
        picked.extend([*known.index, *unknown.index])
    return dataclasses.replace(dataset, cases=train.loc[picked])


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for _, p in sorted(model.named_parameters())])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-completion-length", type=int, default=16)
    options = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(options.out)

    train_data = grpo_dataset(training_cases(options.manifest))
    args = FairGRPOConfig(
        method="fairgrpo", output_dir=str(out / "trainer"), per_device_train_batch_size=PROMPTS_PER_RANK * G,
        num_generations=G, max_completion_length=options.max_completion_length, max_steps=options.steps,
        beta=0.0, bf16=False, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
        gradient_checkpointing=False, learning_rate=1e-3, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    loaded = load_model(options.model, device="cpu")
    trainer = FairGRPOTrainer(model=loaded.model, args=args, train_dataset=train_data,
                              processing_class=loaded.processor, reward_funcs=[staircase_reward])
    rank = trainer.accelerator.process_index
    before = flat_parameters(trainer.model)

    steps = []
    score = trainer._generate_and_score_completions

    def recording(inputs):
        output = score(inputs)
        batch = trainer.fairgrpo_last_batch
        info = batch.info
        steps.append({
            "local_case_ids": [row["case_id"] for row in inputs[::G]],
            "local_completions": len(inputs),
            "rewards": batch.rewards.tolist(),
            "domains": list(batch.domains),
            "groups": list(batch.groups),
            "prompt_weights": [float(w) for w in info.prompt_weights],
            "group_weights": {f"{g.domain}/{g.group}": g.weight for g in info.groups},
            "batch_std": info.batch_std,
            "advantages": batch.advantages.double().tolist(),
            "statistics": trainer.fairgrpo_statistics.to_dict(),
        })
        return output

    trainer._generate_and_score_completions = recording
    trainer.train()
    after = flat_parameters(trainer.model)

    torch.save({"before": before, "after": after}, out / f"rank-{rank}.pt")
    record = {"rank": rank, "world_size": trainer.accelerator.num_processes,
              "distributed_type": str(trainer.accelerator.distributed_type),
              "backend": trainer.accelerator.state.backend, "global_step": trainer.state.global_step,
              "weighting": dataclasses.asdict(trainer._options.weighting), "steps": steps}
    (out / f"rank-{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main()
