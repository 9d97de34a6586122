"""The report of ``xray-score calibrate``: a site sample before and after recalibration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.bootstrap import bootstrap_ci, with_exact_intervals
from ..evaluation.metrics import binary_metrics, expected_calibration_error
from . import figures as fg
from .render import render

ROWS = ("sensitivity", "specificity", "precision", "npv", "accuracy")


def _side(y: np.ndarray, p: np.ndarray, threshold: float, groups: Any) -> dict[str, Any]:
    metrics = binary_metrics(y, p, threshold)
    ci = with_exact_intervals(bootstrap_ci(y, p, threshold, groups, 1000), metrics)
    return {"threshold": threshold, "metrics": metrics, "ci": ci,
            "ece": expected_calibration_error(y, p)}


def write_calibration_report(out_html: str | os.PathLike[str], *, y: np.ndarray,
                             p_old: np.ndarray, p_new: np.ndarray, groups: Any,
                             parent: Any, derived: Any, run_meta: dict[str, Any]) -> Path:
    """Old and new operating points on the sample's ROC, both calibrations' reliability."""
    before = _side(y, p_old, parent.threshold, groups)
    after = _side(y, p_new, derived.threshold, groups)
    figures = [
        fg.roc_figure([{"label": "site sample", "y": y, "p": p_new, "points": [
            (derived.threshold, f"new threshold {derived.threshold:.3f}")]}],
            extra_points=[(1 - before["metrics"]["specificity"],
                           before["metrics"]["sensitivity"],
                           f"parent threshold {parent.threshold:.3f}")]),
        fg.calibration_figure(y, p_new, others=[("before (parent)", p_old)]),
    ]
    rows = [{"name": name, "before": before["metrics"][name], "before_ci": before["ci"][name],
             "after": after["metrics"][name], "after_ci": after["ci"][name]} for name in ROWS]
    return render("calibration.html", out_html, title="Site calibration", parent=parent,
                  derived=derived, before=before, after=after, rows=rows, figures=figures,
                  threshold=derived.meta["threshold"], sample=derived.meta["site_sample"],
                  run_rows=list(run_meta.items()))
