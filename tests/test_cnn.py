"""Fast tests of the Keras CNN path on tiny synthetic images (no ../shared files, no network)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from sklearn.metrics import roc_auc_score  # noqa: E402

from xray_score.deep import backbones, gradcam  # noqa: E402
from xray_score.deep import network as cnn  # noqa: E402
from xray_score.deep import predictor as cnn_predict  # noqa: E402
from xray_score.deep import train as cnn_train  # noqa: E402
from xray_score.errors import UsageError  # noqa: E402
from xray_score.hashing import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "pipelines" / "seeds").glob("*.yaml")) + [ROOT / "pipelines/cnn.yaml"]
S = 32


def synthetic(n: int, size: int = S, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 1: bright blob in the left 'lung'; class 0: smooth gradient only; plus noise."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2 + 1)[:n]
    yy, xx = np.mgrid[:size, :size]
    img = np.broadcast_to(xx / size * 120 + 40, (n, size, size)).astype(float)
    cx = size * rng.uniform(0.25, 0.4, n)[:, None, None]
    cy = size * rng.uniform(0.4, 0.6, n)[:, None, None]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size * 0.12) ** 2)) * 110
    img = img + y[:, None, None] * blob + rng.normal(0, 12, (n, size, size))
    return np.clip(img, 0, 255).astype(np.uint8), y


def _fake_backbone(path: Path, seed: int) -> Path:
    """A random MobileNetV2 alpha 0.35 saved as a weights file (kernels scaled so features live)."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    bb = backbones.build_backbone("MobileNetV2", S, alpha=0.35, weights=None)
    for layer in bb.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            layer.set_weights([w * 3.0 for w in layer.get_weights()])
        elif isinstance(layer, keras.layers.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([g, b, mean + rng.normal(0, 0.01, mean.shape),
                               var * rng.uniform(0.9, 1.1, var.shape)])
    bb.save_weights(path)
    return path


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    return _fake_backbone(d / "fake_mnv2.weights.h5", seed=1)


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("other")
    return _fake_backbone(d / "fake_mnv2.weights.h5", seed=2)


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch):
    monkeypatch.delenv(backbones.WEIGHTS_ENV, raising=False)


def mnv2_spec(**over) -> dict:
    spec = {"backbone": "MobileNetV2", "alpha": 0.35, "input_size": S, "epochs_head": 1,
            "epochs_fine_tune": 0, "batch_size": 16, "patience": 0, "dropout": 0.0}
    spec.update(over)
    return spec


def bn_stats(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [np.array(w) for w in layer.get_weights()]
            for layer in cnn.get_backbone(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)}


# ---------------------------------------------------------------- weights resolution


def test_resolve_weights(tmp_path, monkeypatch, fake_weights):
    assert backbones.resolve_weights(None, "MobileNetV2", 0.35) is None
    assert backbones.resolve_weights("none", "MobileNetV2", 0.35) is None
    assert backbones.resolve_weights("imagenet", "MobileNetV2", 0.35) == "imagenet"
    assert backbones.resolve_weights(fake_weights, "MobileNetV2", 0.35) == str(fake_weights)
    monkeypatch.setenv(backbones.WEIGHTS_ENV, str(fake_weights))
    assert backbones.resolve_weights(None, "MobileNetV2", 0.35) == str(fake_weights)
    assert backbones.resolve_weights(None, "five_block_cnn") is None
    known = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    (tmp_path / known).write_bytes(b"not the keras release")
    with pytest.raises(UsageError, match="sha256"):
        backbones.resolve_weights(tmp_path, "MobileNetV2", 0.35)
    with pytest.raises(UsageError, match="no weights file"):
        backbones.resolve_weights(tmp_path, "MobileNet", 0.25)
    with pytest.raises(UsageError):
        backbones.resolve_weights(tmp_path / "missing.h5", "MobileNetV2", 0.35)


def test_spec_validation():
    with pytest.raises(UsageError, match="unknown cnn spec keys"):
        cnn.normalize_spec({"backbone": "MobileNetV2", "epoch": 3})
    with pytest.raises(UsageError, match="fine_tune"):
        cnn.normalize_spec({"fine_tune": "some"})
    with pytest.raises(UsageError, match="unknown backbone"):
        cnn.build_model({"backbone": "NoSuchNet", "input_size": S})
    flat = cnn.normalize_spec(yaml.safe_load((ROOT / "pipelines/cnn.yaml").read_text()))
    assert flat["backbone"] == "MobileNetV2" and flat["input_size"] == 224


def test_dark_pixels_layer():
    layer = backbones.DarkPixelsToZero(25)
    x = np.array([[0.0, 24.0, 25.0, 200.0]], np.float32)
    assert np.asarray(layer(x)).tolist() == [[0.0, 0.0, 25.0, 200.0]]
    lazy = backbones.DarkPixelsToZero(25, training_only=True)
    assert np.asarray(lazy(x, training=False)).tolist() == x.tolist()


# ---------------------------------------------------------------- training and storage


