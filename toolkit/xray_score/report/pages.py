"""The three reports: evaluation, batch run summary, model comparison (context + render)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.metrics import has_both_classes
from ..evaluation.results import (
    evaluate_results,
    labeled_rows,
    result_threshold,
    scored_rows,
)
from ..labels import LABEL_TO_INT, to_binary
from . import figures as fg
from .figures import png_uri
from .render import render

MAX_TABLE_ROWS = 200
BUNDLE_META_SKIP = {"history", "files", "pipeline", "calibration", "format"}

METRIC_INFO = {
    "roc_auc": ("ROC AUC", "Ranking quality over all thresholds (0.5 = chance, 1 = perfect)."),
    "pr_auc": ("PR AUC", "Average precision: PPV averaged over sensitivity levels."),
    "sensitivity": ("Sensitivity", "Share of pneumonia images that are flagged."),
    "specificity": ("Specificity", "Share of normal images that are not flagged."),
    "precision": ("PPV (precision)", "Share of flagged images that truly show pneumonia."),
    "npv": ("NPV", "Share of unflagged images that are truly normal."),
    "accuracy": ("Accuracy", "Share of images classified correctly."),
    "f1": ("F1", "Harmonic mean of PPV and sensitivity."),
    "brier": ("Brier score", "Mean squared error of the probabilities (lower is better)."),
    "ece": ("ECE", "Expected calibration error, 10 equal-width bins (lower is better)."),
}
THRESHOLD_FREE = {"roc_auc", "pr_auc", "brier", "ece"}


def _flatten_meta(
    meta: Mapping[str, Any], skip: Iterable[str] = (), prefix: str = ""
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, val in meta.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(val, Mapping):
            rows += _flatten_meta(val, (), f"{name}.")
        elif isinstance(val, float):
            rows.append((name, f"{val:.6g}"))
        elif isinstance(val, list | tuple):
            rows.append((name, ", ".join(map(str, val))[:300]))
        else:
            rows.append((name, str(val)[:300]))
    return rows


def _bundle_threshold(bundle_meta: Mapping[str, Any]) -> float | None:
    t = bundle_meta.get("threshold")
    if isinstance(t, Mapping):
        t = t.get("value")
    return None if t is None else float(t)


def _error_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    if "status" not in df:
        return []
    errs = df[df["status"].astype(str).eq("error")].head(MAX_TABLE_ROWS)
    return [
        {"path": r.get("path", ""), "kind": r.get("error_kind", ""), "error": r.get("error", "")}
        for r in errs.to_dict("records")
    ]


def _metric_rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "key": key,
            "name": name,
            "help": help_,
            "free": key in THRESHOLD_FREE,
            "t": res["at_threshold"][key],
            "t_ci": res["ci_threshold"][key],
            "half": res["at_0.5"][key],
            "half_ci": res["ci_0.5"][key],
            "majority": res["majority"][key],
        }
        for key, (name, help_) in METRIC_INFO.items()
    ]


def _gallery(thumbnails: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    items = []
    for t in thumbnails or []:
        overlay = t.get("overlay_png_bytes")
        items.append(
            {
                "path": str(t.get("path", "")),
                "name": Path(str(t.get("path", ""))).name,
                "p": t.get("p"),
                "true_label": t.get("true_label"),
                "predicted_label": t.get("predicted_label"),
                "uri": png_uri(t["png_bytes"]) if t.get("png_bytes") else None,
                "overlay_uri": png_uri(overlay) if overlay else None,
            }
        )
    return items


def _labeled_figures(y: np.ndarray, p: np.ndarray, t: float) -> list[dict[str, str]]:
    points = [(t, f"bundle threshold {t:.3f}")] + ([(0.5, "threshold 0.5")] if t != 0.5 else [])
    return [
        fg.roc_figure([{"label": "model", "y": y, "p": p, "points": points}]),
        fg.pr_figure(y, p),
        fg.calibration_figure(y, p),
        fg.score_histogram_figure(p, y, t),
    ]


def _framing_context(df: pd.DataFrame, framing: pd.DataFrame | None,
                     bundle_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The framing section: this folder's check and the bundle's recorded one, and how many
    of this folder's films the bundle's operating point was fitted on."""
    recorded = (bundle_meta.get("framing_check") or {}).get("table") or []
    split = bundle_meta.get("validation_split") or {}
    fitted_on = set(split.get("calibration_patients") or [])
    patients = df["patient_id"] if "patient_id" in df else pd.Series(dtype=object)
    fitted = int(patients.isin(fitted_on).sum()) if fitted_on and framing is not None else 0
    return {"framing_rows": None if framing is None else framing.to_dict("records"),
            "bundle_framing_rows": recorded, "framing_fitted": fitted}


