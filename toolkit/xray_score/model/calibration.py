"""Probability calibration stored as JSON numbers, and operating-threshold policies."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from .decision import apply_calibration, decide  # noqa: F401 - apply_calibration lives there
from .decision import logit as _logit


def fit_calibration(raw: np.ndarray, y: np.ndarray, method: str = "platt",
                    C: float | None = None) -> dict:
    """Fit a calibration map from raw model probabilities to calibrated ones.

    ``platt``: logistic regression on the logit of the raw score (two numbers, a and b);
    ``C`` (default 1e6, i.e. none) is its L2 regularisation: smaller C keeps the slope from
    growing steep on nearly separable validation scores, which overconfides under shift.
    ``temperature``: one number, ``p = sigmoid(logit(raw) / T)`` (no shift of the prior).
    ``isotonic``: a monotone step function (its knots). ``none``: identity.
    """
    raw, y = np.asarray(raw, dtype=np.float64), np.asarray(y)
    if method == "none":
        return {"method": "none"}
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes in the validation set")
    z = _logit(raw)
    if method == "platt":
        c = 1e6 if C is None else float(C)
        lr = LogisticRegression(C=c, max_iter=1000).fit(z[:, None], y)
        return {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0]),
                "C": c}
    if method == "temperature":
        def loss(log_t: float) -> float:
            q = np.clip(expit(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
            return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

        t = float(np.exp(minimize_scalar(loss, bounds=(-5, 5), method="bounded").x))
        return {"method": "temperature", "a": 1.0 / t, "b": 0.0, "T": t}
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return {"method": "isotonic", "x": [float(v) for v in iso.X_thresholds_],
                "y": [float(v) for v in iso.y_thresholds_]}
    raise ValueError(f"unknown calibration method {method!r} (platt, temperature, isotonic, "
                     "none)")


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
