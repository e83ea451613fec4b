"""The FairGRPO paper's evaluation protocol, computed as the authors' released evaluation code computes it.

Source: ``DDVD233/mirl``, ``examples/reward_function/evaluation.py`` (commit 1021b77b), functions
``compute_metrics_by_data_source``, ``gender``, ``age``, ``compute_dataset_metrics``,
``compute_confusion_matrices`` and ``compute_class_metrics``. The paper's Table 1 numbers come from it. It is
offered for reproduction beside FairMed's own convention (scikit-learn's: positive class only on binary data,
NaN for a zero denominator, predicted-only classes included), which stays the clinical default.

What the authors' code does, per data source and attribute, per group:

* every condition is scored one-vs-rest; an answer holding several conditions ("a, b", "a and b", "a & b") is
  split into them; on yes/no data "yes" and "no" are both conditions;
* the conditions averaged for a group are those in the group's ground truth (a condition only predicted is
  skipped); a prediction that names nothing (a format failure, or "None") predicts no condition, so it is a
  missed case of its true condition and a false alarm for none;
* a zero denominator counts as 0 (precision, recall, F1, accuracy, FPR, FDR, specificity), not as undefined;
* the group's metric is the unweighted mean over those conditions (so a group's F1 is the mean of per-condition
  F1s, and on yes/no data its accuracy is the mean of the "yes" and "no" one-vs-rest accuracies);
* gaps: ``|M - F|`` for sex, max - min over the age groups A1..A4; sigma = sample standard deviation (ddof 1)
  over the groups; predictive parity PP = FDR gap x 100, equal opportunity EOD = TPR gap x 100;
* per data source, the mean over sex and age of the attribute-level values (the attribute's F1 and accuracy
  are means over its groups); then the mean over data sources; ``F1_ES = F1 / (1 + sigma F1)`` and
  ``Acc_ES = Acc / (1 + sigma Acc)`` on those aggregates.

Where the code does something the paper text and DESIGN.md do not say, this module follows the code:

* a data source enters the aggregate only when its age attribute has groups (the aggregate is built inside the
  age step); a source without any sex group is aggregated over age alone;
* the authors' code raises ``KeyError`` when an attribute has exactly one group (no gap is computed and the
  lookup fails). Here such an attribute has no gap (NaN) and is treated like an absent one: sex is left out of
  the source's aggregate, and a source whose age attribute has one group stays out of the aggregate;
* sex groups are "male"/"female" only (read here from the decoded groups M/F); rows with unknown sex or age
  are left out of that attribute, as the authors' substring matching leaves them out;
* other attributes (skin tone, site, ...) are reported like the age attribute (max - min) but, as in the
  paper, not aggregated.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._columns import PredictionColumns
from fairmed_core.plain import json_safe

__all__ = [
    "PAPER_METRICS",
    "PROTOCOLS",
    "PaperAggregate",
    "PaperAttributeSummary",
    "PaperGroupMetrics",
    "PaperSourceSummary",
    "PaperSummary",
    "conditions_of",
    "paper_protocol",
    "paper_protocol_of_table",
]

PROTOCOLS = ("fairmed", "fairgrpo_paper")
"""Conventions an audit reports: FairMed's (the clinical default) and, beside it, the FairGRPO paper's."""

PAPER_METRICS = ("precision", "recall", "f1", "accuracy", "fpr", "fdr", "specificity")
"""Per-group metrics of the paper's protocol (recall is the TPR)."""

CONDITION_SEPARATORS = (", ", " and ", " & ", ",", "&")
"""Tried in this order; the first one found in an answer splits it (as the authors' ``parse_conditions``)."""


SEX_GROUPS = ("M", "F")  # the authors' order: male, then female
AGE_GROUPS = ("A1", "A2", "A3", "A4")
_AGE_UPPER_YEARS = (25.0, 50.0, 75.0)
_SEX_SPELLINGS = {"m": "M", "male": "M", "f": "F", "female": "F"}


def conditions_of(answer: object) -> frozenset[str]:
    """The set of conditions an answer names, split as the authors split it; no condition for a missing answer."""
    if answer is None or (isinstance(answer, float) and math.isnan(answer)):
        return frozenset()
    text = str(answer).replace("\\boxed{", "").replace("}", "")
    for separator in CONDITION_SEPARATORS:
        if separator in text:
            return frozenset(part.strip() for part in text.split(separator))
    return frozenset({text.strip()})


