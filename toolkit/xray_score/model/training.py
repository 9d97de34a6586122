"""Training orchestration shared by every model kind.

labeled folder -> patient-level split (or an explicit validation folder whose patients are
removed from training) -> the same preprocessing ``batch`` uses -> fit -> calibration and
threshold on validation -> a verified bundle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..batch.parallel import TaskFailure, resilient_map
from ..errors import UsageError
from ..io.datasets import exclude_patients, fingerprint, patient_split, read_labeled
from ..io.decode import PREPROCESSING_VERSION
from ..labels import CLASS_NAMES
from .bundle import Bundle
from .calibration import choose_threshold, fit_calibration
from .decision import OperatingPoint
from .kinds import Preprocessor, get_kind
from .publish import check_out_target, discard_staging, new_staging, write_bundle

log = logging.getLogger(__name__)


def load_arrays(df: pd.DataFrame, preprocessor: Preprocessor, n_jobs: int = 2,
                timeout: float | None = 60.0) -> tuple[Any, np.ndarray, list[str]]:
    """Preprocess a labeled table in parallel; returns (X, y, sha256s), dropping bad files."""
    paths = df["path"].tolist()
    xs: list[Any] = [None] * len(paths)
    digests: list[str | None] = [None] * len(paths)
    bad = 0
    for index, path, outcome in resilient_map(preprocessor, paths, n_jobs=n_jobs,
                                              timeout=timeout):
        if isinstance(outcome, TaskFailure) or not outcome.ok:
            bad += 1
            why = outcome.message if isinstance(outcome, TaskFailure) else outcome.error
            log.warning("skipping training file %s: %s", path, why)
            continue
        xs[index], digests[index] = outcome.x, outcome.sha256
    keep = [i for i, x in enumerate(xs) if x is not None]
    if bad:
        log.warning("%d of %d files could not be used", bad, len(paths))
    if not keep:
        raise UsageError("no usable images")
    x = preprocessor.stack([xs[i] for i in keep])
    y = df["label"].to_numpy()[keep]
    return x, y, [digests[i] for i in keep]


def split_data(data: str | Path, val: str | Path | None, spec: dict[str, Any]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation tables, with no patient on both sides."""
    df = read_labeled(data)
    if val is not None:
        val_df = read_labeled(val)
        train_df = exclude_patients(df, val_df)
    else:
        cfg = spec.get("validation") or {}
        train_df, val_df = patient_split(df, float(cfg.get("fraction", 0.15)),
                                         int(cfg.get("seed", 0)))
    for name, part in (("training", train_df), ("validation", val_df)):
        if part["label"].nunique() < 2:
            raise UsageError(f"the {name} set needs images of both classes "
                             f"({', '.join(CLASS_NAMES)})")
    log.info("training on %d images (%d patients), validating on %d images (%d patients)",
             len(train_df), train_df["patient_id"].nunique(), len(val_df),
             val_df["patient_id"].nunique())
    return train_df, val_df


def validation_summary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Headline validation metrics stored in the bundle."""
    from ..evaluation.metrics import binary_metrics

    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in binary_metrics(y, p, threshold).items()}


def train_bundle(kind: str, data: str | Path, out: str | Path, spec: dict[str, Any],
                 val: str | Path | None = None, n_jobs: int = 2, **fit_kwargs: Any) -> Bundle:
    """Train a model of ``kind`` and write its bundle to ``out``."""
    if spec.get("kind") != kind:
        raise UsageError(f"pipeline {spec.get('name')!r} is for kind {spec.get('kind')!r}, "
                         f"not {kind!r}")
    model_kind = get_kind(kind)
    check_out_target(out, [data] + ([val] if val is not None else []))
    train_df, val_df = split_data(data, val, spec)
    preprocessor = model_kind.preprocessor(spec)
    x_tr, y_tr, d_tr = load_arrays(train_df, preprocessor, n_jobs)
    x_val, y_val, d_val = load_arrays(val_df, preprocessor, n_jobs)
    model = model_kind.fit(x_tr, y_tr, x_val, y_val, spec, **fit_kwargs)
    staging = new_staging(out)
    try:
        bundle = _finish(model, staging, out, kind, spec, val, x_val, y_val,
                         (train_df, d_tr), (val_df, d_val))
    except BaseException:
        discard_staging(staging)
        raise
    m = bundle.meta["validation_metrics"]
    log.info("wrote %s (model_id %s): validation AUC %.4f, accuracy %.4f, sensitivity %.4f, "
             "specificity %.4f at threshold %.4f", out, bundle.model_id, m["roc_auc"] or np.nan,
             m["accuracy"], m["sensitivity"] or np.nan, m["specificity"] or np.nan,
             bundle.threshold)
    return bundle


def _finish(model: Any, staging: Path, out: str | Path, kind: str, spec: dict[str, Any],
            val: str | Path | None, x_val: Any, y_val: np.ndarray,
            train_part: tuple[pd.DataFrame, list], val_part: tuple[pd.DataFrame, list]
            ) -> Bundle:
    """Save the model, fit calibration and threshold on validation, write the bundle."""
    extra, files = model.save(staging)  # first: a CNN then scores with its stored TFLite twin
    raw_val = model.predict_raw(x_val)
    calibration = fit_calibration(raw_val, y_val, spec["calibration"].get("method", "platt"))
    p_val = OperatingPoint(calibration, 0.5).probability(raw_val)
    tcfg = spec["threshold"]
    threshold = choose_threshold(p_val, y_val, tcfg.get("policy", "sensitivity"),
                                 float(tcfg.get("target", 0.95)), float(tcfg.get("value", 0.5)))
    threshold["chosen_on"] = "validation"
    meta = {
        "kind": kind,
        "name": spec.get("name", kind),
        "pipeline": spec,
        "preprocessing_version": PREPROCESSING_VERSION,
        "input_size": int(spec["input_size"]),
        "class_names": list(CLASS_NAMES),
        "calibration": calibration,
        "threshold": threshold,
        "validation_metrics": validation_summary(y_val, p_val, threshold["value"]),
        "validation_source": str(val) if val is not None else "patient split of training data",
        "training_data": {"train": fingerprint(train_part[0], _used(train_part[1])),
                          "validation": fingerprint(val_part[0], _used(val_part[1]))},
        **extra,
    }
    return write_bundle(out, meta, files, staging)


def _used(digests: list[str | None]) -> list[str]:
    return [d for d in digests if d]
