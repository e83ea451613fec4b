"""Markdown documents made of ``## `` sections that different writers own: replace one, keep the others."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["replace_section"]


def replace_section(path: Path, heading: str, text: str, *, preamble: str = "# Results\n") -> None:
    """Put ``text`` (which starts with ``heading``, a ``## `` line) in place of that section of ``path``, or
    append it; a missing file starts with ``preamble``."""
    path = Path(path)
    existing = path.read_text(encoding="utf-8") if path.exists() else preamble
    # The heading must be a whole line: "## A" must not match "## A: a variant".
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", existing, flags=re.MULTILINE)
    if match:
        start = match.start()
        after = existing.find("\n## ", start + len(heading))
        existing = existing[:start] + text.rstrip("\n") + "\n" + ("" if after < 0 else existing[after:])
    else:
        existing = existing.rstrip("\n") + "\n\n" + text
    path.write_text(existing, encoding="utf-8")
