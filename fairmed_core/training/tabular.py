"""Tabular clinical data for FairGrad and fairlearn: a checked reader, an encoding pipeline, and SUPPORT2 sepsis.

:func:`read_tabular` turns a CSV/TSV/Parquet file (or a DataFrame) with user-named label and attribute columns into
a :class:`TabularData`: features, a 0/1 label and one column of group names per sensitive attribute.
:func:`tabular_pipeline` builds the scikit-learn ``ColumnTransformer`` that imputes, scales and one-hot encodes
those features for ``FairGradClassifier`` or a fairlearn mitigator. :func:`support2_sepsis` is the SUPPORT2 sepsis
mortality cohort, from the optional ``survset`` package (GPL-3.0; ``pip install -r requirements-extras.txt``).

Handling, decided here once so a fit never runs on garbage silently:

* Feature types. A column named in ``numeric`` or ``categorical`` has that type. Any other feature column is
  numeric when its dtype is numeric or boolean and categorical when its dtype is pandas ``category``; a text
  column whose type was not declared is an error naming the column (a code list such as ``"A12"``, or a number
  column with a stray ``"n/a"``, must not be guessed at). A declared numeric column with a value that is not a
  number is an error naming the column and row; so is an infinite value, or a feature column with no values.
* Missing feature values. Numeric: left as NaN in ``X`` and imputed by :func:`tabular_pipeline` with the median
  of the rows it is fitted on (the training rows) plus a 0/1 missing-indicator column, so nothing about the test
  rows leaks into training. Categorical: the category ``"missing"`` (:data:`MISSING_CATEGORY`), kept in ``X``.
  Every column with missing values gets a line in ``TabularData.notes``.
* Label. Missing label values are an error naming the row (drop those rows first: there is nothing to impute).
  A 0/1 or boolean label needs no ``positive_label``; any other label does. A label with more than two values
  is binarised one-vs-rest around ``positive_label`` (with a note). A label with one class is an error.
* Attributes. Values become group names (text). Missing values become the group ``"UNK"`` with a note, or an
  error with ``strict=True``. An attribute with one group, or with more than :data:`MAX_ATTRIBUTE_GROUPS`
  groups, is an error naming the column; a continuous attribute can be binned with ``attribute_bins``. Attribute
  columns are not features unless they are also named in ``numeric`` or ``categorical``.

Every error is a ``FairMedInputError`` with the file (``source``) and the column; ``row`` is the 1-based line in
the file (the header is line 1) for files, and the 0-based position for DataFrames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fairmed_core.errors import FairMedInputError

from fairmed_core.data.schema import UNKNOWN

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_ATTRIBUTE_GROUPS",
    "MISSING_CATEGORY",
    "SUPPORT2_SEPSIS_CATEGORICAL",
    "SUPPORT2_SEPSIS_NUMERIC",
    "TabularData",
    "read_tabular",
    "support2_sepsis",
    "tabular_pipeline",
]

DEFAULT_MAX_BYTES = 200 * 2**20  # 200 MiB: a large hospital extract, well short of exhausting memory
MAX_ATTRIBUTE_GROUPS = 50  # the same limit as FairGradClassifier: more is an identifier or a continuous column
MISSING_CATEGORY = "missing"
_SMALL_GROUP = 20  # groups smaller than this get a note: their rates (and gaps) are very noisy
_MANY_CATEGORIES = 100


@dataclass(frozen=True)
class TabularData:
    """A checked table: features ``X``, 0/1 labels ``y`` and group names per attribute in ``sensitive``.

    ``X`` holds the ``numeric`` columns as float64 (NaN where missing; :func:`tabular_pipeline` imputes them)
    and the ``categorical`` columns as text (``"missing"`` where missing), in ``feature_names`` order. ``y`` is
    1 where the label equals ``positive_label``. ``sensitive`` has one text column per attribute, rows aligned
    with ``X`` and ``y`` (all three have a fresh 0..n-1 index). ``notes`` says how anything unusual was handled.
    """

    X: pd.DataFrame
    y: np.ndarray
    sensitive: pd.DataFrame
    feature_names: tuple[str, ...]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    label: str
    positive_label: object
    source: str
    notes: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.sensitive.columns)

    @property
    def positive_rate(self) -> float:
        return float(np.mean(self.y))


# --------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------


def _names(value: Sequence[str] | str | None, argument: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    names = tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise FairMedInputError(f"{argument} must name columns by their header text, got {name!r}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise FairMedInputError(f"{argument} names {duplicated} more than once")
    return names


def _load(path_or_frame, *, max_bytes: int, text_columns: Sequence[str]) -> tuple[pd.DataFrame, str, bool]:
    """The raw table, its source name for messages, and whether rows are file lines."""
    if isinstance(path_or_frame, pd.DataFrame):
        frame = path_or_frame.copy()
        frame.columns = [str(column) for column in frame.columns]
        return frame.reset_index(drop=True), "<DataFrame>", False
    if not isinstance(path_or_frame, (str, Path)):
        raise FairMedInputError(
            f"read_tabular needs a file path or a pandas DataFrame, got {type(path_or_frame).__name__}")
    from fairmed_core.fairness import read_predictions_table  # size, binary-junk and parse checks live there

    frame = read_predictions_table(path_or_frame, max_bytes=max_bytes, text_columns=text_columns)
    return frame.reset_index(drop=True), str(path_or_frame), True


def _group_text(value: object) -> object:
    """A group name as text; whole floats (ints that became floats next to a NaN) lose their ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        value = value.item()
    text = str(value).strip()
    return text or None


