"""Serial overscan measurement (LSST ``OverscanCorrectionTask``, ALGORITHMS.md §2.2).

The bias level of an amplifier is read from its serial overscan columns over the data
rows. Constant fit types give one number; per-row types give one value per data row
after rejecting outlier pixels row by row (a bleed trail spilling into the overscan
would otherwise drag the level); polynomial and spline types smooth the per-row means.
Rows with no usable pixel are filled from their neighbours so no row is left without a
level. The model is subtracted by the caller, fused with trimming and assembly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numba
import numpy as np

from coadd_core.calib._stats import clipped_mean
from coadd_core.camera import Amplifier
from coadd_core.geom import Box
from coadd_core.isr.config import OverscanConfig

__all__ = ["OverscanResult", "overscan_box", "fit_overscan", "fill_masked_rows"]

log = logging.getLogger(__name__)

# LSST rounds afw's 0.7413 to 0.74 in its per-row outlier rejection
_ROW_IQR_TO_SIGMA = 0.74
_FILL_NEIGHBOURS = 5
_MIN_SPLINE_BINS = 5


@dataclass(frozen=True)
class OverscanResult:
    """The overscan model of one amplifier and its statistics (ADU).

    ``model`` is a float (constant types) or one value per data row (float64).
    ``mean``/``median``/``sigma`` describe the model; the ``residual_*`` values describe
    the unmasked overscan pixels after subtracting it. ``n_masked`` counts overscan
    pixels left out of the fit (masked planes, max deviation, outliers).
    """

    model: float | np.ndarray
    mean: float
    median: float
    sigma: float
    residual_mean: float
    residual_median: float
    residual_sigma: float
    n_masked: int

    @property
    def is_vector(self) -> bool:
        return isinstance(self.model, np.ndarray)

    def row_model(self, n_rows: int) -> np.ndarray:
        """The model as one value per data row."""
        if isinstance(self.model, np.ndarray):
            return self.model
        return np.full(n_rows, float(self.model))


def overscan_box(amp: Amplifier, config: OverscanConfig) -> Box:
    """Serial overscan columns over the amp's data rows, minus the skipped columns.

    Leading columns are those next to the data (high x for an overscan left of the data).
    """
    bsec = amp.raw_serial_overscan_bbox
    data = amp.raw_data_bbox
    if bsec.is_empty():
        return bsec
    lead, trail = config.leading_columns_to_skip, config.trailing_columns_to_skip
    if data.x0 > bsec.x0:  # overscan left of the data: leading columns at the right
        x0, x1 = bsec.x0 + trail, bsec.x1 - lead
    else:
        x0, x1 = bsec.x0 + lead, bsec.x1 - trail
    y0, y1 = max(bsec.y0, data.y0), min(bsec.y1, data.y1)
    if x1 < x0 or y1 < y0:
        return Box(x0, y0, x0 - 1, y0 - 1)
    return Box(x0, y0, x1, y1)


@numba.njit(cache=True, nogil=True)
def _row_quartiles(values: np.ndarray) -> np.ndarray:
    """(q1, median, q3) of every row over all its pixels (numpy 'linear')."""
    ny, nx = values.shape
    out = np.empty((ny, 3), dtype=np.float64)
    for j in range(ny):
        s = np.sort(values[j])
        for q in range(3):
            pos = 0.25 * (q + 1) * (nx - 1)
            lo = int(math.floor(pos))
            hi = min(lo + 1, nx - 1)
            out[j, q] = s[lo] + (pos - lo) * (s[hi] - s[lo])
    return out


@numba.njit(cache=True, nogil=True)
def _row_collapse(values: np.ndarray, masked: np.ndarray, use_median: bool) -> np.ndarray:
    """Median or mean of the unmasked pixels of each row; NaN where none."""
    ny, nx = values.shape
    out = np.empty(ny, dtype=np.float64)
    buf = np.empty(nx, dtype=np.float64)
    for j in range(ny):
        n = 0
        for i in range(nx):
            if not masked[j, i]:
                buf[n] = values[j, i]
                n += 1
        if n == 0:
            out[j] = np.nan
        elif use_median:
            s = np.sort(buf[:n])
            h = n // 2
            out[j] = s[h] if n % 2 == 1 else 0.5 * (s[h - 1] + s[h])
        else:
            acc = 0.0
            for k in range(n):
                acc += buf[k]
            out[j] = acc / n
    return out


def fill_masked_rows(vector: np.ndarray) -> np.ndarray:
    """Fill NaN entries with the median of up to 5 valid neighbours each side.

    Each contiguous NaN run takes the median of the 5 values before and the 5 after
    it (fewer at the ends); with no valid value at all the median of all valid values,
    or 0 if there is none.
    """
    out = np.asarray(vector, dtype=np.float64).copy()
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    good = out[~bad]
    default = float(np.median(good)) if good.size else 0.0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], bad.astype(np.int8), [0]))))
    valid = np.where(bad, np.nan, out)
    for start, stop in zip(edges[::2], edges[1::2]):
        neighbourhood = np.concatenate(
            (valid[max(start - _FILL_NEIGHBOURS, 0) : start], valid[stop : stop + _FILL_NEIGHBOURS])
        )
        neighbourhood = neighbourhood[np.isfinite(neighbourhood)]
        out[start:stop] = float(np.median(neighbourhood)) if neighbourhood.size else default
    return out


def _mask_row_outliers(values: np.ndarray, nsigma: float) -> np.ndarray:
    """Pixels more than nsigma robust sigmas from their row median (LSST maskOutliers)."""
    q = _row_quartiles(values)
    sigma = _ROW_IQR_TO_SIGMA * (q[:, 2] - q[:, 0])
    typical = float(np.median(sigma))
    # a much wider row than usual probably holds a bleed: judge it by the typical width
    sigma = np.where(sigma > 2.0 * typical, typical, sigma)
    return np.abs(values - q[:, 1:2]) > nsigma * sigma[:, None]


def _spline_model(indices: np.ndarray, collapsed: np.ndarray, n_bins: int, kind: str) -> np.ndarray:
    from scipy.interpolate import Akima1DInterpolator, CubicSpline

    n_bins = max(int(n_bins), 1)
    edges = np.linspace(indices[0], indices[-1], n_bins + 1)
    which = np.clip(np.searchsorted(edges, indices, side="right") - 1, 0, n_bins - 1)
    ok = np.isfinite(collapsed)
    counts = np.bincount(which[ok], minlength=n_bins)
    sums = np.bincount(which[ok], weights=collapsed[ok], minlength=n_bins)
    centres = np.bincount(which[ok], weights=indices[ok], minlength=n_bins)
    have = counts > 0
    values = sums[have] / counts[have]
    centres = centres[have] / counts[have]
    if values.size < _MIN_SPLINE_BINS:
        log.warning("overscan %s: only %d populated bins; using a constant", kind, values.size)
        return np.full(indices.size, float(values[0]) if values.size else 0.0)
    if kind == "AKIMA_SPLINE":
        spline = Akima1DInterpolator(centres, values, extrapolate=True)
        return np.asarray(spline(indices), dtype=np.float64)
    # afw's NATURAL_SPLINE and CUBIC_SPLINE are both GSL natural cubic splines
    return np.asarray(CubicSpline(centres, values, bc_type="natural", extrapolate=True)(indices))


def _fit_vector(values: np.ndarray, masked: np.ndarray, config: OverscanConfig) -> np.ndarray:
    outliers = _mask_row_outliers(values, config.num_sigma_clip)
    use = masked | outliers
    fit_type = config.fit_type
    if fit_type == "MEDIAN_PER_ROW":
        data = np.trunc(values) if config.overscan_is_int else values
        return fill_masked_rows(_row_collapse(np.ascontiguousarray(data), use, True))
    collapsed = fill_masked_rows(_row_collapse(values, use, False))
    if fit_type == "MEAN_PER_ROW":
        return collapsed
    n = collapsed.size
    indices = 2.0 * np.arange(n) / float(n) - 1.0
    poly = np.polynomial
    if fit_type in ("POLY", "CHEB", "LEG"):
        fit, val = {
            "POLY": (poly.polynomial.polyfit, poly.polynomial.polyval),
            "CHEB": (poly.chebyshev.chebfit, poly.chebyshev.chebval),
            "LEG": (poly.legendre.legfit, poly.legendre.legval),
        }[fit_type]
        return np.asarray(val(indices, fit(indices, collapsed, config.order)), dtype=np.float64)
    return _spline_model(indices, collapsed, config.order, fit_type)


def _constant(values: np.ndarray, config: OverscanConfig) -> float:
    if config.fit_type == "MEDIAN":
        data = np.trunc(values) if config.overscan_is_int else values
        return float(np.median(data))
    if config.fit_type == "MEAN":
        return float(np.mean(values))
    return clipped_mean(values, config.num_sigma_clip, config.num_iter)[0]


def _stdev_clip(values: np.ndarray, config: OverscanConfig) -> float:
    if values.size < 2:
        return math.nan
    var = clipped_mean(values, config.num_sigma_clip, config.num_iter)[1]
    return math.sqrt(var) if math.isfinite(var) and var >= 0 else math.nan


def fit_overscan(
    overscan: np.ndarray, masked: np.ndarray | None, config: OverscanConfig
) -> tuple[OverscanResult, np.ndarray]:
    """Measure the overscan level of one amp from its overscan pixels (rows x columns).

    ``masked`` flags pixels already in a rejected plane (BAD, SAT). Returns the result
    and the pixels newly rejected for lying more than ``max_deviation`` from the median
    (which the caller marks BAD).
    """
    values = np.asarray(overscan, dtype=np.float64)
    masked = np.zeros(values.shape, dtype=bool) if masked is None else np.asarray(masked, dtype=bool)
    deviant = np.zeros(values.shape, dtype=bool)
    if values.size == 0 or masked.all():
        log.warning("overscan has no unmasked pixels; using 0")
        zero = 0.0 if not config.is_per_row else np.zeros(values.shape[0])
        return (
            OverscanResult(zero, 0.0, 0.0, 0.0, math.nan, math.nan, math.nan, int(values.size)),
            deviant,
        )
    med = float(np.median(values[~masked]))
    diff = values - med
    deviant = ((np.abs(diff) if config.do_absolute_max_deviation else diff) > config.max_deviation) & ~masked
    rejected = masked | deviant
    if rejected.all():
        log.warning("every overscan pixel deviates by more than %g ADU; using the median", config.max_deviation)
        rejected = masked
    model: float | np.ndarray
    if config.is_per_row:
        model = _fit_vector(values, rejected, config)
        finite = model[np.isfinite(model)]
        if finite.size:
            m_mean, m_var, _ = clipped_mean(finite, config.num_sigma_clip, config.num_iter)
            m_sigma = math.sqrt(m_var) if math.isfinite(m_var) and m_var >= 0 else 0.0
            mean, median = float(np.mean(finite)), float(np.median(finite))
        else:
            mean = median = m_sigma = math.nan
        resid = values - model[:, None]
    else:
        model = _constant(values[~rejected], config)
        mean = median = model
        m_sigma = 0.0
        resid = values - model
    good = resid[~rejected]
    result = OverscanResult(
        model=model,
        mean=mean,
        median=median,
        sigma=m_sigma,
        residual_mean=float(np.mean(good)) if good.size else math.nan,
        residual_median=float(np.median(good)) if good.size else math.nan,
        residual_sigma=_stdev_clip(good, config),
        n_masked=int(rejected.sum()),
    )
    return result, deviant

