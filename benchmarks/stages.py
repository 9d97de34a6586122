"""Where a ``batch`` worker's time goes, stage by stage, against the decode-only route.

    python benchmarks/stages.py [--model models/baseline] [--data ../shared/data/originals]

In this process, one core: CPU milliseconds per file (the median of ``--repeat`` rounds, each
stage in turn in every round, so that the machine's drift hits all alike) of the
decode-only route (read, DCT-scaled decode, resize: what ``bench_limits.py``'s limit runs),
hashing, the worker's decode (read + sha256 + decode + resize, with the watchdog thread), the
chunk's transform (HOG/LBP for the baseline), the rows (model, domain check, calibration,
formatting), and a whole chunk task; then the share of the decode-only route in the whole
task, i.e. the ceiling of ``batch / decode-only limit`` before any start-up or IPC.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import statistics
import time
from pathlib import Path

from xray_score.batch import chunks
from xray_score.batch.chunks import ChunkTask, transform
from xray_score.batch.memory import reuse_freed_memory
from xray_score.batch.scorer import grouped
from xray_score.batch.watchdog import decode_files
from xray_score.io.decode import decode_gray, read_bytes, resize_square
from xray_score.model.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "originals"


def per_file_ms(files: list[str], work) -> float:
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1000 / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "baseline"))
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=64)
    args = parser.parse_args()
    reuse_freed_memory()  # as batch's workers do
    bundle = Bundle.load(args.model)
    files = sorted(str(p) for p in Path(args.data).rglob("*.jpeg"))
    task = ChunkTask(str(bundle.path.resolve()), bundle.model_id, timeout=60,
                     batch_size=args.chunk, threads=1)
    task(files[:args.chunk])  # load the model once
    scorer = chunks.worker_model(task).scorer
    pre = scorer.preprocessor
    draft = bundle.input_size if pre.jpeg_draft else None
    parts = [files[i:i + args.chunk] for i in range(0, len(files), args.chunk)]
    data = [read_bytes(p) for p in files]
    decoded = [decode_files(pre, part, None)[0] for part in parts]

    def transformed() -> None:
        for results in decoded:
            transform(pre, [copy.copy(r) for r in results])

    transformed_results = [[copy.copy(r) for r in results] for results in decoded]
    for results in transformed_results:
        transform(pre, results)
    stages = {
        "decode-only route (read, decode, resize)": lambda: [
            resize_square(decode_gray(read_bytes(p), draft_size=draft).gray, bundle.input_size)
            for p in files],
        "sha256 of the bytes": lambda: [hashlib.sha256(d).hexdigest() for d in data],
        "worker decode (read, sha256, decode, watchdog)": lambda: [
            decode_files(pre, part, 60) for part in parts],
        "transform of the chunk": transformed,
        "rows (model, domain, calibration)": lambda: [
            scorer.rows(batch) for results in transformed_results
            for batch in grouped(results, args.chunk)],
        "whole chunk task": lambda: [task(part) for part in parts],
    }
    # rounds of every stage in turn, so that the machine's drift hits all stages alike
    times: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(args.repeat):
        for name, work in stages.items():
            times[name].append(per_file_ms(files, work))
    ms = {name: statistics.median(values) for name, values in times.items()}
    limit, whole = ms["decode-only route (read, decode, resize)"], ms["whole chunk task"]
    print(f"{bundle.name} ({bundle.kind}), {len(files)} files, chunks of {args.chunk}, "
          f"CPU ms per file (medians of {args.repeat} rounds):")
    for name, value in ms.items():
        print(f"  {name:48s} {value:6.3f}")
    print(f"  decode-only route / whole task: {limit / whole:.3f} (the ceiling of batch's "
          "share of its decode-only limit, before start-up and IPC)")


if __name__ == "__main__":
    main()
