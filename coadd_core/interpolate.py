"""Interpolation over masked pixels, row by row (ALGORITHMS.md §2.4).

Used by ISR (over SAT, BAD and UNMASKEDNAN pixels) and by coadds (``doInterp`` over
NO_DATA). Each horizontal run of masked pixels is replaced by the straight line between
the mean of the (up to) 2 good pixels on its left and the mean of those on its right; a
run touching the left or right edge has only one side, so it is set to a *fallback*
value except for the 6 pixels nearest good data, which ramp linearly from the good side
to the fallback; a wholly masked row becomes the fallback. The variance plane gets the
same treatment. LSST uses SDSS linear-prediction weights from the 1-2 good pixels each
side; the project's simpler rule differs from it by a small fraction of the noise.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

from .calib._stats import clipped_mean, gather_good
from .image import MaskedImage

__all__ = ["interpolate_over", "EDGE_RAMP_PIXELS", "GOOD_PIXELS_PER_SIDE"]

log = logging.getLogger(__name__)

#: Pixels of an edge run, nearest good data, that ramp to the fallback value.
EDGE_RAMP_PIXELS = 6
#: Good pixels averaged on each side of a run.
GOOD_PIXELS_PER_SIDE = 2


@numba.njit(cache=True, nogil=True)
def _touches_edge(mask: np.ndarray, bits: int) -> bool:
    ny, nx = mask.shape
    for j in range(ny):
        if (mask[j, 0] & bits) != 0 or (mask[j, nx - 1] & bits) != 0:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _side_mean(plane: np.ndarray, mask: np.ndarray, bits: int, j: int, start: int, step: int, nx: int) -> tuple:
    """Mean value and mean position of up to 2 contiguous good pixels from ``start``."""
    s = 0.0
    p = 0.0
    n = 0
    i = start
    while n < 2 and 0 <= i < nx and (mask[j, i] & bits) == 0:
        s += plane[j, i]
        p += i
        n += 1
        i += step
    return s / n, p / n


@numba.njit(cache=True, nogil=True)
def _fill_run(
    plane: np.ndarray, mask: np.ndarray, bits: int, j: int, a: int, b: int, nx: int, fallback: float, ramp: int
) -> None:
    left = a > 0
    right = b < nx - 1
    if left and right:
        vl, xl = _side_mean(plane, mask, bits, j, a - 1, -1, nx)
        vr, xr = _side_mean(plane, mask, bits, j, b + 1, 1, nx)
        slope = (vr - vl) / (xr - xl)
        for i in range(a, b + 1):
            plane[j, i] = vl + slope * (i - xl)
    elif right:
        # run from the left edge: ramp over the `ramp` pixels next to good data
        vr, xr = _side_mean(plane, mask, bits, j, b + 1, 1, nx)
        xa = b - ramp
        slope = (vr - fallback) / (xr - xa)
        for i in range(a, b + 1):
            plane[j, i] = fallback if i <= xa else fallback + slope * (i - xa)
    elif left:
        vl, xl = _side_mean(plane, mask, bits, j, a - 1, -1, nx)
        xa = a + ramp
        slope = (fallback - vl) / (xa - xl)
        for i in range(a, b + 1):
            plane[j, i] = fallback if i >= xa else vl + slope * (i - xl)
    else:
        for i in range(a, b + 1):
            plane[j, i] = fallback


@numba.njit(cache=True, nogil=True)
def _interpolate_rows(
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    bits: int,
    fallback: float,
    var_fallback: float,
    intrp: int,
    ramp: int,
) -> int:
    ny, nx = mask.shape
    count = 0
    for j in range(ny):
        i = 0
        while i < nx:
            if (mask[j, i] & bits) == 0:
                i += 1
                continue
            a = i
            while i < nx and (mask[j, i] & bits) != 0:
                i += 1
            b = i - 1
            _fill_run(image, mask, bits, j, a, b, nx, fallback, ramp)
            _fill_run(variance, mask, bits, j, a, b, nx, var_fallback, ramp)
            count += b - a + 1
        if intrp != 0:
            for k in range(nx):
                if (mask[j, k] & bits) != 0:
                    mask[j, k] |= intrp
    return count


def _clipped_mean_of_good(plane: np.ndarray, mask: np.ndarray, bits: int, nsigma: float, niter: int) -> float:
    values = gather_good(plane, mask, bits)
    if values.size == 0:
        return math.nan
    return clipped_mean(values, nsigma, niter)[0]


def interpolate_over(
    mi: MaskedImage,
    bad_bits: int,
    *,
    fallback: float | None = None,
    set_intrp: bool = True,
    variance_fallback: float | None = None,
    num_sigma_clip: float = 3.0,
    num_iter: int = 3,
) -> int:
    """Interpolate in place over pixels with any of ``bad_bits``; returns how many.

    ``fallback`` (for runs touching a row end, and wholly masked rows) defaults to the
    3-sigma, 3-iteration clipped mean of the good pixels, as LSST uses the clipped mean
    of the image; ``variance_fallback`` defaults to the clipped mean of the good
    variances, so an edge-filled pixel keeps a typical, positive variance. Either is
    computed only when a run reaches an edge. INTRP is OR-ed into the filled pixels
    when ``set_intrp``.
    """
    bits = int(np.int32(bad_bits))
    if bits == 0 or mi.image.size == 0:
        return 0
    image, variance, mask = mi.image, mi.variance, mi.mask
    fb = math.nan if fallback is None else float(fallback)
    vfb = math.nan if variance_fallback is None else float(variance_fallback)
    if (fallback is None or variance_fallback is None) and _touches_edge(mask, np.int32(bits)):
        if fallback is None:
            fb = _clipped_mean_of_good(image, mask, bits, num_sigma_clip, num_iter)
        if variance_fallback is None:
            vfb = _clipped_mean_of_good(variance, mask, bits, num_sigma_clip, num_iter)
        if not math.isfinite(fb):
            log.warning("no good pixels for the interpolation fallback; edge runs become NaN")
    intrp = mi.planes.bitmask("INTRP") if set_intrp else 0
    return int(
        _interpolate_rows(
            image, variance, mask, np.int32(bits), fb, vfb, np.int32(intrp), EDGE_RAMP_PIXELS
        )
    )
