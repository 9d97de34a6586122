"""Write MODEL_CARD.md into a bundle from its bundle.json and an evaluation results CSV.

    python scripts/model_card.py models/cnn --results reports/cnn-originals.csv \
        --command "make models"

The CSV is what ``xray-score evaluate`` wrote for the validation folder; the card's numbers
(with 95% bootstrap CIs, resampling patients) are recomputed from it here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from xray_score.evaluation.results import evaluate_results, load_results
from xray_score.model.bundle import Bundle

CITATION = (
    "D. S. Kermany, M. Goldbaum, W. Cai et al., *Identifying Medical Diagnoses and Treatable "
    "Diseases by Image-Based Deep Learning*, Cell 172(5):1122-1131, 2018 "
    "(doi:10.1016/j.cell.2018.02.010); data: Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, "
    "license CC BY 4.0."
)
METRICS = ["roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "precision", "npv",
           "f1", "brier", "ece"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def metric_table(res: dict) -> str:
    point, cis = res["at_threshold"], res.get("ci_threshold") or {}
    lines = ["| metric | value | 95% CI |", "|---|---|---|"]
    for name in METRICS:
        lo, hi = cis.get(name, (None, None))
        lines.append(f"| {name} | {_fmt(point.get(name))} | {_fmt(lo)} – {_fmt(hi)} |")
    return "\n".join(lines)


def card(bundle: Bundle, results: Path | None, command: str) -> str:
    meta = bundle.meta
    thr = meta["threshold"]
    train = meta["training_data"]["train"]
    val = meta["training_data"]["validation"]
    parts = [
        f"# Model card: {bundle.name} ({meta['kind']})",
        "",
        f"- **model_id**: `{bundle.model_id}` (sha256 of `bundle.json`, first 12 hex digits)",
        f"- **trained by**: `{command}` on {meta['created']}, xray-score "
        f"{meta['library_versions'].get('xray-score')}",
        f"- **input**: canonical gray image, squash-resized to {meta['input_size']} px "
        f"(preprocessing version {meta['preprocessing_version']})",
        f"- **output**: calibrated probability of PNEUMONIA (calibration: "
        f"{meta['calibration']['method']}, fitted on the validation set)",
        "",
        "## Intended use and limits",
        "A research and engineering tool for batch triage experiments on pediatric (age 1-5) "
        "anterior-posterior chest X-rays like those of the Guangzhou Women and Children's "
        "Medical Center. **Not a medical device**; not validated for clinical use, adults, "
        "other views, other hospitals' equipment, or DICOM pipelines with unusual windowing. "
        "Validation images come from the same hospital and period as the training images: "
        "expect lower specificity on other data (the public test split's NORMAL images are "
        "known to differ).",
        "",
        "## Data",
        CITATION,
        f"- training: {train['n_images']} images, {train['n_patients']} patients, "
        f"classes {json.dumps(train['class_counts'])} (the 224 px copies of the official "
        "training split, minus every patient of the validation set)",
        f"- validation: {val['n_images']} images, {val['n_patients']} patients, classes "
        f"{json.dumps(val['class_counts'])} (`{meta.get('validation_source')}`: full-resolution "
        "originals, no patient shared with training)",
        "",
        "## Operating threshold",
        f"`{thr['value']:.4f}`, chosen on the validation set by policy `{thr['policy']}`"
        + (f" (the best specificity among thresholds with sensitivity >= {thr['target']}, "
           "placed in the middle, on the logit scale, of the range of thresholds that "
           "achieve it, away from the nearest validation scores)"
           if thr["policy"] == "sensitivity" else "")
        + f": validation sensitivity {_fmt(thr.get('validation_sensitivity'))}, specificity "
        f"{_fmt(thr.get('validation_specificity'))}. Missing a pneumonia costs more than a "
        "second look at a normal film, so the policy fixes sensitivity first.",
        "",
    ]
    if results is not None:
        df = load_results(results)
        res = evaluate_results(df, threshold=thr["value"])
        parts += [
            "## Validation metrics (originals, at the operating threshold)",
            f"From `{results}` ({len(df)} images); 95% bootstrap CIs resample patients. "
            "The threshold and calibration were fitted on these same images, so the figures "
            "are optimistic for new data.",
            "",
            metric_table(res),
            "",
        ]
    parts += [
        "## Pipeline",
        "```yaml",
        yaml.safe_dump(meta["pipeline"], sort_keys=False).rstrip(),
        "```",
        "",
        "## Files",
        *[f"- `{name}` sha256 `{digest}`" for name, digest in sorted(meta["files"].items())],
    ]
    if meta["kind"] == "cnn":
        bb = meta.get("backbone") or {}
        parts += ["", "## Backbone",
                  f"{bb.get('name')} alpha {bb.get('alpha')}, initialised from `"
                  f"{bb.get('weights_file')}` (sha256 `{bb.get('weights_sha256')}`); "
                  + ("fine-tuned, the whole network is stored in the bundle (runs without any "
                     "weights file)." if bb.get("stored_in_bundle") else
                     "frozen; the bundle references the weights file by sha256.")]
        lite = (meta.get("cnn") or {}).get("tflite")
        parts += ["", "## Runtime",
                  f"`batch` runs `{lite['file']}`, a float32 TFLite twin of `model.keras`, under "
                  f"LiteRT with XNNPACK (largest probability difference from Keras on the "
                  f"conversion check: {lite['max_abs_diff_vs_keras']:.1e}); calibration, threshold "
                  "and the validation metrics above come from its outputs. `--engine keras` runs "
                  "`model.keras` instead." if lite else
                  "`batch` runs the Keras network (`--engine tflite` converts it at start-up)."]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--results", type=Path, help="evaluate CSV on the validation folder")
    parser.add_argument("--command", default="make models")
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle)
    (bundle.path / "MODEL_CARD.md").write_text(card(bundle, args.results, args.command))
    print(f"wrote {bundle.path / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
