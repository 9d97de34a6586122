"""Empty folders get a clear answer from every command; compare honours --timeout."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import hostile
from conftest import make_xray, read_rows, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode

LEGACY_CNN = Path(__file__).parent / "fixtures" / "legacy-0.1.0" / "cnn"


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def empty(tmp_path):
    folder = tmp_path / "empty"
    (folder / "NORMAL").mkdir(parents=True)
    (folder / "PNEUMONIA").mkdir()
    (folder / "notes.txt").write_text("no images here\n")
    return folder


def test_batch_on_an_empty_folder_exits_0_with_files_0_and_a_warning(empty, baseline_bundle,
                                                                      tmp_path):
    result = cli("batch", empty, "--model", baseline_bundle.path, "--out", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.OK, result.output
    assert summary(result)["files"] == 0
    assert "no images found" in result.stderr
    assert read_rows(tmp_path / "r.csv") == []


@pytest.mark.parametrize("command", ["evaluate", "compare", "embed"])
def test_other_commands_refuse_an_empty_folder_with_exit_2(empty, baseline_bundle, tmp_path,
                                                           command):
    args = {"evaluate": ["--model", baseline_bundle.path, "--out", tmp_path / "e.html"],
            "compare": ["--baseline", baseline_bundle.path, "--cnn", LEGACY_CNN,
                        "--out", tmp_path / "c.html"],
            "embed": ["--model", LEGACY_CNN, "--out", tmp_path / "e.parquet"]}
    result = cli(command, empty, *args[command])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"no images found in {empty}" in result.stderr
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("e.*")) and not list(tmp_path.glob("c.*"))


def test_compare_timeout_turns_a_hanging_file_into_a_timeout_row(baseline_bundle, tmp_path,
                                                                 monkeypatch, rng):
    from xray_score.commands import compare
    from xray_score.io.preprocess import MultiPreprocessor

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "hang.png", "b.png"):
        save_gray(folder / name, make_xray(1, rng, size=80))
    monkeypatch.setattr(compare, "MultiPreprocessor",  # hangs on hang*, as a slow file would
                        lambda parts: hostile.HostilePreprocessor(MultiPreprocessor(parts)))
    result = cli("compare", folder, "--baseline", baseline_bundle.path, "--cnn", LEGACY_CNN,
                 "--timeout", "2", "--out", tmp_path / "c.html", "--csv", tmp_path / "c.csv")
    assert result.exit_code == ExitCode.SOME_FAILED, result.output
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_rows(tmp_path / "c.csv")}
    errors = {k: v for k, v in rows["hang.png"].items() if k.startswith("error_")}
    assert set(errors.values()) == {"timeout"}
    assert rows["a.png"][f"status_{baseline_bundle.model_id}"] == "ok"
