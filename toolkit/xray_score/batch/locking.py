"""One run at a time per ledger and shard: an ``fcntl.flock`` on a lock file beside the ledger.

The kernel releases a ``flock`` when its holder dies (even by ``kill -9``), so a stale lock
never needs cleaning up: the next run simply gets it. The file records the holder's pid, host
and start time, only to make the "lock held" message useful.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from ..errors import LockHeldError

_HELD: set[RunLock] = set()


def drop_inherited_locks() -> None:
    """In a forked child: close its copies of the locks this process held. A ``flock`` lives
    while any copy of its descriptor is open, so a worker that outlived a killed run would
    otherwise keep the run's locks; closing the child's copy leaves the parent's lock held."""
    for lock in list(_HELD):
        if lock._fd is not None:
            os.close(lock._fd)
            lock._fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=drop_inherited_locks)


def lock_path(ledger: Path, num_parts: int = 1, part_id: int = 0) -> Path:
    """``<ledger>.lock``, or ``<ledger>.part-I-of-K.lock`` for one shard of a split job."""
    suffix = ".lock" if num_parts == 1 else f".part-{part_id}-of-{num_parts}.lock"
    return ledger.with_name(ledger.name + suffix)


def out_lock_path(out: Path) -> Path:
    """``.<out>.lock`` beside a results file: one run writes a given ``--out`` at a time."""
    return out.with_name(f".{out.name}.lock")


class RunLock:
    """Exclusive, non-blocking lock held for the life of a ``with`` block (``what``: what it
    protects, for the "held" message)."""

    def __init__(self, path: Path, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what or str(self.path)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise LockHeldError(f"another run holds {self.what} ({_describe(holder)}); "
                                "try again when it has finished") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
            _HELD.discard(self)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
