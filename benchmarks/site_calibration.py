"""A simulated new site: calibrate on 30 + 30 of its films, score the rest, before and after.

    python benchmarks/site_calibration.py [--model models/cnn] [--shared ../shared/data]

The "site" is the bundle's validation check half (patients it was neither trained nor
thresholded on), every film re-framed once at random (thorax, tight, loose or off-centre crop,
JPEG quality 95: another site's framing). 30 NORMAL and 30 PNEUMONIA patients' films form the
labeled sample given to ``xray-score calibrate``; the other films are scored with the parent
and with the derived bundle. Prints sensitivity and specificity of both on those films.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from xray_score.io.datasets import read_labeled
from xray_score.io.decode import decode_gray, read_bytes
from xray_score.io.reframe import REFRAMINGS, reframed_jpeg
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CROPS = [n for n in REFRAMINGS if n != "reencoded"]


def build_site(df: pd.DataFrame, root: Path, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for path, label, patient in zip(df["path"], df["label_name"], df["patient_id"],
                                    strict=True):
        crop = CROPS[int(rng.integers(len(CROPS)))]
        gray = decode_gray(read_bytes(path)).gray
        target = root / label / f"{Path(path).stem}-{crop}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(reframed_jpeg(gray, REFRAMINGS[crop]))
        rows.append((str(target), label, patient))
    return pd.DataFrame(rows, columns=["path", "label", "patient"])


def split(site: pd.DataFrame, root: Path, seed: int, per_class: int) -> None:
    rng = np.random.default_rng(seed)
    for label, part in site.groupby("label"):
        patients = sorted(part["patient"].unique())
        chosen = set(rng.choice(patients, size=min(per_class, len(patients)), replace=False))
        for path, patient in zip(part["path"], part["patient"], strict=True):
            side = "sample" if patient in chosen else "rest"
            dest = root / side / label / Path(path).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            Path(path).rename(dest)


def rates(csv: Path) -> tuple[float, float, int, int]:
    df = pd.read_csv(csv)
    pos, neg = df[df["true_label"] == "PNEUMONIA"], df[df["true_label"] == "NORMAL"]
    return ((pos["predicted_label"] == "PNEUMONIA").mean(),
            (neg["predicted_label"] == "NORMAL").mean(), len(pos), len(neg))


def cli(*args: object) -> dict:
    proc = subprocess.run([sys.executable, "-m", "xray_score.cli", "-q", *map(str, args)],
                          capture_output=True, text=True)
    if proc.returncode not in (0, 10):
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="bundle (default: the shipped default model)")
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    bundle = Bundle.load(args.model or default_model())
    df = read_labeled(Path(args.shared) / "originals")
    check = set(bundle.meta["validation_split"]["check_patients"])
    df = df[df["patient_id"].isin(check)]
    with tempfile.TemporaryDirectory(prefix="xray-site-") as tmp:
        root = Path(tmp)
        site = build_site(df, root / "all", args.seed)
        split(site, root, args.seed, args.per_class)
        derived = root / "derived"
        fitted = cli("calibrate", bundle.path, "--data", root / "sample", "--out", derived)
        results = {}
        for name, model in (("parent", bundle.path), ("derived", derived)):
            out = root / f"{name}.csv"
            cli("batch", root / "rest", "--model", model, "--out", out, "--no-report")
            results[name] = rates(out)
    print(f"{bundle.name} ({bundle.model_id}); site = check half re-framed, sample "
          f"{args.per_class} + {args.per_class} patients, seed {args.seed}")
    print(f"new threshold {fitted['threshold']:.4f} (parent {bundle.threshold:.4f}); on the "
          f"sample: sensitivity {fitted['sensitivity']:.3f} {fitted['sensitivity_ci']}, "
          f"specificity {fitted['specificity']:.3f} {fitted['specificity_ci']}")
    for name, (sens, spec, n_pos, n_neg) in results.items():
        print(f"{name:8s} on the other {n_pos} pneumonia + {n_neg} normal films: "
              f"sensitivity {sens:.3f}, specificity {spec:.3f}")


if __name__ == "__main__":
    main()
