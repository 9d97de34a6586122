"""``train --out``: an existing bundle is replaced, anything else the user has is never touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TINY_OVERRIDES
from xray_score.cli import main
from xray_score.errors import ExitCode

SET_ARGS = [arg for key, value in TINY_OVERRIDES.items() for arg in ("--set", f"{key}={value}")]


def train(data: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["train", "baseline", "--data", str(data), "--out",
                                     str(out), *SET_ARGS, *extra], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(labeled_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(labeled_dir, copy)
    return copy


def test_non_empty_folder_that_is_not_a_bundle_is_refused(data, tmp_path):
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "thesis.txt").write_text("four years of work\n")
    (out / "sub" / "notes.md").write_text("notes\n")
    before = snapshot(out)
    result = train(data, out)
    assert result.exit_code == ExitCode.USAGE
    assert snapshot(out) == before
    assert str(out) in result.stderr and "not a model bundle" in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("where", ["data", "inside", "above", "val"])
def test_training_data_and_its_relatives_are_refused(data, labeled_test_dir, tmp_path, where):
    val = tmp_path / "val"
    shutil.copytree(labeled_test_dir, val)
    out = {"data": data, "inside": data / "NORMAL" / "bundle", "above": tmp_path,
           "val": val}[where]
    before, before_val = snapshot(data), snapshot(val)
    result = train(data, out, "--val", str(val))
    assert result.exit_code == ExitCode.USAGE
    assert train(data, tmp_path / "fine", "--val", str(val)).exit_code == ExitCode.OK
    assert snapshot(data) == before and snapshot(val) == before_val
    assert not (data / "NORMAL" / "bundle").exists()


def test_a_plain_file_is_refused(data, tmp_path):
    out = tmp_path / "model.txt"
    out.write_text("keep me\n")
    assert train(data, out).exit_code == ExitCode.USAGE
    assert out.read_text() == "keep me\n"


def test_missing_or_empty_folder_is_used(data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "bundle"):
        assert train(data, out).exit_code == ExitCode.OK
        assert (out / "bundle.json").is_file()


def test_existing_bundle_is_replaced_and_nothing_is_left_beside_it(data, tmp_path):
    out = tmp_path / "models" / "b"
    assert train(data, out).exit_code == ExitCode.OK
    (out / "MODEL_CARD.md").write_text("card of the old model\n")
    first = json.loads((out / "bundle.json").read_text())
    assert train(data, out, "--set", "training.seed=1").exit_code == ExitCode.OK
    second = json.loads((out / "bundle.json").read_text())
    assert first["pipeline"]["training"]["seed"] == 0
    assert second["pipeline"]["training"]["seed"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "domain.f32", "model.lgb.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["b"]  # no old copy, no staging


def test_bundle_with_a_users_extra_file_is_refused(data, tmp_path):
    out = tmp_path / "b"
    assert train(data, out).exit_code == ExitCode.OK
    (out / "my-notes.txt").write_text("mine\n")
    before = snapshot(out)
    assert train(data, out).exit_code == ExitCode.USAGE
    assert snapshot(out) == before


def test_failed_training_leaves_no_staging_folder(data, tmp_path, monkeypatch, tiny_spec):
    from xray_score.classical.booster import BaselinePredictor
    from xray_score.model.training import train_bundle

    def broken_save(self, folder):
        (folder / "half-written").write_text("x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(BaselinePredictor, "save", broken_save)
    out = tmp_path / "models" / "b"
    with pytest.raises(RuntimeError, match="disk full"):
        train_bundle("baseline", data, out, tiny_spec, n_jobs=2)
    assert list((tmp_path / "models").iterdir()) == []
