"""Commands built from the pieces: evaluate, compare, embed, and batch's HTML run summary.

Every path scores through :class:`xray_score.scoring.BatchScorer` rows, so a probability
here is exactly the one ``batch`` writes for the same file and bundle.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bundle import Bundle
from .datasets import is_labeled, label_of_path, patient_id
from .images import discover
from .scoring import (
    COLUMNS,
    DICOM_COLUMNS,
    LABEL_COLUMN,
    BatchScorer,
    CsvSink,
    RunStats,
    has_dicom,
)
from .worker import MultiPreprocessor

log = logging.getLogger(__name__)


def folder_labels(root: Path, paths: list[str]) -> dict[str, str] | None:
    """True labels from NORMAL/PNEUMONIA parent folders, when the folder is labeled."""
    if not (root.is_dir() and is_labeled(root)):
        return None
    return {p: label_of_path(p, root) or "" for p in paths}


def run_meta(command: str, started: float, bundles: list[Bundle], **extra: Any) -> dict:
    from . import __version__

    return {"command": command or " ".join(sys.argv), "xray_score_version": __version__,
            "model_ids": ", ".join(b.model_id for b in bundles),
            "seconds": round(time.time() - started, 1), **extra}


def report_meta(bundle: Bundle) -> dict[str, Any]:
    """bundle.json as the reports read it (training curves under ``history``)."""
    meta = dict(bundle.meta)
    meta.setdefault("history", (meta.get("cnn") or {}).get("history"))
    meta["model_id"] = bundle.model_id
    return meta


def with_patients(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["patient_id"] = df["path"].map(lambda p: patient_id(Path(p).name))
    return df


def read_results(csv_path: Path) -> pd.DataFrame:
    if csv_path.suffix.lower() == ".parquet":
        return pd.read_parquet(csv_path)
    return pd.read_csv(csv_path, keep_default_na=True, dtype={"error_kind": str, "error": str})


def write_batch_summary(csv_path: Path, bundle: Bundle, command: str, started: float) -> Path:
    """The HTML run summary beside a batch's CSV (evaluates too when labels are present)."""
    from .report import write_run_summary

    df = with_patients(read_results(csv_path))
    out = csv_path.with_suffix(".html")
    return write_run_summary(df, out, bundle_meta=report_meta(bundle),
                             run_meta=run_meta(command, started, [bundle], results=str(csv_path)))


def thumbnails_for(df: pd.DataFrame, bundle: Bundle, predictor: Any, n: int = 8,
                   size: int = 160) -> list[dict[str, Any]]:
    """Thumbnails of the most confident errors (Grad-CAM overlays for logistic-head CNNs)."""
    import cv2

    from .evaluation import to_binary

    ok = df[(df["status"] == "ok") & df[LABEL_COLUMN].isin(["NORMAL", "PNEUMONIA"])].copy()
    if ok.empty:
        return []
    y = to_binary(ok[LABEL_COLUMN])
    pred = (ok["p_pneumonia"].to_numpy() >= bundle.threshold).astype(int)
    wrong = ok[pred != y].copy()
    wrong["confidence"] = (wrong["p_pneumonia"] - 0.5).abs()
    pre = bundle.preprocessor()
    cam_ok = bundle.kind == "cnn" and getattr(predictor, "head", "") == "logistic"
    out = []
    for _, row in wrong.sort_values("confidence", ascending=False).head(n).iterrows():
        result = pre.__class__(size=pre.size, jpeg_draft=pre.jpeg_draft,
                               max_pixels=pre.max_pixels)(row["path"])
        if not result.ok:
            continue
        pixels = result.x
        thumb = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
        item = {"path": row["path"], "p": float(row["p_pneumonia"]),
                "true_label": row[LABEL_COLUMN], "predicted_label": row["predicted_label"],
                "png_bytes": cv2.imencode(".png", thumb)[1].tobytes()}
        if cam_ok:
            try:
                from .gradcam import grad_cam

                heat = grad_cam(predictor.model, pixels)
                color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
                base = cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
                overlay = cv2.addWeighted(base, 0.6, color, 0.4, 0)
                overlay = cv2.resize(overlay, (size, size), interpolation=cv2.INTER_AREA)
                item["overlay_png_bytes"] = cv2.imencode(".png", overlay)[1].tobytes()
            except Exception as exc:  # noqa: BLE001 - a report without one overlay is fine
                log.warning("no Grad-CAM for %s: %s", row["path"], exc)
        out.append(item)
    return out


def score_folder(bundle: Bundle, folder: Path, csv_path: Path, n_jobs: int,
                 **predictor_kwargs: Any) -> tuple[pd.DataFrame, BatchScorer, RunStats]:
    """Score a folder into ``csv_path`` exactly like ``batch``; return the rows."""
    paths = [str(p) for p in discover(folder)]
    labels = folder_labels(folder, paths)
    columns = COLUMNS + ([LABEL_COLUMN] if labels is not None else [])
    columns += DICOM_COLUMNS if has_dicom(paths) else []
    scorer = BatchScorer(bundle, n_jobs=n_jobs, **predictor_kwargs)
    with CsvSink(csv_path, columns) as sink:
        stats = scorer.run(paths, sink, labels)
    return with_patients(read_results(csv_path)), scorer, stats


