"""``xray-score calibrate``: a derived bundle calibrated and thresholded on a site's own films."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import ExitCode
from ..labels import CLASS_NAMES
from .common import (
    cnn_runtime_options,
    command_line,
    echo_summary,
    handle_errors,
    resolve_model,
    run_meta,
    runtime_options,
)

log = logging.getLogger(__name__)
_DROP = ("files", "created", "library_versions", "format", "format_version")


def site_scores(parent: Any, df: Any, n_jobs: int, **runtime: Any) -> tuple[Any, ...]:
    """Raw model outputs of the sample's readable films (one decode each), their labels and
    patient groups; unreadable films are left out with a warning."""
    from ..batch.scorer import BatchScorer

    scorer = BatchScorer(parent, n_jobs=n_jobs, **runtime)
    label = dict(zip(df["path"], df["label"], strict=True))
    patient = dict(zip(df["path"], df["patient_id"], strict=True))
    raw, y, groups, bad = [], [], [], 0
    for batch in scorer.iter_batches(df["path"].tolist()):
        if not batch[0].ok:
            bad += 1
            log.warning("left out %s: %s", batch[0].path, batch[0].error)
            continue
        raw.append(scorer.predictor.predict_raw(scorer.preprocessor.stack([r.x for r in batch])))
        y += [label[r.path] for r in batch]
        groups += [patient[r.path] for r in batch]
    if bad:
        log.warning("%d film(s) of the sample could not be scored", bad)
    return np.concatenate(raw) if raw else np.zeros(0), np.asarray(y, int), np.asarray(groups)


def parent_prevalence(parent: Any) -> float:
    """The prior the parent's probabilities carry: a derived bundle's own, else the parent's
    validation prevalence."""
    if "prior" in parent.calibration:
        return float(parent.calibration["prior"])
    counts = ((parent.meta.get("training_data") or {}).get("validation") or {}).get(
        "class_counts") or {}
    pos, neg = counts.get(CLASS_NAMES[1], 0), counts.get(CLASS_NAMES[0], 0)
    if pos and neg:
        return pos / (pos + neg)
    log.warning("the parent bundle records no validation class counts: prior 0.5")
    return 0.5


def derive_bundle(parent: Any, out: Path, fitted: dict[str, Any], sample: dict[str, Any]
                  ) -> Any:
    """Write the derived bundle: the parent's verified model files, a new bundle.json."""
    from ..model.kinds import get_kind
    from ..model.publish import discard_staging, new_staging, write_bundle

    staging = new_staging(out)
    try:
        files = get_kind(parent.kind).copy_files(parent, staging, staging.parent / out.name)
        meta = {k: v for k, v in parent.meta.items() if k not in _DROP}
        meta.update(
            name=f"{parent.name}-site", calibration=fitted["calibration"],
            threshold=fitted["threshold"], site_sample=sample,
            derived_from={"model_id": parent.model_id, "name": parent.name,
                          "path": str(parent.path)},
            parent_validation_metrics=parent.meta.get("validation_metrics"),
            validation_metrics={k: v for k, v in fitted["metrics"].items()},
            validation_source="site sample (also chose the threshold)")
        return write_bundle(out, meta, files, staging)
    except BaseException:
        discard_staging(staging)
        raise


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Labeled folder of the site's own films (NORMAL/, PNEUMONIA/).")
@click.option("--out", required=True, type=click.Path(), help="Derived bundle directory.")
@click.option("--target-sensitivity", default=0.95, show_default=True)
@click.option("--method", type=click.Choice(["platt", "temperature", "isotonic"]),
              default="platt", show_default=True, help="Calibration refitted on the sample.")
@click.option("--prevalence", type=float,
              help="The site's share of pneumonia films, when known (default: the parent's).")
@click.option("--confidence", default=0.8, show_default=True,
              help="Probability that sensitivity on new site films reaches the target.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="HTML report (default: <out>-calibration.html beside the bundle).")
@click.option("--jobs", "-j", default=2, show_default=True, help="Worker processes.")
@cnn_runtime_options
@handle_errors
def calibrate(bundle: str, data: str, out: str, target_sensitivity: float, method: str,
              prevalence: float | None, confidence: float, report_path: str | None, jobs: int,
              weights: str | None, engine: str) -> int:
    """Refit BUNDLE's calibration and threshold on a labeled sample of a new site's films."""
    from ..io.datasets import fingerprint, read_labeled
    from ..model.publish import check_out_target
    from ..model.recalibrate import check_sample, recalibrate
    from ..report.calibration_page import write_calibration_report

    started = time.time()
    parent = resolve_model(bundle)
    df = read_labeled(data)
    check_sample(int(df["label"].sum()), int((1 - df["label"]).sum()), target_sensitivity)
    out_path = Path(out)
    check_out_target(out_path, [data, parent.path])
    raw, y, groups = site_scores(parent, df, jobs, **runtime_options(weights, engine))
    fitted = recalibrate(raw, y, groups, parent_prevalence(parent), target_sensitivity,
                         method, prevalence, confidence)
    sample = {**fingerprint(df), "n_positive": int(y.sum()), "n_negative": int((1 - y).sum()),
              "method": method, "prevalence_given": prevalence is not None,
              "source": str(data)}
    derived = derive_bundle(parent, out_path, fitted, sample)
    report = Path(report_path) if report_path else out_path.with_name(
        out_path.name + "-calibration.html")
    write_calibration_report(report, y=y, p_old=parent.operating_point.probability(raw),
                             p_new=fitted["p"], groups=groups, parent=parent, derived=derived,
                             run_meta=run_meta(command_line(), started, [parent, derived]))
    t = fitted["threshold"]
    echo_summary({"bundle": str(out_path), "model_id": derived.model_id,
                  "parent_model_id": parent.model_id, "threshold": t["value"],
                  "sensitivity": t["sample_sensitivity"], "sensitivity_ci": t["sensitivity_ci"],
                  "specificity": t["sample_specificity"], "specificity_ci": t["specificity_ci"],
                  "confidence": t["achieved_confidence"], "report": str(report)})
    return ExitCode.OK
