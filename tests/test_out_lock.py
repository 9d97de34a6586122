"""One writer per results file: the run lock covers ``--out``, not only the ledger."""

from __future__ import annotations

import socket
import subprocess
import sys

from click.testing import CliRunner

from conftest import make_xray, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_second_run_on_the_same_out_with_another_ledger_exits_3(baseline_bundle, tmp_path,
                                                                monkeypatch, rng):
    from xray_score.batch import job

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        save_gray(folder / f"s{i}.png", make_xray(i % 2, rng, size=80))
    out = tmp_path / "results.csv"
    inner: dict = {}
    real_plan = job.make_plan

    def plan_while_another_run_starts(*args, **kwargs):
        inner["result"] = cli("batch", folder, "--model", baseline_bundle.path, "--out", out,
                              "--ledger", tmp_path / "other.sqlite", "--no-report")
        return real_plan(*args, **kwargs)

    monkeypatch.setattr(job, "make_plan", plan_while_another_run_starts)
    first = cli("batch", folder, "--model", baseline_bundle.path, "--out", out,
                "--ledger", tmp_path / "one.sqlite", "--no-report")
    assert first.exit_code == ExitCode.OK, first.output
    assert inner["result"].exit_code == ExitCode.LOCKED
    assert str(out) in inner["result"].stderr
    assert summary(first)["scored"] == 3


def test_export_keeps_a_live_writers_temporary_file(baseline_bundle, tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    save_gray(folder / "a.png", make_xray(0, rng, size=80))
    out = tmp_path / "results.csv"
    host = socket.gethostname().replace(".", "_")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    live_tmp = tmp_path / f".results.csv.{host}.{live.pid}.tmp"
    dead_tmp = tmp_path / f".results.csv.{host}.{dead.pid}.tmp"
    other_host = tmp_path / f".results.csv.elsewhere.{dead.pid}.tmp"
    for p in (live_tmp, dead_tmp, other_host):
        p.write_text("partial")
    try:
        assert cli("batch", folder, "--model", baseline_bundle.path, "--out", out,
                   "--no-report").exit_code == ExitCode.OK
    finally:
        live.kill()
        live.wait()
    assert live_tmp.exists() and other_host.exists()
    assert not dead_tmp.exists()
