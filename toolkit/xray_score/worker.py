"""What runs inside the joblib workers: file -> canonical pixels -> model input, or an error.

This module and everything it imports stay free of TensorFlow, so workers start fast and
stay small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ErrorKind, ImageError
from .features import HogLbpFeatures
from .images import (
    DEFAULT_MAX_PIXELS,
    Decoded,
    decode_gray,
    read_bytes,
    resize_square,
    sha256_bytes,
)


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

    ``transform`` is any picklable object with ``transform_one(pixels) -> array`` (the
    HOG/LBP extractor for the baseline; None for networks, which take the pixels).
    """

    size: int
    transform: Any = None
    jpeg_draft: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __call__(self, path: str) -> FileResult:
        return run_guarded(path, lambda data: self.from_bytes(data, {}))

    @property
    def decode_key(self) -> tuple[int | None, int]:
        """Files decode identically for preprocessors with equal keys (compare decodes once)."""
        return (self.size if self.jpeg_draft else None, self.max_pixels)

    def from_bytes(self, data: bytes, cache: dict) -> tuple[Decoded, np.ndarray]:
        """Decode (reusing ``cache`` by :attr:`decode_key`), resize, transform."""
        key = self.decode_key
        if key not in cache:
            cache[key] = decode_gray(data, max_pixels=self.max_pixels, draft_size=key[0])
        decoded = cache[key]
        pixels = resize_square(decoded.gray, self.size)
        x = pixels if self.transform is None else self.transform.transform_one(pixels)
        return decoded, x


@dataclass(frozen=True)
class MultiPreprocessor:
    """Several models' preprocessing from one read and one decode per file (``compare``)."""

    parts: tuple[Preprocessor, ...]

    def __call__(self, path: str) -> FileResult:
        def work(data: bytes) -> tuple[Decoded, tuple[np.ndarray, ...]]:
            cache: dict = {}
            outs = [part.from_bytes(data, cache) for part in self.parts]
            return outs[0][0], tuple(x for _, x in outs)

        return run_guarded(path, work)


def run_guarded(path: str, work: Any) -> FileResult:
    """Read ``path`` and apply ``work(bytes) -> (Decoded, x)``; any failure is this file's."""
    start = time.perf_counter()
    result = FileResult(path=str(path))
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


def feature_extractor(spec: dict[str, Any]) -> HogLbpFeatures:
    """The HOG/LBP transformer a baseline pipeline spec describes."""
    params = dict(spec.get("features") or {})
    for key in ("lbp_points", "lbp_radii"):
        if key in params:
            params[key] = tuple(params[key])
    return HogLbpFeatures(image_size=int(spec["input_size"]), **params).fit(None)


def preprocessor_for(spec: dict[str, Any]) -> Preprocessor:
    """The worker-side preprocessing of a pipeline: features for baselines, pixels for CNNs."""
    decode = spec.get("decode") or {}
    return Preprocessor(
        size=int(spec["input_size"]),
        transform=feature_extractor(spec) if spec["kind"] == "baseline" else None,
        jpeg_draft=bool(decode.get("jpeg_draft", False)),
        max_pixels=int(decode.get("max_pixels", DEFAULT_MAX_PIXELS)),
    )
