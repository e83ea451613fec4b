"""Encode a validated predictions table as integer arrays: classes, positive label, sources, groups.

Labels and predictions become class indices (index 1 is the positive label of a binary task), every
attribute becomes group codes over its levels in natural order ("UNK" last), and with ``intersect`` the
intersection of all attributes is added as one more attribute whose groups are every combination of the
observed levels (as fairlearn's ``MetricFrame`` reports them), so an empty combination is shown, not lost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._predictions import (FORMAT_FAILURE, MAX_GROUPS_PER_ATTRIBUTE, _natural_key,
                                                implicit_positive_label)
from fairmed_core.plain import python_scalar

INTERSECTION_JOIN = " x "
GROUP_JOIN = ","


@dataclass(frozen=True, eq=False)
class EncodedAttribute:
    """One attribute as group codes per row; ``levels[code]`` is the group name."""

    name: str
    levels: tuple[str, ...]
    codes: np.ndarray
    is_intersection: bool = False
    members: tuple[int, ...] = ()  # an intersection's single attributes (indices), in order


@dataclass(frozen=True, eq=False)
class EncodedTable:
    """Labels, predictions, scores, sources and attributes as integer arrays.

    ``y_true``/``y_pred`` are class indices into ``classes``; for a binary task ``classes`` is
    ``(negative, positive)`` descriptions and index 1 is the positive label. ``label_values`` are the
    distinct values seen among labels and predictions. ``calibration_target`` is the
    0/1 outcome that the score predicts (the positive label, or "prediction is correct" for multi-class).
    ``failure_class`` is the index of the format-failure marker on a multi-class table (the last class, with no
    true cases; it counts against the true class and is no class of its own in macro averages), else None; on a
    binary table the marker is encoded as the negative class (never a positive call).
    """

    task: str
    classes: tuple
    positive_label: object
    label_values: tuple
    y_true: np.ndarray
    y_pred: np.ndarray
    score: np.ndarray | None
    calibration_target: np.ndarray
    sources: tuple[str, ...]
    source_codes: np.ndarray
    attributes: tuple[EncodedAttribute, ...]
    n_single_attributes: int
    failure_class: int | None = None

    @property
    def n_scored_classes(self) -> int:
        """Classes that are scored (without the format-failure marker)."""
        return self.n_classes - (self.failure_class is not None)

    @property
    def n_rows(self) -> int:
        return int(self.y_true.size)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.task == "binary"


def _resolve_positive(
    values: list, positive_label: object, *, label_col: str, source_name: str | None
) -> object | None:
    """Find ``positive_label`` among the observed values (tolerating 1 vs "1"), or infer it, or None."""
    if positive_label is None:
        return implicit_positive_label(values)
    for value in values:
        if value == positive_label:
            return value
    for value in values:
        if str(value) == str(positive_label):
            return value
    raise FairMedInputError(
        f"positive_label {positive_label!r} does not occur among the labels or predictions "
        f"(values: {', '.join(map(repr, sorted(values, key=_natural_key)))})",
        source=source_name,
        column=label_col,
        hint="pass one of the values shown",
    )


def _intersection_members(intersect, names: list[str], *, source_name: str) -> tuple[int, ...]:
    """Indices of the attributes to cross: all of them for ``True``, the named ones for a list of names."""
    if isinstance(intersect, (bool, np.bool_)) or intersect is None:
        return tuple(range(len(names))) if intersect else ()
    chosen = [intersect] if isinstance(intersect, str) else list(intersect)
    unknown = [c for c in chosen if c not in names]
    if unknown or len(set(chosen)) < 2:
        raise FairMedInputError(
            f"intersect names {unknown} that are not sensitive attributes" if unknown
            else "intersect needs two or more different attributes",
            source=source_name, hint=f"choose among {', '.join(names)}",
        )
    return tuple(names.index(c) for c in chosen)


def encode_table(
    frame: pd.DataFrame,
    *,
    label_col: str,
    pred_col: str,
    sensitive: Sequence[str],
    score_col: str | None,
    source_col: str | None,
    positive_label: object,
    intersect: bool | Sequence[str],
    source_name: str | None = None,
) -> EncodedTable:
    """Integer-code a table returned by ``validate_predictions``."""
    # Factorise first so the per-value work below touches only the distinct values, not every row.
    label_codes, label_uniques = pd.factorize(frame[label_col])
    pred_codes, pred_uniques = pd.factorize(frame[pred_col])
    label_values = [python_scalar(v) for v in label_uniques]
    pred_values = [python_scalar(v) for v in pred_uniques]
    values = list(dict.fromkeys(label_values + pred_values))
    # The format-failure marker is an outcome, not a label (unless the labels themselves use it).
    has_failure = FORMAT_FAILURE in pred_values and FORMAT_FAILURE not in label_values
    scored = [v for v in values if not (has_failure and v == FORMAT_FAILURE)]
    positive = _resolve_positive(scored, positive_label, label_col=label_col, source_name=source_name)
    failure_class = None
    if positive is not None:
        task = "binary"
        classes: tuple = (f"not {positive}", positive)
        class_of = {v: int(v == positive) for v in values}
    else:
        task = "multiclass"
        classes = tuple(sorted(scored, key=_natural_key))
        if has_failure:
            failure_class = len(classes)
            classes = (*classes, FORMAT_FAILURE)
        class_of = {v: i for i, v in enumerate(classes)}
    y_true = np.array([class_of[v] for v in label_values], dtype=np.int64)[label_codes]
    y_pred = np.array([class_of[v] for v in pred_values], dtype=np.int64)[pred_codes]
    score = None if score_col is None else frame[score_col].to_numpy(dtype=float)
    calibration_target = y_true if task == "binary" else (y_true == y_pred).astype(np.int64)

    if source_col is None:
        sources: tuple[str, ...] = ()
        source_codes = np.zeros(len(frame), dtype=np.int64)
    else:
        categorical = pd.Categorical(frame[source_col])
        sources = tuple(str(c) for c in categorical.categories)
        source_codes = categorical.codes.astype(np.int64)

    attributes = []
    for name in sensitive:
        categorical = pd.Categorical(frame[name])
        attributes.append(
            EncodedAttribute(
                name=name,
                levels=tuple(str(c) for c in categorical.categories),
                codes=categorical.codes.astype(np.int64),
            )
        )
    n_single = len(attributes)
    members = _intersection_members(intersect, [a.name for a in attributes], source_name=source_name)
    if len(members) > 1:
        # Every combination of observed levels is a group, observed or not (as fairlearn's MetricFrame
        # does), so an empty intersection is reported as such instead of silently missing.
        crossed = [attributes[i] for i in members]
        dims = tuple(len(a.levels) for a in crossed)
        count = int(np.prod(dims, dtype=object))
        if count > MAX_GROUPS_PER_ATTRIBUTE:
            # The same cap as one attribute's groups: the intersection is audited as one more attribute.
            raise FairMedInputError(
                f"crossing {' x '.join(a.name for a in crossed)} makes {count:,} groups "
                f"({' x '.join(str(d) for d in dims)}); an audit takes at most {MAX_GROUPS_PER_ATTRIBUTE:,} "
                "groups per attribute, intersections included",
                source=source_name, column=", ".join(a.name for a in crossed),
                hint="cross fewer or coarser attributes",
            )
        codes = np.ravel_multi_index(tuple(a.codes for a in crossed), dims)
        levels = tuple(GROUP_JOIN.join(combo) for combo in itertools.product(*(a.levels for a in crossed)))
        attributes.append(
            EncodedAttribute(
                name=INTERSECTION_JOIN.join(a.name for a in crossed),
                levels=levels,
                codes=codes.astype(np.int64),
                is_intersection=True,
                members=members,
            )
        )
    return EncodedTable(
        task=task,
        classes=classes,
        positive_label=positive,
        label_values=tuple(sorted(scored, key=_natural_key)),
        y_true=y_true,
        y_pred=y_pred,
        score=score,
        calibration_target=calibration_target,
        sources=sources,
        source_codes=source_codes,
        attributes=tuple(attributes),
        n_single_attributes=n_single,
        failure_class=failure_class,
    )