def _domain_context(df: pd.DataFrame, thumbnails: list[dict[str, Any]] | None
                    ) -> dict[str, Any]:
    """Rows flagged out of domain: how many, the farthest listed, thumbnails when given."""
    if "in_domain" not in df:
        return {"domain_checked": False}
    flagged = df[df["in_domain"].astype(str).eq("false")]
    listed = flagged.sort_values("domain_score", ascending=False).head(MAX_TABLE_ROWS)
    return {"domain_checked": True, "n_out_of_domain": len(flagged),
            "n_domain_scored": int(df["in_domain"].notna().sum()),
            "out_of_domain_rows": listed[["path", "domain_score", "p_pneumonia"]].to_dict(
                "records"),
            "out_of_domain_gallery": [{**g, "uri": png_uri(g["png_bytes"]),
                                       "name": Path(str(g["path"])).name}
                                      for g in thumbnails or []]}


def _model_ids(df: pd.DataFrame, bundle_meta: Mapping[str, Any]) -> str:
    ids = sorted(df["model_id"].dropna().astype(str).unique()) if "model_id" in df else []
    return ", ".join(ids) or str(bundle_meta.get("model_id", "—"))


def write_evaluation_report(
    df: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    bundle_meta: Mapping[str, Any],
    run_meta: Mapping[str, Any],
    thumbnails: list[dict[str, Any]] | None = None,
    title: str | None = None,
    n_boot: int = 1000,
    framing: pd.DataFrame | None = None,
    out_of_domain: list[dict[str, Any]] | None = None,
    trend: list[dict[str, Any]] | None = None,
    drift: dict[str, Any] | None = None,
    inputs_digest: str | None = None,
) -> Path:
    """One-file HTML report for result rows; the unlabeled variant when there is no true label.

    ``framing``: this folder's framing-shift check (:func:`~xray_score.evaluation.framing.
    framing_summary`); the bundle's own recorded check is shown too when it has one.
    """
    t = result_threshold(df, _bundle_threshold(bundle_meta) or 0.5)
    res = evaluate_results(df, t, n_boot=n_boot)
    ok = scored_rows(df)
    ctx: dict[str, Any] = {
        "title": title or ("Evaluation report" if res["labeled"] else "Run summary"),
        "res": res,
        "threshold": t,
        "model_ids": _model_ids(df, bundle_meta),
        "kind": bundle_meta.get("kind", "—"),
        "errors": _error_rows(df),
        "gallery": _gallery(thumbnails),
        "bundle_rows": _flatten_meta(bundle_meta, BUNDLE_META_SKIP),
        "run_rows": _flatten_meta(run_meta),
        "history_fig": fg.history_figure(bundle_meta.get("history") or {}),
        **_framing_context(df, framing, bundle_meta),
        **_domain_context(df, out_of_domain),
        "trend_fig": fg.trend_figure(trend or []),
        "drift": drift,
        "inputs_digest": inputs_digest,
        "figures": [],
    }
    if res["labeled"]:
        lab = labeled_rows(df)
        y = to_binary(lab["true_label"].astype(str).str.strip())
        p = lab["p_pneumonia"].to_numpy(float)
        counts = {n: int((y == i).sum()) for n, i in LABEL_TO_INT.items()}
        ctx |= {
            "metric_rows": _metric_rows(res),
            "class_counts": counts,
            "balance_fig": fg.class_balance_figure(counts),
            "confusions": [
                (f"bundle threshold {t:.3f}", res["at_threshold"]),
                ("threshold 0.500", res["at_0.5"]),
            ],
            "threshold_rows": res["threshold_table"].to_dict("records"),
            "one_class": not has_both_classes(y),
        }
        if len(y):
            ctx["figures"] = (
                _labeled_figures(y, p, t)
                if not ctx["one_class"]
                else [fg.score_histogram_figure(p, y, t)]
            )
    elif len(ok):
        ctx["figures"] = [fg.score_histogram_figure(ok["p_pneumonia"].to_numpy(float), None, t)]
    return render("evaluation.html", out_html, **ctx)


def write_run_summary(
    df: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    bundle_meta: Mapping[str, Any],
    run_meta: Mapping[str, Any],
    n_boot: int = 1000,
    out_of_domain: list[dict[str, Any]] | None = None,
    trend: list[dict[str, Any]] | None = None,
    drift: dict[str, Any] | None = None,
    inputs_digest: str | None = None,
) -> Path:
    """``batch``'s run summary: the evaluation report, unlabeled variant unless labels exist."""
    title = "Run summary" + (" and evaluation" if len(labeled_rows(df)) else "")
    return write_evaluation_report(
        df, out_html, bundle_meta=bundle_meta, run_meta=run_meta, title=title, n_boot=n_boot,
        out_of_domain=out_of_domain, trend=trend, drift=drift, inputs_digest=inputs_digest,
    )
