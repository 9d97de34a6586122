"""``batch`` at nightly scale: score only what changed, record it in the ledger, export the folder.

A run: discover the folder (and keep this shard's part) -> learn every file's sha256 (from the
ledger's stat cache when (device, inode, size, mtime_ns) match, otherwise by reading it) ->
score the contents the ledger has no usable row for (new, changed, or a transient error),
committing rows batch by batch -> export one row per file currently in the folder (part) to
``--out``, atomically.

Shards. ``--num-parts K --part-id I`` keeps the files whose path relative to the folder hashes
(BLAKE2b, so stable across machines and Python versions) to ``I`` modulo ``K``. All shards share
one ledger (SQLite WAL; one lock file per shard), so there is no merge step: each shard's
``--out`` covers its own part, and an unsharded run afterwards is a no-op that exports the whole
folder from the ledger. A ledger shared through a network file system by several hosts is not
supported (SQLite WAL needs shared memory); run the shards of one ledger on one host.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ExitCode
from .export import write_atomic
from .ledger import Ledger, needs_scoring
from .locking import RunLock, lock_path
from .scoring import COLUMNS, DICOM_COLUMNS, LABEL_COLUMN, BatchScorer, RunStats, display_path

log = logging.getLogger(__name__)

RUN_COLUMN = "scored_in_run"
RACY_NS = 2_000_000_000  # files modified this recently are hashed again next time (racy stat)
_CHUNK = 1000


@dataclass
class Job:
    """What one ``batch`` run does (the CLI fills this from options and ``--config``)."""

    folder: Path
    out: Path
    ledger: Path
    fmt: str = "csv"
    n_jobs: int = 2
    timeout: float | None = 60.0
    batch_size: int = 64
    num_parts: int = 1
    part_id: int = 0
    backend: str = "loky"
    scheduler: str | None = None
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    @property
    def part(self) -> str:
        return f"{self.part_id}/{self.num_parts}"


def shard_of(path: str, root: Path, num_parts: int) -> int:
    """The shard (0..num_parts-1) of a file, from its path relative to the folder."""
    try:
        rel = os.path.relpath(path, root) if root.is_dir() else os.path.basename(path)
    except ValueError:
        rel = path
    digest = hashlib.blake2b(os.fsencode(rel), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_parts


def select_part(paths: list[str], root: Path, num_parts: int, part_id: int) -> list[str]:
    if num_parts == 1:
        return paths
    return [p for p in paths if shard_of(p, root, num_parts) == part_id]


def hash_file(path: str) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read (its worker will say why)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


@dataclass
class Plan:
    """Every file's ledger key, and the files to score (one per distinct content)."""

    keys: dict[str, str] = field(default_factory=dict)  # display path -> ledger key
    todo: list[str] = field(default_factory=list)
    stat_hits: int = 0
    hashed: int = 0


def make_plan(ledger: Ledger, paths: list[str], model_id: str) -> Plan:
    """Look every file up in the stat cache, hash the rest, decide what needs scoring."""
    plan, queued = Plan(), set()
    now = time.time_ns()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start:start + _CHUNK]
            stats = [_stat(p) for p in chunk]
            cached = ledger.cached_hashes([st for st in stats if st is not None])
            hashes = iter(cached)
            shas = [next(hashes) if st is not None else None for st in stats]
            plan.stat_hits += sum(s is not None for s in shas)
            misses = [i for i, s in enumerate(shas) if s is None]
            for i, sha in zip(misses, pool.map(hash_file, [chunk[i] for i in misses]),
                              strict=True):
                shas[i] = sha
            plan.hashed += len(misses)
            ledger.cache_hashes([(stats[i], shas[i]) for i in misses
                                 if shas[i] and stats[i] and now - stats[i].st_mtime_ns > RACY_NS])
            keys = [sha or f"path:{display_path(p)}" for p, sha in zip(chunk, shas, strict=True)]
            stored = ledger.get_rows(keys, model_id)
            for path, key in zip(chunk, keys, strict=True):
                plan.keys[display_path(path)] = key
                if key not in queued and needs_scoring(stored.get(key)):
                    queued.add(key)
                    plan.todo.append(path)
    return plan


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


class LedgerSink:
    """Commits each batch of result rows to the ledger under the planned keys."""

    def __init__(self, ledger: Ledger, run_id: int, plan: Plan, bar: Any = None) -> None:
        self.ledger, self.run_id, self.plan, self.bar = ledger, run_id, plan, bar

    def write(self, rows: list[dict[str, Any]]) -> None:
        keys = []
        for row in rows:
            planned = self.plan.keys[row["path"]]
            if row["sha256"] and row["sha256"] != planned:  # the file changed since planning
                self.plan.keys[row["path"]] = row["sha256"]
            elif not row["sha256"] and not planned.startswith("path:"):
                row["sha256"] = planned  # a timeout/crash row: the worker never said
            keys.append(self.plan.keys[row["path"]])
        self.ledger.put_rows(rows, keys, self.run_id, DICOM_COLUMNS)
        if self.bar is not None:
            self.bar.update(len(rows))


