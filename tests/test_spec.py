"""Pipeline specs are checked against each kind's schema: a typo is an error, never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xray_score.cli import main
from xray_score.errors import ExitCode, UsageError
from xray_score.model.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, key, valid", [
    ("model.learnin_rate=0.1", "model.learnin_rate", "learning_rate"),
    ("features.typo=1", "features.typo", "hog_orientations"),
    ("training.epochs=3", "training.epochs", "early_stopping_rounds"),
    ("threshold.polcy=youden", "threshold.polcy", "policy"),
    ("decode.jpeg=true", "decode.jpeg", "jpeg_draft"),
    ("modle.num_leaves=3", "modle", "features"),
])
def test_unknown_baseline_keys_exit_2_naming_key_and_valid_ones(labeled_dir, tmp_path,
                                                                override, key, valid):
    result = CliRunner().invoke(main, ["train", "baseline", "--data", str(labeled_dir),
                                       "--out", str(tmp_path / "b"), "--set", override])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert key in result.stderr and valid in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("override", ["model.learning_rate=0.1", "training.lr_hed=0.1",
                                      "training.augmentation.zooom=0.1", "model.fine_tune=some"])
def test_cnn_spec_errors_are_usage_errors(override):
    key, _, value = override.partition("=")
    with pytest.raises(UsageError):
        load_pipeline("cnn", {key: value})


def test_every_shipped_pipeline_validates():
    for path in [*ROOT.glob("pipelines/*.yaml"), *ROOT.glob("pipelines/seeds/*.yaml")]:
        if path.name != "nightly.yaml":  # a job file, not a pipeline
            assert load_pipeline(str(path))["kind"] in ("baseline", "cnn", "ensemble")
