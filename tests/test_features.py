"""HogLbpFeatures behaves as a scikit-learn transformer and refuses the wrong input size."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from conftest import make_xray
from xray_score.classical.features import HogLbpFeatures
from xray_score.io.decode import resize_square


def images(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = np.stack([resize_square(make_xray(int(label), rng, size=(140, 120)), size)
                  for label in y])
    return x, y


def test_get_set_params_and_clone():
    f = HogLbpFeatures(image_size=64, hog_pixels_per_cell=8, lbp_points=(8,), lbp_radii=(1,),
                       clahe=True)
    params = f.get_params()
    assert params["image_size"] == 64 and params["hog_pixels_per_cell"] == 8
    assert params["lbp_points"] == (8,) and params["clahe"] is True
    g = clone(f)
    assert g is not f and g.get_params() == params
    g.set_params(intensity_bins=0, lbp_grid=2)
    assert g.intensity_bins == 0 and g.lbp_grid == 2
    assert f.intensity_bins == 16  # the original is untouched


def test_shape_matches_n_features_and_is_float32():
    x, _ = images(3)
    for f in (HogLbpFeatures(image_size=64),
              HogLbpFeatures(image_size=64, hog_pixels_per_cell=8, lbp_grid=2, intensity_bins=0),
              HogLbpFeatures(image_size=64, lbp_points=(8, 16, 24), lbp_radii=(1, 2, 3))):
        out = f.fit_transform(x)
        assert out.shape == (3, f.n_features_)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        np.testing.assert_array_equal(out[1], f.transform_one(x[1]))
        assert f.transform(x[0]).shape == (1, f.n_features_)  # one 2-D image
    assert HogLbpFeatures(image_size=64).transform(np.zeros((0, 64, 64), np.uint8)).shape[0] == 0


def test_different_settings_give_different_sizes():
    a = HogLbpFeatures(image_size=64).n_features_
    b = HogLbpFeatures(image_size=64, intensity_bins=0).n_features_
    assert a - b == 16


def test_lbp_histograms_sum_to_one_per_region():
    f = HogLbpFeatures(image_size=64, lbp_points=(8,), lbp_radii=(1,), lbp_grid=4,
                       intensity_bins=8)
    x, _ = images(1)
    out = f.transform_one(x[0])
    hist = out[-8:]
    assert hist.sum() == pytest.approx(1.0, abs=1e-5)
    lbp = out[-8 - 16 * 10:-8].reshape(16, 10)
    np.testing.assert_allclose(lbp.sum(axis=1), 1.0, atol=1e-5)


def test_clahe_changes_features():
    x, _ = images(2)
    plain = HogLbpFeatures(image_size=64).fit_transform(x)
    eq = HogLbpFeatures(image_size=64, clahe=True).fit_transform(x)
    assert plain.shape == eq.shape
    assert not np.allclose(plain, eq)


def test_refuses_wrong_size_and_bad_params():
    f = HogLbpFeatures(image_size=64)
    with pytest.raises(ValueError, match="64"):
        f.transform_one(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        f.transform(np.zeros((2, 64, 48), np.uint8))
    with pytest.raises(ValueError):
        HogLbpFeatures(image_size=64, lbp_points=(8, 16), lbp_radii=(1,)).fit(None)
    with pytest.raises(ValueError):
        HogLbpFeatures(image_size=66, lbp_grid=4).fit(None)


def test_inside_a_pipeline_with_a_classifier():
    x, y = images(40, seed=1)
    pipe = Pipeline([("features", HogLbpFeatures(image_size=64)),
                     ("clf", LogisticRegression(max_iter=2000))])
    pipe.fit(x[:30], y[:30])
    assert pipe.predict(x[30:]).shape == (10,)
    assert pipe.score(x[30:], y[30:]) >= 0.8
    pipe.set_params(features__intensity_bins=0)
    assert pipe.named_steps["features"].intensity_bins == 0
    cloned = clone(pipe).fit(x[:30], y[:30])
    assert cloned.predict_proba(x[30:]).shape == (10, 2)


@pytest.mark.parametrize("size,ppc,cpb,orientations", [(64, 8, 2, 9), (96, 12, 2, 9),
                                                         (50, 7, 3, 7), (64, 16, 2, 12)])
def test_batch_hog_equals_scikit_image_bit_for_bit(size, ppc, cpb, orientations):
    """The batched HOG is scikit-image's HOG: same values, not just close ones."""
    from skimage.feature import hog

    from xray_score.classical.hog import hog_batch

    rng = np.random.default_rng(size + ppc)
    x, _ = images(4, size=size, seed=size)
    batch = np.concatenate([x, rng.integers(0, 256, (3, size, size), dtype=np.uint8),
                            np.full((1, size, size), 9, np.uint8)])
    want = np.stack([hog(img, orientations, (ppc, ppc), (cpb, cpb), block_norm="L2-Hys")
                     for img in batch])
    np.testing.assert_array_equal(hog_batch(batch, orientations, ppc, cpb), want)


@pytest.mark.parametrize("points,radius", [(8, 1), (16, 2), (24, 3), (8, 1.5), (4, 1),
                                           (12, 2.5)])
