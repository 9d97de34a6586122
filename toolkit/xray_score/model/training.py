"""Training orchestration shared by every model kind.

labeled folder -> patient-level split (or an explicit validation folder whose patients are
removed from training) -> the same preprocessing ``batch`` uses -> fit -> calibration and
threshold on the calibration half of validation (as is and re-framed) -> metrics and the
framing-shift check on the other half -> a verified bundle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..batch.drift import reference_from_scores
from ..batch.parallel import TaskFailure, resilient_map
from ..errors import UsageError
from ..io.datasets import exclude_patients, fingerprint, patient_split, read_labeled
from ..io.decode import PREPROCESSING_VERSION
from ..io.reframe import REFRAMINGS
from ..labels import CLASS_NAMES
from .bundle import Bundle
from .domain import QUANTILE, build_domain
from .kinds import Preprocessor, get_kind
from .publish import check_out_target, discard_staging, new_staging, write_bundle
from .validation import (
    CROPS,
    ORIGINAL,
    check_scores,
    fit_operating_point,
    load_variants,
    split_validation,
)

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


def split_data(data: str | Path | None, val: str | Path | None, spec: dict[str, Any],
               needs_training: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation tables, with no patient on both sides."""
    if not needs_training:  # e.g. an ensemble: its members are trained already
        if val is None:
            raise UsageError(f"a {spec['kind']} bundle is fitted on validation films: give --val")
        val_df = read_labeled(val)
        if val_df["label"].nunique() < 2:
            raise UsageError("the validation set needs images of both classes")
        return val_df.iloc[0:0], val_df
    if data is None:
        raise UsageError("--data (a labeled training folder) is required")
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
    """Train a model of ``kind`` and write its bundle to ``out`` (see :mod:`.validation` for
    how the validation films are used)."""
    if spec.get("kind") != kind:
        raise UsageError(f"pipeline {spec.get('name')!r} is for kind {spec.get('kind')!r}, "
                         f"not {kind!r}")
    model_kind = get_kind(kind)
    check_out_target(out, [p for p in (data, val) if p is not None])
    train_df, val_df = split_data(data, val, spec, getattr(model_kind, "needs_training_data",
                                                           True))
    cal_df, check_df, independent = split_validation(val_df, spec)
    preprocessor = model_kind.preprocessor(spec)
    x_tr, y_tr, d_tr = (load_arrays(train_df, model_kind.training_preprocessor(spec), n_jobs)
                        if len(train_df) else (None, None, []))
    crops = CROPS if (spec.get("validation") or {}).get("reframed", True) else ()
    cal = load_variants(cal_df, preprocessor, spec, crops, n_jobs)
    check = cal if not independent else load_variants(check_df, preprocessor, spec,
                                                      tuple(REFRAMINGS), n_jobs)
    x_cal, y_cal = cal.stacked(preprocessor)
    model = model_kind.fit(x_tr, y_tr, x_cal, y_cal, spec, **fit_kwargs)
    staging = new_staging(out)
    try:
        extra, files = model.save(staging)  # first: a CNN then scores with its TFLite twin
        op, calibration, threshold = fit_operating_point(model, preprocessor, cal, spec)
        scores = check_scores(model, preprocessor, op, check)
        val_sets = [cal, check] if independent else [cal]
        every_val = preprocessor.stack([x for v in val_sets for x in _flat(v)])
        domain, domain_files = build_domain(model_kind, model, x_tr, x_cal, every_val, spec,
                                            staging)
        extra = {**extra, "domain": domain} if domain else extra
        files = [*files, *domain_files]
        meta = {
            "kind": kind,
            "name": spec.get("name", kind),
            "pipeline": spec,
            "preprocessing_version": PREPROCESSING_VERSION,
            "input_size": int(getattr(model, "input_size", None) or spec["input_size"]),
            "class_names": list(CLASS_NAMES),
            "calibration": calibration,
            "threshold": threshold,
            **check_meta(scores, op, independent, cal_df, check_df),
            "validation_source": str(val) if val is not None else "patient split of training data",
            "training_data": {"train": fingerprint(train_df, _used(d_tr)),
                              "validation": fingerprint(val_df)},
            **extra,
        }
        bundle = write_bundle(out, meta, files, staging)
    except BaseException:
        discard_staging(staging)
        raise
    m = bundle.meta["validation_metrics"]
    log.info("wrote %s (model_id %s): check-half AUC %.4f, accuracy %.4f, sensitivity %.4f, "
             "specificity %.4f at threshold %.4f", out, bundle.model_id, m["roc_auc"] or np.nan,
             m["accuracy"], m["sensitivity"] or np.nan, m["specificity"] or np.nan,
             bundle.threshold)
    return bundle


def _flat(variants: Any) -> list[Any]:
    """Every film's every variant (as is and re-framed), one model input each."""
    return [x for film in variants.xs for x in film]


def check_meta(scores: pd.DataFrame, op: Any, independent: bool, cal_df: pd.DataFrame,
               check_df: pd.DataFrame) -> dict[str, Any]:
    """What bundle.json records about the check films: metrics as they are, the framing-shift
    check, calibration error on their re-framed copies, and which patients they were."""
    from ..evaluation.framing import framing_headline, framing_summary
    from ..evaluation.metrics import expected_calibration_error

    original = scores[scores["variant"] == ORIGINAL]
    reframed = scores[scores["variant"] != ORIGINAL]
    summary = framing_summary(scores, op.threshold)
    y_orig = (original["true_label"] == CLASS_NAMES[1]).to_numpy().astype(int)
    y_re = (reframed["true_label"] == CLASS_NAMES[1]).to_numpy().astype(int)
    return {
        "validation_metrics": validation_summary(y_orig, original["p_pneumonia"].to_numpy(),
                                                 op.threshold),
        "framing_check": {
            "headline": framing_headline(summary),
            "ece_reframed": expected_calibration_error(y_re, reframed["p_pneumonia"])
            if len(reframed) else None,
            "table": _json_records(summary),
        },
        "reference_scores": reference_from_scores(original["p_pneumonia"].to_numpy(),
                                                  op.threshold, 1 - QUANTILE),
        "validation_split": {
            "independent": independent,
            "calibration_patients": sorted(cal_df["patient_id"].unique().tolist()),
            "check_patients": sorted(check_df["patient_id"].unique().tolist()),
        },
    }


def _json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
            for row in df.to_dict("records")]


def _used(digests: list[str | None]) -> list[str]:
    return [d for d in digests if d]
