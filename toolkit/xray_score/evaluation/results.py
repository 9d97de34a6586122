"""Result tables (rows as ``batch`` writes them) -> metrics: scored and labeled rows, patient
groups, error counts, and the whole evaluation of a folder's results."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io.datasets import patient_id
from ..io.text import csv_unsafe
from ..labels import LABEL_TO_INT, to_binary
from .bootstrap import bootstrap_cis, with_exact_intervals
from .metrics import NAN, binary_metrics, majority_class_reference, threshold_table

log = logging.getLogger(__name__)

BOOTSTRAP_MAX_ROWS = 5000  # larger result sets: intervals from a patient subsample
SMALL_CLASS = 30  # fewer images of a class than this: intervals are wide, the report says so
NUMERIC_COLUMNS = ("p_pneumonia", "threshold", "ms", "width", "height", "scored_in_run",
                   "domain_score")


def results_frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """Result rows (text values, as written) -> one typed frame for evaluation and reports:
    numbers as floats (empty -> NaN), empty text -> NaN, plus ``patient_id`` from file names."""
    df = pd.DataFrame(rows, columns=columns)
    for column in df.columns:
        if column in NUMERIC_COLUMNS:
            df[column] = pd.to_numeric(df[column].mask(df[column].eq("")), errors="coerce")
        else:
            df[column] = df[column].mask(df[column].eq(""))
    df["patient_id"] = row_patients(df)
    return df


def row_patients(df: pd.DataFrame) -> pd.Series:
    """Each row's patient, as training splits see it: the Kermany id in the file name, else the
    DICOM PatientID the row carries (``dicom:<id>``, as in :func:`read_labeled`), else none."""
    from_name = df["path"].map(lambda p: patient_id(str(p))) if len(df) else pd.Series(
        dtype=object)
    if "patient_id" not in df:
        return from_name
    stored = df["patient_id"].where(df["patient_id"].notna() & df["patient_id"].ne(""))
    return from_name.where(from_name.notna(), "dicom:" + stored.astype(str)).where(
        from_name.notna() | stored.notna())


def bootstrap_sample(n: int, groups: np.ndarray | None, seed: int) -> np.ndarray:
    """Row indices the bootstrap resamples: all of them, or whole patients drawn at random up
    to about ``BOOTSTRAP_MAX_ROWS`` rows, so a 100,000-row summary stays cheap (its intervals
    are then those of the subsample: a little wider than the whole set's)."""
    if n <= BOOTSTRAP_MAX_ROWS:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if groups is None:
        return np.sort(rng.choice(n, BOOTSTRAP_MAX_ROWS, replace=False))
    codes = pd.factorize(pd.Series(groups))[0]
    counts = np.bincount(codes)
    order = rng.permutation(len(counts))
    upto = int(np.searchsorted(np.cumsum(counts[order]), BOOTSTRAP_MAX_ROWS)) + 1
    return np.flatnonzero(np.isin(codes, order[:upto]))


def load_results(path: str | Path) -> pd.DataFrame:
    """A results file written by ``batch``/``evaluate`` (CSV or Parquet) as a typed frame."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        raw = pd.read_parquet(path).astype(object).where(lambda d: d.notna(), "")
    else:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False).map(csv_unsafe)
    return results_frame(raw.to_dict("records"), list(raw.columns))


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
    boot = bootstrap_sample(len(y), groups, seed)
    ci_t, ci_half = bootstrap_cis(y[boot], p[boot], [t, 0.5],
                                  None if groups is None else groups[boot], n_boot, seed)
    at_t, at_half = binary_metrics(y, p, t), binary_metrics(y, p, 0.5)
    counts = {name: int((y == code).sum()) for name, code in LABEL_TO_INT.items()}
    return out | {
        "at_threshold": at_t,
        "at_0.5": at_half,
        "ci_threshold": with_exact_intervals(ci_t, at_t),
        "ci_0.5": with_exact_intervals(ci_half, at_half),
        "small_classes": {k: v for k, v in counts.items() if v < SMALL_CLASS},
        "majority": majority_class_reference(y),
        "threshold_table": threshold_table(
            y, p, sorted({*np.round(np.arange(0.05, 0.951, 0.05), 2), round(t, 4)})
        ),
        "n_boot": n_boot,
        "bootstrap_rows": int(len(boot)),
        "ci_unit": "patient" if groups is not None else "image",
    }
