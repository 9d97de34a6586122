"""--backend dask: every worker scores whole chunks (read, hash, decode, predict, calibrate) and
sends rows back; the results are the local backend's, byte for byte apart from timings."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

from conftest import make_xray, save_gray
from hostile import HoldsTheGil, HostilePreprocessor, StallsInFeatures
from test_ledger import age, batch, make_folder, summary
from xray_score.batch import runners
from xray_score.batch.chunks import ChunkTask
from xray_score.batch.runners import CRASH_MESSAGE, DaskRunner, LocalRunner
from xray_score.errors import BundleError, ExitCode
from xray_score.model.bundle import Bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import dask
    import distributed  # part of the test extras: a missing install fails, never skips

    # a chunk that kills its worker is given up after one retry (the default is 3), and a
    # worker holds only the task it runs (so a crash blames no waiting task). LocalCluster
    # closes a worker's nanny for good when its name is missing 15 s after one of its workers
    # left: a restart that happens to fall then (tests restart workers after hangs) would lose
    # the worker, and the next restart would wait 120 s for it; a `dask worker` has no timer.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.scheduler.worker-saturation": 1.0,
                          "distributed.deploy.lost-worker-timeout": "1h"}), \
            distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                     dashboard_address=None) as local:
        yield local


@pytest.fixture()
def client(cluster):
    import distributed

    with distributed.Client(cluster.scheduler_address) as c:
        yield c


def without_timings(path: Path) -> list[list[str]]:
    """A results file's cells, the per-file ``ms`` column blanked (timings differ per run)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    ms = rows[0].index("ms")
    return [row[:ms] + row[ms + 1:] for row in rows]


def test_dask_results_are_the_local_ones_byte_for_byte(baseline_bundle, tmp_path, cluster):
    folder = tmp_path / "scans"
    make_folder(folder, 12)
    (folder / "empty.png").write_bytes(b"")
    (folder / "not-an-image.png").write_bytes(b"hello")
    age(folder / "empty.png", folder / "not-an-image.png")  # old enough for the stat cache
    local = batch(folder, baseline_bundle, tmp_path / "local.csv")
    remote = batch(folder, baseline_bundle, tmp_path / "dask.csv", "--backend", "dask",
                   "--scheduler", cluster.scheduler_address)
    assert local.exit_code == remote.exit_code == ExitCode.SOME_FAILED, remote.output
    s = summary(remote)
    assert (s["scored"], s["errors"], s["hashed"]) == (12, 2, 13)
    assert 0 < s["result_bytes_per_file"] < 2000  # rows travel back, never pixels
    assert without_timings(tmp_path / "dask.csv") == without_timings(tmp_path / "local.csv")
    again = batch(folder, baseline_bundle, tmp_path / "dask.csv", "--backend", "dask",
                  "--scheduler", cluster.scheduler_address)
    assert summary(again)["scored"] == 0 and summary(again)["stat_cache_hits"] == 13


def hostile_task(bundle: Bundle, timeout: float) -> ChunkTask:
    return ChunkTask(str(bundle.path.resolve()), bundle.model_id, timeout=timeout,
                     batch_size=4, preprocessor=HostilePreprocessor(bundle.preprocessor()))


def hostile_folder(folder: Path, rng) -> list[str]:
    folder.mkdir()
    names = ["a.png", "crash-1.png", "b.png", "c.png", "hang-1.png", "d.png", "e.png", "f.png"]
    for name in names:
        save_gray(folder / name, make_xray(len(name) % 2, rng, size=64))
    return [str(folder / n) for n in names]


def rows_by_name(results, bundle) -> dict[str, dict]:
    from xray_score.batch.scorer import BatchScorer

    rows = {}
    for result in results:
        for row in result.rows + [r for f in result.failures
                                  for r in BatchScorer(bundle).rows([f])]:
            rows[Path(row["path"]).name] = {k: v for k, v in row.items() if k != "ms"}
    return rows


def stalling_chunk(folder: Path, rng) -> list[str]:
    """One chunk: two good films, one whose features hang, one that is not an image."""
    folder.mkdir()
    for name in ("a.png", "stall-1.png", "b.png"):
        save_gray(folder / name, make_xray(len(name) % 2, rng, size=64))
    (folder / "bad.png").write_bytes(b"hello")
    return [str(folder / n) for n in ("a.png", "stall-1.png", "b.png", "bad.png")]


def stalling_task(bundle: Bundle) -> ChunkTask:
    return ChunkTask(str(bundle.path.resolve()), bundle.model_id, timeout=3.0, batch_size=4,
                     model_timeout=2.0, preprocessor=StallsInFeatures(bundle.preprocessor()))


