"""Throughput of ``batch`` with a baseline bundle vs a naive serial scikit-image loop.

Both run in this process on the same full-resolution originals:
- naive: ``skimage.io.imread`` + ``skimage.transform.resize`` + ``hog`` + ``local_binary_pattern``
  per image, then the booster on that one image (what the public notebooks do);
- xray-score: ``batch``'s route (forked workers, as ``batch --backend auto``: workers
  read, decode, compute the chunk's features at once, predict and return rows, written to a CSV
  as they land).

    python benchmarks/bench_baseline.py [--model models/baseline] [--data ../shared/data/originals]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from timing import batch_rate  # benchmarks/timing.py, beside this script
from xray_score.io.discover import discover
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "originals"


def naive_rate(paths: list[Path], bundle: Bundle) -> float:
    """Images/s of the straightforward serial scikit-image route (same features, same model)."""
    from skimage import io, transform
    from skimage.feature import hog, local_binary_pattern

    predictor = bundle.predictor()
    spec = bundle.meta["pipeline"]
    f = spec["features"]
    size = int(spec["input_size"])
    start = time.perf_counter()
    for path in paths:
        img = io.imread(path, as_gray=True)
        img = (transform.resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)
        parts = [hog(img, f["hog_orientations"], (f["hog_pixels_per_cell"],) * 2,
                     (f["hog_cells_per_block"],) * 2, block_norm="L2-Hys")]
        for points, radius in zip(f["lbp_points"], f["lbp_radii"], strict=True):
            parts.append(np.histogram(local_binary_pattern(img, points, radius, "uniform"),
                                      bins=points + 2)[0])
        x = np.concatenate(parts)[None]
        x = np.resize(x, (1, predictor.booster.num_feature()))  # same width as the model's input
        predictor.predict_raw(x)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="baseline bundle (default: shipped)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of originals")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--naive-limit", type=int, default=120,
                        help="images for the (slow) naive loop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = Bundle.load(args.model or default_model("baseline"))
    paths = discover(args.data)
    naive = naive_rate(paths[:: max(1, len(paths) // args.naive_limit)], bundle)
    ours, _ = batch_rate(bundle, paths, args.jobs, warm=8)
    print(f"images: {len(paths)} full-resolution originals from {args.data}")
    print(f"naive serial skimage loop : {naive:8.1f} img/s")
    print(f"xray-score batch (jobs={args.jobs}) : {ours:8.1f} img/s")
    print(f"ratio                     : {ours / naive:8.1f}x")


if __name__ == "__main__":
    main()
