"""Metrics, bootstrap confidence intervals and paired model comparisons.

Conventions: ``y`` is 0 (NORMAL) / 1 (PNEUMONIA) (label names are accepted too), ``p`` is the
calibrated probability of pneumonia, and an image is called positive when ``p >= threshold``.
Metrics that are undefined for the input (one class only, empty input) are NaN; nothing here
raises on degenerate data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy import stats
from sklearn import metrics as skm

log = logging.getLogger(__name__)

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
LABEL_TO_INT = {"NORMAL": 0, "PNEUMONIA": 1}
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "npv", "f1")
RANKING_METRICS = ("roc_auc", "pr_auc", "brier", "ece")
CI_METRICS = THRESHOLD_METRICS + RANKING_METRICS
ECE_BINS = 10
MCNEMAR_EXACT_BELOW = 25
NAN = float("nan")


# --------------------------------------------------------------------------- inputs


def to_binary(labels: Iterable[Any]) -> np.ndarray:
    """Map labels ("NORMAL"/"PNEUMONIA", bools or 0/1) to an int array of 0/1."""
    arr = np.asarray(list(labels) if not isinstance(labels, np.ndarray | pd.Series) else labels)
    if arr.dtype.kind in "OUS":
        mapped = [LABEL_TO_INT.get(str(v).strip().upper(), -1) for v in arr]
        out = np.asarray(mapped, dtype=int)
        if (out < 0).any():
            raise ValueError(f"unknown labels: {sorted({str(v) for v in arr[out < 0]})}")
        return out
    return arr.astype(int)


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = to_binary(y), np.asarray(p, dtype=float)
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y and p differ in length: {y_arr.shape} vs {p_arr.shape}")
    return y_arr, p_arr


def has_both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


# --------------------------------------------------------------------------- metrics


def confusion(y: Any, p: Any, threshold: float) -> np.ndarray:
    """2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` (rows: truth, columns: prediction)."""
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return np.zeros((2, 2), dtype=int)
    return skm.confusion_matrix(y_arr, (p_arr >= threshold).astype(int), labels=[0, 1])


def expected_calibration_error(y: Any, p: Any, n_bins: int = ECE_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins on [0, 1] (scikit-learn has no ECE).

    ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``; empty bins contribute nothing and
    ``p == 1`` falls in the last bin.
    """
    y_arr, p_arr = _arrays(y, p)
    if y_arr.size == 0:
        return NAN
    bins = np.clip((p_arr * n_bins).astype(int), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    gap = np.abs(
        np.bincount(bins, weights=y_arr, minlength=n_bins)
        - np.bincount(bins, weights=p_arr, minlength=n_bins)
    )
    return float(gap.sum() / counts.sum())


def _ranking_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if y.size == 0:
        return dict.fromkeys(RANKING_METRICS, NAN)
    both = has_both_classes(y)
    return {
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else NAN,
        "pr_auc": float(skm.average_precision_score(y, p)) if both else NAN,
        "brier": float(skm.brier_score_loss(y, p, pos_label=1)),
        "ece": expected_calibration_error(y, p),
    }


def _threshold_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if y.size == 0:
        out: dict[str, float] = dict.fromkeys(THRESHOLD_METRICS, NAN)
        return out | dict.fromkeys(("tn", "fp", "fn", "tp"), 0)
    (tn, fp), (fn, tp) = skm.confusion_matrix(y, pred, labels=[0, 1])
    prec, rec, f1, _ = skm.precision_recall_fscore_support(
        y, pred, labels=[0, 1], zero_division=np.nan
    )
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(rec[1]),
        "specificity": float(rec[0]),
        "precision": float(prec[1]),
        "npv": float(prec[0]),
        "f1": float(f1[1]),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """All headline metrics at one threshold (precision = PPV; NaN where undefined)."""
    y_arr, p_arr = _arrays(y, p)
    with sklearn.config_context(assume_finite=True):
        out = _threshold_metrics(y_arr, (p_arr >= threshold).astype(int))
        out |= _ranking_metrics(y_arr, p_arr)
    n_pos = int(y_arr.sum())
    return out | {
        "threshold": float(threshold),
        "n": int(y_arr.size),
        "n_pos": n_pos,
        "n_neg": int(y_arr.size - n_pos),
    }


def majority_class_reference(y: Any) -> dict[str, Any]:
    """Metrics of the trivial classifier that always predicts the more frequent class."""
    y_arr = to_binary(y)
    label = int(y_arr.size > 0 and y_arr.mean() > 0.5)
    out = binary_metrics(y_arr, np.full(y_arr.size, float(label)), threshold=0.5)
    return out | {"majority_label": CLASS_NAMES[label]}


def threshold_table(y: Any, p: Any, thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Sensitivity / specificity / PPV / NPV and workload at each threshold (default 0.05..0.95)."""
    y_arr, p_arr = _arrays(y, p)
    if thresholds is None:
        thresholds = np.round(np.arange(0.05, 0.951, 0.05), 2)
    rows = []
    for t in sorted({float(t) for t in thresholds}):
        m = binary_metrics(y_arr, p_arr, t)
        flagged = m["tp"] + m["fp"]
        rows.append(
            {
                "threshold": t,
                "sensitivity": m["sensitivity"],
                "specificity": m["specificity"],
                "ppv": m["precision"],
                "npv": m["npv"],
                "flagged": flagged,
                "flagged_fraction": flagged / m["n"] if m["n"] else NAN,
                "tp": m["tp"],
                "fp": m["fp"],
                "tn": m["tn"],
                "fn": m["fn"],
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- bootstrap


def _resample_indices(
    n: int, groups: Any, n_boot: int, rng: np.random.Generator
) -> Iterable[np.ndarray]:
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    codes = pd.factorize(pd.Series(groups).astype(str))[0]
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)] if n else []
    for _ in range(n_boot):
        picked = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[g] for g in picked])


def bootstrap_cis(
    y: Any,
    p: Any,
    thresholds: Sequence[float],
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict[str, tuple[float, float]]]:
    """Percentile bootstrap CIs at several thresholds from one set of resamples.

    Resamples whole groups (patients) when ``groups`` is given, else images. Resamples on which
    a metric is undefined (e.g. one class only) are ignored for that metric; a metric undefined
    on every resample gets ``(nan, nan)``.
    """
    y_arr, p_arr = _arrays(y, p)
    if groups is not None and len(groups) != y_arr.size:
        raise ValueError("groups must have one entry per image")
    rng = np.random.default_rng(seed)
    draws = np.full((len(thresholds), n_boot, len(CI_METRICS)), np.nan)
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for b, idx in enumerate(_resample_indices(y_arr.size, groups, n_boot, rng)):
            ys, ps = y_arr[idx], p_arr[idx]
            ranking = _ranking_metrics(ys, ps)
            for k, t in enumerate(thresholds):
                m = _threshold_metrics(ys, (ps >= t).astype(int)) | ranking
                draws[k, b] = [m[name] for name in CI_METRICS]
    return [_percentiles(d, alpha) for d in draws]


def _percentiles(draws: np.ndarray, alpha: float) -> dict[str, tuple[float, float]]:
    out = {}
    for j, name in enumerate(CI_METRICS):
        col = draws[:, j][~np.isnan(draws[:, j])]
        if col.size == 0:
            out[name] = (NAN, NAN)
        else:
            lo, hi = np.quantile(col, [alpha / 2, 1 - alpha / 2])
            out[name] = (float(lo), float(hi))
    return out


def bootstrap_ci(
    y: Any,
    p: Any,
    threshold: float,
    groups: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap ``(lo, hi)`` per metric; see :func:`bootstrap_cis`."""
    return bootstrap_cis(y, p, [threshold], groups, n_boot, seed, alpha)[0]


# --------------------------------------------------------------------------- paired tests


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


# --------------------------------------------------------------------------- result tables


def result_threshold(df: pd.DataFrame, default: float = 0.5) -> float:
    """The threshold recorded in the result rows (most common value), else ``default``."""
    if "threshold" not in df or df["threshold"].dropna().empty:
        return default
    values = df["threshold"].dropna().astype(float)
    if values.nunique() > 1:
        log.warning(
            "result rows carry %d different thresholds; using the most common", values.nunique()
        )
    return float(values.mode().iloc[0])


def scored_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ok and a probability."""
    ok = df["status"].astype(str).eq("ok") if "status" in df else True
    return df[ok & df["p_pneumonia"].notna()]


def label_mask(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of rows whose ``true_label`` is NORMAL or PNEUMONIA."""
    if "true_label" not in df:
        return np.zeros(len(df), dtype=bool)
    names = df["true_label"].astype(str).str.strip().str.upper()
    return names.isin(LABEL_TO_INT).to_numpy()


def labeled_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Scored rows that carry a known true label."""
    ok = scored_rows(df)
    return ok[label_mask(ok)]


def patient_groups(df: pd.DataFrame) -> np.ndarray | None:
    """Patient ids for bootstrap resampling; images without one count as their own patient."""
    if "patient_id" not in df or df["patient_id"].isna().all():
        return None
    own = pd.Series([f"__image_{i}" for i in range(len(df))], index=df.index)
    return df["patient_id"].astype(object).where(df["patient_id"].notna(), own).astype(str).values


def error_counts(df: pd.DataFrame) -> dict[str, int]:
    """Number of error rows per error kind, most frequent first."""
    if "status" not in df:
        return {}
    errs = df[df["status"].astype(str).eq("error")]
    kinds = errs.get("error_kind", pd.Series(dtype=object)).fillna("unknown").astype(str)
    return {str(k): int(v) for k, v in kinds.value_counts().items()}


def score_summary(p: Any, threshold: float) -> dict[str, Any]:
    """Distribution of scores for unlabeled data: counts above threshold and quantiles."""
    arr = np.asarray(p, dtype=float)
    arr = arr[~np.isnan(arr)]
    above = int((arr >= threshold).sum())
    qs = dict(
        zip(
            ("min", "q25", "median", "q75", "max"),
            np.quantile(arr, [0, 0.25, 0.5, 0.75, 1]) if arr.size else [NAN] * 5,
            strict=True,
        )
    )
    return {
        "n": int(arr.size),
        "threshold": float(threshold),
        "n_above": above,
        "frac_above": above / arr.size if arr.size else NAN,
        **{k: float(v) for k, v in qs.items()},
    }


def evaluate_results(
    df: pd.DataFrame,
    threshold: float | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate result rows: drop errors, map labels, metrics + CIs at the threshold and 0.5.

    ``threshold`` defaults to the one recorded in the rows. Without labels, ``labeled`` is
    False and only counts, the score summary and errors are filled in.
    """
    t = result_threshold(df) if threshold is None else float(threshold)
    ok, lab = scored_rows(df), labeled_rows(df)
    out: dict[str, Any] = {
        "threshold": t,
        "n_rows": len(df),
        "n_scored": len(ok),
        "n_errors": len(df) - len(ok),
        "errors_by_kind": error_counts(df),
        "n_labeled": len(lab),
        "labeled": len(lab) > 0,
        "scores": score_summary(ok["p_pneumonia"], t),
    }
    if not out["labeled"]:
        return out
    y, p = to_binary(lab["true_label"].astype(str).str.strip()), lab["p_pneumonia"].to_numpy(float)
    groups = patient_groups(lab)
    ci_t, ci_half = bootstrap_cis(y, p, [t, 0.5], groups, n_boot, seed)
    return out | {
        "at_threshold": binary_metrics(y, p, t),
        "at_0.5": binary_metrics(y, p, 0.5),
        "ci_threshold": ci_t,
        "ci_0.5": ci_half,
        "majority": majority_class_reference(y),
        "threshold_table": threshold_table(
            y, p, sorted({*np.round(np.arange(0.05, 0.951, 0.05), 2), round(t, 4)})
        ),
        "n_boot": n_boot,
        "ci_unit": "patient" if groups is not None else "image",
    }


# --------------------------------------------------------------------------- model comparison


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
    pred = to_binary(df[col]) if col in df else (p >= float(model["threshold"])).astype(int)
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
                "ci": bootstrap_ci(
                    y, cols[m["model_id"]][0][mask], m["threshold"], groups, n_boot, seed, alpha
                ),
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
