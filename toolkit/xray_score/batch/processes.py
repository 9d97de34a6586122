"""Chunks on worker processes forked from the calling process (the default local runner on
Linux).

A forked worker is ready in milliseconds with the caller's imports (NumPy, OpenCV, the chunk
code) already in memory; a loky worker is a fresh interpreter that imports them again (about
0.3-0.5 s of CPU per worker per run, a fifth of a 2,500-file baseline run on 2 cores). The
caller imports no TensorFlow, LightGBM or scikit-learn and starts no thread pool before it
forks; each worker loads and verifies the bundle itself, as a loky or Dask worker does.

What a worker must not inherit is dropped as it starts: the run's locks
(:func:`xray_score.batch.locking.drop_inherited_locks`, registered with
``os.register_at_fork``), the caller's signal handlers (a worker ignores SIGINT and dies on
SIGTERM; the caller stops the run), and its life after the caller (:func:`die_with_parent`).

Survival is the loky runner's: a chunk whose worker dies is run again on its own; if it kills
its worker again, its files run one at a time and the file that kills a worker on its own
becomes a ``worker_crash`` row. A hang the worker's watchdog cannot see (one that holds
Python's GIL, or one in loading the model) is cut by a backstop: no chunk finished for
``backstop`` seconds -> the workers are killed and the chunks in flight are treated as crashed
(a chunk that hangs alone becomes ``timeout`` rows).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import ErrorKind, TaskFailure, UsageError
from .chunks import ChunkResult, ChunkTask
from .lifeline import die_with_parent
from .runners import LocalRunner, backstop_seconds, chunk_size, chunked, one_at_a_time

log = logging.getLogger(__name__)


# Libraries whose thread pools do not survive a fork: a worker forked from a process that has
# loaded one deadlocks as soon as it uses it (seen with TensorFlow in a test process).
FORK_UNSAFE_MODULES = ("tensorflow", "torch", "jax")


def fork_available() -> bool:
    """Whether worker processes can be forked safely here: Linux (macOS system libraries are
    not fork-safe), no fork-unsafe library loaded and no other Python thread (the
    ``xray-score`` command has neither when it forks; a notebook or test process may)."""
    return (sys.platform.startswith("linux")
            and "fork" in multiprocessing.get_all_start_methods()
            and not fork_blockers())


def fork_blockers() -> list[str]:
    """What makes forking unsafe in this process: the fork-unsafe libraries it has loaded, and
    its other Python threads (a child inherits only the forking thread, and a lock another
    thread held stays held in the child: a Jupyter kernel's threads and sockets, a Dask
    client's event loop). Native pools of the libraries ``batch`` uses are fork-safe
    (OpenBLAS) or not started (``batch`` runs BLAS single-threaded)."""
    blockers = [f"loaded {name}" for name in FORK_UNSAFE_MODULES if name in sys.modules]
    others = threading.active_count() - 1
    if others > 0:
        blockers.append(f"{others} other thread{'s' if others > 1 else ''} running")
    return blockers


def local_runner(n_jobs: int = 2, backend: str = "auto") -> ProcessRunner | LocalRunner:
    """``batch``'s local runner: ``fork`` (refused where it is unsafe), ``loky``, or ``auto``:
    forked workers where that is safe, else loky's fresh interpreters."""
    if backend == "loky" or (backend == "auto" and not fork_available()):
        return LocalRunner(n_jobs)
    if not fork_available():
        blockers = fork_blockers()
        why = f"this process has {', '.join(blockers)}" if blockers else "it needs Linux"
        raise UsageError(f"--backend fork is not safe here ({why}); use --backend loky")
    return ProcessRunner(n_jobs)


def _worker_start(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run in the caller
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent_pid)


class _Hung(Exception):
    """No chunk finished within the backstop: the workers were killed."""


class ProcessRunner:
    """Chunks on ``n_jobs`` forked worker processes; workers exit with this process.

    ``backstop``: seconds without a finished chunk before the workers are killed (default:
    the loky runner's, ``timeout * (chunk size + 2) + 60``; none without a timeout)."""

    def __init__(self, n_jobs: int = 2, backstop: float | None = None) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self.backstop = backstop

    def run(self, task: ChunkTask, paths: list[str]) -> Iterator[ChunkResult]:
        size = chunk_size(len(paths), task.batch_size, self.n_jobs)
        queue = chunked(paths, size, self.n_jobs)
        backstop = backstop_seconds(task, size, self.backstop)
        suspects: list[tuple[list[str], TaskFailure]] = []
        task.preload()  # once here rather than in every worker
        yield from self._map(task, queue, self.n_jobs, backstop, suspects)
        for chunk, _ in suspects:  # chunks in flight when a worker died or hung: each alone
            yield from self._alone(task, chunk, backstop)

    def _alone(self, task: ChunkTask, chunk: list[str], backstop: float | None
               ) -> Iterator[ChunkResult]:
        """``chunk`` on a worker of its own; what it left when it broke that worker too runs
        one file at a time (a single file that breaks its worker is convicted)."""
        broke: list[tuple[list[str], TaskFailure]] = []
        yield from self._map(task, deque([chunk]), 1, backstop, broke)
        for rest, failure in broke:
            yield from one_at_a_time(rest, failure,
                                     lambda one: self._alone(task, one, backstop))

    def _map(self, task: ChunkTask, queue: deque[list[str]], workers: int,
             backstop: float | None, broke: list[tuple[list[str], TaskFailure]]
             ) -> Iterator[ChunkResult]:
        """Run ``queue``'s chunks on a fresh pool of ``workers``; chunks lost to a dead or
        killed worker go to ``broke`` with the failure (the rest of the queue runs on a new
        pool)."""
        while queue:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_worker_start, initargs=(os.getpid(),))
            running: dict[Future, list[str]] = {}
            finished = False
            try:
                yield from self._drain(pool, task, queue, workers, backstop, running)
                finished = True
            except (BrokenProcessPool, _Hung) as exc:
                hung = isinstance(exc, _Hung)
                failure = (TaskFailure(ErrorKind.TIMEOUT,
                                       f"no result after {backstop:g} s; worker killed")
                           if hung else TaskFailure(ErrorKind.WORKER_CRASH, "BrokenProcessPool"))
                log.warning("a worker process %s; %d chunk(s) in flight will be run again on "
                            "their own", "hung" if hung else "died", len(running))
                broke.extend((chunk, failure) for chunk in running.values())
            finally:
                if not finished:  # broken, or the run stops (a signal, an error): no waiting
                    _kill(pool)
                _shutdown(pool)

    def _drain(self, pool: ProcessPoolExecutor, task: ChunkTask, queue: deque[list[str]],
               workers: int, backstop: float | None, running: dict[Future, list[str]]
               ) -> Iterator[ChunkResult]:
        in_flight = 2 * workers
        last = time.monotonic()
        while queue or running:
            while queue and len(running) < in_flight:
                chunk = queue.popleft()
                running[pool.submit(task, chunk)] = chunk
            done, _ = wait(running, timeout=min(5.0, backstop or 5.0),
                           return_when=FIRST_COMPLETED)
            if not done:
                if backstop and time.monotonic() - last > backstop:
                    _kill(pool)
                    raise _Hung()
                continue
            last = time.monotonic()
            for future in done:
                result = future.result()  # BrokenProcessPool when a worker died
                del running[future]
                yield result
                queue.extendleft(reversed(result.resend()))


def _kill(pool: ProcessPoolExecutor) -> None:
    """SIGKILL the pool's workers (Python >= 3.14 has a method for it; before, its private
    table of processes is the only handle)."""
    kill_workers = getattr(pool, "kill_workers", None)
    if kill_workers is not None:
        with contextlib.suppress(Exception):
            kill_workers()
            return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):
            process.kill()


def _shutdown(pool: ProcessPoolExecutor) -> None:
    try:
        pool.shutdown(wait=True, cancel_futures=True)
    except Exception:  # noqa: BLE001 - a broken pool's shutdown can raise; nothing to keep
        log.debug("pool shutdown", exc_info=True)
