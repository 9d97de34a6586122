"""``xray-score compare``: several bundles on the same images (one decode each), tested."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ..batch.scorer import LABEL_COLUMN, BatchScorer
from ..errors import ExitCode, UsageError
from ..evaluation.results import row_patients
from ..io.atomic import write_frame_atomic
from ..io.datasets import folder_labels
from ..io.preprocess import MultiPreprocessor
from .common import (
    cnn_runtime_options,
    command_line,
    default_out,
    echo_summary,
    handle_errors,
    require_images,
    resolve_model,
    run_meta,
    runtime_options,
)


def compare_folder(bundles: list[Any], folder: Path, out_html: Path, csv_path: Path,
                   n_jobs: int = 2, timeout: float | None = 60.0, command: str = "",
                   **predictor_kwargs: Any) -> tuple[Path, pd.DataFrame]:
    """Score every file with every bundle (one decode per file) and write the comparison."""
    from ..report import write_compare_report

    started = time.time()
    paths = require_images(folder)
    scorers = [BatchScorer(b, n_jobs=n_jobs, timeout=timeout, **predictor_kwargs)
               for b in bundles]
    labels = folder_labels(folder, paths)
    long_rows: list[dict[str, Any]] = []
    multi = MultiPreprocessor(tuple(s.preprocessor for s in scorers))
    for batch in scorers[0].iter_batches(paths, multi):  # one read and decode per file
        for i, scorer in enumerate(scorers):
            view = [replace(r, x=r.x[i]) if r.ok else r for r in batch]
            long_rows += scorer.rows(view, labels)
    long = pd.DataFrame(long_rows)
    wide = to_wide(long, bundles)
    write_frame_atomic(wide, csv_path)
    models = [{"model_id": b.model_id, "name": b.name, "kind": b.kind,
               "threshold": b.threshold} for b in bundles]
    path = write_compare_report(wide, out_html, models=models,
                                run_meta=run_meta(command, started, bundles,
                                                  results=str(csv_path)))
    return path, wide


def to_wide(long: pd.DataFrame, bundles: list[Any]) -> pd.DataFrame:
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
    if "patient_id" in long:
        wide["patient_id"] = wide["path"].map(
            long.drop_duplicates("path").set_index("path")["patient_id"])
    wide["patient_id"] = row_patients(wide)
    return wide


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--baseline", help="Baseline bundle (default: the shipped one).")
@click.option("--cnn", help="CNN bundle (default: the shipped one).")
@click.option("--model", "-m", "extra", multiple=True,
              help="More bundles to compare (repeatable), e.g. pipelines/seeds models.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Report HTML.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Per-image CSV with every model's score (default: beside the report).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@click.option("--timeout", default=60.0, show_default=True, help="Per-file decode limit (s).")
@cnn_runtime_options
@handle_errors
def compare(folder: str, baseline: str | None, cnn: str | None, extra: tuple[str, ...],
            out: str | None, csv_out: str | None, jobs: int, timeout: float,
            weights: str | None, engine: str) -> int:
    """Score FOLDER with several bundles (one decode per image) and test the differences."""
    from ..model.bundle import Bundle

    bundles = [resolve_model(baseline, "baseline"), resolve_model(cnn, "cnn")]
    bundles += [Bundle.load(p) for p in extra]
    ids = [b.model_id for b in bundles]
    if len(set(ids)) != len(ids):
        raise UsageError("the same bundle was given twice")
    out_path = Path(out) if out else default_out(Path(folder), "-".join(ids),
                                                 "compare-").with_suffix(".html")
    csv_path = Path(csv_out) if csv_out else out_path.with_suffix(".csv")
    report, wide = compare_folder(bundles, Path(folder), out_path, csv_path, jobs, timeout,
                                  command=command_line(), **runtime_options(weights, engine))
    failed = int((wide[[f"status_{i}" for i in ids]] != "ok").any(axis=1).sum())
    echo_summary({"report": str(report), "results": str(csv_path), "models": ids,
                  "images": len(wide), "images_with_errors": failed})
    return ExitCode.SOME_FAILED if failed else ExitCode.OK
