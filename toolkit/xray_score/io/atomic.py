"""Write a run's results file (CSV or Parquet) atomically, streaming rows in chunks.

The file is written to a temporary name in the same directory, fsynced, then renamed over the
target (``os.replace``) and the directory fsynced: readers see the old file or the new one,
never a torn one, whatever moment the process dies at.
"""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMATS = ("csv", "parquet")
_FLOAT = {"p_pneumonia", "threshold", "ms"}
_INT = {"width", "height", "scored_in_run"}
_CHUNK = 2000


def write_atomic(out: Path, columns: list[str], rows: Iterable[dict[str, Any]],
                 fmt: str = "csv") -> int:
    """Write ``rows`` (text values) to ``out`` as ``fmt``; returns the number of rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            n = _write_parquet(fh, columns, rows) if fmt == "parquet" else _write_csv(
                fh, columns, rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return n


def _write_csv(fh: Any, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    import io

    text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    text.flush()
    text.detach()
    return n


def _write_parquet(fh: Any, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.float64() if c in _FLOAT else pa.int64() if c in _INT
                         else pa.string()) for c in columns])
    n = 0
    with pq.ParquetWriter(fh, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append({c: _typed(c, row.get(c, "")) for c in columns})
            if len(chunk) >= _CHUNK:
                writer.write_table(pa.Table.from_pylist(chunk, schema))
                n, chunk = n + len(chunk), []
        if chunk or not n:
            writer.write_table(pa.Table.from_pylist(chunk, schema))
            n += len(chunk)
    return n


def _typed(column: str, value: Any) -> Any:
    if value in ("", None):
        return None
    if column in _FLOAT:
        return float(value)
    if column in _INT:
        return int(value)
    return str(value)
