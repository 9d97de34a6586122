"""``batch`` at nightly scale: score only what changed, record it in the ledger, export the folder.

A run: discover the folder (and keep this shard's part) -> plan: each file's sha256 from the
ledger's stat cache when (device, inode, size, mtime_ns) match, and the files to score: those
whose content the ledger has no usable row for (new, changed, or a transient error) and those
not in the stat cache -> score them in chunks on the workers (:mod:`xray_score.batch.runners`:
local processes or a Dask cluster; each worker reads, hashes, decodes, predicts and returns
rows), committing rows chunk by chunk (a row for content the ledger already knows is dropped:
the old one stands) -> export one row per file currently in the folder (part) to ``--out``,
atomically. This process never reads an image.

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
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExitCode, UsageError
from ..io.atomic import write_atomic
from .drift import check_run
from .ledger import Ledger
from .locking import RunLock, lock_path, out_lock_path
from .plan import Plan, make_plan, select_part
from .scorer import RunStats, result_columns
from .sink import RUN_COLUMN, ExportTally, LedgerSink, export_rows

log = logging.getLogger(__name__)



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
    backend: str = "auto"  # auto (fork on Linux, else loky), fork, loky or dask
    scheduler: str | None = None
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    keep_rows: bool = False  # hand the exported rows back (the HTML run summary reads them)

    @property
    def part(self) -> str:
        return f"{self.part_id}/{self.num_parts}"


@contextmanager
def open_runner(job: Job) -> Iterator[Any]:
    """Local worker processes (forked where that is safe, else loky), or the Dask cluster at
    ``job.scheduler``."""
    from .processes import local_runner
    from .runners import DaskRunner

    if job.backend != "dask":
        yield local_runner(job.n_jobs, job.backend)
        return
    from distributed import Client

    with Client(job.scheduler) as client:
        threads = sum(client.nthreads().values())
        if not threads:
            raise UsageError(f"the Dask cluster at {job.scheduler} has no workers")
        log.info("scoring on the Dask cluster at %s (%d worker thread(s))", job.scheduler,
                 threads)
        yield DaskRunner(client, in_flight=job.n_jobs if job.n_jobs > 0 else None)


def progress_bar(total: int) -> Any:
    """A tqdm bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        return nullcontext()
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: local workers are forked from this process
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
    from ..io.discover import discover_files, has_dicom

    started = time.perf_counter()
    kept: list[dict[str, Any]] = []
    root = job.folder
    paths = select_part(discover_files(root), root, job.num_parts, job.part_id)
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
            log.info("%d file(s) in %s (part %s): %d to score (%d not in the stat cache), "
                     "stat cache hits %d", len(paths), root, job.part, len(plan.todo),
                     len(plan.unknown), plan.stat_hits)
            runtime = None  # nothing to score: no model is loaded
            drift = None
            sink = LedgerSink(ledger, run_id, plan)
            if plan.todo:
                stats.n_files = len(plan.todo)
                runtime = score_todo(bundle, job, plan, sink, stats)
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
            summary.update(_summary(job, bundle.model_id, len(paths), plan, sink, stats, tally,
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


def score_todo(bundle: Any, job: Job, plan: Plan, sink: LedgerSink, stats: RunStats
               ) -> str | None:
    """Score the plan's files on the job's workers, committing rows as chunks come back;
    returns what ran the model."""
    from ..model.kinds import registered_elsewhere
    from .chunks import ChunkTask
    from .scorer import BatchScorer

    task = ChunkTask(bundle_path=str(bundle.path.resolve()), model_id=bundle.model_id,
                     timeout=job.timeout, batch_size=job.batch_size, threads=1,
                     kinds=registered_elsewhere(),
                     log_level=logging.getLogger("xray_score").getEffectiveLevel(),
                     kind=bundle.kind, **job.predictor_kwargs)
    rows_of = BatchScorer(bundle)  # rows for files that killed their worker (no model needed)
    runtime, start, last_log = None, time.perf_counter(), time.perf_counter()
    with open_runner(job) as runner, progress_bar(len(plan.todo)) as bar:
        sink.bar = bar
        for result in runner.run(task, plan.todo):
            rows = result.rows + [row for f in result.failures for row in rows_of.rows([f])]
            stats.record(sink.write(rows), time.perf_counter() - start)
            stats.bytes_received += result.nbytes
            if runtime is None and result.runtime:
                runtime = result.runtime
                log.info("the model runs in each worker on %s", runtime)
            if time.perf_counter() - last_log > 10:
                last_log = time.perf_counter()
                log.info("%d/%d files done", sink.done, len(plan.todo))
    stats.seconds += time.perf_counter() - start
    return runtime


def _summary(job: Job, model_id: str, n_files: int, plan: Plan, sink: LedgerSink,
             stats: RunStats, tally: ExportTally, seconds: float) -> dict[str, Any]:
    scored = stats.n_ok + stats.n_error
    return {
        "out": str(job.out), "format": job.fmt, "model_id": model_id, "part": job.part,
        "files": n_files, "scored": stats.n_ok, "errors": stats.n_error,
        "reused": n_files - scored,
        "errors_by_kind": dict(stats.errors_by_kind),
        "out_of_domain": stats.n_out_of_domain, "out_of_domain_rows": tally.out_of_domain,
        "rows": tally.rows, "failed_rows": sum(tally.failed_by_kind.values()),
        "failed_by_kind": dict(tally.failed_by_kind),
        "stat_cache_hits": plan.stat_hits, "hashed": sink.learned,
        "known_content": sink.known,
        "result_bytes_per_file": round(stats.bytes_received / sink.done) if sink.done else None,
        "scoring_seconds": round(stats.seconds, 3),
        "images_per_second_including_startup": stats.images_per_second_including_startup,
        "images_per_second_after_startup": stats.images_per_second_after_startup,
        "seconds": round(seconds, 3),
    }
