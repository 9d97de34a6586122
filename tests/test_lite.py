"""The TFLite twin of CNN bundles: stored, checked against Keras, used by default, optional."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from xray_score.deep import lite  # noqa: E402
from xray_score.deep import predictor as cnn_predict  # noqa: E402
from xray_score.deep import train as cnn_train  # noqa: E402
from xray_score.errors import BundleError, UsageError  # noqa: E402
from xray_score.model.bundle import Bundle  # noqa: E402
from xray_score.model.publish import new_staging, write_bundle  # noqa: E402

S = 32
SPEC = {"backbone": "five_block_cnn", "input_size": S, "epochs_head": 1, "batch_size": 16,
        "patience": 0, "dropout": 0.1,
        "backbone_args": {"filters": [4, 4, 8, 8, 8], "block_dropout": 0.0}}


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(100, 30, (n, S, S)) + y[:, None, None] * 60
    return np.clip(x, 0, 255).astype(np.uint8), y


@pytest.fixture(scope="module")
def fitted_and_saved(tmp_path_factory):
    x, y = images(48)
    fitted = cnn_train.fit_cnn(x, y, None, None, SPEC)
    assert fitted.engine == "keras"
    keras_scores = fitted.predict_raw(x)
    d = tmp_path_factory.mktemp("bundle")
    meta, files = fitted.save(d)
    return fitted, keras_scores, d, meta, files


def test_save_stores_a_checked_twin_and_switches_to_it(fitted_and_saved):
    fitted, keras_scores, d, meta, files = fitted_and_saved
    assert files == ["model.keras", "model.tflite"]
    info = meta["cnn"]["tflite"]
    assert info["file"] == "model.tflite" and 0 <= info["max_abs_diff_vs_keras"] <= lite.TOLERANCE
    assert fitted.engine == "tflite"  # validation scores after save come from the twin
    x, _ = images(48)
    np.testing.assert_allclose(fitted.predict_raw(x), keras_scores, atol=1e-5)


def test_loaded_bundle_runs_the_twin_with_identical_scores(fitted_and_saved):
    fitted, _, d, meta, _ = fitted_and_saved
    x, _ = images(40, seed=1)
    loaded = cnn_predict.CnnPredictor.load(d, meta)
    assert loaded.engine == "tflite" and "XNNPACK" in loaded.runtime
    np.testing.assert_array_equal(loaded.predict_raw(x), fitted.predict_raw(x))
    np.testing.assert_array_equal(loaded.embed(x), fitted.embed(x))
    as_keras = cnn_predict.CnnPredictor.load(d, meta, engine="keras")
    assert as_keras.engine == "keras"
    np.testing.assert_allclose(as_keras.predict_raw(x), loaded.predict_raw(x), atol=1e-5)
    np.testing.assert_allclose(as_keras.embed(x), loaded.embed(x), atol=1e-4)


def test_scores_do_not_depend_on_batch_neighbours(fitted_and_saved):
    """An image scores the same alone, in a full chunk or in a partial one (which TFLite runs
    at its own size: a worker's chunks have any length)."""
    _, _, d, meta, _ = fitted_and_saved
    loaded = cnn_predict.CnnPredictor.load(d, meta)
    x, _ = images(40, seed=2)  # 32 + 8: a partial second chunk
    together = loaded.predict_raw(x)
    alone = np.concatenate([loaded.predict_raw(x[i:i + 1]) for i in (0, 31, 32, 39)])
    np.testing.assert_array_equal(alone, together[[0, 31, 32, 39]])


def test_engine_choice_is_validated(fitted_and_saved):
    _, _, d, meta, _ = fitted_and_saved
    with pytest.raises(UsageError, match="engine"):
        cnn_predict.CnnPredictor.load(d, meta, engine="onnx")


def test_tflite_can_be_switched_off(tmp_path):
    x, y = images(32, seed=3)
    fitted = cnn_train.fit_cnn(x, y, None, None, {**SPEC, "tflite": False})
    meta, files = fitted.save(tmp_path)
    assert files == ["model.keras"] and meta["cnn"]["tflite"] is None
    assert cnn_predict.CnnPredictor.load(tmp_path, meta).engine == "keras"
    converted = cnn_predict.CnnPredictor.load(tmp_path, meta, engine="tflite")
    assert converted.engine == "tflite"  # converted at load time
    np.testing.assert_allclose(converted.predict_raw(x), fitted.predict_raw(x), atol=1e-5)


def test_a_twin_that_disagrees_with_keras_is_refused(tmp_path, monkeypatch):
    x, y = images(32, seed=4)
    fitted = cnn_train.fit_cnn(x, y, None, None, SPEC)
    monkeypatch.setattr(lite, "max_difference", lambda *a, **k: 0.3)
    with pytest.raises(BundleError, match="differs from Keras"):
        fitted.save(tmp_path)
    assert fitted.engine == "keras"


def test_garbage_network_file_is_a_bundle_error():
    with pytest.raises(BundleError, match="TFLite"):
        lite.LiteNetwork(b"TFL3" + bytes(200))


def test_bundle_checksum_covers_the_twin(tmp_path):
    x, y = images(32, seed=5)
    fitted = cnn_train.fit_cnn(x, y, None, None, SPEC)
    staging = new_staging(tmp_path / "b")
    extra, files = fitted.save(staging)
    meta = {"kind": "cnn", "name": "t", "pipeline": {"kind": "cnn", **SPEC},
            "input_size": S, "class_names": ["NORMAL", "PNEUMONIA"],
            "calibration": {"method": "none"}, "threshold": {"value": 0.5}, **extra}
    bundle = write_bundle(tmp_path / "b", meta, files, staging)
    assert "model.tflite" in json.loads((bundle.path / "bundle.json").read_text())["files"]
    blob = bytearray((bundle.path / "model.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (bundle.path / "model.tflite").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="model.tflite"):
        Bundle.load(bundle.path)


def test_scoring_with_the_twin_never_imports_tensorflow(fitted_and_saved, tmp_path):
    """A bundle with a TFLite twin scores and embeds in a process without TensorFlow (fast
    start, small memory); the Keras network loads only when asked for."""
    _, _, d, meta, _ = fitted_and_saved
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    code = f"""
import json, sys
import numpy as np
from xray_score.deep.predictor import CnnPredictor  # noqa: E402
meta = json.loads(open({str(tmp_path / "meta.json")!r}).read())
pred = CnnPredictor.load({str(d)!r}, meta)
x = np.random.default_rng(0).integers(0, 256, (5, {S}, {S})).astype(np.uint8)
assert pred.predict_raw(x).shape == (5,) and pred.embed(x).shape[0] == 5
assert pred.engine == "tflite"
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TF imported"
assert pred.model.get_layer("head") is not None  # the lazy Keras network still loads
assert "tensorflow" in sys.modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
