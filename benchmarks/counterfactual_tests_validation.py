"""Do FairMed's counterfactual-invariance tests find what they should? A check on the synthetic benchmark, where
every case has its true counterfactual, so the truth about each model is known.

A pool of small image classifiers (``fairmed_core.counterfactual.classifiers``) answers "is this skin lesion
suspicious?" on the benchmark's dermatology source (synth_derm). The attribute is sex: the benchmark draws terminal
hair strands on men and nothing else changes with sex, so hair is a pure nuisance that a model picks up only if
its training data make it worth picking up. Every model trains on 2,000 cases drawn with replacement from the
default dataset's train + val split, in one of three recipes:

* confounded, strength s: resampled so that P(M | yes) = (1 + s) / 2 and P(M | no) = (1 - s) / 2 at the source's
  prevalence (odds ratio of label and sex ((1 + s) / (1 - s))^2); the true labels, but sex predicts them.
* label-biased, rate r: resampled without confounding, then each label is, with probability r, replaced by a
  sex-based guess (yes for men, no for women), as an annotator's bias would; past r = 0.5 the guess outweighs
  the finding for the cases where they disagree.
* sex-blind (``AttributeBlindClassifier``): trained and run on every image re-drawn with sex fixed to F
  (``render(case, sex="F")``), so its answer cannot depend on sex: ECA = 1 exactly, whatever its labels say
  about sex. One is trained on unconfounded data, one on the most sex-laden labels of the pool.

For every model and evaluation set (the default dataset's test split, cases whose sex is recorded; and a larger
fresh draw from the same generator): the exact ECA from the true counterfactual pairs (each case drawn with the
other sex), the flip table (flip rate, Wilson interval, McNemar's test overall and per sex), and the
conditional-independence test of arXiv 2504.19621 (H0: answer independent of sex given Z) over several seeds with
two latents Z: the oracle latent patient (every latent variable of the case, age and skin tone; not sex) and a
cheap image latent (PCA of the 16x16 average-pooled pixels). Results replace the section "Counterfactual-invariance
tests on the benchmark" of docs/RESULTS.md (or ``--results``).

Run:  .venv/bin/python benchmarks/counterfactual_tests_validation.py           (about 8 minutes on one thread)
      .venv/bin/python benchmarks/counterfactual_tests_validation.py --quick   (smoke run, ~25 s; writes a section
                                                                               only where --results names a file)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
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
from scipy import stats  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402

from _report import replace_section  # noqa: E402
from fairmed_core.counterfactual.classifiers import AttributeBlindClassifier, train_image_classifier  # noqa: E402
from fairmed_core.counterfactual.invariance import (  # noqa: E402
    conditional_independence_test,
    counterfactual_accuracy,
    flip_table,
    wilson_interval,
)
from fairmed_core.data import ensure_default_dataset, read_manifest  # noqa: E402
from fairmed_core.data.schema import NO, YES  # noqa: E402
from fairmed_core.data.synth import (  # noqa: E402
    SKIN_TONES,
    SynthCase,
    SynthConfig,
    SynthLatent,
    case_from_record,
    generate,
    render_many,
)

SECTION = "## Counterfactual-invariance tests on the benchmark"
SOURCE = "synth_derm"
ATTRIBUTE = "sex"
BLIND_VALUE = "F"  # the sex every image of a sex-blind model is drawn with
OTHER_SEX = {"F": "M", "M": "F"}
ALPHA = 0.05
# The latent patient minus its noise seed (an integer that seeds textures, not a quantity a head can use).
ORACLE_LATENT_FIELDS = tuple(f.name for f in dataclasses.fields(SynthLatent) if f.name != "noise_seed")
LATENTS = {"oracle": "ci_p_oracle", "pixels-PCA": "ci_p_pca"}  # latent name -> result column


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one model of the pool is trained: confounding strength s, label-bias rate r, and blindness."""

    strength: float = 0.0
    label_bias: float = 0.0
    blind: bool = False

    @property
    def name(self) -> str:
        training = f"r={self.label_bias:g}" if self.label_bias else f"s={self.strength:g}"
        if self.blind:
            return f"sex-blind ({training} labels)"
        return f"label-biased {training}" if self.label_bias else f"confounded {training}"


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """Cases with recorded sex, their factual and true counterfactual images, and two latents of each case."""

    name: str
    description: str
    cases: tuple[SynthCase, ...]
    factual_images: tuple[np.ndarray, ...]
    counterfactual_images: tuple[np.ndarray, ...]
    latents: dict  # latent name -> (n, d) array

    @property
    def sex(self) -> np.ndarray:
        return np.array([case.sex for case in self.cases])

    @property
    def counterfactual_cases(self) -> list[SynthCase]:
        return [dataclasses.replace(case, sex=OTHER_SEX[case.sex]) for case in self.cases]


