"""Read and validate a predictions table (CSV or Parquet) before it reaches the audit engine.

Every problem a user can fix becomes a :class:`~fairmed_core.errors.FairMedInputError` that names the
file, the column and the row. Row numbers follow the file's line numbers: the header line is row 1, so
the first data row is row 2 (the same convention is used for in-memory tables).
"""

from __future__ import annotations

import codecs
import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairmed_core.data.csv_shape import ROW_HINT as _ROW_HINT
from fairmed_core.data.csv_shape import check_csv_shape
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness._columns import PredictionColumns, resolve_columns

FORMAT_FAILURE = "(format failure)"
"""The prediction that marks an answer that could not be parsed: an outcome to score and count, not a label
(see ``fairmed_core.fairness._format_failures``)."""

MISSING_GROUP = "UNK"
"""Group name given to missing attribute values; such rows are reported as their own group, never dropped."""

_MISSING_ATTRIBUTE_TOKENS = frozenset({"", "unk", "unknown", "nan", "none", "null", "na", "n/a"})
_RESERVED_SOURCES = frozenset({"ALL", "mean over sources"})
_RESERVED_ATTRIBUTES = frozenset({"overall", "mean over attributes"})

_SNIFF_BYTES = 64 * 1024

# Signatures of files people upload by mistake; naming them makes the error actionable.
_KNOWN_BINARY_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (an .xlsx workbook is one; export it as CSV)"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"DICM", "a DICOM file"),
)
_PARQUET_MAGIC = b"PAR1"

# Pairs of label values that make a table binary without an explicit positive label: (negative, positive).
_IMPLICIT_BINARY_PAIRS = ((0, 1), ("no", "yes"), (False, True))
# The binary patterns as _binary_spelling spells their values, for tables read as text or mixed with others.
_BINARY_PATTERNS = (("{0, 1}", ("0", "1")), ("{no, yes}", ("no", "yes")), ("{False, True}", ("false", "true")))
# A table whose labels and predictions are binary but for at most this share of rows is a binary table with
# stray values (a typo, a 0.5, a date), not a multi-class one: refused, unless the label set is declared.
_STRAY_SHARE = 0.05
# Where validate_predictions records a label set the caller declared, so that a second validation of the same
# frame (the audit validates what load_predictions returned) keeps honouring it.
_DECLARED_LABELS_ATTR = "fairmed_declared_label_values"
# The gap tables compare every pair of groups of an attribute within each source, with permutation tests: time
# and memory grow with the square of the number of groups (measured, docs/BENCHMARKS.md: 100 groups 0.4 GB and
# 41 s, 200 groups 1.1 GB and 137 s, 400 groups past 2 GB). Time grows with the number of sources.
MAX_GROUPS_PER_ATTRIBUTE = 200
MAX_SOURCES = 100
# Integral floats up to 2**53 are exact; beyond that a "label" is a measurement, not a class code.
_EXACT_INTEGER_LIMIT = 2.0**53


def _data_row(position: int) -> int:
    """File row number of the data row at 0-based ``position`` (header is row 1)."""
    return int(position) + 2


def _describe_more(count: int) -> str:
    if count <= 1:
        return ""
    return f" (and {count - 1} more row{'s' if count > 2 else ''} like this)"


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    """(0-based position of the first True, number of Trues)."""
    hits = np.flatnonzero(mask)
    return int(hits[0]), int(hits.size)


def _reject_rows(
    mask: np.ndarray, describe: Callable[[int], str], *, source_name: str, column: str, hint: str
) -> None:
    """Raise for the first row flagged in ``mask``: ``describe(position)`` says what is wrong with it, the
    message adds how many more rows are like it, and the hint adds the row-numbering convention."""
    if not mask.any():
        return
    position, count = _first_bad(mask)
    raise FairMedInputError(
        f"{describe(position)}{_describe_more(count)}",
        source=source_name,
        column=column,
        row=_data_row(position),
        hint=f"{hint}; {_ROW_HINT}",
    )


