"""Self-contained HTML reports: Jinja2 templates (autoescaped) + matplotlib figures (Agg).

Every figure is embedded as a base64 PNG data URI and the CSS is inline, so a report is one file
that opens offline and references no network asset.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from . import __version__
from . import evaluation as ev

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
CLASS_COLORS = {"NORMAL": "#2b6cb0", "PNEUMONIA": "#c05621"}
MODEL_COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#4a5568")
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


# --------------------------------------------------------------------------- formatting


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def fmt_num(x: Any, digits: int = 3) -> str:
    """Number with ``digits`` decimals; ints stay ints; missing -> an em dash."""
    if _missing(x):
        return "—"
    if isinstance(x, int | np.integer):
        return f"{int(x):,}"
    if isinstance(x, float | np.floating):
        return f"{float(x):.{digits}f}"
    return str(x)


def fmt_pct(x: Any, digits: int = 1) -> str:
    """Fraction as a percentage."""
    return "—" if _missing(x) else f"{100 * float(x):.{digits}f}%"


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """A (lo, hi) pair as ``lo–hi``."""
    if ci is None or any(_missing(v) for v in ci):
        return "—"
    return f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def fmt_p(p: Any) -> str:
    """p-value with 3 significant digits, ``< 0.001`` below that."""
    if _missing(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, pct=fmt_pct, ci=fmt_ci, pval=fmt_p)
    return env


def _render(template: str, out_html: str | os.PathLike[str], **context: Any) -> Path:
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    context.setdefault("generated", dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    html = _env().get_template(template).render(version=__version__, **context)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    log.info("wrote %s", out)
    return out


# --------------------------------------------------------------------------- figures


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _new_fig(width: float = 5.2, height: float = 3.8, nrows: int = 1, ncols: int = 1) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    fig.subplots(nrows, ncols, squeeze=False)
    for ax in fig.axes:
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def _fig_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _png_uri(buf.getvalue())


def _plain(text: Any) -> str:
    """Text for matplotlib without mathtext interpretation."""
    return str(text).replace("$", r"\$")


def _figure(title: str, fig: Figure, caption: str) -> dict[str, Any]:
    width = fig.get_figwidth()
    return {"title": title, "uri": _fig_uri(fig), "caption": caption, "wide": width > 6}


def class_balance_figure(counts: Mapping[str, int]) -> dict[str, str]:
    """Horizontal bar chart of images per class."""
    fig = _new_fig(5.2, 1.9)
    ax = fig.axes[0]
    names = list(counts)
    bars = ax.barh(
        names, [counts[n] for n in names], color=[CLASS_COLORS.get(n, "#718096") for n in names]
    )
    ax.bar_label(bars, labels=[f"{counts[n]:,}" for n in names], padding=3)
    ax.set_xlabel("images")
    ax.margins(x=0.15)
    return _figure("Class balance", fig, "Number of scored images per true label.")


def roc_figure(curves: list[dict[str, Any]]) -> dict[str, str]:
    """ROC curves; each curve: label, y, p, optional points [(threshold, name)]."""
    fig = _new_fig(4.6, 4.2)
    ax = fig.axes[0]
    for i, c in enumerate(curves):
        fpr, tpr, _ = roc_curve(c["y"], c["p"])
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        ax.plot(fpr, tpr, color=color, lw=2, label=_plain(c["label"]))
        for (t, name), marker in zip(c.get("points", []), "os^", strict=False):
            m = ev.binary_metrics(c["y"], c["p"], t)
            ax.plot(
                1 - m["specificity"],
                m["sensitivity"],
                marker,
                color=color,
                ms=8,
                mfc="white",
                mew=2,
                label=_plain(name),
            )
    ax.plot([0, 1], [0, 1], ls="--", color="#a0aec0", lw=1, label="chance")
    return _unit_square_figure(
        fig, "1 − specificity (false-positive rate)", "sensitivity", "lower right",
        "ROC curve", "Sensitivity against false-positive rate as the threshold "
        "moves; markers show the operating points. Dashed line: chance.")


def pr_figure(y: np.ndarray, p: np.ndarray) -> dict[str, str]:
    """Precision-recall curve with the prevalence baseline."""
    fig = _new_fig(4.6, 4.2)
    ax = fig.axes[0]
    prec, rec, _ = precision_recall_curve(y, p)
    ax.step(rec, prec, where="post", color=MODEL_COLORS[0], lw=2, label="model")
    ax.axhline(float(np.mean(y)), ls="--", color="#a0aec0", lw=1, label="prevalence")
    return _unit_square_figure(
        fig, "sensitivity (recall)", "PPV (precision)", "best", "Precision–recall curve",
        "PPV against sensitivity as the threshold "
        "moves. Dashed line: a model with no skill (the pneumonia prevalence).")


def _unit_square_figure(fig: Figure, xlabel: str, ylabel: str, legend_loc: str, title: str,
                        caption: str) -> dict[str, str]:
    """Finish a curve on the unit square (equal axes, legend) and encode it."""
    ax = fig.axes[0]
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01),
           aspect="equal")
    ax.legend(loc=legend_loc, fontsize=8)
    return _figure(title, fig, caption)


def calibration_figure(y: np.ndarray, p: np.ndarray) -> dict[str, str]:
    """Reliability diagram (10 equal-width bins) above a histogram of predictions."""
    fig = Figure(figsize=(4.6, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    frac, mean_p = calibration_curve(y, p, n_bins=ev.ECE_BINS, strategy="uniform")
    top.plot([0, 1], [0, 1], ls="--", color="#a0aec0", lw=1, label="perfect calibration")
    top.plot(mean_p, frac, "o-", color=MODEL_COLORS[0], lw=2, label="model")
    top.set(ylabel="observed pneumonia fraction", ylim=(-0.01, 1.01))
    top.legend(loc="upper left", fontsize=8)
    bottom.hist(p, bins=ev.ECE_BINS, range=(0, 1), color="#a0aec0")
    bottom.set(xlabel="predicted probability of pneumonia", ylabel="images", xlim=(0, 1))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    return _figure(
        "Calibration",
        fig,
        "Observed pneumonia fraction per bin of predicted "
        "probability (10 equal-width bins). Points on the diagonal are well calibrated.",
    )


def score_histogram_figure(
    p: np.ndarray, labels: np.ndarray | None, threshold: float
) -> dict[str, str]:
    """Score histogram, split by true class when labels are given, with the threshold line."""
    fig = _new_fig(5.6, 3.4)
    ax = fig.axes[0]
    bins = np.linspace(0, 1, 41)
    if labels is None:
        ax.hist(p, bins=bins, color=MODEL_COLORS[0], alpha=0.85, label="all scored images")
    else:
        for name in ev.CLASS_NAMES:
            sel = p[labels == ev.LABEL_TO_INT[name]]
            if sel.size:
                ax.hist(
                    sel,
                    bins=bins,
                    color=CLASS_COLORS[name],
                    alpha=0.6,
                    label=f"true {name} (n={sel.size:,})",
                )
    ax.axvline(threshold, color="#1a202c", ls="--", lw=1.5, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="predicted probability of pneumonia", ylabel="images", xlim=(0, 1))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    caption = (
        "Distribution of predicted probabilities"
        + (" by true label" if labels is not None else "")
        + "; images right of the dashed line are flagged as pneumonia."
    )
    return _figure("Score distribution", fig, caption)


def _flatten_curves(history: Mapping[str, Any], prefix: str = "") -> dict[str, list[float]]:
    """Numeric lists from nested dicts (Keras history or LightGBM ``evals_result_``)."""
    out: dict[str, list[float]] = {}
    for key, val in history.items():
        name = f"{prefix}{key}"
        if isinstance(val, Mapping):
            out |= _flatten_curves(val, "" if key == "eval" else f"{name}/")
        elif isinstance(val, list | tuple) and val and all(isinstance(v, int | float) for v in val):
            out[name] = [float(v) for v in val]
    return out


def _curve_group(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base[4:] if base.startswith("val_") else base


def history_figure(history: Mapping[str, Any]) -> dict[str, str] | None:
    """Training curves, one panel per metric (training and validation overlaid)."""
    curves = _flatten_curves(history)
    groups: dict[str, list[str]] = {}
    for name in curves:
        groups.setdefault(_curve_group(name), []).append(name)
    if not groups:
        return None
    keys = list(groups)[:4]
    fig = _new_fig(min(4.0 * len(keys), 11), 3.2, 1, len(keys))
    for ax, group in zip(fig.axes, keys, strict=False):
        for i, name in enumerate(groups[group]):
            vals = curves[name]
            ax.plot(
                range(1, len(vals) + 1),
                vals,
                color=MODEL_COLORS[i % len(MODEL_COLORS)],
                lw=2,
                label=_plain(name),
            )
        ax.set(title=_plain(group), xlabel="epoch / iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    return _figure(
        "Training curves",
        fig,
        "Curves recorded while the bundle was trained "
        "(training vs validation). Diverging curves suggest over-fitting.",
    )


def scatter_figure(
    p1: np.ndarray, p2: np.ndarray, name1: str, name2: str, t1: float, t2: float
) -> dict[str, str]:
    """Paired score scatter with both thresholds."""
    fig = _new_fig(4.2, 4.2)
    ax = fig.axes[0]
    ax.scatter(p1, p2, s=10, alpha=0.5, color=MODEL_COLORS[0], edgecolors="none")
    ax.axvline(t1, ls="--", color="#718096", lw=1)
    ax.axhline(t2, ls="--", color="#718096", lw=1)
    ax.set(xlabel=_plain(name1), ylabel=_plain(name2), xlim=(0, 1), ylim=(0, 1), aspect="equal")
    return _figure(
        f"Scores: {name1} vs {name2}",
        fig,
        "Each dot is one image; dashed lines are "
        "each model's threshold. Dots off the diagonal quadrants are disagreements.",
    )


# --------------------------------------------------------------------------- context pieces


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
                "uri": _png_uri(t["png_bytes"]) if t.get("png_bytes") else None,
                "overlay_uri": _png_uri(overlay) if overlay else None,
            }
        )
    return items


def _labeled_figures(y: np.ndarray, p: np.ndarray, t: float) -> list[dict[str, str]]:
    points = [(t, f"bundle threshold {t:.3f}")] + ([(0.5, "threshold 0.5")] if t != 0.5 else [])
    return [
        roc_figure([{"label": "model", "y": y, "p": p, "points": points}]),
        pr_figure(y, p),
        calibration_figure(y, p),
        score_histogram_figure(p, y, t),
    ]


def _model_ids(df: pd.DataFrame, bundle_meta: Mapping[str, Any]) -> str:
    ids = sorted(df["model_id"].dropna().astype(str).unique()) if "model_id" in df else []
    return ", ".join(ids) or str(bundle_meta.get("model_id", "—"))


# --------------------------------------------------------------------------- public API


def write_evaluation_report(
    df: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    bundle_meta: Mapping[str, Any],
    run_meta: Mapping[str, Any],
    thumbnails: list[dict[str, Any]] | None = None,
    title: str | None = None,
    n_boot: int = 1000,
) -> Path:
    """One-file HTML report for result rows; the unlabeled variant when there is no true label."""
    t = ev.result_threshold(df, _bundle_threshold(bundle_meta) or 0.5)
    res = ev.evaluate_results(df, t, n_boot=n_boot)
    ok = ev.scored_rows(df)
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
        "history_fig": history_figure(bundle_meta.get("history") or {}),
        "figures": [],
    }
    if res["labeled"]:
        lab = ev.labeled_rows(df)
        y = ev.to_binary(lab["true_label"].astype(str).str.strip())
        p = lab["p_pneumonia"].to_numpy(float)
        counts = {n: int((y == i).sum()) for n, i in ev.LABEL_TO_INT.items()}
        ctx |= {
            "metric_rows": _metric_rows(res),
            "class_counts": counts,
            "balance_fig": class_balance_figure(counts),
            "confusions": [
                (f"bundle threshold {t:.3f}", res["at_threshold"]),
                ("threshold 0.500", res["at_0.5"]),
            ],
            "threshold_rows": res["threshold_table"].to_dict("records"),
            "one_class": not ev.has_both_classes(y),
        }
        if len(y):
            ctx["figures"] = (
                _labeled_figures(y, p, t)
                if not ctx["one_class"]
                else [score_histogram_figure(p, y, t)]
            )
    elif len(ok):
        ctx["figures"] = [score_histogram_figure(ok["p_pneumonia"].to_numpy(float), None, t)]
    return _render("evaluation.html", out_html, **ctx)


def write_run_summary(
    df: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    bundle_meta: Mapping[str, Any],
    run_meta: Mapping[str, Any],
    n_boot: int = 1000,
) -> Path:
    """``batch``'s run summary: the evaluation report, unlabeled variant unless labels exist."""
    title = "Run summary" + (" and evaluation" if len(ev.labeled_rows(df)) else "")
    return write_evaluation_report(
        df, out_html, bundle_meta=bundle_meta, run_meta=run_meta, title=title, n_boot=n_boot
    )


