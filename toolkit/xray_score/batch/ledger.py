"""The results ledger: an SQLite file (WAL) of every score, keyed by image content and model.

Tables:

- ``results``: one row per (``key``, ``model_id``), where ``key`` is the image's sha256 (or
  ``path:<path>`` when the file could not even be read). Values are the result-row strings
  :meth:`xray_score.scoring.BatchScorer.rows` produces, plus ``run_id`` (the run that scored it).
- ``stat_cache``: (device, inode) -> (size, mtime_ns, sha256), so an unchanged file is not read
  again to learn its hash.
- ``runs``: start, end, arguments, model, version, shard, counts and exit status of every run.

Every write is its own short transaction (``synchronous=FULL``): a batch's rows are durable the
moment :meth:`Ledger.put_rows` returns, and a killed run loses nothing it committed. WAL mode
lets the shards of a split job share one ledger on one host (SQLite's WAL needs shared memory,
so not across hosts on a network file system).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
ROW_FIELDS = ["sha256", "p_pneumonia", "predicted_label", "threshold", "status", "error_kind",
              "error", "width", "height", "ms"]
# Failures that may not recur on unchanged content: a re-run tries these files again.
TRANSIENT_KINDS = frozenset({"timeout", "worker_crash", "unreadable", "out_of_memory"})
_CHUNK = 500  # host parameters per IN (...) query

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS results (
    key TEXT NOT NULL, model_id TEXT NOT NULL,
    {", ".join(f"{f} TEXT" for f in ROW_FIELDS)},
    extra TEXT, path TEXT, run_id INTEGER,
    PRIMARY KEY (key, model_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stat_cache (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT, ended TEXT, pid INTEGER, host TEXT, argv TEXT, folder TEXT,
    model_id TEXT, version TEXT, part TEXT, counts TEXT, exit_status INTEGER, state TEXT
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _chunks(items: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def needs_scoring(row: dict[str, str] | None) -> bool:
    """A file is scored again when unknown to the ledger or its error may be transient."""
    return row is None or (row["status"] == "error" and row["error_kind"] in TRANSIENT_KINDS)


class Ledger:
    """An open ledger file (created on first use)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        if not self._has_schema():
            with self.transaction():
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self.db.execute(statement)

    def _has_schema(self) -> bool:
        return self.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ runs
    def start_run(self, folder: str, model_id: str, argv: list[str], part: str) -> int:
        """Record a new run; earlier runs of this shard that never ended are marked killed."""
        from .. import __version__

        with self.transaction():
            self.db.execute("UPDATE runs SET state='killed' WHERE state='running' AND part=?",
                            (part,))
            cur = self.db.execute(
                "INSERT INTO runs (started, pid, host, argv, folder, model_id, version, part,"
                " state) VALUES (?,?,?,?,?,?,?,?, 'running')",
                (_now(), os.getpid(), socket.gethostname(), json.dumps(argv or sys.argv),
                 folder, model_id, __version__, part))
        return int(cur.lastrowid)

    def end_run(self, run_id: int, counts: dict[str, Any], exit_status: int,
                state: str = "done") -> None:
        """Record how a run ended: ``done``, ``interrupted`` (a signal) or ``failed``."""
        with self.transaction():
            self.db.execute("UPDATE runs SET ended=?, counts=?, exit_status=?, state=?"
                            " WHERE run_id=?",
                            (_now(), json.dumps(counts), exit_status, state, run_id))

    def recent_counts(self, model_id: str, before: int, limit: int) -> list[str]:
        """The summaries (JSON) of the latest finished runs of ``model_id`` before a run."""
        rows = self.db.execute(
            "SELECT counts FROM runs WHERE model_id=? AND run_id<? AND state='done' AND counts"
            " IS NOT NULL ORDER BY run_id DESC LIMIT ?", (model_id, before, limit)).fetchall()
        return [r[0] for r in rows]

    def run(self, run_id: int) -> dict[str, Any]:
        return dict(self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone())

    # ------------------------------------------------------------------ stat cache
    def cached_hashes(self, stats: list[os.stat_result]) -> list[str | None]:
        """sha256 per stat result when the file's (dev, inode, size, mtime_ns) is cached."""
        found: dict[tuple[int, int], tuple[int, int, str]] = {}
        by_dev: dict[int, set[int]] = {}
        for st in stats:
            by_dev.setdefault(st.st_dev, set()).add(st.st_ino)
        for dev, inodes in by_dev.items():  # dev = ? AND ino IN (...): a PRIMARY KEY search
            for part in _chunks(sorted(inodes)):
                marks = ",".join("?" * len(part))
                for ino, size, mtime, sha in self.db.execute(
                        f"SELECT ino, size, mtime_ns, sha256 FROM stat_cache "
                        f"WHERE dev = ? AND ino IN ({marks})", [dev, *part]):
                    found[(dev, ino)] = (size, mtime, sha)
        out: list[str | None] = []
        for st in stats:
            hit = found.get((st.st_dev, st.st_ino))
            out.append(hit[2] if hit and hit[:2] == (st.st_size, st.st_mtime_ns) else None)
        return out

    def cache_hashes(self, entries: Iterable[tuple[Any, str]]) -> None:
        """Remember sha256s by (dev, inode, size, mtime_ns): a stat result or that tuple."""
        with self.transaction():
            self._cache_hashes(entries)

    def _cache_hashes(self, entries: Iterable[tuple[Any, str]]) -> None:
        values = []
        for st, sha in entries:
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if hasattr(
                st, "st_ino") else tuple(st)
            values.append((*key, sha))
        if values:
            self.db.executemany("INSERT OR REPLACE INTO stat_cache VALUES (?,?,?,?,?)", values)

    # ------------------------------------------------------------------ results
    def get_rows(self, keys: Iterable[str], model_id: str) -> dict[str, dict[str, Any]]:
        """Stored rows by key (missing keys are absent)."""
        out: dict[str, dict[str, Any]] = {}
        for part in _chunks(sorted(set(keys))):
            marks = ",".join("?" * len(part))
            for row in self.db.execute(f"SELECT * FROM results WHERE model_id=? AND key IN "
                                       f"({marks})", [model_id, *part]):
                out[row["key"]] = dict(row)
        return out

    def put_rows(self, rows: list[dict[str, Any]], keys: list[str], run_id: int,
                 extra_columns: list[str], stat_entries: Iterable[tuple[Any, str]] = ()) -> None:
        """Insert or replace result rows, and remember ``stat_entries`` (see
        :meth:`cache_hashes`), in one transaction: durable when this returns."""
        values = []
        for row, key in zip(rows, keys, strict=True):
            extra = {c: row[c] for c in extra_columns if row.get(c)}
            get = row.get
            values.append((key, row["model_id"], *[str(get(f, "")) for f in ROW_FIELDS],
                           json.dumps(extra) if extra else None, row["path"], run_id))
        marks = ",".join("?" * (len(ROW_FIELDS) + 5))
        with self.transaction():
            if values:
                self.db.executemany(f"INSERT OR REPLACE INTO results VALUES ({marks})", values)
            self._cache_hashes(stat_entries)

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM results WHERE model_id=?",
                               (model_id,)).fetchone()[0]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); waits for other writers."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            # a signal's handler (SIGINT/SIGTERM -> Interrupted) can raise just after BEGIN
            # succeeded: no __exit__ follows an exception in __enter__, so end the
            # transaction here, or the run's own "interrupted" record could not be written
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        except BaseException:  # a signal before the statement ran: nothing half-open stays
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
