"""Shared timing helper of the benchmarks: the throughput of ``batch``'s own scoring route."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from xray_score.batch.chunks import ChunkTask
from xray_score.batch.processes import local_runner
from xray_score.batch.scorer import COLUMNS, CsvSink


def batch_rate(bundle: Any, paths: list[Path], n_jobs: int = 2, warm: int = 64,
               **predictor_kwargs: Any) -> tuple[float, str | None]:
    """(files/s, model runtime) of ``batch``'s route: local workers that read, decode, predict
    and return rows (``batch``'s own choice: forked workers where this process can fork
    safely, i.e. before it loads TensorFlow, else loky), into a CSV, after a warm-up run on
    the first ``warm`` files (forked workers start again with each run: their start-up is
    timed; loky's are reused)."""
    task = ChunkTask(str(Path(bundle.path).resolve()), bundle.model_id, threads=1,
                     **predictor_kwargs)
    runner = local_runner(n_jobs)
    files = [str(p) for p in paths]
    runtime = None
    with tempfile.TemporaryDirectory() as tmp:
        with CsvSink(Path(tmp) / "warm.csv", COLUMNS) as sink:
            for result in runner.run(task, files[:warm]):
                sink.write(result.rows)
        with CsvSink(Path(tmp) / "r.csv", COLUMNS) as sink:
            start = time.perf_counter()
            n = 0
            for result in runner.run(task, files):
                sink.write(result.rows)
                n += sum(row["status"] == "ok" for row in result.rows)
                runtime = runtime or result.runtime
            elapsed = time.perf_counter() - start
    assert n == len(files), f"{n} of {len(files)} scored"
    return len(files) / elapsed, runtime
