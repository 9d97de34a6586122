"""Probability calibration stored as JSON numbers, and operating-threshold policies."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_curve

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit_calibration(raw: np.ndarray, y: np.ndarray, method: str = "platt") -> dict:
    """Fit a calibration map from raw model probabilities to calibrated ones.

    ``platt``: logistic regression on the logit of the raw score (two numbers, a and b).
    ``isotonic``: a monotone step function (its knots). ``none``: identity.
    """
    raw, y = np.asarray(raw, dtype=np.float64), np.asarray(y)
    if method == "none":
        return {"method": "none"}
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes in the validation set")
    if method == "platt":
        lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(raw)[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return {"method": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_]}
    raise ValueError(f"unknown calibration method {method!r} (platt, isotonic, none)")


def apply_calibration(cal: dict, raw: np.ndarray) -> np.ndarray:
    """Calibrated probabilities for raw scores, from a :func:`fit_calibration` dict."""
    raw = np.asarray(raw, dtype=np.float64)
    method = cal.get("method", "none")
    if method == "none":
        return raw
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(cal["a"] * _logit(raw) + cal["b"])))
    if method == "isotonic":
        return np.interp(raw, cal["x"], cal["y"])
    raise ValueError(f"unknown calibration method {method!r}")


def choose_threshold(p: np.ndarray, y: np.ndarray, policy: str = "sensitivity",
                     target: float = 0.95, value: float = 0.5) -> dict:
    """Pick an operating threshold on validation scores by a named policy.

    ``sensitivity``: the highest threshold whose sensitivity is at least ``target``
    (so specificity is as high as that allows). ``youden``: maximises sensitivity +
    specificity - 1. ``fixed``: ``value`` as given. Returns the threshold and what it achieves.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y)
    if policy == "fixed":
        thr = float(value)
    else:
        if len(np.unique(y)) < 2:
            raise ValueError("choosing a threshold needs both classes in the validation set")
        fpr, tpr, thresholds = roc_curve(y, p)
        finite = np.isfinite(thresholds)
        fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
        if policy == "sensitivity":
            ok = np.flatnonzero(tpr >= target)
            thr = float(thresholds[ok[0]])  # thresholds decrease: first hit is the highest
        elif policy == "youden":
            thr = float(thresholds[np.argmax(tpr - fpr)])
        else:
            raise ValueError(f"unknown threshold policy {policy!r} (sensitivity, youden, fixed)")
    pred = p >= thr
    pos, neg = y == 1, y == 0
    return {
        "value": thr,
        "policy": policy,
        "target": target if policy == "sensitivity" else None,
        "validation_sensitivity": float(pred[pos].mean()) if pos.any() else None,
        "validation_specificity": float((~pred[neg]).mean()) if neg.any() else None,
    }
