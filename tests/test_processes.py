"""The forked-process runner (``batch``'s default on Linux): the loky runner's rows and survival,
and nothing of the run's state leaks into its workers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import types
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from conftest import make_xray, save_gray
from hostile import HostilePreprocessor
from test_dask import (
    check_stalled_rows,
    hostile_folder,
    hostile_task,
    rows_by_name,
    stalling_chunk,
    stalling_task,
    without_timings,
)
from test_ledger import batch, make_folder, summary
from xray_score.batch import processes, runners
from xray_score.batch.locking import RunLock
from xray_score.batch.processes import ProcessRunner, fork_available, fork_blockers
from xray_score.batch.runners import CRASH_MESSAGE, LocalRunner
from xray_score.errors import ExitCode

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="forked workers: Linux only")


def cli_batch(folder: Path, bundle, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real command in its own process (this test process may have loaded TensorFlow,
    which makes forking unsafe here; ``xray-score`` loads none)."""
    return subprocess.run([sys.executable, "-m", "xray_score.cli", "-q", "batch", str(folder),
                           "--model", str(bundle.path), "--out", str(out), "--no-report",
                           *extra], capture_output=True, text=True, timeout=300)


def test_forked_and_loky_workers_write_the_same_results(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 12)
    (folder / "not-an-image.png").write_bytes(b"hello")
    forked = cli_batch(folder, baseline_bundle, tmp_path / "fork.csv", "--backend", "fork")
    loky = cli_batch(folder, baseline_bundle, tmp_path / "loky.csv", "--backend", "loky")
    assert forked.returncode == loky.returncode == ExitCode.SOME_FAILED, forked.stderr
    s = json.loads(forked.stdout.strip().splitlines()[-1])
    assert (s["scored"], s["errors"]) == (12, 1)
    assert without_timings(tmp_path / "fork.csv") == without_timings(tmp_path / "loky.csv")


