"""The decision: a calibrated probability becomes a label at the bundle's operating threshold.

Every command decides here (scoring, evaluation, reports, threshold choice), so "flagged"
means one thing everywhere: ``p >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import CLASS_NAMES

_EPS = 1e-6


def decide(p: Any, threshold: float) -> np.ndarray:
    """Boolean array: which probabilities are flagged as PNEUMONIA."""
    return np.asarray(p, dtype=np.float64) >= float(threshold)


def label_for(p: float, threshold: float) -> str:
    """"PNEUMONIA" or "NORMAL" for one probability."""
    return CLASS_NAMES[int(bool(decide(p, threshold)))]


def logit(p: Any) -> np.ndarray:
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def margin(p: Any, threshold: float) -> np.ndarray:
    """Signed distance from the threshold on the logit scale (how confident a decision is)."""
    return logit(p) - logit(threshold)


def expit(z: Any) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-z)), in NumPy (scoring workers import no SciPy)."""
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def apply_calibration(cal: dict[str, Any], raw: Any) -> np.ndarray:
    """Calibrated probabilities for raw scores, from a ``calibration.fit_calibration`` dict."""
    raw = np.asarray(raw, dtype=np.float64)
    method = cal.get("method", "none")
    if method == "none":
        return raw
    if method in ("platt", "temperature"):
        return expit(cal["a"] * logit(raw) + cal["b"])
    if method == "isotonic":
        return np.interp(raw, cal["x"], cal["y"])
    raise ValueError(f"unknown calibration method {method!r}")


@dataclass(frozen=True)
class OperatingPoint:
    """A bundle's calibration map and threshold: raw model output -> probability -> label."""

    calibration: dict[str, Any]
    threshold: float

    def probability(self, raw: Any) -> np.ndarray:
        """Calibrated probabilities of raw model outputs (the one place calibration is applied)."""
        return apply_calibration(self.calibration, raw)

    def decide(self, p: Any) -> np.ndarray:
        return decide(p, self.threshold)

    def label(self, p: float) -> str:
        return label_for(p, self.threshold)