def check_stalled_rows(results, bundle, paths: list[str]) -> dict[str, dict]:
    """Every file once; the stalling file a ``timeout`` from the worker's watchdog, the others
    as if nothing had happened (the innocent ones scored, the bad one unreadable)."""
    results = list(results)
    names = [Path(r["path"]).name for res in results for r in res.rows] + [
        Path(f.path).name for res in results for f in res.failures]
    assert sorted(names) == sorted(Path(p).name for p in paths)
    rows = rows_by_name(results, bundle)
    assert rows["stall-1.png"]["error_kind"] == "timeout"
    assert rows["stall-1.png"]["error"] == ("no result from the features or the model after "
                                             "2 s; abandoned by the worker's watchdog")
    assert rows["stall-1.png"]["sha256"]
    assert rows["bad.png"]["error_kind"] == "not_image"
    assert rows["a.png"]["status"] == rows["b.png"]["status"] == "ok"
    return rows


def test_a_crash_and_a_hang_cost_one_row_each_on_dask_as_locally(baseline_bundle, tmp_path,
                                                                rng, client):
    paths = hostile_folder(tmp_path / "in", rng)
    task = hostile_task(baseline_bundle, timeout=3.0)
    runner = DaskRunner(client)
    started = time.perf_counter()
    remote = rows_by_name(runner.run(task, paths), baseline_bundle)
    assert time.perf_counter() - started < 60  # the hang cost ~3 s, not its 60 s sleep
    assert remote["crash-1.png"]["error_kind"] == "worker_crash"
    assert remote["crash-1.png"]["error"] == CRASH_MESSAGE
    assert remote["hang-1.png"]["error_kind"] == "timeout"
    assert remote["hang-1.png"]["sha256"]  # the watchdog knew what it gave up on
    innocent = [n for n in remote if not n.startswith(("crash", "hang"))]
    assert len(innocent) == 6
    assert {n: remote[n]["status"] for n in innocent} == dict.fromkeys(innocent, "ok"), remote
    assert len(remote) == len(paths)
    assert runner.restarted  # the worker whose thread hung was restarted
    local = rows_by_name(LocalRunner(2).run(task, paths), baseline_bundle)
    assert local == remote


def test_a_chunk_whose_features_hang_costs_one_row_on_dask(baseline_bundle, tmp_path, rng,
                                                           client, monkeypatch):
    """The worker's watchdog also covers the chunk's features and model: a chunk that stalls
    there sends its decoded files again one by one, and the file that stalls alone is a
    ``timeout`` row; its worker is restarted each time (which ends the stuck thread)."""
    paths = stalling_chunk(tmp_path / "in", rng)
    monkeypatch.setattr(runners, "chunked", lambda p, *_: deque([p]))
    runner = DaskRunner(client)
    started = time.perf_counter()
    remote = check_stalled_rows(runner.run(stalling_task(baseline_bundle), paths),
                                baseline_bundle, paths)
    assert time.perf_counter() - started < 90  # two stalls of 2 s and two restarts
    assert len(runner.restarted) == 2
    local = rows_by_name(LocalRunner(2).run(hostile_task(baseline_bundle, 3.0), paths),
                         baseline_bundle)
    assert {n: remote[n] for n in ("a.png", "b.png", "bad.png")} == {
        n: local[n] for n in ("a.png", "b.png", "bad.png")}


def test_a_hang_that_holds_the_gil_ends_as_a_timeout_row_on_dask(baseline_bundle, tmp_path,
                                                                rng, client, monkeypatch):
    """A hang no Python thread can see (native code holding the GIL, so the watchdog cannot
    run) meets the task's hard limit: the worker process ends itself, the nanny starts a new
    one, and the file that does it on its own is a ``timeout`` row; the others score."""
    paths = stalling_chunk(tmp_path / "in", rng)
    monkeypatch.setattr(runners, "chunked", lambda p, *_: deque([p]))
    task = dataclasses.replace(stalling_task(baseline_bundle), model_timeout=600.0,
                               preprocessor=HoldsTheGil(baseline_bundle.preprocessor()))
    started = time.perf_counter()
    remote = rows_by_name(DaskRunner(client, backstop=4.0).run(task, paths), baseline_bundle)
    assert time.perf_counter() - started < 150  # six ends of 4 s and the restarts, not 60 s each
    assert sorted(remote) == ["a.png", "b.png", "bad.png", "stall-1.png"]
    assert remote["stall-1.png"]["error_kind"] == "timeout"
    assert remote["stall-1.png"]["error"] == ("no result after 4 s; the worker's hard limit "
                                              "ended its process")
    assert remote["bad.png"]["error_kind"] == "not_image"
    assert remote["a.png"]["status"] == remote["b.png"]["status"] == "ok"
    assert client.submit(sum, [1, 2], pure=False).result() == 3  # the cluster serves on


