"""DICOM input: canonical pixels agree with PNG, LUT/window/inversion rules, bombs, ids."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from conftest import canonical as canonical_result  # noqa: E402
from conftest import make_xray  # noqa: E402
from xray_score.errors import ErrorKind, ImageError  # noqa: E402
from xray_score.io import decode as images  # noqa: E402
from xray_score.io.discover import sniff_format  # noqa: E402
from xray_score.io.preprocess import FileResult  # noqa: E402
from xray_score.model.bundle import Bundle  # noqa: E402

LEGACY_CNN = Path(__file__).parent / "fixtures" / "legacy-0.1.0" / "cnn"

SIZE = 32


# ---------------------------------------------------------------- generators (local to this file)
def make_dicom(
    arr: np.ndarray,
    *,
    photometric: str | None = None,
    bits_stored: int | None = None,
    signed: bool = False,
    window: tuple[float, float] | None = None,
    voi_function: str | None = None,
    voi_lut: tuple[list[int], list[int]] | None = None,
    rescale: tuple[float, float] | None = None,
    syntax: str = ExplicitVRLittleEndian,
    patient_id: str = "P0001",
    **attrs: object,
) -> bytes:
    """A DICOM file (bytes) from an array: (H, W) gray, (H, W, 3) RGB or (F, H, W) frames."""
    multi = arr.ndim == 3 and arr.shape[-1] != 3
    rgb = arr.ndim == 3 and arr.shape[-1] == 3
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.PatientID = patient_id
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape[-3:-1] if rgb else arr.shape[-2:]
    if multi:
        ds.NumberOfFrames = arr.shape[0]
    ds.SamplesPerPixel = 3 if rgb else 1
    if rgb:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric or ("RGB" if rgb else "MONOCHROME2")
    allocated = arr.dtype.itemsize * 8
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        descriptor, data = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", descriptor)
        item.add_new(0x00283006, "US", data)
        ds.VOILUTSequence = [item]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    if syntax != ExplicitVRLittleEndian:
        if syntax == ImplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax, np.ascontiguousarray(arr), generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def ramp(shape: tuple[int, int], top: int, dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def canonical(tmp_path: Path, name: str, data: bytes) -> FileResult:
    path = tmp_path / name
    path.write_bytes(data)
    return canonical_result(path, SIZE)


def gray(data: bytes, **kw: int) -> images.Decoded:
    return images.decode_gray(data, **kw)


def _encoder_ok(uid: str) -> bool:
    from pydicom.pixels import get_encoder

    try:
        return get_encoder(uid).is_available
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- same pixels as PNG
def test_8bit_dicom_matches_png(tmp_path: Path) -> None:
    arr = ramp((40, 56), 255, np.uint8)
    a = canonical(tmp_path, "a.dcm", make_dicom(arr))
    b = canonical(tmp_path, "a.png", png_bytes(arr))
    assert a.fmt == "dicom" and b.fmt == "png"
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.width, a.height) == (56, 40)
    np.testing.assert_array_equal(gray(make_dicom(arr)).gray, arr)


def test_16bit_dicom_without_window_matches_16bit_png(tmp_path: Path) -> None:
    arr = ramp((48, 40), 65535, np.uint16, seed=1)
    a = canonical(tmp_path, "a.dcm", make_dicom(arr))
    b = canonical(tmp_path, "a.png", png_bytes(arr))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(gray(make_dicom(arr)).gray, gray(png_bytes(arr)).gray)


def test_12bit_scales_by_bits_stored_not_min_max() -> None:
    arr = np.array([[0, 1000, 2048, 4095], [100, 200, 300, 400]], dtype=np.uint16)
    out = gray(make_dicom(arr, bits_stored=12)).gray
    expected = np.floor(arr.astype(np.int64) * 255 / 4095 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    narrow = np.full((4, 4), 1000, dtype=np.uint16)
    narrow[0, 0] = 1100  # a min-max stretch would map these to 0..255
    out = gray(make_dicom(narrow, bits_stored=12)).gray
    assert out.max() == round(1100 * 255 / 4095) and out.min() == round(1000 * 255 / 4095)


def test_signed_16bit_is_shifted_by_minimum(tmp_path: Path) -> None:
    arr = ramp((30, 30), 65535, np.uint16, seed=2)
    signed = (arr.astype(np.int32) - 32768).astype(np.int16)
    a = canonical(tmp_path, "s.dcm", make_dicom(signed, signed=True))
    b = canonical(tmp_path, "u.png", png_bytes(arr))
    np.testing.assert_array_equal(a.x, b.x)


def test_rgb_dicom_matches_rgb_png(tmp_path: Path) -> None:
    arr = ramp((20, 24, 3), 255, np.uint8, seed=3).reshape(20, 24, 3)
    a = canonical(tmp_path, "c.dcm", make_dicom(arr))
    b = canonical(tmp_path, "c.png", png_bytes(arr))
    np.testing.assert_array_equal(a.x, b.x)


def test_monochrome1_is_inverted() -> None:
    arr = ramp((16, 16), 255, np.uint8, seed=4)
    out = gray(make_dicom(arr, photometric="MONOCHROME1")).gray
    np.testing.assert_array_equal(out, 255 - arr)
    arr16 = ramp((16, 16), 4095, np.uint16, seed=5)
    m2 = gray(make_dicom(arr16, bits_stored=12)).gray
    m1 = gray(make_dicom(arr16, bits_stored=12, photometric="MONOCHROME1")).gray
    np.testing.assert_array_equal(m1, 255 - m2)


# ---------------------------------------------------------------- VOI: window and LUT
def _linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with y in 0..255, written out independently."""
    x = x.astype(np.float64)
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= lo, 0, np.where(x > hi, 255, y))
    return np.rint(y).astype(np.uint8)


