"""A new site: refit a bundle's calibration and threshold on a small labeled sample of its own.

A model trained at one hospital keeps its ranking at another but not what its scores mean:
other machines and framing shift the logits, another prevalence moves the prior. Retraining is
not what a site can do; scoring 50-100 labeled films of its own is. From those films this
module fits (on the model's raw outputs, as training does):

- **calibration** (Platt, temperature or isotonic), with the prior set to the parent's
  validation prevalence or to ``prevalence`` when the site knows it: a sample of 30 + 30 films
  says nothing about how common pneumonia is there, and fitting on it as is would build a 50 %
  prior into every probability;
- **a conservative threshold** for the target sensitivity: the ``k``-th lowest positive score,
  with ``k`` the largest for which, whatever the score distribution, sensitivity on new films
  of the site stays at or above the target with probability >= ``confidence`` (``k`` positives
  below the true ``1 - target`` quantile: a binomial tail). Fitting to exactly 95 % of 30
  positives would miss the target on new films about half the time.

Samples with fewer than ``MIN_PER_CLASS`` films of either class are refused.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import expit

from ..errors import UsageError
from ..evaluation.bootstrap import bootstrap_ci, clopper_pearson, with_exact_intervals
from ..evaluation.metrics import binary_metrics, expected_calibration_error
from .calibration import apply_calibration, fit_calibration
from .decision import logit

log = logging.getLogger(__name__)

MIN_PER_CLASS = 20
RECOMMENDED_PER_CLASS = 30


def check_sample(n_pos: int, n_neg: int, target: float) -> None:
    """Refuse a sample too small to set a threshold, saying what it could show."""
    if n_pos >= MIN_PER_CLASS and n_neg >= MIN_PER_CLASS:
        return
    k = round(target * n_pos)
    lo, hi = clopper_pearson(k, n_pos) if n_pos else (0.0, 1.0)
    raise UsageError(
        f"the sample has {n_pos} PNEUMONIA and {n_neg} NORMAL film(s); calibrate needs at "
        f"least {MIN_PER_CLASS} of each ({RECOMMENDED_PER_CLASS} + {RECOMMENDED_PER_CLASS} "
        f"recommended). With {n_pos} positive(s), a measured sensitivity of "
        f"{target:.2f} would only be known to lie within {lo:.2f}-{hi:.2f} (95% exact "
        "interval): label more films")


def with_prior(calibration: dict[str, Any], sample_prevalence: float,
               prevalence: float) -> dict[str, Any]:
    """Move a calibration fitted at the sample's class balance to the site's prevalence
    (Bayes: the odds scale by the ratio of prior odds)."""
    shift = float(logit(prevalence) - logit(sample_prevalence))
    out = dict(calibration, prior=float(prevalence), sample_prevalence=float(sample_prevalence))
    if calibration["method"] in ("platt", "temperature"):
        out["b"] = float(calibration["b"]) + shift
    elif calibration["method"] == "isotonic":
        y = np.asarray(calibration["y"], dtype=np.float64)
        out["y"] = [float(v) for v in expit(logit(y) + shift)]
    return out


def conservative_threshold(p: np.ndarray, y: np.ndarray, target: float,
                           confidence: float) -> dict[str, Any]:
    """The threshold at the k-th lowest positive score (see the module docstring)."""
    pos = np.sort(p[y == 1])
    n = len(pos)
    tail = stats.binom.sf(np.arange(n), n, 1 - target)  # P(at least k below the quantile)
    ok = np.flatnonzero(tail >= confidence)
    k = int(ok.max()) + 1 if len(ok) else 1
    achieved = float(tail[k - 1])
    at = pos[k - 1]
    below = p[p < at]
    z_at = logit(at)
    z_low = logit(below.max()) if len(below) else z_at - 1.0
    value = float(expit((z_at + z_low) / 2))  # between x_(k) and the next lower score
    return {"value": value, "policy": "sensitivity_conservative", "target": float(target),
            "confidence": float(confidence), "achieved_confidence": achieved, "k": k,
            "n_positives": n, "chosen_on": "site sample"}


def recalibrate(raw: np.ndarray, y: np.ndarray, groups: Any, parent_prevalence: float,
                target: float = 0.95, method: str = "platt",
                prevalence: float | None = None, confidence: float = 0.8,
                n_boot: int = 1000) -> dict[str, Any]:
    """New calibration and threshold from a site sample's raw model outputs and labels.

    Returns ``calibration``, ``threshold`` (with the confidence it gives), ``metrics`` at the new
    threshold with patient-bootstrap 95% intervals (``ci``), and the sample's ECE.
    """
    raw, y = np.asarray(raw, dtype=np.float64), np.asarray(y, dtype=int)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    check_sample(n_pos, n_neg, target)
    if not 0 < target < 1 or not 0.5 <= confidence < 1:
        raise UsageError("target sensitivity in (0, 1) and confidence in [0.5, 1) please")
    prior = parent_prevalence if prevalence is None else float(prevalence)
    if not 0 < prior < 1:
        raise UsageError(f"prevalence must be in (0, 1), not {prior}")
    fitted = fit_calibration(raw, y, method, **({"C": 1.0} if method == "platt" else {}))
    calibration = with_prior(fitted, n_pos / len(y), prior)
    p = apply_calibration(calibration, raw)
    threshold = conservative_threshold(p, y, target, confidence)
    metrics = binary_metrics(y, p, threshold["value"])
    ci = with_exact_intervals(bootstrap_ci(y, p, threshold["value"], groups, n_boot), metrics)
    threshold.update(sample_sensitivity=metrics["sensitivity"],
                     sample_specificity=metrics["specificity"],
                     sensitivity_ci=list(ci["sensitivity"]), specificity_ci=list(ci["specificity"]))
    return {"calibration": calibration, "threshold": threshold, "metrics": metrics, "ci": ci,
            "p": p, "ece": expected_calibration_error(y, p)}