@dataclass(frozen=True)
class PaperGroupMetrics:
    """The paper's metrics of one group: means over the conditions in the group's ground truth."""

    source: str
    attribute: str
    group: str
    n: int
    n_conditions: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    fpr: float
    fdr: float
    specificity: float


@dataclass(frozen=True)
class PaperAttributeSummary:
    """One attribute in one data source: group means, gaps (max - min; ``|M - F|`` for sex) and sigmas (ddof 1).

    ``predictive_parity`` = FDR gap x 100 and ``equal_opportunity_difference`` = TPR gap x 100 (percentage
    points). Gaps and sigmas are NaN with fewer than two groups. ``in_aggregate`` says whether this attribute
    entered its source's aggregate; ``note`` says why not."""

    source: str
    attribute: str
    groups: tuple[str, ...]
    accuracy: float
    f1: float
    tpr: float
    fpr: float
    fdr: float
    accuracy_gap: float
    f1_gap: float
    tpr_gap: float
    fpr_gap: float
    fdr_gap: float
    sigma_accuracy: float
    sigma_f1: float
    sigma_tpr: float
    sigma_fpr: float
    sigma_fdr: float
    predictive_parity: float
    equal_opportunity_difference: float
    in_aggregate: bool
    note: str


@dataclass(frozen=True)
class PaperSourceSummary:
    """One data source: the mean over its aggregated attributes (sex and age), and its overall macro metrics.

    ``overall_f1``/``overall_accuracy`` are the source's metrics over all its rows (the authors'
    ``val/f1``, ``val/accuracy``), not group means."""

    source: str
    attributes: tuple[str, ...]
    n: int
    accuracy: float
    f1: float
    accuracy_gap: float
    f1_gap: float
    tpr_gap: float
    fpr_gap: float
    fdr_gap: float
    sigma_accuracy: float
    sigma_f1: float
    predictive_parity: float
    equal_opportunity_difference: float
    overall_accuracy: float
    overall_f1: float
    in_aggregate: bool
    note: str


@dataclass(frozen=True)
class PaperAggregate:
    """The paper's table row: means over the aggregated data sources (PP and EOD in percentage points)."""

    n_sources: int
    predictive_parity: float
    equal_opportunity_difference: float
    sigma_f1: float
    f1: float
    accuracy: float
    f1_es: float
    sigma_accuracy: float
    accuracy_es: float
    f1_gap: float
    accuracy_gap: float
    fpr_gap: float


@dataclass(frozen=True)
class PaperSummary:
    """Everything the paper's protocol computes for one predictions table."""

    groups: tuple[PaperGroupMetrics, ...]
    attributes: tuple[PaperAttributeSummary, ...]
    sources: tuple[PaperSourceSummary, ...]
    aggregate: PaperAggregate | None
    sex_attribute: str | None
    age_attribute: str | None
    notes: tuple[str, ...]

    def groups_frame(self) -> pd.DataFrame:
        """One row per (source, attribute, group)."""
        return _frame(self.groups, PaperGroupMetrics)

    def attributes_frame(self) -> pd.DataFrame:
        """One row per (source, attribute)."""
        frame = _frame(self.attributes, PaperAttributeSummary)
        frame["groups"] = frame["groups"].map(", ".join) if len(frame) else frame["groups"]
        return frame

    def sources_frame(self) -> pd.DataFrame:
        """One row per data source."""
        frame = _frame(self.sources, PaperSourceSummary)
        frame["attributes"] = frame["attributes"].map(", ".join) if len(frame) else frame["attributes"]
        return frame

    def to_json_dict(self) -> dict:
        """A JSON-safe dict (NaN becomes null)."""
        return json_safe(
            {
                "protocol": "fairgrpo_paper",
                "reference": "DDVD233/mirl examples/reward_function/evaluation.py (commit 1021b77b)",
                "sex_attribute": self.sex_attribute,
                "age_attribute": self.age_attribute,
                "aggregate": None if self.aggregate is None else asdict(self.aggregate),
                "sources": [asdict(s) for s in self.sources],
                "attributes": [asdict(a) for a in self.attributes],
                "groups": [asdict(g) for g in self.groups],
                "notes": list(self.notes),
            }
        )