def answer_pairs(model, evaluation: EvaluationSet) -> tuple[list[str], list[str]]:
    """The model's answers on the factual images and on their true counterfactuals."""
    if isinstance(model, AttributeBlindClassifier):  # it draws its own input from the case
        return model.answers(evaluation.cases), model.answers(evaluation.counterfactual_cases)
    return model.answers(list(evaluation.factual_images)), model.answers(list(evaluation.counterfactual_images))


def true_counterfactuals(cases: list[SynthCase]) -> list[np.ndarray]:
    """Each case drawn with the other sex: the same latent patient, only the sex-tied appearance changed."""
    images: list[np.ndarray | None] = [None] * len(cases)
    for sex, other in OTHER_SEX.items():
        index = [i for i, case in enumerate(cases) if case.sex == sex]
        for i, image in zip(index, render_many([cases[i] for i in index], sex=other)):
            images[i] = image
    return images  # type: ignore[return-value]


def oracle_latent(cases: list[SynthCase]) -> np.ndarray:
    """The latent patient without sex: its latent variables, age, and skin tone one-hot."""
    return np.array([[float(getattr(case.latent, name)) for name in ORACLE_LATENT_FIELDS] + [float(case.age)]
                     + [float(case.skin_tone == tone) for tone in SKIN_TONES] for case in cases])


def pixel_pca_latent(images: list[np.ndarray], components: int) -> np.ndarray:
    """A cheap image latent: the first principal components of the 4x4 average-pooled pixels (16x16 per channel)."""
    pixels = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
    pixels = pixels.permute(0, 3, 1, 2) if pixels.ndim == 4 else pixels[:, None]
    pooled = torch.nn.functional.avg_pool2d(pixels, 4).flatten(1).numpy().astype(np.float64)
    pooled -= pooled.mean(axis=0)
    _, _, basis = np.linalg.svd(pooled, full_matrices=False)
    return pooled @ basis[:components].T


def evaluation_set(name: str, description: str, cases: list[SynthCase], *, components: int) -> EvaluationSet:
    factual = render_many(cases)
    return EvaluationSet(name=name, description=description, cases=tuple(cases), factual_images=tuple(factual),
                         counterfactual_images=tuple(true_counterfactuals(cases)),
                         latents={"oracle": oracle_latent(cases),
                                  "pixels-PCA": pixel_pca_latent(factual, components)})


def sex_auroc(latent: np.ndarray, sex: np.ndarray) -> float:
    """How much of sex a latent carries: 5-fold cross-validated AUROC of a logistic regression of sex on it."""
    standardised = (latent - latent.mean(axis=0)) / np.where(latent.std(axis=0) > 0, latent.std(axis=0), 1.0)
    return float(cross_val_score(LogisticRegression(max_iter=1000), standardised, sex == "M", cv=5,
                                 scoring="roc_auc").mean())


def confounded_sample(cases: list[SynthCase], *, strength: float, size: int, rng: np.random.Generator
                      ) -> list[SynthCase]:
    """Resample ``cases`` (with replacement) to ``size`` cases with the prevalence p of ``cases`` and
    P(M | yes) = (1 + s) / 2, P(M | no) = (1 - s) / 2: at s = 0 sex says nothing about the label (and the sample
    is half women, half men), at s = 1 it says everything."""
    if not 0.0 <= strength < 1.0:
        raise SystemExit(f"a confounding strength must lie in [0, 1), got {strength}")
    sex = np.array([case.sex for case in cases])
    label = np.array([case.answer == YES for case in cases])
    prevalence = float(label.mean())
    counts = {(group, positive): int(round(size * (prevalence if positive else 1.0 - prevalence)
                                           * (1.0 + (strength if (group == "M") == positive else -strength)) / 2))
              for group in ("M", "F") for positive in (True, False)}
    chosen = [rng.choice(np.flatnonzero((sex == group) & (label == positive)), count, replace=True)
              for (group, positive), count in counts.items()]
    return [cases[i] for i in rng.permutation(np.concatenate(chosen))]