def test_window_centre_width_maps_linearly_to_0_255() -> None:
    arr = np.array([[0, 1536, 1537, 2048, 2559, 2560, 4095, 1800]], dtype=np.uint16)
    out = gray(make_dicom(arr, bits_stored=12, window=(2048, 1024))).gray
    np.testing.assert_array_equal(out, _linear_window(arr, 2048, 1024))
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 5] == 255 and out[0, 6] == 255
    assert out[0, 3] == 128


def test_window_after_rescale_and_monochrome1() -> None:
    arr = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    ds_bytes = make_dicom(arr, bits_stored=12, window=(0, 2000), rescale=(1.0, -1024.0))
    out = gray(ds_bytes).gray
    np.testing.assert_array_equal(out, _linear_window(arr.astype(np.int64) - 1024, 0, 2000))
    inv = gray(make_dicom(arr, bits_stored=12, window=(0, 2000), rescale=(1.0, -1024.0),
                          photometric="MONOCHROME1")).gray
    np.testing.assert_array_equal(inv, 255 - out)


def test_window_agrees_with_pydicom_apply_voi_lut() -> None:
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ramp((24, 24), 4095, np.uint16, seed=6)
    data = make_dicom(arr, bits_stored=12, window=(1500, 800))
    ds = dcmread(io.BytesIO(data))
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds) * 255 / 4095
    out = gray(data).gray.astype(float)
    assert np.abs(out - ref).max() <= 1.0


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_voi_functions(function: str) -> None:
    arr = np.array([[0, 1000, 2000, 3000, 4095]], dtype=np.uint16)
    out = gray(make_dicom(arr, bits_stored=12, window=(2000, 1000), voi_function=function)).gray
    assert out[0, 0] == 0 and out[0, 4] == 255 and out[0, 2] in (127, 128)
    assert list(out[0]) == sorted(out[0])


def test_voi_lut_sequence_takes_precedence() -> None:
    arr = np.array([[0, 1, 2, 100, 4095]], dtype=np.uint16)
    lut = [255 - (i % 256) for i in range(4096)]
    out = gray(make_dicom(arr, bits_stored=12, window=(2048, 4096),
                          voi_lut=([4096, 0, 8], lut))).gray
    np.testing.assert_array_equal(out, np.array([[255, 254, 253, 155, 0]], dtype=np.uint8))


def test_invalid_window_falls_back_to_bit_depth_scaling() -> None:
    arr = ramp((8, 8), 4095, np.uint16, seed=7)
    plain = gray(make_dicom(arr, bits_stored=12)).gray
    np.testing.assert_array_equal(gray(make_dicom(arr, bits_stored=12, window=(10, 0))).gray,
                                  plain)


# ---------------------------------------------------------------- frames, syntaxes, metadata
def test_multiframe_scores_first_frame_and_says_so() -> None:
    frames = np.stack([np.full((12, 10), v, dtype=np.uint8) for v in (10, 200, 90)])
    dec = gray(make_dicom(frames))
    assert dec.gray.shape == (12, 10)
    assert (dec.gray == 10).all()
    assert dec.extra["frames"] == 3
    assert dec.extra["note"] == "scored frame 1 of 3"


def test_metadata_is_returned(tmp_path: Path) -> None:
    data = make_dicom(ramp((8, 8), 255, np.uint8), patient_id="CHILD-42")
    dec = gray(data)
    assert dec.extra["PatientID"] == "CHILD-42"
    assert dec.extra["StudyInstanceUID"] == "1.2.3.4.5"
    assert dec.extra["SOPInstanceUID"].startswith("1.2.")
    assert dec.extra["frames"] == 1 and "note" not in dec.extra
    assert canonical(tmp_path, "m.dcm", data).extra["PatientID"] == "CHILD-42"
    assert canonical(tmp_path, "m.png", png_bytes(dec.gray)).extra == {}


