"""Batch evaluation: run a loaded model over a dataset split and return the predictions table the audit reads.

A format failure (no parseable answer, or an answer outside the dataset's labels) is written as the prediction
``"(format failure)"``, not turned into some label here: how it is scored is the audit's documented choice
(``audit(..., format_failures=...)``: by default wrong for the true class and a false alarm for none, so on
binary data a missed positive; or the other label; or left out and counted), recorded in the audit's settings,
and the audit reports the failure rate per group. The raw parsed answer, ``format_ok`` and the failure reason are
kept beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from fairmed_core.data import Dataset
from fairmed_core.data.sampling import stratified_sample
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import FORMAT_FAILURE
from fairmed_core.models.generation import GenerationOptions, generate_answers
from fairmed_core.models.loading import LoadedModel

__all__ = ["PREDICTION_COLUMNS", "evaluate_dataset", "format_failure_rates"]

PREDICTION_COLUMNS = ("case_id", "source", "split", "y_true", "y_pred", "answer", "format_ok", "failure",
                      "reasoning", "completion", "new_tokens", "generation_time_s", "model")


def evaluate_dataset(
    loaded: LoadedModel,
    dataset: Dataset,
    *,
    split: str | None = "test",
    options: GenerationOptions | None = None,
    limit: int | None = None,
    case_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Answer every case of ``split`` (None: all cases) and tabulate the answers; ``case_ids``: only those cases
    of the split (a held-out sample, in the split's order); ``limit``: a stratified sample of N cases
    (:func:`fairmed_core.data.sampling.stratified_sample`, its default seed), never the first N, which are one
    or two sources of a split stored in source order.

    Columns: ``case_id, source, split``, the dataset's attribute columns, ``y_true, y_pred, answer, format_ok,
    failure, reasoning, completion, new_tokens, generation_time_s, model``."""
    cases = dataset.cases if split is None else dataset.cases[dataset.cases["split"] == split]
    if cases.empty:
        present = ", ".join(sorted(dataset.cases["split"].astype(str).unique()))
        raise FairMedInputError(f"dataset {dataset.name!r} has no {split!r} cases", column="split",
                                hint=f"splits present: {present}")
    if limit is not None and case_ids is None:
        case_ids, _ = stratified_sample(dataset.cases, limit, split=split, attributes=dataset.attributes)
    if case_ids is not None:
        wanted = set(map(str, case_ids))
        cases = cases[cases["case_id"].astype(str).isin(wanted)]
        if len(cases) != len(wanted):
            raise FairMedInputError(f"{len(wanted) - len(cases)} of the {len(wanted)} cases to answer are not "
                                    f"{split!r} cases of dataset {dataset.name!r}", column="case_id",
                                    hint="the data changed since the sample was drawn: draw it again")
    images = [[dataset.load_image(case_id)] for case_id in cases["case_id"]]
    # Cases with several images give the model all of them, in order.
    if "image_paths" in cases.columns:
        from fairmed_core.data.schema import open_image

        images = [[open_image(path) for path in paths] if isinstance(paths, (list, tuple)) and len(paths) > 1
                  else single for paths, single in zip(cases["image_paths"], images)]
    generations = generate_answers(loaded, list(cases["problem"].astype(str)), images, options,
                                   choices=list(dataset.label_values), progress=progress)
    frame = cases[["case_id", "dataset", "split", *dataset.attributes]].rename(columns={"dataset": "source"})
    frame = frame.reset_index(drop=True)
    truth = cases["answer"].astype(str).tolist()
    frame["y_true"] = truth
    frame["y_pred"] = [g.answer if g.format_ok else FORMAT_FAILURE for g in generations]
    frame["answer"] = [g.answer or "" for g in generations]
    frame["format_ok"] = [g.format_ok for g in generations]
    frame["failure"] = [g.failure for g in generations]
    frame["reasoning"] = [g.reasoning for g in generations]
    frame["completion"] = [g.completion for g in generations]
    frame["new_tokens"] = [g.new_tokens for g in generations]
    frame["generation_time_s"] = [round(g.generation_time_s, 5) for g in generations]
    frame["model"] = loaded.name
    return frame


def format_failure_rates(predictions: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """Share of format failures per source and group of each attribute (columns attribute, group, n, failures,
    failure_rate)."""
    rows = []
    for attribute in attributes:
        for (source, group), part in predictions.groupby(["source", attribute], dropna=False):
            failures = int((~part["format_ok"].astype(bool)).sum())
            rows.append({"source": source, "attribute": attribute, "group": group, "n": len(part),
                         "failures": failures, "failure_rate": failures / len(part)})
    return pd.DataFrame(rows, columns=["source", "attribute", "group", "n", "failures", "failure_rate"])
