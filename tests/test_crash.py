"""kill -9 at any moment, then the same command: nothing lost, nothing twice; and the run lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_ledger import batch, ledger_count, make_folder, read_rows, summary
from xray_score.batch.locking import RunLock, lock_path
from xray_score.errors import ExitCode

pytestmark = pytest.mark.slow


def start_batch(folder: Path, bundle, out: Path, *extra: str) -> subprocess.Popen:
    """``python -m xray_score.cli batch`` in its own process group (so its workers die too)."""
    args = [sys.executable, "-m", "xray_score.cli", "batch", str(folder), "--model",
            str(bundle.path), "--out", str(out), "--no-report", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def rows_in(ledger: Path) -> int:
    try:
        return ledger_count(ledger)
    except sqlite3.OperationalError:  # not created yet
        return 0


def wait_for(predicate, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_kill_9_at_several_points_then_resume_equals_clean_run(baseline_bundle, tmp_path):
    n = 90
    folder = tmp_path / "scans"
    make_folder(folder, n, size=48)
    out = tmp_path / "r.csv"
    ledger = Path(f"{out}.ledger.sqlite")
    slow = ("--jobs", "1", "--batch-size", "2")
    for threshold in (0, 10, 40):  # as soon as the ledger exists, then after N committed rows
        proc = start_batch(folder, baseline_bundle, out, *slow)
        if threshold == 0:
            wait_for(ledger.exists, proc)
        else:
            wait_for(lambda t=threshold: rows_in(ledger) >= t, proc)
        kill_group(proc)
        assert not out.exists() or len(read_rows(out)) <= n  # never torn: old or whole file
    done_before = rows_in(ledger)
    assert 40 <= done_before < n
    final = batch(folder, baseline_bundle, out)
    assert final.exit_code == 0, final.output
    s = summary(final)
    assert s["scored"] == n - done_before and s["reused"] == done_before and s["rows"] == n
    rows = read_rows(out)
    assert len(rows) == n and len({r["path"] for r in rows}) == n
    assert rows_in(ledger) == n  # one ledger row per content: nothing scored twice
    with sqlite3.connect(ledger) as db:
        states = [r[0] for r in db.execute("SELECT state FROM runs ORDER BY run_id")]
    # the first kill may land before that run recorded itself: then it leaves no run row
    assert states[-1] == "done" and set(states[:-1]) == {"killed"} and len(states) in (3, 4)

    clean = batch(folder, baseline_bundle, tmp_path / "clean.csv")
    expected = {r["path"]: r["p_pneumonia"] for r in read_rows(tmp_path / "clean.csv")}
    assert {r["path"]: r["p_pneumonia"] for r in rows} == expected
    assert summary(clean)["scored"] == n
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_run_exits_3_and_stale_lock_is_recovered(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 2)
    out = tmp_path / "r.csv"
    ledger = Path(f"{out}.ledger.sqlite")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
         "from xray_score.batch.locking import RunLock\nRunLock(Path(sys.argv[1])).acquire()\n"
         "print('locked', flush=True)\ntime.sleep(120)", str(lock_path(ledger))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        blocked = batch(folder, baseline_bundle, out)
        assert blocked.exit_code == ExitCode.LOCKED
        assert f"pid {holder.pid}" in blocked.stderr
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the kernel drops the flock
        holder.wait()
    assert lock_path(ledger).exists()
    assert batch(folder, baseline_bundle, out).exit_code == 0


def test_shard_locks_are_independent(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 4)
    ledger = tmp_path / "shared.sqlite"
    common = ("--ledger", ledger, "--num-parts", "2")
    with RunLock(lock_path(ledger, 2, 0)):
        other = batch(folder, baseline_bundle, tmp_path / "p1.csv", *common, "--part-id", "1")
        assert other.exit_code == 0, other.output
        same = batch(folder, baseline_bundle, tmp_path / "p0.csv", *common, "--part-id", "0")
        assert same.exit_code == ExitCode.LOCKED
        whole = batch(folder, baseline_bundle, tmp_path / "all.csv", "--ledger", ledger)
        assert whole.exit_code == 0  # the unsharded job has its own lock


def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _wait_for_workers(proc: subprocess.Popen, ledger: Path) -> list:
    """Block until the run has committed rows and its worker processes exist."""
    wait_for(lambda: rows_in(ledger) >= 4 and len(_descendants(proc.pid)) >= 2, proc)
    return _descendants(proc.pid)


def _all_gone(procs: list, limit: float = 15) -> bool:
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=limit)
    for p in alive:  # do not leave them behind for the rest of the suite
        p.kill()
    return not alive


def test_kill_9_of_the_parent_alone_takes_its_workers_down(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 400, size=48)
    out = tmp_path / "r.csv"
    proc = start_batch(folder, baseline_bundle, out, "--jobs", "2", "--batch-size", "2")
    children = _wait_for_workers(proc, Path(f"{out}.ledger.sqlite"))
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
    proc.communicate(timeout=30)
    assert _all_gone(children), "worker processes outlived their parent"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_end_the_run_cleanly(baseline_bundle, tmp_path, sig, code):
    folder = tmp_path / "scans"
    make_folder(folder, 400, size=48)
    out = tmp_path / "r.csv"
    ledger = Path(f"{out}.ledger.sqlite")
    proc = start_batch(folder, baseline_bundle, out, "--jobs", "2", "--batch-size", "2")
    children = _wait_for_workers(proc, ledger)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    log = stderr.decode()
    assert proc.returncode == code, log
    assert "interrupted" in log and "Traceback" not in log, log
    assert _all_gone(children), log
    db = sqlite3.connect(ledger)
    state, exit_status = db.execute("SELECT state, exit_status FROM runs").fetchone()
    assert (state, exit_status) == ("interrupted", code), log
    committed = rows_in(ledger)
    assert committed >= 4, log  # what was committed before the signal is kept
    assert summary_line(stdout)["interrupted"] == signal.Signals(sig).name, stdout
    resumed = batch(folder, baseline_bundle, out)  # the same command finishes the job
    assert resumed.exit_code == ExitCode.OK
    assert summary(resumed)["scored"] == 400 - committed


def summary_line(stdout: bytes) -> dict:
    import json

    return json.loads(stdout.decode().strip().splitlines()[-1])
