"""Re-framing: the framing-shift check and the augmentation that trains against it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_xray, save_gray
from xray_score.errors import ImageError, UsageError
from xray_score.evaluation.framing import framing_headline, framing_summary
from xray_score.io.preprocess import Preprocessor
from xray_score.io.reframe import REFRAMINGS, ReframedPreprocessor, reframe, reframed_jpeg
from xray_score.model.augment import augment_batch, check_options, random_framing


def test_reframe_removes_the_given_shares_of_each_side():
    img = np.arange(200 * 100, dtype=np.uint32).reshape(200, 100)
    out = reframe(img, REFRAMINGS["thorax"])  # top 22 %, bottom 5 %, 10 % each side
    assert out.shape == (200 - 44 - 10, 100 - 10 - 10)
    assert out[0, 0] == img[44, 10] and out[-1, -1] == img[189, 89]
    with pytest.raises(ImageError):
        reframe(np.zeros((10, 10)), REFRAMINGS["tight"])


def test_reframed_preprocessor_gives_the_file_then_each_copy(tmp_path, rng):
    path = save_gray(tmp_path / "x.png", make_xray(0, rng, size=(300, 240)))
    inner = Preprocessor(size=32)
    boxes = (REFRAMINGS["thorax"], REFRAMINGS["loose"])
    result = ReframedPreprocessor(inner, boxes, 10**8)(str(path))
    assert result.ok and len(result.x) == 3
    np.testing.assert_array_equal(result.x[0], inner(str(path)).x)
    gray = np.asarray(make_xray(0, np.random.default_rng(1234), size=(300, 240)))
    assert reframed_jpeg(gray, boxes[0])[:3] == b"\xff\xd8\xff"  # a JPEG file
    assert not np.array_equal(result.x[1], result.x[0])
    assert ReframedPreprocessor(inner, boxes, 10**8).stack([result.x, result.x])[1].shape == (
        2, 32, 32)


def test_framing_summary_counts_flips_and_logit_changes():
    rows = []
    for i in range(4):  # normal films: flagged once cropped (a framing reader)
        rows += [{"path": f"n{i}", "true_label": "NORMAL", "variant": "original",
                  "p_pneumonia": 0.1}, {"path": f"n{i}", "true_label": "NORMAL",
                                        "variant": "thorax", "p_pneumonia": 0.9 if i < 3 else 0.2}]
    for i in range(2):  # pneumonia films: unmoved
        rows += [{"path": f"p{i}", "true_label": "PNEUMONIA", "variant": v, "p_pneumonia": 0.95}
                 for v in ("original", "thorax")]
    table = framing_summary(pd.DataFrame(rows), threshold=0.5).set_index(["variant",
                                                                          "true_label"])
    normal = table.loc[("thorax", "NORMAL")]
    assert normal["n"] == 4 and normal["flipped"] == 0.75 and normal["flagged_original"] == 0
    logit = np.log(0.9 / 0.1)
    want = (3 * (logit + np.log(9)) + (np.log(0.25) + np.log(9))) / 4
    assert normal["mean_dlogit"] == pytest.approx(want)
    assert table.loc[("thorax", "PNEUMONIA"), "flipped"] == 0
    assert framing_headline(table.reset_index())["normal_flagged_thorax_crop"] == 0.75


def test_random_framing_is_seeded_crops_and_zooms_out_without_black_borders():
    framing, intensity = check_options({"zoom_in": 0.45, "zoom_out": 0.15}, True)
    img = np.full((64, 64), 120, np.uint8)
    img[:, :32] = 200  # left half bright
    a = [random_framing(img, np.random.default_rng(s), framing) for s in range(30)]
    b = [random_framing(img, np.random.default_rng(s), framing) for s in range(30)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
    assert min(x.min() for x in a) >= 120  # reflected borders: no black margin appears
    bright = [float((x == 200).mean()) for x in a]
    assert max(bright) - min(bright) > 0.25  # the window moves and zooms
    both = augment_batch(np.stack([img, img]), np.random.default_rng(0), framing, intensity)
    assert both.shape == (2, 64, 64) and both.dtype == np.uint8
    with pytest.raises(UsageError):
        check_options({"zoom": 0.3}, None)


def test_training_records_a_check_half_kept_out_of_threshold_fitting(baseline_bundle):
    meta = baseline_bundle.meta
    split = meta["validation_split"]
    assert split["independent"]
    assert not set(split["check_patients"]) & set(split["calibration_patients"])
    assert meta["threshold"]["chosen_on"].startswith("calibration half")
    table = pd.DataFrame(meta["framing_check"]["table"])
    assert set(table["variant"]) == set(REFRAMINGS)
    assert meta["framing_check"]["headline"]["normal_flagged_thorax_crop"] is not None


def test_baseline_trains_on_reframed_copies(labeled_dir, tmp_path, tiny_spec):
    from xray_score.model.training import train_bundle

    spec = json.loads(json.dumps(tiny_spec))
    spec["augmentation"] = {"copies": 2, "framing": {"zoom_in": 0.3}, "intensity": True}
    bundle = train_bundle("baseline", labeled_dir, tmp_path / "b", spec, n_jobs=2)
    films = bundle.meta["training_data"]["train"]["n_images"]
    assert bundle.meta["training_rows"] == 3 * films  # each film and two re-framed copies
    assert bundle.history and Path(bundle.path / "model.lgb.txt").is_file()


def test_evaluate_report_has_the_framing_check(baseline_bundle, labeled_test_dir, tmp_path):
    from click.testing import CliRunner

    from xray_score.cli import main

    out = tmp_path / "e.html"
    result = CliRunner().invoke(main, ["evaluate", str(labeled_test_dir), "--model",
                                       str(baseline_bundle.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "Framing check" in html and "This folder" in html and "Recorded in the bundle" in html
    assert html.count("off_centre_left") == 4  # two classes, in both tables
    result = CliRunner().invoke(main, ["evaluate", str(labeled_test_dir), "--model",
                                       str(baseline_bundle.path), "--out", str(out),
                                       "--no-framing-check"])
    assert result.exit_code == 0 and "This folder" not in out.read_text()
