"""What the benchmark scripts share: replacing one section of a results document, leaving the others intact, and
the line that names the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from fairmed_core.report.sections import replace_section

__all__ = ["machine_description", "replace_section"]


def machine_description(pinning: str = "benchmark pinned to one thread") -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and core count, with how the benchmark was pinned."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores ({pinning})"