def _bin_labels(edges: Sequence[float]) -> list[str]:
    labels = []
    for low, high in zip(edges[:-1], edges[1:]):
        if math.isinf(low):
            labels.append(f"<{high:g}")
        elif math.isinf(high):
            labels.append(f">={low:g}")
        else:
            labels.append(f"{low:g}-{high:g}")
    return labels


def read_tabular(
    path_or_frame,
    *,
    label: str,
    positive_label=None,
    attributes: Sequence[str],
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    attribute_bins: Mapping[str, Sequence[float]] | None = None,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> TabularData:
    """Read and check a clinical table for fairness-aware training; see the module docstring for the handling.

    Parameters
    ----------
    path_or_frame : a CSV (``.tsv`` tab-separated) or Parquet file, or a DataFrame.
    label : the outcome column; ``positive_label`` is its value that means the outcome happened (not needed for
        a 0/1 or boolean label).
    attributes : the sensitive attribute columns (at least one); their values become group names.
    numeric, categorical : declared feature types; other feature columns are typed from their dtype, and text
        columns must be declared. Naming an attribute here also makes it a feature.
    drop : columns to ignore (identifiers, dates, free text, outcomes other than the label).
    attribute_bins : attribute -> increasing bin edges (``-inf``/``inf`` allowed); the attribute's numbers are
        grouped into ``[edge_i, edge_i+1)`` bins named like ``"<50"``, ``"50-65"``, ``">=75"``.
    strict : missing attribute values are an error instead of the group ``"UNK"``.
    max_bytes : files larger than this are refused before reading.
    """
    attributes = _names(attributes, "attributes")
    numeric_declared = _names(numeric, "numeric")
    categorical_declared = _names(categorical, "categorical")
    drop = _names(drop, "drop")
    bins = {str(name): list(edges) for name, edges in (attribute_bins or {}).items()}
    if not isinstance(label, str):
        raise FairMedInputError(f"label must name one column, got {label!r}")
    if not attributes:
        raise FairMedInputError("name at least one sensitive attribute column in attributes=",
                                hint="fairness-aware training needs the groups to be fair between")

    text_columns = [*categorical_declared, *(a for a in attributes if a not in bins)]
    frame, source, rows_are_lines = _load(path_or_frame, max_bytes=max_bytes, text_columns=text_columns)

    def row_of(position: int) -> int:
        return position + 2 if rows_are_lines else position

    def error(message: str, *, column: str | None = None, row: int | None = None, hint: str | None = None):
        return FairMedInputError(message, source=source, column=column, row=row, hint=hint)

    if frame.columns.duplicated().any():
        duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise error(f"the table has duplicate column names {duplicated}", column=duplicated[0])
    if len(frame) == 0:
        raise error("the table has no rows")

    # -- every named column exists, and no column plays two roles --------------------------------------------
    available = list(frame.columns)
    shown = ", ".join(map(repr, available[:30])) + (" ..." if len(available) > 30 else "")
    for argument, names in (("label", (label,)), ("attributes", attributes), ("numeric", numeric_declared),
                            ("categorical", categorical_declared), ("drop", drop), ("attribute_bins", tuple(bins))):
        for name in names:
            if name not in frame.columns:
                raise error(f"{argument} names a column the table does not have", column=name,
                            hint=f"columns: {shown}")
    for argument, names in (("attributes", attributes), ("numeric", numeric_declared),
                            ("categorical", categorical_declared), ("drop", drop)):
        if label in names:
            raise error(f"the label column is also named in {argument}", column=label,
                        hint="the label cannot be a feature, an attribute or dropped")
    for name in sorted(set(numeric_declared) & set(categorical_declared)):
        raise error("column is declared both numeric and categorical", column=name)
    for name in drop:
        if name in attributes or name in numeric_declared or name in categorical_declared:
            raise error("column is named in drop and also used", column=name)
    for name in bins:
        if name not in attributes:
            raise error("attribute_bins names a column that is not in attributes", column=name)

    notes: list[str] = []

    # -- label ------------------------------------------------------------------------------------------------
    y, positive = _read_label(frame[label], positive_label, label=label, notes=notes, error=error, row_of=row_of)

    # -- attributes -------------------------------------------------------------------------------------------
    sensitive = {}
    for name in attributes:
        sensitive[name] = _read_attribute(frame[name], name, bins.get(name), strict=strict, notes=notes,
                                          error=error, row_of=row_of)

    # -- features ---------------------------------------------------------------------------------------------
    excluded = {label, *drop, *attributes} - set(numeric_declared) - set(categorical_declared)
    feature_columns = [name for name in frame.columns if name not in excluded]
    if not feature_columns:
        raise error("no feature columns are left after the label, attributes and drop",
                    hint="declare features in numeric= or categorical=")
    features, numeric_names, categorical_names = {}, [], []
    for name in feature_columns:
        column = frame[name]
        if name in numeric_declared:
            kind = "numeric"
        elif name in categorical_declared:
            kind = "categorical"
        elif pd.api.types.is_bool_dtype(column) or (
                pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_complex_dtype(column)):
            kind = "numeric"
        elif isinstance(column.dtype, pd.CategoricalDtype):
            kind = "categorical"
            notes.append(f"feature {name!r}: pandas category dtype, treated as categorical")
        elif pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
            raise error("feature column holds dates or durations, which are not supported as features",
                        column=name, hint="derive a number (e.g. days since admission) or pass it in drop=")
        else:
            raise error(_undeclared_text_message(column), column=name,
                        hint=f"declare it: categorical=[{name!r}] (or numeric=[{name!r}] after fixing the values), "
                             f"or drop=[{name!r}]")
        if kind == "numeric":
            features[name] = _numeric_feature(column, name, notes=notes, error=error, row_of=row_of)
            numeric_names.append(name)
        else:
            features[name] = _categorical_feature(column, name, notes=notes)
            categorical_names.append(name)

    X = pd.DataFrame(features, columns=feature_columns)
    return TabularData(
        X=X,
        y=y,
        sensitive=pd.DataFrame(sensitive, columns=list(attributes)),
        feature_names=tuple(feature_columns),
        numeric=tuple(numeric_names),
        categorical=tuple(categorical_names),
        label=label,
        positive_label=positive,
        source=source,
        notes=tuple(notes),
    )


def _read_label(column: pd.Series, positive_label, *, label, notes, error, row_of) -> tuple[np.ndarray, object]:
    missing = column.isna().to_numpy()
    if missing.any():
        raise error(f"the label is missing in {int(missing.sum())} rows", column=label,
                    row=row_of(int(np.flatnonzero(missing)[0])),
                    hint="drop the rows without an outcome: a label cannot be imputed")
    values = [value.item() if isinstance(value, np.generic) else value for value in pd.unique(column)]
    if len(values) < 2:
        raise error(f"the label has one class ({values[0]!r}); a classifier needs both outcomes", column=label,
                    hint="check the label column, or the filter that produced these rows")
    if positive_label is None:
        is_binary_numbers = (pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column)) and set(
            values) <= {0, 1}
        if not is_binary_numbers:
            listed = ", ".join(map(repr, values[:10])) + (" ..." if len(values) > 10 else "")
            raise error(f"the label has the values {listed}; say which one is the positive outcome", column=label,
                        hint="pass positive_label=" + ("" if len(values) > 2 else "(binary) ") + "...")
        positive = True if pd.api.types.is_bool_dtype(column) else 1
        return (column.to_numpy() == positive).astype(np.int64), positive
    matches = column == positive_label
    if not matches.any():  # "1" for a numeric column, or 1 for a text one
        matches = column.astype(str).str.strip() == str(positive_label).strip()
    if not matches.any():
        listed = ", ".join(map(repr, values[:10])) + (" ..." if len(values) > 10 else "")
        raise error(f"positive_label {positive_label!r} does not occur in the label (values: {listed})",
                    column=label)
    if matches.all():
        raise error(f"every row has the positive label {positive_label!r}: the label has one class", column=label)
    if len(values) > 2:
        notes.append(f"label {label!r} has {len(values)} values; binarised as {positive_label!r} vs the rest")
    return matches.to_numpy().astype(np.int64), positive_label


