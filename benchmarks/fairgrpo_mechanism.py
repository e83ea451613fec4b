"""Does the FairGRPO weighting, as implemented, shift what a policy learns toward the groups it is built for?

A controlled check of ``fairmed_core.training.fairgrpo_weights`` away from the VLM: a policy whose learning is
fast and cheap, so that the only difference between the arms is the advantage each rollout gets. If FairGRPO's
weights do their job, the under-represented, lower-reward group gains at the majority's expense; if they did
nothing (a bug that left the weights at 1, say) the arms would coincide.

The task: binary answers to prompts x ~ N(0, I_8) from two data sources ("A", 70% of prompts; "B", 30%), each with
a majority group (80%) and a minority group (20%). The correct answer is ``1[x . w*_{source,group} > 0]``; the
minority's ``w*`` is the majority's rotated by 70 degrees, so no single linear rule serves both. The policy answers
yes with ``p = sigmoid(theta . x + b_source)`` (shared theta: limited capacity, as a small model has), G rollouts
per prompt, reward 1 for a correct answer. Each step: 32 prompts x G = 4, advantages from

- ``grpo``: within-prompt normalisation ``(r - mean) / (std + eps)`` (``within_prompt_advantages``);
- ``fairgrpo``: ``fairgrpo_advantages`` with the sources and groups (statistics persisted over steps);
- ``fairgrpo_nd``: the same without demographics (every prompt clustered by its rollout rewards);

then one REINFORCE step ``-mean(A * log pi(a | x))`` with Adam (lr 0.05), 300 steps. Greedy accuracy per group on
4,000 fresh prompts at the end, over seeds. Results replace the section "FairGRPO weighting: a controlled
check" of docs/RESULTS.md.

Run:  .venv/bin/python benchmarks/fairgrpo_mechanism.py --seeds 5
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _report import replace_section  # noqa: E402
from fairmed_core.training.fairgrpo_weights import (  # noqa: E402
    FairGRPOStatistics,
    FairGRPOWeighting,
    fairgrpo_advantages,
    within_prompt_advantages,
)

SECTION = "## FairGRPO weighting: a controlled check"
SOURCES = {"A": 0.7, "B": 0.3}
GROUPS = {"majority": 0.8, "minority": 0.2}
DIM, ROTATION_DEG = 8, 70.0
METHODS = ("grpo", "fairgrpo", "fairgrpo_nd")


def true_directions(rng: np.random.Generator) -> dict[tuple[str, str], np.ndarray]:
    """Per (source, group) the direction that decides the correct answer; minority = majority rotated."""
    directions = {}
    for source in SOURCES:
        base = rng.normal(size=DIM)
        base /= np.linalg.norm(base)
        other = rng.normal(size=DIM)
        other -= other @ base * base
        other /= np.linalg.norm(other)
        angle = math.radians(ROTATION_DEG)
        directions[(source, "majority")] = base
        directions[(source, "minority")] = math.cos(angle) * base + math.sin(angle) * other
    return directions


def draw(rng: np.random.Generator, n: int, directions) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """``n`` prompts: features, sources, groups and correct answers."""
    sources = rng.choice(list(SOURCES), size=n, p=list(SOURCES.values()))
    groups = rng.choice(list(GROUPS), size=n, p=list(GROUPS.values()))
    x = rng.normal(size=(n, DIM))
    y = np.array([float(x[i] @ directions[(sources[i], groups[i])] > 0) for i in range(n)])
    return x, list(sources), list(groups), y


class Policy(torch.nn.Module):
    """``P(yes | x, source) = sigmoid(theta . x + b_source)``."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(DIM, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(len(SOURCES), dtype=torch.float64))

    def forward(self, x: torch.Tensor, sources: list[str]) -> torch.Tensor:
        index = torch.tensor([list(SOURCES).index(s) for s in sources])
        return torch.sigmoid(x @ self.theta + self.bias[index])


