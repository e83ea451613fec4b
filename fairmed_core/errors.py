"""User-facing input errors: what was wrong, where (file, column, row), and what to do."""

from __future__ import annotations


class FairMedInputError(ValueError):
    """Bad user input that the user can act on.

    The CLI turns it into a one-line message and exit code 2 (no traceback); the dashboard shows it in
    an error box and keeps working.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        column: str | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.column = column
        self.row = row
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = []
        if self.source is not None:
            where.append(f"file {self.source!s}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = self.message
        if where:
            text = f"{', '.join(where)}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text
