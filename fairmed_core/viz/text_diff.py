"""Word-level difference of two reasonings, as HTML: what the model said differently about the counterfactual.

One job: mark the words only the first text has (``<del>``) and the words only the second has (``<ins>``), with
everything HTML-escaped, so a page can show two reasonings side by side with their differences highlighted.
"""

from __future__ import annotations

import difflib
import html

__all__ = ["word_diff_html"]


def word_diff_html(first: str, second: str) -> tuple[str, str]:
    """(first, second) as HTML, each marking its own words the other lacks: deletions in the first, insertions
    in the second. Identical texts come back escaped and unmarked."""
    a, b = (first or "").split(), (second or "").split()
    left, right = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = html.escape(" ".join(a[i1:i2])), html.escape(" ".join(b[j1:j2]))
        if tag == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f"<del>{old}</del>")
        if new:
            right.append(f"<ins>{new}</ins>")
    return " ".join(left), " ".join(right)