def training_set(cases: list[SynthCase], recipe: Recipe, *, size: int, seed: int
                 ) -> tuple[list[np.ndarray], list[str], np.ndarray]:
    """Images and answers one recipe trains on, and the true sex of each training case."""
    rng = np.random.default_rng([seed, int(round(recipe.strength * 1000)), int(round(recipe.label_bias * 1000))])
    sample = confounded_sample(cases, strength=recipe.strength, size=size, rng=rng)
    guess = rng.random(len(sample)) < recipe.label_bias
    answers = [(YES if case.sex == "M" else NO) if guessed else case.answer for case, guessed in zip(sample, guess)]
    images = render_many(sample, **({ATTRIBUTE: BLIND_VALUE} if recipe.blind else {}))
    return images, answers, np.array([case.sex for case in sample])


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def evaluate(model, recipe: Recipe, seed: int, evaluation: EvaluationSet, *, ci_seeds: int) -> dict:
    factual, counterfactual = answer_pairs(model, evaluation)
    accuracy = counterfactual_accuracy(factual, counterfactual)
    pairs = pd.DataFrame({"answer": factual, "counterfactual_answer": counterfactual, "sex": evaluation.sex})
    table = flip_table(pairs, group_cols=(ATTRIBUTE,), positive=YES)
    overall = table.row("ALL", "ALL")
    by_sex = [row for row in table.rows if row.attribute == ATTRIBUTE]
    truth = np.array([case.answer for case in evaluation.cases])
    predictions = np.array([answer == YES for answer in factual])
    row = {"model": recipe.name, "blind": recipe.blind, "seed": seed, "set": evaluation.name, "n": len(factual),
           "accuracy": float(np.mean(np.array(factual) == truth)), "positive_rate": float(predictions.mean()),
           "eca": accuracy.eca, "flips": overall.flips, "flip_rate": overall.flip_rate, "flip_low": overall.ci_low,
           "flip_high": overall.ci_high, "mcnemar_p": overall.p_value,
           "mcnemar_p_by_sex": min(r.p_value_holm for r in by_sex)}
    for name, column in LATENTS.items():
        row[column] = [conditional_independence_test(evaluation.latents[name], evaluation.sex, predictions,
                                                     seed=ci_seed).p_value for ci_seed in range(ci_seeds)]
    return row


def summary_rows(frame: pd.DataFrame) -> list[dict]:
    """Per evaluation set and latent: type-I error on the blind models, power on every model with ECA < 1 (also
    by recipe), and the Spearman correlation of ECA with the mean p-value across models."""
    out = []
    for set_name, part in frame.groupby("set", sort=False):
        blind = part[part.blind]
        dependent = part[part.eca < 1.0]
        for name, column in LATENTS.items():

            def rejections(rows: pd.DataFrame) -> tuple[int, int]:
                values = [p for ps in rows[column] for p in ps]
                return sum(p < ALPHA for p in values), len(values)

            mean_p = part[column].map(np.mean)
            rho, rho_p = stats.spearmanr(part["eca"], mean_p) if part["eca"].nunique() > 1 else (np.nan, np.nan)
            by_model = {model: (rows["eca"].mean(), rejections(rows))
                        for model, rows in dependent.groupby("model", sort=False)}
            out.append({"set": set_name, "latent": name, "type1": rejections(blind), "power": rejections(dependent),
                        "by_model": by_model, "rho": float(rho), "rho_p": float(rho_p)})
    return out


def rate(counts: tuple[int, int]) -> str:
    k, n = counts
    if n == 0:
        return "n/a"
    low, high = wilson_interval(k, n)
    return f"{k / n:.2f} ({k}/{n}; {low:.2f}-{high:.2f})"


