"""Shared timing helper of the benchmarks: xray-score's own batch throughput."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from xray_score.batch.scorer import COLUMNS, BatchScorer, CsvSink


def batch_rate(scorer: BatchScorer, paths: list[Path], warm: int = 64) -> float:
    """Images/s of ``scorer.run`` over ``paths`` into a CSV, after a warm-up run (workers
    started, network traced) on the first ``warm`` files."""
    with tempfile.TemporaryDirectory() as tmp:
        with CsvSink(Path(tmp) / "warm.csv", COLUMNS) as sink:
            scorer.run(paths[:warm], sink)
        with CsvSink(Path(tmp) / "r.csv", COLUMNS) as sink:
            start = time.perf_counter()
            stats = scorer.run(paths, sink)
            elapsed = time.perf_counter() - start
    assert stats.n_ok == len(paths), stats.as_dict()
    return len(paths) / elapsed
