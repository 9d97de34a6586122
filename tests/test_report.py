"""HTML reports: tiny and degenerate inputs, escaping, no network assets."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from xray_score.report import compare_page, figures, pages, render

EVIL = "<script>alert(1)</script>"
BUNDLE_META = {
    "kind": "cnn",
    "model_id": "abc123def456",
    "threshold": {"value": 0.4, "policy": "sensitivity", "target": 0.95},
    "history": {
        "loss": [0.7, 0.5, 0.4],
        "val_loss": [0.7, 0.6, 0.55],
        "auc": [0.7, 0.8, 0.85],
        "val_auc": [0.68, 0.75, 0.8],
    },
    "library_versions": {"numpy": "2.0"},
}
RUN_META = {"command": "xray-score evaluate data/", "seconds": 12.5, "model_ids": "abc123def456"}
MODELS = [
    {"model_id": "aaa", "name": "HOG baseline", "kind": "baseline", "threshold": 0.4},
    {"model_id": "bbb", "name": "MobileNet", "kind": "cnn", "threshold": 0.5},
    {"model_id": "ccc", "name": "Other", "kind": "cnn", "threshold": 0.6},
]


def make_results(
    n: int = 40, *, labeled: bool = True, n_errors: int = 2, classes: str = "both", seed: int = 0
) -> pd.DataFrame:
    """Synthetic result rows; the first row (an error row if any) has a hostile file name."""
    rng = np.random.default_rng(seed)
    y = {"both": rng.integers(0, 2, n), "pos": np.ones(n, int), "neg": np.zeros(n, int)}[classes]
    y[:2] = [0, 1] if classes == "both" else y[:2]
    p = np.clip(0.4 * y + 0.6 * rng.random(n), 0, 1)
    df = pd.DataFrame(
        {
            "path": [f"/data/p{i // 2}_img{i}.png" for i in range(n)],
            "sha256": "0" * 64,
            "model_id": "abc123def456",
            "p_pneumonia": p,
            "predicted_label": np.where(p >= 0.4, "PNEUMONIA", "NORMAL"),
            "threshold": 0.4,
            "status": "ok",
            "error_kind": None,
            "error": None,
            "width": 900,
            "height": 700,
            "ms": 9.0,
            "patient_id": [f"p{i // 2}" for i in range(n)],
        }
    )
    if labeled:
        df["true_label"] = np.where(y == 1, "PNEUMONIA", "NORMAL")
    bad = df.index[:n_errors]
    df.loc[bad, ["status", "error_kind", "error"]] = ["error", "truncated", "cut short"]
    df.loc[bad, "p_pneumonia"] = np.nan
    df.loc[0, "path"] = f"/data/{EVIL}.png"
    return df


def make_wide(n: int = 40, *, labeled: bool = True, k: int = 2, seed: int = 0) -> pd.DataFrame:
    """Per-image comparison table for the first ``k`` of MODELS; row 1 is a disagreement."""
    base = make_results(n, labeled=labeled, n_errors=1, seed=seed)
    rng = np.random.default_rng(seed + 1)
    wide = base[["path", "patient_id"] + (["true_label"] if labeled else [])].copy()
    for i, m in enumerate(MODELS[:k]):
        p = np.clip(base["p_pneumonia"] + rng.normal(0, 0.15 * i, n), 0, 1)
        wide[f"p_{m['model_id']}"] = p
        wide[f"pred_{m['model_id']}"] = np.where(p >= m["threshold"], "PNEUMONIA", "NORMAL")
    wide.loc[1, ["path", "p_aaa", "pred_aaa", "p_bbb", "pred_bbb"]] = [
        f"/data/{EVIL}.png",
        0.9,
        "PNEUMONIA",
        0.1,
        "NORMAL",
    ]
    return wide


def png_bytes(seed: int = 0) -> bytes:
    fig = Figure(figsize=(1, 1), dpi=64)
    fig.add_subplot().imshow(np.random.default_rng(seed).random((16, 16)), cmap="gray")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def make_thumbnails(df: pd.DataFrame, k: int = 3) -> list[dict]:
    rows = df[df["status"] == "ok"].head(k)
    return [
        {
            "path": r.path,
            "p": r.p_pneumonia,
            "true_label": getattr(r, "true_label", None),
            "predicted_label": r.predicted_label,
            "png_bytes": png_bytes(i),
            "overlay_png_bytes": png_bytes(i + 10) if i == 0 else None,
        }
        for i, r in enumerate(rows.itertuples())
    ]


def write_all_kinds(out_dir: Path, n_boot: int = 50) -> dict[str, Path]:
    """One report of each kind (shared with the browser test)."""
    labeled = make_results()
    return {
        "evaluation": pages.write_evaluation_report(
            labeled,
            out_dir / "evaluation.html",
            bundle_meta=BUNDLE_META,
            run_meta=RUN_META,
            thumbnails=make_thumbnails(labeled),
            n_boot=n_boot,
        ),
        "run_summary": pages.write_run_summary(
            make_results(labeled=False),
            out_dir / "run_summary.html",
            bundle_meta=BUNDLE_META,
            run_meta=RUN_META,
            n_boot=n_boot,
        ),
        "compare": compare_page.write_compare_report(
            make_wide(k=3),
            out_dir / "compare.html",
            models=MODELS,
            run_meta=RUN_META,
            n_boot=n_boot,
        ),
    }


def assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)
    for src in re.findall(r'src="([^"]*)"', html):
        assert src.startswith("data:image/png;base64,")
    assert EVIL not in html


def test_all_report_kinds_are_self_contained_and_escaped(tmp_path: Path) -> None:
    for path in write_all_kinds(tmp_path).values():
        html = path.read_text(encoding="utf-8")
        assert_self_contained(html)
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_evaluation_report_content(tmp_path: Path) -> None:
    df = make_results()
    out = pages.write_evaluation_report(
        df,
        tmp_path / "sub" / "r.html",
        bundle_meta=BUNDLE_META,
        run_meta=RUN_META,
        thumbnails=make_thumbnails(df),
        n_boot=30,
    )
    html = out.read_text(encoding="utf-8")
    for text in (
        "ROC curve",
        "Calibration",
        "Confusion matrices",
        "Threshold trade-off",
        "Training curves",
        "truncated",
        "Most confident mistakes",
        "majority class",
        "xray-score evaluate data/",
    ):
        assert text in html, text
    assert html.count("<img") >= 9  # balance, 4 curves, training, 3 thumbnails + 1 overlay


@pytest.mark.parametrize("classes", ["pos", "neg"])
def test_one_class_only(tmp_path: Path, classes: str) -> None:
    df = make_results(classes=classes)
    html = pages.write_evaluation_report(
        df, tmp_path / "r.html", bundle_meta=BUNDLE_META, run_meta=RUN_META, n_boot=20
    ).read_text()
    assert "All labeled images belong to one class" in html
    assert_self_contained(html)


def test_all_errors(tmp_path: Path) -> None:
    df = make_results(n=5, n_errors=5)
    html = pages.write_run_summary(
        df, tmp_path / "r.html", bundle_meta={}, run_meta={}
    ).read_text()
    assert "No file could be scored" in html and "5 of 5 files failed" in html
    wide = make_wide(n=4)
    wide["p_bbb"] = np.nan
    html = compare_page.write_compare_report(
        wide, tmp_path / "c.html", models=MODELS[:2], run_meta={}
    ).read_text()
    assert "No image was scored by every model" in html


def test_unlabeled_run_summary(tmp_path: Path) -> None:
    df = make_results(labeled=False, n_errors=0)
    html = pages.write_run_summary(
        df, tmp_path / "r.html", bundle_meta=BUNDLE_META, run_meta=RUN_META
    ).read_text()
    assert "carry no true labels" in html and "Score distribution" in html
    assert "Every file was scored" in html and "ROC curve" not in html
    n_flagged = int((df["p_pneumonia"] >= 0.4).sum())
    assert f'<div class="value">{n_flagged}</div>' in html


def test_labeled_run_summary_evaluates(tmp_path: Path) -> None:
    html = pages.write_run_summary(
        make_results(), tmp_path / "r.html", bundle_meta=BUNDLE_META, run_meta=RUN_META, n_boot=20
    ).read_text()
    assert "Run summary and evaluation" in html and "ROC curve" in html


def test_lightgbm_eval_history(tmp_path: Path) -> None:
    meta = BUNDLE_META | {
        "history": {"eval": {"valid_0": {"auc": [0.7, 0.8], "binary_logloss": [0.6, 0.5]}}}
    }
    fig = figures.history_figure(meta["history"])
    assert fig is not None and fig["uri"].startswith("data:image/png;base64,")
    assert figures.history_figure({}) is None


def test_compare_labeled_and_unlabeled(tmp_path: Path) -> None:
    html = compare_page.write_compare_report(
        make_wide(k=3), tmp_path / "c.html", models=MODELS, run_meta=RUN_META, n_boot=20
    ).read_text()
    assert html.count("statistically significant at 0.05") == 6  # 3 pairs x (DeLong, McNemar)
    assert "majority class" in html and "not adjusted for multiple comparisons" in html
    html = compare_page.write_compare_report(
        make_wide(labeled=False), tmp_path / "u.html", models=MODELS[:2], run_meta=RUN_META
    ).read_text()
    assert "Spearman" in html and "DeLong p" not in html
    assert_self_contained(html)


def test_formatting_helpers() -> None:
    assert render.fmt_num(float("nan")) == "—" and render.fmt_num(1234) == "1,234"
    assert render.fmt_ci((0.81234, 0.9)) == "0.812–0.900"
    assert render.fmt_p(1e-5) == "< 0.001" and render.fmt_pct(0.5) == "50.0%"


def test_gallery_ranks_mistakes_by_distance_from_the_threshold_on_the_logit_scale():
    """With a threshold of 0.92, a normal film at 0.95 is a near miss and a pneumonia film at
    0.2 a confident mistake, although |p - 0.5| says the opposite."""
    from xray_score.report.gallery import most_confident_errors

    df = pd.DataFrame({
        "path": ["near.png", "far_low.png", "far_high.png", "right.png"],
        "status": "ok",
        "p_pneumonia": [0.95, 0.2, 0.999, 0.99],
        "true_label": ["NORMAL", "PNEUMONIA", "NORMAL", "PNEUMONIA"],
        "predicted_label": ["PNEUMONIA", "NORMAL", "PNEUMONIA", "PNEUMONIA"],
    })
    ranked = most_confident_errors(df, threshold=0.92, n=3)
    assert list(ranked["path"]) == ["far_high.png", "far_low.png", "near.png"]
    assert list(most_confident_errors(df, 0.92, n=2)["path"]) == ["far_high.png", "far_low.png"]


def test_training_curves_pair_training_with_validation_and_mark_phases():
    baseline = {"train_auc": [0.9, 0.95], "train_binary_logloss": [0.5, 0.4],
                "val_auc": [0.8, 0.85], "val_binary_logloss": [0.6, 0.55]}
    assert figures.curve_panels(baseline) == {
        "auc": ["train_auc", "val_auc"], "binary_logloss": ["train_binary_logloss",
                                                            "val_binary_logloss"]}
    cnn = {"auc": [0.9, 0.95, 0.97], "loss": [0.5, 0.4, 0.3], "val_auc": [0.9, 0.93, 0.96],
           "val_loss": [0.4, 0.35, 0.3], "phase": ["head", "head", "fine_tune"]}
    assert figures.curve_panels(cnn) == {"auc": ["auc", "val_auc"],
                                         "loss": ["loss", "val_loss"]}
    assert figures.phase_starts(cnn) == [(1, "head"), (3, "fine_tune")]
    assert figures.history_figure(cnn)["caption"].count("fine_tune") == 1
