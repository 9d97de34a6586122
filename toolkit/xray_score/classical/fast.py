"""The baseline's ``fast`` features (pipeline ``features.method: fast``): HOG and LBP of the
same layout as scikit-image's, computed with fewer passes over the pixels.

- HOG: the same [-1, 0, 1] gradients, unsigned orientations in hard bins, cells and L2-Hys
  blocks as ``skimage.feature.hog``; magnitudes and angles come from ``cv2.cartToPolar``
  (float32, angles within ~0.3 degrees) and cells are summed in float64 by ``np.bincount``.
  Values are close to scikit-image's, not equal: a pixel within a fraction of a degree of a
  bin edge can land in the other bin.
- LBP: uniform patterns of the 8 neighbours on the 3 x 3 square (radius 1, no interpolation),
  from integer comparisons; outside the image counts as 0, as in scikit-image's mode "C".

Bundles whose pipeline names no method keep scikit-image's exact definitions
(:mod:`xray_score.classical.extract`).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .extract import centred_gradients

# neighbour k of the 3 x 3 square, counter-clockwise from the right: (row, column) offsets
_SQUARE = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


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


def lbp_square_uniform_batch(images: np.ndarray) -> np.ndarray:
    """Uniform LBP codes ``(N, H, W)`` in 0..9 of the 3 x 3 square neighbourhood: the number
    of neighbours ``>=`` the centre when the circular pattern has at most two 0/1
    transitions, else 9."""
    x = np.asarray(images, np.uint8)
    n, rows, cols = x.shape
    padded = np.zeros((n, rows + 2, cols + 2), np.uint8)
    padded[:, 1:-1, 1:-1] = x
    code = np.zeros(x.shape, np.uint8)
    bit = np.empty(x.shape, bool)
    for k, (dr, dc) in enumerate(_SQUARE):
        np.greater_equal(padded[:, 1 + dr:1 + dr + rows, 1 + dc:1 + dc + cols], x, out=bit)
        code |= bit.view(np.uint8) << k
    return _uniform_table()[code]


@lru_cache(maxsize=1)
def _uniform_table() -> np.ndarray:
    """Uniform code of each 8-bit pattern (bits in neighbour order, transitions counted
    around the circle)."""
    table = np.empty(256, np.uint8)
    for pattern in range(256):
        bits = [(pattern >> k) & 1 for k in range(8)]
        changes = sum(bits[k] != bits[(k + 1) % 8] for k in range(8))
        table[pattern] = sum(bits) if changes <= 2 else 9
    return table
