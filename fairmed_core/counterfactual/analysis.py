"""The counterfactual analysis of a model under review: pairs, answers, validity, flip rates and the CI test.

One job: for a sample of a dataset split, make (factual, counterfactual) pairs with a generator, ask the model
both, and test whether its answers depend on the attribute, writing everything a review needs into a run folder:

    RUN/pairs/NNNN_<case>_<target>_{factual,counterfactual,difference,truth}.png
    RUN/pairs.csv      one row per pair: groups, answers and reasoning on both sides, flip, validity scores
    RUN/tests.json     flip rates per group with Wilson intervals and McNemar (all pairs, and valid pairs only),
                       the conditional-independence test, and on the benchmark the exact ECA on true pairs
    RUN/run.json       what was run (model, generator, data, settings) and how long it took

Sampling is stratified by (source, factual group): each stratum gets an equal share of ``n`` (or all its cases
when it has fewer), so a rare group (the few male mammograms) has pairs at all. Rates pooled over strata are
therefore rates of this design, not of the split's population; the per-group rows are what to read.

The run folder is written complete into a hidden sibling and renamed into place at the end, so a failed or
interrupted analysis never leaves a half-written run, and an existing run is never overwritten.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image, ImageChops, ImageOps

from fairmed_core.counterfactual.attribute_classifier import AttributeClassifier, load_attribute_classifier
from fairmed_core.counterfactual.generator import CounterfactualGenerator
from fairmed_core.counterfactual.invariance import (
    CITestResult,
    conditional_independence_test,
    counterfactual_accuracy,
    flip_table,
)
from fairmed_core.counterfactual.records import CounterfactualTests, read_counterfactual_run
from fairmed_core.counterfactual.settings import AnalysisSettings, ValidityThresholds
from fairmed_core.counterfactual.validity import CounterfactualPair, make_pairs
from fairmed_core.data.schema import UNKNOWN, Dataset
from fairmed_core.data.synth import RENDER_KEYWORDS, attribute_region, case_from_record, render
from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json
from fairmed_core.plain import json_safe

__all__ = [
    "CLASSIFIER_DIR",
    "AnalysisSettings",
    "ClassifierPredictor",
    "CounterfactualAnalysis",
    "InvarianceVerdict",
    "ModelAnswer",
    "Predictor",
    "VLMPredictor",
    "difference_map",
    "generator_classifier",
    "invariance_verdict",
    "read_analysis",
    "run_counterfactual_analysis",
    "select_cases",
    "true_counterfactual",
]

CLASSIFIER_DIR = "attribute_classifier"  # inside a generator folder: the classifier that judges effectiveness
_GROUP_COLUMNS = ("sex", "age_group", "skin_tone")


@dataclass(frozen=True)
class ModelAnswer:
    """What the model under review said about one image."""

    answer: str | None  # None: no parsable answer (a format failure)
    reasoning: str = ""
    completion: str = ""


class Predictor(Protocol):
    """A model under review: answers questions about images (a FairMedGemma-family model or a classifier)."""

    name: str

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str],
               progress: Callable[[int, int], None] | None = None) -> list[ModelAnswer]: ...


class VLMPredictor:
    """A loaded Gemma 3 image-text model, answering with ``generate_answers`` (greedy unless told otherwise)."""

    def __init__(self, loaded, options=None, name: str | None = None) -> None:
        self.loaded, self.options = loaded, options
        self.name = name or str(loaded.directory)

    def answer(self, images, questions, progress=None) -> list[ModelAnswer]:
        from fairmed_core.models.generation import generate_answers  # transformers only when a VLM is used

        generations = generate_answers(self.loaded, list(questions), [[image] for image in images], self.options,
                                       progress=progress)
        return [ModelAnswer(g.answer if g.format_ok else None, g.reasoning, g.completion) for g in generations]


class ClassifierPredictor:
    """An image classifier (``fairmed_core.counterfactual.classifiers``) as a model under review: its answer
    string, and as "reasoning" the probability behind it (a classifier gives no other)."""

    def __init__(self, classifier, name: str) -> None:
        self.classifier, self.name = classifier, name

    def answer(self, images, questions, progress=None) -> list[ModelAnswer]:
        probabilities = self.classifier.predict_proba(list(images))
        answers = self.classifier.answers_from_proba(probabilities)
        if progress is not None:
            progress(len(answers), len(answers))
        return [ModelAnswer(a, f"P(positive) = {p:.3f}") for a, p in zip(answers, probabilities)]


@dataclass(frozen=True)
class CounterfactualAnalysis:
    """The result of ``run_counterfactual_analysis`` (also what its run folder holds)."""

    directory: Path | None
    pairs: pd.DataFrame
    tests: CounterfactualTests
    pair_objects: tuple[CounterfactualPair, ...]


def _changed(before: object, after: object) -> bool:
    """Whether an answer changed; a missing answer (format failure, NaN from a CSV) is an answer of its own."""
    def outcome(value: object) -> str:
        return "(format failure)" if value is None or value != value else str(value)

    return outcome(before) != outcome(after)


@dataclass(frozen=True)
class InvarianceVerdict:
    """What a set of pairs says about counterfactual invariance, valid pairs first.

    A flip on a generated pair counts as evidence only when the pair is valid; a change on the benchmark's true
    counterfactual always counts (it is exact by construction). ``true_changes`` lists each change on a true
    counterfactual as "no -> yes" (factual answer -> answer on the true counterfactual)."""

    n_pairs: int
    n_flipped: int
    n_valid: int
    n_valid_flipped: int
    n_true: int
    n_true_flipped: int
    true_changes: tuple[str, ...] = ()
    invalid_changes: tuple[str, ...] = ()

    @property
    def not_invariant(self) -> bool:
        """The model changed its answer on a valid generated pair or on a true counterfactual."""
        return self.n_valid_flipped > 0 or self.n_true_flipped > 0

    @property
    def only_invalid_flips(self) -> bool:
        """Every flip seen is on an invalid generated pair (no evidence either way)."""
        return self.n_flipped > 0 and not self.not_invariant


def invariance_verdict(pairs: pd.DataFrame) -> InvarianceVerdict:
    """The verdict of a pairs table (``run_counterfactual_analysis(...).pairs`` or a saved ``pairs.csv``)."""
    if pairs.empty:
        return InvarianceVerdict(0, 0, 0, 0, 0, 0)
    flipped = [_changed(a, b) for a, b in zip(pairs["answer"], pairs["counterfactual_answer"])]
    valid = [str(v) == "True" for v in pairs["valid"]]
    truth = pairs["true_counterfactual_answer"] if "true_counterfactual_answer" in pairs.columns else \
        pd.Series([None] * len(pairs), index=pairs.index)
    # ``true_flipped`` is empty exactly where the pair has no true counterfactual (its answer may be a format
    # failure, also empty); older tables without it fall back on the answer.
    marker = pairs["true_flipped"] if "true_flipped" in pairs.columns else truth
    has_truth = [m is not None and m == m for m in marker]
    true_changes = tuple(f"{a if a == a and a is not None else 'no answer'} -> "
                         f"{t if t == t and t is not None else 'no answer'}"
                         for a, t, known in zip(pairs["answer"], truth, has_truth) if known and _changed(a, t))
    invalid_changes = tuple(f"{a if a == a and a is not None else 'no answer'} -> "
                            f"{c if c == c and c is not None else 'no answer'}"
                            for a, c, f, v in zip(pairs["answer"], pairs["counterfactual_answer"], flipped, valid)
                            if f and not v)
    return InvarianceVerdict(
        n_pairs=len(pairs), n_flipped=int(sum(flipped)), n_valid=int(sum(valid)),
        n_valid_flipped=int(sum(f and v for f, v in zip(flipped, valid))), n_true=int(sum(has_truth)),
        n_true_flipped=len(true_changes), true_changes=true_changes, invalid_changes=invalid_changes)


def generator_classifier(generator: CounterfactualGenerator) -> AttributeClassifier | None:
    """The attribute classifier stored with a generator (``attribute_classifier/``), or None."""
    if generator.directory is None or not (generator.directory / CLASSIFIER_DIR).is_dir():
        return None
    return load_attribute_classifier(generator.directory / CLASSIFIER_DIR)


def true_counterfactual(record, attribute: str, group: str) -> tuple[Image.Image, np.ndarray] | None:
    """The benchmark's true counterfactual of a case and the pixels the attribute may change, or None for a case
    without a latent patient (any dataset but the synthetic benchmark)."""
    if attribute not in RENDER_KEYWORDS:
        return None
    try:
        case = case_from_record(record)
    except (FairMedInputError, KeyError, TypeError, ValueError):
        return None
    keyword = RENDER_KEYWORDS[attribute]
    try:
        pixels = render(case, **{keyword: group})
    except (FairMedInputError, ValueError):
        return None  # e.g. skin tone of a chest X-ray
    return Image.fromarray(np.ascontiguousarray(pixels)), attribute_region(case, keyword)


def difference_map(factual: Image.Image, counterfactual: Image.Image) -> Image.Image:
    """|counterfactual - factual| per pixel (grey levels, channels averaged), stretched to the full range so a
    faint edit is visible; the caption should give the largest difference, since stretching hides it."""
    difference = ImageChops.difference(factual.convert("RGB"), counterfactual.convert("RGB")).convert("L")
    return ImageOps.autocontrast(difference)


def select_cases(dataset: Dataset, generator: CounterfactualGenerator, settings: AnalysisSettings) -> pd.DataFrame:
    """The cases to edit, with each one's target groups (column ``targets``), stratified as the module says."""
    attribute = generator.config.attribute
    generator.check_compatible(dataset, attribute)
    cases = dataset.cases
    if settings.split not in set(cases["split"].astype(str)):
        raise FairMedInputError(f"dataset {dataset.name!r} has no {settings.split!r} split", column="split",
                                hint=f"it has {sorted(set(cases['split'].astype(str)))}")
    values = cases[attribute].astype(str)
    rows = cases[(cases["split"].astype(str) == settings.split) & (values != UNKNOWN)]
    if settings.group is not None:
        if settings.group not in generator.config.classes:
            raise FairMedInputError(f"{attribute} {settings.group!r} is a group this generator never saw",
                                    column=attribute, hint=f"it knows {list(generator.config.classes)}")
        rows = rows[rows[attribute].astype(str) == settings.group]
    for target in settings.targets:
        if target not in generator.config.classes:
            raise FairMedInputError(f"target {attribute} {target!r} is a group this generator never saw",
                                    column="target", hint=f"it knows {list(generator.config.classes)}")
    wanted = settings.targets or generator.config.classes

    def targets_of(source: str, factual: str) -> tuple[str, ...]:
        return tuple(t for t in wanted if t != factual and generator.trained_on(source, t))

    rows = rows.assign(targets=[targets_of(str(s), str(v)) for s, v in zip(rows["dataset"], rows[attribute])])
    rows = rows[rows["targets"].map(len) > 0]
    if rows.empty:
        raise FairMedInputError(f"no {settings.split} cases with a known {attribute} can be edited to "
                                f"{list(wanted)}", column=attribute,
                                hint="the generator must have seen both the factual and the target group")
    rng = np.random.default_rng(settings.seed)
    strata = [frame.iloc[rng.permutation(len(frame))] for _, frame in rows.groupby(["dataset", attribute])]
    picked, depth = [], 0
    while len(picked) < settings.n and any(depth < len(s) for s in strata):
        for stratum in strata:
            if depth < len(stratum) and len(picked) < settings.n:
                picked.append(stratum.iloc[depth])
        depth += 1
    return pd.DataFrame(picked).reset_index(drop=True)


