"""The results ledger: incremental re-runs, the stat cache, rename reuse, exports, job config."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import make_xray, read_rows, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode
from xray_score.io.atomic import write_atomic


def cli(*args: object):
    """Run the CLI in-process; returns the click Result."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)




def make_folder(folder: Path, n: int, seed: int = 0, size: int = 72) -> list[Path]:
    """``n`` distinct small images, their mtimes set in the past (not "racily" fresh)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [save_gray(folder / f"img{i:03d}.png", make_xray(i % 2, rng, size=size))
             for i in range(n)]
    age(*paths)
    return paths


def age(*paths: Path) -> None:
    past = time.time() - 3600
    for p in paths:
        os.utime(p, (past, past))


def batch(folder: Path, bundle, out: Path, *extra: object):
    return cli("batch", folder, "--model", bundle.path, "--out", out, "--no-report", *extra)


def ledger_count(ledger: Path) -> int:
    with sqlite3.connect(ledger) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def test_unchanged_rerun_reads_nothing_and_changed_file_is_rescored(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    paths = make_folder(folder, 6)
    out = tmp_path / "r.csv"
    first = batch(folder, baseline_bundle, out)
    assert first.exit_code == 0, first.output
    s1 = summary(first)
    assert (s1["scored"], s1["reused"], s1["hashed"], s1["run_id"]) == (6, 0, 6, 1)
    assert s1["model_runtime"].startswith("LightGBM")
    before = {r["path"]: r for r in read_rows(out)}

    second = summary(batch(folder, baseline_bundle, out))
    assert (second["scored"], second["reused"]) == (0, 6)
    assert (second["stat_cache_hits"], second["hashed"]) == (6, 0)  # no file was read
    assert second["model_runtime"] is None  # nothing to score: no model was loaded
    assert {r["path"]: r for r in read_rows(out)} == before  # same rows, scored in run 1

    save_gray(paths[2], make_xray(1, np.random.default_rng(77), size=90))  # new content
    age(paths[2])
    third = summary(batch(folder, baseline_bundle, out))
    assert (third["scored"], third["reused"], third["hashed"]) == (1, 5, 1)
    rows = {r["path"]: r for r in read_rows(out)}
    changed = str(paths[2])
    assert rows[changed]["scored_in_run"] == "3" and rows[changed]["width"] == "90"
    assert rows[changed]["sha256"] != before[changed]["sha256"]
    assert all(rows[p]["scored_in_run"] == "1" for p in rows if p != changed)
    assert ledger_count(Path(f"{out}.ledger.sqlite")) == 7  # the old content's row is kept


def test_renamed_and_copied_files_reuse_their_scores(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    paths = make_folder(folder, 4)
    out = tmp_path / "r.csv"
    assert batch(folder, baseline_bundle, out).exit_code == 0
    p_before = {Path(r["path"]).name: r["p_pneumonia"] for r in read_rows(out)}
    (folder / "moved").mkdir()
    paths[0].rename(folder / "moved" / "renamed.png")  # same inode: a stat-cache hit
    (folder / "copy.png").write_bytes(paths[1].read_bytes())  # new inode: hashed, then reused
    age(folder / "copy.png")
    s = summary(batch(folder, baseline_bundle, out))
    assert (s["files"], s["scored"], s["reused"], s["hashed"]) == (5, 0, 5, 1)
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert rows["renamed.png"]["p_pneumonia"] == p_before["img000.png"]
    assert rows["copy.png"]["p_pneumonia"] == p_before["img001.png"]
    assert "img000.png" not in rows  # the export describes the folder as it is now
    assert {r["scored_in_run"] for r in rows.values()} == {"1"}


def test_error_rows_kept_or_retried_by_kind(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 2)
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "r.csv"
    first = batch(folder, baseline_bundle, out)
    assert first.exit_code == ExitCode.SOME_FAILED
    ledger = Path(f"{out}.ledger.sqlite")
    with sqlite3.connect(ledger) as db:  # pretend one image timed out last time
        db.execute("UPDATE results SET status='error', error_kind='timeout', p_pneumonia='' "
                   "WHERE path LIKE '%img001.png'")
    again = batch(folder, baseline_bundle, out)
    s = summary(again)
    assert again.exit_code == ExitCode.SOME_FAILED  # the empty file still fails (kept, not retried)
    assert (s["scored"], s["errors"], s["reused"]) == (1, 0, 2)
    assert s["failed_by_kind"] == {"empty": 1}
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert rows["img001.png"]["status"] == "ok" and rows["img001.png"]["scored_in_run"] == "2"


def test_runs_are_recorded(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 2)
    out = tmp_path / "r.csv"
    batch(folder, baseline_bundle, out)
    batch(folder, baseline_bundle, out)
    with sqlite3.connect(Path(f"{out}.ledger.sqlite")) as db:
        db.row_factory = sqlite3.Row
        runs = [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY run_id")]
    assert [r["state"] for r in runs] == ["done", "done"]
    assert [r["exit_status"] for r in runs] == [0, 0]
    assert all(r["started"] <= r["ended"] and r["model_id"] == baseline_bundle.model_id
               and r["version"] for r in runs)
    assert json.loads(runs[1]["counts"])["reused"] == 2


def test_parquet_export_and_labeled_folder(baseline_bundle, labeled_test_dir, tmp_path):
    out = tmp_path / "r.parquet"
    result = batch(labeled_test_dir, baseline_bundle, out, "--format", "parquet")
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    n = sum(1 for p in labeled_test_dir.rglob("*") if p.is_file())
    assert len(df) == n and df["path"].is_unique
    assert df["p_pneumonia"].dtype == float and df["scored_in_run"].eq(1).all()
    assert (df["true_label"] == df["path"].map(lambda p: Path(p).parent.name)).all()
    assert list(df.columns)[-2:] == ["true_label", "scored_in_run"]


def test_export_is_atomic(tmp_path):
    out = tmp_path / "r.csv"
    write_atomic(out, ["a"], [{"a": "old"}])

    def rows():
        yield {"a": "new"}
        raise RuntimeError("killed mid-export")

    with pytest.raises(RuntimeError):
        write_atomic(out, ["a"], rows())
    assert read_rows(out) == [{"a": "old"}]
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # no temporary left behind


def test_config_file_with_command_line_override(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 3)
    config = tmp_path / "nightly.yaml"
    config.write_text(f"folder: {folder}\nmodel: {baseline_bundle.path}\n"
                      f"out: {tmp_path / 'night.csv'}\nledger: {tmp_path / 'night.sqlite'}\n"
                      "format: csv\njobs: 2\ntimeout: 30\nreport: false\n")
    result = cli("batch", "--config", config, "--format", "parquet",
                 "--out", tmp_path / "night.parquet")
    assert result.exit_code == 0, result.output
    s = summary(result)
    assert s["format"] == "parquet" and s["ledger"] == str(tmp_path / "night.sqlite")
    assert len(pd.read_parquet(tmp_path / "night.parquet")) == 3
    config.write_text("folder: x\nbogus: 1\n")
    assert cli("batch", "--config", config).exit_code == ExitCode.USAGE
    config.write_text(f"folder: {folder}\nmodel: {baseline_bundle.path}\nbackend: threads\n")
    wrong = cli("batch", "--config", config, "--out", tmp_path / "w.csv")
    assert wrong.exit_code == ExitCode.USAGE and "auto, fork, loky, dask" in wrong.output
    assert not (tmp_path / "w.csv").exists()


def test_shipped_nightly_config_parses():
    import yaml

    from xray_score.commands.batch import CONFIG_KEYS as _BATCH_CONFIG_KEYS

    path = Path(__file__).resolve().parents[1] / "pipelines" / "nightly.yaml"
    data = yaml.safe_load(path.read_text())
    assert {k.replace("-", "_").replace("format", "fmt") for k in data} <= set(_BATCH_CONFIG_KEYS)


def test_noop_rerun_loads_no_model(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 2)
    out = tmp_path / "r.csv"
    assert batch(folder, baseline_bundle, out).exit_code == 0
    code = ("import sys\nfrom xray_score.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('HEAVY', sorted({'lightgbm', 'tensorflow', 'keras'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code, "batch", str(folder), "--model",
                           str(baseline_bundle.path), "--out", str(out), "--no-report"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_stat_cache_lookups_use_the_primary_key(tmp_path):
    """Looking up 1,000 files' (device, inode) must search the index, not scan the table."""
    from xray_score.batch.ledger import Ledger

    ledger = Ledger(tmp_path / "l.sqlite")
    paths = make_folder(tmp_path / "f", 5)
    stats = [os.stat(p) for p in paths]
    ledger.cache_hashes([(st, f"{i:064x}") for i, st in enumerate(stats)])
    statements: list[str] = []
    ledger.db.set_trace_callback(statements.append)
    assert ledger.cached_hashes(stats) == [f"{i:064x}" for i in range(5)]
    ledger.db.set_trace_callback(None)
    lookups = [s for s in statements if "stat_cache" in s and s.lstrip().startswith("SELECT")]
    assert lookups
    for sql in lookups:
        plan = " ".join(str(r[-1]) for r in ledger.db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SEARCH" in plan and "SCAN" not in plan, plan


class _SignalAfterBegin:
    """A ledger connection whose next BEGIN succeeds and is then interrupted, as SIGINT's
    handler does when the signal lands while SQLite runs the statement."""

    def __init__(self, db) -> None:
        self._db = db
        self.fired = False

    def execute(self, sql, *args):
        cursor = self._db.execute(sql, *args)
        if sql.startswith("BEGIN") and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_signal_landing_in_begin_leaves_no_open_transaction(tmp_path):
    """Seen in CI: SIGINT raised just after BEGIN IMMEDIATE, so the run could not record
    itself as interrupted ("cannot start a transaction within a transaction", exit 70)."""
    from xray_score.batch.ledger import Ledger

    ledger = Ledger(tmp_path / "l.sqlite")
    run_id = ledger.start_run(str(tmp_path), "m" * 12, [], "0/1")
    ledger.db = _SignalAfterBegin(ledger.db)
    with pytest.raises(KeyboardInterrupt):
        ledger.end_run(run_id, {"scored": 1}, 130, "interrupted")
    assert ledger.db.fired and not ledger.db.in_transaction
    ledger.end_run(run_id, {"scored": 1}, 130, "interrupted")
    state = ledger.db.execute("SELECT state, exit_status FROM runs").fetchone()
    assert tuple(state) == ("interrupted", 130)
