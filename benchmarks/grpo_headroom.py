"""How much F1 can reinforcement learning with a right/wrong reward still find in an SFT start?

GRPO learns only from prompts whose G rollouts disagree (some right, some wrong), and what it can change without
better image features is, per case, how often the model says yes. This script measures both on the embedded
benchmark for one model: it samples K answers per case (the rollout temperature, seeded) on the val and test
splits and scores each case by its share of yes answers ``s``. Per source it reports

- the greedy F1 (what the audit and the training curves report),
- the share of cases whose K samples disagree (0 < s < 1): the cases that carry a gradient at all,
- the F1 of one sampled answer per case (the policy GRPO trains), averaged over the K draws,
- the F1 reachable by moving the yes/no decision along ``s``: predict yes when s >= t, with t chosen per source on
  val and applied to test ("threshold chosen on val"), and the best t on test itself (an upper bound no trained
  model is promised),

so a claim such as "plain GRPO gains 0.03 F1 over the start" can be set against the F1 the start's own answer
distribution holds. Results replace the section "Reinforcement-learning headroom of the SFT start" of
docs/RESULTS.md (``--variant`` names a separate one).

Run:  .venv/bin/python benchmarks/grpo_headroom.py --model assets/models/tiny-fairmedgemma-rl-start --samples 16
      .venv/bin/python benchmarks/grpo_headroom.py --quick        (24 cases per split, 4 samples; no doc)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from _report import machine_description, replace_section  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.data.sampling import stratified_sample  # noqa: E402
from fairmed_core.models.evaluation import evaluate_dataset  # noqa: E402
from fairmed_core.models.generation import GenerationOptions  # noqa: E402
from fairmed_core.models.loading import load_model  # noqa: E402

SECTION = "## Reinforcement-learning headroom of the SFT start"


def f1_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of the positive class (0 when there is no true and no predicted positive)."""
    tp = float(np.sum(y_true & y_pred))
    denominator = float(np.sum(y_true) + np.sum(y_pred))
    return 0.0 if denominator == 0 else 2 * tp / denominator


def answers(loaded, dataset, split: str, case_ids, options: GenerationOptions) -> pd.DataFrame:
    """One row per case: source, truth (bool) and the model's answer is yes (bool), in case order."""
    frame = evaluate_dataset(loaded, dataset, split=split, options=options, case_ids=case_ids)
    positive = dataset.positive_label
    return pd.DataFrame({"case_id": frame["case_id"], "source": frame["source"],
                         "truth": (frame["y_true"] == positive).to_numpy(),
                         "yes": (frame["y_pred"] == positive).to_numpy()}).set_index("case_id")