def _read_attribute(column: pd.Series, name: str, edges, *, strict, notes, error, row_of) -> pd.Series:
    if edges is not None:
        if len(edges) < 2 or any(not b > a for a, b in zip(edges[:-1], edges[1:])):
            raise error(f"attribute_bins must be at least two increasing edges, got {edges!r}", column=name)
        numbers = pd.to_numeric(column, errors="coerce")
        bad = (numbers.isna() & column.notna()).to_numpy()
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise error(f"attribute is binned but {column.iloc[position]!r} is not a number", column=name,
                        row=row_of(position))
        outside = (numbers.notna() & ((numbers < edges[0]) | (numbers >= edges[-1]))).to_numpy()
        if outside.any():
            position = int(np.flatnonzero(outside)[0])
            raise error(f"value {numbers.iloc[position]!r} is outside the bins [{edges[0]}, {edges[-1]})",
                        column=name, row=row_of(position), hint="use -inf/inf as the outer edges")
        groups = pd.cut(numbers, bins=edges, right=False, labels=_bin_labels(edges)).astype(object)
        groups = groups.where(numbers.notna(), None)
    else:
        groups = column.map(_group_text)
    missing = groups.isna().to_numpy()
    if missing.any():
        if strict:
            raise error(f"the attribute is missing in {int(missing.sum())} rows (strict=True)", column=name,
                        row=row_of(int(np.flatnonzero(missing)[0])),
                        hint="fill them, drop the rows, or leave strict off to group them as 'UNK'")
        notes.append(f"attribute {name!r}: {int(missing.sum())} missing values grouped as {UNKNOWN!r}")
        groups = groups.where(~missing, UNKNOWN)
    groups = groups.astype(object)
    counts = groups.value_counts()
    if len(counts) < 2:
        raise error(f"the attribute has one group ({counts.index[0]!r}); there is nothing to be fair between",
                    column=name, hint="check the column, or leave it out of attributes")
    if len(counts) > MAX_ATTRIBUTE_GROUPS:
        raise error(f"the attribute has {len(counts)} groups, more than the {MAX_ATTRIBUTE_GROUPS} supported",
                    column=name, hint="an identifier or a continuous column? bin it with attribute_bins, "
                                      "or merge rare groups")
    small = {str(group): int(n) for group, n in counts.items() if n < _SMALL_GROUP}
    if small:
        notes.append(f"attribute {name!r}: groups with fewer than {_SMALL_GROUP} rows {small}; their rates "
                     "and gaps are very noisy")
    return groups.reset_index(drop=True)


