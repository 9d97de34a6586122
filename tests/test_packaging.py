"""The shipped bundles travel with an installed package, not only with the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import make_xray, save_gray

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [p.parent for p in (ROOT / "models").glob("*/bundle.json")]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True)
    (found,) = out.glob("xray_score-*.whl")
    return found


def test_wheel_carries_shipped_bundles_and_pipelines(wheel):
    if not SHIPPED:
        pytest.skip("no shipped bundles in models/ yet")
    names = zipfile.ZipFile(wheel).namelist()
    for bundle in SHIPPED:
        for f in bundle.iterdir():
            assert any(n.endswith(f"data/share/xray-score/models/{bundle.name}/{f.name}")
                       for n in names), f"{bundle.name}/{f.name} missing from the wheel"
    assert any(n.endswith("data/share/xray-score/pipelines/baseline.yaml") for n in names)


def test_installed_package_finds_shipped_model_outside_checkout(wheel, tmp_path, rng):
    """A fresh prefix with only the wheel installed scores a folder with no --model."""
    if not (ROOT / "models" / "baseline" / "bundle.json").is_file():
        pytest.skip("no shipped baseline in models/ yet")
    prefix = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = prefix / "lib" / pyver / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(prefix / "bin" / "python"),
                    "install", "--no-deps", "-q", str(wheel)], check=True)
    # dependencies come from this environment, after the new prefix's own site-packages
    (target / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(3):
        save_gray(folder / f"scan{i}.png", make_xray(i % 2, rng))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XRAY_SCORE_HOME")}
    proc = subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "xray_score.cli", "-q", "batch", str(folder),
         "--out", "r.csv", "--no-report"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["scored"] == 3
    default = ROOT / "models" / ("cnn" if (ROOT / "models" / "cnn").is_dir() else "baseline")
    from xray_score.model.bundle import Bundle

    assert summary["model_id"] == Bundle.load(default).model_id  # the shipped default model
    located = subprocess.run(
        [str(prefix / "bin" / "python"), "-c",
         "import xray_score, xray_score.resources as r; print(xray_score.__file__); "
         "print(r.default_model('baseline'))"],
        cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert str(prefix) in located[0] and str(ROOT) not in located[0]
    assert str(prefix) in located[1], "shipped model must come from the installed prefix"
