"""Small robust-statistics kernels shared by ISR, interpolation and calib combination.

Exact quantiles of millions of pixels by histogram refinement (a few linear passes,
instead of the partial sort behind ``np.percentile``), and the afw ``MEANCLIP`` of
ALGORITHMS.md §6.1 in its unweighted form over one large set of values (image-wide
fallbacks and QA statistics). Stacks of images use :mod:`coadd_core.stats`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numba
import numpy as np

__all__ = [
    "IQR_TO_SIGMA",
    "gather_good",
    "quantiles",
    "median",
    "clipped_mean",
]

#: sigma of a normal distribution per unit interquartile range (afw's constant).
IQR_TO_SIGMA = 0.741301109252802

_NBINS = 4096
_SMALL = 2048


@numba.njit(cache=True, nogil=True)
def _gather_good(image: np.ndarray, mask: np.ndarray, bits: int, out: np.ndarray) -> int:
    ny, nx = image.shape
    n = 0
    for j in range(ny):
        for i in range(nx):
            v = image[j, i]
            if (mask[j, i] & bits) == 0 and math.isfinite(v):
                out[n] = v
                n += 1
    return n


def gather_good(image: np.ndarray, mask: np.ndarray | None = None, bits: int = 0) -> np.ndarray:
    """1-D float32 copy of the finite pixels of ``image`` whose mask has none of ``bits``."""
    image = np.asarray(image)
    if mask is None:
        mask = np.zeros((1, 1), dtype=np.int32)
        mask = np.broadcast_to(mask, image.shape)
    out = np.empty(image.size, dtype=np.float32)
    n = _gather_good(image, np.asarray(mask, dtype=np.int32), np.int32(bits), out)
    return out[:n]


@numba.njit(cache=True, nogil=True)
def _kth(work: np.ndarray, k: int) -> float:
    """k-th smallest (0-based) of ``work`` by repeated histogram refinement."""
    while True:
        n = work.size
        if n <= _SMALL:
            s = np.sort(work)
            return float(s[k])
        lo = work[0]
        hi = work[0]
        for x in work:
            if x < lo:
                lo = x
            elif x > hi:
                hi = x
        if lo == hi:
            return float(lo)
        scale = _NBINS / (float(hi) - float(lo))
        hist = np.zeros(_NBINS, dtype=np.int64)
        for x in work:
            b = int((float(x) - float(lo)) * scale)
            if b >= _NBINS:
                b = _NBINS - 1
            hist[b] += 1
        acc = 0
        target = 0
        for b in range(_NBINS):
            if acc + hist[b] > k:
                target = b
                break
            acc += hist[b]
        k -= acc
        sub = np.empty(hist[target], dtype=work.dtype)
        m = 0
        for x in work:
            b = int((float(x) - float(lo)) * scale)
            if b >= _NBINS:
                b = _NBINS - 1
            if b == target:
                sub[m] = x
                m += 1
        work = sub


@numba.njit(cache=True, nogil=True)
def _quantiles(values: np.ndarray, qs: np.ndarray) -> np.ndarray:
    n = values.size
    out = np.empty(qs.size, dtype=np.float64)
    if n == 0:
        out[:] = np.nan
        return out
    if n <= _SMALL:
        s = np.sort(values)
        for i in range(qs.size):
            pos = qs[i] * (n - 1)
            lo = int(math.floor(pos))
            hi = min(lo + 1, n - 1)
            f = pos - lo
            out[i] = float(s[lo]) + f * (float(s[hi]) - float(s[lo]))
        return out
    # one histogram pass over everything, then refine only the bins holding needed ranks
    lo_v = values[0]
    hi_v = values[0]
    for x in values:
        if x < lo_v:
            lo_v = x
        elif x > hi_v:
            hi_v = x
    if lo_v == hi_v:
        out[:] = float(lo_v)
        return out
    scale = _NBINS / (float(hi_v) - float(lo_v))
    hist = np.zeros(_NBINS, dtype=np.int64)
    for x in values:
        b = int((float(x) - float(lo_v)) * scale)
        if b >= _NBINS:
            b = _NBINS - 1
        hist[b] += 1
    cum = np.zeros(_NBINS + 1, dtype=np.int64)
    for b in range(_NBINS):
        cum[b + 1] = cum[b] + hist[b]
    nr = 2 * qs.size
    ranks = np.empty(nr, dtype=np.int64)
    for i in range(qs.size):
        pos = qs[i] * (n - 1)
        r = int(math.floor(pos))
        ranks[2 * i] = r
        ranks[2 * i + 1] = min(r + 1, n - 1)
    rank_bin = np.empty(nr, dtype=np.int64)
    slot_of_bin = np.full(_NBINS, -1, dtype=np.int64)
    nslots = 0
    for i in range(nr):
        b = int(np.searchsorted(cum, ranks[i], side="right")) - 1
        rank_bin[i] = b
        if slot_of_bin[b] < 0:
            slot_of_bin[b] = nslots
            nslots += 1
    sizes = np.zeros(nslots, dtype=np.int64)
    for b in range(_NBINS):
        if slot_of_bin[b] >= 0:
            sizes[slot_of_bin[b]] = hist[b]
    starts = np.zeros(nslots + 1, dtype=np.int64)
    for s in range(nslots):
        starts[s + 1] = starts[s] + sizes[s]
    buf = np.empty(starts[nslots], dtype=values.dtype)
    fill = starts[:nslots].copy()
    for x in values:
        b = int((float(x) - float(lo_v)) * scale)
        if b >= _NBINS:
            b = _NBINS - 1
        s = slot_of_bin[b]
        if s >= 0:
            buf[fill[s]] = x
            fill[s] += 1
    vals = np.empty(nr, dtype=np.float64)
    for i in range(nr):
        b = rank_bin[i]
        s = slot_of_bin[b]
        vals[i] = _kth(buf[starts[s] : starts[s + 1]].copy(), ranks[i] - cum[b])
    for i in range(qs.size):
        pos = qs[i] * (n - 1)
        f = pos - math.floor(pos)
        out[i] = vals[2 * i] + f * (vals[2 * i + 1] - vals[2 * i])
    return out


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Exact quantiles of finite 1-D ``values`` (numpy's 'linear' method); NaN if empty."""
    v = np.ascontiguousarray(values)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    return _quantiles(v.ravel(), np.asarray(qs, dtype=np.float64))


