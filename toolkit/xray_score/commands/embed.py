"""``xray-score embed``: the embedding of every image, one row each, to Parquet or CSV."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ..batch.scorer import BatchScorer, RunStats
from ..errors import ExitCode, UsageError
from ..io.atomic import write_frame_atomic
from ..io.text import display_path
from ..model.kinds import Embedder
from .common import (
    cnn_runtime_options,
    echo_summary,
    handle_errors,
    require_images,
    resolve_model,
    runtime_options,
)


def embed_folder(bundle: Any, folder: Path, out: Path, n_jobs: int = 2,
                 timeout: float | None = 60.0, **predictor_kwargs: Any) -> RunStats:
    """Write one row per image (path, sha256, status, error, e0..eD) to Parquet or CSV."""
    paths = require_images(folder)
    scorer = BatchScorer(bundle, n_jobs=n_jobs, timeout=timeout, **predictor_kwargs)
    if not isinstance(scorer.predictor, Embedder):
        raise UsageError(f"{bundle.kind} bundles have no embeddings (use a CNN bundle)")
    stats = RunStats()
    frames = []
    start = time.perf_counter()
    for batch in scorer.iter_batches(paths):
        base = pd.DataFrame({"path": [display_path(r.path) for r in batch],
                             "sha256": [r.sha256 for r in batch],
                             "status": ["ok" if r.ok else "error" for r in batch],
                             "error_kind": [r.error_kind for r in batch]})
        if batch[0].ok:
            emb = scorer.predictor.embed(scorer.preprocessor.stack([r.x for r in batch]))
            cols = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
            base = pd.concat([base, cols], axis=1)
        stats.record(base[["status", "error_kind"]].to_dict("records"),
                     time.perf_counter() - start)
        frames.append(base)
    stats.seconds = time.perf_counter() - start
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stats.n_files = len(table)
    write_frame_atomic(table, out)
    return stats


@click.command()
@click.argument("folder", type=click.Path(exists=True))
@click.option("--model", "-m", help="CNN bundle (default: the shipped CNN).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Embeddings file: .parquet (default) or .csv.")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@cnn_runtime_options
@handle_errors
def embed(folder: str, model: str | None, out: str, jobs: int, weights: str | None,
          engine: str) -> int:
    """Export the CNN embedding of every image under FOLDER."""
    bundle = resolve_model(model, "cnn")
    stats = embed_folder(bundle, Path(folder), Path(out), jobs,
                         **runtime_options(weights, engine))
    echo_summary({"out": out, "model_id": bundle.model_id, **stats.as_dict()})
    return ExitCode.SOME_FAILED if stats.n_error else ExitCode.OK