def evaluate_folder(bundle: Bundle, folder: Path, out_html: Path, csv_path: Path,
                    n_jobs: int = 2, thumbnails: bool = True, command: str = "",
                    **predictor_kwargs: Any) -> tuple[Path, RunStats]:
    from .report import write_evaluation_report

    started = time.time()
    df, scorer, stats = score_folder(bundle, folder, csv_path, n_jobs, **predictor_kwargs)
    if LABEL_COLUMN not in df:
        log.warning("%s is not a labeled folder: the report has no accuracy figures", folder)
    thumbs = (thumbnails_for(df, bundle, scorer.predictor)
              if thumbnails and LABEL_COLUMN in df else None)
    path = write_evaluation_report(df, out_html, bundle_meta=report_meta(bundle),
                                   run_meta=run_meta(command, started, [bundle],
                                                     results=str(csv_path)),
                                   thumbnails=thumbs)
    return path, stats


def compare_folder(bundles: list[Bundle], folder: Path, out_html: Path, csv_path: Path,
                   n_jobs: int = 2, timeout: float | None = 60.0, command: str = "",
                   **predictor_kwargs: Any) -> tuple[Path, pd.DataFrame]:
    """Score every file with every bundle (one decode per file) and write the comparison."""
    from .report import write_compare_report

    started = time.time()
    scorers = [BatchScorer(b, n_jobs=n_jobs, **(predictor_kwargs if b.kind == "cnn" else {}))
               for b in bundles]
    paths = [str(p) for p in discover(folder)]
    labels = folder_labels(folder, paths)
    long_rows: list[dict[str, Any]] = []
    multi = MultiPreprocessor(tuple(s.preprocessor for s in scorers))
    for batch in scorers[0].iter_batches(paths, multi):  # one read and decode per file
        for i, scorer in enumerate(scorers):
            view = [replace(r, x=r.x[i]) if r.ok else r for r in batch]
            long_rows += scorer.rows(view, labels)
    long = pd.DataFrame(long_rows)
    wide = to_wide(long, bundles)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    wide.to_csv(csv_path, index=False)
    models = [{"model_id": b.model_id, "name": b.name, "kind": b.kind,
               "threshold": b.threshold} for b in bundles]
    path = write_compare_report(wide, out_html, models=models,
                                run_meta=run_meta(command, started, bundles,
                                                  results=str(csv_path)))
    return path, wide


def to_wide(long: pd.DataFrame, bundles: list[Bundle]) -> pd.DataFrame:
    """One row per image with ``p_<model_id>`` and ``pred_<model_id>`` for each model."""
    keys = ["path", "sha256", "width", "height"] + (
        [LABEL_COLUMN] if LABEL_COLUMN in long else [])
    wide = long[long["model_id"] == bundles[0].model_id][keys].reset_index(drop=True)
    for b in bundles:
        part = long[long["model_id"] == b.model_id].set_index("path")
        p = pd.to_numeric(part["p_pneumonia"], errors="coerce")
        wide[f"p_{b.model_id}"] = wide["path"].map(p)
        wide[f"pred_{b.model_id}"] = wide["path"].map(part["predicted_label"]).replace("", None)
        wide[f"status_{b.model_id}"] = wide["path"].map(part["status"])
        wide[f"error_{b.model_id}"] = wide["path"].map(part["error_kind"])
    return with_patients(wide)


def embed_folder(bundle: Bundle, folder: Path, out: Path, n_jobs: int = 2,
                 timeout: float | None = 60.0, **predictor_kwargs: Any) -> RunStats:
    """Write one row per image (path, sha256, status, error, e0..eD) to Parquet or CSV."""
    if bundle.kind != "cnn":
        from .errors import UsageError

        raise UsageError("embeddings come from CNN bundles; this one is a baseline")
    scorer = BatchScorer(bundle, n_jobs=n_jobs, timeout=timeout, **predictor_kwargs)
    stats = RunStats()
    frames = []
    start = time.perf_counter()
    for batch in scorer.iter_batches(discover(folder)):
        base = pd.DataFrame({"path": [r.path for r in batch],
                             "sha256": [r.sha256 for r in batch],
                             "status": ["ok" if r.ok else "error" for r in batch],
                             "error_kind": [r.error_kind for r in batch]})
        if batch[0].ok:
            emb = scorer.predictor.embed(np.stack([r.x for r in batch]))
            cols = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
            base = pd.concat([base, cols], axis=1)
            stats.n_ok += len(batch)
        else:
            stats.n_error += 1
            stats.errors_by_kind[batch[0].error_kind] += 1
        frames.append(base)
    stats.seconds = time.perf_counter() - start
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stats.n_files = len(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    return stats