def test_the_hard_limit_ends_only_a_process_whose_task_runs_past_it():
    """Deadlines are per task; the earliest running one is armed, and one that finished in
    time is disarmed (the process lives on)."""
    code = ("import time\n"
            "from xray_score.batch.hardlimit import deadline\n"
            "with deadline(0.5):\n"
            "    with deadline(30):\n"
            "        time.sleep(0.1)\n"
            "time.sleep(1.0)\n"
            "print('alive')\n"
            "with deadline(30):\n"
            "    with deadline(0.5):\n"
            "        time.sleep(5)\n"
            "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["alive"]
    assert done.returncode == 1 and "Timeout" in done.stderr


def test_tasks_in_flight_are_bounded(baseline_bundle, tmp_path, client):
    folder = tmp_path / "many"
    paths = [str(p) for p in make_folder(folder, 24, size=48)]
    task = ChunkTask(str(baseline_bundle.path.resolve()), baseline_bundle.model_id,
                     batch_size=1)
    runner = DaskRunner(client, in_flight=3)
    results = list(runner.run(task, paths))
    assert sum(len(r.rows) for r in results) == 24
    assert runner.peak_in_flight == 3


def test_a_dask_task_carries_several_model_batches(baseline_bundle, tmp_path, client):
    """Each task costs the scheduler and the caller CPU taken from the workers' cores: a task
    is several model batches (fewer files towards the end of the run), not one."""
    from xray_score.batch.runners import BATCHES_PER_DASK_TASK

    paths = [str(p) for p in make_folder(tmp_path / "many", 64, size=48)]
    task = ChunkTask(str(baseline_bundle.path.resolve()), baseline_bundle.model_id,
                     batch_size=2)
    sizes = [len(r.rows) for r in DaskRunner(client).run(task, paths)]
    assert sum(sizes) == 64
    assert max(sizes) == 2 * BATCHES_PER_DASK_TASK  # the first tasks: several batches each
    assert min(sizes) < max(sizes)  # shrinking at the end, so the workers finish together


def test_workers_verify_the_bundle_and_refuse_another(baseline_bundle, tmp_path, client):
    copy = tmp_path / "bundle"
    shutil.copytree(baseline_bundle.path, copy)
    folder = tmp_path / "in"
    paths = [str(p) for p in make_folder(folder, 3)]
    caller = Bundle.load(copy)
    task = ChunkTask(str(copy.resolve()), caller.model_id)
    model_file = copy / caller.meta["model_file"]
    model_file.write_text(model_file.read_text().replace("Tree=0", "Tree=0 ", 1))
    with pytest.raises(BundleError, match="modified"):
        list(DaskRunner(client).run(task, paths))  # checksums are checked on the worker
    shutil.copy(baseline_bundle.path / caller.meta["model_file"], model_file)
    meta = json.loads((copy / "bundle.json").read_text())
    meta["threshold"]["value"] = 0.01  # a valid bundle, but not the caller's
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="caller's"):
        list(DaskRunner(client).run(task, paths))


def test_dask_needs_a_scheduler(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 1)
    result = batch(folder, baseline_bundle, tmp_path / "r.csv", "--backend", "dask")
    assert result.exit_code == ExitCode.USAGE


def _start(args: list[str], log: Path) -> subprocess.Popen:
    dask = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(dask), *args], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"})


def test_a_scheduler_and_workers_started_with_the_dask_command(baseline_bundle, tmp_path):
    """The README's multi-host recipe, on one host: `dask scheduler`, two `dask worker`s,
    then `xray-score batch --backend dask --scheduler ...` as separate processes."""
    info = tmp_path / "scheduler.json"
    procs = [_start(["scheduler", "--port", "0", "--no-dashboard", "--scheduler-file",
                     str(info)], tmp_path / "scheduler.log")]
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for i in range(2):
            procs.append(_start(["worker", address, "--nthreads", "1", "--no-dashboard",
                                 "--name", f"w{i}"], tmp_path / f"worker{i}.log"))
        from distributed import Client

        with Client(address) as c:
            c.wait_for_workers(2, timeout=60)
        folder = tmp_path / "scans"
        make_folder(folder, 10)
        out, local = tmp_path / "remote.csv", tmp_path / "local.csv"
        cmd = [sys.executable, "-m", "xray_score.cli", "-q", "batch", str(folder), "--model",
               str(baseline_bundle.path), "--no-report"]
        proc = subprocess.run([*cmd, "--out", str(out), "--backend", "dask", "--scheduler",
                               address], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[-1])["scored"] == 10
        assert subprocess.run([*cmd, "--out", str(local)], capture_output=True,
                              timeout=300).returncode == 0
        assert without_timings(out) == without_timings(local)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_chunk_tasks_are_small_and_picklable(baseline_bundle):
    import pickle

    task = ChunkTask(str(baseline_bundle.path), baseline_bundle.model_id)
    assert len(pickle.dumps(task)) < 1000
    assert dataclasses.replace(task, timeout=None).timeout is None
