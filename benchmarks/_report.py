"""What the benchmark scripts share: replacing one section of a results document, leaving the others intact."""

from __future__ import annotations

from fairmed_core.report.sections import replace_section

__all__ = ["replace_section"]