def train(method: str, seed: int, *, steps: int, prompts: int, generations: int, lr: float) -> dict:
    rng = np.random.default_rng(seed)
    directions = true_directions(np.random.default_rng(1000 + seed))
    torch.manual_seed(seed)
    policy = Policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    statistics = FairGRPOStatistics()
    weighting = FairGRPOWeighting(cluster_all=method == "fairgrpo_nd", seed=seed)
    for _ in range(steps):
        x, sources, groups, y = draw(rng, prompts, directions)
        features = torch.from_numpy(x)
        p = policy(features, sources)
        answers = torch.bernoulli(p.detach()[:, None].expand(-1, generations))
        rewards = (answers == torch.from_numpy(y)[:, None]).double()
        if method == "grpo":
            advantages = within_prompt_advantages(rewards)
        else:
            advantages, _ = fairgrpo_advantages(rewards, sources, groups if method == "fairgrpo" else None,
                                                statistics, weighting)
        log_p = answers * torch.log(p[:, None]) + (1 - answers) * torch.log1p(-p[:, None])
        loss = -(advantages.detach() * log_p).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, sources, groups, y = draw(np.random.default_rng(10_000 + seed), 4000, directions)
    with torch.no_grad():
        predicted = (policy(torch.from_numpy(x), sources) > 0.5).double().numpy()
    correct = predicted == y
    frame = pd.DataFrame({"source": sources, "group": groups, "correct": correct})
    per_group = frame.groupby("group")["correct"].mean()
    per_cell = frame.groupby(["source", "group"])["correct"].mean()
    return {"method": method, "seed": seed, "accuracy": float(correct.mean()),
            "majority": float(per_group["majority"]), "minority": float(per_group["minority"]),
            "gap": float(per_group["majority"] - per_group["minority"]),
            **{f"{s}/{g}": float(v) for (s, g), v in per_cell.items()}}


def markdown(frame: pd.DataFrame, *, seeds: int, steps: int, seconds: float) -> str:
    columns = ["accuracy", "majority", "minority", "gap", "A/minority", "B/minority"]
    lines = [SECTION, "",
             f"Generated by `benchmarks/fairgrpo_mechanism.py` on {datetime.date.today().isoformat()} in "
             f"{seconds:.0f} s. A controlled check of the weighting code itself, away from the VLM: a linear "
             "policy answering yes/no prompts from two sources (70% / 30%), each with a majority (80%) and a "
             f"minority (20%) group whose correct rule is the majority's rotated by {ROTATION_DEG:.0f} degrees, so "
             "one shared rule cannot serve both. Every arm sees the same prompts per seed (the same random streams); only "
             f"the advantages differ. {steps} steps of 32 prompts x G=4, REINFORCE with Adam; greedy accuracy on "
             f"4,000 fresh prompts; mean ± standard deviation over {seeds} seeds.", "",
             "| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for method, block in frame.groupby("method", sort=False):
        cells = [f"{block[c].mean():.3f} ± {block[c].std(ddof=1):.3f}" for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    grpo = frame[frame["method"] == "grpo"].set_index("seed")
    lines += ["", "Paired by seed against GRPO (mean difference, and in how many seeds it has that sign):", ""]
    for method in [m for m in frame["method"].unique() if m != "grpo"]:
        other = frame[frame["method"] == method].set_index("seed")
        for column in ("gap", "minority", "accuracy"):
            difference = other[column] - grpo[column]
            same_sign = int((np.sign(difference) == np.sign(difference.mean())).sum())
            lines.append(f"- {method} - grpo, {column}: {difference.mean():+.3f} ({same_sign} of {len(difference)} "
                         "seeds)")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = [train(method, seed, steps=args.steps, prompts=32, generations=4, lr=0.05)
            for seed in range(args.seeds) for method in METHODS]
    frame = pd.DataFrame(rows)
    text = markdown(frame, seeds=args.seeds, steps=args.steps, seconds=time.perf_counter() - started)
    print(text)
    if not args.no_write:
        replace_section(ROOT / "docs" / "RESULTS.md", SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
