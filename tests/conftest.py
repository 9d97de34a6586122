"""Shared fixtures: synthetic chest X-rays, labeled folders and one tiny trained baseline.

Every image is generated here (no network, no ../shared): a bright body with two dark lung
fields; pneumonia adds bright patchy opacities inside the lungs. Size, position, brightness and
noise are jittered so the classes differ by lung content, not by file properties.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

CLASSES = ("NORMAL", "PNEUMONIA")
TINY_OVERRIDES = {
    "input_size": 64,
    "model.n_estimators": 60,
    "model.learning_rate": 0.2,
    "model.min_data_in_leaf": 4,
    "model.num_leaves": 7,
    "training.early_stopping_rounds": 20,
    "training.threads": 1,
    "validation.fraction": 0.25,
}


def make_xray(label: int | str, rng: np.random.Generator, size: int | tuple[int, int] | None = None
              ) -> np.ndarray:
    """A synthetic chest-like gray uint8 image; ``label`` 1/"PNEUMONIA" adds lung opacities.

    ``size``: an int (square), ``(height, width)``, or None for a random 150-400 px shape.
    """
    pneumonia = label in (1, "PNEUMONIA", "pneumonia")
    if size is None:
        h, w = int(rng.integers(150, 401)), int(rng.integers(150, 401))
    elif isinstance(size, int):
        h = w = size
    else:
        h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    cy, cx = 0.5 + rng.uniform(-0.04, 0.04), 0.5 + rng.uniform(-0.04, 0.04)
    bg = rng.uniform(10, 40)
    body_level = rng.uniform(170, 215)
    img = np.full((h, w), bg, np.float32)
    body = ((xx - cx) / 0.45) ** 2 + ((yy - cy) / 0.48) ** 2 <= 1
    img[body] = body_level
    lung_level = body_level - rng.uniform(100, 130)
    lungs = np.zeros((h, w), bool)
    for side in (-1, 1):
        lx = cx + side * (0.17 + rng.uniform(-0.02, 0.02))
        ly = cy - 0.03 + rng.uniform(-0.03, 0.03)
        rx, ry = 0.12 + rng.uniform(-0.015, 0.015), 0.30 + rng.uniform(-0.03, 0.03)
        lungs |= ((xx - lx) / rx) ** 2 + ((yy - ly) / ry) ** 2 <= 1
    img[lungs] = lung_level
    # ribs: faint horizontal bands over the lungs, in both classes
    ribs = 12 * (np.sin(yy * np.pi * rng.uniform(14, 18)) > 0.6)
    img += ribs * lungs
    if pneumonia:
        idx = np.flatnonzero(lungs.ravel())
        opacity = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(5, 10))):
            k = idx[rng.integers(len(idx))]
            py, px = divmod(int(k), w)
            r = rng.uniform(0.04, 0.09) * min(h, w)
            blob = np.exp(-(((yy * h - py) ** 2 + (xx * w - px) ** 2) / (2 * r * r)))
            opacity = np.maximum(opacity, blob * rng.uniform(60, 100))
        texture = rng.normal(0, 18, (h, w)).astype(np.float32)
        texture = cv2.GaussianBlur(texture, (0, 0), 1.2)
        img += (opacity + texture * (opacity > 15)) * lungs
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 4, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def kermany_name(class_name: str, patient: int, index: int, rng: np.random.Generator) -> str:
    """A Kermany-style file stem for one image of one patient."""
    if class_name == "NORMAL":
        return f"IM-{patient:04d}-{index + 1:04d}"
    kind = "bacteria" if rng.random() < 0.6 else "virus"
    return f"person{patient}_{kind}_{patient * 10 + index}"


def write_labeled(root: Path, n_patients: int, seed: int, images_per_patient: tuple[int, int]
                  = (1, 4), fmt_cycle: tuple[str, ...] = ("jpeg", "png")) -> dict[str, str]:
    """Write ROOT/{NORMAL,PNEUMONIA}/ with Kermany names; returns {path: class name}."""
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    n = 0
    for label, class_name in enumerate(CLASSES):
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for patient in range(1, n_patients + 1):
            pid = patient + 100 * seed
            for index in range(int(rng.integers(images_per_patient[0],
                                                images_per_patient[1] + 1))):
                fmt = fmt_cycle[n % len(fmt_cycle)]
                n += 1
                path = folder / f"{kermany_name(class_name, pid, index, rng)}.{fmt}"
                save_gray(path, make_xray(label, rng))
                labels[str(path)] = class_name
    return labels


def save_gray(path: Path, gray: np.ndarray, **kwargs) -> Path:
    """Save a gray uint8 array with the format given by the suffix (JPEG quality 92)."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}[path.suffix.lower()]
    if fmt == "JPEG":
        kwargs.setdefault("quality", 92)
    Image.fromarray(gray).save(path, fmt, **kwargs)
    return path


@pytest.fixture(scope="session")
def labeled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labeled training folder ROOT/{NORMAL,PNEUMONIA}/ (JPEG and PNG, 150-400 px)."""
    root = tmp_path_factory.mktemp("labeled") / "train"
    write_labeled(root, n_patients=18, seed=1)
    return root


@pytest.fixture(scope="session")
def labeled_test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An independent labeled folder (other seed, other patients) to measure accuracy on."""
    root = tmp_path_factory.mktemp("labeled_test") / "test"
    write_labeled(root, n_patients=12, seed=2, images_per_patient=(1, 2))
    return root


@pytest.fixture(scope="session")
def tiny_spec() -> dict:
    from xray_score.model.spec import load_pipeline

    return load_pipeline("baseline", dict(TINY_OVERRIDES))


@pytest.fixture(scope="session")
def baseline_bundle(tmp_path_factory: pytest.TempPathFactory, labeled_dir: Path, tiny_spec):
    """A tiny baseline bundle trained once per session via the library (read-only for tests)."""
    from xray_score.model.training import train_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny-baseline"
    return train_bundle("baseline", labeled_dir, out, tiny_spec, n_jobs=2)


@pytest.fixture
def bundle_copy(baseline_bundle, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle that a test may tamper with."""
    import shutil

    dest = tmp_path / "bundle"
    shutil.copytree(baseline_bundle.path, dest)
    return dest


@pytest.fixture(autouse=True)
def _restore_xray_logging():
    """The CLI points the ``xray_score`` logger at stderr and stops propagation; undo that after
    each test so ``caplog`` keeps working in later tests."""
    import logging

    logger = logging.getLogger("xray_score")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def summary(result) -> dict:
    """The JSON summary line a command prints last on stdout."""
    import json

    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    assert lines, result.output
    return json.loads(lines[-1])


def read_rows(path: Path) -> list[dict[str, str]]:
    """A results CSV as dicts (every value a string, as written)."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def canonical(path: Path, size: int):
    """One file through the worker-side preprocessing ``batch`` runs (decode, resize): the
    :class:`FileResult`, or its typed :class:`ImageError` raised."""
    from xray_score.errors import ErrorKind, ImageError
    from xray_score.io.preprocess import Preprocessor

    result = Preprocessor(size=size)(str(path))
    if not result.ok:
        raise ImageError(ErrorKind(result.error_kind), result.error)
    return result