def _frame(rows: Sequence, kind: type) -> pd.DataFrame:
    columns = [f.name for f in fields(kind)]
    return pd.DataFrame([[getattr(r, c) for c in columns] for r in rows], columns=columns)


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip().upper() in {"", "UNK", "UNKNOWN", "NAN", "NONE"}


def _sex_key(value: object) -> str | None:
    return None if _missing(value) else _SEX_SPELLINGS.get(str(value).strip().lower())


def _age_key(value: object) -> str | None:
    """A1..A4 from a group key or an age in years, with the authors' bounds (<=25, <=50, <=75, above)."""
    if _missing(value):
        return None
    text = str(value).strip().upper()
    if text in AGE_GROUPS:
        return text
    try:
        years = float(value) if isinstance(value, numbers.Real) else float(text)
    except ValueError:
        return None
    if math.isnan(years):
        return None
    for group, upper in zip(AGE_GROUPS, _AGE_UPPER_YEARS):
        if years <= upper:
            return group
    return AGE_GROUPS[-1]


def _other_key(value: object) -> str | None:
    return None if _missing(value) else str(value).strip()


class _Conditions:
    """Rows x conditions indicator matrices of the ground truth and the predictions."""

    def __init__(self, y_true: Sequence, y_pred: Sequence) -> None:
        true_codes, true_unique = pd.factorize(pd.Series(list(y_true), dtype=object), use_na_sentinel=False)
        pred_codes, pred_unique = pd.factorize(pd.Series(list(y_pred), dtype=object), use_na_sentinel=False)
        true_sets = [conditions_of(v) for v in true_unique]
        pred_sets = [frozenset() if _no_answer(v) else conditions_of(v) for v in pred_unique]
        names = sorted(set().union(*true_sets)) if true_sets else []
        index = {name: i for i, name in enumerate(names)}
        self.names = tuple(names)
        true_table = np.zeros((len(true_sets), len(names)), dtype=bool)
        for row, found in enumerate(true_sets):
            true_table[row, [index[c] for c in found]] = True
        pred_table = np.zeros((len(pred_sets), len(names)), dtype=bool)
        for row, found in enumerate(pred_sets):
            pred_table[row, [index[c] for c in found if c in index]] = True  # predicted-only: never scored
        self.truth = true_table[true_codes]
        self.predicted = pred_table[pred_codes]


