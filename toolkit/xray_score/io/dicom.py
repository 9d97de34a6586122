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
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ErrorKind, ImageError
from .decode import Decoded, scale_bits
from .dicom_limits import check_codestream, check_decoder, check_deflate, geometry, int_tag

log = logging.getLogger(__name__)

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

    check_deflate(data, max_pixels)
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"corrupt DICOM header: {exc}") from exc
    rows, cols, frames, samples = geometry(header, max_pixels)

    ds = dcmread(io.BytesIO(data))
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None:
        raise ImageError(ErrorKind.UNSUPPORTED, "DICOM without a transfer syntax")
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageError(ErrorKind.UNSUPPORTED, "floating-point DICOM pixel data")
        raise ImageError(ErrorKind.TRUNCATED, "DICOM image header without pixel data (cut short?)")
    check_decoder(ts)
    if ts.is_compressed:
        check_codestream(ds, frames, max_pixels)

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


def _to_gray(arr: np.ndarray, ds: Any, photometric: str, samples: int) -> np.ndarray:
    """One decoded frame -> gray uint8 by the canonical rules."""
    bits = int_tag(ds, "BitsStored", int_tag(ds, "BitsAllocated", 8))
    signed = int_tag(ds, "PixelRepresentation", 0) == 1
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
    return scale_bits(wide, bits)


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
        return scale_bits(np.minimum(out.astype(np.int64), (1 << depth) - 1), depth)
    window = _window(ds)
    if window is not None:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        return _apply_window(values, *window)
    if "ModalityLUTSequence" in ds:
        out = apply_modality_lut(arr, ds)
        depth = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return scale_bits(np.clip(out.astype(np.int64), 0, (1 << depth) - 1), depth)
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
