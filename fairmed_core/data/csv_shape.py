"""Is a CSV file rectangular? One check that every CSV reader calls before pandas fills or shifts values."""

from __future__ import annotations

import csv
from pathlib import Path

from fairmed_core.errors import FairMedInputError

__all__ = ["ROW_HINT", "check_csv_shape"]

ROW_HINT = "row numbers count the header line as row 1"
_ROW_HINT = ROW_HINT


def check_csv_shape(path: Path, *, encoding: str, separator: str) -> None:
    """Every record has as many fields as the header, and no two header fields share a name.

    pandas fills a short row with missing values, takes an extra leading field for an index (shifting every
    value of the row by one column) and renames a repeated header to "name.1"; each is refused here, naming
    the row (header = row 1, blank lines not counted, as pandas counts them).
    """
    source = str(path)
    header: list[str] | None = None
    row = 0
    try:
        with path.open(encoding=encoding, newline="") as handle:
            for fields in csv.reader(handle, delimiter=separator):
                if not fields:
                    continue  # a blank line; pandas skips it too
                row += 1
                if header is None:
                    header = fields
                    seen: dict[str, int] = {}
                    for index, name in enumerate(fields, start=1):
                        if name.strip() and name in seen:
                            raise FairMedInputError(
                                f"the header names column {name[:80]!r} twice (fields {seen[name]} and {index})",
                                source=source, row=1, hint="rename one of them so that it is clear which to audit",
                            )
                        seen[name] = index
                    continue
                if len(fields) != len(header):
                    fewer = len(fields) < len(header)
                    raise FairMedInputError(
                        f"the row has {len(fields)} fields, the header {len(header)}: "
                        f"{'a field is missing' if fewer else 'there is an extra field'}",
                        source=source, row=row,
                        hint=f"every row needs exactly one value per column (quote values that contain "
                             f"{'a tab' if separator == chr(9) else 'a comma'}); {_ROW_HINT}",
                    )
    except csv.Error as exc:
        raise FairMedInputError(f"could not parse the CSV: {exc}", source=source, row=row + 1,
                                hint=f"check the quoting of that row; {_ROW_HINT}") from None
    except UnicodeDecodeError:
        raise FairMedInputError("the file is not UTF-8 text", source=source, row=row + 1,
                                hint="save the table as UTF-8 CSV") from None
