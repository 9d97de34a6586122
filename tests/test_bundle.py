"""Bundles load to the same model, and anything tampered with or pickled is refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import make_xray, save_gray
from xray_score.errors import BundleError, UsageError
from xray_score.hashing import sha256_file as file_sha256
from xray_score.model.bundle import Bundle


@pytest.fixture
def no_lightgbm_load(monkeypatch):
    """Fail loudly if any LightGBM model is constructed (refusal must come first)."""
    import lightgbm

    def boom(*args, **kwargs):
        raise AssertionError("LightGBM loaded a model from a bundle that should be refused")

    monkeypatch.setattr(lightgbm, "Booster", boom)


def _features(bundle: Bundle, paths) -> np.ndarray:
    prep = bundle.preprocessor() if callable(getattr(bundle, "preprocessor", None)) else (
        bundle.predictor().preprocessor)
    return np.stack([prep(str(p)).x for p in paths])


def _rewrite_meta(path, change):
    meta = json.loads((path / "bundle.json").read_text())
    change(meta)
    (path / "bundle.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def test_trained_bundle_metadata(baseline_bundle, tiny_spec):
    meta = baseline_bundle.meta
    assert meta["format"] == "xray-score-bundle" and meta["format_version"] == 1
    assert meta["kind"] == "baseline" and baseline_bundle.input_size == 64
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert meta["pipeline"]["input_size"] == tiny_spec["input_size"]
    assert meta["threshold"]["policy"] == "sensitivity"
    assert meta["threshold"]["chosen_on"].startswith("calibration half of validation")
    assert 0 < baseline_bundle.threshold < 1
    assert set(meta["files"]) == {meta["model_file"], meta["domain"]["file"]}
    assert not any(p.suffix in {".pkl", ".joblib"} for p in baseline_bundle.path.iterdir())
    assert len(baseline_bundle.model_id) == 12
    json.dumps(meta)  # JSON-safe throughout


def test_reload_gives_identical_predictions(baseline_bundle, bundle_copy, tmp_path, rng):
    paths = [save_gray(tmp_path / f"{i}.png", make_xray(i % 2, rng)) for i in range(6)]
    x = _features(baseline_bundle, paths)
    a = baseline_bundle.predictor().predict_raw(x)
    again = Bundle.load(bundle_copy)
    assert again.model_id == baseline_bundle.model_id  # same bytes, same id
    b = again.predictor().predict_raw(_features(again, paths))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6,) and np.all((a >= 0) & (a <= 1))


def test_tampered_model_file_refused(bundle_copy, no_lightgbm_load):
    model = bundle_copy / json.loads((bundle_copy / "bundle.json").read_text())["model_file"]
    text = model.read_text()
    model.write_text(text.replace("learning_rate", "learning_rate ", 1) if "learning_rate" in text
                     else text + "\n")
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(bundle_copy)


def test_missing_model_file_refused(bundle_copy, no_lightgbm_load):
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    (bundle_copy / meta["model_file"]).unlink()
    with pytest.raises(BundleError, match="missing"):
        Bundle.load(bundle_copy)


def test_editing_bundle_json_changes_model_id(bundle_copy, baseline_bundle):
    _rewrite_meta(bundle_copy, lambda m: m["threshold"].update(value=0.01))
    edited = Bundle.load(bundle_copy)  # content is still consistent, so it loads ...
    assert edited.model_id != baseline_bundle.model_id  # ... but under another model_id
    assert edited.threshold == 0.01


def test_bundle_json_pointing_at_other_bytes_refused(bundle_copy, no_lightgbm_load):
    _rewrite_meta(bundle_copy, lambda m: m["files"].update(
        {k: "0" * 64 for k in m["files"]}))
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("name", ["model.pkl", "extra.joblib", "weights.npy"])
def test_unlisted_pickle_refused(bundle_copy, no_lightgbm_load, name):
    (bundle_copy / name).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(BundleError, match="pickle"):
        Bundle.load(bundle_copy)


def test_pickle_with_innocent_name_refused(bundle_copy, no_lightgbm_load):
    (bundle_copy / "notes.txt").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(BundleError, match="pickle"):
        Bundle.load(bundle_copy)


def test_listed_pickle_with_right_checksum_refused(bundle_copy, no_lightgbm_load):
    evil = bundle_copy / "model.lgb.pkl"
    evil.write_bytes(pickle.dumps(object, protocol=2))

    def point_at_pickle(meta):
        meta["files"]["model.lgb.pkl"] = file_sha256(evil)
        meta["model_file"] = "model.lgb.pkl"

    _rewrite_meta(bundle_copy, point_at_pickle)
    with pytest.raises(BundleError, match="pickle"):
        Bundle.load(bundle_copy)


def test_listed_model_renamed_to_pickle_content_refused(bundle_copy, no_lightgbm_load):
    meta = json.loads((bundle_copy / "bundle.json").read_text())
    model = bundle_copy / meta["model_file"]
    model.write_bytes(pickle.dumps({"booster": 1}))
    _rewrite_meta(bundle_copy, lambda m: m["files"].update({m["model_file"]: file_sha256(model)}))
    with pytest.raises(BundleError, match="pickle"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize("change,match", [
    (lambda m: m.update(format="something-else"), "format"),
    (lambda m: m.update(format_version=2), "version"),
    (lambda m: m.pop("format_version"), "version"),
    (lambda m: m.update(kind="svm"), "kind"),
    (lambda m: m.update(files={}), "no model files"),
    (lambda m: m["files"].update({"../outside.txt": "0" * 64}), "outside"),
    (lambda m: m["files"].update({"/etc/passwd": "0" * 64}), "outside"),
])
def test_unknown_or_unsafe_manifest_refused(bundle_copy, no_lightgbm_load, change, match):
    _rewrite_meta(bundle_copy, change)
    with pytest.raises(BundleError, match=match):
        Bundle.load(bundle_copy)


def test_not_a_bundle(tmp_path, no_lightgbm_load):
    with pytest.raises(BundleError):
        Bundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="JSON"):
        Bundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text("[1, 2]")
    with pytest.raises(BundleError):
        Bundle.load(tmp_path)
    assert issubclass(BundleError, UsageError)  # the CLI maps it to exit 2
