"""Find X-ray files in a folder and decode them the one canonical way every command uses.

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
import hashlib
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ErrorKind, ImageError

log = logging.getLogger(__name__)

PREPROCESSING_VERSION = 1
DEFAULT_MAX_PIXELS = 60_000_000  # ~7,700 x 7,700; real chest X-rays are under 10 MP
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
JUNK_NAMES = frozenset(
    {"thumbs.db", "desktop.ini", "__macosx", ".ds_store", ".ipynb_checkpoints", "$recycle.bin"}
)
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

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


def sniff_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes (content, not extension).

    DICOM is tested first: its 128-byte preamble may itself hold a TIFF header.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES or name.startswith("~$")


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff_format(fh.read(132)) is not None
    except OSError:
        return False


def discover(root: str | os.PathLike) -> list[Path]:
    """All candidate image files under ``root``, recursively, in a deterministic order.

    Skips hidden and junk entries, follows directory symlinks but never a loop (each real
    directory is visited once), and keeps a file when its extension or its content says image.
    A single file may be given instead of a folder.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = list(_walk(root, seen=set()))
    skipped = [p for p in found if not _looks_like_image(p)]
    if skipped:
        log.info("ignored %d file(s) that are images neither by extension nor by content",
                 len(skipped))
    keep = set(found) - set(skipped)
    return [p for p in found if p in keep]


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path]:
    try:
        st = folder.stat()
    except OSError as exc:
        log.warning("cannot enter %s: %s", folder, exc)
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        log.warning("skipping %s: directory already visited (symlink loop?)", folder)
        return
    seen.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc)
        return
    for entry in entries:
        if _is_junk(entry.name):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(path, seen)
            elif entry.is_file(follow_symlinks=True):
                yield path
            elif entry.is_symlink():
                log.warning("skipping broken symlink %s", path)
        except OSError as exc:  # e.g. ELOOP on a self-referencing symlink
            log.warning("skipping %s: %s", path, exc)


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_gray(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
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
    import io

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
        return _scale_bits(np.asarray(img), 16)
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageError(ErrorKind.UNSUPPORTED, "32-bit integer pixels outside 0..65535")
        return _scale_bits(arr, 16)
    if mode == "F":
        raise ImageError(ErrorKind.UNSUPPORTED, "floating-point pixels have no defined scaling")
    if mode in ("1", "P", "PA", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB").convert("L"), dtype=np.uint8)
    raise ImageError(ErrorKind.UNSUPPORTED, f"pixel mode {mode!r}")


def _scale_bits(arr: np.ndarray, bits: int, rows: int = 256) -> np.ndarray:
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


@dataclass(frozen=True)
class Canonical:
    """The canonical network/feature input of one file, plus its result-row metadata."""

    pixels: np.ndarray  # (size, size) uint8
    sha256: str
    width: int
    height: int
    fmt: str
    extra: dict[str, Any] = field(default_factory=dict)  # Decoded.extra (DICOM ids, ...)


def load_canonical(
    path: str | os.PathLike,
    size: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    jpeg_draft: bool = False,
) -> Canonical:
    """Read, verify, decode and resize one file: the single entry point of every command."""
    data = read_bytes(path)
    digest = sha256_bytes(data)
    decoded = decode_gray(data, max_pixels=max_pixels, draft_size=size if jpeg_draft else None)
    pixels = resize_square(decoded.gray, size)
    return Canonical(pixels, digest, decoded.width, decoded.height, decoded.fmt, decoded.extra)