def markdown(frame: pd.DataFrame, summaries: list[dict], sets: list[EvaluationSet], recipes: list[Recipe], *,
             args, command: str, conditionals: dict, timings: dict) -> str:
    lines = [SECTION, "",
             f"Generated by `{command}` on {datetime.date.today().isoformat()}: {timings['total']:.0f} s wall clock, "
             f"{timings['cpu']:.0f} s CPU on one thread (training {timings['train']:.0f} s and evaluation "
             f"{timings['evaluate']:.0f} s wall; the wall clock grows when other work shares the machine).", "",
             f"**Setup.** Source {SOURCE}, attribute sex (the benchmark draws hair strands on men; nothing else "
             f"changes with sex). One `SmallCNN` (~3k parameters, {args.epochs} epochs, Adam 3e-3, batch 64) per "
             f"recipe and training seed ({', '.join(map(str, range(args.seeds)))}; the seed sets resampling, label "
             f"bias, initialisation and batch order), each trained on {args.train_size} cases drawn with replacement "
             "from the default dataset's train + val split:", "",
             "- *confounded s*: P(M | yes) = (1 + s) / 2 and P(M | no) = (1 - s) / 2 at the split's prevalence "
             "(odds ratio of label and sex ((1 + s) / (1 - s))^2), true labels;",
             "- *label-biased r*: no confounding, but each training label is, with probability r, a sex-based "
             "guess (yes for men, no for women) instead of the finding;",
             f"- *sex-blind*: `AttributeBlindClassifier`, trained and run on every image re-drawn with sex = "
             f"{BLIND_VALUE}, so its answer cannot depend on sex (ECA = 1 by construction), trained on the labels "
             "of the recipe in brackets.", "",
             f"Recipes: {', '.join(r.name for r in recipes)}. P(yes | M) / P(yes | F) in the training labels, "
             "seed 0: " + "; ".join(f"{name}: {m:.3f} / {f:.3f}" for name, (m, f) in conditionals.items()) + ".",
             "", "**Evaluation sets** (cases whose sex is recorded; A = the recorded sex):"]
    lines += [f"- `{s.name}`: {s.description}, n = {len(s.cases)}; sex is predicted from Z oracle with AUROC "
              f"{sex_auroc(s.latents['oracle'], s.sex):.2f} and from Z pixels-PCA with AUROC "
              f"{sex_auroc(s.latents['pixels-PCA'], s.sex):.2f} (5-fold logistic regression)." for s in sets]
    lines += ["", "**Per model.** ECA is exact: each case against its true counterfactual (`render` with the other "
              "sex). The flip rate is 1 - ECA with its 95% Wilson interval; McNemar (exact) tests "
              "yes->no against no->yes flips, overall and per sex (the smaller Holm-adjusted p of the two sexes). "
              f"CI test: `conditional_independence_test` (defaults: one-sided, 50/50 split, MLP heads width 16, "
              f"300 epochs), seeds 0-{args.ci_seeds - 1}; mean ± sd of p over the seeds and the number of seeds "
              f"with p < {ALPHA}. Z oracle = the latent patient without sex ({len(ORACLE_LATENT_FIELDS)} latent "
              f"variables, age, skin tone one-hot); Z pixels-PCA = the first {args.pca_components} principal "
              "components of the 16x16 average-pooled image, fit on the evaluation set's factual images.", ""]
    for evaluation in sets:
        part = frame[frame.set == evaluation.name]
        lines += [f"`{evaluation.name}` (n = {len(evaluation.cases)}):", "",
                  "| model | seed | accuracy | positive rate | ECA | flip rate [95% CI] | McNemar p (all) | "
                  "McNemar p (per sex, Holm) | CI p, Z oracle | CI p, Z pixels-PCA |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---|---|"]
        for row in part.to_dict(orient="records"):
            cells = []
            for column in LATENTS.values():
                values = np.asarray(row[column])
                cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f} "
                             f"({int((values < ALPHA).sum())}/{len(values)})")
            lines.append(f"| {row['model']} | {row['seed']} | {row['accuracy']:.3f} | {row['positive_rate']:.3f} | "
                         f"{row['eca']:.3f} | {row['flip_rate']:.3f} [{row['flip_low']:.3f}, {row['flip_high']:.3f}] | "
                         f"{fmt_p(row['mcnemar_p'])} | {fmt_p(row['mcnemar_p_by_sex'])} | {cells[0]} | {cells[1]} |")
        lines.append("")
    lines += [f"**Summary.** Rejection rates of the CI test at α = {ALPHA} over (model, CI seed) pairs, with 95% "
              "Wilson intervals (the seeds of one model share its data, so the pairs are not independent). "
              "Type-I error: the sex-blind models (ECA = 1, H0 true). Power: every model whose ECA is below 1 "
              "(H0 false), then per recipe with its mean ECA. ρ: Spearman correlation across all models of ECA "
              "with the mean p-value over CI seeds (positive: the lower a model's ECA, the smaller its p-value).", "",
              "| evaluation set | Z | type-I error | power (ECA < 1) | power per recipe (mean ECA) | ρ(ECA, mean p) |",
              "|---|---|---|---|---|---|"]
    for s in summaries:
        by = "; ".join(f"{model} ({eca:.2f}): {k}/{n}" for model, (eca, (k, n)) in s["by_model"].items())
        lines.append(f"| {s['set']} | {s['latent']} | {rate(s['type1'])} | {rate(s['power'])} | {by} | "
                     f"{s['rho']:.2f} (p {fmt_p(s['rho_p'])}) |")
    lines += ["", *reading(frame, summaries), ""]
    return "\n".join(lines)


