"""The two classes, in one place: names, their 0/1 codes, and the mapping between them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
LABEL_TO_INT = {name: i for i, name in enumerate(CLASS_NAMES)}


def to_binary(labels: Iterable[Any]) -> np.ndarray:
    """Map labels ("NORMAL"/"PNEUMONIA", bools or 0/1) to an int array of 0/1."""
    arr = np.asarray(labels if hasattr(labels, "__array__") else list(labels))
    if arr.dtype.kind in "OUS":
        mapped = [LABEL_TO_INT.get(str(v).strip().upper(), -1) for v in arr]
        out = np.asarray(mapped, dtype=int)
        if (out < 0).any():
            raise ValueError(f"unknown labels: {sorted({str(v) for v in arr[out < 0]})}")
        return out
    return arr.astype(int)
