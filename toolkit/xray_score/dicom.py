"""DICOM input: bytes -> canonical gray uint8, with the ids a result row reports.

The rules (part of canonical preprocessing, see :mod:`xray_score.images`):

1. read the header only and refuse ``Rows * Columns > max_pixels`` (and compressed frames whose
   codestream header announces more) before any pixel data is decoded;
2. decode the first frame only (multi-frame files say so in ``extra["note"]``);
3. modality LUT / rescale, then, when present, the VOI LUT (``VOILUTSequence``) or the window
   centre/width (PS3.3 C.11.2.1.2, LINEAR / LINEAR_EXACT / SIGMOID) mapped straight onto 0..255;
   otherwise linear scaling over the full range the stored bits can represent (``v * 255 /
   (2**BitsStored - 1)``, signed data shifted by its minimum), the same rule as 16-bit PNG;
   never a per-image min-max stretch;
4. MONOCHROME1 is inverted; RGB / YBR / palette colour -> ITU-R 601 luminance (as PIL does).

Every failure is an :class:`ImageError`: missing decoder -> ``unsupported``, cut short or
corrupt -> ``truncated``, too many pixels -> ``too_large``.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from typing import Any

import numpy as np
from PIL import Image

from .errors import ErrorKind, ImageError
from .images import Decoded, _scale_bits

log = logging.getLogger(__name__)

# Deflated datasets are inflated whole by pydicom; refuse ones that inflate beyond this many
# bytes per allowed pixel (16-bit RGB is 6) plus headroom for the non-pixel elements.
_DEFLATE_BYTES_PER_PIXEL = 8
_DEFLATE_HEADROOM = 64 << 20
_ID_KEYWORDS = ("PatientID", "StudyInstanceUID", "SOPInstanceUID")


def decode_dicom(data: bytes, max_pixels: int) -> Decoded:
    """Decode a DICOM file's first frame to gray uint8 (rules in the module docstring)."""
    try:
        import pydicom  # noqa: F401 - optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImageError(
            ErrorKind.UNSUPPORTED, "DICOM needs pydicom: pip install 'xray-score[dicom]'"
        ) from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _decode(data, max_pixels)
        except ImageError:
            raise
        except MemoryError as exc:
            raise ImageError(ErrorKind.TOO_LARGE, "out of memory decoding DICOM") from exc
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad input
            raise ImageError(
                ErrorKind.TRUNCATED, f"corrupt DICOM: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            for w in caught:
                log.debug("pydicom: %s", w.message)


def _decode(data: bytes, max_pixels: int) -> Decoded:
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    _check_deflate(data, max_pixels)
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"corrupt DICOM header: {exc}") from exc
    rows, cols, frames, samples = _geometry(header, max_pixels)

    ds = dcmread(io.BytesIO(data))
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None:
        raise ImageError(ErrorKind.UNSUPPORTED, "DICOM without a transfer syntax")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageError(ErrorKind.UNSUPPORTED, "floating-point DICOM pixel data")
        raise ImageError(ErrorKind.TRUNCATED, "DICOM image header without pixel data (cut short?)")
    _check_decoder(ts)
    if ts.is_compressed:
        _check_codestream(ds, frames, max_pixels)

    from pydicom.pixels import pixel_array

    arr = pixel_array(ds, index=0)
    expected = (rows, cols) if samples == 1 else (rows, cols, samples)
    if arr.shape != expected:
        raise ImageError(
            ErrorKind.TRUNCATED, f"decoded frame has shape {arr.shape}, header says {expected}"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    gray = _to_gray(arr, ds, photometric, samples)

    extra: dict[str, Any] = {k: _text(ds.get(k)) for k in _ID_KEYWORDS}
    extra["frames"] = frames
    if frames > 1:
        extra["note"] = f"scored frame 1 of {frames}"
    return Decoded(gray=gray, width=cols, height=rows, fmt="dicom", extra=extra)


def _text(value: Any) -> str | None:
    return None if value is None or str(value) == "" else str(value)


def _int(ds: Any, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise ImageError(ErrorKind.TRUNCATED, f"DICOM header lacks {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"DICOM {keyword} is {value!r}") from exc


def _geometry(header: Any, max_pixels: int) -> tuple[int, int, int, int]:
    """Rows, Columns, NumberOfFrames, SamplesPerPixel from the header; refuse bombs."""
    if "Rows" not in header and "Columns" not in header:
        meta = getattr(header, "file_meta", None) or {}
        sop = header.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
        name = str(getattr(sop, "name", "") or "")
        # pydicom stops quietly at a cut: an image class, or no known class, means cut short
        if "Image" in name or not name or name == str(sop):
            raise ImageError(
                ErrorKind.TRUNCATED,
                f"DICOM without Rows/Columns ({name or 'no SOP class'}; cut short?)",
            )
        raise ImageError(ErrorKind.NOT_IMAGE, f"DICOM without an image ({name})")
    rows, cols = _int(header, "Rows"), _int(header, "Columns")
    frames = _int(header, "NumberOfFrames", 1) or 1
    samples = _int(header, "SamplesPerPixel", 1)
    bits = _int(header, "BitsStored", _int(header, "BitsAllocated", 8))
    if rows <= 0 or cols <= 0 or frames < 0:
        raise ImageError(ErrorKind.TRUNCATED, f"DICOM header gives size {cols}x{rows}")
    if rows * cols > max_pixels:
        raise ImageError(
            ErrorKind.TOO_LARGE,
            f"{cols}x{rows} = {rows * cols:,} pixels exceeds the limit {max_pixels:,}",
        )
    if samples not in (1, 3):
        raise ImageError(ErrorKind.UNSUPPORTED, f"DICOM with {samples} samples per pixel")
    if not 1 <= bits <= 32:
        raise ImageError(ErrorKind.UNSUPPORTED, f"DICOM with BitsStored {bits}")
    return rows, cols, frames, samples


def _check_deflate(data: bytes, max_pixels: int) -> None:
    """Refuse Deflated Explicit VR files that inflate beyond a bound (zip bombs), streaming."""
    if b"1.2.840.10008.1.2.1.99" not in data[:4096]:
        return
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    limit = max_pixels * _DEFLATE_BYTES_PER_PIXEL + _DEFLATE_HEADROOM
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[fp.tell():], 0
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
            if total > limit:
                raise ImageError(
                    ErrorKind.TOO_LARGE, f"deflated DICOM inflates beyond {limit:,} bytes"
                )
    except zlib.error as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"corrupt deflated DICOM: {exc}") from exc


def _check_decoder(ts: Any) -> None:
    """Refuse (``unsupported``) transfer syntaxes no installed plugin can decode."""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ImageError(
            ErrorKind.UNSUPPORTED, f"no decoder for transfer syntax {ts.name} ({ts})"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise ImageError(
            ErrorKind.UNSUPPORTED,
            f"transfer syntax {ts.name} needs a pixel-data plugin ({missing})",
        )


def _check_codestream(ds: Any, frames: int, max_pixels: int) -> None:
    """Refuse a compressed first frame whose own header announces more than ``max_pixels``."""
    from pydicom.encaps import get_frame

    frame = get_frame(ds.PixelData, 0, number_of_frames=frames)
    size = _codestream_size(frame[:65536])
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise ImageError(
            ErrorKind.TOO_LARGE,
            f"compressed frame announces {w}x{h} = {w * h:,} pixels (limit {max_pixels:,})",
        )


def _codestream_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG / JPEG-LS SOF or a JPEG 2000 SIZ marker, if found."""
    siz = head.find(b"\xff\x4f\xff\x51")
    if siz >= 0 and len(head) >= siz + 24:
        p = siz + 8
        xsiz, ysiz, xo, yo = (int.from_bytes(head[p + 4 * i: p + 4 * i + 4], "big")
                              for i in range(4))
        return max(xsiz - xo, 0), max(ysiz - yo, 0)
    if head[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 9 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(head[pos + 2: pos + 4], "big")
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            height = int.from_bytes(head[pos + 5: pos + 7], "big")
            width = int.from_bytes(head[pos + 7: pos + 9], "big")
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def _to_gray(arr: np.ndarray, ds: Any, photometric: str, samples: int) -> np.ndarray:
    """One decoded frame -> gray uint8 by the canonical rules."""
    bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated", 8))
    signed = _int(ds, "PixelRepresentation", 0) == 1
    if photometric == "PALETTE COLOR" and samples == 1:
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)
        depth = 8 if rgb.dtype == np.uint8 else 16
        return _luminance(_stored_to_8bit(rgb, depth, False))
    if samples == 3:
        return _luminance(_stored_to_8bit(arr, bits, signed))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(ErrorKind.UNSUPPORTED, f"photometric interpretation {photometric!r}")
    gray = _monochrome(arr, ds, bits, signed)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luminance exactly as PIL's ``convert("L")`` (so PNG and DICOM agree)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"))


def _stored_to_8bit(arr: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Linear scaling by bit depth: unsigned ``bits`` values (signed shifted) -> 0..255."""
    if bits == 8 and arr.dtype == np.uint8:
        return arr
    wide = arr.astype(np.int64)
    if signed:
        wide += 1 << (bits - 1)
    np.clip(wide, 0, (1 << bits) - 1, out=wide)
    return _scale_bits(wide, bits)


def _monochrome(arr: np.ndarray, ds: Any, bits: int, signed: bool) -> np.ndarray:
    """Modality LUT, then VOI LUT / window -> 0..255, else scaling over the representable range."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
        values = apply_modality_lut(arr, ds)
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)
        out = apply_voi(values, ds, 0)
        depth = int(voi_lut[0].LUTDescriptor[2])
        return _scale_bits(np.minimum(out.astype(np.int64), (1 << depth) - 1), depth)
    window = _window(ds)
    if window is not None:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        return _apply_window(values, *window)
    if "ModalityLUTSequence" in ds:
        out = apply_modality_lut(arr, ds)
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return _scale_bits(np.clip(out.astype(np.int64), 0, (1 << depth) - 1), depth)
    # Linear rescale (if any) is monotone over the stored range, so scaling the stored values
    # by bit depth is the same map; a negative slope flips it.
    gray = _stored_to_8bit(arr, bits, signed)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    return 255 - gray if slope < 0 else gray


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DS element, as float."""
    if not isinstance(value, str | bytes | int | float):
        value = value[0]
    return float(value)


def _window(ds: Any) -> tuple[float, float, str] | None:
    """(centre, width, function) of the first window, or None when absent or invalid."""
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is None or width is None or centre == "" or width == "":
        return None
    try:
        centre, width = _first(centre), _first(width)
    except (TypeError, ValueError, IndexError):
        log.debug("ignoring unreadable window centre/width")
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0 or (
        function not in ("LINEAR_EXACT", "SIGMOID") and width < 1
    ):
        log.debug("ignoring window centre %s width %s (%s)", centre, width, function)
        return None
    return centre, width, function


def _apply_window(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2/3 windowing with output range 0..255, rounded to uint8."""
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    elif function == "LINEAR_EXACT":
        out = (values - (centre - width / 2)) / width * 255.0
    else:  # LINEAR (the default; unknown functions fall back to it)
        half = (width - 1) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            ramp = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255.0
        out = np.where(values <= centre - 0.5 - half, 0.0,
                       np.where(values > centre - 0.5 + half, 255.0, ramp))
    return np.rint(np.clip(out, 0.0, 255.0)).astype(np.uint8)
