"""What runs inside the workers: file -> canonical pixels -> model input, or an error.

This module and everything it imports stay free of TensorFlow, so workers start fast and
stay small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ErrorKind, ImageError
from ..hashing import sha256_bytes
from .decode import MAX_PIXELS, Decoded, decode_gray, read_bytes, resize_square


@dataclass
class FileResult:
    """One file's preprocessing outcome, sent back to the main process (small)."""

    path: str
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    x: np.ndarray | None = None  # model input: feature vector or canonical image
    error_kind: str | None = None
    error: str | None = None
    ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_kind is None


@dataclass(frozen=True)
class Preprocessor:
    """Picklable per-file preprocessing: canonical decode/resize, then an optional transform.

    ``transform`` is any picklable object with ``transform_batch(pixels (N, S, S)) -> (N, F)``
    (the HOG/LBP extractor for the baseline; None for networks, which take the pixels). Each
    model kind builds its own from a pipeline spec (:mod:`xray_score.model.kinds`).

    Two routes, same numbers: ``__call__`` gives one file's model input (decode, resize,
    transform); ``decode`` stops at the canonical pixels so that a worker scoring a chunk of
    files can transform them in one batch (:meth:`transform_batch`).
    """

    size: int
    transform: Any = None
    jpeg_draft: bool = False
    max_pixels: int = MAX_PIXELS

    def __call__(self, path: str) -> FileResult:
        return run_guarded(path, lambda data: self.from_bytes(data, {}))

    def decode(self, path: str, into: FileResult | None = None) -> FileResult:
        """One file's canonical pixels (``x``: (S, S) uint8), or its error."""
        return run_guarded(path, lambda data: self.pixels_from_bytes(data, {}), into)

    def transform_batch(self, pixels: list[np.ndarray]) -> list[np.ndarray]:
        """Model inputs of several files' canonical pixels (the transform runs once)."""
        if self.transform is None or not pixels:
            return list(pixels)
        return list(self.transform.transform_batch(np.stack(pixels)))

    @property
    def decode_key(self) -> tuple[int | None, int]:
        """Files decode identically for preprocessors with equal keys (compare decodes once)."""
        return (self.size if self.jpeg_draft else None, self.max_pixels)

    def stack(self, xs: list[np.ndarray]) -> np.ndarray:
        """The model's batch input from several files' ``x`` (what ``predict_raw`` takes)."""
        return np.stack(xs)

    def pixels_from_bytes(self, data: bytes, cache: dict) -> tuple[Decoded, np.ndarray]:
        """Decode (reusing ``cache`` by :attr:`decode_key`) and resize to the canonical square."""
        key = self.decode_key
        if key not in cache:
            cache[key] = decode_gray(data, max_pixels=self.max_pixels, draft_size=key[0])
        decoded = cache[key]
        return decoded, resize_square(decoded.gray, self.size)

    def from_bytes(self, data: bytes, cache: dict) -> tuple[Decoded, np.ndarray]:
        """Decode (reusing ``cache`` by :attr:`decode_key`), resize, transform."""
        decoded, pixels = self.pixels_from_bytes(data, cache)
        return decoded, self.transform_batch([pixels])[0]


@dataclass(frozen=True)
class MultiPreprocessor:
    """Several models' preprocessing from one read and one decode per file (``compare``)."""

    parts: tuple[Preprocessor, ...]

    def __call__(self, path: str) -> FileResult:
        return run_guarded(path, lambda data: self.from_bytes(data, {}))

    def decode(self, path: str, into: FileResult | None = None) -> FileResult:
        """Every part's canonical pixels from one read and one decode per decode setting."""
        return run_guarded(path, lambda data: self.pixels_from_bytes(data, {}), into)

    def pixels_from_bytes(self, data: bytes, cache: dict) -> tuple[Decoded, tuple[Any, ...]]:
        outs = [part.pixels_from_bytes(data, cache) for part in self.parts]
        return outs[0][0], tuple(x for _, x in outs)

    def transform_batch(self, pixels: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Each part's model inputs for several files (one transform call per part)."""
        if not pixels:
            return []
        per_part = [part.transform_batch([x[i] for x in pixels])
                    for i, part in enumerate(self.parts)]
        return list(zip(*per_part, strict=True))

    def from_bytes(self, data: bytes, cache: dict) -> tuple[Decoded, tuple[Any, ...]]:
        """Every part's input from one decode per distinct decode setting."""
        outs = [part.from_bytes(data, cache) for part in self.parts]
        return outs[0][0], tuple(x for _, x in outs)

    def stack(self, xs: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        """One batch per part, from files' tuples of inputs."""
        return tuple(part.stack([x[i] for x in xs]) for i, part in enumerate(self.parts))


def run_guarded(path: str, work: Any, into: FileResult | None = None) -> FileResult:
    """Read ``path`` and apply ``work(bytes) -> (Decoded, x)``; any failure is this file's.

    ``into``: a result to fill in place (a watchdog reads its ``sha256`` if ``work`` hangs)."""
    start = time.perf_counter()
    result = into if into is not None else FileResult(path=str(path))
    try:
        data = read_bytes(path)
        result.sha256 = sha256_bytes(data)
        decoded, result.x = work(data)
        result.width, result.height, result.fmt = decoded.width, decoded.height, decoded.fmt
        result.extra = dict(getattr(decoded, "extra", None) or {})
    except ImageError as exc:
        result.error_kind, result.error = exc.kind.value, exc.message
    except MemoryError:
        result.error_kind, result.error = ErrorKind.TOO_LARGE.value, "out of memory decoding"
    except Exception as exc:  # noqa: BLE001 - any other failure stays this file's
        result.error_kind = ErrorKind.UNREADABLE.value
        result.error = f"{type(exc).__name__}: {exc}"
    result.ms = (time.perf_counter() - start) * 1000
    return result
