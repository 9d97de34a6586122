"""Result files (CSV or Parquet) written atomically: readers see the old file or the new one.

Every file goes to a temporary name in the same directory (``.<name>.<host>.<pid>.tmp``), is
fsynced, then renamed over the target (``os.replace``) and the directory fsynced, whatever
moment the process dies at. Temporary files of processes that died on this host are removed;
another live writer's are left alone. Rows stream through in chunks, as text values (as
``batch`` rows carry them).
"""

from __future__ import annotations

import csv
import io
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from .text import csv_safe

FORMATS = ("csv", "parquet")
_FLOAT = {"p_pneumonia", "threshold", "ms"}
_INT = {"width", "height", "scored_in_run"}
_CHUNK = 2000


@contextmanager
def atomic_file(out: Path) -> Iterator[IO[bytes]]:
    """A binary handle whose content replaces ``out`` only when the block ends normally."""
    out.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().replace(".", "_")
    _remove_stale(out, host)
    tmp = out.with_name(f".{out.name}.{host}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
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


def _remove_stale(out: Path, host: str) -> None:
    """Delete ``out``'s temporary files left by dead processes of this host."""
    prefix = f".{out.name}.{host}."
    for entry in out.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):-len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(out: Path, columns: list[str], rows: Iterable[dict[str, Any]],
                 fmt: str = "csv") -> int:
    """Write ``rows`` (text values) to ``out`` as ``fmt``; returns the number of rows."""
    with atomic_file(Path(out)) as fh:
        return _write_parquet(fh, columns, rows) if fmt == "parquet" else _write_csv(
            fh, columns, rows)


def write_frame_atomic(df: pd.DataFrame, out: Path) -> int:
    """A whole table to ``out``: Parquet for ``.parquet``, else CSV (values as pandas prints)."""
    out = Path(out)
    with atomic_file(out) as fh:
        if out.suffix.lower() == ".parquet":
            df.to_parquet(fh, index=False)
        else:
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
            safe = df.copy()
            for column in safe.select_dtypes(include="object").columns:
                safe[column] = safe[column].map(csv_safe)
            safe.to_csv(text, index=False)
            text.flush()
            text.detach()
    return len(df)


def _write_csv(fh: Any, columns: list[str], rows: Iterable[dict[str, Any]]) -> int:
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=False)
    writer = csv.writer(text)
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([csv_safe(row.get(c, "")) for c in columns])
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
