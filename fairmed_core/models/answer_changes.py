"""Benchmark cases where a model's answer changes on the true counterfactual: found once, kept small, listed.

One job: over a stratified sample of a split of the synthetic benchmark, ask the model about each case and about
every true counterfactual of it (the same latent patient redrawn with another sex, age group or skin tone: see
``case_review``), and keep the pairs where the parsed answer changes. A demo then opens one such case in one
click instead of trying cases by hand.

On disk, beside a model's shipped evaluation (``<model>/evaluation/``):

    answer_changes.csv    one row per changed pair: case, source, attribute, factual and counterfactual group,
                          both answers, the ground truth
    answer_changes.json   what was run: model, dataset, split, sample size, decoding, pairs asked, pairs changed
                          per attribute

Only the changed pairs are stored, so the file stays small (a few hundred rows); the JSON keeps the denominators.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairmed_core.data.schema import Dataset
from fairmed_core.errors import FairMedInputError
from fairmed_core.models.case_review import counterfactual_choices, counterfactual_image
from fairmed_core.models.generation import GenerationOptions, generate_answers
from fairmed_core.models.loading import LoadedModel
from fairmed_core.files import atomic_write_json, atomic_write_text

__all__ = ["AnswerChanges", "CHANGES_CSV", "CHANGES_JSON", "find_answer_changes", "read_answer_changes",
           "write_answer_changes"]

CHANGES_CSV, CHANGES_JSON = "answer_changes.csv", "answer_changes.json"
_COLUMNS = ("case_id", "source", "attribute", "factual_group", "counterfactual_group", "answer",
            "counterfactual_answer", "ground_truth")


@dataclass(frozen=True)
class AnswerChanges:
    """The changed pairs (``_COLUMNS``) and their denominators. ``cases`` lists each case once, the cases with
    the most changed counterfactuals first."""

    pairs: pd.DataFrame
    model: str
    dataset: str
    split: str
    n_cases: int
    n_pairs: int
    pairs_per_attribute: dict
    changed_per_attribute: dict
    options: dict

    @property
    def cases(self) -> pd.DataFrame:
        if self.pairs.empty:
            return pd.DataFrame(columns=["case_id", "source", "changes"])
        counted = (self.pairs.groupby(["case_id", "source"], sort=False).size().rename("changes").reset_index())
        return counted.sort_values(["changes", "case_id"], ascending=[False, True], kind="stable",
                                   ignore_index=True)

    def summary(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "pairs"}


def _outcome(generation) -> str:
    return generation.answer if generation.format_ok and generation.answer is not None else "(format failure)"


def _stratified(cases: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """An equal share of ``n`` per (source, sex, age group) stratum, or all of a smaller stratum."""
    strata = list(cases.groupby(["dataset", "sex", "age_group"], sort=True))
    share = max(1, n // max(1, len(strata)))
    return pd.concat([frame.sample(n=min(len(frame), share), random_state=seed) for _, frame in strata])


def find_answer_changes(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    split: str = "test",
    n: int = 600,
    seed: int = 0,
    options: GenerationOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AnswerChanges:
    """Ask the model about ``n`` cases of ``split`` (stratified) and all their true counterfactuals."""
    options = options or GenerationOptions()
    cases = dataset.cases[dataset.cases["split"].astype(str) == split]
    if cases.empty:
        raise FairMedInputError(f"dataset {dataset.name!r} has no {split!r} split", column="split")
    records = [r for r in _stratified(cases, n, seed).to_dict(orient="records") if counterfactual_choices(r)]
    if not records:
        raise FairMedInputError(f"no case of {dataset.name!r} has a true counterfactual",
                                hint="true counterfactuals exist on the synthetic benchmark (fairmed synth) only")
    images, questions, keys = [], [], []
    for index, record in enumerate(records):
        images.append([dataset.load_image(record["case_id"])])
        questions.append(str(record["problem"]))
        keys.append((index, None, None))
        for attribute, groups in counterfactual_choices(record).items():
            for group in groups:
                image, change, _ = counterfactual_image(record, attribute, group)
                images.append([image])
                questions.append(str(record["problem"]))
                keys.append((index, attribute, change))
    answers = generate_answers(loaded, questions, images, options, choices=dataset.label_values, progress=progress)
    factual = {index: _outcome(a) for (index, attribute, _), a in zip(keys, answers) if attribute is None}
    rows, asked, changed = [], {}, {}
    for (index, attribute, change), answer in zip(keys, answers):
        if attribute is None:
            continue
        asked[attribute] = asked.get(attribute, 0) + 1
        if _outcome(answer) == factual[index]:
            continue
        changed[attribute] = changed.get(attribute, 0) + 1
        record = records[index]
        rows.append({"case_id": str(record["case_id"]), "source": str(record["dataset"]), "attribute": attribute,
                     "factual_group": change.factual, "counterfactual_group": change.counterfactual,
                     "answer": factual[index], "counterfactual_answer": _outcome(answer),
                     "ground_truth": str(record["answer"])})
    return AnswerChanges(pd.DataFrame(rows, columns=list(_COLUMNS)), loaded.name, dataset.name, split, len(records),
                         int(sum(asked.values())), asked, changed, asdict(options))


def write_answer_changes(changes: AnswerChanges, folder: str | Path) -> Path:
    """Write ``answer_changes.csv`` and ``.json`` into ``folder`` (each atomically); returns the CSV's path."""
    folder = Path(folder)
    buffer = io.StringIO()
    changes.pairs.to_csv(buffer, index=False)
    atomic_write_text(folder / CHANGES_CSV, buffer.getvalue())
    atomic_write_json(folder / CHANGES_JSON, json.loads(json.dumps(changes.summary(), default=_plain)))
    return folder / CHANGES_CSV


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def read_answer_changes(folder: str | Path) -> AnswerChanges | None:
    """The changed pairs stored in ``folder``, or None where none were stored."""
    folder = Path(folder)
    if not (folder / CHANGES_CSV).is_file() or not (folder / CHANGES_JSON).is_file():
        return None
    try:
        summary = json.loads((folder / CHANGES_JSON).read_text(encoding="utf-8"))
        pairs = pd.read_csv(folder / CHANGES_CSV, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise FairMedInputError(f"the stored answer changes cannot be read: {error}", source=str(folder)) from error
    missing = [c for c in _COLUMNS if c not in pairs.columns]
    if missing:
        raise FairMedInputError(f"{CHANGES_CSV} lacks the columns {missing}", source=str(folder / CHANGES_CSV))
    return AnswerChanges(pairs[list(_COLUMNS)], **summary)
