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

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExitCode
from ..io.atomic import write_atomic
from ..io.text import display_path
from .drift import ScoredSummary, check_run
from .ledger import Ledger
from .locking import RunLock, lock_path, out_lock_path
from .plan import Plan, make_plan, select_part
from .scorer import EXTRA_COLUMNS, LABEL_COLUMN, BatchScorer, RunStats, result_columns

log = logging.getLogger(__name__)

RUN_COLUMN = "scored_in_run"
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
    keep_rows: bool = False  # hand the exported rows back (the HTML run summary reads them)

    @property
    def part(self) -> str:
        return f"{self.part_id}/{self.num_parts}"


class LedgerSink:
    """Commits each batch of result rows to the ledger under the planned keys."""

    def __init__(self, ledger: Ledger, run_id: int, plan: Plan, bar: Any = None) -> None:
        self.ledger, self.run_id, self.plan, self.bar = ledger, run_id, plan, bar
        self.scored = ScoredSummary()  # what this run scored, for the drift check

    def write(self, rows: list[dict[str, Any]]) -> None:
        keys = []
        for row in rows:
            planned = self.plan.keys[row["path"]]
            if row["sha256"] and row["sha256"] != planned:  # the file changed since planning
                self.plan.keys[row["path"]] = row["sha256"]
            elif not row["sha256"] and not planned.startswith("path:"):
                row["sha256"] = planned  # a timeout/crash row: the worker never said
            keys.append(self.plan.keys[row["path"]])
        self.ledger.put_rows(rows, keys, self.run_id, EXTRA_COLUMNS)
        self.scored.add(rows)
        if self.bar is not None:
            self.bar.update(len(rows))


@dataclass
class ExportTally:
    rows: int = 0
    failed_by_kind: Counter = field(default_factory=Counter)
    missing: int = 0
    out_of_domain: int = 0


def export_rows(ledger: Ledger, paths: list[str], plan: Plan, model_id: str,
                labels: dict[str, str] | None, tally: ExportTally) -> Iterator[dict[str, Any]]:
    """One result row per file, from the ledger, in folder order (streamed in chunks)."""
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
            tally.out_of_domain += out.get("in_domain") == "false"
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


@dataclass
class JobResult:
    """What :func:`run_job` gives back: the JSON summary, the exit code, the exported rows
    (when ``Job.keep_rows``) and their columns."""

    summary: dict[str, Any]
    code: int
    rows: list[dict[str, Any]] | None
    columns: list[str]
    trend: list[dict[str, Any]] = field(default_factory=list)  # recent runs' scored summaries