def test_fork_is_refused_where_a_loaded_library_makes_it_unsafe(baseline_bundle, tmp_path,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert not fork_available()
    folder = tmp_path / "scans"
    make_folder(folder, 3)
    refused = batch(folder, baseline_bundle, tmp_path / "r.csv", "--backend", "fork")
    assert refused.exit_code == ExitCode.USAGE, refused.output
    assert "torch" in refused.output and "--backend loky" in refused.output
    auto = batch(folder, baseline_bundle, tmp_path / "r.csv")  # auto: loky here
    assert auto.exit_code == ExitCode.OK and summary(auto)["scored"] == 3, auto.output


def test_fork_is_refused_while_another_thread_runs(baseline_bundle, tmp_path):
    """A thread of the calling process (a notebook kernel's, a Dask client's) makes forking
    unsafe: ``auto`` takes loky, and ``--backend fork`` says why."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        assert not fork_available()
        assert any(b.endswith("running") for b in fork_blockers()), fork_blockers()
        folder = tmp_path / "scans"
        make_folder(folder, 3)
        refused = batch(folder, baseline_bundle, tmp_path / "r.csv", "--backend", "fork")
        assert refused.exit_code == ExitCode.USAGE, refused.output
        assert "other thread" in refused.output and "--backend loky" in refused.output
        auto = batch(folder, baseline_bundle, tmp_path / "r.csv")
        assert auto.exit_code == ExitCode.OK and summary(auto)["scored"] == 3, auto.output
    finally:
        stop.set()
        thread.join()


def test_a_crash_and_a_hang_cost_one_row_each_as_on_loky(baseline_bundle, tmp_path, rng):
    paths = hostile_folder(tmp_path / "in", rng)
    task = hostile_task(baseline_bundle, timeout=3.0)
    started = time.perf_counter()
    forked = rows_by_name(ProcessRunner(2).run(task, paths), baseline_bundle)
    assert time.perf_counter() - started < 60  # the hang cost ~3 s, not its 60 s sleep
    assert forked["crash-1.png"]["error_kind"] == "worker_crash"
    assert forked["crash-1.png"]["error"] == CRASH_MESSAGE
    assert forked["hang-1.png"]["error_kind"] == "timeout"
    innocent = [n for n in forked if not n.startswith(("crash", "hang"))]
    assert {n: forked[n]["status"] for n in innocent} == dict.fromkeys(innocent, "ok"), forked
    assert len(forked) == len(paths) == len(innocent) + 2
    assert forked == rows_by_name(LocalRunner(2).run(task, paths), baseline_bundle)


def test_a_chunk_that_breaks_its_worker_again_reruns_only_the_files_it_left(
        baseline_bundle, tmp_path, rng, monkeypatch):
    """A chunk in flight when another chunk's file killed its worker runs again alone; if it
    then scores a file, hangs on the next (the watchdog's ``timeout``) and dies further on,
    only the files it had not finished run one at a time: every file gets one row, and the
    hang costs one timeout, not two."""
    names = ["a.png", "hang-1.png", "b.png", "crash-1.png", "c.png",
             "d.png", "crash-2.png", "e.png"]
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        save_gray(folder / name, make_xray(len(name) % 2, rng, size=64))
    paths = [str(folder / n) for n in names]
    monkeypatch.setattr(processes, "chunked", lambda p, size, workers: deque([p[:5], p[5:]]))
    results = list(ProcessRunner(2).run(hostile_task(baseline_bundle, timeout=3.0), paths))
    rows = [*(r for res in results for r in res.rows), *(
        {"path": f.path, "error_kind": f.error_kind} for res in results for f in res.failures)]
    assert Counter(Path(r["path"]).name for r in rows) == Counter(names)
    kinds = {Path(r["path"]).name: r["error_kind"] for r in rows}
    assert (kinds["hang-1.png"], kinds["crash-1.png"], kinds["crash-2.png"]) == (
        "timeout", "worker_crash", "worker_crash")


@dataclasses.dataclass(frozen=True)
class HangsInTransform(HostilePreprocessor):
    """Decodes fine, then hangs in every chunk's feature transform (a hang the backstop ends
    when it is shorter than the watchdog's limit for features and model)."""

    def transform_batch(self, pixels):
        time.sleep(120)
        return self.inner.transform_batch(pixels)


@pytest.mark.parametrize("runner", [ProcessRunner, LocalRunner])
def test_the_backstop_ends_a_hang_outside_decoding(runner, baseline_bundle, tmp_path, rng):
    """Both local runners convict a file that hangs past the backstop on its own as a
    ``timeout`` (the loky runner called it a ``worker_crash``)."""
    paths = [p for p in hostile_folder(tmp_path / "in", rng)
             if not Path(p).name.startswith(("crash", "hang"))][:2]
    task = dataclasses.replace(hostile_task(baseline_bundle, timeout=3.0),
                               preprocessor=HangsInTransform(baseline_bundle.preprocessor()))
    started = time.perf_counter()
    rows = rows_by_name(runner(2, backstop=2.0).run(task, paths), baseline_bundle)
    assert time.perf_counter() - started < 60
    assert {r["error_kind"] for r in rows.values()} == {"timeout"}
    assert {r["error"] for r in rows.values()} == {"no result after 2 s; worker killed"}
    assert len(rows) == 2


@pytest.mark.parametrize("runner", [ProcessRunner, LocalRunner])
def test_a_chunk_whose_features_hang_costs_one_row(runner, baseline_bundle, tmp_path, rng,
                                                   monkeypatch):
    """The worker's watchdog covers the chunk's features and model, well before the backstop:
    the chunk's decoded files are sent again one by one, and the file that stalls alone is a
    ``timeout`` row; the others are scored as without it."""
    paths = stalling_chunk(tmp_path / "in", rng)
    for module in (processes, runners):
        monkeypatch.setattr(module, "chunked", lambda p, *_: deque([p]))
    started = time.perf_counter()
    rows = check_stalled_rows(runner(2).run(stalling_task(baseline_bundle), paths),
                              baseline_bundle, paths)
    assert time.perf_counter() - started < 40  # two stalls of 2 s; the backstop is 78 s
    plain = rows_by_name(runner(2).run(hostile_task(baseline_bundle, 3.0), paths),
                         baseline_bundle)
    assert {n: rows[n] for n in ("a.png", "b.png", "bad.png")} == {
        n: plain[n] for n in ("a.png", "b.png", "bad.png")}


def test_after_a_hung_decode_the_files_before_it_are_sent_again_not_scored_unwatched(
        baseline_bundle, tmp_path, rng, monkeypatch):
    """A chunk whose second file hangs in decoding: the first file, whose features would hang
    too, goes back with the rest (scored in the task's own thread it would hang it, unwatched)
    and becomes its own ``timeout`` row from the features' watchdog."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("stall-1.png", "hang-1.png", "b.png"):
        save_gray(folder / name, make_xray(len(name) % 2, rng, size=64))
    paths = [str(folder / n) for n in ("stall-1.png", "hang-1.png", "b.png")]
    monkeypatch.setattr(processes, "chunked", lambda p, *_: deque([p]))
    started = time.perf_counter()
    results = list(ProcessRunner(2).run(stalling_task(baseline_bundle), paths))
    assert time.perf_counter() - started < 40  # the hang 3 s, the stall 2 s, not 60
    rows = [r for res in results for r in res.rows]
    assert sorted(Path(r["path"]).name for r in rows) == sorted(Path(p).name for p in paths)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["hang-1.png"]["error"] == ("no result after 3 s; abandoned by the "
                                              "worker's watchdog")
    assert by_name["stall-1.png"]["error"].startswith("no result from the features or the "
                                                      "model after 2 s")
    assert by_name["b.png"]["status"] == "ok"


def _open_files(_: object) -> list[str]:
    fds = Path("/proc/self/fd")
    out = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            out.append(os.readlink(fd))
    return out


def test_workers_do_not_inherit_the_runs_locks(tmp_path):
    """A ``flock`` lives while any copy of its descriptor is open: a worker that kept the run's
    locks would hold them after a ``kill -9`` of its run."""
    lock = tmp_path / "ledger.sqlite.lock"
    with RunLock(lock):
        with ProcessPoolExecutor(1, mp_context=get_context("fork")) as pool:
            inherited = pool.submit(_open_files, None).result()
        assert str(lock) not in inherited
        with pytest.raises(Exception, match="another run holds"):
            RunLock(lock).acquire()  # the caller's lock still holds
    RunLock(lock).acquire().release()
