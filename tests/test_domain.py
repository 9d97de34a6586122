"""The out-of-domain flag: photographs, documents and blank or inverted films are far from what
a model was trained on; chest films, re-framed or not, are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from conftest import read_rows, save_gray, summary
from xray_score.cli import main
from xray_score.errors import ExitCode
from xray_score.model.domain import DomainCheck, fit_domain

LEGACY = Path(__file__).parent / "fixtures" / "legacy-0.1.0"


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def not_xrays(folder: Path, rng: np.random.Generator) -> list[str]:
    """Generated images that are no chest film: noise, text, colour scenes, UI, blank, inverted."""
    folder.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / "noise.png")
    page = Image.new("L", (300, 400), 255)
    draw = ImageDraw.Draw(page)
    for i in range(24):
        draw.text((12, 10 + 16 * i), f"Invoice line {i}: 3 x item {i * 7} = {i * 21} EUR", fill=0)
    page.save(folder / "document.png")
    yy, xx = np.mgrid[0:240, 0:320]
    scene = np.stack([xx * 255 // 320, yy * 255 // 240, np.full_like(xx, 90)], -1).astype(np.uint8)
    photo = Image.fromarray(scene)
    ImageDraw.Draw(photo).ellipse((100, 60, 220, 180), fill=(250, 200, 30))
    photo.save(folder / "photo.jpeg", quality=90)
    ui = Image.new("RGB", (320, 200), (245, 245, 245))
    ImageDraw.Draw(ui).rectangle((0, 0, 320, 28), fill=(40, 80, 160))
    for i in range(5):
        ImageDraw.Draw(ui).rectangle((20, 40 + 30 * i, 300, 60 + 30 * i), outline=(120,) * 3)
    ui.save(folder / "screenshot.png")
    save_gray(folder / "blank.png", np.full((200, 200), 128, np.uint8))
    # (inverted films are checked on real films, benchmarks/domain_check.py: this generator's
    # films are too simple for their inversion to leave the tiny test bundle's domain)
    return ["noise.png", "document.png", "photo.jpeg", "screenshot.png", "blank.png"]


def test_domain_model_round_trip_and_cut_off():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (400, 20)) @ rng.normal(0, 1, (20, 50))
    val = rng.normal(0, 1, (300, 20)) @ rng.normal(0, 1, (20, 50))
    model = fit_domain(ref, ref[:300])
    assert (model.score(ref[:300]) <= 1).mean() == pytest.approx(0.99, abs=0.01)
    far = ref[:10] + 40.0  # the same shape, moved far away
    assert (model.score(far) > 1).all()
    assert val.shape[1] == model.blocks[0][3].mean.size


def test_rows_flag_images_that_are_no_chest_film(baseline_bundle, labeled_test_dir, tmp_path,
                                                 rng):
    assert baseline_bundle.meta["domain"]["file"] in baseline_bundle.meta["files"]
    out = tmp_path / "films.csv"
    result = cli("batch", labeled_test_dir, "--model", baseline_bundle.path, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    rows = read_rows(out)
    share = np.mean([r["in_domain"] == "true" for r in rows])
    assert share >= 0.95, share  # other generated films, other patients: in domain
    assert all(float(r["domain_score"]) >= 0 for r in rows)
    odd = tmp_path / "odd"
    names = not_xrays(odd, rng)
    result = cli("batch", odd, "--model", baseline_bundle.path, "--out", tmp_path / "odd.csv")
    assert result.exit_code == ExitCode.OK  # still scored: a flag, not an error
    flags = {Path(r["path"]).name: r for r in read_rows(tmp_path / "odd.csv")}
    assert {n: flags[n]["in_domain"] for n in names} == dict.fromkeys(names, "false")
    assert {flags[n]["status"] for n in names} == {"ok"}
    s = summary(result)
    assert s["out_of_domain"] == len(names) and s["out_of_domain_rows"] == len(names)
    html = (tmp_path / "odd.html").read_text()
    assert "Out of domain" in html and "document.png" in html


def test_bundles_without_domain_statistics_score_as_before(tmp_path):
    out = tmp_path / "r.csv"
    assert cli("batch", LEGACY / "images", "--model", LEGACY / "cnn", "--out",
               out).exit_code == ExitCode.OK
    rows = read_rows(out)
    assert "in_domain" not in rows[0]  # no column: the bundle has no reference statistics
    assert DomainCheck.load(type("B", (), {"meta": {}})()) is None
