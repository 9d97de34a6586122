"""The CNN path end to end through the CLI: train -> bundle -> batch / embed / compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from xray_score.batch.scorer import BatchScorer
from xray_score.cli import main
from xray_score.errors import ExitCode
from xray_score.io.datasets import read_labeled
from xray_score.model.bundle import Bundle
from xray_score.model.training import load_arrays

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "input_size=32", "--set", "training.epochs_head=2",
        "--set", "training.batch_size=8", "--set", "training.patience=0"]


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cnn_bundle(labeled_dir, tmp_path_factory) -> Bundle:
    out = tmp_path_factory.mktemp("cnn") / "five-block"
    result = cli("train", "cnn", "--data", labeled_dir, "--out", out,
                 "--pipeline", ROOT / "pipelines/seeds/five_block_cnn.yaml", *TINY)
    assert result.exit_code == 0, result.output
    return Bundle.load(out)


def test_trained_bundle_is_full_and_safe(cnn_bundle):
    meta = cnn_bundle.meta
    assert meta["kind"] == "cnn" and meta["cnn"]["storage"] == "full"
    assert set(meta["files"]) == {"model.keras", "model.tflite", "domain.f32"}
    assert meta["threshold"]["policy"] == "sensitivity"
    assert cnn_bundle.history["loss"]  # training curves travel with the bundle


def test_training_and_scoring_feed_the_network_identical_inputs(cnn_bundle, labeled_dir):
    """What training fed the network and what batch scores are, per file, the canonical
    image computed independently here (PIL decode to gray, INTER_AREA squash to 32 px)."""
    import cv2
    from PIL import Image

    from xray_score.model.kinds import get_kind
    from xray_score.model.spec import load_pipeline

    df = read_labeled(labeled_dir).head(6)
    spec = load_pipeline(str(ROOT / "pipelines/seeds/five_block_cnn.yaml"),
                         {"input_size": 32})
    x_train, _, _ = load_arrays(df, get_kind("cnn").preprocessor(spec), n_jobs=2)
    scorer = BatchScorer(cnn_bundle, n_jobs=2)
    by_path = {r.path: r.x for r in scorer.iter_results(df["path"].tolist())}
    for path, x in zip(df["path"], x_train, strict=True):
        gray = np.asarray(Image.open(path).convert("L"))
        want = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(x, want)
        np.testing.assert_array_equal(by_path[path], want)


def test_batch_and_embed_with_cnn_bundle(cnn_bundle, labeled_test_dir, tmp_path):
    out = tmp_path / "r.csv"
    result = cli("batch", labeled_test_dir, "--model", cnn_bundle.path, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    rows = pd.read_csv(out)
    assert len(rows) == len(read_labeled(labeled_test_dir))
    assert rows["p_pneumonia"].between(0, 1).all()
    assert (rows["model_id"] == cnn_bundle.model_id).all()

    emb_path = tmp_path / "emb.parquet"
    result = cli("embed", labeled_test_dir, "--model", cnn_bundle.path, "--out", emb_path)
    assert result.exit_code == ExitCode.OK, result.output
    emb = pd.read_parquet(emb_path)
    dims = [c for c in emb.columns if c[0] == "e" and c[1:].isdigit()]
    assert len(emb) == len(rows) and dims == [f"e{i}" for i in range(len(dims))]
    assert emb[dims].notna().all().all()


def test_compare_gives_exactly_batch_probabilities(cnn_bundle, baseline_bundle,
                                                   labeled_test_dir, tmp_path):
    """compare decodes each image once, yet every score equals what batch writes."""
    paths = {}
    for bundle in (baseline_bundle, cnn_bundle):
        out = tmp_path / f"{bundle.model_id}.csv"
        assert cli("batch", labeled_test_dir, "--model", bundle.path, "--out", out,
                   "--no-report").exit_code == 0
        paths[bundle.model_id] = pd.read_csv(out).set_index("path")["p_pneumonia"]
    report, csv = tmp_path / "cmp.html", tmp_path / "cmp.csv"
    result = cli("compare", labeled_test_dir, "--baseline", baseline_bundle.path,
                 "--cnn", cnn_bundle.path, "--out", report, "--csv", csv)
    assert result.exit_code == ExitCode.OK, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["images"] == len(paths[cnn_bundle.model_id])
    wide = pd.read_csv(csv).set_index("path")
    for model_id, batch_p in paths.items():
        np.testing.assert_allclose(wide.loc[batch_p.index, f"p_{model_id}"], batch_p,
                                   rtol=0, atol=1e-6)
    html = report.read_text()
    assert "DeLong" in html and "McNemar" in html


def test_engine_option_keras_matches_the_default_tflite_run(cnn_bundle, labeled_test_dir,
                                                            tmp_path):
    """--engine keras runs model.keras; the default runs the bundle's TFLite twin."""
    scores = {}
    for engine in ("auto", "keras"):
        out = tmp_path / f"{engine}.csv"
        result = cli("batch", labeled_test_dir, "--model", cnn_bundle.path, "--out", out,
                     "--no-report", "--engine", engine)
        assert result.exit_code == ExitCode.OK, result.output
        runtime = json.loads(result.output.strip().splitlines()[-1])["model_runtime"]
        assert runtime.startswith("TFLite" if engine == "auto" else "keras"), runtime
        scores[engine] = pd.read_csv(out).set_index("path")["p_pneumonia"].sort_index()
    np.testing.assert_allclose(scores["keras"], scores["auto"], rtol=0, atol=2e-4)  # calibrated
    result = cli("batch", labeled_test_dir, "--model", cnn_bundle.path, "--engine", "onnx")
    assert result.exit_code == ExitCode.USAGE


