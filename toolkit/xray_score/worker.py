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
from .images import DEFAULT_MAX_PIXELS, load_canonical


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
        start = time.perf_counter()
        result = FileResult(path=str(path))
        try:
            canon = load_canonical(path, self.size, self.max_pixels, self.jpeg_draft)
            result.sha256, result.width, result.height, result.fmt = (
                canon.sha256, canon.width, canon.height, canon.fmt)
            result.x = (canon.pixels if self.transform is None
                        else self.transform.transform_one(canon.pixels))
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