def _is_missing_scalar(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return bool(pd.isna(value)) if np.isscalar(value) else False


def _natural_key(value: object) -> tuple:
    """Sort numbers numerically before strings, strings alphabetically."""
    if isinstance(value, (bool, np.bool_)):
        return (0, float(value), "")
    if isinstance(value, numbers.Real):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _group_name(value: object) -> str:
    """Display name of an attribute value; integral floats (a column with NaN) lose their '.0'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_attribute(series: pd.Series) -> pd.Categorical:
    """Map an attribute column to string groups, missing values to ``UNK``, in natural order with UNK last."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    names = []
    for value in uniques:
        name = _group_name(value)
        names.append(MISSING_GROUP if name.lower() in _MISSING_ATTRIBUTE_TOKENS else name)
    names_arr = np.array(names + [MISSING_GROUP], dtype=object)
    # NaN rows have code -1 and map to the appended UNK entry.
    per_row = names_arr[np.where(codes < 0, len(names), codes)]
    ordered_values = sorted(
        {(_natural_key(v), n) for v, n in zip(uniques, names, strict=True) if n != MISSING_GROUP}
    )
    levels: list[str] = []
    for _, name in ordered_values:
        if name not in levels:
            levels.append(name)
    if (per_row == MISSING_GROUP).any():
        levels.append(MISSING_GROUP)
    return pd.Categorical(per_row, categories=levels)


def _normalise_label_column(series: pd.Series) -> pd.Series:
    """Strip strings and turn integral floats into ints so 1.0 and 1 are the same label."""
    if pd.api.types.is_bool_dtype(series):
        return series.astype(bool)
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        finite = values[np.isfinite(values)]
        integral = np.all(finite == np.round(finite)) and np.all(np.abs(finite) < _EXACT_INTEGER_LIMIT)
        if finite.size == 0 or integral:
            # Non-finite values other than NaN never get here: _check_label_numbers refuses them first.
            return pd.Series(values, index=series.index).astype("Int64")
        return pd.Series(values, index=series.index)
    return series.map(lambda v: v.strip() if isinstance(v, str) else v).replace("", np.nan)


def _align_label_types(labels: pd.Series, predictions: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Make labels and predictions comparable when one was read as numbers and the other as text."""
    label_numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    pred_numeric = pd.api.types.is_numeric_dtype(predictions) and not pd.api.types.is_bool_dtype(predictions)
    if label_numeric == pred_numeric:
        return labels, predictions
    text, numeric_side = (predictions, "pred") if label_numeric else (labels, "label")
    converted = pd.to_numeric(text, errors="coerce")
    if converted.notna().sum() == text.notna().sum():
        converted = _normalise_label_column(converted)
        return (labels, converted) if numeric_side == "pred" else (converted, predictions)
    as_text = lambda s: s.map(lambda v: v if _is_missing_scalar(v) else _group_name(v))  # noqa: E731
    return as_text(labels), as_text(predictions)


def _python_scalar(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def implicit_positive_label(values: Sequence[object]) -> object | None:
    """Positive label implied by a value set within {0,1}, {"no","yes"} or {False,True}; else None."""
    present = {_python_scalar(v) for v in values}
    if not present:
        return None
    lowered = {v.lower() if isinstance(v, str) else v for v in present}
    for negative, positive in _IMPLICIT_BINARY_PAIRS:
        if isinstance(negative, str):
            if all(isinstance(v, str) for v in present) and lowered <= {negative, positive}:
                return next((v for v in present if v.lower() == positive), positive)
        elif isinstance(negative, bool):
            if all(isinstance(v, bool) for v in present):
                return True
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present) and present <= {
            0,
            1,
        }:
            return 1
    return None


def _check_columns(frame: pd.DataFrame, source_name: str, required: dict[str, str]) -> None:
    available = [str(c) for c in frame.columns]
    for role, column in required.items():
        if column not in frame.columns:
            raise FairMedInputError(
                f"the {role} column is missing; columns present: {', '.join(available) or '(none)'}",
                source=source_name,
                column=column,
                hint="check the column names you passed; they are case-sensitive",
            )


def _check_no_missing(series: pd.Series, *, what: str, source_name: str, column: str) -> None:
    _reject_rows(
        series.isna().to_numpy(), lambda _: f"{what} is missing",
        source_name=source_name, column=column, hint=f"every row needs a {what}",
    )


def _check_in_set(
    series: pd.Series, allowed: set, *, what: str, source_name: str, column: str, hint: str
) -> None:
    shown = ", ".join(sorted(map(str, allowed)))
    _reject_rows(
        ~series.isin(list(allowed)).to_numpy(),
        lambda at: f"{what} {_python_scalar(series.iloc[at])!r} is not in the label set {{{shown}}}",
        source_name=source_name, column=column, hint=hint,
    )


def _check_score(series: pd.Series, *, source_name: str, column: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series):
        raise FairMedInputError(
            "scores must be probabilities in [0, 1], not true/false values",
            source=source_name,
            column=column,
        )
    numeric = pd.to_numeric(series, errors="coerce")
    _reject_rows(
        (numeric.isna() & series.notna()).to_numpy(),
        lambda at: f"score {_python_scalar(series.iloc[at])!r} is not a number",
        source_name=source_name, column=column, hint="scores must be probabilities in [0, 1]",
    )
    values = numeric.to_numpy(dtype=float, na_value=np.nan)
    _check_no_missing(pd.Series(values), what="score", source_name=source_name, column=column)
    _reject_rows(
        (values < 0.0) | (values > 1.0) | ~np.isfinite(values),
        lambda at: f"score {float(values[at])!r} is outside [0, 1]",
        source_name=source_name, column=column,
        hint="pass probabilities (apply a sigmoid/softmax to logits first)",
    )
    return pd.Series(values, index=series.index, name=series.name)


def _check_count(values: pd.Categorical, limit: int, *, what: str, source_name: str, column: str,
                 hint: str) -> None:
    """Refuse a column with more than ``limit`` distinct groups (or sources), before any pairwise table."""
    count = len(values.categories)
    if count > limit:
        raise FairMedInputError(
            f"the column has {count:,} {what}; an audit takes at most {limit:,} (the gap tables grow with the "
            f"square of the number of {what})",
            source=source_name, column=column, hint=hint,
        )


def _check_label_numbers(series: pd.Series, *, what: str, source_name: str, column: str) -> None:
    """Refuse infinite values in a numeric label or prediction column (a class cannot be infinite)."""
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        return
    values = series.to_numpy(dtype=float, na_value=np.nan)
    _reject_rows(
        np.isinf(values),
        lambda at: f"{what} {_python_scalar(series.iloc[at])!r} is not a finite number",
        source_name=source_name, column=column, hint=f"every {what} must be a class (0/1, yes/no, or a name)",
    )


def _check_scalar_cells(frame: pd.DataFrame, columns: Sequence[str], *, source_name: str) -> None:
    """Refuse a column used for a role that holds lists, arrays or records (Parquet list/struct columns)."""
    for column in columns:
        series = frame[column]
        if series.dtype != object and not isinstance(series.dtype, pd.ArrowDtype):
            continue
        nested = series.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).to_numpy(dtype=bool)
        _reject_rows(
            nested,
            lambda at: f"the cell holds a {type(series.iloc[at]).__name__}, not a single value",
            source_name=source_name, column=column,
            hint="list and struct columns cannot be labels, predictions, scores or groups; flatten the table",
        )


def _binary_spelling(value: object) -> str | None:
    """The binary class a label value spells ("0", "1", "no", "yes", "false", "true"), or None."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float is no binary class
            return None
        return None if number not in (0.0, 1.0) else ("1" if number == 1.0 else "0")
    if isinstance(value, str):
        text = value.strip().lower()
        return {"0.0": "0", "1.0": "1"}.get(text, text)
    return None


def _spelled(series: pd.Series) -> pd.Series:
    """``_binary_spelling`` of every value, computed once per distinct value where the column has one type (a
    numeric or string column: a million rows hold a handful of values); an object column is mapped row by row,
    since hashing would merge ``True`` with ``1``."""
    if series.dtype == object:
        return series.map(_binary_spelling)
    codes, uniques = pd.factorize(series)
    spelled = np.array([_binary_spelling(u) for u in uniques] + [None], dtype=object)
    return pd.Series(spelled[codes], index=series.index)  # code -1 (missing) takes the trailing None


def _refuse_stray_labels(labels: pd.Series, predictions: pd.Series, raw: pd.DataFrame, *, source_name: str,
                         label_col: str, pred_col: str) -> None:
    """Refuse a table that is binary but for a few stray values, naming the first one.

    Without a declared label set, a value outside {0, 1}, {no, yes} or {False, True} silently turns a binary
    audit into a multi-class one. When both values of one of those pairs occur and the rows with any other
    value are at most ``_STRAY_SHARE`` of the table, those values are taken for errors in the file. The
    message quotes the value as ``raw`` (the table as given) holds it.
    """
    n_rows = len(labels)
    label_spelt = _spelled(labels)
    pred_spelt = _spelled(predictions)
    if predictions.dtype == object:
        marker = predictions.map(lambda v: isinstance(v, str) and v == FORMAT_FAILURE).to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(predictions) or pd.api.types.is_bool_dtype(predictions):
        marker = np.zeros(len(predictions), dtype=bool)
    else:  # a string column
        marker = (predictions == FORMAT_FAILURE).fillna(False).to_numpy(dtype=bool)
    for pattern, members in _BINARY_PATTERNS:
        label_inside = label_spelt.isin(members).to_numpy(dtype=bool)
        pred_inside = pred_spelt.isin(members).to_numpy(dtype=bool) | marker
        stray = ~(label_inside & pred_inside)
        count = int(stray.sum())
        present = set(label_spelt[label_inside]) | set(pred_spelt[pred_inside & ~marker])
        if count == 0 or count > max(1.0, _STRAY_SHARE * n_rows) or present != set(members):
            continue
        position = int(np.flatnonzero(stray)[0])
        what, column = ("label", label_col) if not label_inside[position] else ("prediction", pred_col)
        raise FairMedInputError(
            f"{what} {_python_scalar(raw[column].iloc[position])!r} breaks the binary pattern {pattern} of the other "
            f"rows{_describe_more(count)}",
            source=source_name,
            column=column,
            row=_data_row(position),
            hint="fix the row, or declare the full label set (label_values, --label-values) if the table is "
                 f"really multi-class; {_ROW_HINT}",
        )


def validate_predictions(
    frame: pd.DataFrame,
    *,
    source_name: str,
    label_col: str | None = None,
    pred_col: str | None = None,
    sensitive: Sequence[str] | None = None,
    score_col: str | None = None,
    source_col: str | None = None,
    id_col: str | None = None,
    columns: PredictionColumns | None = None,
    label_values: Sequence | None = None,
    extra_prediction_values: Sequence = (),
) -> pd.DataFrame:
    """Check a predictions table and return a normalised copy; its columns named by ``columns`` or by the
    ``*_col`` keywords and ``sensitive``.

    Returns a copy in which labels and predictions share one type (integral floats become ints, text is
    stripped), scores are floats in [0, 1], and every attribute (and the source column) is a categorical of
    strings in natural order where missing values (NaN, None, "", "UNK", "unknown") form the group
    ``"UNK"``. Other columns are kept as they are.

    Raises :class:`FairMedInputError` naming ``source_name``, the column and the row (header = row 1) for:
    missing columns, zero rows, missing labels or predictions, labels or predictions outside
    ``label_values``, a prediction never seen among the labels (when ``label_values`` is not given),
    non-numeric, missing or out-of-range scores, missing or duplicate case ids, and reserved names.
    ``extra_prediction_values`` are accepted as predictions even if no label has them (the audit passes the
    positive label here); so is the format-failure marker ``"(format failure)"``, an outcome rather than a label.

    The binary/multi-class decision is explicit: without ``label_values``, a table whose labels and predictions
    follow {0, 1}, {no, yes} or {False, True} but for at most 5% of its rows is refused at the first stray value
    (a 0.5, a 2, "maybe", a date) instead of being audited as multi-class. A frame validated with
    ``label_values`` remembers it (``DataFrame.attrs``), so validating it again keeps the declared set. Infinite
    labels, cells holding lists or records, two columns with a role's name, an attribute with more than
    ``MAX_GROUPS_PER_ATTRIBUTE`` groups and more than ``MAX_SOURCES`` sources are refused too.
    """
    if not isinstance(frame, pd.DataFrame):
        raise FairMedInputError(
            f"expected a pandas DataFrame, got {type(frame).__name__}", source=source_name
        )
    columns = resolve_columns(columns, label_col=label_col, pred_col=pred_col, sensitive=sensitive,
                              score_col=score_col, source_col=source_col, id_col=id_col)
    label_col, pred_col, score_col, source_col, id_col = (columns.label, columns.prediction, columns.score,
                                                          columns.source, columns.id)
    sensitive = list(columns.sensitive)
    if not sensitive:
        raise FairMedInputError(
            "no sensitive attribute given", source=source_name, hint="pass sensitive=['sex', ...]"
        )
    if len(set(sensitive)) != len(sensitive):
        raise FairMedInputError(f"sensitive attributes repeat: {sensitive}", source=source_name)
    required = {"label": label_col, "prediction": pred_col}
    required.update({f"sensitive attribute #{i + 1}": c for i, c in enumerate(sensitive)})
    if score_col is not None:
        required["score"] = score_col
    if source_col is not None:
        required["source"] = source_col
    if id_col is not None:
        required["case id"] = id_col
    _check_columns(frame, source_name, required)
    duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]} & set(map(str, required.values())))
    if duplicated:
        raise FairMedInputError(
            "the table has two columns with this name", source=source_name, column=duplicated[0],
            hint="rename one of them so that it is clear which one to audit",
        )
    roles = list(required.values())
    for column in set(roles):
        if roles.count(column) > 1:
            raise FairMedInputError(
                "the same column is used for two roles "
                f"({', '.join(r for r, c in required.items() if c == column)})",
                source=source_name,
                column=column,
            )
    for column in sensitive:
        if column in _RESERVED_ATTRIBUTES:
            raise FairMedInputError(
                f"an attribute may not be called {column!r}: the audit uses that name for its own rows",
                source=source_name,
                column=column,
                hint="rename the column",
            )
    if len(frame) == 0:
        raise FairMedInputError(
            "the table has no data rows", source=source_name, hint="it must hold at least one case"
        )

    _check_scalar_cells(frame, list(dict.fromkeys(required.values())), source_name=source_name)
    _check_label_numbers(frame[label_col], what="true label", source_name=source_name, column=label_col)
    _check_label_numbers(frame[pred_col], what="prediction", source_name=source_name, column=pred_col)
    out = frame.copy()
    labels = _normalise_label_column(out[label_col])
    predictions = _normalise_label_column(out[pred_col])
    _check_no_missing(labels, what="true label", source_name=source_name, column=label_col)
    _check_no_missing(predictions, what="prediction", source_name=source_name, column=pred_col)
    labels, predictions = _align_label_types(labels, predictions)

    if label_values is not None:
        declared = _normalise_label_column(pd.Series(list(label_values)))
        labels_numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
        if labels_numeric and not pd.api.types.is_numeric_dtype(declared):
            # The CLI passes --label-values as text: "0 1 2" declares the numbers 0, 1 and 2.
            as_numbers = pd.to_numeric(declared, errors="coerce")
            if as_numbers.notna().all():
                declared = _normalise_label_column(as_numbers)
        if pd.api.types.is_numeric_dtype(labels) != pd.api.types.is_numeric_dtype(declared):
            declared = declared.map(_group_name)
        allowed = set(declared.dropna().tolist())
        hint = "add the value to label_values or fix the row"
        _check_in_set(labels, allowed, what="label", source_name=source_name, column=label_col, hint=hint)
        _check_in_set(
            predictions,
            allowed | {FORMAT_FAILURE},
            what="prediction",
            source_name=source_name,
            column=pred_col,
            hint=hint,
        )
        out.attrs[_DECLARED_LABELS_ATTR] = True
    else:
        if not frame.attrs.get(_DECLARED_LABELS_ATTR):
            _refuse_stray_labels(labels, predictions, frame, source_name=source_name, label_col=label_col,
                                 pred_col=pred_col)
        seen = set(pd.unique(labels).tolist())
        implicit = implicit_positive_label((seen | set(pd.unique(predictions).tolist())) - {FORMAT_FAILURE})
        allowed = set(seen) | set(extra_prediction_values) | {FORMAT_FAILURE}
        # A {0,1}/{no,yes}/{False,True} table declares its label set implicitly: a model that predicts
        # "yes" on a table whose labels are all "no" is fine.
        bad = (
            np.zeros(len(predictions), dtype=bool)
            if implicit is not None
            else ~predictions.isin(list(allowed)).to_numpy()
        )
        _reject_rows(
            bad,
            lambda at: f"prediction {_python_scalar(predictions.iloc[at])!r} never appears among the true labels",
            source_name=source_name, column=pred_col,
            hint="declare the full label set with label_values=[...] if this is intended",
        )
    out[label_col] = labels
    out[pred_col] = predictions

    if score_col is not None:
        out[score_col] = _check_score(out[score_col], source_name=source_name, column=score_col)
    for column in sensitive:
        groups = normalise_attribute(out[column])
        _check_count(groups, MAX_GROUPS_PER_ATTRIBUTE, what="groups", source_name=source_name, column=column,
                     hint="merge rare values into broader groups, or audit a coarser attribute")
        out[column] = groups
    if source_col is not None:
        sources = normalise_attribute(out[source_col])
        _check_count(sources, MAX_SOURCES, what="sources", source_name=source_name, column=source_col,
                     hint="audit the sources in batches, or name broader sources (a modality or a site)")
        clash = _RESERVED_SOURCES.intersection(sources.categories)
        if clash:
            position, _ = _first_bad(np.isin(np.asarray(sources, dtype=object), list(clash)))
            raise FairMedInputError(
                f"source name {sorted(clash)[0]!r} is reserved for the pooled audit",
                source=source_name,
                column=source_col,
                row=_data_row(position),
                hint="rename that source",
            )
        out[source_col] = sources
    if id_col is not None:
        ids = out[id_col]
        _check_no_missing(ids, what="case id", source_name=source_name, column=id_col)
        _reject_rows(
            ids.duplicated().to_numpy(),
            lambda at: f"case id {_python_scalar(ids.iloc[at])!r} appears more than once",
            source_name=source_name, column=id_col, hint="each case must appear once per predictions table",
        )
    return out


