"""Uniform LBP of canonical images, a whole batch at once, and region histograms of codes.

The definition is scikit-image's ``local_binary_pattern(method="uniform")`` with its bilinear
sampling, bit for bit (``tests/test_features.py``), on a batch: whole-pixel neighbours are
compared as integers; an interpolated neighbour's ``sample - centre`` is one ``cv2.filter2D``
of the stacked batch in double precision, whose sign is exact except at exact ties, which take
scikit-image's own round-off (see ``_TIE``); patterns of up to 8 points become codes through a
table: 0.035 CPU ms per 48 px film, against 0.05-0.065 for the NumPy blends it replaced.

A faster LBP was tried and dropped: uniform patterns of the 3 x 3 square (no interpolation)
cost 0.01 instead of 0.06 ms per film, but the baseline trained on them flagged 12.5 % instead
of 7.8 % of thorax-cropped normal films (the exact LBP with the fast HOG: 7.8 %).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

Taps = tuple[Any, Any, np.ndarray]  # (floor positions, ceil positions, fractions)


@lru_cache(maxsize=16)
def _sample_points(points: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Circle offsets (row, column) as scikit-image computes and rounds them."""
    angles = 2 * np.pi * np.arange(points, dtype=np.float64) / points
    return np.round(-radius * np.sin(angles), 5), np.round(radius * np.cos(angles), 5)


def lbp_uniform_batch(images: np.ndarray, points: int, radius: float) -> np.ndarray:
    """``skimage.feature.local_binary_pattern(img, points, radius, "uniform")`` for a uint8
    batch ``(N, H, W)`` -> codes ``(N, H, W)`` in ``0 .. points + 1``."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 3:
        raise ValueError(f"expected a (N, H, W) uint8 batch, got {x.dtype} {x.shape}")
    points = int(points)
    n, rows, cols = x.shape
    pad = int(np.ceil(radius)) + 1
    whole = np.zeros((n, rows + 2 * pad, cols + 2 * pad), np.uint8)  # mode "C", cval 0
    whole[:, pad:pad + rows, pad:pad + cols] = x
    black = x == 0
    rp, cp = _sample_points(points, float(radius))
    signs = [_sign(whole, x, black, _taps(rows, rp[i], pad), _taps(cols, cp[i], pad), pad)
             for i in range(points)]
    if points <= 8:  # the bit pattern as a byte, mapped by a table
        pattern = np.zeros(x.shape, np.uint8)
        for i, sign in enumerate(signs):
            pattern |= sign.view(np.uint8) << i
        return cv2.LUT(pattern, _uniform_table(points)).astype(np.int64)
    ones = np.zeros(x.shape, np.int16)
    changes = np.zeros(x.shape, np.int16)
    for i, sign in enumerate(signs):
        ones += sign
        if i:  # transitions between neighbours i-1 and i (not around the circle)
            changes += sign != signs[i - 1]
    return np.where(changes <= 2, ones, points + 1)


@lru_cache(maxsize=8)
def _uniform_table(points: int) -> np.ndarray:
    """``cv2.LUT`` table: the uniform code of each ``points``-bit pattern (bit ``i`` is sample
    ``i``): its number of ones when it changes at most twice going from sample 0 to the last
    (not around the circle, as scikit-image counts), else ``points + 1``."""
    table = np.full(256, points + 1, np.uint8)
    for pattern in range(1 << points):
        bits = [(pattern >> i) & 1 for i in range(points)]
        if sum(a != b for a, b in zip(bits[:-1], bits[1:], strict=True)) <= 2:
            table[pattern] = sum(bits)
    return table


def _sign(whole: np.ndarray, x: np.ndarray, black: np.ndarray, rows_taps: Taps,
          cols_taps: Taps, pad: int) -> np.ndarray:
    """Whether each pixel's sample at one circle point is >= the pixel (a bool batch)."""
    if not rows_taps[2].any() and not cols_taps[2].any():
        # the neighbour itself: for integers, ``float(b) - float(a) >= 0`` is ``b >= a``
        return whole[:, rows_taps[0]][:, :, cols_taps[0]] >= x
    sign = np.empty(x.shape, bool)
    _interpolated_signs(whole, x, black, rows_taps, cols_taps, pad, sign)
    return sign


# scikit-image rounds the sample offsets to 5 decimals, so every bilinear weight is a multiple
# of 1e-10 and so is ``sample - centre`` for integer pixels: either exactly 0 (a tie: flat
# areas) or at least 1e-10 away from it, while double-precision round-off stays below 1e-12.
# One filter gives the sign of every non-tie exactly; ties take the sign that scikit-image's
# own round-off gives them, computed with its operations on those pixels alone.
_TIE = 1e-11


