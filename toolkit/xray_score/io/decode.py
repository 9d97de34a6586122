"""Decode image bytes the one canonical way every command uses.

Canonical preprocessing (``PREPROCESSING_VERSION``):

1. read the header and refuse images over ``max_pixels`` (decompression bombs) before decoding;
2. decode at full size to gray uint8: RGB/RGBA/palette -> luminance (ITU-R 601, alpha ignored),
   16-bit -> linear scaling by bit depth (``v * 255 / 65535``), never a per-image min-max stretch;
   JPEG files may instead use the decoder's DCT scaling to no less than the target size
   (``jpeg_draft``: a 1/2, 1/4 or 1/8 reduction in the DCT domain, ~3x faster on large
   originals, never below the input size, so the final resize still only shrinks);
3. squash-resize to ``size x size`` with ``cv2.INTER_AREA`` (how the 224 training copies were made).

Nothing here imports TensorFlow: this runs in the joblib workers.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ErrorKind, ImageError
from .discover import sniff_format

log = logging.getLogger(__name__)

PREPROCESSING_VERSION = 1
MAX_PIXELS = 60_000_000  # ~7,700 x 7,700; real chest X-rays are under 10 MP (the one default)
# What Pillow raises on corrupt input (fuzzing found TypeError from bad TIFF tag types).
_PIL_ERRORS = (
    OSError, SyntaxError, ValueError, EOFError, TypeError, KeyError, IndexError,
    struct.error, ArithmeticError,
)

Image.MAX_IMAGE_PIXELS = None  # we check the pixel count ourselves, with a typed error
cv2.setNumThreads(1)  # one decode per worker process; parallelism comes from the pool


@dataclass(frozen=True)
class Decoded:
    """A decoded image: full-size gray pixels plus what the result row reports."""

    gray: np.ndarray
    width: int
    height: int
    fmt: str
    extra: dict[str, Any] = field(default_factory=dict)  # DICOM ids, frames, notes


def read_bytes(path: str | os.PathLike) -> bytes:
    """Read a file, mapping OS failures to typed errors."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except IsADirectoryError as exc:
        raise ImageError(ErrorKind.UNREADABLE, "is a directory") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        kind = ErrorKind.UNREADABLE
        if exc.errno == errno.ELOOP:
            reason = "symlink loop"
        raise ImageError(kind, reason) from exc
    if not data:
        raise ImageError(ErrorKind.EMPTY, "file is empty (0 bytes)")
    return data


def decode_gray(
    data: bytes,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = None,
) -> Decoded:
    """Decode image bytes to full-size gray uint8 (see the module docstring for the rules).

    ``draft_size``: for JPEG only, let the decoder downscale by 1/2, 1/4 or 1/8 while keeping
    both sides >= ``draft_size``.
    """
    fmt = sniff_format(data[:132])
    if fmt is None:
        raise ImageError(ErrorKind.NOT_IMAGE, "content is not JPEG, PNG, BMP, TIFF or DICOM")
    if fmt == "dicom":
        from .dicom import decode_dicom  # optional dependency, imported only when needed

        return decode_dicom(data, max_pixels=max_pixels)

    try:
        img = Image.open(io.BytesIO(data), formats=[fmt.upper()])
    except UnidentifiedImageError as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"corrupt {fmt} header") from exc
    except _PIL_ERRORS as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"corrupt {fmt}: {exc}") from exc
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(ErrorKind.TRUNCATED, f"{fmt} header gives size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(
            ErrorKind.TOO_LARGE,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit {max_pixels:,}",
        )
    try:
        if fmt == "jpeg" and draft_size and img.mode in ("L", "RGB", "YCbCr", "CMYK"):
            img.draft("L", (draft_size, draft_size))
        img.load()
        gray = _to_gray(img)
    except ImageError:
        raise
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise ImageError(ErrorKind.TOO_LARGE, f"{fmt} too large to decode: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"cannot decode {fmt}: {exc}") from exc
    return Decoded(gray=gray, width=width, height=height, fmt=fmt)


def _to_gray(img: Image.Image) -> np.ndarray:
    """PIL image in any supported mode -> 2-D gray uint8, scaling by bit depth."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return scale_bits(np.asarray(img), 16)
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(ErrorKind.UNSUPPORTED, "32-bit integer pixels outside 0..65535")
        return scale_bits(arr, 16)
    if mode == "F":
        raise ImageError(ErrorKind.UNSUPPORTED, "floating-point pixels have no defined scaling")
    if mode in ("1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB").convert("L"), dtype=np.uint8)
    raise ImageError(ErrorKind.UNSUPPORTED, f"pixel mode {mode!r}")


def scale_bits(arr: np.ndarray, bits: int, rows: int = 256) -> np.ndarray:
    """Linear scaling of unsigned ``bits``-bit values to 0..255 (rounded), a band of rows at a
    time so a 60-megapixel 16-bit image needs no full-size 32-bit temporaries."""
    top = (1 << bits) - 1
    wide = np.uint32 if bits <= 24 else np.uint64  # room for top * 255
    out = np.empty(arr.shape, np.uint8)
    for i in range(0, arr.shape[0], rows):
        band = arr[i:i + rows].astype(wide)
        band *= 255
        band += top // 2
        band //= top
        out[i:i + rows] = band
    return out


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Squash-resize a gray image to ``size x size`` with ``cv2.INTER_AREA``."""
    if gray.shape == (size, size):
        return gray
    return cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
