"""batch at scale: a lean caller, lean workers, keys learned by the workers, kept run summaries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import make_xray, save_gray
from test_ledger import age, batch, make_folder, read_rows, summary
from xray_score.batch.chunks import ChunkTask
from xray_score.batch.runners import chunk_size, chunked

HEAVY = ("sklearn", "scipy", "pandas", "lightgbm", "tensorflow", "keras", "skimage")


def heavy_modules(code: str, *args: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the heavy libraries it ended up importing."""
    probe = f"{code}\nimport sys\nprint('HEAVY', sorted({set(HEAVY)!r} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY")][-1]
    return json.loads(line.split(" ", 1)[1].replace("'", '"'))


def test_a_scoring_run_imports_nothing_heavy_in_the_calling_process(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 4)
    code = ("from xray_score.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code")
    assert heavy_modules(code, "batch", str(folder), "--model", str(baseline_bundle.path),
                         "--out", str(tmp_path / "r.csv"), "--no-report") == []
    assert [r["status"] for r in read_rows(tmp_path / "r.csv")] == ["ok"] * 4


def test_a_worker_scores_a_chunk_without_scikit_learn_scipy_pandas_or_lightgbm_package(
        baseline_bundle, tmp_path):
    paths = [str(p) for p in make_folder(tmp_path / "scans", 3)]
    code = ("import sys\nfrom xray_score.batch.chunks import ChunkTask\n"
            f"task = ChunkTask({str(baseline_bundle.path)!r}, {baseline_bundle.model_id!r})\n"
            f"result = task({paths!r})\n"
            "assert [r['status'] for r in result.rows] == ['ok'] * 3, result.rows")
    assert heavy_modules(code) == []


@pytest.mark.parametrize("kind, module", [("baseline", "xray_score.classical.kind"),
                                          ("cnn", "xray_score.deep.kind"),
                                          ("ensemble", "xray_score.ensemble.kind")])
def test_preloading_a_kind_before_forking_starts_no_thread_and_nothing_fork_unsafe(kind, module):
    """The forking runner imports the bundle's kind in the caller so that its workers inherit
    it: that must leave the caller as safe to fork as before (one thread, no TensorFlow)."""
    code = ("import sys, threading\nfrom xray_score.batch.chunks import ChunkTask\n"
            "from xray_score.batch.processes import fork_blockers\n"
            f"ChunkTask('unused', '0' * 12, kind={kind!r}).preload()\n"
            f"assert {module!r} in sys.modules\n"
            "assert threading.active_count() == 1, threading.enumerate()\n"
            "assert fork_blockers() == [], fork_blockers()\n"
            "from PIL import Image\nassert 'JPEG' in Image.OPEN")
    assert heavy_modules(code) == []


def test_content_the_ledger_knows_keeps_its_row(baseline_bundle, tmp_path):
    """A copy (new inode) and a touched file (new mtime) are read again by a worker, but their
    content's row stands: nothing is rescored, as if they had been hashed first."""
    folder = tmp_path / "scans"
    paths = make_folder(folder, 4)
    out = tmp_path / "r.csv"
    assert batch(folder, baseline_bundle, out).exit_code == 0
    before = {r["path"]: r for r in read_rows(out)}
    shutil.copy(paths[0], folder / "copy-of-0.png")
    os.utime(paths[1], (time.time() - 60, time.time() - 60))  # touched: content unchanged
    age(folder / "copy-of-0.png")
    second = batch(folder, baseline_bundle, out)
    s = summary(second)
    assert (s["scored"], s["hashed"], s["known_content"]) == (0, 2, 2)
    rows = {r["path"]: r for r in read_rows(out)}
    copy = rows[str(folder / "copy-of-0.png")]
    assert copy["scored_in_run"] == "1" and copy["sha256"] == before[str(paths[0])]["sha256"]
    assert copy["p_pneumonia"] == before[str(paths[0])]["p_pneumonia"]
    third = summary(batch(folder, baseline_bundle, out))
    assert (third["hashed"], third["stat_cache_hits"]) == (0, 5)  # all learned, none read


