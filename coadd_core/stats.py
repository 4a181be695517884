"""Statistics engine for stacking (LSST ``afw.math`` Statistics / ``statisticsStack``).

The same rules serve coadd assembly, calibration combination and weight estimation
(ALGORITHMS.md §6.1):

* good set ``S0``: finite values whose mask has no ``and_mask`` bit;
* MEAN: weighted mean, weighted sample variance
  ``[sum w (x-mu)^2 / sum w] * (sum w)^2 / ((sum w)^2 - sum w^2)``;
* MEDIAN: unweighted, numpy-``linear`` quantile, variance ``pi/2`` times that of the
  mean (from the inputs, or ``sigma^2 / n`` from the sample);
* MEANCLIP: iteration 0 keeps ``|x - median| <= k * 0.7413 * IQR``; each later iteration
  keeps ``|x - mu| <= k * sigma`` of the previous iteration, always selecting from the
  *full* good set; ``num_iter`` iterations in all;
* variance of the result from the input variances (``sum w^2 V / (sum w)^2``) or from
  the sample variance;
* output mask: OR over ``S0``, the clipped bit when anything was clipped, the no-data bit
  when nothing was good, rejected-plane mapping, and weight-fraction propagation.

The per-pixel kernel is compiled with numba and runs in parallel over chunks of rows,
writing into caller-supplied output arrays when given so repeated sub-region stacks
reuse memory.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Literal, Mapping, NamedTuple

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .masks import MaskPlanes, standard_planes

__all__ = [
    "IQR_TO_SIGMA",
    "ClippedStats",
    "StackResult",
    "StatsConfig",
    "meanclip",
    "quantile_linear",
    "sorting_network",
    "stack",
]

logger = logging.getLogger(__name__)

#: Gaussian sigma per interquartile range (1 / 1.349), as afw uses for the first clip.
IQR_TO_SIGMA = 0.741301109252802

_STATISTIC_CODES = {"MEAN": 0, "MEDIAN": 1, "MEANCLIP": 2}


class StatsConfig(BaseModel):
    """How to combine a stack of pixels (LSST ``StatisticsControl`` plus the statistic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    statistic: Literal["MEAN", "MEDIAN", "MEANCLIP"] = Field(
        "MEANCLIP", description="Statistic to compute per pixel; LSST statsFlags (coadd statistic)."
    )
    num_sigma_clip: float = Field(
        3.0, gt=0, description="Clip half-width in sigma for MEANCLIP; LSST numSigmaClip, default 3."
    )
    num_iter: int = Field(
        3, ge=1, description="MEANCLIP iterations including the IQR one; LSST numIter, default 3."
    )
    and_mask: int = Field(
        0, description="Inputs with any of these mask bits are ignored; LSST andMask, default 0."
    )
    calc_error_from_input_variance: bool = Field(
        True,
        description="Result variance from input variances; LSST calcErrorFromInputVariance, default True.",
    )
    mask_propagation_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Plane -> rejected-weight fraction above which it is set; LSST maskPropagationThresholds.",
    )
    rejected_mask_map: tuple[tuple[int, int], ...] = Field(
        (), description="(from bits, to bits): rejected inputs' planes mapped onto the output; LSST maskMap."
    )

    @field_validator("mask_propagation_thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for name, threshold in value.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"mask propagation threshold for {name} must be in [0, 1], got {threshold}")
        return value


class StackResult(NamedTuple):
    """Stacked planes and the number of clipped inputs per pixel."""

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray
    n_clipped: np.ndarray


class ClippedStats(NamedTuple):
    """Scalar MEANCLIP result: clipped mean, its sample variance, inputs kept and clipped."""

    mean: float
    variance: float
    n_used: int
    n_clipped: int


# ======================================================================================
# numba kernels
# ======================================================================================


def sorting_network(n: int) -> np.ndarray:
    """Comparator pairs ``(i, j)``, ``i < j``, that sort ``n`` values (Batcher odd-even merge).

    Built for the next power of two and pruned to indices below ``n``: the pruned
    positions would hold +inf padding, which no comparator moves.  Applied to a row of
    pixel stacks at once, every comparator is a vectorised min/max over the row.
    """
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    kept = [pair for pair in pairs if pair[1] < n]
    return np.array(kept, dtype=np.int64).reshape(len(kept), 2)


_JIT = dict(nogil=True, cache=True, error_model="numpy")


@numba.njit(**_JIT)
def _row_gather(
    v: np.ndarray,
    m: np.ndarray,
    wi: float,
    amask: np.int32,
    srt_row: np.ndarray,
    store: bool,
    ngood: np.ndarray,
    or_good: np.ndarray,
    or_all: np.ndarray,
    or_rejected: np.ndarray,
    sw_good: np.ndarray,
) -> None:
    """Add one input row to the good-set counters; good values (else +inf) go to ``srt_row``."""
    inf32 = np.float32(np.inf)
    for x in range(v.shape[0]):
        val = v[x]
        mm = m[x]
        good = ((mm & amask) == 0) & ((val - val) == 0)
        or_all[x] |= mm
        or_rejected[x] |= np.int32(0) if good else mm
        ngood[x] += np.int32(good)
        or_good[x] |= mm if good else np.int32(0)
        sw_good[x] += wi if good else 0.0
        if store:
            srt_row[x] = val if good else inf32


@numba.njit(**_JIT)
def _rejected_weight(
    images: np.ndarray, masks: np.ndarray, weights: np.ndarray, y: int, x: int, amask: np.int32, bit: np.int32
) -> float:
    """Weight of the inputs outside the good set that carry ``bit`` (mask propagation)."""
    total = 0.0
    for i in range(images.shape[0]):
        val = images[i, y, x]
        mm = masks[i, y, x]
        if (((mm & amask) != 0) or not math.isfinite(val)) and ((mm >> bit) & 1) == 1:
            total += weights[i]
    return total


@numba.njit(**_JIT)
def _compare_exchange(a: np.ndarray, b: np.ndarray) -> None:
    for x in range(a.shape[0]):
        lo = a[x]
        hi = b[x]
        s = lo < hi
        a[x] = lo if s else hi
        b[x] = hi if s else lo


@numba.njit(**_JIT)
def _row_accumulate(
    v: np.ndarray,
    m: np.ndarray,
    var: np.ndarray,
    wi: float,
    amask: np.int32,
    centre: np.ndarray,
    half: np.ndarray,
    sw: np.ndarray,
    sww: np.ndarray,
    swd: np.ndarray,
    swdd: np.ndarray,
    swwv: np.ndarray,
    used: np.ndarray,
) -> None:
    """Weighted sums over the inputs within ``half`` of ``centre`` (one input row).

    Deviations are taken from ``centre``, which lies near the mean of the selection, so
    the one-pass variance ``sum w d^2 - (sum w d)^2 / sum w`` loses no precision.
    """
    for x in range(v.shape[0]):
        val = np.float64(v[x])
        d = val - centre[x]
        sel = ((m[x] & amask) == 0) & ((val - val) == 0) & (abs(d) <= half[x])
        sw[x] += wi if sel else 0.0
        sww[x] += wi * wi if sel else 0.0
        swd[x] += wi * d if sel else 0.0
        swdd[x] += wi * d * d if sel else 0.0
        swwv[x] += wi * wi * np.float64(var[x]) if sel else 0.0
        used[x] += np.int32(sel)


@numba.njit(**_JIT)
def _row_accumulate_moments(
    v: np.ndarray,
    m: np.ndarray,
    wi: float,
    amask: np.int32,
    centre: np.ndarray,
    half: np.ndarray,
    sw: np.ndarray,
    sww: np.ndarray,
    swd: np.ndarray,
    swdd: np.ndarray,
    used: np.ndarray,
) -> None:
    """:func:`_row_accumulate` without the input variances (clipping iterations only
    need the moments, and skipping the variance plane saves a third of the reads)."""
    for x in range(v.shape[0]):
        val = np.float64(v[x])
        d = val - centre[x]
        sel = ((m[x] & amask) == 0) & ((val - val) == 0) & (abs(d) <= half[x])
        sw[x] += wi if sel else 0.0
        sww[x] += wi * wi if sel else 0.0
        swd[x] += wi * d if sel else 0.0
        swdd[x] += wi * d * d if sel else 0.0
        used[x] += np.int32(sel)


@numba.njit(**_JIT)
def _quantile_column(srt: np.ndarray, x: int, n: int, q: float) -> float:
    """numpy 'linear' quantile of the sorted good values ``srt[:n, x]``."""
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = lo + 1 if lo + 1 < n else lo
    a = np.float64(srt[lo, x])
    b = np.float64(srt[hi, x])
    return a + (b - a) * (pos - lo)


@numba.njit(**_JIT)
def _stack_rows(
    images: np.ndarray,
    masks: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    y_start: int,
    y_stop: int,
    stat: int,
    k: float,
    n_iter: int,
    amask: np.int32,
    calc_err: bool,
    clipped_bits: np.int32,
    no_good_bits: np.int32,
    map_from: np.ndarray,
    map_to: np.ndarray,
    thr_bits: np.ndarray,
    thr_values: np.ndarray,
    network: np.ndarray,
    out_image: np.ndarray,
    out_mask: np.ndarray,
    out_var: np.ndarray,
    out_nclip: np.ndarray,
) -> None:
    """Stack rows ``y_start:y_stop``: every inner loop runs along x and vectorises."""
    n_in, _, nx = images.shape
    n_thr = thr_bits.shape[0]
    n_map = map_from.shape[0]
    sorting = stat != 0
    iters = n_iter if stat == 2 else 1
    srt = np.empty((n_in if sorting else 1, nx), dtype=np.float32)
    ngood = np.empty(nx, dtype=np.int32)
    or_good = np.empty(nx, dtype=np.int32)
    or_all = np.empty(nx, dtype=np.int32)
    sw_good = np.empty(nx, dtype=np.float64)
    or_rejected = np.empty(nx, dtype=np.int32)
    centre = np.empty(nx, dtype=np.float64)
    half = np.empty(nx, dtype=np.float64)
    iqr_half = np.empty(nx, dtype=np.float64)
    median = np.empty(nx, dtype=np.float64)
    mu = np.empty(nx, dtype=np.float64)
    svar = np.empty(nx, dtype=np.float64)
    sw = np.empty(nx, dtype=np.float64)
    sww = np.empty(nx, dtype=np.float64)
    swd = np.empty(nx, dtype=np.float64)
    swdd = np.empty(nx, dtype=np.float64)
    swwv = np.empty(nx, dtype=np.float64)
    used = np.empty(nx, dtype=np.int32)
    for y in range(y_start, y_stop):
        ngood[:] = 0
        or_good[:] = 0
        or_all[:] = 0
        sw_good[:] = 0.0
        or_rejected[:] = 0
        for i in range(n_in):
            _row_gather(
                images[i, y], masks[i, y], weights[i], amask, srt[i if sorting else 0], sorting,
                ngood, or_good, or_all, or_rejected, sw_good,
            )
        if sorting:
            for p in range(network.shape[0]):
                _compare_exchange(srt[network[p, 0]], srt[network[p, 1]])
            for x in range(nx):
                n = ngood[x]
                if n > 0:
                    q1 = _quantile_column(srt, x, n, 0.25)
                    med = _quantile_column(srt, x, n, 0.5)
                    q3 = _quantile_column(srt, x, n, 0.75)
                else:
                    q1 = med = q3 = np.nan
                centre[x] = med
                median[x] = med
                iqr_half[x] = k * IQR_TO_SIGMA * (q3 - q1)
        for it in range(iters):
            for x in range(nx):
                if stat != 2:
                    half[x] = np.inf
                    if stat == 0:
                        centre[x] = 0.0
                elif it == 0:
                    half[x] = iqr_half[x]
                else:
                    centre[x] = mu[x]
                    if used[x] > 1:
                        sv = svar[x]
                        half[x] = k * math.sqrt(sv if sv > 0.0 else 0.0) if sv == sv else np.nan
                    else:
                        half[x] = iqr_half[x]
            sw[:] = 0.0
            sww[:] = 0.0
            swd[:] = 0.0
            swdd[:] = 0.0
            swwv[:] = 0.0
            used[:] = 0
            input_variance = it + 1 == iters and (calc_err or stat == 1)
            for i in range(n_in):
                if input_variance:
                    _row_accumulate(
                        images[i, y], masks[i, y], variances[i, y], weights[i], amask, centre, half,
                        sw, sww, swd, swdd, swwv, used,
                    )
                else:
                    _row_accumulate_moments(
                        images[i, y], masks[i, y], weights[i], amask, centre, half, sw, sww, swd, swdd, used,
                    )
            for x in range(nx):
                if used[x] > 0:
                    mean_d = swd[x] / sw[x]
                    mu[x] = centre[x] + mean_d
                    s2 = swdd[x] - swd[x] * mean_d
                    denom = sw[x] * sw[x] - sww[x]
                    svar[x] = (s2 / sw[x]) * (sw[x] * sw[x]) / denom if denom > 0 else np.nan
                else:
                    mu[x] = np.nan
                    svar[x] = np.nan
        for x in range(nx):
            n = ngood[x]
            n_clip = 0
            if n == 0:
                out_image[y, x] = np.nan
                out_var[y, x] = np.nan
                out_m = no_good_bits
            else:
                if stat == 1:
                    value = median[x]
                    if calc_err:
                        var = 0.5 * math.pi * swwv[x] / (sw[x] * sw[x])
                    else:
                        var = 0.5 * math.pi * svar[x] / n
                else:
                    value = mu[x]
                    n_clip = n - used[x]
                    if used[x] == 0:
                        var = np.nan
                    elif calc_err:
                        var = swwv[x] / (sw[x] * sw[x])
                    else:
                        var = svar[x] * sww[x] / (sw[x] * sw[x])
                out_image[y, x] = value
                out_var[y, x] = var
                out_m = or_good[x]
                for t in range(n_thr):
                    if ((or_rejected[x] >> thr_bits[t]) & 1) == 0:
                        continue
                    r = _rejected_weight(images, masks, weights, y, x, amask, thr_bits[t])
                    if r > 0.0 and r / (sw_good[x] + r) > thr_values[t]:
                        out_m |= np.int32(1) << thr_bits[t]
            if n_clip > 0:
                out_m |= clipped_bits
            if n_in - n > 0:
                for j in range(n_map):
                    if or_all[x] & map_from[j]:
                        out_m |= map_to[j]
            out_mask[y, x] = out_m
            out_nclip[y, x] = n_clip


@numba.njit(nogil=True, parallel=True, cache=True, error_model="numpy")
def _stack_kernel(
    images: np.ndarray,
    masks: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    stat: int,
    k: float,
    n_iter: int,
    and_mask: int,
    calc_err: bool,
    clipped_bits: int,
    no_good_bits: int,
    map_from: np.ndarray,
    map_to: np.ndarray,
    thr_bits: np.ndarray,
    thr_values: np.ndarray,
    network: np.ndarray,
    n_chunks: int,
    out_image: np.ndarray,
    out_mask: np.ndarray,
    out_var: np.ndarray,
    out_nclip: np.ndarray,
) -> None:
    """Split the rows into ``n_chunks`` contiguous chunks processed in parallel."""
    ny = images.shape[1]
    rows_per = (ny + n_chunks - 1) // n_chunks
    for c in numba.prange(n_chunks):
        _stack_rows(
            images, masks, variances, weights, c * rows_per, min(ny, (c + 1) * rows_per),
            stat, k, n_iter, np.int32(and_mask), calc_err, np.int32(clipped_bits),
            np.int32(no_good_bits), map_from, map_to, thr_bits, thr_values, network,
            out_image, out_mask, out_var, out_nclip,
        )


# ======================================================================================
# public API
# ======================================================================================


def _threshold_arrays(
    thresholds: Mapping[str, float], planes: MaskPlanes
) -> tuple[np.ndarray, np.ndarray]:
    items = sorted((planes.bit(name), float(t)) for name, t in thresholds.items())
    bits = np.array([b for b, _ in items], dtype=np.int32)
    values = np.array([t for _, t in items], dtype=np.float64)
    return bits, values


_EMPTY_NETWORK = np.zeros((0, 2), dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _network(n: int) -> np.ndarray:
    return sorting_network(n)


def _n_chunks(ny: int) -> int:
    """Big row chunks: a couple per thread, so waking threads costs nothing measurable."""
    return max(1, min(ny, 2 * numba.get_num_threads()))


def stack(
    images: np.ndarray,
    masks: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray | None,
    config: StatsConfig,
    *,
    clipped_bit: int,
    no_good_bit: int,
    planes: MaskPlanes | None = None,
    out: StackResult | None = None,
) -> StackResult:
    """Combine ``N`` aligned images pixel by pixel (LSST ``statisticsStack``).

    ``images``/``variances`` are ``(N, ny, nx)`` float32, ``masks`` int32, ``weights``
    ``(N,)`` multiplicative weights (``None``: all 1).  ``clipped_bit`` and
    ``no_good_bit`` are bit *masks* OR-ed in where inputs were clipped / none was good.
    ``planes`` names the bits of ``config.mask_propagation_thresholds`` (default: the
    standard planes).  ``out`` supplies the output arrays to fill (reused buffers).
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, ny, nx), got shape {images.shape}")
    n_in, ny, nx = images.shape
    if n_in == 0:
        raise ValueError("cannot stack zero images")
    masks = np.asarray(masks)
    variances = np.asarray(variances)
    if masks.shape != images.shape or variances.shape != images.shape:
        raise ValueError(
            f"shapes differ: images {images.shape}, masks {masks.shape}, variances {variances.shape}"
        )
    if masks.dtype != np.int32:
        masks = masks.astype(np.int32)
    w = np.ones(n_in, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_in,):
        raise ValueError(f"weights must have shape ({n_in},), got {w.shape}")
    if out is None:
        out = StackResult(
            np.empty((ny, nx), dtype=np.float32),
            np.empty((ny, nx), dtype=np.int32),
            np.empty((ny, nx), dtype=np.float32),
            np.empty((ny, nx), dtype=np.int32),
        )
    else:
        for arr in out:
            if arr.shape != (ny, nx):
                raise ValueError(f"output arrays must have shape {(ny, nx)}, got {arr.shape}")
    thr_bits, thr_values = _threshold_arrays(
        config.mask_propagation_thresholds, standard_planes() if planes is None else planes
    )
    map_from = np.array([a for a, _ in config.rejected_mask_map], dtype=np.int32)
    map_to = np.array([b for _, b in config.rejected_mask_map], dtype=np.int32)
    if ny and nx:
        _stack_kernel(
            images,
            masks,
            variances,
            w,
            _STATISTIC_CODES[config.statistic],
            float(config.num_sigma_clip),
            int(config.num_iter),
            int(np.int32(config.and_mask)),
            bool(config.calc_error_from_input_variance),
            int(np.int32(clipped_bit)),
            int(np.int32(no_good_bit)),
            map_from,
            map_to,
            thr_bits,
            thr_values,
            _network(n_in) if config.statistic != "MEAN" else _EMPTY_NETWORK,
            _n_chunks(ny),
            out.image,
            out.mask,
            out.variance,
            out.n_clipped,
        )
    return out


def quantile_linear(sorted_values: np.ndarray, q: float) -> float:
    """numpy 'linear' quantile of already sorted values (afw's quartile convention)."""
    n = len(sorted_values)
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def meanclip(
    values: np.ndarray,
    k: float,
    n_iter: int,
    weights: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    and_mask: int = 0,
) -> ClippedStats:
    """MEANCLIP of one set of values (§6.1), NaN-safe; used for warp weights.

    Values that are non-finite or whose ``mask`` has an ``and_mask`` bit are ignored.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    good = np.isfinite(x)
    if mask is not None and and_mask:
        good &= (np.asarray(mask).ravel() & np.int32(and_mask)) == 0
    x = x[good]
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()[good]
    n = x.size
    if n == 0:
        return ClippedStats(math.nan, math.nan, 0, 0)
    q1, med, q3 = np.percentile(x, [25.0, 50.0, 75.0])
    iqr_half = k * IQR_TO_SIGMA * (q3 - q1)
    centre, half = float(med), float(iqr_half)
    mu = sample_var = math.nan
    used = 0
    for it in range(n_iter):
        if it > 0:
            centre = mu
            half = k * math.sqrt(max(sample_var, 0.0)) if used > 1 else iqr_half
            if used > 1 and math.isnan(sample_var):
                half = math.nan
        keep = np.abs(x - centre) <= half
        used = int(keep.sum())
        if used == 0:
            mu = sample_var = math.nan
            continue
        xs, ws = x[keep], w[keep]
        sw = ws.sum()
        mu = float(centre + (ws * (xs - centre)).sum() / sw)
        denom = sw * sw - (ws * ws).sum()
        s2 = float((ws * (xs - mu) ** 2).sum())
        sample_var = (s2 / sw) * sw * sw / denom if denom > 0 else math.nan
    return ClippedStats(mu, sample_var, used, n - used)
