"""Features of re-framed training copies, so the booster cannot lean on the framing.

Each training film (its canonical pixels) gives ``copies`` extra rows: the film re-framed and
re-lit at random (:mod:`xray_score.model.augment`), then the same HOG/LBP features scoring
uses. Seeded per film and copy, computed in worker processes a chunk at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model.augment import augment_batch, check_options

_CHUNK = 256


def augmentation_options(spec: dict[str, Any]) -> tuple[int, dict | None, dict | None]:
    """(copies, framing, intensity) from a baseline pipeline's ``augmentation`` section."""
    aug = spec.get("augmentation") or {}
    framing, intensity = check_options(aug.get("framing"), aug.get("intensity"))
    copies = int(aug.get("copies", 0))
    if copies < 0 or (copies and framing is None and intensity is None):
        raise ValueError("augmentation.copies needs framing or intensity options")
    return copies, framing, intensity


def _chunk_features(pixels: np.ndarray, start: int, extractor: Any, copies: int, seed: int,
                    framing: dict | None, intensity: dict | None) -> np.ndarray:
    images = []
    for offset, img in enumerate(pixels):
        images.append(img)
        for copy in range(copies):
            rng = np.random.default_rng([seed, start + offset, copy])
            images.append(augment_batch(img[None], rng, framing, intensity)[0])
    return extractor.transform_batch(np.stack(images))


def augmented_features(pixels: np.ndarray, y: np.ndarray, extractor: Any, spec: dict[str, Any],
                       n_jobs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Features of every film followed by its ``copies`` re-framed versions, and labels."""
    from joblib import Parallel, delayed  # training only: scoring workers never need it

    from ..batch.parallel import worker_backend

    copies, framing, intensity = augmentation_options(spec)
    seed = int((spec.get("training") or {}).get("seed", 0))
    parts = Parallel(n_jobs=n_jobs, backend=worker_backend())(  # workers die with us
        delayed(_chunk_features)(pixels[i:i + _CHUNK], i, extractor, copies, seed, framing,
                                 intensity) for i in range(0, len(pixels), _CHUNK))
    return np.concatenate(parts), np.repeat(np.asarray(y), 1 + copies)