@pytest.mark.parametrize("jobs", ["1", "2"])  # one chunk holding both, or two chunks
def test_two_new_files_with_one_content_get_one_row(baseline_bundle, tmp_path, rng, jobs):
    folder = tmp_path / "scans"
    folder.mkdir()
    a = save_gray(folder / "a.png", make_xray(1, rng, size=64))
    shutil.copy(a, folder / "b.png")
    others = [save_gray(folder / f"{c}.png", make_xray(0, rng, size=64)) for c in "cdefgh"]
    age(a, folder / "b.png", *others)
    s = summary(batch(folder, baseline_bundle, tmp_path / "r.csv", "--jobs", jobs))
    assert (s["scored"], s["known_content"], s["rows"]) == (7, 1, 8)


def test_chunks_shrink_towards_the_end_so_workers_finish_together():
    paths = [str(i) for i in range(2496)]
    size = chunk_size(len(paths), batch_size=64, workers=2)
    chunks = chunked(paths, size, workers=2)
    assert size == 64 and [p for c in chunks for p in c] == paths
    lengths = [len(c) for c in chunks]
    assert lengths[0] == 64 and lengths[-1] <= 4 and lengths == sorted(lengths, reverse=True)
    assert chunk_size(4, batch_size=64, workers=2) == 1  # a small folder still uses both


def test_an_unchanged_rerun_keeps_its_run_summary(baseline_bundle, labeled_test_dir, tmp_path):
    out = tmp_path / "r.csv"
    first = batch(labeled_test_dir, baseline_bundle, out, "--report")
    html = out.with_suffix(".html")
    assert first.exit_code == 0 and html.exists()
    stamp = html.stat().st_mtime_ns
    again = batch(labeled_test_dir, baseline_bundle, out, "--report")
    assert again.exit_code == 0 and summary(again)["scored"] == 0
    assert html.stat().st_mtime_ns == stamp  # inputs unchanged: not rebuilt
    extra = tmp_path / "extra-labeled"
    shutil.copytree(labeled_test_dir, extra)
    save_gray(extra / "NORMAL" / "new-film.png", make_xray(0, np.random.default_rng(5), 80))
    changed = batch(extra, baseline_bundle, out, "--report")
    assert summary(changed)["scored"] == 1
    assert html.stat().st_mtime_ns != stamp  # new rows: rebuilt


def test_large_summaries_bootstrap_a_patient_subsample(monkeypatch):
    from xray_score.evaluation import results

    monkeypatch.setattr(results, "BOOTSTRAP_MAX_ROWS", 100)
    groups = np.repeat(np.arange(300), 3)  # 900 rows, 3 per patient
    picked = results.bootstrap_sample(len(groups), groups, seed=0)
    assert 100 <= len(picked) <= 103  # about the cap
    kept = groups[picked]
    assert set(np.bincount(kept)[np.unique(kept)]) == {3}  # whole patients only


def test_native_lightgbm_predictions_equal_the_packages(baseline_bundle):
    import lightgbm as lgb

    from xray_score.classical.native import NativeBooster, load_booster

    path = baseline_bundle.file(baseline_bundle.meta["model_file"])
    native = load_booster(path)
    assert isinstance(native, NativeBooster)
    x = np.random.default_rng(0).random((50, native.n_features)).astype(np.float32)
    np.testing.assert_array_equal(native.predict(x),
                                  lgb.Booster(model_file=str(path)).predict(x, num_threads=1))
    with pytest.raises(ValueError, match="features"):
        native.predict(x[:, :3])


def test_without_lib_lightgbm_the_booster_loads_through_the_package(baseline_bundle,
                                                                    monkeypatch):
    import lightgbm as lgb

    from xray_score.classical import native

    monkeypatch.setattr(native, "_library", lambda: None)
    path = baseline_bundle.file(baseline_bundle.meta["model_file"])
    booster = native.load_booster(path)
    assert isinstance(booster, lgb.Booster)
    x = np.random.default_rng(1).random((20, booster.num_feature())).astype(np.float32)
    np.testing.assert_array_equal(booster.predict(x, num_threads=1),
                                  lgb.Booster(model_file=str(path)).predict(x, num_threads=1))


def test_chunk_task_refuses_a_bundle_that_is_not_the_callers(baseline_bundle, tmp_path):
    from xray_score.errors import BundleError

    task = ChunkTask(str(baseline_bundle.path), "0" * 12, timeout=None)
    with pytest.raises(BundleError, match="caller's"):
        task([str(p) for p in make_folder(tmp_path / "s", 1)])
