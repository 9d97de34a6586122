"""--num-parts K --part-id I: every file in exactly one shard; shards share one ledger."""

from __future__ import annotations

from pathlib import Path

from test_ledger import batch, make_folder, read_rows, summary
from xray_score.batch.plan import select_part, shard_of
from xray_score.errors import ExitCode


def test_shard_assignment_is_a_stable_partition(tmp_path):
    root = tmp_path / "root"
    paths = [str(root / d / f"f{i}.png") for d in ("a", "b", "c") for i in range(200)]
    parts = [select_part(paths, root, 3, i) for i in range(3)]
    assert sorted(p for part in parts for p in part) == sorted(paths)
    assert all(150 <= len(part) <= 250 for part in parts)
    moved = tmp_path / "elsewhere"  # relative paths decide: the same split in another place
    assert shard_of(str(moved / "a" / "f7.png"), moved, 3) == shard_of(paths[7], root, 3)


def test_shards_cover_every_file_once_and_share_the_ledger(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 9)
    ledger = tmp_path / "shared.sqlite"
    seen: list[str] = []
    for part in range(3):
        out = tmp_path / f"part{part}.csv"
        result = batch(folder, baseline_bundle, out, "--ledger", ledger, "--num-parts", "3",
                       "--part-id", str(part))
        assert result.exit_code == 0, result.output
        assert summary(result)["part"] == f"{part}/3"
        seen += [r["path"] for r in read_rows(out)]
    assert sorted(seen) == sorted(str(p) for p in folder.iterdir())
    whole = batch(folder, baseline_bundle, tmp_path / "all.csv", "--ledger", ledger)
    s = summary(whole)
    assert (s["files"], s["scored"], s["reused"]) == (9, 0, 9)  # the merge is a no-op re-run
    assert len(read_rows(tmp_path / "all.csv")) == 9


def test_shard_options_are_checked(baseline_bundle, tmp_path):
    folder = tmp_path / "scans"
    make_folder(folder, 1)
    out = tmp_path / "r.csv"
    assert batch(folder, baseline_bundle, out, "--num-parts", "2").exit_code == ExitCode.USAGE
    bad = batch(folder, baseline_bundle, out, "--ledger", tmp_path / "l.sqlite",
                "--num-parts", "2", "--part-id", "2")
    assert bad.exit_code == ExitCode.USAGE
    assert Path(out).exists() is False
