"""``batch --backend dask`` scale-out: 1 vs 2 single-threaded worker processes on a Dask
``LocalCluster``, what the calling process spends, what travels back, and how many workers one
caller's ledger can feed.

    python benchmarks/bench_dask.py [--model models/cnn] [--workdir DIR] [--repeat 2]

- the 2,496-file set (``rates.build_set``); workers with the README's settings
  (``WORKER_CONFIG``); each measurement is the whole ``xray-score batch
  --backend dask`` command on a fresh ledger, after a warm-up run that loads the bundle in the
  workers; medians of ``--repeat``, the 1-worker and the 2-worker cluster both up and run in
  alternation (the machine's drift hits both alike);
- the scaling ratio (2 workers / 1 worker, target >= 1.8 for the CNN) and, with 2 workers, the
  caller's share of all the CPU the run used (caller + workers + nannies + the scheduler, which
  lives in this process with the idle cluster's; target <= 10 %) and the bytes of results per
  file it received;
- the caller's ledger-commit rate: synthetic rows fed through its ledger sink as fast as it
  takes them (durable commits, stat-cache entries, the drift summary), and the cluster size
  that rate supports at 300 files/s per worker;
- a control: the same command with local workers (``--jobs 1`` vs ``--jobs 2``), i.e. how far
  two processes doing this work scale on this machine at all (memory bandwidth and the shared
  cache set that ceiling; the cluster's scheduler and nannies share the same two cores).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from rates import batch_command, build_set, run_command

ROOT = Path(__file__).resolve().parents[1]
# The README's settings for a scoring cluster: no statistical profiler sampling every worker
# thread every 10 ms (a dashboard feature), and the event-loop, memory and system monitors at
# a slower pace (Dask's defaults: 20 ms, 100 ms, 500 ms), so that they take less of the cores
# the workers score on
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def cluster_cpu(client) -> float:
    """CPU seconds so far of the workers, their nannies and this process (the scheduler; a
    ``LocalCluster``'s nannies live here too), each process counted once."""
    workers = set(client.run(os.getpid).values())
    pids = workers | {psutil.Process(pid).ppid() for pid in workers} | {os.getpid()}
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def scale_runs(files: Path, model: Path, work: Path, repeat: int) -> dict[int, dict]:
    """Dask runs on a 1-worker and a 2-worker ``LocalCluster``, both up for the whole
    measurement and run in alternation, so that the machine's drift hits both alike (the idle
    cluster's scheduler and monitors tick meanwhile, the same for both)."""
    import dask
    from distributed import Client, LocalCluster

    n = sum(1 for _ in files.rglob("*.jpeg"))
    found: dict[int, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(WORKER_CONFIG))
        clusters = {}
        for n_workers in (1, 2):
            cluster = stack.enter_context(LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                dashboard_address=None))
            clusters[n_workers] = cluster, stack.enter_context(Client(cluster))
            found[n_workers] = {"rate": [], "share": [], "bytes": []}
            run_command(batch_command(  # warm-up: the workers load the bundle
                files, model, work / f"warm{n_workers}" / "r.csv", *_dask_options(cluster),
                "--num-parts", "20", "--part-id", "0", "--ledger",
                str(work / f"warm{n_workers}.sqlite")))
        for i in range(repeat):
            for n_workers, (cluster, client) in clusters.items():
                out = work / f"dask{n_workers}-{i}"
                before = cluster_cpu(client)
                timed = run_command(batch_command(files, model, out / "r.csv",
                                                  *_dask_options(cluster)))
                others = cluster_cpu(client) - before
                if timed.summary.get("scored") != n:
                    raise SystemExit(f"scored {timed.summary.get('scored')} of {n}")
                found[n_workers]["rate"].append(n / timed.wall)
                found[n_workers]["share"].append(timed.cpu / (timed.cpu + others))
                found[n_workers]["bytes"].append(timed.summary["result_bytes_per_file"])
                shutil.rmtree(out)
    return {k: {"rate": statistics.median(v["rate"]), "rates": v["rate"],
                "caller_share": statistics.median(v["share"]),
                "bytes": statistics.median(v["bytes"])} for k, v in found.items()}


