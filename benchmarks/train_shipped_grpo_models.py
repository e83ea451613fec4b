"""Train the shipped GRPO- and FairGRPO-trained tiny FairMedGemmas (assets/models/tiny-fairmedgemma-{grpo,fairgrpo}).

Both start from the shipped SFT model with the same settings and seed (``GRPOJobConfig`` below: the Training
page's defaults but 40 steps); each run folder is written by ``run_grpo_training`` as any job's, then its final
model, its test evaluation and its training record (config.json, metrics.jsonl, training.json) are copied into
the model folder beside a card (``grpo_model_card_markdown``). One seed each: the three-seed comparison is in
docs/RESULTS.md ("FairGRPO against GRPO"); these checkpoints are for looking at, not for a claim.

Run:  .venv/bin/python benchmarks/train_shipped_grpo_models.py     (about 10 minutes on one thread)
      .venv/bin/python benchmarks/train_shipped_grpo_models.py --start assets/models/tiny-fairmedgemma-rl-start \
          --prefix tiny-fairmedgemma-rl --runs RUNS --run-name "{method}-seed0" --ship-only --steps 200 --lr 5e-5 \
          --eval-every 25 --max-completion-length 32
          (ships the seed-0 GRPO and FairGRPO runs of benchmarks/fairgrpo_methods.py from the learnable start)
      .venv/bin/python benchmarks/train_shipped_grpo_models.py --start assets/models/tiny-fairmedgemma-rl-undercall \
          --prefix tiny-fairmedgemma-rl-undercall --runs RUNS --run-name "{method}-seed0" --ship-only --steps 200 \
          --lr 5e-5 --eval-every 25 --max-completion-length 32 --reward class_balanced --no-within-prompt-scale \
          --results-section "FairGRPO against GRPO: a start that under-calls masses and lesions, class-balanced reward"
          (the same from the start with a prior shift, class-balanced reward; --trained-from names the copy of
          the start the runs trained from when it was not the shipped folder itself)
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
from fairmed_core.training.rewards import REWARDS  # noqa: E402

METHODS = ("grpo", "fairgrpo")


def ship(run: Path, method: str, target: Path, command: str, start: Path = TINY_MODEL,
         trained_from: Path | None = None, results_section: str = "FairGRPO against GRPO") -> None:
    """Copy a finished run's model, evaluation and training record into ``target`` and write its card
    (``trained_from``: the folder the run actually started from, a byte-identical copy of ``start``)."""
    from fairmed_core.models.grpo_card import write_grpo_model_card

    if trained_from is not None and (
            (trained_from / "model.safetensors").read_bytes() != (start / "model.safetensors").read_bytes()):
        raise SystemExit(f"{trained_from} is not a copy of {start}: their weights differ")  # before touching target
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run / "model", target)
    shutil.copytree(run / "evaluation", target / "evaluation")
    (target / "training").mkdir()
    for name in ("config.json", "metrics.jsonl", "training.json"):
        shutil.copy2(run / name, target / "training" / name)
    # The folders a run happened to be made in are not part of its record: the shipped start (for the copy it
    # trained from, checked above), the shipped model folder, and RUN as the card's command.
    renames = [(run.resolve() / "model", target.resolve()), (run.resolve(), Path("RUN"))]
    if trained_from is not None:
        renames.insert(0, (trained_from.resolve(), start.resolve()))
    for record in (target / "evaluation" / "run.json", target / "training" / "config.json"):
        replace_paths(record, renames)
        repo_relative_paths(record)
    write_grpo_model_card(target, method=method, command=command, start=start, results_section=results_section)


def replace_paths(record: Path, renames: list[tuple[Path, Path]]) -> None:
    """Rewrite every occurrence of each old path in the JSON file ``record`` as the new one, in order."""
    text = record.read_text(encoding="utf-8")
    for old, new in renames:
        text = text.replace(json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1])
    record.write_text(text, encoding="utf-8")


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
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--max-completion-length", type=int, default=40)
    parser.add_argument("--start", type=Path, default=TINY_MODEL, help="the SFT model the runs start from")
    parser.add_argument("--prefix", default="tiny-fairmedgemma", help="shipped as <prefix>-<method>")
    parser.add_argument("--run-name", default="shipped-{method}", help="run folder name under --runs")
    parser.add_argument("--runs", type=Path, default=ROOT / "workspace" / "runs")
    parser.add_argument("--ship-only", action="store_true", help="re-ship existing runs (e.g. after a card change)")
    parser.add_argument("--reward", default="exact", choices=REWARDS, help="correctness reward (GRPOJobConfig.reward)")
    parser.add_argument("--no-within-prompt-scale", action="store_true",
                        help="FairGRPO: centre within each prompt without dividing by its spread")
    parser.add_argument("--results-section", default="FairGRPO against GRPO",
                        help="the docs/RESULTS.md section the cards point to for the three-seed comparison")
    parser.add_argument("--trained-from", type=Path, default=None,
                        help="with --ship-only: the byte-identical copy of --start the runs were trained from")
    parser.add_argument("--train-only", action="store_true", help="train the runs, do not ship them")
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = ensure_default_dataset(ROOT / "workspace" / "datasets")
    for method in METHODS:
        run = args.runs / args.run_name.format(method=method)
        start = args.start.resolve()
        start_name = str(start.relative_to(ROOT)) if start.is_relative_to(ROOT) else str(args.start)
        command = (f"fairmed train {method} --model {start_name} --data "
                   f"workspace/datasets/synth-default/manifest.jsonl --out RUN --steps {args.steps} --prompts 8 "
                   f"--generations 4 --lr {args.lr:g} --eval-every {args.eval_every} --eval-limit 300 "
                   f"--max-completion-length {args.max_completion_length} --seed 0")
        if args.reward != "exact":
            command += f" --reward {args.reward}"
        if args.no_within_prompt_scale and method != "grpo":  # only the FairGRPO methods read it
            command += " --no-within-prompt-scale"
        if not args.ship_only:
            if run.exists():
                shutil.rmtree(run)
            config = GRPOJobConfig(method=method, steps=args.steps, prompts_per_step=8, num_generations=4,
                                   learning_rate=args.lr, eval_every=args.eval_every, eval_limit=300,
                                   max_completion_length=args.max_completion_length, save_every=args.steps, seed=0,
                                   reward=args.reward, within_prompt_scale=not args.no_within_prompt_scale)
            finished = run_grpo_training(args.start, manifest, run, config)
            print(json.dumps(finished.to_json()), flush=True)
        if not args.train_only:
            ship(run, method, ASSETS / "models" / f"{args.prefix}-{method}", command, start=args.start,
                 trained_from=args.trained_from, results_section=args.results_section)
            print(f"shipped {method}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
