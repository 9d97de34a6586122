"""Metrics of scores against labels at a threshold, and threshold tables.

Conventions: ``y`` is 0 (NORMAL) / 1 (PNEUMONIA) (label names are accepted too), ``p`` is the
calibrated probability of pneumonia, and an image is called positive when ``p >= threshold``.
Metrics that are undefined for the input (one class only, empty input) are NaN; nothing here
raises on degenerate data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn import metrics as skm

from ..labels import CLASS_NAMES, LABEL_TO_INT, to_binary
from ..model.decision import decide

log = logging.getLogger(__name__)

__all__ = ["CLASS_NAMES", "LABEL_TO_INT", "to_binary"]
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1")
RANKING_METRICS = ("roc_auc", "pr_auc", "brier", "ece")
CI_METRICS = THRESHOLD_METRICS + RANKING_METRICS
ECE_BINS = 10
NAN = float("nan")


# --------------------------------------------------------------------------- inputs


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = to_binary(y), np.asarray(p, dtype=float)
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y and p differ in length: {y_arr.shape} vs {p_arr.shape}")
    return y_arr, p_arr


def has_both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


# --------------------------------------------------------------------------- metrics


def confusion(y: Any, p: Any, threshold: float) -> np.ndarray:
    """2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` (rows: truth, columns: prediction)."""
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return np.zeros((2, 2), dtype=int)
    return skm.confusion_matrix(y_arr, decide(p_arr, threshold).astype(int), labels=[0, 1])


def expected_calibration_error(y: Any, p: Any, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (scikit-learn has no ECE).

    ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``; empty bins contribute nothing and
    ``p == 1`` falls in the last bin.
    """
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return NAN
    bins = np.clip((p_arr * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=y_arr, minlength=n_bins)
        - np.bincount(bins, weights=p_arr, minlength=n_bins)
    )
    return float(gap.sum() / counts.sum())


def _ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if y.size == 0:
        return dict.fromkeys(RANKING_METRICS, NAN)
    both = has_both_classes(y)
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else NAN,
        "pr_auc": float(skm.average_precision_score(y, p)) if both else NAN,
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
        "ece": expected_calibration_error(y, p),
    }


def _threshold_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if y.size == 0:
        out: dict[str, float] = dict.fromkeys(THRESHOLD_METRICS, NAN)
        return out | dict.fromkeys(("tn", "fp", "fn", "tp"), 0)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1])
    prec, rec, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=np.nan
    )
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(rec[1]),
        "specificity": float(rec[0]),
        "precision": float(prec[1]),
        "npv": float(prec[0]),
        "f1": float(f1[1]),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """All headline metrics at one threshold (precision = PPV; NaN where undefined)."""
    y_arr, p_arr = _arrays(y, p)
    with sklearn.config_context(assume_finite=True):
        out = _threshold_metrics(y_arr, decide(p_arr, threshold).astype(int))
        out |= _ranking_metrics(y_arr, p_arr)
    n_pos = int(y_arr.sum())
    return out | {
        "threshold": float(threshold),
        "n": int(y_arr.size),
        "n_pos": n_pos,
        "n_neg": int(y_arr.size - n_pos),
    }


def majority_class_reference(y: Any) -> dict[str, Any]:
    """Metrics of the trivial classifier that always predicts the more frequent class."""
    y_arr = to_binary(y)
    label = int(y_arr.size > 0 and y_arr.mean() > 0.5)
    out = binary_metrics(y_arr, np.full(y_arr.size, float(label)), threshold=0.5)
    return out | {"majority_label": CLASS_NAMES[label]}


def threshold_table(y: Any, p: Any, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Sensitivity / specificity / PPV / NPV and workload at each threshold (default 0.05..0.95)."""
    y_arr, p_arr = _arrays(y, p)
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.951, 0.05), 2)
    rows = []
    for t in sorted({float(t) for t in thresholds}):
        m = binary_metrics(y_arr, p_arr, t)
        flagged = m["tp"] + m["fp"]
        rows.append(
            {
                "threshold": t,
                "sensitivity": m["sensitivity"],
                "specificity": m["specificity"],
                "ppv": m["precision"],
                "npv": m["npv"],
                "flagged": flagged,
                "flagged_fraction": flagged / m["n"] if m["n"] else NAN,
                "tp": m["tp"],
                "fp": m["fp"],
                "tn": m["tn"],
                "fn": m["fn"],
            }
        )
    return pd.DataFrame(rows)
