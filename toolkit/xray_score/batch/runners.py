"""Where ``batch`` sends its chunks: local worker processes (joblib/loky) or a Dask cluster.

Both run a :class:`~xray_score.batch.chunks.ChunkTask` on chunks of files and yield
:class:`~xray_score.batch.chunks.ChunkResult` in completion order, with a bounded number of
chunks in flight (backpressure: ten million files never become ten million futures). They
differ only in how they survive a worker that dies:

- a chunk whose worker dies is run again on its own; if that kills its worker too, its files
  are run one at a time, and the file that kills a worker on its own becomes a ``worker_crash``
  row (Dask: after the scheduler's own retries, ``distributed.scheduler.allowed-failures``,
  and one more task of its own: the scheduler also blames tasks that merely waited on a dying
  worker, fewer with ``distributed.scheduler.worker-saturation: 1.0``);
- a file that hangs in decoding is a ``timeout`` row from the worker's own watchdog; the other
  files of its chunk come back ``unfinished`` and are sent again. A chunk whose features or
  model hang (past :meth:`~xray_score.batch.chunks.ChunkTask.finish_limit`) sends its decoded
  files back as ``suspects``, each sent again on its own; one that hangs on its own is a
  ``timeout`` row.
  On Dask the worker that hung is then restarted, which ends the abandoned thread; a local
  worker keeps it (idle or not) until the run ends;
- a hang the watchdog cannot see (one that holds Python's GIL, or one in loading the model)
  meets the backstop (:func:`backstop_seconds`): a local runner kills its workers when no chunk
  has finished for that long; on Dask each task carries it as its ``hard_limit``, past which
  the worker process ends itself (:mod:`~xray_score.batch.hardlimit`), and a death after that
  limit counts as a hang: the file that does it alone is a ``timeout`` row.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ..errors import ErrorKind, TaskFailure
from .chunks import ChunkResult, ChunkTask, failure_result

log = logging.getLogger(__name__)

CHUNKS_PER_WORKER = 4  # at least this many chunks per worker thread, for balance
QUANTUM = 32  # chunks above this are multiples of it: networks run in batches of 32
# A Dask task costs the scheduler and the calling process a few milliseconds of CPU each
# (messages, state transitions, a ledger commit), taken from the cores the workers score on:
# a task carries up to this many model batches (256 files at the default batch size), and
# still shrinks towards the end of a run. Local chunks are one batch: their IPC is cheap.
BATCHES_PER_DASK_TASK = 4


class Runner(Protocol):
    def run(self, task: ChunkTask, paths: list[str]) -> Iterator[ChunkResult]: ...


def _quantized(n: int) -> int:
    return n - n % QUANTUM if n > QUANTUM else n


def chunk_size(n_files: int, batch_size: int, workers: int) -> int:
    """Files per task: ``batch_size`` (one model batch locally, several on Dask), fewer when
    that would leave workers idle (a multiple of 32 above 32, so that no network batch is
    padded)."""
    wanted = -(-n_files // (CHUNKS_PER_WORKER * max(1, workers)))
    return max(1, _quantized(min(int(batch_size), wanted)))


def chunked(paths: list[str], size: int, workers: int = 1, smallest: int = 4
            ) -> deque[list[str]]:
    """Chunks of ``size`` files, shrinking towards the end (to ``smallest``) so that the
    workers finish together: no worker sits idle while another scores a last long chunk."""
    out: deque[list[str]] = deque()
    at, n = 0, len(paths)
    while at < n:
        left = -(-(n - at) // (2 * max(1, workers)))
        step = max(1, _quantized(min(int(size), max(smallest, left))))
        out.append(paths[at:at + step])
        at += step
    return out


def backstop_seconds(task: ChunkTask, size: int, given: float | None = None) -> float | None:
    """A last-resort limit per chunk of ``size`` files, for a hang the worker's watchdog
    cannot see: ``given`` (a runner's ``backstop=``), else ``timeout * (size + 2) + 60``
    (none without a timeout)."""
    if given is not None:
        return given
    return task.timeout * (size + 2) + 60 if task.timeout else None


CRASH_MESSAGE = "the worker process died while scoring this file on its own"


def convicted(path: str, failure: TaskFailure) -> ChunkResult:
    """The row of a file that broke its worker when scored on its own (the caller turns the
    FileResult into a row): ``timeout`` with the limit it ran past, or ``worker_crash`` with
    one message on every backend (the detail, which differs by backend, goes to the log)."""
    if failure.kind is ErrorKind.TIMEOUT:
        log.warning("%s: %s", path, failure.message)
        return ChunkResult(rows=[], failures=[failure_result(path, failure.kind,
                                                             failure.message)])
    log.warning("%s: %s (%s)", path, CRASH_MESSAGE, failure.message)
    return ChunkResult(rows=[], failures=[failure_result(path, ErrorKind.WORKER_CRASH,
                                                         CRASH_MESSAGE)])


RunAlone = Callable[[list[str]], Iterator["ChunkResult | TaskFailure"]]


def one_at_a_time(chunk: list[str], failure: TaskFailure, run_alone: RunAlone
                  ) -> Iterator[ChunkResult]:
    """What the local runners do with a chunk that broke its worker again when run on its own
    (``failure``): a single file is convicted; otherwise its files run one at a time
    (``run_alone``: a one-file task on a worker of its own, its results or its failure), and
    a file that breaks its worker on its own is convicted."""
    if len(chunk) == 1:
        yield convicted(chunk[0], failure)
        return
    log.warning("a chunk of %d files broke its worker twice (%s); scoring them one at a "
                "time", len(chunk), failure.kind.value)
    for path in chunk:
        for outcome in run_alone([path]):
            yield convicted(path, outcome) if isinstance(outcome, TaskFailure) else outcome


class LocalRunner:
    """Chunks on joblib's local worker processes (loky); workers exit with this process.

    ``backstop``: seconds a chunk may take before its workers are killed (default:
    ``timeout * (chunk size + 2) + 60``; none without a timeout)."""

    def __init__(self, n_jobs: int = 2, backstop: float | None = None) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self.backstop = backstop

    def run(self, task: ChunkTask, paths: list[str]) -> Iterator[ChunkResult]:
        from .parallel import resilient_map  # joblib: only for this runner

        size = chunk_size(len(paths), task.batch_size, self.n_jobs)
        queue = chunked(paths, size, self.n_jobs)
        backstop = backstop_seconds(task, size, self.backstop)
        while queue:
            chunks, leftovers = list(queue), []
            queue.clear()
            for _, chunk, outcome in resilient_map(task, chunks, n_jobs=self.n_jobs,
                                                   timeout=backstop):
                if isinstance(outcome, TaskFailure):  # it broke its worker, then again alone
                    yield from one_at_a_time(chunk, outcome,
                                             lambda one: self._alone(task, one, backstop))
                    continue
                yield outcome
                leftovers.extend(outcome.resend())
            queue.extend(leftovers)

    @staticmethod
    def _alone(task: ChunkTask, paths: list[str], backstop: float | None
               ) -> Iterator[ChunkResult | TaskFailure]:
        from .parallel import resilient_map

        for _, _, outcome in resilient_map(task, [paths], n_jobs=1, timeout=backstop):
            yield outcome


class DaskRunner:
    """Chunks on a Dask cluster: every worker reads, decodes, scores and returns rows.

    ``backstop``: seconds a task may run before its worker process ends itself (default:
    :func:`backstop_seconds` for the task's size; none without a timeout)."""

    def __init__(self, client: Any, in_flight: int | None = None,
                 backstop: float | None = None) -> None:
        self.client = client
        self.threads = sum(client.nthreads().values()) or 1
        self.in_flight = int(in_flight or 2 * self.threads + 2)
        self.backstop = backstop
        self.restarted: list[str] = []
        self.peak_in_flight = 0

    def run(self, task: ChunkTask, paths: list[str]) -> Iterator[ChunkResult]:
        from distributed import as_completed

        files = task.batch_size * BATCHES_PER_DASK_TASK
        queue = chunked(paths, chunk_size(len(paths), files, self.threads), self.threads)
        running: dict[str, tuple[list[str], float | None, float]] = {}  # chunk, limit, sent
        alone: dict[str, int] = {}  # single-file tasks whose workers died, by file
        done = as_completed()

        def submit() -> None:
            while queue and len(running) < self.in_flight:
                chunk = queue.popleft()
                limit = backstop_seconds(task, len(chunk), self.backstop)
                future = self.client.submit(dataclasses.replace(task, hard_limit=limit),
                                            chunk, pure=False)
                running[future.key] = chunk, limit, time.monotonic()
                done.add(future)

        submit()
        self.peak_in_flight = len(running)
        for future in done:
            chunk, limit, sent = running.pop(future.key)
            try:
                outcome: ChunkResult | BaseException = future.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker and friends
                if not _worker_died(exc):
                    raise
                outcome = exc
            finally:  # before any restart: a result still wanted would be computed again
                future.release()
            if isinstance(outcome, BaseException):
                yield from self._died(chunk, _death(outcome, limit, time.monotonic() - sent),
                                      queue, alone)
            else:
                yield outcome
                queue.extendleft(reversed(outcome.resend()))
                if outcome.hung and outcome.worker:
                    self._restart(outcome.worker)
            submit()
            self.peak_in_flight = max(self.peak_in_flight, len(running))

    @staticmethod
    def _died(chunk: list[str], failure: TaskFailure, queue: deque[list[str]],
              alone: dict[str, int]) -> Iterator[ChunkResult]:
        """A chunk whose worker died: its files again one at a time; a single file is
        convicted when it kills its workers in two separate tasks (a task queued on a dying
        worker counts as a suspect too)."""
        if len(chunk) > 1:
            log.warning("a chunk of %d files killed its workers (%s); scoring them one at a "
                        "time", len(chunk), failure.message)
            queue.extendleft([p] for p in reversed(chunk))
            return
        alone[chunk[0]] = alone.get(chunk[0], 0) + 1
        if alone[chunk[0]] < 2:
            queue.append(chunk)
        else:
            yield convicted(chunk[0], failure)

    def _restart(self, address: str) -> None:
        """End a worker's abandoned (hung) thread by restarting the worker process."""
        try:
            self.client.restart_workers([address], raise_for_error=False)
            self.restarted.append(address)
            log.info("restarted Dask worker %s after a hung file", address)
        except Exception as exc:  # noqa: BLE001 - the row is written; this is housekeeping
            log.warning("could not restart Dask worker %s after a hung file: %s", address, exc)


def _death(exc: BaseException, limit: float | None, ran: float) -> TaskFailure:
    """A Dask task whose worker died: a hang if it ran past its hard limit (the worker ended
    itself), else a crash."""
    if limit and ran >= limit:
        return TaskFailure(ErrorKind.TIMEOUT, f"no result after {limit:g} s; the worker's hard "
                           "limit ended its process")
    return TaskFailure(ErrorKind.WORKER_CRASH, type(exc).__name__)


def _worker_died(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in {"KilledWorker", "CommClosedError", "FutureCancelledError"}
