"""A new site: recalibration on a small labeled sample, into a derived, verified bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.special import expit

from conftest import write_labeled
from xray_score.cli import main
from xray_score.errors import BundleError, ExitCode, UsageError
from xray_score.model.bundle import Bundle
from xray_score.model.calibration import choose_threshold
from xray_score.model.decision import logit
from xray_score.model.recalibrate import MIN_PER_CLASS, recalibrate


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def draw(rng, n_pos, n_neg, shift=0.0):
    """Raw model outputs: pneumonia logits ~ N(3, 1.5), normal ~ N(-3, 1.5), plus a site shift."""
    z = np.concatenate([rng.normal(3, 1.5, n_pos), rng.normal(-3, 1.5, n_neg)]) + shift
    return expit(z), np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def test_recalibration_recovers_a_known_logit_shift():
    rng = np.random.default_rng(7)
    raw, y = draw(rng, 2000, 2000)
    parent = choose_threshold(raw, y, "sensitivity", 0.95)["value"]  # identity calibration
    site_raw, site_y = draw(rng, 200_000, 200_000, shift=-2.5)  # another site: all lower
    assert (site_raw[site_y == 1] >= parent).mean() < 0.8  # the parent threshold misses it
    sample_raw, sample_y = draw(rng, 40, 40, shift=-2.5)
    fitted = recalibrate(sample_raw, sample_y, None, parent_prevalence=0.5, target=0.95)
    cal, thr = fitted["calibration"], fitted["threshold"]
    p_site = expit(cal["a"] * logit(site_raw) + cal["b"])
    true_sensitivity = (p_site[site_y == 1] >= thr["value"]).mean()
    lo, hi = thr["sensitivity_ci"]
    assert lo <= true_sensitivity <= hi
    assert true_sensitivity >= 0.95  # conservative: k-th lowest positive, not a 95 % fit
    assert thr["k"] == 1 and thr["achieved_confidence"] >= 0.8  # 40 positives: the lowest


def test_the_prior_is_the_parents_or_the_given_prevalence_not_the_samples():
    rng = np.random.default_rng(3)
    raw, y = draw(rng, 30, 30)
    at_parent = recalibrate(raw, y, None, parent_prevalence=0.7)["calibration"]
    given = recalibrate(raw, y, None, parent_prevalence=0.7, prevalence=0.2)["calibration"]
    assert at_parent["prior"] == 0.7 and given["prior"] == 0.2
    assert at_parent["b"] - given["b"] == pytest.approx(logit(0.7) - logit(0.2))
    with pytest.raises(UsageError, match="at least 20"):
        recalibrate(*draw(rng, MIN_PER_CLASS - 1, 40), None, parent_prevalence=0.5)


def test_a_too_small_sample_is_refused_with_what_it_could_show(baseline_bundle,
                                                               labeled_test_dir, tmp_path):
    result = cli("calibrate", baseline_bundle.path, "--data", labeled_test_dir, "--out",
                 tmp_path / "site")
    assert result.exit_code == ExitCode.USAGE
    assert "at least 20 of each" in result.stderr and "95% exact interval" in result.stderr
    assert not (tmp_path / "site").exists()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site") / "sample"
    write_labeled(root, n_patients=24, seed=5, images_per_patient=(1, 1))
    return root


def test_calibrate_writes_a_verified_derived_bundle(baseline_bundle, site, tmp_path):
    out = tmp_path / "models" / "site"
    result = cli("calibrate", baseline_bundle.path, "--data", site, "--out", out,
                 "--prevalence", "0.3")
    assert result.exit_code == ExitCode.OK, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    derived = Bundle.load(out)
    meta = derived.meta
    assert meta["derived_from"]["model_id"] == baseline_bundle.model_id
    assert meta["site_sample"]["n_images"] == 48 and meta["calibration"]["prior"] == 0.3
    assert meta["files"] == baseline_bundle.meta["files"]  # the same booster, verified
    assert summary["threshold"] == derived.threshold and summary["model_id"] == derived.model_id
    assert (tmp_path / "models" / "site-calibration.html").read_text().count("new threshold") >= 1
    batch = cli("batch", site, "--model", out, "--out", tmp_path / "r.csv", "--no-report")
    assert batch.exit_code == ExitCode.OK
    again = cli("calibrate", out, "--data", site, "--out", tmp_path / "again")  # chains
    assert again.exit_code == ExitCode.OK, again.output
    model = out / meta["model_file"]
    model.write_text(model.read_text() + "\n")
    with pytest.raises(BundleError, match="modified"):
        Bundle.load(out)
    assert cli("calibrate", baseline_bundle.path, "--data", site, "--out",
               baseline_bundle.path).exit_code == ExitCode.USAGE  # never over its parent


def test_larger_samples_may_use_a_higher_order_statistic():
    from xray_score.model.recalibrate import conservative_threshold

    rng = np.random.default_rng(1)
    p, y = draw(rng, 60, 60)
    thr = conservative_threshold(p, y, 0.95, 0.8)  # P(Bin(60, .05) >= 2) = 0.81
    assert thr["k"] == 2 and thr["achieved_confidence"] == pytest.approx(0.8084, abs=1e-3)
    pos = np.sort(p[y == 1])
    assert pos[0] < thr["value"] <= pos[1]
