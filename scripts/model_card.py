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


def framing_table(meta: dict) -> str:
    rows = (meta.get("framing_check") or {}).get("table") or []
    lines = ["| re-framing | true label | films | flagged as is | flagged re-framed (95% CI) | "
             "flipped | mean Δ logit |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['true_label']} | {r['n']} | "
                     f"{100 * r['flagged_original']:.1f}% | {100 * r['flagged_reframed']:.1f}% "
                     f"({100 * r['flagged_reframed_lo']:.1f}-{100 * r['flagged_reframed_hi']:.1f}%)"
                     f" | {100 * r['flipped']:.1f}% | {r['mean_dlogit']:+.2f} |")
    return "\n".join(lines)


def check_metrics(meta: dict) -> str:
    m = meta["validation_metrics"]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_fmt(m.get(name))} |" for name in METRICS]
    lines.append(f"| images (normal / pneumonia) | {m.get('n')} ({m.get('n_neg')} / "
                 f"{m.get('n_pos')}) |")
    return "\n".join(lines)


def card(bundle: Bundle, results: Path | None, command: str) -> str:
    meta = bundle.meta
    thr = meta["threshold"]
    train = meta["training_data"]["train"]
    val = meta["training_data"]["validation"]
    split = meta.get("validation_split") or {}
    framing = meta.get("framing_check") or {}
    n_cal, n_check = len(split.get("calibration_patients") or []), len(
        split.get("check_patients") or [])
    parts = [
        f"# Model card: {bundle.name} ({meta['kind']})",
        "",
        f"- **model_id**: `{bundle.model_id}` (sha256 of `bundle.json`, first 12 hex digits)",
        f"- **trained by**: `{command}` on {meta['created']}, xray-score "
        f"{meta['library_versions'].get('xray-score')}",
        f"- **input**: canonical gray image, squash-resized to {meta['input_size']} px "
        f"(preprocessing version {meta['preprocessing_version']})",
        f"- **output**: calibrated probability of PNEUMONIA (calibration: "
        f"{meta['calibration']['method']}, fitted on the calibration half of validation, "
        "as the films are and re-framed)",
        "",
        "## Intended use and limits",
        "A research and engineering tool for batch triage experiments on pediatric (age 1-5) "
        "anterior-posterior chest X-rays like those of the Guangzhou Women and Children's "
        "Medical Center. **Not a medical device**; not validated for clinical use, adults, "
        "other views, other hospitals' equipment, or DICOM pipelines with unusual windowing.",
        "",
        "**Where the figures come from, and what they do not cover.** Every figure below is "
        "measured on validation films of the training split's hospital and period (full-size "
        "originals whose patients are not in training). They are optimistic: films of another "
        "period or site differ in framing, exposure and prevalence, and none of them was "
        "measured here. The framing check is this project's proxy for that shift (normal "
        "training films show neck and shoulders, pneumonia films are framed on the thorax); "
        "it cannot show other differences between sites.",
        "",
        "## Data",
        CITATION,
        f"- training: {train['n_images']} images, {train['n_patients']} patients, "
        f"classes {json.dumps(train['class_counts'])} (the 224 px copies of the official "
        "training split, minus every patient of the validation set)",
        f"- validation: {val['n_images']} images, {val['n_patients']} patients, classes "
        f"{json.dumps(val['class_counts'])} (`{meta.get('validation_source')}`), split by "
        f"patient: {n_cal} patients fit calibration and threshold, {n_check} others are the "
        "check half below"
        + ("" if split.get("independent", True) else " (**not independent**: same films)"),
        "",
        "## Operating threshold",
        f"`{thr['value']:.4f}`, chosen on {thr.get('chosen_on', 'validation')} "
        f"({thr.get('n_images', 'n/a')} images) by policy `{thr['policy']}`"
        + (f" (the best specificity among thresholds with sensitivity >= {thr['target']}, "
           "placed in the middle, on the logit scale, of the range of thresholds that "
           "achieve it)" if thr["policy"] == "sensitivity" else "")
        + f": there, sensitivity {_fmt(thr.get('validation_sensitivity'))}, specificity "
        f"{_fmt(thr.get('validation_specificity'))}. Missing a pneumonia costs more than a "
        "second look at a normal film, so the policy fixes sensitivity first.",
        "",
        "## Check half: films neither trained nor thresholded on",
        "At the operating threshold, the films as they are:",
        "",
        check_metrics(meta),
        "",
        f"Calibration error (ECE, 10 bins) on their re-framed copies: "
        f"{_fmt(framing.get('ece_reframed'))}.",
        "",
        "## Framing check (check half)",
        "Each film scored as it is and re-framed (thorax crop: top 22 %, bottom 5 %, 10 % of "
        "each side; tight; loose; off-centre; saved as JPEG quality 95; `reencoded` is the "
        "uncropped film re-saved, a control). `benchmarks/framing_shift.py --model "
        f"{bundle.path.name} --part check` reproduces it.",
        "",
        framing_table(meta),
        "",
    ]
    parts += domain_notes(meta, bundle.path.name)
    if results is not None:
        df = load_results(results)
        res = evaluate_results(df, threshold=thr["value"])
        parts += [
            "## All validation films (both halves)",
            f"From `{results}` ({len(df)} images); 95% bootstrap CIs resample patients. Half "
            "of these films fitted the calibration and threshold: more optimistic still.",
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
    parts += kind_notes(meta)
    return "\n".join(parts) + "\n"


def domain_notes(meta: dict, folder: str) -> list[str]:
    domain = meta.get("domain") or {}
    if not domain.get("blocks"):
        return []
    ref = domain.get("reference_images") or {}
    blocks = ", ".join(f"{b['name']} ({b['dim']} values, {b['k']} components)"
                       for b in domain["blocks"])
    return ["## In-domain reference",
            f"Every row's `domain_score` is the distance of the image from this reference, in "
            f"the model's own representation: {ref.get('training')} training films and "
            f"{ref.get('validation')} calibration-half validation films (as they are and "
            f"re-framed); blocks {blocks}. The cut-off (score 1) leaves "
            f"{100 * domain.get('quantile', 0.99):.0f} % of the validation films (both halves, "
            "as is and re-framed) in domain; images beyond it are still scored and flagged "
            "`in_domain: false`. `python benchmarks/domain_check.py --model "
            f"models/{folder}` measures the rates (figures in the README).", ""]


def kind_notes(meta: dict) -> list[str]:
    if meta["kind"] == "ensemble":
        return ["", "## Members",
                *[f"- `{m['name']}` ({m['kind']}), model_id `{m['model_id']}`, at `{m['path']}`"
                  for m in meta.get("members") or []],
                "The ensemble averages its members' calibrated logits, then applies its own "
                "calibration and threshold."]
    if meta["kind"] != "cnn":
        return []
    bb = meta.get("backbone") or {}
    lite = (meta.get("cnn") or {}).get("tflite")
    return ["", "## Backbone",
            f"{bb.get('name')} alpha {bb.get('alpha')}, initialised from `"
            f"{bb.get('weights_file')}` (sha256 `{bb.get('weights_sha256')}`); "
            + ("fine-tuned, the whole network is stored in the bundle (runs without any "
               "weights file)." if bb.get("stored_in_bundle") else
               "frozen; the bundle references the weights file by sha256."),
            "", "## Runtime",
            f"`batch` runs `{lite['file']}`, a float32 TFLite twin of `model.keras`, under "
            f"LiteRT with XNNPACK (largest probability difference from Keras on the "
            f"conversion check: {lite['max_abs_diff_vs_keras']:.1e}); calibration, threshold "
            "and the figures above come from its outputs. `--engine keras` runs "
            "`model.keras` instead." if lite else
            "`batch` runs the Keras network (`--engine tflite` converts it at start-up)."]


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