def test_fine_tune_keeps_bn_and_full_roundtrip(tmp_path, fake_weights):
    x, y = synthetic(32)
    spec = mnv2_spec(fine_tune="top:30", epochs_fine_tune=1, lr_fine_tune=1e-2,
                     augmentation={"zoom": 0.1, "rotation_deg": 5, "shift": 0.05,
                                   "shear": 0.1, "flip": "horizontal", "dark_threshold": 25})
    before = cnn.build_model(spec, weights=fake_weights)
    kernel_before = cnn.get_backbone(before).get_layer("Conv_1").get_weights()[0]
    fitted = cnn_train.fit_cnn(x, y, None, None, spec, weights=fake_weights)
    assert fitted.history["phase"] == ["head", "fine_tune"]
    assert {"loss", "auc"} <= set(fitted.history)
    for name, stats in bn_stats(before).items():
        after = bn_stats(fitted.model)[name]
        for a, b in zip(stats, after, strict=True):
            np.testing.assert_array_equal(a, b)
    kernel_after = cnn.get_backbone(fitted.model).get_layer("Conv_1").get_weights()[0]
    assert not np.allclose(kernel_before, kernel_after)  # the top layers did train

    meta, files = fitted.save(tmp_path)
    assert meta["cnn"]["storage"] == "full" and files == ["model.keras", "model.tflite"]
    loaded = cnn_predict.CnnPredictor.load(tmp_path, meta)  # no weights file needed
    np.testing.assert_array_equal(loaded.predict_raw(x), fitted.predict_raw(x))
    as_keras = cnn_predict.CnnPredictor.load(tmp_path, meta, engine="keras")
    np.testing.assert_allclose(as_keras.predict_raw(x), fitted.predict_raw(x), atol=1e-5)
    # CnnPredictor.load uses keras.models.load_model(..., safe_mode=True)
    assert not any(layer.name.startswith("aug_") for layer in loaded.model.layers)
    assert loaded.model.get_layer("dark_pixels").threshold == 25