def test_cli_stderr_is_free_of_native_start_up_banners(cnn_bundle, labeled_test_dir, tmp_path):
    """A real `xray-score batch` process with a CNN bundle: TensorFlow's and LiteRT's C++
    banners are muted, the log lines and the JSON summary are not."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                             "XRAY_SCORE_QUIET_TF_IMPORT")}
    proc = subprocess.run(
        [sys.executable, "-m", "xray_score.cli", "batch", str(labeled_test_dir), "--model",
         str(cnn_bundle.path), "--out", str(tmp_path / "r.csv"), "--no-report"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == ExitCode.OK, proc.stderr
    for banner in ("oneDNN custom operations", "absl::InitializeLog", "XNNPACK delegate",
                   "cpu_feature_guard", "tf.lite.Interpreter is deprecated"):
        assert banner not in proc.stderr, proc.stderr
    assert "runs on TFLite via" in proc.stderr  # our own INFO log line survives
    assert json.loads(proc.stdout.strip().splitlines()[-1])["scored"] > 0


def test_grad_cam_thumbnails_load_the_keras_network_on_demand(cnn_bundle, labeled_test_dir,
                                                               tmp_path):
    """Scoring runs the TFLite twin without Keras; the report's error gallery then loads the
    Keras network for its Grad-CAM overlays (failures there only log, so check the overlays)."""
    from xray_score.report.gallery import thumbnails_for

    out = tmp_path / "r.csv"
    assert cli("batch", labeled_test_dir, "--model", cnn_bundle.path, "--out", out,
               "--no-report").exit_code == ExitCode.OK
    df = pd.read_csv(out)
    df["true_label"] = np.where(df["predicted_label"] == "PNEUMONIA", "NORMAL", "PNEUMONIA")
    predictor = cnn_bundle.predictor()
    assert predictor.engine == "tflite" and predictor._model is None  # not loaded yet
    thumbs = thumbnails_for(df, cnn_bundle, predictor, n=3)
    assert len(thumbs) == 3
    assert all(t["overlay_png_bytes"].startswith(b"\x89PNG") for t in thumbs)
    assert predictor._model is not None
