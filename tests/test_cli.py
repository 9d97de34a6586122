"""The command line end to end: train, batch, exit codes and the results CSV."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import TINY_OVERRIDES, make_xray, read_rows, save_gray, summary
from xray_score import __version__
from xray_score.cli import main
from xray_score.errors import ExitCode

SET_ARGS = [arg for key, value in TINY_OVERRIDES.items() for arg in ("--set", f"{key}={value}")]


def cli(*args: str, cwd: Path | None = None):
    """Run the CLI in-process; returns the click Result."""
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    finally:
        os.chdir(old)




def good_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_gray(folder / f"img{i:02d}.{'png' if i % 2 else 'jpeg'}",
                      make_xray(i % 2, rng)) for i in range(n)]


def broken_files(folder: Path) -> dict[str, str]:
    """Files that must each give an error row; returns {name: error_kind}."""
    rng = np.random.default_rng(9)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    good = io.BytesIO()
    from PIL import Image

    Image.fromarray(make_xray(1, rng, size=200)).save(good, "JPEG")
    (folder / "cut.jpeg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (folder / "noise.png").write_bytes(rng.bytes(3000))
    (folder / "letter.jpeg").write_text("Dear radiologist, this is not an image.\n")
    return {"empty.png": "empty", "cut.jpeg": "truncated", "noise.png": "not_image",
            "letter.jpeg": "not_image"}


def junk_files(folder: Path) -> None:
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "notes.txt").write_text("patient list\n")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._img00.jpeg").write_bytes(b"\x00\x05\x16\x07")


# ----------------------------------------------------------------------------- basics
def test_version_in_process():
    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_missing_folder_is_usage_error(baseline_bundle, tmp_path):
    result = cli("batch", tmp_path / "nowhere", "--model", baseline_bundle.path)
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("damage", ["missing", "tampered", "pickle"])
def test_broken_bundle_is_usage_error(bundle_copy, tmp_path, damage):
    folder = tmp_path / "in"
    good_images(folder, 2)
    if damage == "missing":
        (bundle_copy / "bundle.json").unlink()
    elif damage == "tampered":
        model = bundle_copy / "model.lgb.txt"
        model.write_text(model.read_text() + "\n")
    else:
        (bundle_copy / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    out = tmp_path / "out.csv"
    result = cli("batch", folder, "--model", bundle_copy, "--out", out)
    assert result.exit_code == ExitCode.USAGE
    assert not out.exists()


# ----------------------------------------------------------------------------- batch
def test_mixed_folder_exit_10_and_rows(baseline_bundle, tmp_path):
    folder = tmp_path / "mixed"
    goods = good_images(folder, 5)
    expected_errors = broken_files(folder)
    junk_files(folder)
    out = tmp_path / "out.csv"
    result = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, "--jobs", "2")
    assert result.exit_code == ExitCode.SOME_FAILED, result.output
    rows = read_rows(out)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(rows) == len(by_name) == len(goods) + len(expected_errors)
    for path in goods:
        row = by_name[path.name]
        assert row["status"] == "ok" and row["error_kind"] == ""
        assert row["predicted_label"] in ("NORMAL", "PNEUMONIA")
        p, thr = float(row["p_pneumonia"]), float(row["threshold"])
        assert (row["predicted_label"] == "PNEUMONIA") == (p >= thr)
        assert len(row["sha256"]) == 64 and int(row["width"]) > 0
    for name, kind in expected_errors.items():
        assert by_name[name]["status"] == "error"
        assert by_name[name]["error_kind"] == kind, by_name[name]
        assert by_name[name]["p_pneumonia"] == ""
    assert {r["model_id"] for r in rows} == {baseline_bundle.model_id}
    s = summary(result)
    assert (s["scored"], s["errors"]) == (len(goods), len(expected_errors))
    assert "true_label" not in rows[0]


def test_all_good_folder_exit_0(baseline_bundle, tmp_path):
    folder = tmp_path / "good"
    good_images(folder, 3)
    junk_files(folder)
    out = tmp_path / "out.csv"
    result = cli("batch", folder, "--model", baseline_bundle.path, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    rows = read_rows(out)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}


def test_single_file_argument(baseline_bundle, tmp_path):
    (path,) = good_images(tmp_path / "one", 1)
    out = tmp_path / "out.csv"
    assert cli("batch", path, "--model", baseline_bundle.path, "--out", out).exit_code == 0
    assert [Path(r["path"]).name for r in read_rows(out)] == [path.name]


@pytest.mark.skipif(sys.platform != "linux", reason="arbitrary bytes in names need Linux")
def test_odd_file_names_round_trip_through_csv(baseline_bundle, tmp_path):
    folder = tmp_path / "odd"
    rng = np.random.default_rng(3)
    folder.mkdir()
    names = ["a,b.png", 'say "cheese".png', "two\nlines.png", "tab\there.png", "ünï çødé.png",
             "semi;colon 'q'.png"]
    for name in names:
        save_gray(folder / name, make_xray(0, rng, size=60))
    raw = os.path.join(os.fsencode(folder), b"latin1-\xe9\xff.png")
    with open(raw, "wb") as fh:
        fh.write((folder / names[0]).read_bytes())
    out = tmp_path / "out.csv"
    result = cli("batch", folder, "--model", baseline_bundle.path, "--out", out)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) == len(names) + 1
    assert set(df["status"]) == {"ok"}
    shown = {Path(p).name for p in df["path"]}
    assert set(names) <= shown
    assert "latin1-\\xe9\\xff.png" in shown  # undecodable bytes shown as escapes
    assert len(read_rows(out)) == len(names) + 1  # the csv module agrees


def test_default_out_under_results_dir_never_overwrites(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    good_images(folder, 2)
    work = tmp_path / "cwd"
    work.mkdir()
    first = cli("batch", folder, "--model", baseline_bundle.path, cwd=work)
    second = cli("batch", folder, "--model", baseline_bundle.path, cwd=work)
    assert first.exit_code == second.exit_code == 0
    a, b = Path(summary(first)["out"]), Path(summary(second)["out"])
    assert a != b
    results = work / "xray-score-results"
    made = sorted(results.glob("*.csv"))
    assert len(made) == 2
    for p in made:
        assert p.name.startswith(f"scans-{baseline_bundle.model_id}-")
        assert len(read_rows(p)) == 2


def test_continue_skips_already_scored(baseline_bundle, tmp_path):
    folder = tmp_path / "grow"
    good_images(folder, 3)
    (folder / "empty.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    first = cli("batch", folder, "--model", baseline_bundle.path, "--out", out)
    assert first.exit_code == ExitCode.SOME_FAILED
    rng = np.random.default_rng(11)
    save_gray(folder / "new.png", make_xray(1, rng, size=100))
    second = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, "--continue")
    assert second.exit_code == ExitCode.SOME_FAILED  # the empty file's error row is kept
    s = summary(second)  # the ledger keeps deterministic errors (empty) for unchanged content
    assert s["reused"] == 4 and s["scored"] == 1 and s["errors"] == 0
    rows = read_rows(out)
    ok = [Path(r["path"]).name for r in rows if r["status"] == "ok"]
    assert sorted(ok) == ["img00.jpeg", "img01.png", "img02.jpeg", "new.png"]  # once each
    lines = out.read_text(encoding="utf-8").splitlines()  # rewritten whole: one header
    assert lines.count(",".join(rows[0])) == 1 and len(lines) == 1 + len(rows) == 6
    assert {r["scored_in_run"] for r in rows if r["path"].endswith("new.png")} == {"2"}
    third = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, "--continue")
    assert summary(third)["scored"] == 0


def test_continue_needs_out(baseline_bundle, tmp_path):
    folder = tmp_path / "x"
    good_images(folder, 1)
    result = cli("batch", folder, "--model", baseline_bundle.path, "--continue")
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.slow
def test_labeled_folder_true_label_and_baseline_learns(baseline_bundle, labeled_test_dir,
                                                       tmp_path):
    out = tmp_path / "labeled.csv"
    result = cli("batch", labeled_test_dir, "--model", baseline_bundle.path, "--out", out)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert "true_label" in df.columns
    expected = df["path"].map(lambda p: Path(p).parent.name)
    assert (df["true_label"] == expected).all()
    assert set(df["true_label"]) == {"NORMAL", "PNEUMONIA"}
    accuracy = (df["predicted_label"] == df["true_label"]).mean()
    assert accuracy > 0.85, f"the tiny baseline only reached accuracy {accuracy:.2f}"


# ----------------------------------------------------------------------------- subprocess
def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "xray_score.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_version_subprocess(tmp_path):
    proc = run("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert __version__ in proc.stdout


@pytest.mark.parametrize("other_thread", [False, True])
def test_the_console_command_exits_with_its_code_after_exit_functions(tmp_path, other_thread):
    """``xray-score`` ends its process without tearing the interpreter down, but only after
    its exit functions ran and its output was flushed; with another thread alive it exits the
    usual way. Either way the exit code is the command's."""
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, pathlib, sys, threading, time\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        + ("threading.Thread(target=time.sleep, args=(0.2,)).start()\n" if other_thread else "")
        + "from xray_score.cli import run\n"
        "sys.argv = ['xray-score', 'batch', 'no-such-folder', '--no-report']\n"
        "run()\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["exit_code"] == ExitCode.USAGE
    assert "no such folder" in proc.stderr
    assert marker.read_text() == "yes"


