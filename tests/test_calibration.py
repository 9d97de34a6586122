"""Calibration maps survive JSON and thresholds follow their policy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xray_score.model.calibration import apply_calibration, choose_threshold, fit_calibration


def scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    raw = 1 / (1 + np.exp(-(rng.normal(0, 1, n) + 2.5 * (y - 0.5))))
    raw = raw ** 3  # a miscalibrated (squeezed) score
    return raw, y


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_calibration_json_round_trip(method):
    raw, y = scores()
    cal = fit_calibration(raw, y, method)
    back = json.loads(json.dumps(cal))
    assert back == cal
    grid = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(apply_calibration(back, grid), apply_calibration(cal, grid))
    p = apply_calibration(back, raw)
    assert ((p >= 0) & (p <= 1)).all()
    assert np.all(np.diff(apply_calibration(back, grid)) >= -1e-12)  # monotone


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_improves_log_loss(method):
    from sklearn.metrics import log_loss

    raw, y = scores(seed=1)
    cal = fit_calibration(raw, y, method)
    test_raw, test_y = scores(seed=2)
    before = log_loss(test_y, np.clip(test_raw, 1e-6, 1 - 1e-6))
    after = log_loss(test_y, np.clip(apply_calibration(cal, test_raw), 1e-6, 1 - 1e-6))
    assert after < before


def test_calibration_errors():
    with pytest.raises(ValueError):
        fit_calibration(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError):
        fit_calibration(np.array([0.1, 0.9]), np.array([0, 1]), "magic")
    with pytest.raises(ValueError):
        apply_calibration({"method": "magic"}, np.array([0.5]))


# 10 cases: positives at 0.9 0.8 0.7 0.35 0.2; negatives at 0.6 0.4 0.3 0.1 0.05
P = np.array([0.9, 0.8, 0.7, 0.35, 0.2, 0.6, 0.4, 0.3, 0.1, 0.05])
Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])


def _logit_mid(a: float, b: float) -> float:
    la, lb = np.log(a / (1 - a)), np.log(b / (1 - b))
    return float(1 / (1 + np.exp(-(la + lb) / 2)))


def test_sensitivity_policy_meets_target_with_best_specificity_mid_range():
    t = choose_threshold(P, Y, "sensitivity", target=0.8)
    # 4/5 positives need a cut below 0.35; the best specificity (3/5) holds for any cut in
    # (0.3, 0.35]: the policy takes its middle on the logit scale, away from both scores
    assert t["value"] == pytest.approx(_logit_mid(0.3, 0.35))
    assert 0.3 < t["value"] < 0.35
    assert t["validation_sensitivity"] == pytest.approx(0.8)
    assert t["validation_specificity"] == pytest.approx(0.6)  # 0.3, 0.1, 0.05 below
    assert t["policy"] == "sensitivity" and t["target"] == 0.8
    full = choose_threshold(P, Y, "sensitivity", target=1.0)
    assert full["value"] == pytest.approx(_logit_mid(0.1, 0.2))
    assert full["validation_sensitivity"] == 1.0


def test_sensitivity_policy_spreads_over_a_flat_specificity_range():
    """Separable scores: sensitivity 0.95 is reached anywhere between the top normal and the
    5th-percentile pneumonia; the threshold lands between them, not on either edge."""
    p = np.r_[np.linspace(0.01, 0.2, 20), np.linspace(0.6, 0.99, 40)]
    y = np.r_[np.zeros(20), np.ones(40)]
    t = choose_threshold(p, y, "sensitivity", target=0.95)
    assert t["validation_specificity"] == 1.0
    assert 0.2 < t["value"] < 0.6
    assert t["validation_sensitivity"] >= 0.95
    for target in (0.5, 0.6, 0.95):
        got = choose_threshold(P, Y, "sensitivity", target=target)
        assert got["validation_sensitivity"] >= target


def test_youden_policy():
    t = choose_threshold(P, Y, "youden")
    # J at 0.7 = 0.6 + 1.0 - 1 = 0.6; at 0.35 = 0.8 + 0.6 - 1 = 0.4; at 0.2 = 1.0 + 0.4 - 1
    # the cut (0.6, 0.7] is best: its logit-scale middle
    assert t["value"] == pytest.approx(_logit_mid(0.6, 0.7))
    assert t["validation_sensitivity"] == pytest.approx(0.6)
    assert t["validation_specificity"] == pytest.approx(1.0)
    assert t["target"] is None


def test_fixed_policy_and_unknown_policy():
    t = choose_threshold(P, Y, "fixed", value=0.5)
    assert t["value"] == 0.5
    assert t["validation_sensitivity"] == pytest.approx(0.6)
    assert t["validation_specificity"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        choose_threshold(P, Y, "magic")
    with pytest.raises(ValueError):
        choose_threshold(P, np.ones_like(Y), "youden")