@pytest.mark.parametrize("bits", [8, 16])
def test_rle_and_implicit_vr_decode_like_native(bits: int) -> None:
    top = 255 if bits == 8 else 65535
    arr = ramp((33, 17), top, np.uint8 if bits == 8 else np.uint16, seed=bits)
    native = gray(make_dicom(arr)).gray
    for syntax in (RLELossless, ImplicitVRLittleEndian):
        np.testing.assert_array_equal(gray(make_dicom(arr, syntax=syntax)).gray, native)


@pytest.mark.skipif(not _encoder_ok(JPEG2000Lossless), reason="no JPEG 2000 encoder installed")
def test_jpeg2000_lossless_decodes_like_native() -> None:
    arr = ramp((40, 32), 4095, np.uint16, seed=9)
    native = gray(make_dicom(arr, bits_stored=12)).gray
    j2k = gray(make_dicom(arr, bits_stored=12, syntax=JPEG2000Lossless))
    np.testing.assert_array_equal(j2k.gray, native)


def test_rle_multiframe() -> None:
    frames = np.stack([np.full((8, 8), v, dtype=np.uint8) for v in (7, 8)])
    dec = gray(make_dicom(frames, syntax=RLELossless))
    assert (dec.gray == 7).all() and dec.extra["frames"] == 2


