"""Nightly-scale ``batch``: peak memory vs folder size, unchanged re-run time, Dask scale-out.

Builds folders of distinct files from the full-resolution originals (each copy gets a JPEG
comment naming it, so every file has its own sha256 but decodes to the same pixels) and runs
``xray-score batch`` as a child process:

- peak RSS (main process, and main + workers summed, polled with psutil) scoring N1 vs N2 files;
  target flat, <= 1.5 GB;
- wall time of an unchanged re-run of the large folder (target <= 3 s for 10k files);
- throughput on a Dask ``LocalCluster`` with 2 workers vs 1 (target >= 1.7x).

    python benchmarks/bench_scale.py [--model BUNDLE] [--data ../shared/data/originals] [--small]

Without ``--model`` it uses the shipped baseline, or trains a quick one on a subset of the 224
training copies.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
log = logging.getLogger("bench_scale")


def variant(data: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment (FF FE) after SOI: new sha256, same pixels."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    comment = tag.encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def make_folder(originals: list[Path], n: int, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = originals[i % len(originals)]
        sub = dest / f"d{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{i:06d}-{src.name}").write_bytes(variant(src.read_bytes(), f"variant {i}"))
    return dest


def run_batch(args: list[str], poll: float = 0.1) -> dict:
    """Run ``xray-score batch`` in a child; returns its JSON summary plus memory and time."""
    cmd = [sys.executable, "-m", "xray_score.cli", "-q", "batch", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    main_peak = tree_peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = [p.memory_info().rss for p in procs]
            main_peak, tree_peak = max(main_peak, rss[0]), max(tree_peak, sum(rss))
        except psutil.Error:
            pass
        time.sleep(poll)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 10):
        raise RuntimeError(f"batch failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    return {**summary, "wall": wall, "main_peak_mb": main_peak / 2**20,
            "tree_peak_mb": tree_peak / 2**20}


def quick_model(work: Path, per_class: int = 150) -> Path:
    """A fast baseline trained on a subset of the 224 copies (only when none is shipped)."""
    from xray_score.model.spec import load_pipeline
    from xray_score.model.training import train_bundle

    data = work / "train-subset"
    for cls in ("NORMAL", "PNEUMONIA"):
        (data / cls).mkdir(parents=True, exist_ok=True)
        for src in sorted((SHARED / "chest_xray_224" / "train" / cls).iterdir())[:per_class]:
            (data / cls / src.name).symlink_to(src)
    spec = load_pipeline("baseline", {"model.n_estimators": 200, "training.threads": 2})
    out = work / "quick-baseline"
    train_bundle("baseline", data, out, spec, n_jobs=2)
    return out


def dask_rate(folder: Path, model: str, work: Path, n_workers: int) -> float:
    from distributed import LocalCluster

    with LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        warm = run_batch([str(folder), "--model", model, "--out", str(work / "warm.csv"),
                          "--no-report", "--backend", "dask", "--scheduler",
                          cluster.scheduler_address, "--num-parts", "20", "--part-id", "0",
                          "--ledger", str(work / f"warm-{n_workers}.sqlite")])
        res = run_batch([str(folder), "--model", model, "--out",
                         str(work / f"dask{n_workers}.csv"), "--no-report", "--backend", "dask",
                         "--scheduler", cluster.scheduler_address])
    log.debug("warm-up %s", warm)
    return res["scored"] / res["scoring_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="baseline bundle (default: shipped, else a quick one)")
    parser.add_argument("--data", default=str(SHARED / "originals"))
    parser.add_argument("--sizes", default="1000,20000", help="folder sizes for peak RSS")
    parser.add_argument("--rerun", type=int, default=10000, help="files in the re-run test")
    parser.add_argument("--dask-size", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--small", action="store_true",
                        help="quick run: sizes 100,600, re-run 3000, dask 120")
    parser.add_argument("--workdir", help="keep the generated folders here")
    parser.add_argument("--only", choices=["all", "memory", "dask"], default="all",
                        help="run only the memory/re-run part or only the Dask part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.small:
        args.sizes, args.rerun, args.dask_size = "100,600", 3000, 120
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    originals = sorted(p for p in Path(args.data).rglob("*.jpeg"))
    try:
        model = args.model or _default_model(work)
        for n in sizes if args.only != "dask" else []:
            folder = make_folder(originals, n, work / f"rss-{n}")
            r = run_batch([str(folder), "--model", model, "--out", str(work / f"rss-{n}.csv"),
                           "--no-report", "--jobs", str(args.jobs)])
            log.info("peak RSS scoring %6d files: main %7.0f MB, main+workers %7.0f MB "
                     "(%.1f img/s)", n, r["main_peak_mb"], r["tree_peak_mb"],
                     r["images_per_second_including_startup"])
            if n != max(sizes):
                shutil.rmtree(folder)
        if args.only != "dask":
            rerun(work, model, max(sizes), args.rerun)
        if args.only != "memory":
            dfolder = make_folder(originals, args.dask_size, work / "dask")
            one = dask_rate(dfolder, model, work, 1)
            two = dask_rate(dfolder, model, work, 2)
            log.info("Dask LocalCluster: 1 worker %.1f img/s, 2 workers %.1f img/s, "
                     "ratio %.2fx (%d files)", one, two, two / one, args.dask_size)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def rerun(work: Path, model: str, size: int, total: int) -> None:
    """Unchanged re-run: the scored folder plus cheap copies the ledger already knows."""
    folder = work / f"rss-{size}"
    out = work / f"rss-{size}.csv"
    extra = max(0, total - size)
    _reuse_copies(folder, extra)
    first = run_batch([str(folder), "--model", model, "--out", str(out), "--no-report"])
    again = run_batch([str(folder), "--model", model, "--out", str(out), "--no-report"])
    log.info("unchanged re-run of %d files: %.2f s wall (first pass over the copies: "
             "%.2f s, hashed %d; re-run hashed %d, scored %d)", again["files"],
             again["wall"], first["wall"], first["hashed"], again["hashed"],
             again["scored"])


def _reuse_copies(folder: Path, n: int) -> None:
    """``n`` hard links of already-scored files: new paths the stat cache knows by inode."""
    files = sorted(folder.rglob("*.jpeg"))
    dest = folder / "links"
    dest.mkdir(exist_ok=True)
    for i in range(n):
        (dest / f"{i:06d}.jpeg").hardlink_to(files[i % len(files)])


def _default_model(work: Path) -> str:
    from xray_score.errors import UsageError
    from xray_score.resources import default_model

    try:
        return str(default_model("baseline"))
    except UsageError:
        log.info("no shipped baseline: training a quick one on the 224 copies")
        return str(quick_model(work))


if __name__ == "__main__":
    main()
