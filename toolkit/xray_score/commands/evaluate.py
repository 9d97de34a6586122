"""``xray-score evaluate``: score a labeled folder and write an HTML evaluation report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ..batch.scorer import LABEL_COLUMN, BatchScorer, RowList, RunStats, result_columns
from ..errors import ExitCode
from ..io.atomic import write_atomic
from ..io.datasets import folder_labels
from ..io.discover import has_dicom
from .common import (
    DEFAULT_RESULTS_DIR,
    cnn_runtime_options,
    command_line,
    default_out,
    echo_summary,
    handle_errors,
    report_meta,
    require_images,
    resolve_model,
    run_meta,
    runtime_options,
)

log = logging.getLogger(__name__)


def score_folder(bundle: Any, folder: Path, csv_path: Path, n_jobs: int,
                 **predictor_kwargs: Any) -> tuple[pd.DataFrame, BatchScorer, RunStats]:
    """Score a folder exactly like ``batch``; write its rows to ``csv_path`` (atomically, at
    the end) and return them as a frame."""
    from ..evaluation.results import results_frame

    paths = require_images(folder)
    labels = folder_labels(folder, paths)
    columns = result_columns(bundle, labels is not None, has_dicom(paths))
    scorer = BatchScorer(bundle, n_jobs=n_jobs, **predictor_kwargs)
    rows = RowList()
    stats = scorer.run(paths, rows, labels)
    write_atomic(csv_path, columns, rows)
    return results_frame(rows, columns), scorer, stats


def evaluate_folder(bundle: Any, folder: Path, out_html: Path, csv_path: Path,
                    n_jobs: int = 2, thumbnails: bool = True, command: str = "",
                    framing: bool = True, **predictor_kwargs: Any) -> tuple[Path, RunStats]:
    from ..report import write_evaluation_report
    from ..report.gallery import out_of_domain_thumbnails, thumbnails_for

    started = time.time()
    df, scorer, stats = score_folder(bundle, folder, csv_path, n_jobs, **predictor_kwargs)
    if LABEL_COLUMN not in df:
        log.warning("%s is not a labeled folder: the report has no accuracy figures", folder)
    thumbs = (thumbnails_for(df, bundle, scorer.predictor)
              if thumbnails and LABEL_COLUMN in df else None)
    check = None
    if framing and LABEL_COLUMN in df:
        from ..evaluation.framing import framing_scores, framing_summary

        labels = dict(zip(df["path"], df[LABEL_COLUMN], strict=True))
        ok = df[df["status"] == "ok"]["path"].tolist()
        log.info("framing check: scoring %d films re-framed %d ways", len(ok), 6)
        check = framing_summary(framing_scores(scorer, ok, labels), bundle.threshold)
    path = write_evaluation_report(df, out_html, bundle_meta=report_meta(bundle),
                                   run_meta=run_meta(command, started, [bundle],
                                                     results=str(csv_path)),
                                   thumbnails=thumbs, framing=check,
                                   out_of_domain=out_of_domain_thumbnails(df, bundle))
    return path, stats


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", help="Model bundle (default: the shipped CNN, else baseline).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Report HTML "
              f"(default: ./{DEFAULT_RESULTS_DIR}/evaluate-<folder>-<model_id>-<time>.html).")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Per-image results CSV (default: beside the report).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@click.option("--no-thumbnails", is_flag=True, help="Leave the image gallery out of the report.")
@click.option("--framing-check/--no-framing-check", default=True, show_default=True,
              help="Labeled folders: also score every film re-framed (the framing-shift check; "
              "about 6x the scoring time).")
@cnn_runtime_options
@handle_errors
def evaluate(folder: str, model: str | None, out: str | None, csv_out: str | None, jobs: int,
             no_thumbnails: bool, framing_check: bool, weights: str | None,
             engine: str) -> int:
    """Score a labeled FOLDER and write an HTML evaluation report with CIs."""
    bundle = resolve_model(model)
    out_path = Path(out) if out else default_out(Path(folder), bundle.model_id,
                                                 "evaluate-").with_suffix(".html")
    csv_path = Path(csv_out) if csv_out else out_path.with_suffix(".csv")
    report, stats = evaluate_folder(bundle, Path(folder), out_path, csv_path, jobs,
                                    thumbnails=not no_thumbnails, command=command_line(),
                                    framing=framing_check,
                                    **runtime_options(weights, engine))
    echo_summary({"report": str(report), "results": str(csv_path),
                  "model_id": bundle.model_id, **stats.as_dict()})
    return ExitCode.SOME_FAILED if stats.n_error else ExitCode.OK
