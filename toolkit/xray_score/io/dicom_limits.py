"""DICOM files checked before any pixel is decoded: geometry against the pixel limit, deflated
datasets, compressed codestreams that announce more pixels than the header, missing decoders."""

from __future__ import annotations

import io
import zlib
from typing import Any

from ..errors import ErrorKind, ImageError

# Deflated datasets are inflated whole by pydicom; refuse ones that inflate beyond this many
# bytes per allowed pixel (16-bit RGB is 6) plus headroom for the non-pixel elements.
_DEFLATE_BYTES_PER_PIXEL = 8
_DEFLATE_HEADROOM = 64 << 20


def geometry(header: Any, max_pixels: int) -> tuple[int, int, int, int]:
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
    rows, cols = int_tag(header, "Rows"), int_tag(header, "Columns")
    frames = int_tag(header, "NumberOfFrames", 1) or 1
    samples = int_tag(header, "SamplesPerPixel", 1)
    bits = int_tag(header, "BitsStored", int_tag(header, "BitsAllocated", 8))
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


def check_deflate(data: bytes, max_pixels: int) -> None:
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


def check_decoder(ts: Any) -> None:
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


def check_codestream(ds: Any, frames: int, max_pixels: int) -> None:
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


def int_tag(ds: Any, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise ImageError(ErrorKind.TRUNCATED, f"DICOM header lacks {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ImageError(ErrorKind.TRUNCATED, f"DICOM {keyword} is {value!r}") from exc