def test_head_warmup_on_cached_embeddings_trains_only_the_head(fake_weights):
    """head_on_embeddings: the shared head layers learn; the frozen backbone does not move."""
    x, y = synthetic(48)
    spec = mnv2_spec(head_on_embeddings=True, epochs_head=3, lr_head=1e-2,
                     augmentation={"brightness": 0.1, "contrast": 0.1})
    before = cnn.build_model(spec, weights=fake_weights)
    head_before = before.get_layer("head").get_weights()[0]
    backbone_before = [w.copy() for w in cnn.get_backbone(before).get_weights()]
    fitted = cnn_train.fit_cnn(x[:32], y[:32], x[32:], y[32:], spec, weights=fake_weights)
    assert fitted.history["phase"] == ["head"] * len(fitted.history["loss"])
    assert "val_auc" in fitted.history
    assert not np.allclose(head_before, fitted.model.get_layer("head").get_weights()[0])
    for a, b in zip(backbone_before, cnn.get_backbone(fitted.model).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_head_only_storage_checks_weights(tmp_path, monkeypatch, fake_weights, other_weights):
    x, y = synthetic(32, seed=3)
    fitted = cnn_train.fit_cnn(x, y, None, None, mnv2_spec(), weights=fake_weights)
    meta, files = fitted.save(tmp_path / "bundle")
    assert meta["cnn"]["storage"] == "head_only" and files == ["head.keras"]
    assert meta["backbone"]["weights_sha256"] == sha256_file(fake_weights)
    assert meta["backbone"]["weights_file"] == fake_weights.name
    keras.models.load_model(tmp_path / "bundle/head.keras", safe_mode=True)
    expected = fitted.predict_raw(x)
    assert np.ptp(expected) > 0
    loaded = cnn_predict.CnnPredictor.load(tmp_path / "bundle", meta, weights=fake_weights)
    np.testing.assert_allclose(loaded.predict_raw(x), expected, atol=1e-6)
    with pytest.raises(UsageError, match="sha256"):
        cnn_predict.CnnPredictor.load(tmp_path / "bundle", meta, weights=other_weights)
    with pytest.raises(UsageError, match="sha256"):
        cnn_predict.CnnPredictor.load(tmp_path / "bundle", meta, weights=other_weights.parent)
    with pytest.raises(UsageError, match="XRAY_SCORE_WEIGHTS"):
        cnn_predict.CnnPredictor.load(tmp_path / "bundle", meta)
    monkeypatch.setenv(backbones.WEIGHTS_ENV, str(fake_weights.parent))  # a directory
    loaded = cnn_predict.CnnPredictor.load(tmp_path / "bundle", meta)
    np.testing.assert_allclose(loaded.predict_raw(x), expected, atol=1e-6)


def test_lightgbm_head_roundtrip(tmp_path, fake_weights):
    x, y = synthetic(64, seed=4)
    spec = mnv2_spec(head="lightgbm", lightgbm={"min_data_in_leaf": 5}, lightgbm_rounds=30)
    fitted = cnn_train.fit_cnn(x[:32], y[:32], x[32:], y[32:], spec, weights=fake_weights)
    assert "loss" not in fitted.history  # frozen backbone: the network is not trained
    meta, files = fitted.save(tmp_path)
    assert files == ["lightgbm.txt"] and meta["cnn"]["head"] == "lightgbm"
    assert (tmp_path / "lightgbm.txt").read_text().startswith("tree")
    loaded = cnn_predict.CnnPredictor.load(tmp_path, meta, weights=fake_weights)
    np.testing.assert_allclose(loaded.predict_raw(x), fitted.predict_raw(x), atol=1e-9)


def test_separable_data_reaches_auc_and_grad_cam(tmp_path):
    x, y = synthetic(192, seed=5)
    xv, yv = synthetic(64, seed=6)
    spec = {"backbone": "five_block_cnn", "input_size": S, "epochs_head": 8, "lr_head": 3e-3,
            "batch_size": 16, "patience": 4, "dropout": 0.1,
            "backbone_args": {"filters": [8, 8, 16, 16, 16], "block_dropout": 0.0}}
    fitted = cnn_train.fit_cnn(x, y, xv, yv, spec)
    auc = roc_auc_score(yv, fitted.predict_raw(xv))
    assert auc >= 0.9, fitted.history
    assert max(fitted.history["val_auc"]) >= 0.9
    heat = gradcam.grad_cam(fitted.model, xv[1])
    assert heat.shape == (S, S) and heat.min() >= 0 and heat.max() <= 1
    assert gradcam.grad_cam(fitted.model, xv[0], target="predicted").max() <= 1
    with pytest.raises(UsageError):
        gradcam.grad_cam(fitted.model, xv[0], target="other")
    meta, files = fitted.save(tmp_path)
    assert meta["cnn"]["storage"] == "full"
    loaded = cnn_predict.CnnPredictor.load(tmp_path, meta)
    np.testing.assert_allclose(loaded.predict_raw(xv), fitted.predict_raw(xv), atol=1e-6)
    np.testing.assert_allclose(gradcam.grad_cam(loaded.model, xv[1]), heat, atol=1e-4)


def test_predict_rejects_wrong_shape(fake_weights):
    model = cnn.build_model(mnv2_spec(), weights=fake_weights)
    pred = cnn_predict.CnnPredictor(model, cnn.normalize_spec(mnv2_spec()))
    with pytest.raises(UsageError):
        pred.predict_raw(np.zeros((2, S + 1, S + 1), np.uint8))
    assert pred.predict_raw(np.zeros((0, S, S), np.uint8)).shape == (0,)
    assert pred.predict_raw(np.zeros((33, S, S), np.uint8)).shape == (33,)


def _one_step(path: Path, fine_tune_epochs: int) -> None:
    pipeline = yaml.safe_load(path.read_text())
    assert pipeline["kind"] == "cnn"
    assert {"calibration", "threshold", "validation", "input_size"} <= set(pipeline)
    size = 75 if pipeline["model"]["backbone"] == "InceptionResNetV2" else S
    pipeline["input_size"] = size
    pipeline["training"].update(epochs_head=1, epochs_fine_tune=fine_tune_epochs, batch_size=8,
                                patience=0)
    if pipeline["model"]["backbone"] == "dense_mlp":
        pipeline["model"]["backbone_args"]["pixels"] = 16
    x, y = synthetic(8, size=size)
    # validation data only in the slow variant: each extra traced function costs seconds
    val = (x, y) if fine_tune_epochs else (None, None)
    fitted = cnn_train.fit_cnn(x, y, *val, pipeline, weights="none")
    assert fitted.history["loss"]
    p = fitted.predict_raw(x)
    assert p.shape == (8,) and np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    if pipeline["model"]["backbone"] not in backbones.SCRATCH_BACKBONES:  # fine_tune names exist
        assert cnn.set_fine_tune(cnn.get_backbone(fitted.model), fitted.spec["fine_tune"]) > 0


FAST = [p for p in PIPELINES if "inceptionresnetv2" not in p.stem]


@pytest.mark.parametrize("path", FAST, ids=lambda p: p.stem)
def test_pipeline_builds_and_trains_one_step(path):
    """Each shipped pipeline builds and trains a step (head phase; fine-tuning is tested above)."""
    _one_step(path, fine_tune_epochs=0)


def test_inceptionresnetv2_pipeline_builds():
    """Tracing a train step of InceptionResNetV2 takes ~20 s: training is in the slow tests."""
    pipeline = yaml.safe_load((ROOT / "pipelines/seeds/inceptionresnetv2_75px.yaml").read_text())
    model = cnn.build_model(pipeline, weights="none")
    assert model.input_shape == (None, 75, 75, 1)
    assert model.get_layer("dark_pixels").threshold == 25
    assert model.get_layer("embedding").output.shape[-1] == 1536


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("XRAY_SCORE_SLOW_TESTS"),
                    reason="set XRAY_SCORE_SLOW_TESTS=1 (about 3 minutes on 2 cores)")
@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_pipeline_fine_tune_step(path):
    """Head and fine-tuning steps with validation (InceptionResNetV2 'all': ~80 s on 2 cores)."""
    _one_step(path, fine_tune_epochs=1)
