"""A worker process's last resort against a hang that no Python thread can see.

The chunk watchdog (:mod:`.watchdog`) needs Python's GIL to read its clock, and starts once the
model is loaded. A hang that holds the GIL (native code that never releases it), or one while
the bundle loads, stops it too; on a Dask cluster nothing else would end that task, and the
run would wait for ever. :func:`deadline` arms :mod:`faulthandler`'s timer, a C thread that
needs no GIL: past the earliest deadline of the tasks running in this process, it writes every
thread's traceback to stderr (the worker's log) and ends the process with exit code 1. The
nanny starts a fresh worker, the scheduler reports the task's worker dead, and the caller takes
it as a death after the task's limit: the file that does it alone gets a ``timeout`` row
(:class:`xray_score.batch.runners.DaskRunner`).

The local runners do not arm it: they kill their workers from the calling process (their
backstop). One timer serves a whole process, so the deadlines of its threads' tasks are kept
here and the earliest one is armed.
"""

from __future__ import annotations

import faulthandler
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_DEADLINES: dict[int, float] = {}
_TOKENS = itertools.count()


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """End this process if the block runs past ``seconds`` (None or 0: no limit)."""
    if not seconds:
        yield
        return
    token = next(_TOKENS)
    with _LOCK:
        _DEADLINES[token] = time.monotonic() + seconds
        _arm_earliest()
    try:
        yield
    finally:
        with _LOCK:
            del _DEADLINES[token]
            _arm_earliest()


def _arm_earliest() -> None:
    if not _DEADLINES:
        faulthandler.cancel_dump_traceback_later()
        return
    left = max(min(_DEADLINES.values()) - time.monotonic(), 0.001)
    faulthandler.dump_traceback_later(left, exit=True, file=_stderr_fd())


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        return 2