def test_dicom_with_tiff_preamble_is_sniffed_as_dicom() -> None:
    """Regression: a TIFF header in the 128-byte preamble made images.py call it TIFF."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom(ramp((8, 8), 255, np.uint8))))
    ds.preamble = b"II*\x00" + b"\0" * 124
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert sniff_format(buf.getvalue()[:132]) == "dicom"
    assert gray(buf.getvalue()).fmt == "dicom"


# ---------------------------------------------------------------- hostile files
def test_absurd_dimensions_are_too_large_without_allocating() -> None:
    arr = np.zeros((4, 4), dtype=np.uint16)
    data = make_dicom(arr)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows = ds.Columns = 60000
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as err:
            gray(buf.getvalue())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.kind == ErrorKind.TOO_LARGE
    assert peak < 20 << 20


def test_max_pixels_is_honoured() -> None:
    data = make_dicom(ramp((100, 100), 255, np.uint8))
    with pytest.raises(ImageError) as err:
        gray(data, max_pixels=9_999)
    assert err.value.kind == ErrorKind.TOO_LARGE
    assert gray(data, max_pixels=10_000).width == 100


def test_huge_frame_count_with_tiny_data_is_typed() -> None:
    data = make_dicom(ramp((4, 4), 255, np.uint8), NumberOfFrames=1_000_000_000)
    tracemalloc.start()
    try:
        try:
            dec = gray(data)
            assert dec.gray.shape == (4, 4)
        except ImageError as exc:
            assert exc.kind in (ErrorKind.TRUNCATED, ErrorKind.TOO_LARGE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless])
def test_truncated_dicom_is_typed(syntax: str) -> None:
    data = make_dicom(ramp((64, 64), 65535, np.uint16, seed=11), syntax=syntax)
    for cut in (140, 200, 300, len(data) // 2, len(data) - 100):
        with pytest.raises(ImageError) as err:
            gray(data[:cut])
        assert err.value.kind == ErrorKind.TRUNCATED, (cut, err.value)


def test_codestream_claiming_huge_size_is_too_large() -> None:
    """A JPEG 2000 frame whose SIZ says 60000x60000 inside a 16x16 DICOM: refused unread."""
    from pydicom.encaps import encapsulate

    siz = (b"\xff\x4f\xff\x51\x00\x29\x00\x00" + (60000).to_bytes(4, "big") * 2
           + b"\0" * 8 + b"\0" * 16 + b"\x00\x01\x07\x01\x01\xff\x93\xff\xd9")
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((16, 16), np.uint8))))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([siz])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError) as err:
        gray(buf.getvalue())
    assert err.value.kind == ErrorKind.TOO_LARGE and "compressed frame" in err.value.message


def test_syntax_without_decoder_is_unsupported() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint8))))
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\0\0\1\xb3" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError) as err:
        gray(buf.getvalue())
    assert err.value.kind == ErrorKind.UNSUPPORTED
    assert "MPEG2" in err.value.message


def test_missing_plugin_is_unsupported_with_syntax_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels import get_decoder

    data = make_dicom(ramp((8, 8), 255, np.uint8), syntax=RLELossless)
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ["pylibjpeg-rle"]})
    monkeypatch.setattr(decoder, "_decoder", None, raising=False)
    with pytest.raises(ImageError) as err:
        gray(data)
    assert err.value.kind == ErrorKind.UNSUPPORTED
    assert "RLE Lossless" in err.value.message and "pylibjpeg-rle" in err.value.message


def test_non_image_dicom_is_not_image() -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.preamble = meta, b"\0" * 128
    ds.SOPClassUID, ds.PatientID = meta.MediaStorageSOPClassUID, "X"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(ImageError) as err:
        gray(buf.getvalue())
    assert err.value.kind == ErrorKind.NOT_IMAGE


def test_deflate_bomb_is_too_large() -> None:
    """Deflated Explicit VR: a dataset that inflates far beyond the pixel budget is refused."""
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint8))))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    good = buf.getvalue()
    assert gray(good).width == 8
    # Swap in a body that inflates to ~200 MB of padding (a private OB element).
    head_len = good.index(b"\x02\x00\x10\x00") + 8
    head_len += int.from_bytes(good[head_len - 2:head_len], "little")
    body = b"\x09\x00\x10\x00OB\0\0" + (200 << 20).to_bytes(4, "little")
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    raw = comp.compress(body) + b"".join(comp.compress(chunk) for _ in range(200)) + comp.flush()
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as err:
            gray(good[:head_len] + raw, max_pixels=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.kind == ErrorKind.TOO_LARGE and "inflates" in err.value.message
    assert peak < 30 << 20


# ---------------------------------------------------------------- pydicom's bundled files
def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name, download=False)
    except Exception:  # noqa: BLE001
        path = None
    if not path:
        pytest.skip(f"{name} not available offline")
    return Path(path)


def test_bundled_mr_small_all_syntaxes_agree() -> None:
    ref = gray(_testdata("MR_small.dcm").read_bytes())
    assert ref.extra["PatientID"] == "4MR1"
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        try:
            other = gray(_testdata(name).read_bytes())
        except ImageError as exc:
            assert exc.kind == ErrorKind.UNSUPPORTED, (name, exc)
            continue
        np.testing.assert_array_equal(other.gray, ref.gray, err_msg=name)


def test_bundled_truncated_and_colour_files() -> None:
    with pytest.raises(ImageError) as err:
        gray(_testdata("MR_truncated.dcm").read_bytes())
    assert err.value.kind == ErrorKind.TRUNCATED
    rgb = gray(_testdata("SC_rgb_rle.dcm").read_bytes())
    assert rgb.gray.shape == (100, 100) and rgb.gray.dtype == np.uint8
    multi = gray(_testdata("SC_rgb_rle_2frame.dcm").read_bytes())
    assert multi.extra["note"] == "scored frame 1 of 2"


def test_every_bundled_file_gives_decoded_or_typed_error() -> None:
    folder = _testdata("MR_small.dcm").parent
    for path in sorted(folder.glob("*.dcm")):
        try:
            dec = gray(path.read_bytes())
            assert dec.gray.dtype == np.uint8 and dec.gray.ndim == 2
        except ImageError as exc:
            assert exc.kind in ErrorKind


def test_dicom_patient_id_drives_patient_split(tmp_path):
    """Two DICOM images of one patient (no Kermany names) never straddle the split."""
    from xray_score.io.datasets import patient_split, read_labeled

    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        for patient in range(6):
            for k in range(2):
                arr = rng.integers(0, 255, (40, 40), dtype=np.uint8)
                path = tmp_path / label / f"scan_{label}_{patient}_{k}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(make_dicom(arr, patient_id=f"P-{label}-{patient}"))
    df = read_labeled(tmp_path)
    assert df["patient_id"].str.startswith("dicom:").all()
    assert df["patient_id"].nunique() == 12
    train, val = patient_split(df, 0.34, seed=0)
    assert not set(train["patient_id"]) & set(val["patient_id"])


def test_reports_resample_dicom_folders_by_patient_id(baseline_bundle, tmp_path):
    """DICOM files carry no Kermany name: their PatientID must group them for the bootstrap
    (evaluate and compare alike), not one image per group."""
    from xray_score.commands.compare import compare_folder
    from xray_score.commands.evaluate import score_folder
    from xray_score.evaluation.results import patient_groups

    rng = np.random.default_rng(3)
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "dcm" / label).mkdir(parents=True)
        for patient in range(2):
            for image in range(3):
                data = make_dicom(make_xray(label, rng, size=96),
                                  patient_id=f"{label[:1]}{patient}")
                (tmp_path / "dcm" / label / f"scan-{patient}-{image}.dcm").write_bytes(data)
    df, _, _ = score_folder(baseline_bundle, tmp_path / "dcm", tmp_path / "r.csv", 2)
    assert len(df) == 12 and len(set(patient_groups(df))) == 4
    _, wide = compare_folder([baseline_bundle, Bundle.load(LEGACY_CNN)], tmp_path / "dcm",
                             tmp_path / "c.html", tmp_path / "c.csv")
    assert len(set(patient_groups(wide))) == 4