def _dask_options(cluster) -> list[str]:
    return ["--no-report", "--backend", "dask", "--scheduler", cluster.scheduler_address]


def local_scaling(files: Path, model: Path, work: Path, repeat: int) -> tuple[float, float]:
    """Files/s of plain local ``batch --jobs 1`` and ``--jobs 2`` (medians, alternating)."""
    n = sum(1 for _ in files.rglob("*.jpeg"))
    rates: dict[int, list[float]] = {1: [], 2: []}
    for i in range(repeat):
        for jobs in (1, 2):
            out = work / f"local{jobs}-{i}"
            timed = run_command(batch_command(files, model, out / "r.csv", "--no-report",
                                              "--jobs", str(jobs)))
            rates[jobs].append(n / timed.wall)
            shutil.rmtree(out)
    return statistics.median(rates[1]), statistics.median(rates[2])


def commit_rate(work: Path, n: int = 20000, chunk: int = 32) -> float:
    """Rows per second the caller's ledger sink commits (synthetic rows, durable commits)."""
    import hashlib

    from xray_score.batch.ledger import Ledger
    from xray_score.batch.plan import Plan
    from xray_score.batch.sink import LedgerSink

    ledger = Ledger(work / "commit-rate.sqlite")
    run_id = ledger.start_run(str(work), "m" * 12, [], "0/1")
    plan = Plan(planned_ns=time.time_ns())
    rows = []
    for i in range(n):
        path = f"/data/site/study{i // 100:05d}/image{i:07d}.dcm"
        plan.unknown[path] = (1, i, 200_000 + i, 1_000_000_000)
        rows.append({"path": path, "sha256": hashlib.sha256(path.encode()).hexdigest(),
                     "model_id": "m" * 12, "p_pneumonia": f"{(i % 997) / 997:.6f}",
                     "predicted_label": "PNEUMONIA" if i % 3 else "NORMAL",
                     "threshold": "0.705000", "status": "ok", "error_kind": "", "error": "",
                     "width": "1024", "height": "1024", "ms": "12.5",
                     "domain_score": "0.4321", "in_domain": "true"})
    sink = LedgerSink(ledger, run_id, plan)
    start = time.perf_counter()
    for i in range(0, n, chunk):
        sink.write(rows[i:i + chunk])
    elapsed = time.perf_counter() - start
    ledger.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "cnn"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", help="keep the 2,496-file set here between runs")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dask-"))
    try:
        files = build_set(work / "set2496")
        runs = scale_runs(files, Path(args.model), work, args.repeat)
        one, two = runs[1], runs[2]
        rate = commit_rate(work)
        local1, local2 = local_scaling(files, Path(args.model), work, args.repeat)
        print(f"{args.model}, {sum(1 for _ in files.rglob('*.jpeg'))} files, whole command, "
              f"medians of {args.repeat}:")
        print(f"  Dask LocalCluster, 1 worker x 1 thread:  {one['rate']:7.1f} files/s")
        print(f"  Dask LocalCluster, 2 workers x 1 thread: {two['rate']:7.1f} files/s")
        print(f"  scaling 2 / 1:                           {two['rate'] / one['rate']:7.2f}x "
              "(target >= 1.8)")
        pairs = sorted(b / a for a, b in zip(one["rates"], two["rates"], strict=True))
        print(f"  each pair, 2 workers / the 1-worker run just before: "
              f"{', '.join(f'{r:.2f}' for r in pairs)}x")
        print(f"  control, local workers --jobs 1 / 2:     {local1:7.1f} / {local2:7.1f} "
              f"files/s, {local2 / local1:.2f}x (what 2 processes give on these cores)")
        print(f"  caller's share of the run's CPU:         {100 * two['caller_share']:7.1f} % "
              "(target <= 10 %)")
        print(f"  result bytes received per file:          {two['bytes']:7.0f}")
        print(f"  caller's ledger commits:                 {rate:7.0f} rows/s -> "
              f"{rate / 300:.0f} workers at 300 files/s each")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
