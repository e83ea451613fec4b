"""Plain Python values from numpy and torch ones: for messages, records and JSON files."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["json_safe", "python_scalar"]


def python_scalar(value: object) -> object:
    """A numpy scalar as the Python value it holds (so labels read naturally in records and messages); anything
    else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def json_safe(value: object) -> object:
    """``value`` with what JSON cannot hold replaced: NaN and infinities -> None, numpy scalars -> Python,
    one-element tensors -> their value (larger ones -> None), tuples -> lists, mapping keys -> str; recursive."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if type(value).__module__.startswith("torch") and hasattr(value, "numel"):  # torch without importing it
        return json_safe(value.item()) if value.numel() == 1 else None
    return value