@pytest.mark.slow
def test_train_then_batch_as_a_real_process(labeled_dir, tmp_path):
    bundle = tmp_path / "models" / "tiny"
    proc = run("train", "baseline", "--data", labeled_dir, "--out", bundle, *SET_ARGS,
               "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trained = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (bundle / "bundle.json").is_file()
    assert trained["validation"]["roc_auc"] > 0.8
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["input_size"] == 64 and meta["pipeline"]["model"]["n_estimators"] == 60

    folder = tmp_path / "mixed"
    goods = good_images(folder, 4, seed=5)
    errors = broken_files(folder)
    junk_files(folder)
    proc = run("batch", folder, "--model", bundle, "--out", tmp_path / "r.csv", cwd=tmp_path)
    assert proc.returncode == ExitCode.SOME_FAILED, proc.stderr
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "r.csv")}
    assert set(rows) == {p.name for p in goods} | set(errors)
    assert {rows[p.name]["status"] for p in goods} == {"ok"}
    assert {n: rows[n]["error_kind"] for n in errors} == errors

    for name in errors:
        (folder / name).unlink()
    shutil.rmtree(folder / "__MACOSX")
    proc = run("batch", folder, "--model", bundle, "--out", tmp_path / "r2.csv", cwd=tmp_path)
    assert proc.returncode == ExitCode.OK, proc.stderr

    proc = run("batch", tmp_path / "absent", "--model", bundle, cwd=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    (bundle / "bundle.json").write_text("{}")
    proc = run("batch", folder, "--model", bundle, cwd=tmp_path)
    assert proc.returncode == ExitCode.USAGE
    assert "Traceback" not in proc.stderr


def test_bad_override_and_unlabeled_training_folder_exit_2(tmp_path):
    plain = tmp_path / "plain"
    good_images(plain, 2)
    result = cli("train", "baseline", "--data", plain, "--out", tmp_path / "b")
    assert result.exit_code == ExitCode.USAGE
    result = cli("train", "baseline", "--data", plain, "--out", tmp_path / "b", "--set", "oops")
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.skipif(sys.platform != "linux", reason="arbitrary bytes in names need Linux")
def test_continue_recognises_odd_file_names(baseline_bundle, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for name in ["a,b.png", "two\nlines.png", 'q"uote.png']:
        save_gray(folder / name, make_xray(1, rng, size=60))
    with open(os.path.join(os.fsencode(folder), b"bad-\xff.png"), "wb") as fh:
        fh.write((folder / "a,b.png").read_bytes())
    out = tmp_path / "out.csv"
    assert cli("batch", folder, "--model", baseline_bundle.path, "--out", out).exit_code == 0
    again = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, "--continue")
    assert again.exit_code == 0
    assert summary(again)["reused"] == 4 and summary(again)["scored"] == 0
    assert {r["scored_in_run"] for r in read_rows(out)} == {"1"}  # nothing scored twice
