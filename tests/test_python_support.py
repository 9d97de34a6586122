"""The promised Python versions are the ones the code runs on (``python_requires``)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def promised_minimum() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    spec = cfg["options"]["python_requires"].strip()
    assert spec.startswith(">="), spec
    return spec[2:]


def test_code_needs_nothing_newer_than_the_promised_python():
    """vermin reads every module and names the newest stdlib API used (e.g. 3.11's
    ``hashlib.file_digest``, which made the first batch on 3.10 exit 70)."""
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    if vermin is None:
        pytest.fail("vermin is missing (it is in the test extras)")
    minimum = promised_minimum()
    proc = subprocess.run([vermin, "-q", f"-t={minimum}-", "--violations", "--no-tips",
                           "--eval-annotations", str(ROOT / "toolkit")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"code needs a newer Python than {minimum}:\n{proc.stdout}"


def test_readme_promises_the_same_minimum():
    assert f"Python ≥ {promised_minimum()}" in (ROOT / "README.md").read_text()