def _undeclared_text_message(column: pd.Series) -> str:
    present = column.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    not_numbers = present[numbers.isna()]
    if len(present) and len(not_numbers) < len(present):
        return (f"feature column is text and its type is not declared: {len(not_numbers)} of {len(present)} "
                f"values are not numbers (e.g. {not_numbers.iloc[0]!r})")
    example = f" (e.g. {present.iloc[0]!r})" if len(present) else ""
    return f"feature column is text and its type is not declared{example}"


def _numeric_feature(column: pd.Series, name: str, *, notes, error, row_of) -> pd.Series:
    if pd.api.types.is_bool_dtype(column):
        values = column.astype("float64")
    else:
        values = pd.to_numeric(column, errors="coerce")
        bad = (values.isna() & column.notna() & (column.astype(str).str.strip() != "")).to_numpy()
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise error(f"numeric feature has a value that is not a number: {column.iloc[position]!r}",
                        column=name, row=row_of(position),
                        hint="fix or blank the value, or declare the column categorical")
        values = values.astype("float64")
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        raise error("numeric feature has an infinite value", column=name, row=row_of(int(np.flatnonzero(infinite)[0])),
                    hint="clip or blank it")
    missing = int(values.isna().sum())
    if missing == len(values):
        raise error("feature column has no values", column=name, hint=f"drop=[{name!r}]")
    if missing:
        notes.append(f"feature {name!r}: {missing} missing values, imputed by the training median with a "
                     "missing indicator (tabular_pipeline)")
    return values.reset_index(drop=True)


