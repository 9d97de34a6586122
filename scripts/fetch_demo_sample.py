"""Fetch a real, labeled sample of chest X-rays for the demo, honestly and verifiably.

The PyPI wheel ``pneumonia-model-package==0.3.0`` ships the 16 images of the official
validation split of Kermany et al. (2018, CC BY 4.0) flat in one folder. This script
downloads that wheel with pip (no install), checks the wheel's and every image's sha256,
and sorts the images into ``DEST/NORMAL`` and ``DEST/PNEUMONIA`` by file-name prefix
(``NORMAL2-IM-...`` vs ``person...``). Nothing of it is committed to this project.

    python scripts/fetch_demo_sample.py DEST
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "pneumonia_model_package-0.3.0-py3-none-any.whl"
WHEEL_SHA256 = "4bb1ee80366db5de818c7255e62878871b8ec545681193f429e2575b791d3536"
PREFIX = "pneumonia_model_package/datasets/pneumonia-data/val/"
CHECKSUMS = Path(__file__).with_name("demo-sample.sha256")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(dest: str) -> int:
    out = Path(dest)
    expected = dict(line.split()[::-1] for line in CHECKSUMS.read_text().splitlines() if line)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "pneumonia-model-package==0.3.0", "-d", tmp], check=True)
        wheel = Path(tmp) / WHEEL
        if sha256(wheel.read_bytes()) != WHEEL_SHA256:
            raise SystemExit(f"{WHEEL}: sha256 mismatch; refusing to use it")
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith(PREFIX) and n.endswith(".jpeg")]
            for name in names:
                base = Path(name).name
                data = zf.read(name)
                if expected.get(base) != sha256(data):
                    raise SystemExit(f"{base}: sha256 does not match {CHECKSUMS.name}")
                label = "NORMAL" if base.startswith("NORMAL") else "PNEUMONIA"
                (out / label).mkdir(parents=True, exist_ok=True)
                (out / label / base).write_bytes(data)
    if len(names) != len(expected):
        raise SystemExit(f"expected {len(expected)} images, found {len(names)}")
    print(f"{len(names)} verified images in {out}/NORMAL and {out}/PNEUMONIA")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1]))
