"""A worker's watchdog: a chunk's work runs on a kept helper thread while the calling thread
watches the clock.

The helper decodes the chunk's files one by one, then (when given ``finish``) runs the chunk's
features and model. The watchdog gives each file's decoding ``timeout`` seconds and ``finish``
``finish_limit`` seconds; when one runs past its limit, the helper is abandoned where it is
stuck (a Python thread cannot be stopped: Dask restarts the worker, a local worker keeps it
until the run ends) and the calling thread reports where: :class:`Watched`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ErrorKind
from ..io.preprocess import FileResult

log = logging.getLogger(__name__)

_LOCAL = threading.local()
Finish = Callable[[list[FileResult]], list[dict[str, Any]]]


class _HelperThread:
    """A thread that runs chunk after chunk for one calling thread of one process.

    Started on first use and kept: a new thread per chunk cost ~0.14 ms on every file
    (``perf stat`` task-clock, 20 alternations of 1,280 files, against decoding in the calling
    thread; a kept thread: no measurable cost). A thread stuck on a hung file is retired (it
    ends if the file ever returns) and the next chunk starts another.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.retired = False
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="xray-score-chunk", daemon=True).start()

    def _serve(self) -> None:
        while not self.retired:
            job = self.jobs.get()
            try:
                job()
            except BaseException:  # noqa: BLE001 - the job hands its errors to its caller
                log.debug("chunk job failed", exc_info=True)


def _helper_thread() -> _HelperThread:
    """This calling thread's helper (a new one in a forked child: threads do not survive a
    fork)."""
    current = getattr(_LOCAL, "helper", None)
    if current is None or current.pid != os.getpid():
        current = _LOCAL.helper = _HelperThread()
    return current


@dataclass
class Watched:
    """What a watched chunk left.

    ``slots``: every file's result (decoded pixels, or its error); ``rows``: what ``finish``
    returned; ``stuck``: None when the work ended, else the index of the file whose decoding
    hung, or ``len(slots)`` when ``finish`` did (``failed_before``: the files that had
    already failed to decode then)."""

    slots: list[FileResult]
    rows: list[dict[str, Any]] | None = None
    stuck: int | None = None
    failed_before: list[int] = field(default_factory=list)


def run_watched(pre: Any, paths: list[str], timeout: float | None,
                finish: Finish | None = None, finish_limit: float | None = None) -> Watched:
    """Decode ``paths`` with ``pre`` (then ``finish(slots)``) on this thread's helper, with
    ``timeout`` seconds per file (no watchdog without one) and ``finish_limit`` (default
    ``timeout``) for ``finish``. An error raised by ``finish`` is raised here."""
    slots = [FileResult(path=str(p)) for p in paths]
    if not timeout:
        for path, slot in zip(paths, slots, strict=True):
            pre.decode(path, into=slot)
        return Watched(slots, finish(slots) if finish else None)
    helper = _helper_thread()
    at = [(0, time.perf_counter())]  # which stage the helper is on (file index), since when
    finished = threading.Event()
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            for i, path in enumerate(paths):
                if helper.retired:  # the watchdog gave up on a file before this one
                    return
                at[0] = (i, time.perf_counter())  # one tuple, replaced at once
                pre.decode(path, into=slots[i])
            out["failed_before"] = [i for i, slot in enumerate(slots) if not slot.ok]
            at[0] = (len(paths), time.perf_counter())
            if finish is not None:
                out["rows"] = finish(slots)
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            out["error"] = exc
        finally:
            finished.set()

    def limit(index: int) -> float | None:  # None: nothing left to watch
        if index < len(paths):
            return timeout
        return (finish_limit or timeout) if finish is not None else None

    def left() -> float | None:
        index, since = at[0]
        seconds = limit(index)
        return None if seconds is None else max(0.0, since + seconds - time.perf_counter())

    helper.jobs.put(work)
    while not finished.wait(left()):
        index, since = at[0]
        seconds = limit(index)
        if seconds is not None and time.perf_counter() - since >= seconds:
            break  # stuck on this file, or in finish
    else:
        if "error" in out:
            raise out["error"]
        return Watched(slots, out.get("rows"))
    helper.retired = True  # its thread stays where it is stuck: the next chunk gets another
    _LOCAL.helper = None
    return Watched(slots, stuck=index, failed_before=list(out.get("failed_before", [])))


def decode_files(pre: Any, paths: list[str], timeout: float | None
                 ) -> tuple[list[FileResult], list[str], bool]:
    """Every file's canonical pixels or error, in order: ``(results, unfinished, hung)``.

    A file that takes longer than ``timeout`` gets a ``timeout`` result, the helper thread is
    abandoned, and the files after it are handed back as ``unfinished`` (the caller sends
    them again)."""
    watched = run_watched(pre, paths, timeout)
    if watched.stuck is None:
        return watched.slots, [], False
    index = watched.stuck
    return ([*watched.slots[:index], timed_out(watched.slots[index], float(timeout or 0))],
            [str(p) for p in paths[index + 1:]], True)


def timed_out(slot: FileResult, seconds: float, where: str = "") -> FileResult:
    """The ``timeout`` result of a file the watchdog gave up on after ``seconds`` (its sha256
    known: a file is read and hashed before it is decoded); ``where``: what it was stuck in,
    if not its decoding."""
    cause = f"no result{f' from {where}' if where else ''} after {seconds:g} s"
    log.warning("%s: %s; abandoning it (its thread stays busy)", slot.path, cause)
    return FileResult(path=slot.path, sha256=slot.sha256, error_kind=ErrorKind.TIMEOUT.value,
                      error=f"{cause}; abandoned by the worker's watchdog", ms=seconds * 1000)
