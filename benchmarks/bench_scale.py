"""Nightly-scale ``batch``: peak memory vs folder size, and the time of an unchanged re-run.

Builds labeled folders (``NORMAL/``, ``PNEUMONIA/``, as their sources) of distinct files from the
full-resolution originals (each copy gets a JPEG comment naming it, so every file has its own
sha256 but decodes to the same pixels) and runs ``xray-score batch`` with its default options
(HTML run summary on: the folders are labeled, so it evaluates) as a child process:

- peak RSS (main process, and main + workers summed, polled with psutil; and their summed PSS,
  which counts the pages forked workers share with the caller once) scoring N1 vs N2 files;
  target flat, <= 1.5 GB;
- wall time of an unchanged re-run of a labeled folder of ``--rerun`` files (target <= 3 s for
  10,000 files), the run summary kept because its inputs did not change.

    python benchmarks/bench_scale.py [--model BUNDLE] [--data ../shared/data/originals] [--small]

Without ``--model`` it uses the shipped baseline, or trains a quick one on a subset of the 224
training copies. Dask scale-out: ``benchmarks/bench_dask.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from rates import installed_bytecode

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
log = logging.getLogger("bench_scale")


def variant(data: bytes, tag: str) -> bytes:
    """The same JPEG with a comment segment (FF FE) after SOI: new sha256, same pixels."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    comment = tag.encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def make_folder(originals: list[Path], n: int, dest: Path) -> Path:
    """``n`` distinct files under ``dest/<label>/dNNN/``, labeled as their sources."""
    dest.mkdir(parents=True, exist_ok=True)
    past = time.time() - 3600  # not "racily" fresh: the stat cache keeps them
    for i in range(n):
        src = originals[i % len(originals)]
        sub = dest / src.parent.name / f"d{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        target = sub / f"{i:06d}-{src.name}"
        target.write_bytes(variant(src.read_bytes(), f"variant {i}"))
        os.utime(target, (past, past))
    return dest


def run_batch(args: list[str], poll: float = 0.1) -> dict:
    """Run ``xray-score batch`` in a child; returns its JSON summary plus memory and time."""
    installed_bytecode()  # as an installed xray-score runs
    cmd = [sys.executable, "-m", "xray_score.cli", "-q", "batch", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    main_peak = tree_peak = pss_peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = [p.memory_info().rss for p in procs]
            main_peak, tree_peak = max(main_peak, rss[0]), max(tree_peak, sum(rss))
            # forked workers share the caller's pages: PSS counts a shared page once in all
            pss_peak = max(pss_peak, sum(p.memory_full_info().pss for p in procs))
        except (psutil.Error, AttributeError):
            pass
        time.sleep(poll)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 10):
        raise RuntimeError(f"batch failed ({proc.returncode}): {err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    return {**summary, "wall": wall, "main_peak_mb": main_peak / 2**20,
            "tree_peak_mb": tree_peak / 2**20, "tree_pss_mb": pss_peak / 2**20}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="baseline bundle (default: shipped, else a quick one)")
    parser.add_argument("--data", default=str(SHARED / "originals"))
    parser.add_argument("--sizes", default="1000,20000", help="folder sizes for peak RSS")
    parser.add_argument("--rerun", type=int, default=10000, help="files in the re-run test")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--small", action="store_true",
                        help="quick run: sizes 100,600, re-run 3000")
    parser.add_argument("--workdir", help="keep the generated folders here")
    parser.add_argument("--only", choices=["all", "memory", "rerun"], default="all",
                        help="run only the memory part or only the re-run part")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.small:
        args.sizes, args.rerun = "100,600", 3000
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    originals = sorted(p for p in Path(args.data).rglob("*.jpeg"))
    try:
        model = args.model or _default_model(work)
        for n in sizes if args.only != "rerun" else []:
            folder = make_folder(originals, n, work / f"rss-{n}")
            r = run_batch([str(folder), "--model", model, "--out", str(work / f"rss-{n}.csv"),
                           "--jobs", str(args.jobs)])
            log.info("peak RSS scoring %6d files: main %7.0f MB, main+workers %7.0f MB "
                     "(summed RSS; PSS %7.0f MB) (%.1f img/s)", n, r["main_peak_mb"],
                     r["tree_peak_mb"], r["tree_pss_mb"], r["images_per_second_including_startup"])
            if n != max(sizes):
                shutil.rmtree(folder)
        if args.only != "memory":
            rerun(work, originals, model, max(sizes), args.rerun)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def rerun(work: Path, originals: list[Path], model: str, size: int, total: int) -> None:
    """Unchanged re-run with default options: the largest scored folder (or a new one) plus
    hard links of its files (new paths, contents and inodes the ledger already knows)."""
    folder = work / f"rss-{size}"
    if not folder.is_dir():
        make_folder(originals, size, folder)
    out = work / f"rss-{size}.csv"
    _reuse_copies(folder, max(0, total - size))
    first = run_batch([str(folder), "--model", model, "--out", str(out)])
    again = run_batch([str(folder), "--model", model, "--out", str(out)])
    log.info("unchanged re-run of %d labeled files, default options (run summary on): "
             "%.2f s wall (the run before: %.2f s; re-run read %d files, scored %d)",
             again["files"], again["wall"], first["wall"], again["hashed"], again["scored"])


def _reuse_copies(folder: Path, n: int) -> None:
    """``n`` hard links of already-scored files (under their label's folder): new paths the
    stat cache knows by inode."""
    files = sorted(folder.rglob("*.jpeg"))
    for i in range(n):
        src = files[i % len(files)]
        dest = folder / src.relative_to(folder).parts[0] / "links"
        dest.mkdir(exist_ok=True)
        target = dest / f"{i:06d}.jpeg"
        if not target.exists():
            target.hardlink_to(src)


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