def _no_answer(value: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    text = str(value)
    return text == "None" or text.strip() == "(format failure)"  # the authors compare "None" unstripped


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _macro_metrics(truth: np.ndarray, predicted: np.ndarray) -> tuple[dict[str, float], int]:
    """The authors' ``compute_dataset_metrics`` on one set of rows: per-condition one-vs-rest, zero denominators
    as 0, mean over the conditions in these rows' ground truth."""
    tp = (truth & predicted).sum(axis=0).astype(float)
    fn = (truth & ~predicted).sum(axis=0).astype(float)
    fp = (~truth & predicted).sum(axis=0).astype(float)
    tn = (~truth & ~predicted).sum(axis=0).astype(float)
    active = (tp + fn) > 0
    precision = _divide(tp, tp + fp)
    recall = _divide(tp, tp + fn)
    per_condition = {
        "precision": precision,
        "recall": recall,
        "f1": _divide(2 * precision * recall, precision + recall),
        "accuracy": _divide(tp + tn, tp + tn + fp + fn),
        "fpr": _divide(fp, fp + tn),
        "fdr": _divide(fp, tp + fp),
        "specificity": _divide(tn, tn + fp),
    }
    n_active = int(active.sum())
    if n_active == 0:
        return {m: 0.0 for m in PAPER_METRICS}, 0
    return {m: float(values[active].sum() / n_active) for m, values in per_condition.items()}, n_active


def _sample_std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else float("nan")


def _gap(values: list[float]) -> float:
    return float(max(values) - min(values)) if len(values) >= 2 else float("nan")


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _attribute_summary(
    source: str, attribute: str, groups: list[PaperGroupMetrics], *, aggregated: bool, note: str
) -> PaperAttributeSummary:
    series = {
        "accuracy": [g.accuracy for g in groups],
        "f1": [g.f1 for g in groups],
        "tpr": [g.recall for g in groups],
        "fpr": [g.fpr for g in groups],
        "fdr": [g.fdr for g in groups],
    }
    return PaperAttributeSummary(
        source=source,
        attribute=attribute,
        groups=tuple(g.group for g in groups),
        **{name: _mean(values) for name, values in series.items()},
        **{f"{name}_gap": _gap(values) for name, values in series.items()},
        **{f"sigma_{name}": _sample_std(values) for name, values in series.items()},
        predictive_parity=100.0 * _gap(series["fdr"]),
        equal_opportunity_difference=100.0 * _gap(series["tpr"]),
        in_aggregate=aggregated,
        note=note,
    )


def paper_protocol(
    y_true: Sequence,
    y_pred: Sequence,
    *,
    sources: Sequence | None = None,
    attributes: Mapping[str, Sequence],
    sex_attribute: str | None = "sex",
    age_attribute: str | None = "age_group",
) -> PaperSummary:
    """Score predictions with the FairGRPO paper's protocol (see the module docstring for every rule).

    ``y_true``/``y_pred`` are answers (one condition, or several joined by ", ", " and ", " & "); a prediction
    that is missing, "None" or "(format failure)" names no condition. ``sources`` is the data source of each
    row (None: one source, "ALL"). ``attributes`` maps an attribute name to its group per row; the one named
    ``sex_attribute`` is read as M/F (also male/female), the one named ``age_attribute`` as A1..A4 (or ages in
    years); missing values ("UNK", "", NaN) leave the row out of that attribute. Only those two attributes
    enter the aggregate.
    """
    y_true, y_pred = list(y_true), list(y_pred)
    n_rows = len(y_true)
    if len(y_pred) != n_rows:
        raise ValueError(f"y_true has {n_rows} rows but y_pred has {len(y_pred)}")
    source_of = np.array(["ALL"] * n_rows if sources is None else [str(s) for s in sources], dtype=object)
    if source_of.size != n_rows:
        raise ValueError(f"sources has {source_of.size} rows, expected {n_rows}")
    keys: dict[str, np.ndarray] = {}
    for name, values in attributes.items():
        values = list(values)
        if len(values) != n_rows:
            raise ValueError(f"attribute {name!r} has {len(values)} rows, expected {n_rows}")
        reader = _sex_key if name == sex_attribute else _age_key if name == age_attribute else _other_key
        keys[name] = np.array([reader(v) for v in values], dtype=object)
    conditions = _Conditions(y_true, y_pred)

    all_groups: list[PaperGroupMetrics] = []
    all_attributes: list[PaperAttributeSummary] = []
    all_sources: list[PaperSourceSummary] = []
    notes: list[str] = []
    if sex_attribute not in keys or age_attribute not in keys:
        absent = [a for a in (sex_attribute, age_attribute) if a not in keys]
        notes.append(
            f"no {' or '.join(str(a) for a in absent)} attribute: the paper aggregates sex and age only"
            + ("" if age_attribute in keys else ", and a source enters its aggregate only through its age groups")
        )
    for source in sorted(set(source_of), key=str):
        in_source = source_of == source
        truth, predicted = conditions.truth[in_source], conditions.predicted[in_source]
        overall, _ = _macro_metrics(truth, predicted)
        aggregated: dict[str, PaperAttributeSummary] = {}
        for name, key in keys.items():
            key = key[in_source]
            if name == sex_attribute:
                order = list(SEX_GROUPS)
            elif name == age_attribute:
                order = list(AGE_GROUPS)
            else:
                order = sorted({k for k in key if k is not None})
            groups = []
            for group in order:
                rows = key == group
                if not rows.any():
                    continue  # an empty group is skipped, as in the authors' code
                metrics, n_conditions = _macro_metrics(truth[rows], predicted[rows])
                groups.append(
                    PaperGroupMetrics(
                        source=source, attribute=name, group=group, n=int(rows.sum()),
                        n_conditions=n_conditions, **metrics,
                    )
                )
            all_groups.extend(groups)
            is_paper_attribute = name in (sex_attribute, age_attribute)
            if not is_paper_attribute:
                note = "not aggregated: the paper aggregates sex and age only"
            elif len(groups) < 2:
                note = (
                    f"{len(groups)} group(s) with data: no gap (the authors' code stops with a KeyError here); "
                    "left out of the aggregate"
                )
            else:
                note = ""
            summary = _attribute_summary(
                source, name, groups, aggregated=is_paper_attribute and len(groups) >= 2, note=note
            )
            all_attributes.append(summary)
            if summary.in_aggregate:
                aggregated[name] = summary
        all_sources.append(_source_summary(source, int(in_source.sum()), aggregated, overall, age_attribute))
    aggregate = _aggregate([s for s in all_sources if s.in_aggregate])
    if aggregate is None:
        notes.append("no source has age groups to compare: the paper's aggregate is not defined")
    return PaperSummary(
        groups=tuple(all_groups),
        attributes=tuple(all_attributes),
        sources=tuple(all_sources),
        aggregate=aggregate,
        sex_attribute=sex_attribute if sex_attribute in keys else None,
        age_attribute=age_attribute if age_attribute in keys else None,
        notes=tuple(notes),
    )


def _source_summary(
    source: str,
    n: int,
    aggregated: Mapping[str, PaperAttributeSummary],
    overall: Mapping[str, float],
    age_attribute: str | None,
) -> PaperSourceSummary:
    """Mean over the source's aggregated attributes; the source counts only with its age groups (as the code)."""
    used = list(aggregated.values())
    included = age_attribute in aggregated

    def mean_of(name: str) -> float:
        return _mean([getattr(a, name) for a in used]) if included else float("nan")

    return PaperSourceSummary(
        source=source,
        attributes=tuple(aggregated) if included else (),
        n=n,
        accuracy=mean_of("accuracy"),
        f1=mean_of("f1"),
        accuracy_gap=mean_of("accuracy_gap"),
        f1_gap=mean_of("f1_gap"),
        tpr_gap=mean_of("tpr_gap"),
        fpr_gap=mean_of("fpr_gap"),
        fdr_gap=mean_of("fdr_gap"),
        sigma_accuracy=mean_of("sigma_accuracy"),
        sigma_f1=mean_of("sigma_f1"),
        predictive_parity=100.0 * mean_of("fdr_gap"),
        equal_opportunity_difference=100.0 * mean_of("tpr_gap"),
        overall_accuracy=overall["accuracy"],
        overall_f1=overall["f1"],
        in_aggregate=included,
        note="" if included else "left out of the aggregate: no age groups to compare (as in the authors' code)",
    )


def _aggregate(sources: Sequence[PaperSourceSummary]) -> PaperAggregate | None:
    if not sources:
        return None

    def mean_of(name: str) -> float:
        return _mean([getattr(s, name) for s in sources])

    f1, sigma_f1 = mean_of("f1"), mean_of("sigma_f1")
    accuracy, sigma_accuracy = mean_of("accuracy"), mean_of("sigma_accuracy")
    return PaperAggregate(
        n_sources=len(sources),
        predictive_parity=100.0 * mean_of("fdr_gap"),
        equal_opportunity_difference=100.0 * mean_of("tpr_gap"),
        sigma_f1=sigma_f1,
        f1=f1,
        accuracy=accuracy,
        f1_es=f1 / (1.0 + sigma_f1),
        sigma_accuracy=sigma_accuracy,
        accuracy_es=accuracy / (1.0 + sigma_accuracy),
        f1_gap=mean_of("f1_gap"),
        accuracy_gap=mean_of("accuracy_gap"),
        fpr_gap=mean_of("fpr_gap"),
    )


def check_protocol(protocol: object) -> str:
    """The protocol name, or an error naming the choices."""
    if protocol not in PROTOCOLS:
        raise FairMedInputError(
            f"unknown protocol {protocol!r}",
            hint="use 'fairmed' (FairMed's clinical convention) or 'fairgrpo_paper' (the FairGRPO paper's)",
        )
    return str(protocol)


def paper_protocol_of_table(frame: pd.DataFrame, columns: PredictionColumns) -> PaperSummary:
    """The paper's protocol on a validated predictions table; the attribute named sex (or gender) and the one
    named age_group (or age) are the paper's two."""
    label_col, pred_col, source_col, names = columns.label, columns.prediction, columns.source, list(columns.sensitive)
    sex = next((a for a in names if a.lower() in ("sex", "gender")), None)
    age = next((a for a in names if a.lower() in ("age_group", "age")), None)
    return paper_protocol(
        frame[label_col].astype(object).to_numpy(),
        frame[pred_col].astype(object).to_numpy(),
        sources=None if source_col is None else frame[source_col].astype(str).to_numpy(),
        attributes={a: frame[a].astype(str).to_numpy() for a in names},
        sex_attribute=sex,
        age_attribute=age,
    )
