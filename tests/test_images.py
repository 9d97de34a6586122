"""Discovery and the canonical decode every command goes through."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import canonical, make_xray, save_gray
from xray_score.classical.features import HogLbpFeatures
from xray_score.errors import ErrorKind, ImageError
from xray_score.io.decode import decode_gray, read_bytes, resize_square
from xray_score.io.discover import discover, discover_files


def jpeg_bytes(gray: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def load_error(path: Path, size: int = 64) -> ErrorKind:
    with pytest.raises(ImageError) as info:
        canonical(path, size)
    return info.value.kind


# ----------------------------------------------------------------------------- discovery
def test_discover_recursive_sorted_and_skips_junk(tmp_path, rng):
    gray = make_xray(0, rng, size=80)
    for rel in ["b/2.png", "b/1.jpeg", "a.jpg", "c/d/e/deep.PNG", "z.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        save_gray(tmp_path / rel, gray)
    for junk in [".DS_Store", "Thumbs.db", "__MACOSX/x.jpeg", ".ipynb_checkpoints/y.png",
                 ".hidden.png", ".cache/in_hidden_dir.png", "b/._1.jpeg"]:
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        if junk.endswith((".jpeg", ".png")):
            save_gray(tmp_path / junk, gray)
        else:
            (tmp_path / junk).write_bytes(b"\x00junk")
    found = [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path)]
    assert found == ["a.jpg", "b/1.jpeg", "b/2.png", "c/d/e/deep.PNG", "z.bmp"]
    assert discover(tmp_path) == discover(tmp_path)  # deterministic


def test_discover_sniffs_content_not_extension(tmp_path, rng):
    (tmp_path / "scan.txt").write_bytes(jpeg_bytes(make_xray(1, rng, size=64)))
    (tmp_path / "notes.txt").write_text("not an image at all\n")
    (tmp_path / "fake.jpeg").write_text("I am text with an image extension\n")
    (tmp_path / "noext").write_bytes(png_bytes(Image.fromarray(make_xray(0, rng, size=64))))
    found = sorted(p.name for p in discover(tmp_path))
    assert found == ["fake.jpeg", "noext", "scan.txt"]
    assert canonical(tmp_path / "scan.txt", 32).fmt == "jpeg"
    assert canonical(tmp_path / "noext", 32).fmt == "png"
    assert load_error(tmp_path / "fake.jpeg") is ErrorKind.NOT_IMAGE


def test_discover_files_names_files_as_discover_does(tmp_path, rng, monkeypatch):
    """``batch`` keys its rows by these names: the string route must spell every path as
    ``str(Path)`` does, however the folder was written."""
    for rel in ["NORMAL/a.png", "PNEUMONIA/sub/b.jpeg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        save_gray(tmp_path / rel, make_xray(0, rng, size=40))
    monkeypatch.chdir(tmp_path)
    for root in [tmp_path, f"{tmp_path}//", ".", "./", "NORMAL/../PNEUMONIA", "./PNEUMONIA/"]:
        assert discover_files(root) == [str(p) for p in discover(root)], root
    assert discover_files(".") == ["NORMAL/a.png", "PNEUMONIA/sub/b.jpeg"]


def test_discover_single_file_and_missing_folder(tmp_path, rng):
    f = save_gray(tmp_path / "one.png", make_xray(0, rng, size=40))
    assert discover(f) == [f]
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope")


def test_discover_symlink_loop_terminates_without_duplicates(tmp_path, rng):
    (tmp_path / "a").mkdir()
    save_gray(tmp_path / "a" / "x.png", make_xray(0, rng, size=40))
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a -> .. -> a -> ...
    os.symlink(tmp_path / "a", tmp_path / "alias")  # same directory twice
    os.symlink("self", tmp_path / "self")  # self-referencing file symlink (ELOOP)
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    found = discover(tmp_path)
    real = {p.resolve() for p in found}
    assert len(found) == len(real) == 1
    assert real == {(tmp_path / "a" / "x.png").resolve()}


# ----------------------------------------------------------------------------- decoding
def test_color_modes_become_luminance(rng):
    gray = make_xray(1, rng, size=(50, 70))
    rgb = np.stack([gray, np.roll(gray, 3, axis=1), 255 - gray], axis=-1)
    expected = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    d = decode_gray(png_bytes(Image.fromarray(rgb, "RGB")))
    assert d.gray.dtype == np.uint8 and d.gray.shape == (50, 70)
    assert (d.width, d.height, d.fmt) == (70, 50, "png")
    np.testing.assert_array_equal(d.gray, expected)
    # RGBA: alpha is ignored (not composited on black/white)
    alpha = rng.integers(0, 256, gray.shape, dtype=np.uint8)
    rgba = np.dstack([rgb, alpha])
    np.testing.assert_array_equal(decode_gray(png_bytes(Image.fromarray(rgba, "RGBA"))).gray,
                                  expected)
    # palette image: gray = luminance of the palette colours
    pal = Image.fromarray(rgb, "RGB").quantize(64)
    np.testing.assert_array_equal(decode_gray(png_bytes(pal)).gray,
                                  np.asarray(pal.convert("RGB").convert("L")))
    # plain gray passes through untouched
    np.testing.assert_array_equal(decode_gray(png_bytes(Image.fromarray(gray))).gray, gray)


def test_16bit_png_scaled_by_bit_depth_not_stretched(tmp_path):
    values = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit data
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    d = decode_gray(path.read_bytes())
    assert d.gray.dtype == np.uint8
    assert d.gray.min() == 0
    assert 15 <= d.gray.max() <= 16  # 4095 * 255 / 65535 ~ 15.9, never stretched to 255
    np.testing.assert_array_equal(d.gray, np.round(values.astype(np.float64) * 255 / 65535))
    full = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(full).save(path)
    assert decode_gray(path.read_bytes()).gray.tolist() == [[0, 128, 255]]


def test_resize_square_is_cv2_inter_area(rng):
    gray = make_xray(1, rng, size=(300, 217))
    out = resize_square(gray, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA))
    assert not np.array_equal(out, cv2.resize(gray, (64, 64), interpolation=cv2.INTER_LINEAR))
    same = make_xray(0, rng, size=64)
    np.testing.assert_array_equal(resize_square(same, 64), same)


def test_canonical_preprocessing_reports_metadata(tmp_path, rng):
    path = save_gray(tmp_path / "x.png", make_xray(0, rng, size=(120, 90)))
    c = canonical(path, 32)
    assert c.x.shape == (32, 32) and c.x.dtype == np.uint8
    assert (c.width, c.height, c.fmt) == (90, 120, "png")
    import hashlib

    assert c.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_jpeg_and_png_of_same_pixels_give_identical_features(tmp_path, rng):
    jpg = tmp_path / "a.jpeg"
    jpg.write_bytes(jpeg_bytes(make_xray(1, rng, size=(210, 180))))
    decoded = decode_gray(jpg.read_bytes()).gray
    png = save_gray(tmp_path / "a.png", decoded)
    a, b = canonical(jpg, 64), canonical(png, 64)
    np.testing.assert_array_equal(a.x, b.x)
    feats = HogLbpFeatures(image_size=64).fit(None)
    np.testing.assert_array_equal(feats.transform_one(a.x), feats.transform_one(b.x))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes whose valid IHDR announces ``width x height`` 8-bit gray pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 1000

    def no_load(self):  # decoding 10^10 pixels must never start
        raise AssertionError("Image.load() called on a decompression bomb")

    monkeypatch.setattr(Image.Image, "load", no_load)
    from PIL import PngImagePlugin

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_load, raising=False)
    with pytest.raises(ImageError) as info:
        canonical(path, 64)
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert "100000x100000" in info.value.message


def test_max_pixels_is_configurable(rng):
    data = png_bytes(Image.fromarray(make_xray(0, rng, size=(100, 100))))
    with pytest.raises(ImageError) as info:
        decode_gray(data, max_pixels=9_999)
    assert info.value.kind is ErrorKind.TOO_LARGE
    assert decode_gray(data, max_pixels=10_000).gray.shape == (100, 100)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_files(tmp_path, rng, fmt):
    gray = make_xray(1, rng, size=(200, 160))
    data = jpeg_bytes(gray) if fmt == "jpeg" else png_bytes(Image.fromarray(gray))
    for cut in (len(data) // 2, 40):
        path = tmp_path / f"cut{cut}.{fmt}"
        path.write_bytes(data[:cut])
        assert load_error(path) is ErrorKind.TRUNCATED, cut


def test_empty_and_random_bytes(tmp_path):
    (tmp_path / "empty.jpeg").write_bytes(b"")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(5000))
    assert load_error(tmp_path / "empty.jpeg") is ErrorKind.EMPTY
    assert load_error(tmp_path / "noise.png") is ErrorKind.NOT_IMAGE


def test_directory_and_vanished_file_are_unreadable(tmp_path):
    (tmp_path / "dir.png").mkdir()
    assert load_error(tmp_path / "dir.png") is ErrorKind.UNREADABLE
    assert load_error(tmp_path / "gone.png") is ErrorKind.UNREADABLE


def test_unreadable_permissions(tmp_path, rng):
    path = save_gray(tmp_path / "secret.png", make_xray(0, rng, size=40))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions (root)")
        with pytest.raises(ImageError) as info:
            read_bytes(path)
        assert info.value.kind is ErrorKind.UNREADABLE
        assert load_error(path) is ErrorKind.UNREADABLE
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("suffix,fmt", [(".bmp", "bmp"), (".tif", "tiff")])
def test_bmp_and_tiff_decode(tmp_path, rng, suffix, fmt):
    gray = make_xray(0, rng, size=(90, 110))
    path = save_gray(tmp_path / f"x{suffix}", gray)
    d = decode_gray(path.read_bytes())
    assert d.fmt == fmt
    np.testing.assert_array_equal(d.gray, gray)
    rgb_path = tmp_path / f"rgb{suffix}"
    Image.fromarray(np.dstack([gray] * 3), "RGB").save(rgb_path)
    np.testing.assert_array_equal(decode_gray(rgb_path.read_bytes()).gray, gray)


@pytest.mark.parametrize("bits", [10, 12, 16, 24, 32])
def test_bit_depth_scaling_is_exact_across_row_bands(bits):
    """Scaling works a band of rows at a time (bounded memory on huge 16-bit images); it must
    equal the one-shot rounding v * 255 / (2**bits - 1) everywhere, extremes included."""
    from xray_score.io.decode import scale_bits as _scale_bits

    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    arr = rng.integers(0, top + 1, (517, 7), dtype=np.int64)  # 517: two full bands + a part
    arr[0, :2], arr[-1, -2:] = (0, top), (top, 0)
    want = ((arr * 255 + top // 2) // top).astype(np.uint8)
    got = _scale_bits(arr, bits, rows=256)
    np.testing.assert_array_equal(got, want)
    assert got[0, 1] == 255 and got[0, 0] == 0
