"""Metrics, bootstrap CIs and paired tests against hand-computed and textbook values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from xray_score.evaluation import bootstrap, metrics, paired, results

# 4 positives, 4 negatives; at threshold 0.5: tp=3, fn=1, tn=3, fp=1.
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1])


def test_binary_metrics_hand_computed() -> None:
    m = metrics.binary_metrics(Y, P, 0.5)
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (3, 1, 3, 1)
    assert (m["n"], m["n_pos"], m["n_neg"]) == (8, 4, 4)
    for key in ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1"):
        assert m[key] == pytest.approx(0.75)
    # 16 positive/negative pairs, only (0.3 vs 0.6) and (0.3 vs 0.4) are mis-ordered.
    assert m["roc_auc"] == pytest.approx(14 / 16)
    # AP: precision at each positive's rank: 1, 1, 1 (rank 3 of 3), then 4/6 at rank 6.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 1 + 4 / 6) / 4)
    brier = np.mean((P - Y) ** 2)
    assert m["brier"] == pytest.approx(brier)


def test_labels_by_name_are_accepted() -> None:
    names = np.where(Y == 1, "PNEUMONIA", "normal")
    assert metrics.binary_metrics(names, P, 0.5)["tp"] == 3
    with pytest.raises(ValueError, match="unknown labels"):
        metrics.to_binary(["PNEUMONIA", "cat"])


def test_ece_hand_computed() -> None:
    # bin [0.2,0.3): p=0.25 twice, one positive -> |0.5-0.25| ; bin [0.9,1]: p=0.95 and 1.0, both
    # positive -> |1 - 0.975|; weights 2/4 each.
    y, p = [1, 0, 1, 1], [0.25, 0.25, 0.95, 1.0]
    assert metrics.expected_calibration_error(y, p) == pytest.approx(0.5 * 0.25 + 0.5 * 0.025)


def test_confusion_layout() -> None:
    assert metrics.confusion(Y, P, 0.5).tolist() == [[3, 1], [1, 3]]
    assert metrics.confusion([], [], 0.5).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    ("y", "p"),
    [([], []), ([1, 1, 1], [0.2, 0.6, 0.9]), ([0, 0], [0.1, 0.7])],
    ids=["empty", "all-positive", "all-negative"],
)
def test_degenerate_inputs_give_nan_not_errors(y: list, p: list) -> None:
    m = metrics.binary_metrics(y, p, 0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    ci = bootstrap.bootstrap_ci(y, p, 0.5, n_boot=20)
    assert all(math.isnan(v) for v in ci["roc_auc"])
    assert math.isnan(paired.delong_test(y, p, p)["p_value"])
    assert len(metrics.threshold_table(y, p)) == 19


def test_one_class_keeps_defined_metrics() -> None:
    m = metrics.binary_metrics([1, 1, 1, 1], [0.2, 0.6, 0.7, 0.9], 0.5)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert math.isnan(m["specificity"])
    assert m["precision"] == 1.0


def test_majority_class_reference() -> None:
    ref = metrics.majority_class_reference(["PNEUMONIA"] * 3 + ["NORMAL"])
    assert ref["majority_label"] == "PNEUMONIA"
    assert ref["accuracy"] == 0.75 and ref["sensitivity"] == 1.0 and ref["specificity"] == 0.0
    assert ref["roc_auc"] == 0.5


def test_threshold_table_monotone() -> None:
    tab = metrics.threshold_table(Y, P, [0.05, 0.5, 0.95])
    assert tab["threshold"].tolist() == [0.05, 0.5, 0.95]
    assert tab["sensitivity"].is_monotonic_decreasing
    assert tab["specificity"].is_monotonic_increasing
    assert tab.loc[1, ["tp", "fp", "tn", "fn", "flagged"]].tolist() == [3, 1, 3, 1, 4]


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    p2 = np.clip(0.15 * y + 0.85 * rng.random(n), 0, 1).round(1)  # ties on purpose
    return y, p1, p2


def test_bootstrap_ci_contains_estimate_and_is_reproducible() -> None:
    y, p, _ = _noisy(200, 1)
    ci = bootstrap.bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)
    m = metrics.binary_metrics(y, p, 0.5)
    for key in metrics.CI_METRICS:
        assert ci[key][0] <= m[key] <= ci[key][1], key
    assert ci == bootstrap.bootstrap_ci(y, p, 0.5, n_boot=200, seed=3)


def test_bootstrap_by_patient_is_wider_for_clustered_data() -> None:
    # Each patient contributes 10 identical images: resampling images understates the variance.
    y, p, _ = _noisy(40, 2)
    y, p = np.repeat(y, 10), np.repeat(p, 10)
    groups = np.repeat(np.arange(40), 10)
    by_image = bootstrap.bootstrap_ci(y, p, 0.5, n_boot=300)["roc_auc"]
    by_patient = bootstrap.bootstrap_ci(y, p, 0.5, groups=groups, n_boot=300)["roc_auc"]
    assert by_patient[1] - by_patient[0] > 1.5 * (by_image[1] - by_image[0])


def _delong_slow(y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[float, float, float]:
    """DeLong (1988) directly from the Mann-Whitney kernel, O(n^2)."""

    def components(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        x, z = p[y == 1], p[y == 0]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    a1, v10_1, v01_1 = components(p1)
    a2, v10_2, v01_2 = components(p2)
    m, n = len(v10_1), len(v01_1)
    s10 = np.cov(np.vstack([v10_1, v10_2]))
    s01 = np.cov(np.vstack([v01_1, v01_2]))
    s = s10 / m + s01 / n
    return a1, a2, math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])


def test_delong_matches_direct_computation() -> None:
    y, p1, p2 = _noisy(120, 4)
    fast = paired.delong_test(y, p1, p2)
    a1, a2, se = _delong_slow(y, p1, p2)
    assert fast["auc1"] == pytest.approx(a1) and fast["auc2"] == pytest.approx(a2)
    assert fast["se"] == pytest.approx(se)
    z = (a1 - a2) / se
    assert fast["z"] == pytest.approx(z)
    assert fast["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))


def test_delong_known_auc_and_identical_models() -> None:
    out = paired.delong_test(Y, P, P)
    assert out["auc1"] == pytest.approx(14 / 16) == out["auc2"]
    assert (out["diff"], out["z"], out["p_value"]) == (0.0, 0.0, 1.0)
    perfect = np.where(Y == 1, 0.9, 0.1)
    assert paired.delong_test(Y, perfect, P)["auc1"] == 1.0


def test_mcnemar_exact_small_counts() -> None:
    # b=2, c=8: exact two-sided binomial p = 2 * (C(10,0)+C(10,1)+C(10,2)) / 2^10 = 112/1024.
    truth = np.ones(10, dtype=int)
    pred1 = np.array([1, 1] + [0] * 8)
    pred2 = np.array([0, 0] + [1] * 8)
    out = paired.mcnemar_test(truth, pred1, pred2)
    assert (out["b"], out["c"], out["exact"]) == (2, 8, True)
    assert out["p_value"] == pytest.approx(112 / 1024)


def test_mcnemar_chi_square_textbook() -> None:
    # Wikipedia's McNemar example: b=121, c=59 -> corrected chi2 = 61^2/180 = 20.672.
    b, c = 121, 59
    truth = np.ones(b + c, dtype=int)
    pred1 = np.r_[np.ones(b), np.zeros(c)].astype(int)
    out = paired.mcnemar_test(truth, pred1, 1 - pred1)
    assert out["exact"] is False
    assert out["statistic"] == pytest.approx(61**2 / 180)
    assert out["p_value"] == pytest.approx(math.erfc(math.sqrt(61**2 / 180 / 2)))  # chi2, 1 df
    assert paired.mcnemar_test(truth, pred1, pred1)["p_value"] == 1.0


def _rows(status: list[str], labels: list[str | None]) -> pd.DataFrame:
    n = len(status)
    p = np.linspace(0.1, 0.9, n)
    return pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "p_pneumonia": np.where(np.array(status) == "ok", p, np.nan),
            "threshold": 0.4,
            "status": status,
            "error_kind": [None if s == "ok" else "truncated" for s in status],
            "true_label": labels,
        }
    )


def test_evaluate_results_drops_errors_and_uses_row_threshold() -> None:
    df = _rows(["ok"] * 6 + ["error"], ["NORMAL"] * 3 + ["PNEUMONIA"] * 3 + ["PNEUMONIA"])
    res = results.evaluate_results(df, n_boot=50)
    assert res["threshold"] == 0.4 and res["labeled"]
    assert (res["n_rows"], res["n_scored"], res["n_errors"]) == (7, 6, 1)
    assert res["errors_by_kind"] == {"truncated": 1}
    assert res["at_threshold"]["roc_auc"] == 1.0 and res["at_threshold"]["n"] == 6
    assert res["at_0.5"]["threshold"] == 0.5
    assert 0.4 in res["threshold_table"]["threshold"].tolist()


@pytest.mark.parametrize(
    ("status", "labels"),
    [(["error"] * 3, ["NORMAL"] * 3), (["ok"] * 3, [None] * 3), ([], [])],
    ids=["all-errors", "unlabeled", "empty"],
)
def test_evaluate_results_degenerate(status: list[str], labels: list) -> None:
    res = results.evaluate_results(_rows(status, labels), n_boot=10)
    assert not res["labeled"]
    assert res["n_errors"] == status.count("error")


def test_compare_models_pairs_and_conclusion() -> None:
    y, p1, p2 = _noisy(150, 5)
    df = pd.DataFrame(
        {
            "path": [f"x{i}" for i in range(150)],
            "true_label": np.where(y == 1, "PNEUMONIA", "NORMAL"),
            "p_a": p1,
            "p_b": p2,
            "p_c": p1,
        }
    )
    models = [{"model_id": k, "threshold": 0.5} for k in "abc"]
    res = paired.compare_models(df, models, n_boot=30)
    assert len(res["pairs"]) == 3
    ac = next(pr for pr in res["pairs"] if (pr["model1"], pr["model2"]) == ("a", "c"))
    assert ac["agreement"] == 1.0 and ac["delong"]["p_value"] == 1.0
    assert "is not statistically significant at 0.05" in ac["auc_conclusion"]
    assert paired.significance_sentence("x", 0.01) == (
        "The x is statistically significant at 0.05 (p = 0.01)."
    )
