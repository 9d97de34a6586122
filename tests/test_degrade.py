"""Image-quality augmentation (random blur and JPEG re-compression) for CNN training."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from xray_score.deep.degrade import degrade, degrade_batch
from xray_score.deep.spec import normalize_spec
from xray_score.errors import UsageError


def textured(n: int = 4, size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    return np.clip(base + rng.normal(0, 20, (n, size, size)), 0, 255).astype(np.uint8)


def sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(img, cv2.CV_64F).var())


def test_blur_and_jpeg_change_the_image_as_asked():
    img = textured(1)[0]
    rng = np.random.default_rng(0)
    blurred = degrade(img, rng, blur=1.5, jpeg_quality=None, p=1.0)
    assert blurred.dtype == np.uint8 and blurred.shape == img.shape
    assert sharpness(blurred) < 0.7 * sharpness(img)
    compressed = degrade(img, rng, blur=0.0, jpeg_quality=(20, 20), p=1.0)
    assert compressed.shape == img.shape and not np.array_equal(compressed, img)
    assert np.array_equal(degrade(img, rng, blur=1.5, jpeg_quality=(20, 20), p=0.0), img)


def test_sharpening_reaches_crisper_images_than_the_input():
    img = cv2.GaussianBlur(textured(1)[0], (0, 0), 1.0)  # a soft image, like the 224 copies
    rng = np.random.default_rng(1)
    sharper = [degrade(img, rng, sharpen=2.0, p=1.0) for _ in range(5)]
    assert all(s.dtype == np.uint8 and s.shape == img.shape for s in sharper)
    assert max(sharpness(s) for s in sharper) > 1.5 * sharpness(img)


def test_batches_are_reproducible_from_the_seed_and_leave_the_input_alone():
    x = textured(8)
    before = x.copy()
    aug = {"blur": 1.0, "jpeg_quality": [30, 90], "degrade_p": 0.5}
    a = degrade_batch(x, np.random.default_rng([0, 0, 1]), aug)
    b = degrade_batch(x, np.random.default_rng([0, 0, 1]), aug)
    c = degrade_batch(x, np.random.default_rng([0, 1, 1]), aug)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, before)
    changed = [not np.array_equal(a[i], x[i]) for i in range(len(x))]
    assert any(changed) and not all(changed)  # p = 0.5 per degradation: some untouched


@pytest.mark.parametrize("aug", [{"blur": -1}, {"blur": 9}, {"sharpen": -0.5}, {"jpeg_quality": 75},
                                 {"jpeg_quality": [90, 30]}, {"jpeg_quality": [0, 50]},
                                 {"degrade_p": 1.5}])
def test_bad_options_are_usage_errors(aug):
    with pytest.raises(UsageError, match="augmentation"):
        normalize_spec({"backbone": "MobileNetV2", "augmentation": aug})


def test_training_batches_degrade_and_validation_batches_do_not():
    keras = pytest.importorskip("keras")  # noqa: F841 - _Batches is a keras PyDataset
    from xray_score.deep.train import _Batches

    x = textured(16, size=32)
    y = np.arange(16) % 2
    aug = {"blur": 1.0, "jpeg_quality": [20, 60], "degrade_p": 1.0}
    train = _Batches(x, y, 8, True, 3, degrade=aug)
    val = _Batches(x, y, 8, False, 0)
    xb, _ = val[0]
    np.testing.assert_array_equal(xb[..., 0], x[:8].astype(np.float32))
    first, again = train[0][0], train[0][0]
    np.testing.assert_array_equal(first, again)  # same epoch and batch: same draws
    idx = np.sort(train.order[:8])
    assert not np.array_equal(first[..., 0], x[idx].astype(np.float32))
    train.on_epoch_end()
    assert train.epoch == 1
