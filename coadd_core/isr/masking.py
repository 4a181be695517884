"""Pixel masking steps of ISR (ALGORITHMS.md §2.1 steps 3, 6, 8-10, 14).

Each function ORs one plane's bit into an int32 mask in place and returns how many
pixels it flagged, so ISR can record the counts. Loops over rows are numba kernels that
only touch rows holding the plane of interest.
"""

from __future__ import annotations

from typing import Iterable

import numba
import numpy as np
from scipy import ndimage

from coadd_core.geom import Box

__all__ = [
    "mask_threshold",
    "mask_boxes",
    "mask_border",
    "mask_nans",
    "mask_nonpositive_variance",
    "widen_saturation_trails",
    "widen_amount",
    "grow_mask",
]


def mask_threshold(data: np.ndarray, level: float, mask: np.ndarray, bit: int) -> int:
    """OR ``bit`` where ``data >= level`` (saturation, suspect); NaN level does nothing."""
    if not np.isfinite(level):
        return 0
    hit = data >= level
    n = int(np.count_nonzero(hit))
    if n:
        mask[hit] |= np.int32(bit)
    return n


def mask_boxes(mask: np.ndarray, bbox: Box, boxes: Iterable[Box], bit: int) -> int:
    """OR ``bit`` inside every box (clipped to ``bbox``, the mask's parent box)."""
    n = 0
    for box in boxes:
        clipped = box.intersection(bbox)
        if clipped.is_empty():
            continue
        mask[clipped.slices(bbox)] |= np.int32(bit)
        n += clipped.area
    return n


def mask_border(mask: np.ndarray, width: int, bit: int) -> int:
    """OR ``bit`` on the outer ``width`` rows and columns."""
    if width <= 0:
        return 0
    ny, nx = mask.shape
    w = min(width, ny, nx)
    b = np.int32(bit)
    mask[:w, :] |= b
    mask[ny - w :, :] |= b
    mask[:, :w] |= b
    mask[:, nx - w :] |= b
    inner = max(ny - 2 * w, 0) * max(nx - 2 * w, 0)
    return ny * nx - inner


@numba.njit(cache=True, nogil=True)
def _mask_nans(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bit: int) -> int:
    ny, nx = image.shape
    n = 0
    for j in range(ny):
        for i in range(nx):
            if mask[j, i] == 0 and not (np.isfinite(image[j, i]) and np.isfinite(variance[j, i])):
                mask[j, i] |= bit
                n += 1
    return n


def mask_nans(image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bit: int) -> int:
    """OR ``bit`` (UNMASKEDNAN) on non-finite image/variance pixels that have no mask bit."""
    return int(_mask_nans(image, variance, mask, np.int32(bit)))


@numba.njit(cache=True, nogil=True)
def _mask_nonpositive(variance: np.ndarray, mask: np.ndarray, bit: int) -> int:
    ny, nx = variance.shape
    n = 0
    for j in range(ny):
        for i in range(nx):
            if variance[j, i] <= 0:
                mask[j, i] |= bit
                n += 1
    return n


def mask_nonpositive_variance(variance: np.ndarray, mask: np.ndarray, bit: int) -> int:
    """OR ``bit`` where the variance is <= 0 (maskNegativeVariance)."""
    return int(_mask_nonpositive(variance, mask, np.int32(bit)))


def widen_amount(run_length: int) -> int:
    """Pixels added at each end of a horizontal SAT run of this length."""
    if run_length <= 5:
        return 0
    if run_length <= 7:
        return 1
    if run_length <= 9:
        return 3
    return 4


@numba.njit(cache=True, nogil=True)
def _widen_rows(mask: np.ndarray, rows: np.ndarray, bit: int) -> int:
    nx = mask.shape[1]
    orig = np.empty(nx, dtype=np.bool_)
    added = 0
    for j in rows:
        for i in range(nx):
            orig[i] = (mask[j, i] & bit) != 0
        i = 0
        while i < nx:
            if not orig[i]:
                i += 1
                continue
            a = i
            while i < nx and orig[i]:
                i += 1
            length = i - a
            if length <= 5:
                grow = 0
            elif length <= 7:
                grow = 1
            elif length <= 9:
                grow = 3
            else:
                grow = 4
            for k in range(max(a - grow, 0), min(i + grow, nx)):
                if (mask[j, k] & bit) == 0:
                    mask[j, k] |= bit
                    added += 1
    return added


def _rows_with(mask: np.ndarray, bit: int) -> np.ndarray:
    return np.flatnonzero(np.bitwise_or.reduce(mask, axis=1) & np.int32(bit))


def widen_saturation_trails(mask: np.ndarray, bit: int) -> int:
    """Widen every horizontal run of ``bit`` by 0/1/3/4 px at both ends (run length <=5/6-7/8-9/>=10).

    Bleed trails are wider than the pixels that reached the saturation level; the
    widening catches their wings. Runs are measured before any widening of their row.
    """
    rows = _rows_with(mask, bit)
    if rows.size == 0:
        return 0
    return int(_widen_rows(mask, rows.astype(np.int64), np.int32(bit)))


def grow_mask(mask: np.ndarray, bit: int, radius: int) -> int:
    """Dilate plane ``bit`` by ``radius`` pixels in the Manhattan metric; returns pixels added."""
    if radius <= 0:
        return 0
    rows = _rows_with(mask, bit)
    if rows.size == 0:
        return 0
    ny = mask.shape[0]
    y0, y1 = max(int(rows[0]) - radius, 0), min(int(rows[-1]) + radius + 1, ny)
    slab = mask[y0:y1]
    plane = (slab & np.int32(bit)) != 0
    grown = ndimage.binary_dilation(plane, ndimage.generate_binary_structure(2, 1), iterations=radius)
    new = grown & ~plane
    slab[new] |= np.int32(bit)
    return int(np.count_nonzero(new))