def _sniff_format(path: Path, head: bytes) -> str:
    """'parquet' or 'csv' from the magic bytes and suffix; junk is an error here, before pandas sees it."""
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    for signature, description in _KNOWN_BINARY_SIGNATURES:
        if head.startswith(signature):
            raise FairMedInputError(
                f"this is {description}, not a CSV or Parquet predictions table",
                source=str(path),
                hint="export the predictions as CSV (UTF-8) or Parquet",
            )
    if path.suffix.lower() in {".parquet", ".pq"}:
        raise FairMedInputError(
            "the file has a Parquet suffix but no Parquet header (magic bytes 'PAR1')",
            source=str(path),
            hint="the file is damaged or mislabelled; re-export it",
        )
    if b"\x00" in head:
        raise FairMedInputError(
            "the file holds binary data (NUL bytes), not CSV text",
            source=str(path),
            hint="export the predictions as CSV (UTF-8) or Parquet",
        )
    return "csv"


def _text_encoding(path: Path, head: bytes) -> str:
    """'utf-8' when the head decodes as UTF-8, else 'latin-1' for legacy exports; junk is an error."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)  # a multibyte character cut at the end is not an error
        return "utf-8-sig"
    except UnicodeDecodeError:
        pass
    text = head.decode("latin-1")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n") + sum(
        1 for ch in text if 0x7F <= ord(ch) < 0xA0
    )
    if control > max(1, len(text) // 100):
        raise FairMedInputError(
            "the file is not text (not valid UTF-8 and full of control bytes)",
            source=str(path),
            hint="export the predictions as CSV (UTF-8) or Parquet",
        )
    return "latin-1"


def _one_line(error: BaseException, limit: int = 200) -> str:
    """A library's exception text as one line (pyarrow's span several), cut to ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_table(path: Path, *, text_columns: Sequence[str]) -> pd.DataFrame:
    with path.open("rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    kind = _sniff_format(path, head)
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several unrelated types for damaged files
            raise FairMedInputError(
                f"could not read the Parquet file: {_one_line(exc)}",
                source=str(path),
                hint="the file may be truncated or damaged; re-export it",
            ) from exc
    encoding = _text_encoding(path, head)
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    check_csv_shape(path, encoding=encoding, separator=separator)
    try:
        header = pd.read_csv(path, nrows=0, sep=separator, encoding=encoding)
        # Attribute and id columns are read as text so that codes like "01" keep their spelling.
        dtypes = {c: str for c in text_columns if c in header.columns}
        # index_col=False: a row with one field too many is refused above, never read as an index.
        return pd.read_csv(path, sep=separator, encoding=encoding, dtype=dtypes, low_memory=False,
                           index_col=False)
    except pd.errors.EmptyDataError as exc:
        raise FairMedInputError(
            "the file has no header line", source=str(path), hint="the first line must name the columns"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise FairMedInputError(
            f"could not parse the CSV: {_one_line(exc)}",
            source=str(path),
            hint="check quoting and that every line has as many fields as the header",
        ) from exc


def load_predictions(
    path: str | Path,
    *,
    label_col: str | None = None,
    pred_col: str | None = None,
    sensitive: Sequence[str] | None = None,
    score_col: str | None = None,
    source_col: str | None = None,
    id_col: str | None = None,
    columns: PredictionColumns | None = None,
    label_values: Sequence | None = None,
    max_bytes: int = 50 * 2**20,
) -> pd.DataFrame:
    """Read a CSV or Parquet predictions table and validate it (see :func:`validate_predictions`); its columns
    named by ``columns`` or by the ``*_col`` keywords and ``sensitive``.

    The format comes from the Parquet magic bytes, else the suffix (``.parquet``/``.pq``; ``.tsv`` is read
    tab-separated; anything else as CSV). A file larger than ``max_bytes`` is refused before it is read.
    Images, archives and other binary files are refused with a message that says what they look like.
    """
    columns = resolve_columns(columns, label_col=label_col, pred_col=pred_col, sensitive=sensitive,
                              score_col=score_col, source_col=source_col, id_col=id_col)
    label_col, pred_col, score_col, source_col, id_col = (columns.label, columns.prediction, columns.score,
                                                          columns.source, columns.id)
    sensitive = list(columns.sensitive)
    text_columns = [*sensitive, *(c for c in (source_col, id_col) if c is not None)]
    frame = read_predictions_table(path, max_bytes=max_bytes, text_columns=text_columns)
    return validate_predictions(frame, source_name=str(path), columns=columns, label_values=label_values)


def read_predictions_table(
    path: str | Path, *, max_bytes: int = 50 * 2**20, text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a CSV or Parquet table as it is, with the size and junk checks but no column validation.

    For a column mapper that must show the columns before the user names the label and prediction;
    pass the result through :func:`validate_predictions` before auditing.
    """
    path = Path(path)
    if not path.exists():
        raise FairMedInputError("file not found", source=str(path))
    if not path.is_file():
        raise FairMedInputError("not a regular file", source=str(path))
    size = path.stat().st_size
    if size > max_bytes:
        raise FairMedInputError(
            f"the file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit",
            source=str(path),
            hint="split the table or raise max_bytes",
        )
    if size == 0:
        raise FairMedInputError("the file is empty", source=str(path))
    return _read_table(path, text_columns=text_columns)
