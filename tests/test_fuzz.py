"""Hostile input: random, truncated and bit-flipped files, decompression bombs, odd folders.

The only outcomes allowed from ``images.decode_gray`` are a ``Decoded`` or an ``ImageError`` with
a kind from ``ErrorKind``; from ``worker.Preprocessor`` a ``FileResult``. Every call runs under a
per-call alarm so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import canonical
from xray_score.errors import ErrorKind, ImageError
from xray_score.io import decode as images
from xray_score.io.discover import discover, sniff_format
from xray_score.io.preprocess import FileResult, Preprocessor

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CALL_LIMIT_S = 5.0
KINDS = {k.value for k in ErrorKind}
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's corrupt-EXIF chatter


# ---------------------------------------------------------------- helpers
class Hang(BaseException):
    """Raised by the alarm: a decode took longer than CALL_LIMIT_S (BaseException, so no
    ``except Exception`` in the code under test can turn it into an ordinary error)."""


@contextmanager
def alarm(seconds: float = CALL_LIMIT_S) -> Iterator[None]:
    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"call exceeded {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def decode_outcome(data: bytes, **kw: Any) -> images.Decoded | ImageError:
    """decode_gray under the alarm; anything but Decoded / ImageError fails the test."""
    try:
        with alarm():
            out = images.decode_gray(data, **kw)
    except ImageError as exc:
        assert exc.kind in ErrorKind
        return exc
    assert isinstance(out, images.Decoded)
    assert out.gray.dtype == np.uint8 and out.gray.ndim == 2
    assert out.gray.shape == (out.height, out.width)
    return out


def preprocess_outcome(path: Path) -> FileResult:
    with alarm():
        result = Preprocessor(size=32)(str(path))
    assert isinstance(result, FileResult)
    if result.ok:
        assert result.x is not None and result.x.shape == (32, 32)
    else:
        assert result.error_kind in KINDS
        # The worker's catch-all reports "<ExceptionType>: ..." as unreadable; the files here
        # are readable, so unreadable means an exception escaped the decoder untyped.
        assert result.error_kind != ErrorKind.UNREADABLE.value, result.error
    return result


def _save(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom(arr: np.ndarray, syntax: str | None = None, **attrs: Any) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, "1.2.3.4"
    ds.PatientID, ds.StudyInstanceUID = "FUZZ", "1.2.3"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = arr.tobytes()
    if syntax:
        ds.compress(syntax, arr, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _samples() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    g8 = (np.add.outer(np.arange(24), np.arange(20)) * 5 % 256).astype(np.uint8)
    g16 = rng.integers(0, 65536, size=(16, 12)).astype(np.uint16)
    rgb = rng.integers(0, 256, size=(12, 10, 3)).astype(np.uint8)
    out = {
        "jpeg": _save(Image.fromarray(g8), "JPEG", quality=80),
        "jpeg_rgb": _save(Image.fromarray(rgb), "JPEG"),
        "jpeg_progressive": _save(Image.fromarray(g8), "JPEG", progressive=True),
        "png": _save(Image.fromarray(g8), "PNG"),
        "png16": _save(Image.fromarray(g16), "PNG"),
        "png_rgb": _save(Image.fromarray(rgb), "PNG"),
        "bmp": _save(Image.fromarray(g8), "BMP"),
        "bmp_rgb": _save(Image.fromarray(rgb), "BMP"),
        "tiff": _save(Image.fromarray(g8), "TIFF"),
        "tiff16": _save(Image.fromarray(g16), "TIFF"),
        "tiff_lzw": _save(Image.fromarray(g8), "TIFF", compression="tiff_lzw"),
    }
    try:
        from pydicom.uid import RLELossless

        out["dicom"] = _dicom(g16, WindowCenter=30000, WindowWidth=20000)
        out["dicom8"] = _dicom(g8)
        out["dicom_rle"] = _dicom(g16, RLELossless)
        out["dicom_multiframe"] = _dicom(np.concatenate([g8, g8]), NumberOfFrames=2, Rows=24)
    except ImportError:  # pragma: no cover - pydicom is an optional extra
        pass
    return out


SAMPLES = _samples()
NAMES = sorted(SAMPLES)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_every_sample_decodes() -> None:
    for name, data in SAMPLES.items():
        out = decode_outcome(data)
        assert isinstance(out, images.Decoded), (name, out)


# ---------------------------------------------------------------- fuzz
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    decode_outcome(data)


@FUZZ
@given(name=st.sampled_from(NAMES), tail=st.binary(max_size=512))
def test_valid_magic_random_body(name: str, tail: bytes) -> None:
    head = SAMPLES[name][: 132 if name.startswith("dicom") else 16]
    decode_outcome(head + tail)


@FUZZ
@given(name=st.sampled_from(NAMES), frac=st.floats(0, 1, exclude_max=True))
def test_truncated(name: str, frac: float) -> None:
    data = SAMPLES[name]
    decode_outcome(data[: int(len(data) * frac)])


@FUZZ
@given(
    name=st.sampled_from(NAMES),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                   min_size=1, max_size=8),
)
def test_bit_flipped(name: str, flips: list[tuple[float, int]]) -> None:
    data = bytearray(SAMPLES[name])
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    decode_outcome(bytes(data))


@FUZZ
@given(
    name=st.sampled_from(NAMES),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                   min_size=1, max_size=4),
    frac=st.floats(0.05, 1),
)
def test_preprocessor_on_damaged_files(
    workdir: Path, name: str, flips: list[tuple[float, int]], frac: float
) -> None:
    data = bytearray(SAMPLES[name])
    for where, value in flips:
        data[int(where * len(data))] = value
    path = workdir / f"f_{name}"
    path.write_bytes(bytes(data[: max(1, int(len(data) * frac))]))
    preprocess_outcome(path)


# ---------------------------------------------------------------- decompression bombs
def _png_bomb(w: int, h: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + tag + body
                + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bmp_bomb(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, 0, 2835, 2835, 256, 0)
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = b"\0" * 1024
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return header + info + palette + pixels


def _tiff_bomb(w: int, h: int) -> bytes:
    entries = [
        (256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, h), (279, 4, 1, 1024),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, count, value) for tag, typ, count, value in entries
    ) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8 + 1024) + b"\0" * 1024 + ifd


def _jpeg_bomb(w: int, h: int) -> bytes:
    base = bytearray(SAMPLES["jpeg"])
    i = 2
    while i < len(base):  # patch the SOF0 size fields of a valid JPEG
        marker, length = base[i + 1], int.from_bytes(base[i + 2:i + 4], "big")
        if marker == 0xC0:
            base[i + 5:i + 7], base[i + 7:i + 9] = h.to_bytes(2, "big"), w.to_bytes(2, "big")
            return bytes(base)
        i += 2 + length
    raise AssertionError("no SOF0 in the sample JPEG")


def _dicom_bomb(w: int, h: int) -> bytes:
    return _dicom(np.zeros((4, 4), np.uint16), Rows=h, Columns=w)


BOMBS: dict[str, Callable[[int, int], bytes]] = {
    "png": _png_bomb, "bmp": _bmp_bomb, "tiff": _tiff_bomb, "jpeg": _jpeg_bomb,
    "dicom": _dicom_bomb,
}


@pytest.mark.parametrize("fmt", sorted(BOMBS))
@pytest.mark.parametrize("size", [(65_000, 65_000), (60_000, 1_001), (1, 60_000_001)])
def test_decompression_bomb_is_too_large_quickly(fmt: str, size: tuple[int, int]) -> None:
    w, h = size
    if fmt == "jpeg" and max(w, h) > 65535:
        w, h = 65535, 65535
    if fmt == "dicom" and max(w, h) > 65535:  # Rows/Columns are US
        w, h = 65535, 65535
    data = BOMBS[fmt](w, h)
    assert sniff_format(data[:132]) == fmt
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        out = decode_outcome(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert isinstance(out, ImageError) and out.kind == ErrorKind.TOO_LARGE, out
    assert peak < 50 << 20
    assert rss_grew_kb < 200 << 10


@pytest.mark.parametrize("fmt", sorted(BOMBS))
def test_bomb_just_under_a_small_limit_still_refused_above(fmt: str) -> None:
    data = BOMBS[fmt](300, 200)
    out = decode_outcome(data, max_pixels=59_999)
    assert isinstance(out, ImageError) and out.kind == ErrorKind.TOO_LARGE


# ---------------------------------------------------------------- folders and permissions
def test_symlink_loops_terminate(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.png").write_bytes(SAMPLES["png"])
    (root / "y.jpg").write_bytes(SAMPLES["jpeg"])
    os.symlink(root, root / "a" / "b" / "up")  # directory loop back to the root
    os.symlink(root / "a", root / "a" / "b" / "sideways")
    os.symlink("self.png", root / "self.png")  # ELOOP
    os.symlink(root / "missing.png", root / "broken.png")
    (root / "ping.png").symlink_to(root / "pong.png")
    (root / "pong.png").symlink_to(root / "ping.png")
    with alarm(10):
        found = discover(root)
    names = sorted(p.name for p in found)
    assert names.count("x.png") == 1 and "y.jpg" in names
    for path in (root / "self.png", root / "ping.png"):
        result = preprocess_outcome_allowing_unreadable(path)
        assert result.error_kind == ErrorKind.UNREADABLE.value


def preprocess_outcome_allowing_unreadable(path: Path) -> FileResult:
    with alarm():
        result = Preprocessor(size=32)(str(path))
    assert isinstance(result, FileResult) and result.error_kind in KINDS
    return result


def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(SAMPLES["png"])
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: chmod 000 does not stop reads")
        with pytest.raises(ImageError) as err:
            canonical(path, 32)
        assert err.value.kind == ErrorKind.UNREADABLE
        assert preprocess_outcome_allowing_unreadable(path).error_kind == "unreadable"
    finally:
        path.chmod(0o644)


def test_empty_and_directory_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert preprocess_outcome_allowing_unreadable(empty).error_kind == "empty"
    (tmp_path / "dir.png").mkdir()
    assert preprocess_outcome_allowing_unreadable(tmp_path / "dir.png").error_kind == "unreadable"


@pytest.mark.parametrize("tag_type", [2, 5, 12])  # ASCII, RATIONAL, DOUBLE
def test_tiff_strip_offsets_of_wrong_type_is_typed(tag_type: int) -> None:
    """Regression: Pillow raised TypeError (uncaught) for StripOffsets of a non-integer type."""
    entries = [(256, 4, 1, 8), (257, 4, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, tag_type, 1, 72), (277, 3, 1, 1), (278, 4, 1, 8), (279, 4, 1, 64)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *entry) for entry in entries) + b"\0\0\0\0"
    data = b"II*\x00" + struct.pack("<I", 80) + b"\0" * 72 + ifd
    out = decode_outcome(data)
    assert isinstance(out, ImageError) and out.kind == ErrorKind.TRUNCATED
