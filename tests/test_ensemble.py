"""Ensemble bundles: the mean logit of their members, a bundle like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import read_rows
from xray_score.cli import main
from xray_score.errors import BundleError, ExitCode
from xray_score.model.bundle import Bundle

LEGACY_CNN = Path(__file__).parent / "fixtures" / "legacy-0.1.0" / "cnn"


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def ensemble(baseline_bundle, labeled_dir, tmp_path_factory) -> Bundle:
    root = tmp_path_factory.mktemp("ens")
    shutil.copytree(baseline_bundle.path, root / "members" / "baseline")
    shutil.copytree(LEGACY_CNN, root / "members" / "cnn")
    result = cli("train", "ensemble", "--member", root / "members" / "baseline",
                 "--member", root / "members" / "cnn", "--val", labeled_dir,
                 "--out", root / "models" / "ens", "--set", "calibration.method=none",
                 "--set", "validation.calibration_share=1")
    assert result.exit_code == ExitCode.OK, result.output
    return Bundle.load(root / "models" / "ens")


def test_scores_are_the_mean_logit_of_the_members(ensemble, labeled_test_dir, tmp_path):
    """batch with the ensemble == sigmoid(mean(logit(p_member))) of the members' own batch."""
    out = {}
    for name, path in [("ens", ensemble.path)] + [
            (m["name"], ensemble.path / m["path"]) for m in ensemble.meta["members"]]:
        out[name] = tmp_path / f"{name}.csv"
        result = cli("batch", labeled_test_dir, "--model", path, "--out", out[name],
                     "--no-report")
        assert result.exit_code == ExitCode.OK, result.output
    ens = pd.read_csv(out["ens"]).set_index("path")["p_pneumonia"]
    members = [pd.read_csv(out[m["name"]]).set_index("path")["p_pneumonia"].loc[ens.index]
               for m in ensemble.meta["members"]]
    z = np.mean([np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1)) for p in members],
                axis=0)
    np.testing.assert_allclose(ens, 1 / (1 + np.exp(-z)), rtol=2e-3, atol=2e-6)  # 6 decimals
    assert len(ens) == len(read_rows(out["ens"]))


def test_evaluate_and_compare_take_an_ensemble(ensemble, baseline_bundle, labeled_test_dir,
                                               tmp_path):
    result = cli("evaluate", labeled_test_dir, "--model", ensemble.path, "--out",
                 tmp_path / "e.html")
    assert result.exit_code == ExitCode.OK, result.output
    result = cli("compare", labeled_test_dir, "--baseline", baseline_bundle.path,
                 "--cnn", LEGACY_CNN, "-m", ensemble.path, "--out", tmp_path / "c.html",
                 "--csv", tmp_path / "c.csv")
    assert result.exit_code == ExitCode.OK, result.output
    assert f"p_{ensemble.model_id}" in pd.read_csv(tmp_path / "c.csv").columns


def test_members_are_pinned_and_verified(ensemble, tmp_path):
    copy = tmp_path / "ens"
    members = tmp_path / "members"
    shutil.copytree(ensemble.path.parent.parent / "members", members)
    (tmp_path / "models").mkdir()
    shutil.copytree(ensemble.path, copy := tmp_path / "models" / "ens")
    assert Bundle.load(copy).predictor().predict_raw is not None  # found by relative path
    model = members / "baseline" / "model.lgb.txt"
    model.write_text(model.read_text() + "\n")  # a member tampered with
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(copy).predictor()
    shutil.rmtree(members / "baseline")
    shutil.copytree(ensemble.path.parent.parent / "members" / "cnn", members / "baseline")
    with pytest.raises(BundleError, match="not found"):  # another bundle in its place
        Bundle.load(copy).predictor()
    stored = json.loads((copy / "ensemble.json").read_text())
    stored["weights"] = [5, 1]
    (copy / "ensemble.json").write_text(json.dumps(stored))
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(copy)