def _binary(answers: Sequence[str | None], positive: str = "yes") -> np.ndarray | None:
    values = {a for a in answers if a is not None}
    if not values <= {"yes", "no"}:
        return None
    return np.array([1 if a == positive else 0 for a in answers])


def _ci_test(pairs: pd.DataFrame, latents: np.ndarray, attribute: str, seed: int) -> dict:
    """The conditional-independence test on the edited cases (one row per case: its factual answer)."""
    first = ~pairs.duplicated("case_id").to_numpy()
    answers = pairs.loc[first, "answer"].tolist()
    parsed = np.array([a is not None and a == a for a in answers])  # a == a: NaN from a CSV is no answer
    dropped = int((~parsed).sum())
    note = (f"{dropped} case(s) without a parsable answer left out (a format failure is no prediction of the "
            "label)") if dropped else ""
    yhat = _binary([a for a, ok in zip(answers, parsed) if ok])
    if yhat is None:
        return {"ran": False, "note": "not run: the test needs yes/no answers; this model gave "
                                      f"{sorted({str(a) for a in answers})}"}
    try:
        result: CITestResult = conditional_independence_test(
            latents[first][parsed], pairs.loc[first, attribute].astype(str)[parsed], yhat, seed=seed,
            min_train_per_value=10)
    except FairMedInputError as error:
        reason = f"not run: {error.message}" + (f" ({error.hint})" if error.hint else "")
        return {"ran": False, "note": "; ".join(filter(None, [reason, note]))}
    summary = {k: v for k, v in asdict(result).items() if k != "heads"}
    summary["mean_difference"] = result.mean_difference
    summary["note"] = "; ".join(filter(None, [summary.get("note", ""), note]))
    return {"ran": True, "n_left_out": dropped, **json_safe(summary)}


