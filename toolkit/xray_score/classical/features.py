"""HOG + LBP features on scikit-image, as a scikit-learn transformer.

Input: canonical gray images, an array ``(n, size, size)`` uint8 (see :mod:`xray_score.images`).
Output: one row per image: a HOG descriptor followed by uniform-LBP histograms on a grid of
regions for each (points, radius) pair, and an optional coarse intensity histogram.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class HogLbpFeatures(TransformerMixin, BaseEstimator):
    """Stateless HOG/LBP extractor with every parameter in ``__init__``.

    Parameters
    ----------
    image_size: side of the square input (images of another size are refused).
    hog_orientations, hog_pixels_per_cell, hog_cells_per_block: passed to ``skimage.feature.hog``.
    lbp_points, lbp_radii: pairs ``(P[i], R[i])`` for ``local_binary_pattern(method="uniform")``.
    lbp_grid: the image is split into ``lbp_grid x lbp_grid`` regions, one histogram each.
    lbp_size: side the image is area-resized to before LBP (None: ``image_size``); LBP
        texture at a coarser scale costs a quarter of the time at half the side.
    clahe: apply CLAHE (``skimage.exposure.equalize_adapthist``) before extraction.
    clahe_clip: CLAHE clip limit.
    intensity_bins: bins of a gray-level histogram appended to the features (0 disables it).
    """

    def __init__(
        self,
        image_size: int = 128,
        hog_orientations: int = 9,
        hog_pixels_per_cell: int = 16,
        hog_cells_per_block: int = 2,
        lbp_points: tuple[int, ...] = (8, 16),
        lbp_radii: tuple[float, ...] = (1, 2),
        lbp_grid: int = 4,
        lbp_size: int | None = None,
        clahe: bool = False,
        clahe_clip: float = 0.01,
        intensity_bins: int = 16,
    ) -> None:
        self.image_size = image_size
        self.hog_orientations = hog_orientations
        self.hog_pixels_per_cell = hog_pixels_per_cell
        self.hog_cells_per_block = hog_cells_per_block
        self.lbp_points = lbp_points
        self.lbp_radii = lbp_radii
        self.lbp_grid = lbp_grid
        self.lbp_size = lbp_size
        self.clahe = clahe
        self.clahe_clip = clahe_clip
        self.intensity_bins = intensity_bins

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> HogLbpFeatures:  # noqa: N803
        """Nothing to learn; checks the parameters."""
        if len(self.lbp_points) != len(self.lbp_radii):
            raise ValueError("lbp_points and lbp_radii must have the same length")
        if (self.lbp_size or self.image_size) % self.lbp_grid:
            raise ValueError("the LBP image side must be a multiple of lbp_grid")
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Features of a batch ``(n, size, size)`` -> ``(n, n_features)`` float32."""
        X = np.asarray(X)  # noqa: N806
        if X.ndim == 2:
            X = X[None]  # noqa: N806
        return np.stack([self.transform_one(img) for img in X]) if len(X) else np.zeros(
            (0, self.n_features_), np.float32
        )

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def n_features_(self) -> int:
        blank = np.zeros((self.image_size, self.image_size), np.uint8)
        return int(self.transform_one(blank).size)

    def blocks(self) -> list[tuple[str, int, int]]:
        """(name, start, stop) of each part of a feature row: hog, lbp, intensity."""
        cells = self.image_size // self.hog_pixels_per_cell
        per_side = max(cells - self.hog_cells_per_block + 1, 0)
        hog = per_side ** 2 * self.hog_cells_per_block ** 2 * self.hog_orientations
        lbp = sum(int(p) + 2 for p in self.lbp_points) * self.lbp_grid ** 2
        parts = [("hog", hog), ("lbp", lbp), ("intensity", int(self.intensity_bins))]
        out, start = [], 0
        for name, size in parts:
            if size:
                out.append((name, start, start + size))
                start += size
        return out

    def transform_one(self, image: np.ndarray) -> np.ndarray:
        """Features of one canonical image ``(size, size)`` uint8."""
        from skimage.exposure import equalize_adapthist
        from skimage.feature import hog, local_binary_pattern

        if image.shape != (self.image_size, self.image_size):
            raise ValueError(f"expected a {self.image_size}px square image, got {image.shape}")
        img = image
        if self.clahe:
            img = (equalize_adapthist(img, clip_limit=self.clahe_clip) * 255).astype(np.uint8)
        parts = [
            hog(
                img,
                orientations=self.hog_orientations,
                pixels_per_cell=(self.hog_pixels_per_cell,) * 2,
                cells_per_block=(self.hog_cells_per_block,) * 2,
                block_norm="L2-Hys",
                feature_vector=True,
            )
        ]
        lbp_img = img
        if self.lbp_size and self.lbp_size != self.image_size:
            import cv2

            lbp_img = cv2.resize(img, (self.lbp_size,) * 2, interpolation=cv2.INTER_AREA)
        side = lbp_img.shape[0]
        step = side // self.lbp_grid
        for points, radius in zip(self.lbp_points, self.lbp_radii, strict=True):
            codes = local_binary_pattern(lbp_img, int(points), float(radius), method="uniform")
            n_bins = int(points) + 2
            blocks = codes.reshape(self.lbp_grid, step, self.lbp_grid, step).swapaxes(1, 2)
            for block in blocks.reshape(-1, step * step):
                parts.append(np.bincount(block.astype(np.int64), minlength=n_bins) / block.size)
        if self.intensity_bins:
            hist = np.bincount(img.ravel().astype(np.int64) * self.intensity_bins // 256,
                               minlength=self.intensity_bins)
            parts.append(hist / img.size)
        return np.concatenate(parts).astype(np.float32)