def run_job(bundle: Any, job: Job) -> JobResult:
    """Run ``job`` under its lock."""
    from ..io.datasets import folder_labels
    from ..io.discover import discover, has_dicom

    started = time.perf_counter()
    kept: list[dict[str, Any]] = []
    root = job.folder
    paths = select_part([str(p) for p in discover(root)], root, job.num_parts, job.part_id)
    if not paths:
        log.warning("no images found in %s%s", root,
                    f" (part {job.part})" if job.num_parts > 1 else "")
    labels = folder_labels(root, paths) if root.is_dir() else None
    columns = result_columns(bundle, labels is not None, has_dicom(paths)) + [RUN_COLUMN]
    with RunLock(lock_path(job.ledger, job.num_parts, job.part_id),
                 f"the ledger {job.ledger} (part {job.part})"), \
            RunLock(out_lock_path(job.out), f"the results file {job.out}"):
        ledger = Ledger(job.ledger)
        run_id = ledger.start_run(str(root), bundle.model_id, job.argv, job.part)
        summary: dict[str, Any] = {"run_id": run_id, "ledger": str(job.ledger)}
        code, state = ExitCode.INTERNAL, "failed"
        stats = RunStats()
        try:
            plan = make_plan(ledger, paths, bundle.model_id)
            log.info("%d file(s) in %s (part %s): %d to score, stat cache hits %d, hashed %d",
                     len(paths), root, job.part, len(plan.todo), plan.stat_hits, plan.hashed)
            runtime = None  # nothing to score: no model is loaded
            drift = None
            if plan.todo:
                scorer = BatchScorer(bundle, n_jobs=job.n_jobs, timeout=job.timeout,
                                     batch_size=job.batch_size, **job.predictor_kwargs)
                with backend_context(job.backend, job.scheduler), \
                        progress_bar(len(plan.todo)) as bar:
                    sink = LedgerSink(ledger, run_id, plan, bar)
                    scorer.run(plan.todo, sink, None, stats)
                runtime = getattr(scorer.predictor, "runtime", None)
                if sink.scored.n:  # a run that scored nothing adds no point
                    summary["scored_summary"] = sink.scored.as_dict()
                    drift = check_run(ledger, run_id, bundle.model_id, sink.scored,
                                      bundle.meta.get("reference_scores"))
                    if drift:
                        log.warning("drift: %s", ", ".join(
                            f"{k} {v['run']:.3g} vs {v['reference']:.3g} (p {v['p']:.2g})"
                            for k, v in drift.items() if isinstance(v, dict)))
            tally = ExportTally()
            exported = export_rows(ledger, paths, plan, bundle.model_id, labels, tally)
            if job.keep_rows:
                exported = _tee(exported, kept)
            write_atomic(job.out, columns, exported, job.fmt)
            code = ExitCode.SOME_FAILED if tally.failed_by_kind else ExitCode.OK
            summary.update(_summary(job, bundle.model_id, len(paths), plan, stats, tally,
                                    time.perf_counter() - started))
            summary["model_runtime"] = runtime
            summary["drift"] = drift
            trend = recent_trend(ledger, bundle.model_id, run_id, summary)
            state = "done"
        except KeyboardInterrupt as exc:
            code, state = getattr(exc, "exit_code", 130), "interrupted"
            name = getattr(exc, "name", "SIGINT")
            summary.update(interrupted=name, scored=stats.n_ok, errors=stats.n_error)
            log.warning("interrupted by %s: %d file(s) scored in this run are committed to %s; "
                        "%s was not rewritten; the same command resumes", name,
                        stats.n_ok + stats.n_error, job.ledger, job.out)
            exc.summary = summary  # type: ignore[attr-defined]
            raise
        finally:
            ledger.end_run(run_id, summary, code, state)
            ledger.close()
    return JobResult(summary, code, kept if job.keep_rows else None, columns, trend)


def recent_trend(ledger: Ledger, model_id: str, run_id: int, summary: dict[str, Any],
                 limit: int = 30) -> list[dict[str, Any]]:
    """The scored summaries of the latest runs (oldest first), this one last if it scored."""
    points = []
    for counts in reversed(ledger.recent_counts(model_id, run_id, limit)):
        past = json.loads(counts)
        if past.get("scored_summary"):
            points.append({**past["scored_summary"], "run_id": past.get("run_id")})
    if summary.get("scored_summary"):
        points.append({**summary["scored_summary"], "run_id": run_id})
    return points


def _tee(rows: Iterator[dict[str, Any]], into: list[dict[str, Any]]
         ) -> Iterator[dict[str, Any]]:
    for row in rows:
        into.append(row)
        yield row


def _summary(job: Job, model_id: str, n_files: int, plan: Plan, stats: RunStats,
             tally: ExportTally, seconds: float) -> dict[str, Any]:
    scored = stats.n_ok + stats.n_error
    return {
        "out": str(job.out), "format": job.fmt, "model_id": model_id, "part": job.part,
        "files": n_files, "scored": stats.n_ok, "errors": stats.n_error,
        "reused": n_files - scored,
        "errors_by_kind": dict(stats.errors_by_kind),
        "out_of_domain": stats.n_out_of_domain, "out_of_domain_rows": tally.out_of_domain,
        "rows": tally.rows, "failed_rows": sum(tally.failed_by_kind.values()),
        "failed_by_kind": dict(tally.failed_by_kind),
        "stat_cache_hits": plan.stat_hits, "hashed": plan.hashed,
        "scoring_seconds": round(stats.seconds, 3),
        "images_per_second_including_startup": stats.images_per_second_including_startup,
        "images_per_second_after_startup": stats.images_per_second_after_startup,
        "seconds": round(seconds, 3),
    }
