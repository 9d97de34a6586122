"""Result files of evaluate, compare and embed: any file name, written atomically."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import make_xray, save_gray
from xray_score.cli import main
from xray_score.errors import ExitCode

LEGACY_CNN = Path(__file__).parent / "fixtures" / "legacy-0.1.0" / "cnn"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="byte file names need Linux")


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """A labeled folder whose file names include invalid UTF-8 bytes."""
    rng = np.random.default_rng(5)
    for label in ("NORMAL", "PNEUMONIA"):
        folder = tmp_path / "odd" / label
        folder.mkdir(parents=True)
        for i in range(3):
            save_gray(folder / f"ok{i}.png", make_xray(label, rng, size=80))
        raw = os.path.join(os.fsencode(folder), b"bad-\xff\xfe.png")
        with open(raw, "wb") as fh:
            fh.write((folder / "ok0.png").read_bytes())
    return tmp_path / "odd"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_embed_writes_undecodable_names_as_escapes(odd_folder, tmp_path, suffix):
    out = tmp_path / f"emb{suffix}"
    result = cli("embed", odd_folder, "--model", LEGACY_CNN, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert len(table) == 8
    assert sum(p.endswith("bad-\\xff\\xfe.png") for p in table["path"]) == 2


def _existing(path: Path) -> Path:
    """An old results file at ``path`` and a hard link that shows what happens to its bytes."""
    path.write_text("old,results\n1,2\n")
    link = path.with_name(path.name + ".link")
    os.link(path, link)
    return link


def test_outputs_replace_old_files_by_rename_never_in_place(odd_folder, baseline_bundle,
                                                           tmp_path):
    targets = {"evaluate": tmp_path / "eval.csv", "compare": tmp_path / "cmp.csv",
               "embed": tmp_path / "emb.csv"}
    links = {name: _existing(path) for name, path in targets.items()}
    runs = {
        "evaluate": ("evaluate", odd_folder, "--model", baseline_bundle.path,
                     "--out", tmp_path / "eval.html", "--csv", targets["evaluate"]),
        "compare": ("compare", odd_folder, "--baseline", baseline_bundle.path,
                    "--cnn", LEGACY_CNN, "--out", tmp_path / "cmp.html",
                    "--csv", targets["compare"]),
        "embed": ("embed", odd_folder, "--model", LEGACY_CNN, "--out", targets["embed"]),
    }
    for name, args in runs.items():
        result = cli(*args)
        assert result.exit_code == ExitCode.OK, (name, result.output)
        assert links[name].read_text() == "old,results\n1,2\n", name  # old bytes untouched
        new = pd.read_csv(targets[name])
        assert len(new) == 8 and new["path"].str.contains("\\xff", regex=False).sum() == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_evaluate_keeps_the_old_results_file(odd_folder, baseline_bundle, tmp_path,
                                                    monkeypatch):
    from xray_score.batch.scorer import BatchScorer

    csv = tmp_path / "eval.csv"
    csv.write_text("old,results\n")
    calls = {"n": 0}
    real_rows = BatchScorer.rows

    def failing_rows(self, batch, labels=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the disk went away")
        return real_rows(self, batch, labels)

    monkeypatch.setattr(BatchScorer, "rows", failing_rows)
    result = cli("evaluate", odd_folder, "--model", baseline_bundle.path, "--out",
                 tmp_path / "eval.html", "--csv", csv)
    assert result.exit_code == ExitCode.INTERNAL
    assert csv.read_text() == "old,results\n"
    assert not list(tmp_path.glob(".*.tmp"))
