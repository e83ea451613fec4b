"""How valid are a generator's pairs on the embedded benchmark, per edit setting? (The shipped card's numbers.)

For each edit setting (DDIM steps, strength, guidance) on the same test cases (round-robin over the sources,
each edited to the other sex), per source:
- reconstruction error of the null edit (composition), mean absolute grey-level difference 0..255;
- there-and-back error (reversibility);
- distance to the TRUE counterfactual inside the pixels sex may change, against the do-nothing baseline
  (the unedited image): below the baseline means the edit moved the image towards the truth;
- effectiveness: the share of counterfactuals the attribute classifier (trained on real images) assigns to the
  target sex, with that classifier's balanced accuracy on real validation images beside it;
- seconds per pair (batch 8, one thread) for all of the above: two inversions and three regenerations per
  pair, so about 2.7 times what a counterfactual alone costs (see benchmarks/bench_counterfactual.py).

Run:  .venv/bin/python benchmarks/counterfactual_generator_quality.py [--generator DIR] [--n 48] [--card]
      --card writes the table into the generator's README.md card; the table also replaces the
      "Counterfactual generator validity" section of docs/RESULTS.md.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks._report import replace_section  # noqa: E402
from fairmed_core.counterfactual import load_generator  # noqa: E402
from fairmed_core.counterfactual.analysis import generator_classifier, true_counterfactual  # noqa: E402
from fairmed_core.counterfactual.validity import make_pairs  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.runs.workspace import SHIPPED_GENERATORS  # noqa: E402

HEADING = "## Counterfactual generator validity"
SETTINGS = ((20, 1.0, 2.0), (20, 1.0, 4.0), (50, 1.0, 2.0), (20, 0.6, 4.0), (10, 1.0, 2.0))


def _cases(dataset, generator, n: int) -> pd.DataFrame:
    cases = dataset.cases[(dataset.cases["split"] == "test") & (dataset.cases["sex"] != "UNK")]
    rows = [r for depth in range(n) for s in generator.config.sources
            for sex in generator.config.classes
            for r in cases[(cases["dataset"] == s) & (cases["sex"] == sex)].iloc[depth:depth + 1]
            .to_dict(orient="records")]
    return pd.DataFrame(rows[:n])


def measure(generator, classifier, dataset, n: int, settings) -> pd.DataFrame:
    cases = _cases(dataset, generator, n)
    records = cases.to_dict(orient="records")
    images = [dataset.load_image(r["case_id"]) for r in records]
    targets = [["M" if r["sex"] == "F" else "F"] for r in records]
    rows = []
    for steps, strength, guidance in settings:
        began = time.perf_counter()
        pairs = make_pairs(generator, images, cases["case_id"], cases["dataset"], cases["sex"], targets,
                           classifier=classifier, truths=lambda i, t: true_counterfactual(records[i], "sex", t),
                           steps=steps, strength=strength, guidance=guidance, batch_size=8)
        seconds = time.perf_counter() - began
        for pair in pairs:
            v = pair.validity
            rows.append({"steps": steps, "strength": strength, "guidance": guidance, "source": pair.source,
                         "composition": v.composition_mae, "reversibility": v.reversibility_mae,
                         "truth": v.truth_mae, "baseline": v.baseline_mae,
                         "effective": None if v.effectiveness is None else float(v.effectiveness >= 0.5),
                         "seconds_per_pair": seconds / len(pairs)})
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame, classifier) -> str:
    grouped = frame.groupby(["steps", "strength", "guidance", "source"], sort=False).agg(
        n=("composition", "size"), composition=("composition", "mean"), reversibility=("reversibility", "mean"),
        truth=("truth", "mean"), baseline=("baseline", "mean"), effective=("effective", "mean"),
        seconds=("seconds_per_pair", "mean")).reset_index()
    lines = ["| Steps | Strength | Guidance | Source | Pairs | Reconstruction | There and back | To true CF | "
             "Unedited to true CF | Effective (classifier bal. acc.) | s / pair |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in grouped.itertuples():
        info = classifier.infos.get(row.source) if classifier is not None else None
        quality = "" if info is None or info.val_balanced_accuracy is None else f" ({info.val_balanced_accuracy:.2f})"
        effective = "n/a" if np.isnan(row.effective) else f"{row.effective:.2f}{quality}"
        lines.append(f"| {row.steps} | {row.strength:g} | {row.guidance:g} | {row.source} | {row.n} | "
                     f"{row.composition:.1f} | {row.reversibility:.1f} | {row.truth:.1f} | {row.baseline:.1f} | "
                     f"{effective} | {row.seconds:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default=str(SHIPPED_GENERATORS / "synth-sex"))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--card", action="store_true", help="write the table into the generator's README.md")
    parser.add_argument("--results", default=str(ROOT / "docs" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = read_manifest(ensure_default_dataset(ROOT / "workspace" / "datasets"))
    generator = load_generator(args.generator)
    classifier = generator_classifier(generator)
    began = time.perf_counter()
    frame = measure(generator, classifier, dataset, args.n, SETTINGS)
    text = "\n".join([
        HEADING, "",
        f"Written by `benchmarks/counterfactual_generator_quality.py --n {args.n}` for `{args.generator}` "
        f"({generator.info.step} training steps). {args.n} test cases of the embedded benchmark with a known sex "
        "(an equal share per source and sex), each edited to the other sex, under each edit setting. Errors are "
        "mean absolute grey-level differences (0..255). *To true CF* compares the generated counterfactual "
        "with the benchmark's true one (`render` with the other sex) inside the pixels sex may change; "
        "*Unedited to true CF* is the same distance for the unedited image, the do-nothing baseline. "
        "*Effective* is the share of edits the attribute classifier assigns to the target sex, its balanced "
        "accuracy on real validation images in brackets (below 0.75 it is too weak to judge, and the page "
        "does not judge those pairs). *s / pair* covers every check (two inversions, three regenerations).", "",
        table(frame, classifier), "",
        f"Total {time.perf_counter() - began:.0f} s on one thread.", ""])
    print(text)
    if not args.no_results:
        replace_section(Path(args.results), HEADING, text)
    if args.card:
        card = Path(args.generator) / "README.md"
        replace_section(card, HEADING, text, preamble="# Counterfactual generator\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
