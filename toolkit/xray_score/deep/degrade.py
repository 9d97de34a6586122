"""Image-quality augmentation for CNN training: random blur or sharpening, JPEG re-compression.

The shipped 224 px training copies are blurrier and more compressed (JPEG quality 75) than the
full-resolution originals users score, and pneumonia and normal originals differ in JPEG
quality. A network trained on the copies alone learns some of that as evidence: on the same
images, a model trained without this augmentation gave pneumonia originals a median logit 2.3
lower than their copies. Blurring, sharpening and re-compressing training images at random
teaches it that sharpness and compression carry no label (sharpening reaches towards the crisper
originals, which blur alone cannot). TensorFlow-free (numpy + OpenCV), seeded by the caller's rng.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..errors import UsageError

KEYS = ("blur", "sharpen", "jpeg_quality", "degrade_p")


def check_options(aug: dict[str, Any]) -> None:
    """Validate the ``blur`` / ``jpeg_quality`` / ``degrade_p`` augmentation options."""
    blur = aug.get("blur")
    if blur is not None and not 0 <= float(blur) <= 5:
        raise UsageError(f"augmentation.blur is a largest Gaussian sigma in 0..5, not {blur!r}")
    sharpen = aug.get("sharpen")
    if sharpen is not None and not 0 <= float(sharpen) <= 5:
        raise UsageError(f"augmentation.sharpen is a largest unsharp-mask amount in 0..5, "
                         f"not {sharpen!r}")
    quality = aug.get("jpeg_quality")
    well_formed = isinstance(quality, (list, tuple)) and len(quality) == 2 \
        and 5 <= int(quality[0]) <= int(quality[1]) <= 100
    if quality is not None and not well_formed:
        raise UsageError(f"augmentation.jpeg_quality is [low, high] within 5..100, not {quality!r}")
    p = aug.get("degrade_p", 0.5)
    if not 0 <= float(p) <= 1:
        raise UsageError(f"augmentation.degrade_p is a probability, not {p!r}")


def wanted(aug: dict[str, Any]) -> bool:
    return bool(aug.get("blur")) or bool(aug.get("sharpen")) \
        or aug.get("jpeg_quality") is not None


def degrade(img: np.ndarray, rng: np.random.Generator, blur: float = 0.0,
            jpeg_quality: tuple[int, int] | None = None, p: float = 0.5,
            sharpen: float = 0.0) -> np.ndarray:
    """One uint8 (S, S) image. With probability ``p`` change its sharpness: Gaussian blur with
    sigma ~ U(0.2, ``blur``) or unsharp masking (sigma 1) with amount ~ U(0, ``sharpen``), one
    of the two at random when both are on; then, with probability ``p``, JPEG re-compression at
    quality ~ U[low, high]."""
    out = img
    kinds = [k for k, on in (("blur", blur), ("sharpen", sharpen)) if on]
    if kinds and rng.random() < p:
        kind = kinds[0] if len(kinds) == 1 else kinds[int(rng.integers(2))]
        if kind == "blur":
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(min(0.2, blur), blur)))
        else:
            amount = float(rng.uniform(0.0, sharpen))
            soft = cv2.GaussianBlur(out, (0, 0), 1.0)
            out = cv2.addWeighted(out, 1.0 + amount, soft, -amount, 0)  # saturates to 0..255
    if jpeg_quality is not None and rng.random() < p:
        quality = int(rng.integers(int(jpeg_quality[0]), int(jpeg_quality[1]) + 1))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def degrade_batch(x: np.ndarray, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """``degrade`` over a uint8 (B, S, S) batch (a new array; ``x`` is not modified)."""
    quality = aug.get("jpeg_quality")
    return np.stack([degrade(img, rng, float(aug.get("blur") or 0.0),
                             tuple(quality) if quality is not None else None,
                             float(aug.get("degrade_p", 0.5)),
                             float(aug.get("sharpen") or 0.0)) for img in x])
