"""Readers that turn data on disk into a ``Dataset`` in the data contract: the JSONL manifest and a CSV manifest.

Nothing is downloaded. Every input problem a user can fix raises ``FairMedInputError`` naming the file, the
line (``row`` is the 1-based line number in the file, the CSV header being line 1) and the field or column.

Splits: a ``split`` field/column is used when present (``validation``/``valid``/``dev`` -> ``val``); otherwise a
file named like a split (``train.jsonl``, ``val.csv``, ``test.jsonl``) gives all its cases that split, and any
other file is evaluation data (``test``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd

from fairmed_core.errors import FairMedInputError

from .schema import (
    CORE_COLUMNS,
    SPLITS,
    UNKNOWN,
    Dataset,
    age_group,
    attribute_value,
    label_values_of,
    canonical_label,
    parse_demo,
    snake_case,
)

__all__ = ["read_manifest", "read_csv_manifest", "DEFAULT_QUESTION"]

REQUIRED_FIELDS = ("problem", "images", "answer")
DEFAULT_QUESTION = "<image> Is the finding present in this image? Answer yes or no."
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test", "eval": "test"}


def _split_from_file_name(path: Path) -> str:
    return _SPLIT_ALIASES.get(path.stem.lower(), "test")


def _split_value(value: object, *, source: str, column: str, row: int) -> str:
    split = _SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise FairMedInputError(
            f"unknown split {value!r}", source=source, column=column, row=row, hint=f"use one of {', '.join(SPLITS)}"
        )
    return split


def _dataset_name(path: Path) -> str:
    return path.parent.name if path.stem.lower() == "manifest" and path.parent.name else path.stem


def _shown_path(text: str) -> str:
    return repr(text if len(text) <= 160 else text[:157] + "...")


def _resolve_image(relative: str, root: Path, *, source: str, column: str, row: int, folder: str) -> str:
    """The absolute, resolved path of one image named in a manifest, which must stay inside ``root``.

    Symlinks are followed before the check, so neither ``../`` nor an absolute path nor a link can make a
    manifest read a file outside its folder; the check comes before the existence test, so the error does not
    tell whether a file outside exists.
    """
    if "\x00" in relative:
        raise FairMedInputError("image path contains a NUL character", source=source, column=column, row=row)
    image = Path(relative)
    try:
        resolved = (image if image.is_absolute() else root / image).resolve()
        inside = resolved.is_relative_to(root)
        exists = inside and resolved.is_file()
    except (OSError, RuntimeError, ValueError) as error:  # a name over 255 bytes, a symlink loop
        reason = getattr(error, "strerror", None) or "cannot be resolved"
        raise FairMedInputError(
            f"image path {_shown_path(relative)} cannot be opened ({reason})", source=source, column=column, row=row
        ) from None
    if not inside:
        raise FairMedInputError(
            f"image path {_shown_path(relative)} points outside {folder} {str(root)!r}",
            source=source,
            column=column,
            row=row,
            hint="image paths (after following symlinks) must stay inside that folder; copy the images into it",
        )
    if not exists:
        raise FairMedInputError(
            f"image file not found: {str(resolved)!r}",
            source=source,
            column=column,
            row=row,
            hint=f"relative image paths are resolved against {str(root)!r}",
        )
    return str(resolved)


def _extra_column_name(name: str, taken: set[str]) -> str:
    # An extra field never overwrites a contract or attribute column; it is kept under a prefixed name.
    return name if name not in taken else f"extra_{name}"


def _assemble(
    *,
    name: str,
    root: Path,
    rows: list[dict],
    attribute_order: list[str],
    extra_order: list[str],
    source: str,
) -> Dataset:
    seen: dict[str, int] = {}
    for row in rows:
        if row["case_id"] in seen:
            raise FairMedInputError(
                f"duplicate case id {row['case_id']!r} (first seen on line {seen[row['case_id']]})",
                source=source,
                column="id",
                row=row["_line"],
            )
        seen[row["case_id"]] = row["_line"]
    taken = set(CORE_COLUMNS) | set(attribute_order) | {"image_paths"}
    extra_names = {field: _extra_column_name(field, taken) for field in extra_order}
    data: dict[str, list] = {column: [row[column] for row in rows] for column in CORE_COLUMNS}
    for attribute in attribute_order:
        data[attribute] = [row["attributes"].get(attribute, UNKNOWN) for row in rows]
    data["image_paths"] = [row["image_paths"] for row in rows]
    for field, column in extra_names.items():
        data[column] = [row["extra"].get(field) for row in rows]
    cases = pd.DataFrame(data)
    label_values, positive = label_values_of(cases["answer"])
    return Dataset(
        name=name,
        root=root,
        cases=cases,
        attributes=tuple(attribute_order),
        label_values=label_values,
        positive_label=positive,
    )


def _json_lines(path: Path, source: str) -> Iterator[tuple[int, object]]:
    """``(line number, parsed value)`` of every non-blank line; encoding and JSON errors name their line."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise FairMedInputError(
                    "the line is not UTF-8 text", source=source, row=line_number,
                    hint="save the manifest as UTF-8 (not UTF-16 or Latin-1)",
                ) from None
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise FairMedInputError(
                    f"not valid JSON ({error.msg} at character {error.colno})",
                    source=source,
                    row=line_number,
                    hint="each line must be one JSON object",
                ) from None
            except RecursionError:
                raise FairMedInputError("the JSON is nested too deeply to read", source=source,
                                        row=line_number) from None
            except ValueError:  # e.g. an integer with more digits than Python converts
                raise FairMedInputError("not valid JSON (a number too long to read)", source=source,
                                        row=line_number) from None


