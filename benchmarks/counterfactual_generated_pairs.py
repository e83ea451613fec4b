"""Do GENERATED counterfactual pairs measure what TRUE pairs measure? The shipped generator against `render`.

The pool of dermoscopy classifiers of `counterfactual_tests_validation.py` (confounded and label-biased models
that use sex to different degrees; the same recipes and seeds) answers the same test cases three ways: the
factual image, its true counterfactual (`render` with the other sex: the exact answer to "does the answer change
with sex") and the shipped diffusion generator's counterfactual (what FairMed can make for real images). Per
model: the exact flip rate (1 - ECA), the flip rate on generated pairs (all pairs, and the pairs the validity
checks pass), and their pair-by-pair agreement. Across models: how well the generated flip rate ranks and
estimates the true one. Sex-blind models are left out: they draw their own input from the latent case and never
look at a generated image, so they would flip 0 times on any pair by construction.

Run:  .venv/bin/python benchmarks/counterfactual_generated_pairs.py [--n 200] [--seeds 3]
The results replace the "Generated against true counterfactual pairs" section of docs/RESULTS.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import stats  # noqa: E402

from _report import replace_section  # noqa: E402
from counterfactual_tests_validation import (  # noqa: E402
    OTHER_SEX,
    SOURCE,
    Recipe,
    training_set,
)
from fairmed_core.counterfactual import load_generator  # noqa: E402
from fairmed_core.counterfactual.analysis import generator_classifier  # noqa: E402
from fairmed_core.counterfactual.classifiers import train_image_classifier  # noqa: E402
from fairmed_core.counterfactual.invariance import wilson_interval  # noqa: E402
from fairmed_core.counterfactual.validity import make_pairs  # noqa: E402
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.data.synth import case_from_record, render_many  # noqa: E402
from fairmed_core.runs.workspace import SHIPPED_GENERATORS  # noqa: E402

SECTION = "## Generated against true counterfactual pairs"


def _rate(flags: np.ndarray) -> str:
    if len(flags) == 0:
        return "n/a"
    low, high = wilson_interval(int(flags.sum()), len(flags))
    return f"{flags.mean():.3f} [{low:.3f}, {high:.3f}]"


def _least_dependent(results: list[dict]) -> str:
    """The line on the models that use sex least: their generated flips beyond the true ones are the flips the
    generator's artefacts cause."""
    rows = [r for r in results if r["model"] == "confounded s=0"]
    if not rows:
        return ""
    true = np.mean([r["true"].mean() for r in rows])
    generated = np.mean([r["generated"].mean() for r in rows])
    return (f"- Models that use sex least (confounded s=0): true flip rate {true:.3f}, generated {generated:.3f}; "
            "the difference is what the generator's artefacts (changes beyond the sex) make the models flip.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="test cases (half women, half men)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--generator", type=Path, default=SHIPPED_GENERATORS / "synth-sex")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="12 cases, 1 seed, 2 recipes; no doc written")
    args = parser.parse_args()
    recipes = [Recipe(strength=0.0), Recipe(strength=0.8), Recipe(strength=0.95), Recipe(label_bias=0.45),
               Recipe(label_bias=0.65)]
    if args.quick:
        args.n, args.seeds, args.train_size, args.epochs, recipes = 12, 1, 300, 3, recipes[::4]
    torch.set_num_threads(1)
    began = time.perf_counter()
    dataset = read_manifest(ensure_default_dataset(ROOT / "workspace" / "datasets"))
    rows = dataset.cases[dataset.cases.dataset == SOURCE].to_dict(orient="records")
    train_cases = [case_from_record(r) for r in rows if r["split"] in ("train", "val")]
    test_rows = [r for r in rows if r["split"] == "test" and r["sex"] in OTHER_SEX]
    women = [r for r in test_rows if r["sex"] == "F"][: args.n // 2]
    men = [r for r in test_rows if r["sex"] == "M"][: args.n - len(women)]
    chosen = women + men
    cases = [case_from_record(r) for r in chosen]
    factual = [np.asarray(dataset.load_image(r["case_id"])) for r in chosen]
    truth = render_many([c for c in cases if c.sex == "F"], sex="M") + render_many([c for c in cases if c.sex == "M"],
                                                                                    sex="F")
    generator = load_generator(args.generator)
    classifier = generator_classifier(generator)
    tick = time.perf_counter()
    pairs = make_pairs(generator, [Image.fromarray(a) for a in factual], [r["case_id"] for r in chosen],
                       [SOURCE] * len(chosen), [r["sex"] for r in chosen], [[OTHER_SEX[r["sex"]]] for r in chosen],
                       classifier=classifier, reversibility=False, batch_size=8)
    generation_s = time.perf_counter() - tick
    generated = [np.asarray(p.counterfactual) for p in pairs]
    valid = np.array([p.validity.valid for p in pairs])
    effective = np.array([p.validity.effectiveness >= 0.5 for p in pairs])

    results = []
    for seed in range(args.seeds):
        for recipe in recipes:
            images, answers, _ = training_set(train_cases, recipe, size=args.train_size, seed=seed)
            model = train_image_classifier(images, answers, source=SOURCE, seed=seed, epochs=args.epochs)
            on_factual = np.array(model.answers(factual))
            true_flip = on_factual != np.array(model.answers(truth))
            generated_flip = on_factual != np.array(model.answers(generated))
            results.append({"model": recipe.name, "seed": seed, "true": true_flip, "generated": generated_flip})
            print(f"seed {seed} {recipe.name:22s} true {true_flip.mean():.3f} generated {generated_flip.mean():.3f} "
                  f"valid-only {generated_flip[valid].mean() if valid.any() else float('nan'):.3f}", flush=True)

    lines = [SECTION, "",
             f"Written by `python benchmarks/counterfactual_generated_pairs.py --n {args.n} --seeds {args.seeds}` on "
             f"{datetime.date.today():%Y-%m-%d} ({time.perf_counter() - began:.0f} s on one thread, of which "
             f"{generation_s:.0f} s generating the pairs). {len(chosen)} {SOURCE} test cases ({len(women)} women, "
             f"{len(men)} men), each edited to the other sex by `{args.generator.relative_to(ROOT)}` at its defaults "
             f"({generator.config.inversion_steps} DDIM steps, strength {generator.config.strength:g}, guidance "
             f"{generator.config.guidance:g}). Of these pairs {int(valid.sum())} pass the validity checks and "
             f"{int(effective.sum())} are recognised as the target sex by the attribute classifier. The models are "
             "the pool of the section above (same recipes and training seeds; sex-blind models left out, see the "
             "script's docstring). *Agreement*: share of pairs where the generated pair flips exactly when the "
             "true pair does.", "",
             "| model | seed | true flip rate [95% CI] | generated, all pairs | generated, valid pairs | agreement | "
             "generated flips without a true flip | true flips missed |",
             "|---|---:|---|---|---|---:|---:|---:|"]
    for r in results:
        t, g = r["true"], r["generated"]
        lines.append(f"| {r['model']} | {r['seed']} | {_rate(t)} | {_rate(g)} | {_rate(g[valid])} | "
                     f"{float((t == g).mean()):.3f} | {int((g & ~t).sum())} | {int((t & ~g).sum())} |")
    true_rates = np.array([r["true"].mean() for r in results])
    generated_rates = np.array([r["generated"].mean() for r in results])
    valid_rates = np.array([r["generated"][valid].mean() for r in results]) if valid.any() else None
    rho = stats.spearmanr(true_rates, generated_rates)
    lines += ["", "**Across models.**", "",
              f"- Spearman rank correlation of the generated flip rate with the true one: {rho.statistic:.2f} "
              f"(p {rho.pvalue:.2g}, {len(results)} models)"
              + (f"; valid pairs only: {stats.spearmanr(true_rates, valid_rates).statistic:.2f}"
                 if valid_rates is not None and len(set(valid_rates)) > 1 else "") + ".",
              f"- Mean generated minus true flip rate: {np.mean(generated_rates - true_rates):+.3f} (range "
              f"{np.min(generated_rates - true_rates):+.3f} to {np.max(generated_rates - true_rates):+.3f}).",
              _least_dependent(results), ""]
    text = "\n".join(line for line in lines if line is not None)
    print(text)
    if not args.quick:
        replace_section(args.results, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
