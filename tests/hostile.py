"""Hostile tasks for the crash/hang tests, importable by loky worker processes.

Kept at module level (picklable by reference). The tests folder is on ``sys.path`` under pytest,
and loky hands the parent's ``sys.path`` to its workers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HANG_SECONDS = 60.0


def square_or_die(item: int) -> int:
    """``item ** 2``; hangs on -1, kills its process on -2."""
    if item == -1:
        time.sleep(HANG_SECONDS)
    if item == -2:
        os._exit(13)
    return item * item


def worker_pid(_: Any) -> int:
    return os.getpid()


def _hostile(path: str) -> None:
    name = Path(path).name
    if name.startswith("hang"):
        time.sleep(HANG_SECONDS)
    if name.startswith("crash"):
        os._exit(13)


@dataclass(frozen=True)
class HostilePreprocessor:
    """Wraps a real preprocessor; hangs on files named ``hang*``, dies on ``crash*`` (in the
    per-file route, and in the chunk route's ``decode`` once the file is read and hashed)."""

    inner: Any

    def __call__(self, path: str) -> Any:
        _hostile(path)
        return self.inner(path)

    def decode(self, path: str, into: Any = None) -> Any:
        from xray_score.io.preprocess import run_guarded

        def work(data: bytes) -> Any:  # after the read and hash: the decoder hangs or dies
            _hostile(path)
            return self.inner.pixels_from_bytes(data, {})

        return run_guarded(path, work, into)

    def transform_batch(self, pixels: list[Any]) -> list[Any]:
        return self.inner.transform_batch(pixels)

    def stack(self, xs: list[Any]) -> Any:
        return self.inner.stack(xs)


STALL_VALUE = 77  # the canonical pixels a ``stall*`` file decodes to


@dataclass(frozen=True)
class StallsInFeatures(HostilePreprocessor):
    """Decodes every file (``stall*`` files to flat pixels of ``STALL_VALUE``); the features of
    a chunk that holds such a file hang, past every watchdog that looks only at decoding."""

    def decode(self, path: str, into: Any = None) -> Any:
        import numpy as np

        result = super().decode(path, into)
        if Path(path).name.startswith("stall") and result.ok:
            result.x = np.full_like(result.x, STALL_VALUE)
        return result

    def transform_batch(self, pixels: list[Any]) -> list[Any]:
        if any(int(x.min()) == int(x.max()) == STALL_VALUE for x in pixels):
            self.stall()
        return self.inner.transform_batch(pixels)

    def stall(self) -> None:
        time.sleep(HANG_SECONDS)


@dataclass(frozen=True)
class HoldsTheGil(StallsInFeatures):
    """Like :class:`StallsInFeatures`, but the features hang in native code that holds Python's
    GIL (libc's ``sleep`` through ``ctypes.PyDLL``): no Python thread of that process runs, the
    worker's watchdog included."""

    def stall(self) -> None:
        import ctypes

        ctypes.PyDLL(None).sleep(int(HANG_SECONDS))