def _categorical_feature(column: pd.Series, name: str, *, notes) -> pd.Series:
    values = column.astype(object).map(_group_text)
    missing = int(values.isna().sum())
    if missing:
        notes.append(f"feature {name!r}: {missing} missing values as the category {MISSING_CATEGORY!r}")
        values = values.where(values.notna(), MISSING_CATEGORY)
    levels = values.nunique()
    if levels > _MANY_CATEGORIES:
        notes.append(f"feature {name!r}: {levels} categories; an identifier or free text? consider drop=")
    return values.astype(object).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------------------


def tabular_pipeline(data: TabularData):
    """An unfitted ``ColumnTransformer`` for ``data.X``: numeric columns median-imputed (with missing-indicator
    columns for those with gaps in the fitting rows) and standardised, categorical columns one-hot encoded
    (``handle_unknown="ignore"``: a category unseen in training encodes as all zeros). Output is a dense float
    array, ready for ``FairGradClassifier`` or fairlearn; fit it on the training rows only."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    transformers = []
    if data.numeric:
        transformers.append(("numeric", Pipeline([
            ("impute", SimpleImputer(strategy="median", add_indicator=True)),
            ("scale", StandardScaler()),
        ]), list(data.numeric)))
    if data.categorical:
        transformers.append((
            "categorical",
            OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64),
            list(data.categorical)))
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)


# --------------------------------------------------------------------------------------------------------------
# SUPPORT2: sepsis mortality
# --------------------------------------------------------------------------------------------------------------

SUPPORT2_SEPSIS_NUMERIC = (
    "age", "num_co", "diabetes", "dementia", "hday", "scoma", "sps", "meanbp", "wblc", "hrt", "resp", "temp",
    "pafi", "alb", "bili", "crea", "sod", "ph", "glucose", "bun", "urine",
)
SUPPORT2_SEPSIS_CATEGORICAL = ("ca",)
_SUPPORT2_SEPSIS_GROUP = "ARF/MOSF w/Sepsis"
_SUPPORT2_AGE_EDGES = (-math.inf, 50.0, 65.0, 75.0, math.inf)


def support2_sepsis(*, horizon_days: int = 180) -> TabularData:
    """The SUPPORT2 sepsis cohort (disease group ``"ARF/MOSF w/Sepsis"``, 3,515 of 9,105 adults) for mortality.

    Data: the copy of SUPPORT2 inside the optional ``survset`` package (``SurvSet`` module; read from the wheel,
    nothing is downloaded). Install it with ``pip install -r requirements-extras.txt``; it is GPL-3.0, so it is
    an extra for benchmarks and tests, not a dependency of FairMed.

    Label ``death_{horizon_days}d``: death within ``horizon_days`` (default 180) of study entry. That copy of
    SUPPORT2 has no in-hospital death (``hospdead``) column, only ``event`` (death at any time during a
    follow-up of up to 5.5 years) and ``time`` (days to death or last contact). ``event`` alone mixes very
    different follow-up lengths, so a fixed horizon is used; 180 days is SUPPORT's own prognostic horizon (its
    ``surv6m``), and in the sepsis group every survivor was followed for at least 344 days, so the label is known
    for every patient (about 44.6% positive). Patients censored alive before the horizon (none at 180 days;
    some for horizons past 344 days) are dropped, with a note.

    Attributes: ``race`` as white / black / other (SUPPORT2's hispanic 123, other 40, asian 33 and missing 15
    merged: apart they are groups of 3 to 25 patients in a 20% test split, whose rates are noise); ``sex``
    (female / male); ``age_group`` (``<50``, ``50-65``, ``65-75``, ``>=75`` years, near quartiles). Race and sex
    are not features; age stays a feature (in years) because it is a core mortality predictor.

    Features (numeric unless noted): age, number of comorbidities, diabetes, dementia, days in hospital before
    study entry, coma score, SUPPORT physiology score (sps), mean blood pressure, white cell count, heart rate,
    respiration rate, temperature, PaO2/FiO2, albumin, bilirubin, creatinine, sodium, pH, glucose, BUN, urine
    output, and cancer status (``ca``, categorical). Left out: ``surv2m``/``surv6m`` (SUPPORT's own model's
    predictions of this very outcome), ``sfdm2`` (functional status at 2 months, whose levels include death),
    ``dnr`` (do-not-resuscitate orders, many written after study entry as death approached), ``edu``/``income``
    (socio-economic, not physiology) and ``adlp``/``adls`` (activities of daily living, 60%/33% missing). Lab
    values are often missing (e.g. urine, BUN, glucose for about half the cohort): the missing-indicator imputation
    of :func:`tabular_pipeline` handles them, with the notes listing counts.
    """
    try:
        from SurvSet.data import SurvLoader
    except ImportError as exc:
        raise ImportError(
            "the SUPPORT2 data ships in the optional 'survset' package (GPL-3.0), which is not installed: "
            "pip install -r requirements-extras.txt") from exc
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, (int, np.integer)) or horizon_days < 1:
        raise FairMedInputError(f"horizon_days must be a positive whole number of days, got {horizon_days!r}")

    raw = SurvLoader().load_dataset("support2")["df"]
    raw = raw[raw["fac_dzgroup"].astype(str) == _SUPPORT2_SEPSIS_GROUP]
    notes = []
    censored_early = (raw["event"] == 0) & (raw["time"] < horizon_days)
    if censored_early.any():
        notes.append(f"{int(censored_early.sum())} patients censored alive before day {horizon_days} dropped: "
                     "their outcome at the horizon is unknown")
        raw = raw[~censored_early]
    label = f"death_{horizon_days}d"
    race = raw["fac_race"].astype(str).map({"white": "white", "black": "black"}).fillna("other")
    frame = pd.DataFrame({
        label: ((raw["event"] == 1) & (raw["time"] <= horizon_days)).astype(int).to_numpy(),
        "race": race.to_numpy(),
        "sex": raw["fac_sex"].astype(str).to_numpy(),
        "age_group": pd.cut(raw["num_age"], bins=list(_SUPPORT2_AGE_EDGES), right=False,
                            labels=_bin_labels(_SUPPORT2_AGE_EDGES)).astype(str).to_numpy(),
    })
    for name in SUPPORT2_SEPSIS_NUMERIC:
        source = {"diabetes": "fac_diabetes", "dementia": "fac_dementia"}.get(name, f"num_{name}")
        frame[name] = pd.to_numeric(raw[source].astype(object), errors="raise").astype("float64").to_numpy()
    for name in SUPPORT2_SEPSIS_CATEGORICAL:
        frame[name] = raw[f"fac_{name}"].astype(str).to_numpy()
    data = read_tabular(frame, label=label, attributes=["race", "sex", "age_group"],
                        numeric=SUPPORT2_SEPSIS_NUMERIC, categorical=SUPPORT2_SEPSIS_CATEGORICAL)
    return replace(data, source=f"SUPPORT2 (survset), {_SUPPORT2_SEPSIS_GROUP}", notes=(*notes, *data.notes))