def yes_shares(loaded, dataset, split: str, case_ids, *, samples: int, temperature: float,
               max_new_tokens: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The greedy answers of ``split`` with each case's share of yes among ``samples`` sampled answers (``s``),
    and the (cases, samples) matrix of sampled yes answers."""
    greedy = answers(loaded, dataset, split, case_ids, GenerationOptions(max_new_tokens=max_new_tokens,
                                                                         batch_size=32))
    draws = []
    for seed in range(samples):
        options = GenerationOptions(do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                                    batch_size=32, seed=seed)
        draws.append(answers(loaded, dataset, split, case_ids, options)["yes"].reindex(greedy.index).to_numpy())
    matrix = np.stack(draws, axis=1)
    return greedy.assign(s=matrix.mean(axis=1)), matrix


def headroom(val: pd.DataFrame, test: pd.DataFrame, test_draws: np.ndarray, samples: int) -> pd.DataFrame:
    """Per source (and the mean over sources): greedy F1, disagreeing share, sampled-policy F1 and the F1 reachable
    by a threshold on s (chosen on val; best on test), all on the test split."""
    thresholds = np.arange(samples + 1) / samples
    rows = []
    for source in sorted(test["source"].unique()):
        v, t = val[val["source"] == source], test[test["source"] == source]
        draws = test_draws[(test["source"] == source).to_numpy()]
        on_val = [f1_score(v["truth"].to_numpy(), v["s"].to_numpy() >= th) for th in thresholds]
        on_test = [f1_score(t["truth"].to_numpy(), t["s"].to_numpy() >= th) for th in thresholds]
        chosen = thresholds[int(np.argmax(on_val))]
        rows.append({
            "source": source, "cases": len(t), "positives": int(t["truth"].sum()),
            "greedy_f1": f1_score(t["truth"].to_numpy(), t["yes"].to_numpy()),
            "disagreeing": float(((t["s"] > 0) & (t["s"] < 1)).mean()),
            "sampled_f1": float(np.mean([f1_score(t["truth"].to_numpy(), draws[:, k]) for k in range(samples)])),
            "threshold": float(chosen),
            "threshold_f1": f1_score(t["truth"].to_numpy(), t["s"].to_numpy() >= chosen),
            "best_f1": float(max(on_test)),
        })
    frame = pd.DataFrame(rows)
    mean = frame.drop(columns=["source"]).mean(numeric_only=True)
    mean[["cases", "positives"]] = frame[["cases", "positives"]].sum()
    return pd.concat([frame, pd.DataFrame([{"source": "mean over sources", **mean.to_dict()}])], ignore_index=True)


def markdown(table: pd.DataFrame, *, model: str, samples: int, temperatures: list[float], minutes: float,
             n_val: int) -> str:
    lines = [SECTION, "",
             f"Generated by `benchmarks/grpo_headroom.py` on {datetime.date.today().isoformat()} in {minutes:.0f} "
             f"minutes ({machine_description()}). Model `{model}`; K = {samples} sampled answers per case (seeds "
             f"0..{samples - 1}) on the test split and on a stratified val sample of {n_val} cases; s is a case's "
             "share of yes answers. F1 of the positive class, as fractions; the threshold is on s, chosen per "
             "source on val.", ""]
    for temperature in temperatures:
        block = table[table["temperature"] == temperature]
        lines += [f"Rollout temperature {temperature}:", "",
                  "| source | test cases (positives) | greedy F1 | cases whose samples disagree | F1, one sampled "
                  "answer | threshold on s (val) | F1 at that threshold | best F1 over thresholds (test) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in block.itertuples():
            lines.append(f"| {row.source} | {int(row.cases)} ({int(row.positives)}) | {row.greedy_f1:.3f} | "
                         f"{row.disagreeing:.1%} | {row.sampled_f1:.3f} | "
                         f"{'' if row.source.startswith('mean') else f'{row.threshold:.3f}'} | "
                         f"{row.threshold_f1:.3f} | {row.best_f1:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "assets" / "models" / "tiny-fairmedgemma-rl-start")
    parser.add_argument("--samples", type=int, default=16, help="sampled answers per case (K)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.5])
    parser.add_argument("--val-cases", type=int, default=600, help="stratified val sample (0: the whole split)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--variant", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    dataset = read_manifest(ensure_default_dataset(ROOT / "workspace" / "datasets"))
    loaded = load_model(args.model, device="cpu")
    samples = 4 if args.quick else args.samples
    n_val = 24 if args.quick else args.val_cases
    val_ids, _ = stratified_sample(dataset.cases, n_val or None, split="val", attributes=dataset.attributes)
    test_ids, _ = stratified_sample(dataset.cases, 24 if args.quick else None, split="test",
                                    attributes=dataset.attributes)
    tables = []
    for temperature in args.temperatures:
        kwargs = dict(samples=samples, temperature=temperature, max_new_tokens=args.max_new_tokens)
        val, _ = yes_shares(loaded, dataset, "val", val_ids, **kwargs)
        test, test_draws = yes_shares(loaded, dataset, "test", test_ids, **kwargs)
        table = headroom(val, test, test_draws, samples).assign(temperature=temperature)
        print(table.to_string(), flush=True)
        tables.append(table)
    minutes = (time.time() - started) / 60
    model = args.model.resolve()
    model = str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model)
    text = markdown(pd.concat(tables, ignore_index=True), model=model, samples=samples,
                    temperatures=args.temperatures, minutes=minutes, n_val=len(val_ids))
    print(text)
    if not args.quick:
        section = SECTION if args.variant is None else f"{SECTION}: {args.variant}"
        replace_section(ROOT / "docs" / "RESULTS.md", section, text.replace(SECTION, section, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
