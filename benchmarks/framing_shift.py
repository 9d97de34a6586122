"""The framing-shift check on a labeled folder: how often a re-framed film changes decision.

    python benchmarks/framing_shift.py --model models/cnn [--data ../shared/data/originals]
        [--part check|calibration|all]

Scores every film as it is and re-framed (thorax crop: top 22 %, bottom 5 %, 10 % each side,
JPEG quality 95; tighter, looser, off-centre crops; a re-encoded control) and prints, per
re-framing and class, the flagged share before and after, the share of decisions that flip and
the mean |delta logit|. ``--part check`` keeps the validation patients the bundle's threshold
was not fitted on (its ``validation.check_patients``), ``calibration`` the others.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from xray_score.batch.scorer import BatchScorer
from xray_score.evaluation.framing import framing_headline, framing_scores, framing_summary
from xray_score.io.datasets import read_labeled
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="bundle (default: the shipped default model)")
    ap.add_argument("--data", default=str(SHARED / "originals"), help="labeled folder")
    ap.add_argument("--part", choices=["check", "calibration", "all"], default="all")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--csv", help="also write the per-image scores here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = Bundle.load(args.model or default_model())
    df = read_labeled(args.data)
    check = set((bundle.meta.get("validation_split") or {}).get("check_patients") or [])
    if args.part != "all":
        if not check:
            raise SystemExit(f"{bundle.path} records no check patients; use --part all")
        keep = df["patient_id"].isin(check)
        df = df[keep if args.part == "check" else ~keep]
    labels = dict(zip(df["path"], df["label_name"], strict=True))
    scorer = BatchScorer(bundle, n_jobs=args.jobs)
    scores = framing_scores(scorer, df["path"].tolist(), labels)
    if args.csv:
        scores.to_csv(args.csv, index=False)
    summary = framing_summary(scores, bundle.threshold)
    pd.set_option("display.width", 140)
    print(f"{bundle.name} ({bundle.model_id}), threshold {bundle.threshold:.4f}, "
          f"{len(df)} films ({args.part})")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps(framing_headline(summary)))


if __name__ == "__main__":
    main()
