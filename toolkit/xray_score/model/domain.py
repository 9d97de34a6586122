"""How far an input is from what a model was trained on, in the model's own representation.

Every row gets a ``domain_score``: 1.0 is the cut-off (99 % of validation films, as they are and
re-framed, score at or below it); above it the row says ``in_domain: false``. The image is still
scored (status ``ok``): the flag says the model is outside what it knows (a photograph, a
document, a blank or inverted film), not that the file is broken.

The representation is what the model computes anyway (the CNN's embedding, the baseline's
HOG/LBP features). Reference statistics come from training and calibration films: the mean,
each feature's spread (features are standardised, so each counts alike), the top ``k``
principal directions with their spreads. The distance adds the Mahalanobis distance within the
principal subspace to the squared residual outside it, each relative to its median on the
validation films, so inputs that leave the subspace count too. Stored as a little-endian
float32 file (data only) plus numbers in ``bundle.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError

DOMAIN_FILE = "domain.f32"
DOMAIN_COLUMNS = ["domain_score", "in_domain"]
QUANTILE = 0.99
COMPONENTS = 32


@dataclass(frozen=True)
class DomainModel:
    """One block of the representation: its reference statistics and cut-off."""

    mean: np.ndarray  # (D,)
    spread: np.ndarray  # (D,) per-feature standard deviation: every feature counts alike
    components: np.ndarray  # (k, D), orthonormal rows
    scales: np.ndarray  # (k,) standard deviation along each component
    inside_scale: float  # typical (median) validation distance within the components
    residual_scale: float  # typical (median) validation squared residual outside them
    cutoff: float  # raw distance at the validation quantile

    def _terms(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean squared Mahalanobis distance in the subspace, squared residual outside)."""
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        x = (x - self.mean) / self.spread
        proj = x @ self.components.T
        residual = np.maximum((x * x).sum(axis=1) - (proj * proj).sum(axis=1), 0.0)
        return ((proj / self.scales) ** 2).mean(axis=1), residual

    def raw_distance(self, features: np.ndarray) -> np.ndarray:
        inside, residual = self._terms(features)
        return inside / self.inside_scale + residual / self.residual_scale

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance relative to the cut-off: <= 1 in domain."""
        return self.raw_distance(features) / self.cutoff

    def arrays(self) -> list[np.ndarray]:
        return [self.mean, self.spread, self.scales, self.components.ravel()]

    def numbers(self) -> dict[str, Any]:
        return {"dim": int(self.mean.size), "k": int(self.scales.size),
                "inside_scale": self.inside_scale, "residual_scale": self.residual_scale,
                "cutoff": self.cutoff}

    @classmethod
    def from_arrays(cls, blob: np.ndarray, numbers: dict[str, Any]) -> DomainModel:
        dim, k = int(numbers["dim"]), int(numbers["k"])
        return cls(blob[:dim], blob[dim:2 * dim], blob[2 * dim + k:].reshape(k, dim),
                   blob[2 * dim:2 * dim + k], float(numbers["inside_scale"]),
                   float(numbers["residual_scale"]), float(numbers["cutoff"]))


@dataclass(frozen=True)
class DomainCheck:
    """One :class:`DomainModel` per block of the representation (the baseline: HOG, LBP and
    intensity histogram; a CNN: its embedding); an input's score is its largest block score,
    so a shift confined to a small block (an inverted film's histogram) is not averaged away."""

    blocks: tuple[tuple[str, int, int, DomainModel], ...]

    def score(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        return np.max([m.score(x[:, a:b]) for _, a, b, m in self.blocks], axis=0)

    def save(self, folder: Path) -> dict[str, Any]:
        """Write the arrays (float32) and return the numbers bundle.json keeps."""
        blob = np.concatenate([arr for *_, m in self.blocks for arr in m.arrays()])
        (folder / DOMAIN_FILE).write_bytes(blob.astype("<f4").tobytes())
        return {"file": DOMAIN_FILE, "quantile": QUANTILE,
                "method": "standardised PCA Mahalanobis + residual, per block, max",
                "blocks": [{"name": n, "start": a, "stop": b, **m.numbers()}
                           for n, a, b, m in self.blocks]}

    @classmethod
    def load(cls, bundle: Any) -> DomainCheck | None:
        """The bundle's domain check, or None for bundles trained without one."""
        meta = bundle.meta.get("domain")
        if not meta or "file" not in meta:
            return None
        blob = np.frombuffer(bundle.read(meta["file"]), dtype="<f4")
        blob = blob.astype(np.float64)
        blocks, at = [], 0
        for entry in meta["blocks"]:
            dim, k = int(entry["dim"]), int(entry["k"])
            size = 2 * dim + k + k * dim
            blocks.append((entry["name"], int(entry["start"]), int(entry["stop"]),
                           DomainModel.from_arrays(blob[at:at + size], entry)))
            at += size
        if at != blob.size:
            raise BundleError(f"{bundle.path}: {meta['file']} holds {blob.size} numbers, "
                              f"bundle.json describes {at}")
        return cls(tuple(blocks))


def fit_block(reference: np.ndarray, validation: np.ndarray,
              k: int = COMPONENTS) -> DomainModel:
    """Reference statistics from ``reference`` features; the scales of both terms and the
    cut-off from ``validation`` features (out of sample: the residual of the reference itself
    is optimistic)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    mean = ref.mean(axis=0)
    spread = np.maximum(ref.std(axis=0), 1e-3 * max(float(ref.std()), 1e-12))
    centred = (ref - mean) / spread
    k = max(1, min(k, len(ref) - 1, ref.shape[1] // 2))  # leave a residual subspace
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    scales = np.maximum(sing[:k] / np.sqrt(max(len(ref) - 1, 1)), 1e-6)
    draft = DomainModel(mean, spread, vt[:k], scales, 1.0, 1.0, 1.0)
    inside, residual = draft._terms(validation)
    inside_scale = max(float(np.median(inside)), 1e-12)
    residual_scale = max(float(np.median(residual)), 1e-12)
    draft = DomainModel(mean, spread, vt[:k], scales, inside_scale, residual_scale, 1.0)
    cutoff = float(np.quantile(draft.raw_distance(validation), QUANTILE))
    return DomainModel(mean, spread, vt[:k], scales, inside_scale, residual_scale,
                       max(cutoff, 1e-12))


def fit_domain(reference: np.ndarray, validation: np.ndarray,
               blocks: list[tuple[str, int, int]] | None = None) -> DomainCheck:
    """A :class:`DomainCheck` with one fitted block per ``(name, start, stop)``."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    val = np.asarray(validation, dtype=np.float64).reshape(len(validation), -1)
    blocks = blocks or [("all", 0, ref.shape[1])]
    return DomainCheck(tuple((n, a, b, fit_block(ref[:, a:b], val[:, a:b]))
                             for n, a, b in blocks))


def build_domain(kind: Any, model: Any, x_train: Any, reference_val: Any, validation: Any,
                 spec: dict[str, Any], folder: Path, max_train: int = 1500
                 ) -> tuple[dict[str, Any] | None, list[str]]:
    """Fit and write a trained model's domain statistics: reference = up to ``max_train``
    training films (seeded choice) and the calibration films (as is and re-framed); cut-off
    from every validation film's score. Returns (bundle.json entry, files), or (None, [])
    for kinds without a representation."""
    if x_train is None:
        return None, []
    rng = np.random.default_rng(int((spec.get("training") or {}).get("seed", 0)))
    pick = np.sort(rng.choice(len(x_train), size=min(max_train, len(x_train)), replace=False))
    train = kind.domain_features(model, x_train[pick], spec)
    if train is None:
        return None, []
    reference = np.concatenate([train, kind.domain_features(model, reference_val, spec)])
    blocks = kind.domain_blocks(spec, reference.shape[1])
    check = fit_domain(reference, kind.domain_features(model, validation, spec), blocks)
    meta = check.save(folder)
    meta["reference_images"] = {"training": int(len(train)),
                                "validation": int(len(reference) - len(train))}
    return meta, [DOMAIN_FILE]


IMAGE_STATISTICS = ("mediastinum_contrast", "skewness", "mean", "spread")


def image_statistics(pixels: np.ndarray) -> np.ndarray:
    """(N, 4) cheap statistics of canonical images that a chest film's polarity and exposure
    fix: the midline (spine, mediastinum) is brighter than the lung fields beside it (an
    inverted film reverses it), the intensity skewness, mean and spread (0..1 scale).
    Computed on every 4th pixel: a few microseconds per image."""
    x = np.asarray(pixels)
    if x.ndim == 4:
        x = x[..., 0]
    x = x[:, ::4, ::4].astype(np.float32) / 255.0  # subsample first: the same values
    s = x.shape[1]
    rows = slice(int(0.3 * s), int(0.7 * s))
    mid = x[:, rows, int(0.45 * s):int(0.55 * s)].mean(axis=(1, 2))
    left = x[:, rows, int(0.20 * s):int(0.35 * s)].mean(axis=(1, 2))
    right = x[:, rows, int(0.65 * s):int(0.80 * s)].mean(axis=(1, 2))
    flat = x.reshape(len(x), -1)
    mean, spread = flat.mean(axis=1), flat.std(axis=1) + 1e-6
    skew = (((flat - mean[:, None]) / spread[:, None]) ** 3).mean(axis=1)
    return np.stack([mid - (left + right) / 2, skew, mean, spread], axis=1).astype(np.float64)
