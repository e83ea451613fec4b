"""Train the shipped GRPO- and FairGRPO-trained tiny FairMedGemmas (assets/models/tiny-fairmedgemma-{grpo,fairgrpo}).

Both start from the shipped SFT model with the same settings and seed (``GRPOJobConfig`` below: the Training
page's defaults but 40 steps); each run folder is written by ``run_grpo_training`` as any job's, then its final
model, its test evaluation and its training record (config.json, metrics.jsonl, training.json) are copied into
the model folder beside a card (``grpo_model_card_markdown``). One seed each: the three-seed comparison is in
docs/RESULTS.md ("FairGRPO against GRPO"); these checkpoints are for looking at, not for a claim.

Run:  .venv/bin/python benchmarks/train_shipped_grpo_models.py     (about 10 minutes on one thread)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fairmed_core.data import ensure_default_dataset  # noqa: E402
from fairmed_core.jobs.grpo_training import GRPOJobConfig, run_grpo_training  # noqa: E402
from fairmed_core.runs.workspace import ASSETS, TINY_MODEL  # noqa: E402

METHODS = ("grpo", "fairgrpo")


def ship(run: Path, method: str, target: Path, command: str) -> None:
    """Copy a finished run's model, evaluation and training record into ``target`` and write its card."""
    from fairmed_core.models.grpo_card import write_grpo_model_card

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run / "model", target)
    shutil.copytree(run / "evaluation", target / "evaluation")
    (target / "training").mkdir()
    for name in ("config.json", "metrics.jsonl", "training.json"):
        shutil.copy2(run / name, target / "training" / name)
    for record in (target / "evaluation" / "run.json", target / "training" / "config.json"):
        repo_relative_paths(record)
    write_grpo_model_card(target, method=method, command=command)


def repo_relative_paths(record: Path) -> None:
    """Rewrite the JSON file's string values that are paths inside this checkout as paths relative to its root:
    a shipped record must not carry the folder it happened to be made in."""
    prefix = str(ROOT) + os.sep

    def relative(value):
        if isinstance(value, dict):
            return {key: relative(item) for key, item in value.items()}
        if isinstance(value, list):
            return [relative(item) for item in value]
        return value[len(prefix):] if isinstance(value, str) and value.startswith(prefix) else value

    record.write_text(json.dumps(relative(json.loads(record.read_text(encoding="utf-8"))), indent=2) + "\n",
                      encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=Path, default=ROOT / "workspace" / "runs")
    parser.add_argument("--ship-only", action="store_true", help="re-ship existing runs (e.g. after a card change)")
    parser.add_argument("--train-only", action="store_true", help="train the runs, do not ship them")
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = ensure_default_dataset(ROOT / "workspace" / "datasets")
    for method in METHODS:
        run = args.runs / f"shipped-{method}"
        command = (f"fairmed train {method} --model assets/models/tiny-fairmedgemma --data "
                   f"workspace/datasets/synth-default/manifest.jsonl --out RUN --steps {args.steps} --prompts 8 "
                   "--generations 4 --lr 2e-5 --eval-every 10 --eval-limit 300 --seed 0")
        if not args.ship_only:
            if run.exists():
                shutil.rmtree(run)
            config = GRPOJobConfig(method=method, steps=args.steps, prompts_per_step=8, num_generations=4,
                                   learning_rate=2e-5, eval_every=10, eval_limit=300, save_every=args.steps, seed=0)
            finished = run_grpo_training(TINY_MODEL, manifest, run, config)
            print(json.dumps(finished.to_json()), flush=True)
        if not args.train_only:
            ship(run, method, ASSETS / "models" / f"tiny-fairmedgemma-{method}", command)
            print(f"shipped {method}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
