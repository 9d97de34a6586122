"""The baseline's ``fast`` HOG (pipeline ``features.method: fast``): scikit-image's layout and
definitions (the same [-1, 0, 1] gradients, unsigned orientations in hard bins, cells, L2-Hys
blocks) in fewer passes over the pixels: magnitudes and angles from ``cv2.cartToPolar``
(float32; OpenCV documents its angles to ~0.3 degrees), cells summed in float64 by
``np.bincount``. Values are close to scikit-image's, not equal to them: on 64 real films all
within 2e-7, on smooth synthetic images ~1 % of them off by up to ~2 % (pixels near a bin
edge change bins). So a bundle names the method it was trained with; bundles that name none
keep the exact HOG of :mod:`xray_score.classical.extract`. 0.05 instead of 0.15 CPU ms per
96-px film.

A faster LBP was tried and dropped: uniform patterns of the 3 x 3 square (no interpolation)
cost 0.01 instead of 0.06 ms, but the baseline trained on them flagged 12.5 % instead of
7.8 % of thorax-cropped normal films; with this HOG and the exact LBP it flagged 7.8 %.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .extract import centred_gradients


@lru_cache(maxsize=8)
def _cell_offsets(rows: int, cols: int, ppc: int, orientations: int) -> np.ndarray:
    """Each pixel's first histogram slot: its cell's, or an extra row/column of cells for
    the pixels beyond the last whole cell (dropped afterwards, as scikit-image drops them)."""
    n_rows, n_cols = rows // ppc, cols // ppc
    r_cell = np.minimum(np.arange(rows) // ppc, n_rows)
    c_cell = np.minimum(np.arange(cols) // ppc, n_cols)
    return ((r_cell[:, None] * (n_cols + 1) + c_cell[None, :]) * orientations).astype(np.intp)


@lru_cache(maxsize=8)
def _fold(orientations: int) -> np.ndarray:
    """``cv2.LUT`` table: bin of an angle of 0..360 degrees scaled to ``0 .. 2 *
    orientations`` (orientations are unsigned: 200 degrees is 20)."""
    table = np.zeros(256, np.uint8)
    table[:2 * orientations + 1] = np.arange(2 * orientations + 1) % orientations
    return table


def hog_cells(images: np.ndarray, orientations: int, ppc: int) -> np.ndarray:
    """Cell histograms ``(N, n_rows, n_cols, orientations)`` float64, each the mean gradient
    magnitude per orientation bin over the cell's pixels (scikit-image's cell values)."""
    n, rows, cols = images.shape
    n_rows, n_cols = rows // ppc, cols // ppc
    g_row, g_col = centred_gradients(images, np.float32)
    magnitude, angle = cv2.cartToPolar(g_col.reshape(n * rows, cols),
                                       g_row.reshape(n * rows, cols), angleInDegrees=True)
    np.multiply(angle, orientations / 180.0, out=angle)  # 0 .. 2 * orientations
    bins = cv2.LUT(angle.astype(np.uint8), _fold(orientations))  # floor, then unsigned
    slot = bins.reshape(n, rows, cols) + _cell_offsets(rows, cols, ppc, orientations)
    per_image = (n_rows + 1) * (n_cols + 1) * orientations
    slot += (np.arange(n, dtype=np.intp) * per_image)[:, None, None]
    sums = np.bincount(slot.ravel(), weights=magnitude.ravel(), minlength=n * per_image)
    cells = sums.reshape(n, n_rows + 1, n_cols + 1, orientations)[:, :n_rows, :n_cols]
    return cells / (ppc * ppc)