def read_manifest(path: str | Path) -> Dataset:
    """Read a JSONL manifest in the data contract (DESIGN section 2) into a ``Dataset``.

    One JSON object per line with ``problem``, ``images`` (a list, or one path), ``answer``, and optionally
    ``demo``, ``dataset``, ``id``, ``split`` and any extra fields (kept as columns; nested values as they are).
    Image paths are relative to the manifest's folder unless absolute, must exist, and must stay inside that
    folder once resolved (symlinks followed). Without ``id`` a case is
    ``line<N>``; without ``dataset`` its source is the dataset name (the manifest's folder for ``manifest.jsonl``,
    else the file stem). Blank lines are skipped.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise FairMedInputError("manifest file not found", source=source, hint="give the path of a .jsonl manifest")
    root = path.parent.resolve()
    name = _dataset_name(path)
    default_split = _split_from_file_name(path)
    rows: list[dict] = []
    attribute_order: list[str] = ["sex", "age_group"]
    extra_order: list[str] = []
    for line_number, record in _json_lines(path, source):
        if not isinstance(record, Mapping):
            raise FairMedInputError(
                f"expected a JSON object, got {type(record).__name__}", source=source, row=line_number
            )
        for field in REQUIRED_FIELDS:
            if field not in record or record[field] is None:
                raise FairMedInputError(
                    f"missing field {field!r}",
                    source=source,
                    column=field,
                    row=line_number,
                    hint=f"every line needs {', '.join(REQUIRED_FIELDS)}",
                )
        images = record["images"]
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise FairMedInputError(
                "'images' must be a non-empty list of image paths", source=source, column="images", row=line_number
            )
        image_paths = tuple(
            _resolve_image(image, root, source=source, column="images", row=line_number,
                           folder="the manifest's folder")
            for image in images
        )
        answer = canonical_label(record["answer"])
        if answer is None:
            raise FairMedInputError("empty answer", source=source, column="answer", row=line_number)
        demo = record.get("demo")
        demo = "" if demo is None else str(demo)
        attributes = parse_demo(demo)
        for attribute in attributes:
            if attribute not in attribute_order:
                attribute_order.append(attribute)
        split = (
            _split_value(record["split"], source=source, column="split", row=line_number)
            if record.get("split") not in (None, "")
            else default_split
        )
        case_id = str(record["id"]) if record.get("id") not in (None, "") else f"line{line_number}"
        extra = {k: v for k, v in record.items() if k not in (*REQUIRED_FIELDS, "demo", "dataset", "id", "split")}
        for field in extra:
            if field not in extra_order:
                extra_order.append(field)
        rows.append(
            {
                "_line": line_number,
                "case_id": case_id,
                "problem": str(record["problem"]),
                "image_path": image_paths[0],
                "answer": answer,
                "demo": demo,
                "dataset": str(record.get("dataset") or name),
                "split": split,
                "attributes": attributes,
                "image_paths": image_paths,
                "extra": extra,
            }
        )
    if not rows:
        raise FairMedInputError("manifest has no cases", source=source)
    return _assemble(
        name=name, root=root, rows=rows, attribute_order=attribute_order, extra_order=extra_order, source=source
    )


def read_csv_manifest(
    path: str | Path,
    *,
    image_root: str | Path,
    image_col: str,
    label_col: str,
    attribute_cols: Sequence[str],
    source_col: str | None = None,
    id_col: str | None = None,
    split_col: str | None = None,
    question: str | None = None,
    age_col: str | None = None,
) -> Dataset:
    """Read a CSV manifest whose columns the user names into a ``Dataset``.

    - ``image_col``: image path, relative to ``image_root`` unless absolute; the file must exist and stay inside
      ``image_root`` once resolved (symlinks followed).
    - ``label_col``: the answer; 1/0, true/false, yes/no, positive/negative become ``"yes"``/``"no"``.
    - ``attribute_cols``: demographic columns; each becomes an attribute named in snake_case (``"Skin Tone"`` ->
      ``skin_tone``, ``gender`` -> ``sex``). A sex column is mapped to M/F; a column named ``age`` is converted
      to ``age_group`` like ``age_col``. Empty values are ``"UNK"``. The ``sex`` and ``age_group`` columns always
      exist in ``cases``; ``attributes`` lists the ones the CSV provides.
    - ``age_col``: age in years, converted to ``age_group``.
    - ``source_col``: data source per row (default: the CSV's file stem). ``id_col``: case id (default
      ``row<N>``, N the line number). ``split_col``: train/val/test (default: see the module docstring).
    - ``question``: the prompt for every case (default ``DEFAULT_QUESTION``); ``<image>`` is prepended if absent.

    A ``demo`` string is built from the attribute values (``"sex: Female, age: 68, skin tone: dark"``) so the
    cases work with code that reads ``demo``. Other CSV columns are kept as extra columns.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise FairMedInputError("CSV manifest not found", source=source)
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FairMedInputError(f"image folder not found: {str(root)!r}", source=source, hint="check image_root")
    root = root.resolve()
    # A row with a missing field would read as an empty value, one with an extra field (on the first row) as
    # an index that shifts every value: both are refused naming the row, as in predictions tables.
    from fairmed_core.data.csv_shape import check_csv_shape

    check_csv_shape(path, encoding="utf-8-sig", separator=",")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise FairMedInputError(f"cannot parse CSV: {' '.join(str(error).split())[:200]}", source=source) from error
    table.columns = [str(c).strip() for c in table.columns]
    wanted = [("image_col", image_col), ("label_col", label_col)]
    wanted += [("attribute_cols", c) for c in attribute_cols]
    wanted += [(arg, c) for arg, c in (("source_col", source_col), ("id_col", id_col), ("split_col", split_col),
                                        ("age_col", age_col)) if c is not None]
    for argument, column in wanted:
        if column not in table.columns:
            raise FairMedInputError(
                f"no column {column!r} (given as {argument})",
                source=source,
                column=column,
                hint=f"the CSV has columns: {', '.join(table.columns)}",
            )
    if table.empty:
        raise FairMedInputError("CSV manifest has no rows", source=source)
    attribute_names: dict[str, str] = {}
    for column in attribute_cols:
        attribute = snake_case(column)
        attribute = "age_group" if attribute in ("age", "age_group") else attribute
        if attribute in attribute_names.values():
            raise FairMedInputError(
                f"two attribute columns map to the attribute {attribute!r}", source=source, column=column
            )
        attribute_names[column] = attribute
    if age_col is not None and age_col not in attribute_names:
        if "age_group" in attribute_names.values():
            raise FairMedInputError("age given twice (age_col and an age attribute column)", source=source,
                                    column=age_col)
        attribute_names[age_col] = "age_group"
    attribute_order = ["sex", "age_group"]
    attribute_order += [a for a in attribute_names.values() if a not in attribute_order]
    provided = [a for a in attribute_order if a in attribute_names.values()]
    column_of = {attribute: column for column, attribute in attribute_names.items()}
    problem = question if question is not None else DEFAULT_QUESTION
    if "<image>" not in problem:
        problem = f"<image> {problem}"
    default_split = _split_from_file_name(path)
    name = path.stem
    used = {image_col, label_col, source_col, id_col, split_col, *attribute_names}
    extra_columns = [c for c in table.columns if c not in used]
    rows: list[dict] = []
    for index, record in enumerate(table.to_dict(orient="records")):
        line_number = index + 2
        image = record[image_col].strip()
        if not image:
            raise FairMedInputError("empty image path", source=source, column=image_col, row=line_number)
        image_path = _resolve_image(image, root, source=source, column=image_col, row=line_number,
                                    folder="the image folder")
        answer = canonical_label(record[label_col])
        if answer is None:
            raise FairMedInputError("empty label", source=source, column=label_col, row=line_number)
        attributes = {a: UNKNOWN for a in attribute_order}
        demo_parts = []
        for attribute in attribute_order:
            column = column_of.get(attribute)
            if column is None:
                continue
            raw = record[column].strip()
            attributes[attribute] = age_group(raw) if attribute == "age_group" else attribute_value(attribute, raw)
            if attributes[attribute] != UNKNOWN:
                if attribute == "sex":
                    demo_parts.append(f"sex: {'Female' if attributes['sex'] == 'F' else 'Male'}")
                elif attribute == "age_group":
                    demo_parts.append(f"age: {raw}")
                else:
                    demo_parts.append(f"{attribute.replace('_', ' ')}: {raw}")
        split = (
            _split_value(record[split_col], source=source, column=split_col, row=line_number)
            if split_col is not None and record[split_col].strip()
            else default_split
        )
        case_id = record[id_col].strip() if id_col is not None and record[id_col].strip() else f"row{line_number}"
        rows.append(
            {
                "_line": line_number,
                "case_id": case_id,
                "problem": problem,
                "image_path": image_path,
                "answer": answer,
                "demo": ", ".join(demo_parts),
                "dataset": (record[source_col].strip() if source_col is not None else "") or name,
                "split": split,
                "attributes": attributes,
                "image_paths": (image_path,),
                "extra": {c: record[c] for c in extra_columns},
            }
        )
    dataset = _assemble(
        name=name, root=root, rows=rows, attribute_order=attribute_order, extra_order=extra_columns, source=source
    )
    return Dataset(
        name=dataset.name,
        root=dataset.root,
        cases=dataset.cases,
        attributes=tuple(provided),
        label_values=dataset.label_values,
        positive_label=dataset.positive_label,
    )