def _interpolated_signs(whole: np.ndarray, x: np.ndarray, black: np.ndarray, rows_taps: Taps,
                        cols_taps: Taps, pad: int, out: np.ndarray) -> None:
    """``sample - centre >= LBP_TOLERANCE`` at one bilinear sample point of every pixel of
    ``x`` (``whole``: the batch zero-padded by ``pad``; ``black``: ``x == 0``), as
    scikit-image decides it: ``cv2.filter2D`` on the stacked batch in double precision, then
    the ties."""
    n, rows, cols = x.shape
    r0, r1, c0, c1 = (_positions(taps, size) for taps, size in (
        (rows_taps[0], rows), (rows_taps[1], rows), (cols_taps[0], cols), (cols_taps[1], cols)))
    dr, dc = rows_taps[2], cols_taps[2]
    half = pad - 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    for dy, wy in ((r0[0] - pad, 1 - dr[0]), (r1[0] - pad, dr[0])):
        for dx, wx in ((c0[0] - pad, 1 - dc[0]), (c1[0] - pad, dc[0])):
            kernel[half + dy, half + dx] += wy * wx
    kernel[half, half] -= 1.0
    diff = cv2.filter2D(whole.reshape(-1, whole.shape[2]), cv2.CV_64F, kernel,
                        borderType=cv2.BORDER_CONSTANT)
    diff = diff.reshape(whole.shape)[:, pad:pad + rows, pad:pad + cols]
    np.greater(diff, LBP_TOLERANCE + _TIE, out=out)
    near = diff >= LBP_TOLERANCE - _TIE
    np.not_equal(near, out, out=near)  # within _TIE of the tolerance: a tie
    if LBP_TOLERANCE <= 0:  # a tie at a black pixel has black samples: exactly 0 there too
        out |= near & black
    near &= ~black
    if near.any():  # scikit-image's bilinear_interpolation, operation for operation
        ties = np.unravel_index(np.flatnonzero(near), near.shape)
        k, r, c = ties
        wr, wc = dr[r], dc[c]
        tl, tr, bl, br = (whole[k, a, b].astype(np.float64) for a, b in (
            (r0[r], c0[c]), (r0[r], c1[c]), (r1[r], c0[c]), (r1[r], c1[c])))
        sample = (1 - wr) * ((1 - wc) * tl + wc * tr) + wr * ((1 - wc) * bl + wc * br)
        out[ties] = sample - x[ties].astype(np.float64) >= LBP_TOLERANCE


def _positions(taps: Any, size: int) -> np.ndarray:
    """The padded positions a tap reads for each of ``size`` indices (from a slice or array)."""
    return np.arange(taps.start, taps.stop) if isinstance(taps, slice) else np.asarray(taps)


@lru_cache(maxsize=64)
def _taps(size: int, offset: float, pad: int) -> tuple[Any, Any, np.ndarray]:
    """Where the samples at ``index + offset`` read (floor and ceil, as slices of the padded
    axis when the offset is the same for every index, which it is in practice) and their
    fractional parts ``(index + offset) - floor(index + offset)``, as scikit-image computes."""
    at = np.arange(size, dtype=np.float64) + offset
    low, high = np.floor(at), np.ceil(at)
    frac = at - low
    lo, hi = low.astype(np.int64) + pad, high.astype(np.int64) + pad
    if np.all(np.diff(lo) == 1) and np.all(np.diff(hi) == 1):
        return slice(lo[0], lo[0] + size), slice(hi[0], hi[0] + size), frac
    return lo, hi, frac


# A neighbour sets its bit when ``sample - centre >= LBP_TOLERANCE`` (scikit-image 0.26: 0.0;
# whole-pixel neighbours are compared as integers, which is that test for 0).
LBP_TOLERANCE = 0.0


def region_histograms(codes: np.ndarray, n_bins: int, grid: int) -> np.ndarray:
    """Normalised histograms of integer codes ``(N, S, S)`` on a ``grid x grid`` split
    -> ``(N, grid * grid * n_bins)``, regions in row-major order."""
    n, side, _ = codes.shape
    step = side // grid
    regions = codes.reshape(n, grid, step, grid, step).swapaxes(2, 3).reshape(n, grid * grid, -1)
    slot = (np.arange(n * grid * grid).reshape(n, grid * grid, 1) * n_bins + regions)
    counts = np.bincount(slot.ravel(), minlength=n * grid * grid * n_bins)
    return counts.reshape(n, grid * grid * n_bins) / (step * step)
