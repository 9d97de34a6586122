"""A hanging or crashing file costs one error row, never the batch."""

from __future__ import annotations

import csv
import time

import pytest

import hostile
from conftest import make_xray, save_gray
from xray_score.batch.parallel import TaskFailure, resilient_map
from xray_score.batch.scorer import COLUMNS, BatchScorer, CsvSink
from xray_score.errors import ErrorKind

pytestmark = pytest.mark.slow


def collect(func, items, **kwargs):
    out = list(resilient_map(func, items, **kwargs))
    indexes = [i for i, _, _ in out]
    assert sorted(indexes) == list(range(len(items))), "every item exactly once"
    return {i: (item, result) for i, item, result in out}


def test_resilient_map_plain_results():
    items = list(range(10))
    got = collect(hostile.square_or_die, items, n_jobs=2, timeout=30)
    assert {i: r for i, (_, r) in got.items()} == {i: i * i for i in items}
    assert all(got[i][0] == i for i in items)


def test_resilient_map_in_process_when_serial():
    got = collect(hostile.worker_pid, [0, 1, 2], n_jobs=1, timeout=None)
    import os

    assert {r for _, r in got.values()} == {os.getpid()}


def test_hang_becomes_timeout_for_that_item_only():
    items = [1, 2, -1, 3, 4, 5, 6]
    start = time.monotonic()
    got = collect(hostile.square_or_die, items, n_jobs=2, timeout=6)
    assert time.monotonic() - start < hostile.HANG_SECONDS
    failure = got[2][1]
    assert isinstance(failure, TaskFailure) and failure.kind is ErrorKind.TIMEOUT
    for i, item in enumerate(items):
        if i != 2:
            assert got[i] == (item, item * item)


def test_crash_becomes_worker_crash_for_that_item_only():
    items = [1, 2, 3, -2, 4, 5, 6, 7]
    got = collect(hostile.square_or_die, items, n_jobs=2, timeout=20)
    failure = got[3][1]
    assert isinstance(failure, TaskFailure) and failure.kind is ErrorKind.WORKER_CRASH
    for i, item in enumerate(items):
        if i != 3:
            assert got[i] == (item, item * item)


def test_batch_scorer_survives_hang_and_crash(tmp_path, baseline_bundle, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a.png", "b.jpeg", "crash-1.png", "c.png", "hang-1.jpeg", "d.png", "e.jpeg",
             "f.png"]
    for n, name in enumerate(names):
        save_gray(folder / name, make_xray(n % 2, rng, size=(120, 100)))
    scorer = BatchScorer(baseline_bundle, n_jobs=2, timeout=10, batch_size=3)
    scorer.preprocessor = hostile.HostilePreprocessor(scorer.preprocessor)
    out = tmp_path / "out.csv"
    with CsvSink(out, COLUMNS) as sink:
        stats = scorer.run(sorted(str(p) for p in folder.iterdir()), sink)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == len(names) == len(by_name)
    assert by_name["hang-1.jpeg"]["status"] == "error"
    assert by_name["hang-1.jpeg"]["error_kind"] == "timeout"
    assert by_name["crash-1.png"]["status"] == "error"
    assert by_name["crash-1.png"]["error_kind"] == "worker_crash"
    for name in names:
        if not name.startswith(("hang", "crash")):
            row = by_name[name]
            assert row["status"] == "ok", row
            assert 0.0 <= float(row["p_pneumonia"]) <= 1.0
            assert row["model_id"] == baseline_bundle.model_id
    assert (stats.n_ok, stats.n_error) == (6, 2)
    assert dict(stats.errors_by_kind) == {"timeout": 1, "worker_crash": 1}


def test_single_job_with_timeout_still_isolates_hang_and_crash():
    # --jobs 1 must keep the per-file timeout and crash protection (joblib alone would run
    # n_jobs=1 in this process and ignore the timeout).
    items = [1, -1, 2, -2, 3]
    start = time.monotonic()
    got = collect(hostile.square_or_die, items, n_jobs=1, timeout=6)
    assert time.monotonic() - start < hostile.HANG_SECONDS
    assert got[1][1].kind is ErrorKind.TIMEOUT
    assert got[3][1].kind is ErrorKind.WORKER_CRASH
    assert [got[i][1] for i in (0, 2, 4)] == [1, 4, 9]
