"""A joblib map that survives hanging and crashing tasks.

joblib's ``timeout`` aborts the whole call and a worker killed by a segfault breaks the pool
(``TerminatedWorkerError``). :func:`resilient_map` keeps going: results stream back unordered as
they finish; when the pool breaks, the tasks that were in flight are re-run one at a time in a
fresh worker, so the culprit is pinned down (a ``timeout`` or ``worker_crash`` for that item
only) and the others are recomputed. Then the map resumes where it stopped.

The backend is joblib's active one (loky by default); ``batch --backend dask`` does not come
through here but through :class:`xray_score.batch.runners.DaskRunner`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from joblib import Parallel, delayed
from joblib.parallel import LokyBackend, get_active_backend

from ..errors import ErrorKind, TaskFailure
from .lifeline import die_with_parent

log = logging.getLogger(__name__)

__all__ = ["TaskFailure", "pool_broke", "resilient_map", "worker_backend"]

T = TypeVar("T")
R = TypeVar("R")


def worker_backend() -> Any:
    """The backend to run on: joblib's active one, except that local (loky) worker processes
    start :func:`die_with_parent` as they start, before any task reaches them."""
    backend, _ = get_active_backend()
    if isinstance(backend, LokyBackend):
        return LokyBackend(initializer=die_with_parent, initargs=(os.getpid(),))
    return None


def _indexed(func: Callable[[T], R], index: int, item: T) -> tuple[int, R]:
    return index, func(item)


def resilient_map(
    func: Callable[[T], R],
    items: Iterable[T],
    n_jobs: int = 2,
    timeout: float | None = 60.0,
    pre_dispatch: str = "2*n_jobs",
) -> Iterator[tuple[int, T, R | TaskFailure]]:
    """Yield ``(index, item, func(item) or TaskFailure)`` for every item, in completion order.

    ``func`` must handle its own ordinary errors (return them as values); only hangs (longer
    than ``timeout`` seconds) and worker deaths are turned into :class:`TaskFailure` here. An
    exception ``func`` raises (a bad bundle, a bug) is raised here, as joblib raises it.
    With ``n_jobs == 1`` and no timeout the map runs in this process (no crash protection).
    """
    source = iter(enumerate(items))
    in_flight: dict[int, T] = {}

    def feed() -> Iterator[Any]:
        for index, item in source:
            in_flight[index] = item
            yield delayed(_indexed)(func, index, item)

    if n_jobs == 1 and timeout is None:
        for index, item in source:
            yield index, item, func(item)
        return
    if n_jobs == 1:
        # joblib runs n_jobs=1 in this process and ignores the timeout: use a worker pool
        # but dispatch one task at a time, so a hang or crash is still caught.
        n_jobs, pre_dispatch = 2, "1"

    while True:
        runner = Parallel(
            n_jobs=n_jobs,
            backend=worker_backend(),
            timeout=timeout,
            return_as="generator_unordered",
            pre_dispatch=pre_dispatch,
        )
        try:
            for index, result in runner(feed()):
                yield index, in_flight.pop(index), result
            return
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - the pool broke: isolate what was in flight
            if not pool_broke(exc):
                raise
            suspects = sorted(in_flight.items())
            in_flight.clear()
            log.warning(
                "worker pool broke (%s); re-running %d in-flight item(s) one by one",
                type(exc).__name__,
                len(suspects),
            )
            for index, item in suspects:
                yield index, item, _run_isolated(func, item, timeout)


def pool_broke(exc: BaseException) -> bool:
    """Whether joblib raised ``exc`` because a worker died or a task timed out (rather than
    re-raising an exception of the task itself)."""
    name = type(exc).__name__
    return any(mark in name for mark in ("Terminated", "Killed", "BrokenProcessPool",
                                         "Timeout", "Pickling")) or isinstance(exc, EOFError)


def _run_isolated(func: Callable[[T], R], item: T, timeout: float | None) -> R | TaskFailure:
    """Run one task alone in a worker process, so a hang or crash is its own."""
    try:
        (result,) = Parallel(n_jobs=2, timeout=timeout, backend=worker_backend())(
            [delayed(func)(item)])
        return result
    except Exception as exc:  # noqa: BLE001 - TerminatedWorkerError, KilledWorker, pickling ...
        if not pool_broke(exc):
            raise
        name = type(exc).__name__
        if "Timeout" in name:  # builtin or multiprocessing TimeoutError
            return TaskFailure(ErrorKind.TIMEOUT, f"no result after {timeout:g} s; worker killed")
        if "Terminated" in name or "Killed" in name or "BrokenProcessPool" in name:
            return TaskFailure(ErrorKind.WORKER_CRASH, f"worker process died ({name})")
        return TaskFailure(ErrorKind.WORKER_CRASH, f"{name}: {exc}")
