"""Failures map to the right exit code and the right retry policy."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import make_xray, read_rows, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def folder_of(tmp_path, rng, n=3):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        save_gray(folder / f"s{i}.png", make_xray(i % 2, rng, size=80))
    return folder


def test_a_file_vanishing_mid_run_is_an_internal_error_not_a_usage_error(
        baseline_bundle, tmp_path, monkeypatch, rng):
    from xray_score.batch import job

    folder = folder_of(tmp_path, rng)

    def lost(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone"))

    monkeypatch.setattr(job, "write_atomic", lost)
    result = cli("batch", folder, "--model", baseline_bundle.path, "--out", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.INTERNAL
    assert summary(result)["exit_code"] == ExitCode.INTERNAL
    assert cli("batch", tmp_path / "absent", "--model",
               baseline_bundle.path).exit_code == ExitCode.USAGE


def test_out_of_memory_in_the_model_is_retried_by_the_next_run(baseline_bundle, tmp_path,
                                                              monkeypatch, rng):
    from xray_score.classical.booster import BaselinePredictor

    folder = folder_of(tmp_path, rng)
    out = tmp_path / "r.csv"
    real = BaselinePredictor.predict_raw
    monkeypatch.setattr(BaselinePredictor, "predict_raw",
                        lambda self, batch: (_ for _ in ()).throw(MemoryError()))
    # the model runs where the files are decoded; --jobs 1 --timeout 0 is this process
    in_process = ("--jobs", 1, "--timeout", 0)
    first = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, *in_process)
    assert first.exit_code == ExitCode.SOME_FAILED
    assert {r["error_kind"] for r in read_rows(out)} == {"out_of_memory"}
    monkeypatch.setattr(BaselinePredictor, "predict_raw", real)
    second = cli("batch", folder, "--model", baseline_bundle.path, "--out", out, *in_process)
    assert second.exit_code == ExitCode.OK, second.output
    assert summary(second)["scored"] == 3
    assert {r["status"] for r in read_rows(out)} == {"ok"}
