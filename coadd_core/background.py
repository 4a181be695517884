"""Sky background on a grid of cells (LSST ``SubtractBackgroundTask`` / ``BackgroundMI``).

ALGORITHMS.md §3: the image is cut into ``nx = ceil(W / bin_size)`` by
``ny = ceil(H / bin_size)`` cells whose edges follow LSST's integer rule
``end_i = min(((i + 1) W + nx // 2) // nx, W)``; each cell gets a 3-sigma, 3-iteration
clipped mean (MEANCLIP) of its pixels without any ``ignored_mask_planes`` bit.  The cell
values are then either approximated by a 2-D Chebyshev polynomial (``use_approx``, the
default) or interpolated between cell centres (Akima spline by default).

Two LSST quirks are kept on purpose so that models agree with LSST's:

* NaN pixels are not skipped (``isNanSafe=False``): an unmasked NaN makes its cell NaN,
  and NaN cells are left out of the fit;
* the Chebyshev fit weights each cell by ``1 / sigma_mean`` (LSST stores the standard
  error, not its square, in the variance plane of its statistics image).

The per-cell statistics run in a numba kernel with a linear-time selection for the
quartiles, so a full 2048 x 4612 CCD (592 cells) takes a few tens of milliseconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.interpolate import Akima1DInterpolator, CubicSpline

from .geom import Box
from .image import MaskedImage

__all__ = [
    "BackgroundConfig",
    "BackgroundModel",
    "TooManyMaskedPixelsError",
    "cell_edges",
    "fit_background",
    "subtract_background",
]

logger = logging.getLogger(__name__)

#: Gaussian sigma per interquartile range, as afw uses for the first clip.
_IQR_TO_SIGMA = 0.741301109252802

InterpStyle = Literal["CONSTANT", "LINEAR", "NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE"]

#: Fewest points each interpolation style needs (afw ``lookupMinInterpPoints``).
_MIN_POINTS: dict[str, int] = {
    "CONSTANT": 1,
    "LINEAR": 2,
    "NATURAL_SPLINE": 3,
    "CUBIC_SPLINE": 3,
    "AKIMA_SPLINE": 5,
}


class TooManyMaskedPixelsError(RuntimeError):
    """Every pixel is masked (or NaN), so no cell has a background value (LSST name)."""


class BackgroundConfig(BaseModel):
    """How to estimate the background (LSST ``SubtractBackgroundConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bin_size: int = Field(128, gt=0, description="Cell side in pixels; LSST binSize, default 128.")
    statistic: Literal["MEANCLIP", "MEAN", "MEDIAN"] = Field(
        "MEANCLIP", description="Cell statistic; LSST statisticsProperty, default 'MEANCLIP'."
    )
    num_sigma_clip: float = Field(
        3.0, gt=0, description="MEANCLIP half-width in sigma; LSST StatisticsControl numSigmaClip, 3."
    )
    num_iter: int = Field(
        3, ge=1, description="MEANCLIP iterations (IQR one included); LSST StatisticsControl numIter, 3."
    )
    ignored_mask_planes: tuple[str, ...] = Field(
        ("BAD", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "NO_DATA"),
        description="Pixels with these planes are left out; LSST ignoredPixelMask.",
    )
    use_approx: bool = Field(
        True, description="Fit a Chebyshev polynomial instead of interpolating; LSST useApprox, True."
    )
    approx_order_x: int = Field(6, ge=0, description="Chebyshev order; LSST approxOrderX, default 6.")
    approx_order_y: int = Field(
        -1, ge=-1, description="Chebyshev order in y, -1 = same as x; LSST approxOrderY, default -1."
    )
    weighting: bool = Field(
        True, description="Weight cells by their statistical error in the fit; LSST weighting, True."
    )
    undersample_style: Literal["REDUCE_INTERP_ORDER", "THROW_EXCEPTION"] = Field(
        "REDUCE_INTERP_ORDER",
        description="Too few cells for the order/style: lower it or fail; LSST undersampleStyle.",
    )
    algorithm: InterpStyle = Field(
        "AKIMA_SPLINE",
        description="Interpolation between cell centres when use_approx is False; LSST algorithm.",
    )

    def order(self) -> int:
        """The Chebyshev order (afw requires equal x and y orders)."""
        oy = self.approx_order_x if self.approx_order_y < 0 else self.approx_order_y
        if oy != self.approx_order_x:
            raise ValueError(
                f"x and y Chebyshev orders must be equal ({self.approx_order_x} != {oy}), as in afw"
            )
        return self.approx_order_x


# -----------------------------------------------------------------------------------
# grid
# -----------------------------------------------------------------------------------
def cell_edges(length: int, bin_size: int) -> np.ndarray:
    """Cell boundaries ``[0, end_0, ..., end_{n-1} = length]`` along one axis (§3 rule)."""
    if length <= 0:
        raise ValueError(f"cannot grid an axis of length {length}")
    n = -(-length // bin_size)
    ends = np.minimum((np.arange(1, n + 1) * length + n // 2) // n, length)
    return np.concatenate(([0], ends)).astype(np.int64)


def _centres(edges: np.ndarray) -> np.ndarray:
    """Cell centres ``orig + size/2 - 0.5`` in local pixel coordinates."""
    orig = edges[:-1].astype(np.float64)
    size = np.diff(edges).astype(np.float64)
    return orig + 0.5 * size - 0.5


# -----------------------------------------------------------------------------------
# numba kernels: per-cell statistics
# -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _select(a: np.ndarray, lo: int, hi: int, k: int) -> float:
    """k-th smallest of ``a[lo:hi+1]`` (partially reorders it in place; Hoare selection)."""
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three as the pivot
        x, y, z = a[lo], a[mid], a[hi]
        if x > y:
            x, y = y, x
        if y > z:
            y = z
            if x > y:
                y = x
        pivot = y
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@numba.njit(nogil=True, cache=True)
def _quantile(a: np.ndarray, n: int, q: float) -> float:
    """numpy 'linear' quantile of ``a[:n]`` by selection (reorders ``a``)."""
    pos = q * (n - 1)
    k = int(math.floor(pos))
    lower = _select(a, 0, n - 1, k)
    if k + 1 >= n or pos == k:
        return lower
    # after selection every element above index k is >= a[k]; the next order statistic
    # is the smallest of them
    upper = a[k + 1]
    for i in range(k + 2, n):
        if a[i] < upper:
            upper = a[i]
    return lower + (upper - lower) * (pos - k)


_N_BINS = 2048


@numba.njit(nogil=True, cache=True)
def _quartiles(
    buf: np.ndarray, n: int, work: np.ndarray, tags: np.ndarray
) -> tuple[float, float, float]:
    """Exact numpy-'linear' (q1, median, q3) of ``buf[:n]`` without reordering it.

    A histogram over the range of a sorted subsample locates the bins holding the six
    order statistics needed; only those few values are sorted.  This avoids the
    mispredicted branches of a selection on every pixel, which dominated the cost;
    when a rank falls outside the histogram the selection is used instead.
    """
    # range from a strided subsample
    step = max(1, n // 256)
    m = 0
    for i in range(0, n, step):
        work[m] = buf[i]
        m += 1
    sub = np.sort(work[:m])
    lo = sub[int(0.02 * (m - 1))]
    hi = sub[int(math.ceil(0.98 * (m - 1)))]
    span = hi - lo
    if not span > 0:
        span = max(abs(lo), 1.0) * 1e-6
    lo -= 0.25 * span
    hi += 0.25 * span
    scale = _N_BINS / (hi - lo)
    hist = np.zeros(_N_BINS + 2, dtype=np.int64)  # [underflow, bins..., overflow]
    for i in range(n):
        v = buf[i]
        if v < lo:
            hist[0] += 1
        elif v >= hi:
            hist[_N_BINS + 1] += 1
        else:
            b = int((v - lo) * scale)
            if b >= _N_BINS:
                b = _N_BINS - 1
            hist[b + 1] += 1
    cum = np.cumsum(hist)
    # ranks needed: floor and floor+1 of each quantile position
    qs = (0.25, 0.5, 0.75)
    ranks = np.empty(6, dtype=np.int64)
    for j in range(3):
        k = int(math.floor(qs[j] * (n - 1)))
        ranks[2 * j] = k
        ranks[2 * j + 1] = min(k + 1, n - 1)
    bins = np.empty(6, dtype=np.int64)
    for j in range(6):
        bins[j] = np.searchsorted(cum, ranks[j], side="right")
        if bins[j] == 0 or bins[j] == _N_BINS + 1:
            # rank among the outliers: fall back to selection
            for i in range(n):
                work[i] = buf[i]
            return (_quantile(work, n, 0.25), _quantile(work, n, 0.5), _quantile(work, n, 0.75))
    # one pass gathers the values of every needed bin, then each bin is sorted alone
    wanted = np.zeros(_N_BINS + 2, dtype=np.bool_)
    for j in range(6):
        wanted[bins[j]] = True
    cnt = 0
    for i in range(n):
        v = buf[i]
        if v >= lo and v < hi:
            b = int((v - lo) * scale)
            if b >= _N_BINS:
                b = _N_BINS - 1
            if wanted[b + 1]:
                work[cnt] = v
                tags[cnt] = b + 1
                cnt += 1
    values = np.empty(6, dtype=np.float64)
    for j in range(6):
        b = bins[j]
        m = 0
        for i in range(cnt):
            if tags[i] == b:
                m += 1
        vals = np.empty(m, dtype=np.float64)
        m = 0
        for i in range(cnt):
            if tags[i] == b:
                vals[m] = work[i]
                m += 1
        vals = np.sort(vals)
        values[j] = vals[ranks[j] - cum[b - 1]]
    out = np.empty(3, dtype=np.float64)
    for j in range(3):
        pos = qs[j] * (n - 1)
        k = math.floor(pos)
        out[j] = values[2 * j] + (values[2 * j + 1] - values[2 * j]) * (pos - k)
    return (out[0], out[1], out[2])


@numba.njit(nogil=True, cache=True)
def _cell_stats(
    image: np.ndarray,
    mask: np.ndarray,
    bad: int,
    xe: np.ndarray,
    ye: np.ndarray,
    statistic: int,
    k: float,
    n_iter: int,
    values: np.ndarray,
    errors: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Fill ``values``/``errors`` (standard error of the statistic)/``counts`` per cell.

    statistic: 0 MEAN, 1 MEDIAN, 2 MEANCLIP.  An unmasked NaN makes the cell NaN.
    """
    nyc = len(ye) - 1
    nxc = len(xe) - 1
    max_w = 0
    max_h = 0
    for i in range(nxc):
        max_w = max(max_w, xe[i + 1] - xe[i])
    for j in range(nyc):
        max_h = max(max_h, ye[j + 1] - ye[j])
    buf = np.empty(max_w * max_h, dtype=np.float64)
    work = np.empty(max_w * max_h, dtype=np.float64)
    tags = np.empty(max_w * max_h, dtype=np.int64)
    for cj in range(nyc):
        for ci in range(nxc):
            n = 0
            has_nan = False
            for y in range(ye[cj], ye[cj + 1]):
                for x in range(xe[ci], xe[ci + 1]):
                    if mask[y, x] & bad:
                        continue
                    v = image[y, x]
                    if not np.isfinite(v):
                        has_nan = True
                    buf[n] = v
                    n += 1
            counts[cj, ci] = n
            if n == 0 or has_nan:
                values[cj, ci] = np.nan
                errors[cj, ci] = np.nan
                continue
            if statistic != 2:
                # plain mean and variance (MEAN, and the MEDIAN error)
                s = 0.0
                for i in range(n):
                    s += buf[i]
                mean = s / n
                ss = 0.0
                for i in range(n):
                    d = buf[i] - mean
                    ss += d * d
                var = ss / (n - 1) if n > 1 else np.nan
                if statistic == 0:
                    values[cj, ci] = mean
                    errors[cj, ci] = math.sqrt(var / n) if n > 1 else np.nan
                    continue
            q1, median, q3 = _quartiles(buf, n, work, tags)
            if statistic == 1:
                values[cj, ci] = median
                errors[cj, ci] = math.sqrt(0.5 * math.pi * var / n) if n > 1 else np.nan
                continue
            iqr_half = k * _IQR_TO_SIGMA * (q3 - q1)
            centre = median
            half = iqr_half
            mu = np.nan
            cvar = np.nan
            used = 0
            for it in range(n_iter):
                if it > 0:
                    centre = mu
                    half = k * math.sqrt(max(cvar, 0.0)) if n > 1 else iqr_half
                if not (np.isfinite(centre) and np.isfinite(half)):
                    mu = np.nan
                    cvar = np.nan
                    break
                # shifted sums in one pass (the shift keeps the variance accurate)
                s = 0.0
                ss = 0.0
                used = 0
                for i in range(n):
                    d = buf[i] - centre
                    if abs(d) <= half:
                        s += d
                        ss += d * d
                        used += 1
                if used == 0:
                    mu = np.nan
                    cvar = np.nan
                    continue
                mu = centre + s / used
                cvar = (ss - s * s / used) / (used - 1) if used > 1 else np.nan
            values[cj, ci] = mu
            errors[cj, ci] = math.sqrt(cvar / used) if used > 1 and np.isfinite(cvar) else np.nan


# -----------------------------------------------------------------------------------
# Chebyshev approximation
# -----------------------------------------------------------------------------------
def _chebyshev_terms(t: np.ndarray, order: int) -> np.ndarray:
    """``T_0..T_order`` at ``t`` (already mapped to [-1, 1]): shape (len(t), order + 1)."""
    out = np.empty((len(t), order + 1), dtype=np.float64)
    out[:, 0] = 1.0
    if order >= 1:
        out[:, 1] = t
    for n in range(2, order + 1):
        out[:, n] = 2.0 * t * out[:, n - 1] - out[:, n - 2]
    return out


@numba.njit(nogil=True, cache=True, fastmath=True)
def _evaluate_separable(row_coeffs: np.ndarray, tx_t: np.ndarray) -> np.ndarray:
    """``out[y, x] = sum_i row_coeffs[y, i] * tx_t[i, x]`` as float32 (no BLAS threads)."""
    ny = row_coeffs.shape[0]
    nt, nx = tx_t.shape
    out = np.empty((ny, nx), dtype=np.float32)
    basis = tx_t.astype(np.float32)
    acc = np.empty(nx, dtype=np.float32)
    for y in range(ny):
        for x in range(nx):
            acc[x] = 0.0
        for i in range(nt):
            c = np.float32(row_coeffs[y, i])
            b = basis[i]
            for x in range(nx):
                acc[x] += c * b[x]
        row = out[y]
        for x in range(nx):
            row[x] = acc[x]
    return out


def _to_unit(pos: np.ndarray, length: int) -> np.ndarray:
    """Map local pixel positions over the box ``[-0.5, length - 0.5]`` onto [-1, 1]."""
    return (np.asarray(pos, dtype=np.float64) + 0.5) * (2.0 / length) - 1.0


def _fit_chebyshev(
    xc: np.ndarray, yc: np.ndarray, values: np.ndarray, errors: np.ndarray, width: int, height: int,
    order: int, weighting: bool,
) -> np.ndarray:
    """Triangular (i + j <= order) 2-D Chebyshev coefficients ``C[i (x), j (y)]``."""
    tx = _chebyshev_terms(_to_unit(xc, width), order)
    ty = _chebyshev_terms(_to_unit(yc, height), order)
    terms = [(i, j) for i in range(order + 1) for j in range(order + 1 - i)]
    # rows: cells (y-major), columns: terms
    design = np.einsum("xi,yj->yxij", tx, ty).reshape(len(yc) * len(xc), order + 1, order + 1)
    design = np.stack([design[:, i, j] for i, j in terms], axis=1)
    v = values.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        w = 1.0 / errors.ravel() if weighting else np.ones_like(v)
    # as in afw, a cell whose weight is not finite (zero or NaN error) is left out
    good = np.isfinite(v) & np.isfinite(w)
    if not good.any():
        raise TooManyMaskedPixelsError("no cell has a finite value and weight to fit")
    # weighted normal equations, as afw solves them (a LAPACK least-squares call costs
    # far more than the fit itself on these few cells)
    a = design[good]
    aw = a * w[good][:, None]
    try:
        coef = np.linalg.solve(aw.T @ a, aw.T @ v[good])
    except np.linalg.LinAlgError:
        sw = np.sqrt(w[good])
        coef, *_ = np.linalg.lstsq(a * sw[:, None], v[good] * sw, rcond=None)
    out = np.zeros((order + 1, order + 1), dtype=np.float64)
    for (i, j), c in zip(terms, coef):
        out[i, j] = c
    return out


# -----------------------------------------------------------------------------------
# interpolation between cell centres
# -----------------------------------------------------------------------------------
def _max_style(n: int) -> str:
    """Richest style ``n`` points support (afw ``lookupMaxInterpStyle``)."""
    if n < 1:
        raise ValueError("cannot interpolate without points")
    if n == 1:
        return "CONSTANT"
    if n == 2:
        return "LINEAR"
    if n < 5:
        return "CUBIC_SPLINE"
    return "AKIMA_SPLINE"


def _interpolate(xs: np.ndarray, ys: np.ndarray, xnew: np.ndarray, style: str) -> np.ndarray:
    """Interpolate ``ys`` (n, m) given at ``xs`` onto ``xnew``: result (len(xnew), m).

    Outside ``[xs[0], xs[-1]]`` the value is extended quadratically from the end point
    with the interpolant's first and second derivatives there, as afw does.
    """
    m = ys.shape[1]
    if style == "CONSTANT" or len(xs) == 1:
        return np.broadcast_to(ys.mean(axis=0), (len(xnew), m)).copy()
    if style == "LINEAR":
        slope = np.diff(ys, axis=0) / np.diff(xs)[:, None]
        idx = np.clip(np.searchsorted(xs, xnew, side="right") - 1, 0, len(xs) - 2)
        return ys[idx] + slope[idx] * (xnew - xs[idx])[:, None]
    if style == "AKIMA_SPLINE":
        interp: Any = Akima1DInterpolator(xs, ys, axis=0)
    else:  # natural cubic spline (GSL cspline) for NATURAL_SPLINE and CUBIC_SPLINE
        interp = CubicSpline(xs, ys, axis=0, bc_type="natural")
    out = np.asarray(interp(xnew), dtype=np.float64)
    d1 = interp.derivative(1)
    d2 = interp.derivative(2)
    for end, outside in ((xs[0], xnew < xs[0]), (xs[-1], xnew > xs[-1])):
        if outside.any():
            dx = (xnew[outside] - end)[:, None]
            out[outside] = interp(end)[None, :] + dx * d1(end)[None, :] + 0.5 * dx * dx * d2(end)[None, :]
    return out


def _interpolate_grid(
    xc: np.ndarray, yc: np.ndarray, values: np.ndarray, xpix: np.ndarray, ypix: np.ndarray,
    style: str, undersample_style: str,
) -> np.ndarray:
    """afw's two-pass interpolation: each cell column in y, then each row in x."""
    ny, nx = values.shape
    smallest = min(nx, ny)
    if smallest < _MIN_POINTS[style]:
        if undersample_style == "THROW_EXCEPTION":
            raise ValueError(f"{nx} x {ny} cells are too few for {style} interpolation")
        style = _max_style(smallest)
    columns = np.full((len(ypix), nx), np.nan)
    for i in range(nx):
        good = np.isfinite(values[:, i])
        n = int(good.sum())
        if n == 0:
            continue
        col_style = style
        if n < _MIN_POINTS[style]:
            if undersample_style == "THROW_EXCEPTION":
                raise ValueError(f"cell column {i} has too few good cells for {style}")
            col_style = _max_style(n)
        columns[:, i] = _interpolate(yc[good], values[good, i][:, None], ypix, col_style)[:, 0]
    usable = np.isfinite(columns[0])
    n = int(usable.sum())
    if n == 0:
        raise TooManyMaskedPixelsError("no cell column has a background value")
    row_style = style
    if n < _MIN_POINTS[style]:
        if undersample_style == "THROW_EXCEPTION":
            raise ValueError(f"only {n} usable cell columns for {style}")
        row_style = _max_style(n)
    return _interpolate(xc[usable], columns[:, usable].T, xpix, row_style).T


# -----------------------------------------------------------------------------------
# the model
# -----------------------------------------------------------------------------------
def _nan_to_none(a: np.ndarray) -> list[Any]:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in np.asarray(a, dtype=float)]


def _none_to_nan(rows: list[list[Any]]) -> np.ndarray:
    return np.array([[math.nan if v is None else float(v) for v in row] for row in rows], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class BackgroundModel:
    """Cell statistics and the smooth model through them (LSST ``BackgroundMI`` + control).

    ``x_edges``/``y_edges`` are cell boundaries in pixels from the box origin;
    ``values``/``errors``/``n_pixels`` are (ny, nx) per-cell results (NaN where a cell had
    no usable pixel).  With ``use_approx`` the model is the Chebyshev polynomial with
    ``coefficients[i, j]`` of ``T_i(x) T_j(y)`` (i + j <= order) over the box mapped to
    [-1, 1]; otherwise ``algorithm`` interpolates between cell centres.
    """

    bbox: Box
    x_edges: np.ndarray
    y_edges: np.ndarray
    values: np.ndarray
    errors: np.ndarray
    n_pixels: np.ndarray
    use_approx: bool
    order: int
    weighting: bool
    algorithm: str
    undersample_style: str
    coefficients: np.ndarray | None = field(default=None)

    # -- geometry ------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """Number of cells (ny, nx)."""
        return self.values.shape  # type: ignore[return-value]

    @property
    def x_centers(self) -> np.ndarray:
        """Cell centres in parent x coordinates."""
        return _centres(self.x_edges) + self.bbox.x0

    @property
    def y_centers(self) -> np.ndarray:
        """Cell centres in parent y coordinates."""
        return _centres(self.y_edges) + self.bbox.y0

    @property
    def mean_level(self) -> float:
        """Mean of the finite cell values (a one-number summary of the sky)."""
        good = np.isfinite(self.values)
        return float(self.values[good].mean()) if good.any() else math.nan

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, bbox: Box | None = None) -> np.ndarray:
        """The background model (float32) on ``bbox`` (default: the whole fitted box)."""
        box = self.bbox if bbox is None else bbox
        if not self.bbox.contains(box) or box.is_empty():
            raise ValueError(f"box {box} is not inside the background's box {self.bbox}")
        xpix = np.arange(box.x0, box.x1 + 1, dtype=np.float64) - self.bbox.x0
        ypix = np.arange(box.y0, box.y1 + 1, dtype=np.float64) - self.bbox.y0
        if self.use_approx:
            assert self.coefficients is not None
            tx = _chebyshev_terms(_to_unit(xpix, self.bbox.width), self.order)
            ty = _chebyshev_terms(_to_unit(ypix, self.bbox.height), self.order)
            return _evaluate_separable(ty @ self.coefficients.T, np.ascontiguousarray(tx.T))
        else:
            out = _interpolate_grid(
                _centres(self.x_edges), _centres(self.y_edges), self.values, xpix, ypix,
                self.algorithm, self.undersample_style,
            )
        return out.astype(np.float32)

    # -- serialisation (the 'calexpBackground' dataset) -----------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description (NaN written as null)."""
        return {
            "bbox": self.bbox.to_list(),
            "x_edges": [int(v) for v in self.x_edges],
            "y_edges": [int(v) for v in self.y_edges],
            "values": _nan_to_none(self.values),
            "errors": _nan_to_none(self.errors),
            "n_pixels": [[int(v) for v in row] for row in self.n_pixels],
            "use_approx": bool(self.use_approx),
            "order": int(self.order),
            "weighting": bool(self.weighting),
            "algorithm": self.algorithm,
            "undersample_style": self.undersample_style,
            "coefficients": None if self.coefficients is None else _nan_to_none(self.coefficients),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BackgroundModel":
        coefficients = data.get("coefficients")
        return cls(
            bbox=Box.from_list(data["bbox"]),
            x_edges=np.asarray(data["x_edges"], dtype=np.int64),
            y_edges=np.asarray(data["y_edges"], dtype=np.int64),
            values=_none_to_nan(data["values"]),
            errors=_none_to_nan(data["errors"]),
            n_pixels=np.asarray(data["n_pixels"], dtype=np.int64),
            use_approx=bool(data["use_approx"]),
            order=int(data["order"]),
            weighting=bool(data["weighting"]),
            algorithm=str(data["algorithm"]),
            undersample_style=str(data["undersample_style"]),
            coefficients=None if coefficients is None else _none_to_nan(coefficients),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BackgroundModel):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = f"Chebyshev order {self.order}" if self.use_approx else self.algorithm
        return f"BackgroundModel(bbox={self.bbox}, cells={self.shape[1]}x{self.shape[0]}, {kind})"


_STATISTIC = {"MEAN": 0, "MEDIAN": 1, "MEANCLIP": 2}


def fit_background(mi: MaskedImage, config: BackgroundConfig = BackgroundConfig()) -> BackgroundModel:
    """Measure the cell statistics of ``mi`` and fit the smooth background model (§3)."""
    height, width = mi.shape
    bad = 0
    for name in config.ignored_mask_planes:
        if name in mi.planes:
            bad |= mi.planes.bitmask(name)
    xe = cell_edges(width, config.bin_size)
    ye = cell_edges(height, config.bin_size)
    values = np.empty((len(ye) - 1, len(xe) - 1), dtype=np.float64)
    errors = np.empty_like(values)
    counts = np.empty(values.shape, dtype=np.int64)
    _cell_stats(
        mi.image, mi.mask, np.int32(bad), xe, ye, _STATISTIC[config.statistic],
        float(config.num_sigma_clip), int(config.num_iter), values, errors, counts,
    )
    if not counts.any():
        raise TooManyMaskedPixelsError(
            f"every pixel of {mi.bbox} has one of {list(config.ignored_mask_planes)}"
        )
    if not np.isfinite(values).any():
        raise TooManyMaskedPixelsError(
            f"no cell of {mi.bbox} has a finite background value (all pixels masked or NaN)"
        )
    n_nan = int((~np.isfinite(values) & (counts > 0)).sum())
    if n_nan:
        logger.warning("%d background cells hold unmasked NaN pixels and are left out", n_nan)
    ny, nx = values.shape
    order = config.order()
    coefficients = None
    if config.use_approx:
        if min(nx, ny) <= order:
            if config.undersample_style == "THROW_EXCEPTION":
                raise ValueError(f"{nx} x {ny} cells are too few for a Chebyshev order {order}")
            order = min(nx, ny) - 1
        coefficients = _fit_chebyshev(
            _centres(xe), _centres(ye), values, errors, width, height, order, config.weighting
        )
    model = BackgroundModel(
        bbox=mi.bbox,
        x_edges=xe,
        y_edges=ye,
        values=values,
        errors=errors,
        n_pixels=counts,
        use_approx=config.use_approx,
        order=order,
        weighting=config.weighting,
        algorithm=config.algorithm,
        undersample_style=config.undersample_style,
        coefficients=coefficients,
    )
    logger.debug("fitted %r, mean level %.3f", model, model.mean_level)
    return model


def subtract_background(mi: MaskedImage, config: BackgroundConfig = BackgroundConfig()) -> BackgroundModel:
    """Fit the background of ``mi`` and subtract it in place; returns the model.

    The variance plane is left alone: the model is smooth and its error negligible per
    pixel, as LSST treats it.
    """
    model = fit_background(mi, config)
    mi.image -= model.evaluate()
    return model
