"""The case schema: demographic group keys parsed from ``demo`` strings, and the ``Dataset`` every reader returns.

A case is one image + a question + a ground-truth answer + demographic attributes + a data source (DESIGN
section 2). Group keys: sex -> ``"M"``/``"F"``; age -> ``"A1"`` (<=25), ``"A2"`` (26-50), ``"A3"`` (51-75),
``"A4"`` (>75); anything missing or unparseable -> ``UNKNOWN`` (``"UNK"``). Further attributes (skin tone,
race, site) keep their values and become further columns.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
from PIL import Image

from fairmed_core.errors import FairMedInputError

from .image_limits import (
    MAX_IMAGE_FILE_BYTES,
    check_decoded_size,
    limits_in_words,
    pil_mode_sample_layout,
)

UNKNOWN = "UNK"  # the group of a case whose attribute is missing
ALL = "ALL"  # the source (or group) of a result row that pools every source (or group)
AGE_GROUPS = ("A1", "A2", "A3", "A4")
# Upper bounds (inclusive) of A1, A2, A3; everything above the last bound is A4.
AGE_GROUP_UPPER_YEARS = (25.0, 50.0, 75.0)
SEX_GROUPS = ("M", "F")
# Columns every ``Dataset.cases`` frame has, in this order, before attribute and extra columns.
CORE_COLUMNS = ("case_id", "problem", "image_path", "answer", "demo", "dataset", "split")
SPLITS = ("train", "val", "test")
YES, NO = "yes", "no"

_SEX_VALUES = {"m": "M", "male": "M", "man": "M", "boy": "M", "f": "F", "female": "F", "woman": "F", "girl": "F"}
_MISSING_TEXT = {"", "unk", "unknown", "na", "n/a", "nan", "none", "null", "missing", "not reported", "?", "-"}
_KEY_ALIASES = {
    "gender": "sex", "patient_gender": "sex", "patient_sex": "sex", "age_years": "age", "patient_age": "age",
}
_AGE_UNITS_PER_YEAR = {"y": 1.0, "m": 12.0, "w": 52.1775, "d": 365.25}
_AGE_TEXT = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")
_AGE_RANGE = re.compile(r"^[\[(]?\s*(\d+(?:\.\d+)?)\s*(?:-|–|to|,)\s*(\d+(?:\.\d+)?)\s*[\])]?\s*([a-z]*)$")
_YES_TEXT = {"yes", "y", "true", "1", "1.0", "positive", "present"}
_NO_TEXT = {"no", "n", "false", "0", "0.0", "negative", "absent"}


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip().lower() in _MISSING_TEXT
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _years(number: float, unit: str) -> float | None:
    unit = unit.strip().lower()
    if unit in ("", "y", "yr", "yrs", "year", "years", "yo", "yoa"):
        return number
    key = unit[0]
    if unit in ("m", "mo", "mos", "month", "months", "w", "wk", "wks", "week", "weeks", "d", "day", "days"):
        return number / _AGE_UNITS_PER_YEAR[key]
    return None


def _age_years(age: object) -> float | None:
    """Age in years from a number or text (``"68"``, ``"68y"``, DICOM ``"068Y"``/``"006M"``); None if not one."""
    if _is_missing(age) or isinstance(age, bool):
        return None
    if isinstance(age, numbers.Real):
        value = float(age)
    elif isinstance(age, str):
        match = _AGE_TEXT.match(age.strip().lower())
        if match is None:
            return None
        value = _years(float(match.group(1)), match.group(2))
        if value is None:
            return None
    else:
        return None
    if not math.isfinite(value) or value < 0 or value > 130:
        return None
    return value


def _group_of_years(years: float) -> str:
    for group, upper in zip(AGE_GROUPS, AGE_GROUP_UPPER_YEARS):
        if years <= upper:
            return group
    return AGE_GROUPS[-1]


def age_group(age: object) -> str:
    """Age group key ``"A1"``..``"A4"`` for an age in years; ``UNKNOWN`` when missing or unparseable.

    Accepts numbers, numeric text with an optional unit (``"68"``, ``"68 years"``, DICOM ``"068Y"``, ``"006M"``),
    an existing group key (``"A3"``), and ranges (``"60-70"``) whose ends fall in the same group (a range that
    straddles a boundary, e.g. ``"40-60"``, is ``UNKNOWN`` rather than a guess). Boundaries: A1 <= 25 < A2 <= 50
    < A3 <= 75 < A4.
    """
    if isinstance(age, str):
        text = age.strip()
        if text.upper() in AGE_GROUPS:
            return text.upper()
        match = _AGE_RANGE.match(text.lower())
        if match is not None:
            low = _years(float(match.group(1)), match.group(3))
            high = _years(float(match.group(2)), match.group(3))
            if low is None or high is None or low > high:
                return UNKNOWN
            low_group, high_group = _group_of_years(low), _group_of_years(high)
            return low_group if low_group == high_group else UNKNOWN
    years = _age_years(age)
    return UNKNOWN if years is None else _group_of_years(years)


def sex_group(value: object) -> str:
    """Sex group key: ``"M"``/``"F"`` from common spellings (male, Female, m, woman, ...), else ``UNKNOWN``."""
    if _is_missing(value) or not isinstance(value, str):
        return UNKNOWN
    return _SEX_VALUES.get(value.strip().lower(), UNKNOWN)


def snake_case(key: str) -> str:
    """Attribute name from a demo key or column header: ``"Skin Tone"`` -> ``"skin_tone"``."""
    name = re.sub(r"[^0-9a-z]+", "_", str(key).strip().lower()).strip("_")
    return _KEY_ALIASES.get(name, name)


def attribute_value(attribute: str, value: object) -> str:
    """Group key of one attribute value: sex and age are mapped to their keys, other values kept (stripped)."""
    if attribute == "sex":
        return sex_group(value)
    if attribute in ("age", "age_group"):
        return age_group(value)
    if _is_missing(value):
        return UNKNOWN
    text = " ".join(str(value).split())
    return text if text else UNKNOWN


def demo_pairs(demo: str | None) -> list[tuple[str, str]]:
    """Raw ``(key, value)`` pairs of a demo string, keys as written. ``"race: Black, African American"``
    keeps the comma: a segment without a colon continues the previous value."""
    if _is_missing(demo) or not isinstance(demo, str):
        return []
    pairs: list[list[str]] = []
    for segment in demo.split(","):
        if ":" in segment:
            key, value = segment.split(":", 1)
            pairs.append([key.strip(), value.strip()])
        elif pairs:
            pairs[-1][1] = f"{pairs[-1][1]},{segment}".strip()
        # text before the first "key:" carries no key to file it under; it is ignored
    return [(key, value) for key, value in pairs if key]


def parse_demo(demo: str | None) -> dict[str, str]:
    """Group keys from a ``demo`` string such as ``"sex: Female, age: 68, skin tone: dark"``.

    Returns ``{"sex": "F", "age_group": "A3", "skin_tone": "dark"}``; ``sex`` and ``age_group`` are always
    present (``UNKNOWN`` when missing). Keys are normalised to snake_case (``"skin tone"`` -> ``skin_tone``,
    ``gender`` -> ``sex``); ``age`` becomes ``age_group``. The first occurrence of a repeated key wins.
    """
    groups = {"sex": UNKNOWN, "age_group": UNKNOWN}
    seen: set[str] = set()
    for key, value in demo_pairs(demo):
        name = snake_case(key)
        if name == "age":
            name = "age_group"
        if not name or name in seen:
            continue
        seen.add(name)
        groups[name] = attribute_value(name, value)
    return groups


def canonical_label(value: object) -> str | None:
    """A dataset's label value as the case schema stores it: ``"yes"``/``"no"`` for the usual binary spellings
    (yes/no, true/false, 1/0, positive/negative, booleans and numbers), other answers stripped but otherwise as
    written (multi-class data); None when missing. For a data file's label column; a model's written answer is
    compared through ``models.answers.normalise_answer`` instead (lower-cased, ``\\text{}`` unwrapped, no
    yes/no mapping: "1" is not "yes" in a model's answer)."""
    if isinstance(value, bool):
        return YES if value else NO
    if _is_missing(value):
        return None
    if isinstance(value, numbers.Integral):
        value = str(int(value))  # float() of a huge integer overflows; its digits are the answer as written
    elif isinstance(value, numbers.Real):
        number = float(value)
        value = repr(number) if not number.is_integer() else str(int(number))
    text = str(value).strip()
    lowered = text.lower()
    if lowered in _YES_TEXT:
        return YES
    if lowered in _NO_TEXT:
        return NO
    return text or None


def label_values_of(answers: Iterable[str]) -> tuple[tuple[str, ...], str | None]:
    """``(label_values, positive_label)``: ``(("no", "yes"), "yes")`` for binary yes/no data, else the
    sorted distinct answers and no positive label."""
    values = sorted(set(answers))
    if set(values) <= {YES, NO}:
        return (NO, YES), YES
    return tuple(values), None


_DICOM_MAGIC_OFFSET = 128
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def _image_file_head(path: Path) -> bytes:
    """The first bytes of an image file named by a manifest, after the checks every read makes: it exists, it
    can be read, and it is no larger than an image may be."""
    source = str(path)
    if not path.is_file():
        raise FairMedInputError("image file not found", source=source, hint="check the manifest's image paths")
    try:
        n_bytes = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError as error:
        raise FairMedInputError(f"cannot read image ({error.strerror or 'unreadable'})", source=source) from None
    if n_bytes > MAX_IMAGE_FILE_BYTES:
        raise FairMedInputError(
            f"the image file is {n_bytes / 2**20:,.0f} MB, more than the {MAX_IMAGE_FILE_BYTES / 2**20:,.0f} MB "
            "an image may take",
            source=source,
            hint="downscale the image, or export a single frame",
        )
    return head


def _is_dicom(path: Path, head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET:] == b"DICM" or path.suffix.lower() in _DICOM_SUFFIXES


@contextmanager
def _pil_errors(source: str) -> Iterator[None]:
    """PIL's failures on a user's file as ``FairMedInputError``; its bomb warning becomes an error too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except FairMedInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FairMedInputError(
            f"the image is too large: its dimensions exceed PIL's decompression-bomb limit; the limit is "
            f"{limits_in_words()}",
            source=source,
            hint="downscale the image before using it",
        ) from None
    except Exception as error:  # PIL raises many types for a corrupt file; its messages quote no file content
        raise FairMedInputError(f"cannot read image: {' '.join(str(error).split())[:200]}", source=source) from None


def _check_pil_size(image: Image.Image, source: str) -> None:
    samples, bits = pil_mode_sample_layout(image.mode)
    check_decoded_size(source, width=image.size[0], height=image.size[1], samples=samples, bits_allocated=bits)


def open_image(path: str | Path) -> Image.Image:
    """Load an image file into memory: PNG/JPEG/... through PIL, DICOM (told by content or suffix) through the
    upload reader's decoder, as 8-bit ``L``/``RGB`` of its middle frame with no tag kept.

    The decoded size is checked from the header before any pixel is decoded (``image_limits``), so a small file
    that would decode to gigabytes is refused with the limit in the message.
    """
    path = Path(path)
    source = str(path)
    if _is_dicom(path, _image_file_head(path)):
        from .uploads import decode_dicom  # uploads imports nothing from here; deferred to keep import cheap

        image, _ = decode_dicom(path.read_bytes(), source)
        return image
    with _pil_errors(source), Image.open(path) as image:
        _check_pil_size(image, source)
        image.load()
        return image


def check_image_file(path: str | Path) -> tuple[int, int]:
    """Check one image file from its header only, as ``open_image`` would before decoding: readable, a format
    FairMed reads, within the decoded-size limits. Returns ``(width, height)``; no pixel is decoded."""
    path = Path(path)
    source = str(path)
    if _is_dicom(path, _image_file_head(path)):
        from .uploads import check_dicom_header

        try:
            with path.open("rb") as handle:
                return check_dicom_header(handle, source)
        except OSError as error:
            raise FairMedInputError(f"cannot read image ({error.strerror or 'unreadable'})", source=source) from None
    with _pil_errors(source), Image.open(path) as image:
        _check_pil_size(image, source)
        return image.size


@dataclass(frozen=True, eq=False)
class Dataset:
    """A set of cases in the data contract, as every reader returns it.

    ``cases`` has the columns ``case_id, problem, image_path`` (absolute), ``answer, demo, dataset`` (the data
    source), ``split``, then one column per attribute (always ``sex`` and ``age_group``; group keys, ``"UNK"``
    when unknown), then ``image_paths`` (all images of the case, absolute) and any extra manifest fields.
    """

    name: str
    root: Path  # the directory relative image paths were resolved against
    cases: pd.DataFrame
    attributes: tuple[str, ...]  # attribute columns present, e.g. ("sex", "age_group", "skin_tone")
    label_values: tuple[str, ...]  # ("no", "yes") for binary data
    positive_label: str | None  # "yes" for binary data, None otherwise

    def __post_init__(self) -> None:
        missing = [c for c in (*CORE_COLUMNS, *self.attributes) if c not in self.cases.columns]
        if missing:
            raise ValueError(f"Dataset.cases lacks columns {missing}")

    def __len__(self) -> int:
        return len(self.cases)

    @property
    def sources(self) -> tuple[str, ...]:
        """The data sources (``dataset`` values), sorted."""
        return tuple(sorted(self.cases["dataset"].astype(str).unique()))

    @cached_property
    def _row_of_case(self) -> dict[str, int]:
        return {str(case_id): row for row, case_id in enumerate(self.cases["case_id"])}

    def image_path(self, case_id: str) -> Path:
        """Absolute path of the case's (first) image."""
        row = self._row_of_case.get(str(case_id))
        if row is None:
            raise FairMedInputError(f"no case with id {case_id!r} in dataset {self.name!r}", column="case_id")
        return Path(self.cases["image_path"].iat[row])

    def check_images(self) -> int:
        """Check every image of every case from its header only (``check_image_file``): the cheap way to find a
        missing, unreadable or oversize image before a long job; returns how many were checked."""
        checked = 0
        for paths in self.cases["image_paths"]:
            for path in paths:
                check_image_file(path)
                checked += 1
        return checked

    def load_image(self, case_id: str) -> Image.Image:
        """The case's (first) image as a PIL image, loaded into memory (mode as stored: ``L`` or ``RGB``)."""
        return open_image(self.image_path(case_id))
