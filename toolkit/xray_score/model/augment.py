"""Training augmentation against the framing shortcut, for every kind (numpy + OpenCV).

Normal training films are framed wide (neck, shoulders), pneumonia films tightly: a model can
learn the framing instead of the lungs. Each training image is shown re-framed at random, both
classes alike: an independent crop or zoom-out per axis (the visible fraction of each side
drawn from ``[1 - zoom_in, 1 + zoom_out]``, anywhere in the frame), a shift, an optional small
rotation, with reflected borders (never black: a black margin would be a new cue), then a
random gamma, contrast and brightness. Seeded by the caller's generator; TensorFlow-free.

Options (a pipeline's ``augmentation.framing`` and ``augmentation.intensity`` mappings):
framing: ``p`` (share of images re-framed, default 1), ``zoom_in`` (largest share of a side
cut away, default 0.45), ``zoom_out`` (largest share of a side added, default 0.15),
``shift`` (extra translation, share of the side, default 0.05), ``rotation_deg`` (default 0),
``border`` (``reflect`` or ``edge``). intensity: ``p`` (default 1), ``gamma`` (largest factor,
drawn log-uniform in [1/g, g], default 1.3), ``contrast`` (default 0.3), ``brightness`` (share
of 0..255, default 0.2).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from ..errors import UsageError

FRAMING_DEFAULTS = {"p": 1.0, "zoom_in": 0.45, "zoom_out": 0.15, "shift": 0.05,
                    "rotation_deg": 0.0, "border": "reflect"}
INTENSITY_DEFAULTS = {"p": 1.0, "gamma": 1.3, "contrast": 0.3, "brightness": 0.2}
_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "edge": cv2.BORDER_REPLICATE}


def check_options(framing: Any, intensity: Any) -> tuple[dict | None, dict | None]:
    """Validated option mappings (defaults filled in), or None for a part that is off."""
    out = []
    for name, given, defaults in (("framing", framing, FRAMING_DEFAULTS),
                                  ("intensity", intensity, INTENSITY_DEFAULTS)):
        if given in (None, False, {}):
            out.append(None)
            continue
        if given is True:
            given = {}
        if not isinstance(given, dict):
            raise UsageError(f"augmentation.{name} must be a mapping, not {given!r}")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise UsageError(f"unknown augmentation.{name} key(s) {unknown}; valid: "
                             f"{sorted(defaults)}")
        opts = {**defaults, **given}
        for key, value in opts.items():
            if key != "border" and not 0 <= float(value) <= (90 if key == "rotation_deg" else 3):
                raise UsageError(f"augmentation.{name}.{key} out of range: {value!r}")
        if name == "framing" and (opts["border"] not in _BORDERS or opts["zoom_in"] >= 0.9):
            raise UsageError("augmentation.framing: border is reflect|edge, zoom_in < 0.9")
        out.append(opts)
    return out[0], out[1]


def random_framing(img: np.ndarray, rng: np.random.Generator, opts: dict[str, Any]
                   ) -> np.ndarray:
    """One uint8 (S, S) image re-framed at random (see the module docstring)."""
    if rng.random() >= float(opts["p"]):
        return img
    size = img.shape[0]
    lo, hi = 1 - float(opts["zoom_in"]), 1 + float(opts["zoom_out"])
    shift = float(opts["shift"])
    fx, fy = rng.uniform(lo, hi, 2)  # visible share of each side
    # window start: anywhere the window fits (zoom in) or the image fits in it (zoom out)
    x0 = rng.uniform(min(0, 1 - fx), max(0, 1 - fx)) + rng.uniform(-shift, shift)
    y0 = rng.uniform(min(0, 1 - fy), max(0, 1 - fy)) + rng.uniform(-shift, shift)
    angle = math.radians(rng.uniform(-1, 1) * float(opts["rotation_deg"]))
    cos, sin = math.cos(angle), math.sin(angle)
    # output pixel (u, v) -> input (x, y): scale by the visible share, rotate, then offset
    m = np.array([[fx * cos, -fy * sin, 0.0], [fx * sin, fy * cos, 0.0]])
    centre = np.array([0.5 * size, 0.5 * size])
    m[:, 2] = (np.array([x0 + fx / 2, y0 + fy / 2]) * size
               - m[:, :2] @ centre)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=_BORDERS[opts["border"]])


def random_intensity(img: np.ndarray, rng: np.random.Generator, opts: dict[str, Any]
                     ) -> np.ndarray:
    """Random gamma, contrast (around the image mean) and brightness; uint8 out."""
    if rng.random() >= float(opts["p"]):
        return img
    g = math.exp(rng.uniform(-1, 1) * math.log(max(float(opts["gamma"]), 1.0)))
    x = (img.astype(np.float32) / 255.0) ** g
    c = 1 + rng.uniform(-1, 1) * float(opts["contrast"])
    x = (x - x.mean()) * c + x.mean() + rng.uniform(-1, 1) * float(opts["brightness"])
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def augment_batch(x: np.ndarray, rng: np.random.Generator, framing: dict | None,
                  intensity: dict | None) -> np.ndarray:
    """Both augmentations over a uint8 (B, S, S) batch (a new array)."""
    out = []
    for img in x:
        if framing is not None:
            img = random_framing(img, rng, framing)
        if intensity is not None:
            img = random_intensity(img, rng, intensity)
        out.append(img)
    return np.stack(out) if out else x.copy()
