"""Plain values for records and JSON: numpy and torch scalars unwrapped, what JSON cannot hold made None."""

import json
import math

import numpy as np
import torch

from fairmed_core.plain import json_safe, python_scalar


def test_python_scalar_unwraps_numpy_scalars_only():
    assert python_scalar(np.int64(3)) == 3 and type(python_scalar(np.int64(3))) is int
    assert type(python_scalar(np.str_("F"))) is str
    assert python_scalar([1]) == [1]


def test_json_safe_makes_anything_json_can_write():
    value = {1: (np.float32(0.5), float("nan"), np.inf, np.int8(2), np.bool_(True)),
             "t": torch.tensor(1.5), "big": torch.ones(3), "nested": [{"x": -math.inf}], "s": "keep"}
    safe = json_safe(value)
    assert safe == {"1": [0.5, None, None, 2, True], "t": 1.5, "big": None, "nested": [{"x": None}], "s": "keep"}
    json.dumps(safe, allow_nan=False)