def test_batch_lbp_equals_scikit_image(points, radius):
    """Bit for bit, ties included: where a sample equals its centre exactly (flat areas,
    diagonal ramps, few gray levels), scikit-image's own round-off decides the bit."""
    from skimage.feature import local_binary_pattern

    from xray_score.classical.lbp import lbp_uniform_batch

    rng = np.random.default_rng(points)
    x, _ = images(3, size=48, seed=points)
    flat = np.full((1, 48, 48), 120, np.uint8)  # flat areas: the interpolation's round-off
    r, c = np.mgrid[:48, :48]
    ties = np.stack([(r + c) * 3 % 256, (r - c) * 5 % 256, (r // 3 + c // 3) % 2 * 200,
                     rng.choice([0, 1, 100, 200, 255], (48, 48)),
                     np.kron(rng.integers(0, 256, (12, 12)), np.ones((4, 4)))]).astype(np.uint8)
    batch = np.concatenate([x, rng.integers(0, 256, (3, 48, 48), dtype=np.uint8), flat, ties])
    want = np.stack([local_binary_pattern(img, points, radius, "uniform") for img in batch])
    np.testing.assert_array_equal(lbp_uniform_batch(batch, points, radius), want)


def test_features_of_a_batch_equal_those_of_each_image_alone():
    """A worker scores a chunk at once: no image's features may depend on its neighbours."""
    x, _ = images(6)
    f = HogLbpFeatures(image_size=64, lbp_size=32)
    together = f.transform(x)
    alone = np.stack([f.transform_one(img) for img in x])
    np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize("bins", [16, 10, 7, 1, 256])
def test_intensity_histogram_counts_gray_value_v_in_bin_v_times_bins_over_256(bins):
    from xray_score.classical.extract import intensity_histograms

    rng = np.random.default_rng(bins)
    batch = np.concatenate([rng.integers(0, 256, (3, 40, 40), dtype=np.uint8),
                            np.full((1, 40, 40), 255, np.uint8)])
    level = np.arange(256) * bins // 256
    want = np.stack([np.bincount(level[img.ravel()], minlength=bins) for img in batch]) / 1600
    np.testing.assert_array_equal(intensity_histograms(batch, bins), want)


@pytest.mark.parametrize("size,ppc,cpb,orientations", [(96, 12, 2, 9), (64, 8, 2, 9),
                                                         (50, 7, 3, 7)])
def test_fast_hog_has_scikit_images_layout_and_values(size, ppc, cpb, orientations):
    """The same descriptor up to OpenCV's float32 angles: a pixel within a hair of a bin edge
    may change bins, nothing else differs."""
    from skimage.feature import hog

    from xray_score.classical.hog import hog_cells_fast, l2hys_blocks

    x, _ = images(6, size=size, seed=size)
    want = np.stack([hog(img, orientations, (ppc, ppc), (cpb, cpb), block_norm="L2-Hys")
                     for img in x])
    got = l2hys_blocks(hog_cells_fast(x, orientations, ppc), cpb)
    assert got.shape == want.shape
    assert np.mean(np.abs(got - want) > 1e-4) < 0.01
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.9999


def test_fast_features_of_a_batch_equal_those_of_each_image_alone_and_only_hog_differs():
    x, _ = images(6, size=96)
    fast = HogLbpFeatures(image_size=96, hog_pixels_per_cell=12, lbp_points=(8,),
                          lbp_radii=(1,), lbp_size=48, method="fast")
    together = fast.transform(x)
    np.testing.assert_array_equal(together, np.stack([fast.transform_one(img) for img in x]))
    exact = clone(fast).set_params(method="skimage").transform(x)
    hog = slice(*fast.blocks()[0][1:])
    np.testing.assert_array_equal(together[:, hog.stop:], exact[:, hog.stop:])  # LBP, histogram
    differ = np.abs(together[:, hog] - exact[:, hog])
    assert differ.max() < 0.05 and np.mean(differ > 1e-5) < 0.05  # a few pixels change bins


@pytest.mark.parametrize("params,message", [
    ({"method": "quick"}, "method 'quick'"),
    ({"method": "fast", "hog_orientations": 200}, "127"),
])
def test_fast_method_refuses_what_it_cannot_compute(params, message):
    with pytest.raises(ValueError, match=message):
        HogLbpFeatures(image_size=64, **{"lbp_points": (8,), "lbp_radii": (1,), **params}).fit(
            np.zeros((1, 64, 64), np.uint8))


def test_a_pipeline_chooses_the_feature_method_and_a_wrong_one_is_a_usage_error():
    import yaml

    from xray_score.classical.kind import feature_extractor
    from xray_score.errors import UsageError
    from xray_score.resources import pipeline_path

    spec = yaml.safe_load(pipeline_path("baseline").read_text())
    assert feature_extractor(spec).method == "fast"  # the shipped pipeline's (release 0.3.0)
    x, _ = images(2, size=spec["input_size"])
    assert feature_extractor(spec).transform_batch(x).shape == (2, 1940)
    del spec["features"]["method"]
    assert feature_extractor(spec).method == "skimage"  # a spec naming no method: exact
    spec["features"]["method"] = "fastest"
    with pytest.raises(UsageError, match="method 'fastest'"):
        feature_extractor(spec)
