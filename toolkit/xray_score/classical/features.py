"""HOG + LBP features (scikit-image's definitions), as a scikit-learn transformer.

Input: canonical gray images, an array ``(n, size, size)`` uint8 (see :mod:`xray_score.io.decode`).
Output: one row per image: a HOG descriptor followed by uniform-LBP histograms on a grid of
regions for each (points, radius) pair, and an optional coarse intensity histogram.

The computation lives in :class:`xray_score.classical.extract.FeatureExtractor` (batched,
equal to ``skimage.feature.hog`` / ``local_binary_pattern`` bit for bit); this class is its
scikit-learn face, for pipelines and ``clone``. Scoring workers use the extractor directly and
never import scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .extract import FeatureExtractor


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
    method: ``"skimage"`` (scikit-image's definitions, bit for bit) or ``"fast"`` (HOG from
        OpenCV's polar gradients, close to scikit-image's; see
        :mod:`xray_score.classical.hog`).
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
        method: str = "skimage",
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
        self.method = method

    def extractor(self) -> FeatureExtractor:
        """The batch extractor these parameters describe (validated there, in one place)."""
        return FeatureExtractor(
            image_size=self.image_size, hog_orientations=self.hog_orientations,
            hog_pixels_per_cell=self.hog_pixels_per_cell,
            hog_cells_per_block=self.hog_cells_per_block, lbp_points=tuple(self.lbp_points),
            lbp_radii=tuple(self.lbp_radii), lbp_grid=self.lbp_grid, lbp_size=self.lbp_size,
            clahe=self.clahe, clahe_clip=self.clahe_clip, intensity_bins=self.intensity_bins,
            method=self.method)

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> HogLbpFeatures:  # noqa: N803
        """Nothing to learn; checks the parameters."""
        self.extractor()
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Features of a batch ``(n, size, size)`` -> ``(n, n_features)`` float32."""
        X = np.asarray(X)  # noqa: N806
        if X.ndim == 2:
            X = X[None]  # noqa: N806
        extractor = self.extractor()
        if not len(X):
            return np.zeros((0, extractor.n_features), np.float32)
        return extractor.transform_batch(X)

    def __sklearn_is_fitted__(self) -> bool:
        return True

    @property
    def n_features_(self) -> int:
        return self.extractor().n_features

    def blocks(self) -> list[tuple[str, int, int]]:
        """(name, start, stop) of each part of a feature row: hog, lbp, intensity."""
        return self.extractor().blocks()

    def transform_one(self, image: np.ndarray) -> np.ndarray:
        """Features of one canonical image ``(size, size)`` uint8."""
        return self.extractor().transform_one(image)
