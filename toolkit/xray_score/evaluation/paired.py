"""Paired comparisons of models on the same images: DeLong, McNemar, agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..labels import to_binary
from ..model.decision import decide
from .bootstrap import bootstrap_ci, with_exact_intervals
from .metrics import NAN, _arrays, binary_metrics, majority_class_reference
from .results import label_mask, patient_groups

MCNEMAR_EXACT_BELOW = 25


def _midrank_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """AUCs and DeLong structural components for ``scores`` (k, n) (Sun & Xu 2014)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    v01 = (tz[:, :m] - tx) / n  # per positive: fraction of negatives ranked below it
    v10 = 1.0 - (tz[:, m:] - ty) / m  # per negative: fraction of positives ranked above it
    return aucs, v01, v10


def delong_covariance(y: Any, scores: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for k score vectors on the same images."""
    y_arr = to_binary(y)
    mat = np.atleast_2d(np.asarray(scores, dtype=float))
    aucs, v01, v10 = _midrank_components(y_arr, mat)
    m, n = v01.shape[1], v10.shape[1]
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_test(y: Any, p1: Any, p2: Any) -> dict[str, float]:
    """Two-sided DeLong test of AUC(p1) == AUC(p2) on paired scores (fast DeLong, Sun & Xu).

    Identical AUCs with zero variance give ``z = 0, p_value = 1``; fewer than two images of a
    class give NaN.
    """
    y_arr, a = _arrays(y, p1)
    _, b = _arrays(y_arr, p2)
    keys = ("auc1", "auc2", "diff", "se", "z", "p_value")
    if int(y_arr.sum()) < 2 or int((1 - y_arr).sum()) < 2:
        return dict.fromkeys(keys, NAN)
    aucs, cov = delong_covariance(y_arr, [a, b])
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = math.sqrt(max(var, 0.0))
    z = diff / se if se > 0 else (0.0 if diff == 0.0 else math.copysign(math.inf, diff))
    p_value = float(2 * stats.norm.sf(abs(z)))
    return dict(zip(keys, (float(aucs[0]), float(aucs[1]), diff, se, z, p_value), strict=True))


def mcnemar_test(y: Any, pred1: Any, pred2: Any) -> dict[str, Any]:
    """McNemar's test on paired correctness of two classifiers.

    ``b`` = model 1 right and model 2 wrong, ``c`` = the reverse. With ``b + c < 25`` the
    chi-square approximation is poor, so the exact two-sided binomial test (b ~ Bin(b+c, 1/2))
    is used and ``statistic`` is ``min(b, c)``; otherwise the chi-square statistic with
    continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 d.f. No discordant pairs: p = 1.
    """
    truth = to_binary(y)
    right1, right2 = to_binary(pred1) == truth, to_binary(pred2) == truth
    b, c = int((right1 & ~right2).sum()), int((~right1 & right2).sum())
    if b + c == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "exact": True}
    if b + c < MCNEMAR_EXACT_BELOW:
        p_value = stats.binomtest(b, b + c, 0.5).pvalue
        return {
            "b": b,
            "c": c,
            "statistic": float(min(b, c)),
            "p_value": float(p_value),
            "exact": True,
        }
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "statistic": float(stat),
        "p_value": float(stats.chi2.sf(stat, 1)),
        "exact": False,
    }


def significance_sentence(what: str, p_value: float, alpha: float = 0.05) -> str:
    """Plain-language conclusion that follows from the p-value."""
    if p_value is None or math.isnan(p_value):
        return f"The {what} could not be tested on these data."
    verdict = "is" if p_value < alpha else "is not"
    return f"The {what} {verdict} statistically significant at {alpha:g} (p = {p_value:.3g})."


def _model_columns(df: pd.DataFrame, model: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    mid = model["model_id"]
    p = df[f"p_{mid}"].to_numpy(float)
    col = f"pred_{mid}"
    pred = to_binary(df[col]) if col in df else decide(p, float(model["threshold"])).astype(int)
    return p, pred


def compare_models(
    df_wide: pd.DataFrame,
    models: list[dict[str, Any]],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Side-by-side metrics, paired tests, agreement and disagreements for >= 2 models.

    Images where any model has no score (error rows) are excluded from the paired analysis.
    """
    if len(models) < 2:
        raise ValueError("compare needs at least two models")
    pcols = [f"p_{m['model_id']}" for m in models]
    complete = df_wide[df_wide[pcols].notna().all(axis=1)]
    cols = {m["model_id"]: _model_columns(complete, m) for m in models}
    mask = label_mask(complete)
    lab = complete[mask]
    out: dict[str, Any] = {
        "n_rows": len(df_wide),
        "n_complete": len(complete),
        "n_excluded": len(df_wide) - len(complete),
        "labeled": len(lab) > 0,
        "alpha": alpha,
        "pairs": [],
    }
    y = to_binary(lab["true_label"].astype(str).str.strip()) if out["labeled"] else None
    groups = patient_groups(lab) if out["labeled"] else None
    if out["labeled"]:
        out["per_model"] = {
            m["model_id"]: {
                "metrics": binary_metrics(y, cols[m["model_id"]][0][mask], m["threshold"]),
                "ci": with_exact_intervals(bootstrap_ci(
                    y, cols[m["model_id"]][0][mask], m["threshold"], groups, n_boot, seed, alpha
                ), binary_metrics(y, cols[m["model_id"]][0][mask], m["threshold"]), alpha),
            }
            for m in models
        }
        out["majority"] = majority_class_reference(y)
    for m1, m2 in combinations(models, 2):
        out["pairs"].append(_pair_stats(m1, m2, cols, y, mask, alpha))
    preds = np.column_stack([cols[m["model_id"]][1] for m in models])
    disagree = preds.min(axis=1) != preds.max(axis=1)
    out["disagreements"] = complete[disagree]
    out["n_disagree"] = int(disagree.sum())
    return out


def _pair_stats(
    m1: dict[str, Any],
    m2: dict[str, Any],
    cols: dict[str, tuple[np.ndarray, np.ndarray]],
    y: np.ndarray | None,
    mask: np.ndarray,
    alpha: float,
) -> dict[str, Any]:
    (p1, d1), (p2, d2) = cols[m1["model_id"]], cols[m2["model_id"]]
    varied = p1.size >= 2 and np.ptp(p1) > 0 and np.ptp(p2) > 0
    pair: dict[str, Any] = {
        "model1": m1["model_id"],
        "model2": m2["model_id"],
        "agreement": float((d1 == d2).mean()) if p1.size else NAN,
        "pearson": float(stats.pearsonr(p1, p2)[0]) if varied else NAN,
        "spearman": float(stats.spearmanr(p1, p2)[0]) if varied else NAN,
    }
    if y is None:
        return pair
    delong = delong_test(y, p1[mask], p2[mask])
    mcn = mcnemar_test(y, d1[mask], d2[mask])
    return pair | {
        "delong": delong,
        "mcnemar": mcn,
        "auc_conclusion": significance_sentence("difference in AUC", delong["p_value"], alpha),
        "mcnemar_conclusion": significance_sentence(
            "difference in accuracy at the operating thresholds", mcn["p_value"], alpha
        ),
    }
