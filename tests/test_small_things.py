"""Small promises: special files, summary fields, exact intervals on small samples, installs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import make_xray, read_rows, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_skipped_with_a_log_line_and_does_not_hang(baseline_bundle, tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    save_gray(folder / "a.png", make_xray(0, rng, size=64))
    os.mkfifo(folder / "pipe.png")
    result = cli("batch", folder, "--model", baseline_bundle.path, "--out", tmp_path / "r.csv",
                 "--timeout", "20")
    assert result.exit_code == ExitCode.OK, result.output
    assert "pipe.png" in result.stderr and "not a regular file" in result.stderr
    assert [Path(r["path"]).name for r in read_rows(tmp_path / "r.csv")] == ["a.png"]


def test_batch_summary_names_each_count_and_rate_once(baseline_bundle, tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        save_gray(folder / f"s{i}.png", make_xray(i % 2, rng, size=64))
    out = tmp_path / "r.csv"
    s = summary(cli("batch", folder, "--model", baseline_bundle.path, "--out", out,
                    "--batch-size", "2"))
    assert "skipped" not in s and s["reused"] == 0 and s["scored"] == 4
    assert "images_per_second" not in s
    assert 0 < s["images_per_second_including_startup"] <= s["images_per_second_after_startup"]
    again = summary(cli("batch", folder, "--model", baseline_bundle.path, "--out", out))
    assert again["reused"] == 4 and again["images_per_second_after_startup"] is None


def test_small_samples_get_exact_intervals_and_a_warning(tmp_path):
    import pandas as pd

    from xray_score.evaluation.results import evaluate_results
    from xray_score.report.pages import write_evaluation_report

    y = ["NORMAL"] * 8 + ["PNEUMONIA"] * 8
    df = pd.DataFrame({"path": [f"x{i}.png" for i in range(16)], "status": "ok",
                       "p_pneumonia": [0.1] * 8 + [0.9] * 8, "threshold": 0.5,
                       "true_label": y})
    res = evaluate_results(df, n_boot=200)
    lo, hi = res["ci_threshold"]["sensitivity"]
    assert lo == pytest.approx(0.025 ** (1 / 8), abs=1e-3) and hi == 1.0  # Clopper-Pearson 8/8
    assert res["small_classes"] == {"NORMAL": 8, "PNEUMONIA": 8}
    html = write_evaluation_report(df, tmp_path / "r.html", bundle_meta={"kind": "baseline"},
                                   run_meta={}, n_boot=50).read_text()
    assert "fewer than 30" in html and "0.631" in html


def test_installs_without_setuptools_warnings_and_demo_without_test_extras(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "is absent" not in proc.stderr + proc.stdout
    demo = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True)
    assert "pip install" in demo.stdout and "[test]" not in demo.stdout


def test_an_unchanged_rerun_keeps_its_run_summary(baseline_bundle, tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        save_gray(folder / f"s{i}.png", make_xray(i % 2, rng, size=64))
    out = tmp_path / "r.csv"
    assert cli("batch", folder, "--model", baseline_bundle.path, "--out", out).exit_code == 0
    html = tmp_path / "r.html"
    first = html.read_bytes()
    stamp = html.stat().st_mtime_ns
    assert cli("batch", folder, "--model", baseline_bundle.path, "--out", out).exit_code == 0
    assert html.read_bytes() == first and html.stat().st_mtime_ns == stamp  # not rebuilt
    save_gray(folder / "new.png", make_xray(1, rng, size=64))
    assert cli("batch", folder, "--model", baseline_bundle.path, "--out", out).exit_code == 0
    assert html.read_bytes() != first  # new rows: rebuilt


def test_large_result_sets_bootstrap_a_patient_subsample(tmp_path):
    import numpy as np
    import pandas as pd

    from xray_score.evaluation.results import BOOTSTRAP_MAX_ROWS, evaluate_results
    from xray_score.report.pages import write_evaluation_report

    n = BOOTSTRAP_MAX_ROWS + 3000
    rng = np.random.default_rng(0)
    y = rng.random(n) < 0.6
    df = pd.DataFrame({"path": [f"person{i // 2}_x_{i}.png" for i in range(n)], "status": "ok",
                       "p_pneumonia": np.clip(y * 0.6 + rng.random(n) * 0.4, 0, 1),
                       "threshold": 0.5, "true_label": np.where(y, "PNEUMONIA", "NORMAL"),
                       "patient_id": [f"p{i // 2}" for i in range(n)]})
    res = evaluate_results(df, n_boot=50)
    assert BOOTSTRAP_MAX_ROWS <= res["bootstrap_rows"] <= BOOTSTRAP_MAX_ROWS + 2
    assert res["at_threshold"]["n"] == n  # point estimates use every row
    html = write_evaluation_report(df, tmp_path / "r.html", bundle_meta={"kind": "baseline"},
                                   run_meta={}, n_boot=50).read_text()
    assert "random subsample" in html
