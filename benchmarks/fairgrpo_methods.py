"""Method comparison: GRPO against FairGRPO (and optional baselines) from the shipped SFT tiny model on the
embedded benchmark, several seeds, the same steps, data and settings; a table like the FairGRPO paper's (PP,
EOD, sigma F1, F1, accuracy, F1_ES; mean and std over seeds, on the test split) and the held-out training
dynamics (the gaps at the first and last evaluation).

Each run is ``fairmed_core.jobs.grpo_training.run_grpo_training`` (the same code as ``fairmed train``), into
``--out`` (default a temporary folder; runs already there are reused). Results replace the section
"FairGRPO against GRPO" of docs/RESULTS.md, or "FairGRPO against GRPO: <--variant>" when a variant is named.
Besides the test-split table and the held-out dynamics, it reports where each method's learning signal went:
per source, the share of prompts whose rollouts all got the same reward (no gradient under any weighting) and
the source's share of the absolute advantage actually used, averaged over steps and seeds.

Run:  .venv/bin/python benchmarks/fairgrpo_methods.py --model assets/models/tiny-fairmedgemma-v2 --steps 200 \
          --lr 5e-5 --eval-every 25 --max-completion-length 32 --workers 2      (all seven methods, 3 seeds)
      .venv/bin/python benchmarks/fairgrpo_methods.py --methods grpo fairgrpo --steps 120 --temperature 1.5 \
          --variant "hotter rollouts, longer training"
      .venv/bin/python benchmarks/fairgrpo_methods.py --quick        (1 seed, 2 steps; does not write the doc)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import multiprocessing  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _report import replace_section  # noqa: E402
from fairmed_core.data import ensure_default_dataset  # noqa: E402
from fairmed_core.fairness import audit  # noqa: E402
from fairmed_core.jobs.grpo_training import GRPOJobConfig, run_grpo_training  # noqa: E402
from fairmed_core.runs.training_store import read_metrics, summary_frame  # noqa: E402
from fairmed_core.runs.workspace import TINY_MODEL  # noqa: E402
from fairmed_core.training.latent_groups import PairCounts  # noqa: E402
from fairmed_core.training.methods import METHODS as TRAINING_METHODS  # noqa: E402
from fairmed_core.training.rewards import REWARDS  # noqa: E402

SECTION = "## FairGRPO against GRPO"
STATISTICS = ("predictive_parity", "equal_opportunity_difference", "sigma_f1", "f1", "accuracy", "f1_es")
LABELS = {"predictive_parity": "PP", "equal_opportunity_difference": "EOD", "sigma_f1": "sigma F1", "f1": "F1",
          "accuracy": "Acc", "f1_es": "F1_ES"}


def test_summary(run_dir: Path) -> dict:
    """The test-split audit's aggregate row (mean over attributes, then over sources), in FairMed's convention
    and (keys ``paper_*``) under the FairGRPO paper's protocol, from the run's stored test predictions."""
    summary = pd.read_csv(run_dir / "evaluation" / "audit" / "summary.csv")
    row = summary[(summary["source"] == "mean over sources") & (summary["attribute"] == "mean over attributes")]
    out = {key: float(row[key].iloc[0]) for key in STATISTICS}
    predictions = pd.read_csv(run_dir / "evaluation" / "predictions.csv", keep_default_na=False)
    attributes = [a for a in ("sex", "age_group", "skin_tone") if a in predictions.columns]
    paper = audit(predictions, label_col="y_true", pred_col="y_pred", sensitive=attributes, source_col="source",
                  positive_label="yes", n_boot=0, protocol="fairgrpo_paper").paper_summary.aggregate
    out.update({f"paper_{key}": float("nan") if paper is None else getattr(paper, key) for key in STATISTICS})
    return out


def dynamics(run_dir: Path) -> dict:
    """The held-out aggregate gaps at the first and the last evaluation."""
    gaps = summary_frame(read_metrics(run_dir))
    gaps = gaps[(gaps["source"] == "mean over sources") & (gaps["attribute"] == "mean over attributes")]
    first, last = gaps[gaps["step"] == gaps["step"].min()], gaps[gaps["step"] == gaps["step"].max()]
    return {f"{key}_{when}": pd.to_numeric(frame[key], errors="coerce").iloc[0]
            for key in ("predictive_parity", "sigma_f1", "accuracy") for when, frame in (("start", first), ("end", last))}


def learning_signal(run_dir: Path) -> dict:
    """Per source, the mean over training steps of the zero-variance prompt fraction and the advantage share."""
    rows = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    signal = {}
    for prefix in ("domain_zero_std/", "advantage_share/"):
        keys = sorted({k for r in rows for k in r if k.startswith(prefix)})
        for key in keys:
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            signal[key] = sum(values) / len(values) if values else float("nan")
    return signal


SOURCE_NAMES = {"synth_cxr": "chest X-ray", "synth_derm": "dermoscopy", "synth_mammo": "mammography"}


def source_curves(run_dir: Path) -> pd.DataFrame:
    """Held-out F1 and accuracy per source at every evaluation step (the sources' own rows, whole source)."""
    gaps = summary_frame(read_metrics(run_dir))
    rows = gaps[(gaps["attribute"] == "mean over attributes") & gaps["source"].isin(list(SOURCE_NAMES))]
    return rows[["step", "source", "f1", "accuracy", "predictive_parity"]].assign(
        f1=lambda f: pd.to_numeric(f["f1"], errors="coerce"),
        accuracy=lambda f: pd.to_numeric(f["accuracy"], errors="coerce"),
        predictive_parity=lambda f: pd.to_numeric(f["predictive_parity"], errors="coerce"))


def latent_agreement(run_dir: Path) -> dict:
    """For a method that groups prompts without demographics: the adjusted Rand index of its latent groups
    against the masked true groups, from pairs pooled over the first and the second half of the steps."""
    rows = [r for r in read_metrics(run_dir) if r.get("kind") == "train"]
    counts = [(r["step"], PairCounts.from_metrics(r)) for r in rows]
    counts = [(step, c) for step, c in counts if c is not None]
    if not counts:
        return {}
    middle = max(step for step, _ in counts) / 2
    out = {}
    for name, part in (("ari", counts), ("ari_first_half", [c for c in counts if c[0] <= middle]),
                       ("ari_second_half", [c for c in counts if c[0] > middle])):
        total = sum((c for _, c in part), PairCounts())
        out[name] = total.adjusted_rand_index()
        out[f"{name}_pairs"] = total.pairs
    return out


def _display_path(path: Path) -> str:
    """A model folder as the report names it: relative to the repository where it lies inside."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def _train_one(model: str, manifest: str, run_dir: str, job: dict) -> str:
    """One run in a worker process (one CPU thread each)."""
    torch.set_num_threads(1)
    if not (Path(run_dir) / "training.json").is_file():
        run_grpo_training(model, manifest, run_dir, GRPOJobConfig.from_dict(job))
    return run_dir


def _mean_sd(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "n/a"
    sd = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.3f} ± {sd:.3f}"


def _reward_words(config: GRPOJobConfig) -> str:
    if config.reward == "class_balanced":
        return ("class-balanced reward: a right answer earns the inverse share of its answer within its source; "
                "advantages centred within each prompt, not divided by its spread")
    return "right/wrong reward"


def paired_table(frame: pd.DataFrame, baseline: str = "grpo") -> list[str]:
    """Markdown rows: each method minus the baseline, paired by seed (same data order and sampling stream)."""
    if baseline not in set(frame["method"]):
        return []
    keys = ("f1", "accuracy", "predictive_parity", "equal_opportunity_difference")
    base = frame[frame["method"] == baseline].set_index("seed")
    lines = ["", f"Paired by seed, each method minus {baseline} on the test split (mean ± standard deviation of the "
             "per-seed differences; F1 and accuracy as fractions, PP and EOD in percentage points):", "",
             "| method | Δ F1 | Δ Acc | Δ PP | Δ EOD |", "|---|---:|---:|---:|---:|"]
    for method, block in frame.groupby("method", sort=False):
        if method == baseline:
            continue
        block = block.set_index("seed")
        cells = [_mean_sd(block[k] - base[k].reindex(block.index)) for k in keys]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def start_table(frame: pd.DataFrame, start: dict | None) -> list[str]:
    """Markdown rows: each method's test F1 and accuracy against the SFT start's."""
    if not start:
        return []
    lines = ["", f"Against the SFT start (test F1 {start['f1']:.3f}, accuracy {start['accuracy']:.3f}; FairMed's "
             "convention, mean over sources): the change per method, mean ± standard deviation over seeds.", "",
             "| method | Δ F1 vs start | Δ Acc vs start | seeds with higher F1 |", "|---|---:|---:|---:|"]
    for method, block in frame.groupby("method", sort=False):
        gains = block["f1"] - start["f1"]
        lines.append(f"| {method} | {_mean_sd(gains)} | {_mean_sd(block['accuracy'] - start['accuracy'])} | "
                     f"{int((gains > 0).sum())} of {len(block)} |")
    return lines


def curves_table(curves: pd.DataFrame) -> list[str]:
    """Markdown rows: per method and source, held-out F1 at the first, middle and last evaluation (mean over
    seeds)."""
    if curves.empty:
        return []
    steps = sorted(curves["step"].unique())
    picks = [steps[0], steps[len(steps) // 2], steps[-1]]
    sources = [s for s in SOURCE_NAMES if s in set(curves["source"])]
    lines = ["", "Held-out (stratified val sample) F1 per source over training, mean over seeds, at steps "
             + " → ".join(str(s) for s in picks) + " (the full curves are in the run folders and on the Training "
             "page):", "", "| method | " + " | ".join(SOURCE_NAMES[s] for s in sources) + " |",
             "|---|" + "---|" * len(sources)]
    for method, block in curves.groupby("method", sort=False):
        cells = []
        for source in sources:
            values = [block[(block["source"] == source) & (block["step"] == step)]["f1"].mean() for step in picks]
            cells.append(" → ".join(f"{v:.3f}" for v in values))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def step_table(curves: pd.DataFrame, points: int = 5) -> list[str]:
    """Markdown rows: per method, held-out F1 and predictive parity, each the mean over the sources, at ``points``
    evaluation steps spread over training (mean ± standard deviation over seeds): the paper's training-dynamics
    claim (GRPO's gap grows while FairGRPO's shrinks) read off the same fixed sample at every step."""
    if curves.empty:
        return []
    steps = sorted(curves["step"].unique())
    picks = sorted({steps[round(i * (len(steps) - 1) / (points - 1))] for i in range(points)})
    per_seed = curves[curves["step"].isin(picks)].groupby(["method", "seed", "step"], sort=False)[
        ["f1", "predictive_parity"]].mean().reset_index()
    lines = []
    for column, words in (("f1", "F1 (0-1)"), ("predictive_parity", "predictive parity (PP, percentage points)")):
        lines += ["", f"Held-out {words} over training, mean over the sources at each step, mean ± standard "
                  "deviation over seeds:", "", "| method | " + " | ".join(f"step {s}" for s in picks) + " |",
                  "|---|" + "---:|" * len(picks)]
        for method, block in per_seed.groupby("method", sort=False):
            cells = [_mean_sd(block[block["step"] == step][column]) for step in picks]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def latent_table(frame: pd.DataFrame) -> list[str]:
    """Markdown rows: the latent groups' agreement with the true groups (methods that cluster every prompt)."""
    if "ari" not in frame.columns or frame["ari"].isna().all():
        return []
    lines = ["", "Latent groups of FairGRPO without demographics against the masked true groups (sex x age group "
             "within a source): adjusted Rand index from prompt pairs within a step and source, pooled over steps "
             "(0: chance, 1: the true groups recovered); mean ± standard deviation over seeds.", "",
             "| method | ARI, all steps | first half | second half | pairs per run |", "|---|---:|---:|---:|---:|"]
    for method, block in frame[frame["ari"].notna()].groupby("method", sort=False):
        lines.append(f"| {method} | {_mean_sd(block['ari'])} | {_mean_sd(block['ari_first_half'])} | "
                     f"{_mean_sd(block['ari_second_half'])} | {block['ari_pairs'].mean():.0f} |")
    return lines


def signal_table(frame: pd.DataFrame) -> list[str]:
    """Markdown rows: per method and source, zero-variance fraction and advantage share (mean over seeds)."""
    sources = sorted({k.split("/", 1)[1] for k in frame.columns if k.startswith("advantage_share/")})
    if not sources:
        return []
    lines = ["", "Where the learning signal went during training, per source (mean over steps and seeds): the "
             "fraction of prompts whose G rollouts all got the same reward, which carry no gradient under any "
             "weighting, and the source's share of the batch's total absolute advantage as used in the loss.", "",
             "| method | " + " | ".join(f"{s} zero-variance | {s} advantage share" for s in sources) + " |",
             "|---|" + "---:|---:|" * len(sources)]
    for method, block in frame.groupby("method", sort=False):
        cells = []
        for source in sources:
            cells += [f"{block[f'domain_zero_std/{source}'].mean():.2f}",
                      f"{block[f'advantage_share/{source}'].mean():.2f}"]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(frame: pd.DataFrame, *, config: GRPOJobConfig, seeds: int, minutes: float, section: str,
             model_name: str, start: dict | None = None, curves: pd.DataFrame | None = None,
             workers: int = 1) -> str:
    lines = [section, "",
             f"Generated by `benchmarks/fairgrpo_methods.py` on {datetime.date.today().isoformat()} in "
             f"{minutes:.0f} minutes ({workers} runs at a time, one CPU thread each). From `{model_name}`, each method "
             f"trains "
             f"{config.steps} steps ({config.prompts_per_step} prompts x G={config.num_generations} rollouts, "
             f"learning rate {config.learning_rate}, KL {config.beta}, rollout temperature {config.temperature}, "
             f"completions up to {config.max_completion_length} tokens, {_reward_words(config)}) on the embedded "
             "benchmark's train split, "
             f"seeds 0..{seeds - 1}; the final model answers the test split greedily. Statistics in FairMed's default "
             "convention (positive class only on yes/no data, undefined values left out; mean over attributes: sex, "
             "age group, skin tone where recorded; then over sources), with the same test predictions under the "
             "FairGRPO paper's protocol (the authors' evaluation code: yes and no both scored, zero denominators as "
             "0, sex and age only) in the second table; PP and EOD in percentage points. Mean ± standard deviation "
             "over seeds.", "",
             "| method | " + " | ".join(LABELS[s] for s in STATISTICS) + " |",
             "|---|" + "---:|" * len(STATISTICS)]
    for method, block in frame.groupby("method", sort=False):
        cells = [f"{block[s].mean():.3f} ± {block[s].std(ddof=1) if len(block) > 1 else float('nan'):.3f}"
                 for s in STATISTICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "The same test predictions under the FairGRPO paper's protocol (Table 1 convention):", "",
              "| method | " + " | ".join(LABELS[s] for s in STATISTICS) + " |", "|---|" + "---:|" * len(STATISTICS)]
    for method, block in frame.groupby("method", sort=False):
        cells = [f"{block[f'paper_{s}'].mean():.3f} ± "
                 f"{block[f'paper_{s}'].std(ddof=1) if len(block) > 1 else float('nan'):.3f}" for s in STATISTICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "Training dynamics on the held-out (val) split, aggregate row, first → last evaluation:", "",
              "| method | PP start → end | sigma F1 start → end | accuracy start → end |", "|---|---|---|---|"]
    for method, block in frame.groupby("method", sort=False):
        cells = [f"{block[f'{k}_start'].mean():.3f} → {block[f'{k}_end'].mean():.3f}"
                 for k in ("predictive_parity", "sigma_f1", "accuracy")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += start_table(frame, start)
    lines += paired_table(frame)
    lines += curves_table(curves if curves is not None else pd.DataFrame())
    lines += step_table(curves if curves is not None else pd.DataFrame())
    lines += latent_table(frame)
    lines += signal_table(frame)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(TRAINING_METHODS), choices=list(TRAINING_METHODS))
    parser.add_argument("--model", type=Path, default=TINY_MODEL, help="the SFT start (a model folder)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
    parser.add_argument("--max-completion-length", type=int, default=40)
    parser.add_argument("--generations", type=int, default=4, help="rollouts per prompt (G)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--beta", type=float, default=0.0, help="KL coefficient")
    parser.add_argument("--reward", default="exact", choices=REWARDS, help="correctness reward (GRPOJobConfig.reward)")
    parser.add_argument("--no-within-prompt-scale", action="store_true",
                        help="FairGRPO: centre within each prompt without dividing by its spread")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at the same time (one thread each)")
    parser.add_argument("--variant", default=None, help="names a separate RESULTS section for a non-default setup")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = ensure_default_dataset(ROOT / "workspace" / "datasets")
    out = args.out or Path(tempfile.mkdtemp(prefix="fairgrpo-methods-"))
    seeds = 1 if args.quick else args.seeds
    config_kwargs = dict(steps=2 if args.quick else args.steps, eval_every=1 if args.quick else args.eval_every,
                         eval_limit=24 if args.quick else 300, save_every=1000, learning_rate=args.lr,
                         temperature=args.temperature, max_completion_length=args.max_completion_length,
                         num_generations=args.generations, prompts_per_step=args.prompts, beta=args.beta,
                         reward=args.reward, within_prompt_scale=not args.no_within_prompt_scale)
    started = datetime.datetime.now()
    jobs = {(method, seed): GRPOJobConfig(method=method, seed=seed, **config_kwargs)
            for seed in range(seeds) for method in args.methods}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no forked torch state
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        futures = {pool.submit(_train_one, str(args.model), str(manifest), str(out / f"{m}-seed{s}"),
                               config.to_dict()): (m, s) for (m, s), config in jobs.items()}
        for future in concurrent.futures.as_completed(futures):
            print("finished", futures[future], future.result(), flush=True)
    rows, curves = [], []
    for (method, seed), config in jobs.items():
        run_dir = out / f"{method}-seed{seed}"
        row = {"method": method, "seed": seed, **test_summary(run_dir), **dynamics(run_dir),
               **learning_signal(run_dir), **latent_agreement(run_dir),
               **json.loads((run_dir / "training.json").read_text())}
        rows.append(row)
        curves.append(source_curves(run_dir).assign(method=method, seed=seed))
        print(json.dumps({k: row[k] for k in ("method", "seed", *STATISTICS, "seconds_per_step")}), flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "results.csv", index=False)
    curves_frame = pd.concat(curves, ignore_index=True)
    curves_frame.to_csv(out / "curves.csv", index=False)
    start_dir = args.model / "evaluation"
    start = test_summary(args.model) if (start_dir / "audit" / "summary.csv").is_file() else None
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    section = SECTION if args.variant is None else f"{SECTION}: {args.variant}"
    text = markdown(frame, config=config, seeds=seeds, minutes=minutes, section=section,
                    model_name=_display_path(args.model), start=start, curves=curves_frame, workers=args.workers)
    print(text)
    print(f"runs in {out}")
    if not args.quick:
        replace_section(ROOT / "docs" / "RESULTS.md", section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
