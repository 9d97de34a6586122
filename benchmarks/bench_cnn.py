"""Throughput of ``batch`` with a CNN bundle vs the straightforward Keras route.

Same network, same full-resolution originals, same process:
- straightforward: ``keras.utils.load_img(path, color_mode="grayscale", target_size=...)``
  + ``model.predict`` on batches of 32 (what the public notebooks do);
- xray-score: ``batch``'s route (forked workers, as ``batch --backend auto``: workers
  read, decode, run the network on their chunk and return rows, written to a CSV as they
  land), with the bundle's default engine (its TFLite twin under XNNPACK, one thread per
  worker) and, for the record, with ``engine="keras"`` (same route, Keras in each worker).

    python benchmarks/bench_cnn.py [--model models/cnn] [--data ../shared/data/originals]

Without ``--model`` it uses the shipped CNN bundle; ``--weights`` is only needed for bundles
that reference a frozen backbone.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from timing import batch_rate  # benchmarks/timing.py, beside this script
from xray_score.batch.scorer import BatchScorer
from xray_score.io.discover import discover
from xray_score.model.bundle import Bundle
from xray_score.resources import default_model

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "originals"


def keras_route_rate(paths: list[Path], model, size: int, batch: int = 32) -> float:
    import keras

    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        imgs = [keras.utils.img_to_array(keras.utils.load_img(
            p, color_mode="grayscale", target_size=(size, size))) for p in paths[i:i + batch]]
        model.predict(np.stack(imgs), batch_size=batch, verbose=0)
    return len(paths) / (time.perf_counter() - start)


def main_process_rate(bundle: Bundle, paths: list[Path], jobs: int, **kwargs: object) -> float:
    """Files/s of the route ``evaluate`` and ``compare`` use (and ``batch`` used before 0.2.0):
    workers decode, the network runs batched in this process."""
    import tempfile

    from xray_score.batch.scorer import COLUMNS, CsvSink

    scorer = BatchScorer(bundle, n_jobs=jobs, batch_size=64, **kwargs)
    with tempfile.TemporaryDirectory() as tmp, CsvSink(Path(tmp) / "r.csv", COLUMNS) as sink:
        scorer.run(paths[:64], sink)  # warm-up
        start = time.perf_counter()
        scorer.run(paths, sink)
        return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="CNN bundle (default: shipped)")
    parser.add_argument("--weights", default=None, help="weights for head-only bundles")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of originals")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="score the folder N times")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bundle = Bundle.load(args.model or default_model("cnn"))
    kwargs = {"weights": args.weights} if args.weights else {}
    paths = discover(args.data) * args.repeat
    # batch's routes first: like the command, they fork their workers, which is safe only
    # before this process loads TensorFlow for the Keras route
    ours, runtime = batch_rate(bundle, paths, args.jobs, **kwargs)
    ours_keras, _ = batch_rate(bundle, paths, args.jobs, engine="keras", **kwargs)
    model = BatchScorer(bundle, engine="keras", **kwargs).predictor.model
    model.predict(np.zeros((32, bundle.input_size, bundle.input_size, 1), np.float32),
                  verbose=0)  # same warm-up for the Keras route
    naive = keras_route_rate(paths, model, bundle.input_size)
    main_route = main_process_rate(bundle, paths, args.jobs, **kwargs)
    print(f"images: {len(paths)} full-resolution originals from {args.data}; "
          f"{bundle.meta['backbone']['name']} alpha {bundle.meta['backbone']['alpha']} "
          f"@ {bundle.input_size} px")
    rows = [("keras load_img + model.predict(32)", naive, ""),
            ("evaluate's route (model in this process)", main_route, ""),
            ("xray-score batch, engine keras", ours_keras, ""),
            (f"xray-score batch, jobs={args.jobs}, default", ours,
             f"  [{runtime}, in each worker]")]
    for label, rate, note in rows:
        print(f"{label:38s}: {rate:8.1f} img/s{note}")
    print(f"{'ratio (default / keras route)':38s}: {ours / naive:8.1f}x")

if __name__ == "__main__":
    main()
