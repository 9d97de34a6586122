"""Bundles load only what they list and verify; CSV text cannot smuggle spreadsheet formulas."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import make_xray, read_rows, save_gray
from xray_score.cli import main
from xray_score.errors import BundleError, ExitCode
from xray_score.model.bundle import Bundle

LEGACY = Path(__file__).parent / "fixtures" / "legacy-0.1.0"


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def rewrite(bundle: Path, change) -> None:
    meta = json.loads((bundle / "bundle.json").read_text())
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("name", ["spare.tflite", "../outside.tflite"])
def test_cnn_bundle_refuses_a_network_file_it_does_not_list(tmp_path, name):
    bundle = tmp_path / "b"
    shutil.copytree(LEGACY / "cnn", bundle)
    shutil.copy(bundle / "model.tflite", bundle / "spare.tflite")
    shutil.copy(bundle / "model.tflite", tmp_path / "outside.tflite")
    rewrite(bundle, lambda m: m["cnn"]["tflite"].update(file=name))
    with pytest.raises(BundleError, match="not listed"):
        Bundle.load(bundle).predictor()


def test_baseline_bundle_refuses_an_unlisted_model_file(tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(LEGACY / "baseline", bundle)
    shutil.copy(bundle / "model.lgb.txt", bundle / "other.lgb.txt")
    rewrite(bundle, lambda m: m.update(model_file="other.lgb.txt"))
    with pytest.raises(BundleError, match="not listed"):
        Bundle.load(bundle).predictor()
    result = cli("batch", LEGACY / "images", "--model", bundle, "--out", tmp_path / "r.csv")
    assert result.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("name", ["model.lgb.txt", "domain.f32"])
def test_a_model_file_changed_after_verification_is_not_loaded(bundle_copy, name):
    """A bundle is verified when it is loaded; a model file swapped after that (between a
    worker's check and its load) is refused, not loaded: a model loads the bytes it checks."""
    bundle = Bundle.load(bundle_copy)
    before = bundle.predictor()  # the files as verified load
    target = bundle_copy / name
    target.write_bytes(target.read_bytes() + b"\n")
    with pytest.raises(BundleError, match=f"{name} has changed since the bundle was verified"):
        bundle.predictor()
    assert before is not None


FORMULAS = ["=SUM(A1).png", "+1-1.png", "-cmd.png", "@calc.png"]


def test_csv_text_cells_that_look_like_formulas_are_neutralised(baseline_bundle, tmp_path,
                                                                rng, monkeypatch):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in FORMULAS:
        save_gray(folder / name, make_xray(1, rng, size=64))
    (folder / "\tTab.png").write_bytes(b"")  # an error row whose path starts with a tab
    monkeypatch.chdir(folder)  # relative paths: the cell starts with the file name
    out = tmp_path / "r.csv"
    result = cli("batch", ".", "--model", baseline_bundle.path, "--out", out)
    assert result.exit_code == ExitCode.SOME_FAILED, result.output
    rows = read_rows(out)
    paths = sorted(r["path"] for r in rows)
    assert paths == sorted(["'" + n for n in FORMULAS] + ["'\tTab.png"])
    for row in rows:
        if row["status"] == "ok":
            float(row["p_pneumonia"]), float(row["threshold"])  # numbers stay numbers
    parquet = tmp_path / "r.parquet"
    assert cli("batch", ".", "--model", baseline_bundle.path, "--out", parquet, "--format",
               "parquet", "--no-report").exit_code == ExitCode.SOME_FAILED
    assert sorted(pd.read_parquet(parquet)["path"]) == sorted(FORMULAS + ["\tTab.png"])
    cmp = tmp_path / "c.csv"
    assert cli("compare", ".", "--baseline", baseline_bundle.path, "--cnn", LEGACY / "cnn",
               "--out", tmp_path / "c.html", "--csv", cmp).exit_code == ExitCode.SOME_FAILED
    assert all(p.startswith("'") for p in pd.read_csv(cmp, dtype=str)["path"])


def test_numbers_are_never_prefixed():
    from xray_score.io.text import csv_safe

    assert csv_safe("-0.25") == "-0.25" and csv_safe(-3) == -3 and csv_safe("+1e-3") == "+1e-3"
    assert csv_safe("=1+1") == "'=1+1" and csv_safe("\rx") == "'\rx" and csv_safe("ok") == "ok"
    assert os.sep not in csv_safe("@x")


def test_our_own_csv_reads_back_to_the_real_names(tmp_path):
    from xray_score.evaluation.results import load_results
    from xray_score.io.atomic import write_atomic

    rows = [{"path": name, "status": "ok", "p_pneumonia": "0.5"} for name in FORMULAS]
    write_atomic(tmp_path / "r.csv", ["path", "status", "p_pneumonia"], rows)
    assert list(load_results(tmp_path / "r.csv")["path"]) == FORMULAS