@dataclass
class ExportTally:
    rows: int = 0
    failed_by_kind: Counter = field(default_factory=Counter)
    missing: int = 0


def export_rows(ledger: Ledger, paths: list[str], plan: Plan, model_id: str,
                labels: dict[str, str] | None, tally: ExportTally) -> Iterator[dict[str, Any]]:
    """One result row per file, from the ledger, in folder order (streamed in chunks)."""
    import json

    for start in range(0, len(paths), _CHUNK):
        chunk = paths[start:start + _CHUNK]
        shown = [display_path(p) for p in chunk]
        stored = ledger.get_rows([plan.keys[s] for s in shown], model_id)
        for path, name in zip(chunk, shown, strict=True):
            row = stored.get(plan.keys[name])
            if row is None:
                tally.missing += 1
                log.warning("no ledger row for %s", name)
                continue
            out = {**row, **json.loads(row["extra"] or "{}"), "path": name,
                   "model_id": model_id, RUN_COLUMN: row["run_id"]}
            if labels is not None:
                out[LABEL_COLUMN] = labels.get(path, "")
            if out["status"] != "ok":
                tally.failed_by_kind[out["error_kind"]] += 1
            tally.rows += 1
            yield out


@contextmanager
def backend_context(backend: str, scheduler: str | None) -> Iterator[None]:
    """joblib's default (loky) or its Dask backend on the cluster at ``scheduler``."""
    if backend != "dask":
        yield
        return
    import joblib
    from distributed import Client

    with Client(scheduler) as client, joblib.parallel_config(backend="dask"):
        log.info("running on the Dask cluster at %s (%d worker thread(s))", scheduler,
                 sum(client.nthreads().values()))
        yield


def progress_bar(total: int) -> Any:
    """A tqdm bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        return nullcontext()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, leave=False)


def run_job(bundle: Any, job: Job) -> tuple[dict[str, Any], int]:
    """Run ``job`` under its lock; returns the JSON summary and the exit code."""
    from .datasets import is_labeled, label_of_path
    from .images import discover
    from .scoring import has_dicom

    started = time.perf_counter()
    root = job.folder
    paths = select_part([str(p) for p in discover(root)], root, job.num_parts, job.part_id)
    labels = ({p: label_of_path(p, root) or "" for p in paths}
              if root.is_dir() and is_labeled(root) else None)
    columns = (COLUMNS + ([LABEL_COLUMN] if labels is not None else [])
               + (DICOM_COLUMNS if has_dicom(paths) else []) + [RUN_COLUMN])
    with RunLock(lock_path(job.ledger, job.num_parts, job.part_id)):
        ledger = Ledger(job.ledger)
        run_id = ledger.start_run(str(root), bundle.model_id, job.argv, job.part)
        summary: dict[str, Any] = {"run_id": run_id, "ledger": str(job.ledger)}
        code = ExitCode.INTERNAL
        try:
            plan = make_plan(ledger, paths, bundle.model_id)
            log.info("%d file(s) in %s (part %s): %d to score, stat cache hits %d, hashed %d",
                     len(paths), root, job.part, len(plan.todo), plan.stat_hits, plan.hashed)
            stats = RunStats()
            runtime = None  # nothing to score: no model is loaded
            if plan.todo:
                scorer = BatchScorer(bundle, n_jobs=job.n_jobs, timeout=job.timeout,
                                     batch_size=job.batch_size, **job.predictor_kwargs)
                with backend_context(job.backend, job.scheduler), \
                        progress_bar(len(plan.todo)) as bar:
                    scorer.run(plan.todo, LedgerSink(ledger, run_id, plan, bar), None, stats)
                runtime = getattr(scorer.predictor, "runtime", None)
            tally = ExportTally()
            write_atomic(job.out, columns,
                         export_rows(ledger, paths, plan, bundle.model_id, labels, tally),
                         job.fmt)
            code = ExitCode.SOME_FAILED if tally.failed_by_kind else ExitCode.OK
            summary.update(_summary(job, bundle.model_id, len(paths), plan, stats, tally,
                                    time.perf_counter() - started))
            summary["model_runtime"] = runtime
        except KeyboardInterrupt:
            code = 130
            raise
        finally:
            ledger.end_run(run_id, summary, code)
            ledger.close()
    return summary, code


def _summary(job: Job, model_id: str, n_files: int, plan: Plan, stats: RunStats,
             tally: ExportTally, seconds: float) -> dict[str, Any]:
    scored = stats.n_ok + stats.n_error
    return {
        "out": str(job.out), "format": job.fmt, "model_id": model_id, "part": job.part,
        "files": n_files, "scored": stats.n_ok, "errors": stats.n_error,
        "reused": n_files - scored, "skipped": n_files - scored,
        "errors_by_kind": dict(stats.errors_by_kind),
        "rows": tally.rows, "failed_rows": sum(tally.failed_by_kind.values()),
        "failed_by_kind": dict(tally.failed_by_kind),
        "stat_cache_hits": plan.stat_hits, "hashed": plan.hashed,
        "scoring_seconds": round(stats.seconds, 3),
        "images_per_second": round(stats.images_per_second, 2), "seconds": round(seconds, 3),
    }
