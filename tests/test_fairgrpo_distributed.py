"""FairGRPO in two processes (``accelerate launch``, gloo on CPU): both ranks end with the same model, both compute
the same FairGRPO weights every step from statistics gathered over both ranks' prompts, and training moved the
weights.

``tests/_distributed_worker.py`` trains FairGRPO for 3 steps on 8 benchmark cases from three sources (2 prompts
per rank per step, G = 4) with a reward that does not depend on the model: rollout j of a case scores 1 when
``j < 1 + crc32(case_id) % 3``. The test knows every reward from the case ids alone, so the gathered rewards and
statistics are checked against a hand computation, not only between ranks.

On a CPU-only machine ``accelerate launch --cpu --num_processes 2`` starts ONE process (accelerate's multi-CPU
path goes through mpirun, which needs ``--mpirun_hostfile`` and an MPI install); ``--multi_gpu`` hands the launch
to ``torch.distributed.run`` and ``use_cpu=True`` makes each rank join a gloo group, on machines with or
without GPUs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import zlib
from dataclasses import dataclass

import pytest
import torch

from fairmed_core.data import read_manifest
from fairmed_core.training.fairgrpo_trainer import prompt_group_key
from fairmed_core.training.fairgrpo_weights import FairGRPOStatistics, FairGRPOWeighting, fairgrpo_advantages
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

WORKER = REPO_ROOT / "tests" / "_distributed_worker.py"
PROCESSES = 2
STEPS = 3
G = 4
PROMPTS_PER_RANK = 2


@dataclass(frozen=True)
class Rank:
    record: dict
    before: torch.Tensor
    after: torch.Tensor


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(worker_args: list[str]) -> list[str]:
    """The launch the README gives, with a free rendezvous port (other runs may hold accelerate's 29500)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(PROCESSES),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), str(WORKER), *worker_args]


@pytest.fixture(scope="module")
def ranks(tiny_model_dir, default_manifest, tmp_path_factory) -> list[Rank]:
    out = tmp_path_factory.mktemp("fairgrpo-distributed")
    command = launch_command(["--model", str(tiny_model_dir), "--manifest", str(default_manifest), "--out", str(out),
                              "--steps", str(STEPS)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    # A session of its own, so that a hung rendezvous or collective takes the launcher's workers down with it.
    launcher = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        stdout, stderr = launcher.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"the two-process run did not finish in 420 s:\n{stderr[-6000:]}")
    assert launcher.returncode == 0, f"launch failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    loaded = []
    for rank in range(PROCESSES):
        params = torch.load(out / f"rank-{rank}.pt")
        loaded.append(Rank(json.loads((out / f"rank-{rank}.json").read_text()), params["before"], params["after"]))
    return loaded


@pytest.fixture(scope="module")
def cases(default_manifest):
    """Manifest rows by case id (the oracle's source of each prompt's domain and group)."""
    frame = read_manifest(default_manifest).cases
    return {row["case_id"]: row for row in frame.to_dict("records")}


def expected_rewards(case_ids) -> list[list[float]]:
    """The worker's reward, written out: 1 + crc32(case) % 3 successes among a prompt's G rollouts, first."""
    rows = []
    for case in case_ids:
        successes = 1 + zlib.crc32(str(case).encode()) % (G - 1)
        rows.append([1.0 if j < successes else 0.0 for j in range(G)])
    return rows


def gathered_case_ids(ranks, step) -> list[str]:
    """The prompts of one step in TRL's gather order: rank 0's, then rank 1's."""
    return [case for rank in ranks for case in rank.record["steps"][step]["local_case_ids"]]


def test_accelerate_launch_starts_two_gloo_processes_that_each_train_every_step(ranks):
    assert [rank.record["rank"] for rank in ranks] == list(range(PROCESSES))
    for rank in ranks:
        record = rank.record
        assert record["world_size"] == PROCESSES
        assert record["distributed_type"] == "DistributedType.MULTI_CPU" and record["backend"] == "gloo"
        assert record["global_step"] == STEPS and len(record["steps"]) == STEPS
        for step in record["steps"]:
            assert len(step["local_case_ids"]) == PROMPTS_PER_RANK
            assert step["local_completions"] == len(step["advantages"]) == PROMPTS_PER_RANK * G


def test_both_ranks_end_with_identical_weights_that_training_changed(ranks):
    first, second = ranks
    assert torch.equal(first.before, second.before)
    assert torch.equal(first.after, second.after)  # bit for bit, not within a tolerance
    moved = (first.after - first.before).abs()
    assert float(moved.max()) > 0.0 and int((moved > 0).sum()) > 1000


def test_the_gathered_batch_holds_both_ranks_prompts_and_the_statistics_count_them(ranks, cases):
    for step in range(STEPS):
        local = [rank.record["steps"][step]["local_case_ids"] for rank in ranks]
        assert not set(local[0]) & set(local[1])  # each rank generated for prompts of its own
        every = gathered_case_ids(ranks, step)
        for rank in ranks:
            seen = rank.record["steps"][step]
            assert seen["rewards"] == expected_rewards(every)  # rank 0's rows, then rank 1's
            assert seen["domains"] == [cases[c]["dataset"] for c in every]
            assert seen["groups"] == [prompt_group_key(cases[c]) for c in every]
            statistics = seen["statistics"]
            assert statistics["steps"] == step + 1
            # Global, not per rank: PROCESSES x PROMPTS_PER_RANK prompts counted at each step so far.
            assert sum(statistics["domains"]["prompts"]) == (step + 1) * PROCESSES * PROMPTS_PER_RANK
            assert sum(statistics["domains"]["rollouts"]) == (step + 1) * PROCESSES * PROMPTS_PER_RANK * G
            assert sum(statistics["domains"]["reward_sums"]) == sum(
                sum(sum(row) for row in expected_rewards(gathered_case_ids(ranks, s))) for s in range(step + 1))


def test_both_ranks_compute_identical_fairgrpo_weights_every_step(ranks):
    first, second = ranks
    for mine, theirs in zip(first.record["steps"], second.record["steps"], strict=True):
        for key in ("rewards", "domains", "groups", "prompt_weights", "group_weights", "batch_std", "statistics"):
            assert mine[key] == theirs[key], key
        assert len(set(round(w, 6) for w in mine["prompt_weights"])) > 1  # not one common factor


def test_every_rank_uses_its_slice_of_what_fairgrpo_advantages_gives_for_the_gathered_batch(ranks):
    weighting = FairGRPOWeighting(**ranks[0].record["weighting"])
    statistics = FairGRPOStatistics()
    for step in range(STEPS):
        seen = ranks[0].record["steps"][step]
        rewards = torch.tensor(seen["rewards"], dtype=torch.float32)
        advantages, info = fairgrpo_advantages(rewards, seen["domains"], seen["groups"], statistics, weighting)
        assert [float(w) for w in info.prompt_weights] == seen["prompt_weights"]
        assert statistics.to_dict() == seen["statistics"]
        flat = advantages.reshape(-1).double()
        used = torch.cat([torch.tensor(rank.record["steps"][step]["advantages"], dtype=torch.float64)
                          for rank in ranks])
        assert torch.equal(used, flat)  # rank r trained on rows r*P*G .. (r+1)*P*G - 1 of the common advantages
