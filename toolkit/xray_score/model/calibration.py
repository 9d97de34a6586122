"""Probability calibration stored as JSON numbers, and operating-threshold policies."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from .decision import decide
from .decision import logit as _logit


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
        return expit(cal["a"] * _logit(raw) + cal["b"])
    if method == "isotonic":
        return np.interp(raw, cal["x"], cal["y"])
    raise ValueError(f"unknown calibration method {method!r}")


def choose_threshold(p: np.ndarray, y: np.ndarray, policy: str = "sensitivity",
                     target: float = 0.95, value: float = 0.5) -> dict:
    """Pick an operating threshold on validation scores by a named policy.

    ``sensitivity``: the best specificity among thresholds whose sensitivity is at least
    ``target``. ``youden``: the best sensitivity + specificity - 1. ``fixed``: ``value``.
    Every threshold in a range gives the same validation decisions, so the policy finds the
    whole range that reaches its optimum and takes its middle on the logit scale, not its
    edge: a threshold sitting on the last normal (or last pneumonia) validation score would
    fail on the first slightly different image. Returns the threshold and what it achieves.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y)
    if policy == "fixed":
        thr = float(value)
    elif policy in ("sensitivity", "youden"):
        if len(np.unique(y)) < 2:
            raise ValueError("choosing a threshold needs both classes in the validation set")
        thr = _middle_of_best_range(p, y, policy, target)
    else:
        raise ValueError(f"unknown threshold policy {policy!r} (sensitivity, youden, fixed)")
    pred = decide(p, thr)
    pos, neg = y == 1, y == 0
    return {
        "value": thr,
        "policy": policy,
        "target": target if policy == "sensitivity" else None,
        "validation_sensitivity": float(pred[pos].mean()) if pos.any() else None,
        "validation_specificity": float((~pred[neg]).mean()) if neg.any() else None,
    }


def _middle_of_best_range(p: np.ndarray, y: np.ndarray, policy: str, target: float) -> float:
    """Threshold in the middle of the run of cut points that is best under ``policy``."""
    cuts = np.unique(p)  # predicting p >= cuts[j] is the same for any t in (cuts[j-1], cuts[j]]
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    sens = 1 - np.searchsorted(pos, cuts, side="left") / len(pos)
    spec = np.searchsorted(neg, cuts, side="left") / len(neg)
    if policy == "sensitivity":
        feasible = np.flatnonzero(sens >= target - 1e-12)  # a prefix: sens falls as cuts rise
        best = spec[feasible].max()
        run = feasible[spec[feasible] >= best - 1e-12]
    else:
        score = sens + spec - 1
        first = int(np.argmax(score))
        last = first
        while last + 1 < len(cuts) and score[last + 1] >= score[first] - 1e-12:
            last += 1
        run = np.arange(first, last + 1)
    lo_j, hi_j = int(run.min()), int(run.max())
    lower = cuts[lo_j - 1] if lo_j > 0 else cuts[lo_j]
    upper = cuts[hi_j]
    mid = float(1 / (1 + np.exp(-(_logit(np.array([lower]))[0] + _logit(np.array([upper]))[0])
                                / 2)))
    return mid if lower < mid <= upper else float(upper)
