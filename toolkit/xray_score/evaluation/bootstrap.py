"""Percentile bootstrap confidence intervals, resampling patients (or images)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from scipy import stats

from ..model.decision import decide
from .metrics import CI_METRICS, NAN, _arrays, _ranking_metrics, _threshold_metrics


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
                m = _threshold_metrics(ys, decide(ps, t).astype(int)) | ranking
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


# metric -> (successes, trials) keys of binary_metrics' confusion counts
PROPORTIONS = {
    "accuracy": (("tp", "tn"), ("tp", "tn", "fp", "fn")),
    "sensitivity": (("tp",), ("tp", "fn")),
    "specificity": (("tn",), ("tn", "fp")),
    "precision": (("tp",), ("tp", "fp")),
    "npv": (("tn",), ("tn", "fn")),
}


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact binomial interval for ``k`` successes in ``n`` trials."""
    if n <= 0:
        return (NAN, NAN)
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


def with_exact_intervals(ci: dict[str, tuple[float, float]], counts: dict[str, Any],
                         alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Widen each proportion's bootstrap interval to contain its Clopper-Pearson interval.

    A bootstrap of 8 perfect calls gives "1.000-1.000"; the exact interval (0.631-1.000) says
    what 8 cases can show. The exact interval counts images as independent, the bootstrap
    resamples patients: the union keeps whichever is more cautious.
    """
    out = dict(ci)
    for name, (hits, trials) in PROPORTIONS.items():
        k, n = sum(int(counts[h]) for h in hits), sum(int(counts[t]) for t in trials)
        lo, hi = clopper_pearson(k, n, alpha)
        if np.isnan(lo):
            continue
        b_lo, b_hi = out.get(name, (NAN, NAN))
        out[name] = (lo if np.isnan(b_lo) else min(lo, b_lo),
                     hi if np.isnan(b_hi) else max(hi, b_hi))
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
