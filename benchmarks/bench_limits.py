"""``batch`` against what the machine allows: the decode-only limit (and, for the CNN, the
decode + network limit), on the same 2,496 files, the same cores, in one run.

    python benchmarks/bench_limits.py [--model models/baseline] [--model models/cnn]
                                      [--repeat 3] [--workdir DIR]

For each bundle, every measurement is a whole command (interpreter start, imports and worker
start-up included), run ``--repeat`` times in alternation so that the machine's drift hits all
alike; medians are printed:

- decode-only limit: the files read, decoded (JPEG DCT scaling as the bundle's pipeline asks)
  and resized to the bundle's input size by 2 processes, nothing else;
- network limit (CNN bundles): the bundle's TFLite network alone on the canonical pixels
  (decoded beforehand), the better of 2 processes x 1 thread and 1 process x 2 threads;
  combined limit = 1 / (1 / decode rate + 1 / network rate);
- ``xray-score batch DIR --model B --no-report`` on a fresh ledger: its rate, its share of the
  limit, and its CPU per file (the whole process tree).

Targets (issue "Scale-out where the work is"): baseline >= 0.80 of the decode-only limit, CNN
>= 0.90 of the combined limit.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from rates import (
    batch_command,
    build_set,
    decode_limit,
    network_limit,
    run_command,
    with_copies,
)
from xray_score.model.bundle import Bundle

ROOT = Path(__file__).resolve().parents[1]


def measure(bundle_path: Path, files: Path, work: Path, repeat: int) -> None:
    bundle = Bundle.load(bundle_path)
    n = sum(1 for _ in files.rglob("*.jpeg"))
    decode = bundle.meta["pipeline"].get("decode") or {}
    draft = bool(decode.get("jpeg_draft", False))
    cnn = bundle.kind == "cnn"
    decoded, networks, ours, cpu = [], [], [], []
    how = ""
    for i in range(repeat):
        decoded.append(decode_limit(files, bundle.input_size, draft)[0])
        if cnn:
            net, how = network_limit(bundle_path, files, work)
            networks.append(net)
        out = work / f"run-{bundle.model_id}-{i}"
        timed = run_command(batch_command(files, bundle_path, out / "r.csv", "--no-report"))
        if timed.summary.get("scored") != n:
            raise SystemExit(f"batch scored {timed.summary.get('scored')} of {n}: "
                             f"{timed.summary}")
        ours.append(n / timed.wall)
        cpu.append(1000 * timed.cpu / n)
        shutil.rmtree(out)
    d, b = statistics.median(decoded), statistics.median(ours)
    print(f"\n{bundle.name} ({bundle.kind}, model_id {bundle.model_id}), {n} files, "
          f"medians of {repeat}:")
    print("  each run, decode-only limit / batch: " + ", ".join(
        f"{x:.0f} / {y:.0f}" for x, y in zip(decoded, ours, strict=True)) + " files/s")
    print(f"  decode-only limit (2 processes, {bundle.input_size} px"
          f"{', DCT-scaled' if draft else ''}): {d:7.1f} files/s")
    limit = d
    if cnn:
        net = statistics.median(networks)
        limit = 1 / (1 / d + 1 / net)
        print(f"  network alone ({how}):          {net:7.1f} files/s")
        print(f"  combined limit 1/(1/decode + 1/network): {limit:7.1f} files/s")
    print(f"  xray-score batch --no-report:          {b:7.1f} files/s, "
          f"{statistics.median(cpu):.2f} core-ms per file (whole process tree)")
    print(f"  batch / limit:                         {b / limit:7.3f}  "
          f"(target {'0.90' if cnn else '0.80'})")
    if not cnn:  # each batch run against the limit run just before it (drift cancels)
        pairs = sorted(y / x for x, y in zip(decoded, ours, strict=True))
        print(f"  per run: {', '.join(f'{r:.3f}' for r in pairs)}; "
              f"median {statistics.median(pairs):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="bundle(s) to measure (default: models/baseline and models/cnn)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", help="keep the 2,496-file set here between runs")
    parser.add_argument("--copies", type=int, default=1,
                        help="score the set this many times over (distinct files, the same "
                        "pixels): a larger folder shows what start-up costs")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-limits-"))
    try:
        files = build_set(work / "set2496")
        if args.copies > 1:
            files = with_copies(files, args.copies, work / f"set2496x{args.copies}")
        for model in args.model or [ROOT / "models" / "baseline", ROOT / "models" / "cnn"]:
            measure(Path(model), files, work, args.repeat)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