def median(values: np.ndarray) -> float:
    """Exact median of finite 1-D ``values``; NaN if empty."""
    return float(quantiles(values, (0.5,))[0])


@numba.njit(cache=True, nogil=True)
def _clip_iterations(values: np.ndarray, center: float, half: float, nsigma: float, niter: int) -> tuple:
    mean = np.nan
    var = np.nan
    kept = 0
    for it in range(niter):
        if not (math.isfinite(center) and math.isfinite(half)):
            return np.nan, np.nan, 0
        # sums relative to the centre keep the one-pass variance accurate
        s = 0.0
        ss = 0.0
        kept = 0
        for x in values:
            d = float(x) - center
            if abs(d) <= half:
                s += d
                ss += d * d
                kept += 1
        if kept == 0:
            return np.nan, np.nan, 0
        mean = center + s / kept
        var = (ss - s * s / kept) / (kept - 1) if kept > 1 else np.nan
        if kept > 1:
            center = mean
            half = nsigma * math.sqrt(max(var, 0.0))
    return mean, var, kept


def clipped_mean(
    values: np.ndarray,
    nsigma: float = 3.0,
    niter: int = 3,
    *,
    quartiles: tuple[float, float, float] | None = None,
) -> tuple[float, float, int]:
    """afw MEANCLIP of 1-D finite ``values``: (mean, sample variance, number kept).

    Iteration 0 clips about the median at ``nsigma * 0.7413 * IQR``; later iterations
    about the previous mean at ``nsigma`` standard deviations, always selecting from the
    full set (ALGORITHMS.md §6.1). ``quartiles`` (q1, median, q3) of ``values``, when
    the caller already has them, save a pass.
    """
    v = np.ascontiguousarray(values).ravel()
    if v.size == 0:
        return math.nan, math.nan, 0
    q1, med, q3 = quartiles if quartiles is not None else quantiles(v, (0.25, 0.5, 0.75))
    half = nsigma * IQR_TO_SIGMA * (q3 - q1)
    mean, var, kept = _clip_iterations(v, float(med), float(half), float(nsigma), int(niter))
    return float(mean), float(var), int(kept)
