"""matplotlib figures (Agg) for the reports, each returned as an inline PNG data URI."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from ..evaluation.metrics import ECE_BINS, binary_metrics
from ..labels import CLASS_NAMES, LABEL_TO_INT

CLASS_COLORS = {"NORMAL": "#2b6cb0", "PNEUMONIA": "#c05621"}
MODEL_COLORS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#4a5568")


def png_uri(data: bytes) -> str:
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
    return png_uri(buf.getvalue())


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


def roc_figure(curves: list[dict[str, Any]],
               extra_points: list[tuple[float, float, str]] = ()) -> dict[str, str]:
    """ROC curves; each curve: label, y, p, optional points [(threshold, name)];
    ``extra_points``: (false-positive rate, sensitivity, name) markers of other scores."""
    fig = _new_fig(4.6, 4.2)
    ax = fig.axes[0]
    for (fpr, tpr, name), marker in zip(extra_points, "Dv<", strict=False):
        ax.plot(fpr, tpr, marker, color="#1a202c", ms=8, mfc="white", mew=2, label=_plain(name))
    for i, c in enumerate(curves):
        fpr, tpr, _ = roc_curve(c["y"], c["p"])
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        ax.plot(fpr, tpr, color=color, lw=2, label=_plain(c["label"]))
        for (t, name), marker in zip(c.get("points", []), "os^", strict=False):
            m = binary_metrics(c["y"], c["p"], t)
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


def calibration_figure(y: np.ndarray, p: np.ndarray,
                       others: list[tuple[str, np.ndarray]] = ()) -> dict[str, str]:
    """Reliability diagram (10 equal-width bins) above a histogram of predictions; ``others``
    adds (label, p) curves on the same images (e.g. before and after recalibration)."""
    fig = Figure(figsize=(4.6, 4.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", color="#a0aec0", lw=1, label="perfect calibration")
    for i, (label, q) in enumerate([("model" if not others else "after", p), *others]):
        frac, mean_p = calibration_curve(y, q, n_bins=ECE_BINS, strategy="uniform")
        top.plot(mean_p, frac, "o-", color=MODEL_COLORS[i % len(MODEL_COLORS)], lw=2,
                 label=_plain(label))
    top.set(ylabel="observed pneumonia fraction", ylim=(-0.01, 1.01))
    top.legend(loc="upper left", fontsize=8)
    bottom.hist(p, bins=ECE_BINS, range=(0, 1), color="#a0aec0")
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
        for name in CLASS_NAMES:
            sel = p[labels == LABEL_TO_INT[name]]
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
    """The metric a curve shows: Keras ``auc``/``val_auc``, LightGBM ``train_auc``/``val_auc``."""
    base = name.rsplit("/", 1)[-1]
    for prefix in ("val_", "train_"):
        if base.startswith(prefix):
            return base[len(prefix):]
    return base


def curve_panels(history: Mapping[str, Any]) -> dict[str, list[str]]:
    """Metric -> its curves (training first, then validation), one panel each."""
    panels: dict[str, list[str]] = {}
    for name in _flatten_curves(history):
        panels.setdefault(_curve_group(name), []).append(name)
    for names in panels.values():
        names.sort(key=lambda n: n.rsplit("/", 1)[-1].startswith("val_"))
    return panels


def phase_starts(history: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(first epoch, phase) of each training phase the history records (CNN: head, fine_tune)."""
    phases = history.get("phase") or []
    return [(i + 1, p) for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]


def history_figure(history: Mapping[str, Any]) -> dict[str, str] | None:
    """Training curves, one panel per metric (training and validation overlaid), with the
    start of each training phase marked."""
    curves = _flatten_curves(history)
    groups = curve_panels(history)
    if not groups:
        return None
    starts = phase_starts(history)
    keys = list(groups)[:4]
    fig = _new_fig(min(4.0 * len(keys), 11), 3.2, 1, len(keys))
    for ax, group in zip(fig.axes, keys, strict=False):
        for epoch, _ in starts[1:]:
            ax.axvline(epoch - 0.5, color="#718096", ls=":", lw=1.2)
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
    phases = "; ".join(f"{phase} from epoch {epoch}" for epoch, phase in starts)
    return _figure(
        "Training curves",
        fig,
        "Curves recorded while the bundle was trained (training vs validation). Diverging "
        "curves suggest over-fitting." + (f" Dotted lines: a new training phase ({phases})."
                                          if len(starts) > 1 else ""),
    )


def trend_figure(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Recent runs of a ledger: flagged share, mean logit and out-of-domain share per run."""
    if len(points) < 2:
        return None
    runs = [p["run_id"] for p in points]
    panels = [("flagged_rate", "share flagged"), ("mean_logit", "mean logit"),
              ("out_of_domain_share", "share out of domain")]
    fig = _new_fig(9.6, 2.6, 1, 3)
    for ax, (key, title) in zip(fig.axes, panels, strict=True):
        values = [np.nan if p.get(key) is None else p[key] for p in points]
        ax.plot(runs, values, "o-", color=MODEL_COLORS[0], lw=1.5, ms=4)
        ax.plot(runs[-1:], values[-1:], "o", color=MODEL_COLORS[1], ms=7)
        ax.set(title=title, xlabel="run")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _figure("Recent runs", fig, "What each recent run of this ledger and model scored; "
                   "the last point is this run. Drift is tested against the earlier runs.")


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