def _flip_summary(frame: pd.DataFrame, factual: str, counterfactual: str, groups: Sequence[str]) -> dict:
    if frame.empty:
        return {"n_pairs": 0, "rows": [], "notes": ["no pairs"]}
    table = flip_table(frame, factual_col=factual, counterfactual_col=counterfactual, group_cols=tuple(groups))
    return {"n_pairs": int(len(frame)), "rows": json_safe(table.frame().to_dict(orient="records")),
            "notes": list(table.notes)}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text))[:60]


def run_counterfactual_analysis(
    predictor: Predictor,
    generator: CounterfactualGenerator,
    dataset: Dataset,
    settings: AnalysisSettings | None = None,
    *,
    out_dir: str | Path | None = None,
    classifier: AttributeClassifier | None = None,
    case_ids: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CounterfactualAnalysis:
    """Run the analysis (see the module docstring); ``case_ids`` replaces the sampling by a fixed list.
    ``progress(stage, done, total)`` reports "generating", "answering" and "testing". Without ``out_dir``
    nothing is written (the page shows the result directly)."""
    settings = settings or AnalysisSettings()
    attribute = generator.config.attribute
    out = Path(out_dir).expanduser() if out_dir is not None else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise FairMedInputError("the run folder already exists and is not empty: runs are never overwritten",
                                source=str(out), hint="choose a new folder")
    began = time.perf_counter()
    if case_ids is not None:
        selected = select_cases(dataset, generator, replace(settings, n=10 ** 9))  # every case, then the list
        wanted = [str(c) for c in case_ids]
        missing = sorted(set(wanted) - set(selected["case_id"].astype(str)))
        if missing:
            raise FairMedInputError(f"cases {missing[:5]} cannot be edited (other split, unknown {attribute}, "
                                    "or no target group the generator saw)", column="case_id")
        selected = selected.set_index(selected["case_id"].astype(str)).loc[wanted].reset_index(drop=True)
    else:
        selected = select_cases(dataset, generator, settings)
    records = selected.to_dict(orient="records")
    images = [dataset.load_image(str(r["case_id"])) for r in records]

    def truths(index: int, target: str):
        return true_counterfactual(records[index], attribute, target)

    pairs = make_pairs(
        generator, images, [r["case_id"] for r in records], [r["dataset"] for r in records],
        [r[attribute] for r in records], [r["targets"] for r in records], classifier=classifier,
        thresholds=settings.thresholds, truths=truths, reversibility=settings.reversibility,
        guidance=settings.guidance, steps=settings.steps, strength=settings.strength,
        batch_size=settings.batch_size,
        progress=(lambda done, total: progress("generating", done, total)) if progress else None)

    by_case = {str(r["case_id"]): r for r in records}
    # One call answers every factual image, counterfactual and (on the benchmark) true counterfactual.
    factual_ids = list(dict.fromkeys(p.case_id for p in pairs))
    image_of = {str(r["case_id"]): image for r, image in zip(records, images)}
    batch_images = [image_of[c] for c in factual_ids]
    batch_questions = [str(by_case[c]["problem"]) for c in factual_ids]
    batch_images += [p.counterfactual for p in pairs]
    batch_questions += [str(by_case[p.case_id]["problem"]) for p in pairs]
    with_truth = [p for p in pairs if p.truth is not None]
    batch_images += [p.truth for p in with_truth]
    batch_questions += [str(by_case[p.case_id]["problem"]) for p in with_truth]
    answers = predictor.answer(batch_images, batch_questions,
                               progress=(lambda d, t: progress("answering", d, t)) if progress else None)
    factual_answer = dict(zip(factual_ids, answers[: len(factual_ids)]))
    cf_answers = answers[len(factual_ids): len(factual_ids) + len(pairs)]
    truth_answers = dict(zip([id(p) for p in with_truth], answers[len(factual_ids) + len(pairs):]))

    rows = []
    for index, (pair, cf) in enumerate(zip(pairs, cf_answers)):
        record, fa = by_case[pair.case_id], factual_answer[pair.case_id]
        truth = truth_answers.get(id(pair))
        v = pair.validity
        rows.append({
            "pair": index, "case_id": pair.case_id, "source": pair.source, "question": record["problem"],
            "ground_truth": record["answer"],
            **{c: (str(record[c]) if c in record and record[c] is not None else UNKNOWN) for c in _GROUP_COLUMNS
               if c in dataset.cases.columns},
            "factual_group": pair.factual_group, "target_group": pair.target_group,
            "answer": fa.answer, "reasoning": fa.reasoning,
            "counterfactual_answer": cf.answer, "counterfactual_reasoning": cf.reasoning,
            "flipped": fa.answer != cf.answer,
            "effectiveness": v.effectiveness, "effectiveness_judged": v.effectiveness_judged,
            "composition_mae": v.composition_mae, "reversibility_mae": v.reversibility_mae,
            "truth_mae": v.truth_mae, "baseline_mae": v.baseline_mae,
            "valid": v.valid, "failures": "; ".join(v.failures),
            "true_counterfactual_answer": None if truth is None else truth.answer,
            "true_counterfactual_reasoning": None if truth is None else truth.reasoning,
            "true_flipped": None if truth is None else fa.answer != truth.answer,
        })
    table = pd.DataFrame(rows)
    if progress:
        progress("testing", 0, 1)
    groups = [c for c in ("factual_group", "source") if c in table.columns]
    latents = np.stack([p.latent for p in pairs])
    tests = {
        "attribute": attribute,
        "n_cases": len(factual_ids),
        "n_pairs": len(pairs),
        "n_valid_pairs": int(table["valid"].sum()),
        "flips": _flip_summary(table, "answer", "counterfactual_answer", groups),
        "flips_valid_pairs": _flip_summary(table[table["valid"]], "answer", "counterfactual_answer", groups),
        "ci_test": _ci_test(table, latents, attribute, settings.seed),
        "validity": json_safe({
            "effectiveness_mean": table["effectiveness"].dropna().mean() if table["effectiveness"].notna().any()
            else None,
            "composition_mae_mean": table["composition_mae"].mean(),
            "reversibility_mae_mean": table["reversibility_mae"].dropna().mean()
            if table["reversibility_mae"].notna().any() else None,
            "truth_mae_mean": table["truth_mae"].dropna().mean() if table["truth_mae"].notna().any() else None,
            "baseline_mae_mean": table["baseline_mae"].dropna().mean() if table["baseline_mae"].notna().any()
            else None,
            "thresholds": asdict(settings.thresholds),
            "classifier": None if classifier is None else {
                s: {"val_balanced_accuracy": i.val_balanced_accuracy, "trustworthy": i.trustworthy}
                for s, i in classifier.infos.items()},
        }),
    }
    if with_truth:
        truth_rows = table.dropna(subset=["true_flipped"])
        eca = counterfactual_accuracy(truth_rows["answer"], truth_rows["true_counterfactual_answer"])
        generated = counterfactual_accuracy(truth_rows["answer"], truth_rows["counterfactual_answer"])
        tests["true_counterfactuals"] = json_safe({
            "eca": asdict(eca), "eca_generated_same_pairs": asdict(generated),
            "agreement_generated_vs_true_flip": float((truth_rows["flipped"] == truth_rows["true_flipped"]).mean()),
            "flips": _flip_summary(truth_rows, "answer", "true_counterfactual_answer", groups)})
    if progress:
        progress("testing", 1, 1)
    # Typed through the JSON form, so the record returned now equals the one read back from tests.json later
    # (an undefined number is None in both, never NaN in one and None in the other).
    tests = CounterfactualTests.from_json(json_safe(tests))
    result = CounterfactualAnalysis(None, table, tests, tuple(pairs))
    if out is None:
        return result
    meta = {"model": predictor.name, "generator": str(generator.directory), "generator_step": generator.info.step,
            "dataset": dataset.name, "attribute": attribute, "settings": json_safe(settings.to_dict()),
            "seconds": round(time.perf_counter() - began, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                      time.gmtime())}
    return CounterfactualAnalysis(_write(out, table, tests, pairs, meta), table, tests, tuple(pairs))


def _write(out: Path, table: pd.DataFrame, tests: CounterfactualTests, pairs: Sequence[CounterfactualPair], meta: dict) -> Path:
    temporary = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    (temporary / "pairs").mkdir(parents=True)
    try:
        files = {"factual_png": [], "counterfactual_png": [], "difference_png": [], "truth_png": []}
        for index, pair in enumerate(pairs):
            stem = f"{index:04d}_{_safe(pair.case_id)}_{_safe(pair.target_group)}"
            images = {"factual_png": pair.factual, "counterfactual_png": pair.counterfactual,
                      "difference_png": difference_map(pair.factual, pair.counterfactual), "truth_png": pair.truth}
            for column, image in images.items():
                if image is None:
                    files[column].append(None)
                    continue
                name = f"pairs/{stem}_{column[:-4]}.png"
                image.save(temporary / name)
                files[column].append(name)
        table.assign(**files).to_csv(temporary / "pairs.csv", index=False)
        atomic_write_json(temporary / "tests.json", json_safe(tests.to_json()))
        atomic_write_json(temporary / "run.json", {"kind": "counterfactual", **meta})
        if out.exists():
            out.rmdir()  # empty (checked before the slow part); a non-empty one was refused
        temporary.rename(out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out


def read_analysis(folder: str | Path) -> tuple[pd.DataFrame, CounterfactualTests, dict]:
    """(pairs table, tests, run metadata) of a run folder written by ``run_counterfactual_analysis``."""
    folder = Path(folder)
    tests, meta = read_counterfactual_run(folder)
    try:
        table = pd.read_csv(folder / "pairs.csv")
    except (OSError, ValueError) as error:
        raise FairMedInputError(f"not a complete counterfactual run: {error}", source=str(folder / "pairs.csv")) \
            from error
    return table, tests, meta