def _disagreement_rows(dis: pd.DataFrame, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pcols = [f"p_{m['model_id']}" for m in models]
    spread = dis[pcols].max(axis=1) - dis[pcols].min(axis=1)
    rows = []
    for _, r in (
        dis.assign(_spread=spread)
        .sort_values("_spread", ascending=False)
        .head(MAX_TABLE_ROWS)
        .iterrows()
    ):
        rows.append(
            {
                "path": r["path"],
                "true_label": r.get("true_label"),
                "scores": [
                    (
                        r[f"p_{m['model_id']}"],
                        "PNEUMONIA"
                        if r[f"p_{m['model_id']}"] >= float(m["threshold"])
                        else "NORMAL",
                    )
                    for m in models
                ],
            }
        )
    return rows


def write_compare_report(
    df_wide: pd.DataFrame,
    out_html: str | os.PathLike[str],
    *,
    models: list[dict[str, Any]],
    run_meta: Mapping[str, Any],
    title: str | None = None,
    n_boot: int = 1000,
) -> Path:
    """Side-by-side comparison of >= 2 models scored on the same images."""
    res = ev.compare_models(df_wide, models, n_boot=n_boot)
    names = {m["model_id"]: m.get("name") or m["model_id"] for m in models}
    pcols = [f"p_{m['model_id']}" for m in models]
    complete = df_wide[df_wide[pcols].notna().all(axis=1)]
    figures = []
    if res["labeled"]:
        lab = complete[ev.label_mask(complete)]
        y = ev.to_binary(lab["true_label"].astype(str).str.strip())
        if ev.has_both_classes(y):
            figures.append(
                roc_figure(
                    [
                        {
                            "label": names[m["model_id"]],
                            "y": y,
                            "p": lab[f"p_{m['model_id']}"].to_numpy(),
                            "points": [
                                (float(m["threshold"]), f"{names[m['model_id']]} threshold")
                            ],
                        }
                        for m in models
                    ]
                )
            )
    by_id = {m["model_id"]: m for m in models}
    for pair in res["pairs"][:3]:
        a, b = by_id[pair["model1"]], by_id[pair["model2"]]
        if len(complete):
            figures.append(
                scatter_figure(
                    complete[f"p_{a['model_id']}"].to_numpy(float),
                    complete[f"p_{b['model_id']}"].to_numpy(float),
                    names[a["model_id"]],
                    names[b["model_id"]],
                    float(a["threshold"]),
                    float(b["threshold"]),
                )
            )
    ctx = {
        "title": title or "Model comparison",
        "res": res,
        "models": models,
        "names": names,
        "metric_keys": [
            "roc_auc",
            "sensitivity",
            "specificity",
            "precision",
            "npv",
            "accuracy",
            "brier",
        ],
        "metric_info": METRIC_INFO,
        "figures": figures,
        "disagreements": _disagreement_rows(res["disagreements"], models),
        "run_rows": _flatten_meta(run_meta),
    }
    return _render("compare.html", out_html, **ctx)