def reading(frame: pd.DataFrame, summaries: list[dict]) -> list[str]:
    """What the numbers say, computed from them (so a rerun cannot leave stale words behind)."""
    dependent = frame[frame.eca < 1.0]
    blind = frame[frame.blind]
    by_model = frame[~frame.blind].groupby("model", sort=False)["eca"].agg(["mean", "min", "max"])
    text = ["**Reading.**", "",
            "- Ground truth: ECA per recipe, mean [range] over seeds and evaluation sets: "
            + ", ".join(f"{m}: {r['mean']:.3f} [{r['min']:.3f}-{r['max']:.3f}]" for m, r in by_model.iterrows())
            + (f"; the sex-blind models' ECA is {blind['eca'].min():.3f} in every run (1 by construction)."
               if len(blind) else "; no sex-blind model in this run.")]
    if len(dependent):
        mcnemar_all = (dependent.mcnemar_p < ALPHA).mean()
        mcnemar_sex = (dependent.mcnemar_p_by_sex < ALPHA).mean()
        text.append(f"- Flip test on true pairs: any flip proves dependence, so with true counterfactuals the flip "
                    f"rate itself is exact (0 on every blind model, > 0 on all {len(dependent)} runs with ECA < 1). "
                    "McNemar's test asks something else, whether flips go one way more than the other: pooled over "
                    f"both sexes it rejects in {mcnemar_all:.0%} of the runs with ECA < 1, per sex (Holm) in "
                    f"{mcnemar_sex:.0%}. A model that reads hair as 'male, so more likely yes' flips men yes->no and "
                    "women no->yes; pooled, the two directions cancel. Read McNemar per group, next to the flip rate.")
    for s in summaries:
        text.append(f"- CI test, `{s['set']}`, Z {s['latent']}: type-I error {rate(s['type1'])}, power "
                    f"{rate(s['power'])}, ρ(ECA, mean p) = {s['rho']:.2f}.")
    bands = ((0.0, 0.8), (0.8, 0.95), (0.95, 1.0))
    for name, column in LATENTS.items():
        parts = []
        for low, high in bands:
            rows = dependent[(dependent.eca >= low) & (dependent.eca < high)]
            values = [p for ps in rows[column] for p in ps]
            if values:
                parts.append(f"ECA in [{low:g}, {high:g}): {rate((sum(p < ALPHA for p in values), len(values)))}")
        if parts:
            text.append(f"- Power by true ECA, both evaluation sets pooled, Z {name}: " + "; ".join(parts) + ".")
    for name, column in LATENTS.items():
        if not len(dependent):
            break
        spreads = dependent[column].map(lambda ps: np.std(ps, ddof=1) if len(ps) > 1 else 0.0)
        split = int(dependent[column].map(lambda ps: min(ps) < ALPHA and max(ps) > 0.5).sum())
        text.append(f"- Seed to seed (Z {name}): on one model and one data set the CI p-value has a median "
                    f"standard deviation of {spreads.median():.2f} across the {len(frame[column].iloc[0])} CI "
                    f"seeds; for {split} of {len(dependent)} runs with ECA < 1 one seed gives p < {ALPHA} and "
                    "another p > 0.5.")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (one model pool each)")
    parser.add_argument("--ci-seeds", type=int, default=5, help="seeds of the conditional-independence test")
    parser.add_argument("--strengths", type=float, nargs="*", default=[0.0, 0.8, 0.95],
                        help="confounding strengths s of the confounded models")
    parser.add_argument("--label-bias", type=float, nargs="*", default=[0.45, 0.65],
                        help="label-bias rates r of the label-biased models")
    parser.add_argument("--blind", nargs="*", default=["s=0", "r=0.65"],
                        help="training labels of the sex-blind models, as s=VALUE or r=VALUE")
    parser.add_argument("--train-size", type=int, default=2000, help="cases in each resampled training set")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--large-n", type=int, default=3000,
                        help="cases of a fresh draw from the generator (seed 1) as a second evaluation set; 0: none")
    parser.add_argument("--pca-components", type=int, default=16)
    parser.add_argument("--datasets", type=Path, default=ROOT / "workspace" / "datasets",
                        help="folder holding (or to hold) synth-default")
    parser.add_argument("--results", type=Path, default=None,
                        help="results document to update (default docs/RESULTS.md; --quick writes only here)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 2 CI seeds, confounded s=0 and 0.95 and one sex-blind model, "
                             "600 cases, 10 epochs, no fresh draw")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.ci_seeds, args.strengths, args.label_bias, args.blind = 1, 2, [0.0, 0.95], [], ["s=0.95"]
        args.train_size, args.epochs, args.large_n = 600, 10, 0
    recipes = [Recipe(strength=s) for s in args.strengths] + [Recipe(label_bias=r) for r in args.label_bias]
    for token in args.blind:
        key, _, value = token.partition("=")
        if key not in ("s", "r") or not value:
            parser.error(f"--blind takes s=VALUE or r=VALUE, got {token!r}")
        recipes.append(Recipe(strength=float(value), blind=True) if key == "s"
                       else Recipe(label_bias=float(value), blind=True))
    command = "python benchmarks/counterfactual_tests_validation.py" + "".join(f" {a}" for a in sys.argv[1:])
    torch.set_num_threads(1)
    started, started_cpu = time.perf_counter(), time.process_time()

    dataset = read_manifest(ensure_default_dataset(args.datasets))
    rows = dataset.cases[dataset.cases.dataset == SOURCE].to_dict(orient="records")
    train_cases = [case_from_record(r) for r in rows if r["split"] in ("train", "val")]
    test_cases = [case_from_record(r) for r in rows if r["split"] == "test" and r["sex"] in OTHER_SEX]
    sets = [evaluation_set("default test split", f"the default dataset's {SOURCE} test split", test_cases,
                           components=args.pca_components)]
    if args.large_n:
        fresh = [case for case in generate(SynthConfig(n=args.large_n, seed=1, sources=(SOURCE,)))
                 if not case.demo_missing]
        sets.append(evaluation_set(f"fresh draw n={args.large_n}",
                                   f"every {SOURCE} case of `SynthConfig(n={args.large_n}, seed=1, "
                                   f"sources=('{SOURCE}',))` with recorded sex (default knobs, all splits)", fresh,
                                   components=args.pca_components))

    results, conditionals = [], {}
    train_s = evaluate_s = 0.0
    for seed in range(args.seeds):
        for index, recipe in enumerate(recipes):
            tick = time.perf_counter()
            images, answers, sex = training_set(train_cases, recipe, size=args.train_size, seed=seed)
            if seed == 0:
                positive = np.array(answers) == YES
                conditionals[recipe.name] = (positive[sex == "M"].mean(), positive[sex == "F"].mean())
            classifier = train_image_classifier(images, answers, source=SOURCE, seed=seed, epochs=args.epochs)
            model = AttributeBlindClassifier(classifier, attribute=ATTRIBUTE, value=BLIND_VALUE) \
                if recipe.blind else classifier
            tock = time.perf_counter()
            for evaluation in sets:
                row = evaluate(model, recipe, seed, evaluation, ci_seeds=args.ci_seeds)
                results.append({**row, "recipe_index": index})
                print(f"seed {seed} {recipe.name:26s} {evaluation.name:22s} acc {row['accuracy']:.3f} "
                      f"ECA {row['eca']:.3f} McNemar(sex) {fmt_p(row['mcnemar_p_by_sex'])} CI p oracle "
                      f"{np.mean(row['ci_p_oracle']):.3f} PCA {np.mean(row['ci_p_pca']):.3f}", flush=True)
            train_s += tock - tick
            evaluate_s += time.perf_counter() - tock

    order = {s.name: i for i, s in enumerate(sets)}
    frame = pd.DataFrame(results)
    frame = frame.assign(set_index=frame["set"].map(order)).sort_values(["set_index", "recipe_index", "seed"])
    summaries = summary_rows(frame)
    timings = {"total": time.perf_counter() - started, "cpu": time.process_time() - started_cpu, "train": train_s,
               "evaluate": evaluate_s}
    text = markdown(frame, summaries, sets, recipes, args=args, command=command, conditionals=conditionals,
                    timings=timings)
    print(text)
    target = args.results if args.results is not None else (None if args.quick else ROOT / "docs" / "RESULTS.md")
    if target is not None:
        replace_section(target, SECTION, text)
        print(f"wrote the section to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
