"""Numba resampling kernels: Lanczos-n and bilinear weights and the row-block warper.

Everything here works on plain arrays in *local* index coordinates (array index = pixel
position); :mod:`coadd_core.warp.resample` handles boxes, WCSs and chunking.

The Lanczos weights are computed exactly (no lookup table) but without calling ``sin``
per tap: for a fraction ``f`` the taps sit at ``u = f - k`` for integer ``k``, so
``sin(pi u) = (-1)^k sin(pi f)`` and ``sin(pi u / n)`` follows from ``sin``/``cos`` of
``pi f / n`` and precomputed ``sin``/``cos`` of ``pi k / n`` (the tap next to a fraction
near 1 gets its own sine, where that difference would cancel).  The sines and cosines
come from short polynomials: float64 (1e-16) in :func:`kernel_weights`, float32 (1e-7,
eight lanes per vector) for the warper's whole-row weights, far below the precision of
float32 pixels.

The warper processes an output row in passes over the whole row (positions, weights),
then sums the taps run by run where consecutive output pixels read the same source rows
and consecutive columns (contiguous loads, vectorised), with the same summation order
pixel by pixel elsewhere, so a pixel's value never depends on how rows are split.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

__all__ = [
    "KERNEL_ORDERS",
    "affine_resample",
    "grow_block_flags",
    "kernel_weights",
    "lanczos",
    "ramp_correct",
    "warp_block",
    "warp_rows",
]

#: Kernel name -> order ``n``: ``2 n`` taps per axis at offsets ``-(n-1) .. n`` from
#: ``floor(position)``.  Bilinear is order 1 (taps 0 and 1).
KERNEL_ORDERS: dict[str, int] = {"bilinear": 1, "lanczos3": 3, "lanczos4": 4, "lanczos5": 5}

#: Source positions closer than this (pixels) to a pixel centre are taken as exact.
SNAP = 1e-9

#: log2 of the side of the source blocks summarised by :func:`grow_block_flags`.
GROW_BLOCK_SHIFT = 3

_MAX_TAPS = 10  # lanczos5

# Taylor coefficients (-1)^k / (2k+1)! and (-1)^k / (2k)!, enough terms for |t| <= pi/2.
_S = (
    1.0,
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5040.0,
    1.0 / 362880.0,
    -1.0 / 39916800.0,
    1.0 / 6227020800.0,
    -1.0 / 1307674368000.0,
    1.0 / 355687428096000.0,
    -1.0 / 121645100408832000.0,
    1.0 / 51090942171709440000.0,
)
_C = (
    1.0,
    -1.0 / 2.0,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40320.0,
    -1.0 / 3628800.0,
    1.0 / 479001600.0,
    -1.0 / 87178291200.0,
    1.0 / 20922789888000.0,
    -1.0 / 6402373705728000.0,
    1.0 / 2432902008176640000.0,
)
S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10 = _S
C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10 = _C


def _tap_trig_tables() -> tuple[np.ndarray, np.ndarray]:
    """``sin`` and ``cos`` of ``pi k / n`` for tap ``idx`` (``k = idx - (n - 1)``), per order n."""
    sin_t = np.zeros((_MAX_TAPS // 2 + 1, _MAX_TAPS))
    cos_t = np.zeros((_MAX_TAPS // 2 + 1, _MAX_TAPS))
    for n in range(2, _MAX_TAPS // 2 + 1):
        for idx in range(2 * n):
            k = idx - (n - 1)
            sin_t[n, idx] = round(math.sin(math.pi * k / n), 15) if k % n == 0 else math.sin(math.pi * k / n)
            cos_t[n, idx] = round(math.cos(math.pi * k / n), 15) if (2 * k) % n == 0 else math.cos(math.pi * k / n)
    return sin_t, cos_t


_TAP_SIN, _TAP_COS = _tap_trig_tables()

# Unsigned offsets: indexing with unsigned integers spares numba's negative-index
# wraparound code, which otherwise dominates the inner loops.
U1, U2, U3, U4, U5, U6 = (np.uint64(i) for i in range(1, 7))


@njit(nogil=True, cache=True, error_model="numpy")
def _sin_small(t: float) -> float:
    """sin(t) for |t| <= pi/2 (error < 1e-16)."""
    t2 = t * t
    p = S10
    p = p * t2 + S9
    p = p * t2 + S8
    p = p * t2 + S7
    p = p * t2 + S6
    p = p * t2 + S5
    p = p * t2 + S4
    p = p * t2 + S3
    p = p * t2 + S2
    p = p * t2 + S1
    p = p * t2 + S0
    return p * t


@njit(nogil=True, cache=True, error_model="numpy")
def _cos_small(t: float) -> float:
    """cos(t) for |t| <= pi/2 (error < 1e-16)."""
    t2 = t * t
    p = C10
    p = p * t2 + C9
    p = p * t2 + C8
    p = p * t2 + C7
    p = p * t2 + C6
    p = p * t2 + C5
    p = p * t2 + C4
    p = p * t2 + C3
    p = p * t2 + C2
    p = p * t2 + C1
    return p * t2 + C0


PI32 = np.float32(math.pi)
_S32 = tuple(np.float32(v) for v in _S[:7])
_C32 = tuple(np.float32(v) for v in _C[:7])
F1, F3, F5, F7, F9, F11, F13 = _S32
G0, G2, G4, G6, G8, G10, G12 = _C32


@njit(nogil=True, cache=True, error_model="numpy")
def _sin_small32(t: np.float32) -> np.float32:
    """float32 sin(t) for |t| <= pi/2 (error < 1e-7)."""
    t2 = t * t
    return t * (F1 + t2 * (F3 + t2 * (F5 + t2 * (F7 + t2 * (F9 + t2 * (F11 + t2 * F13))))))


@njit(nogil=True, cache=True, error_model="numpy")
def _cos_small32(t: np.float32) -> np.float32:
    """float32 cos(t) for |t| <= pi/2 (error < 1e-7)."""
    t2 = t * t
    return G0 + t2 * (G2 + t2 * (G4 + t2 * (G6 + t2 * (G8 + t2 * (G10 + t2 * G12)))))


@njit(cache=True, error_model="numpy")
def lanczos(t: float, n: int) -> float:
    """Reference Lanczos-n value ``sinc(pi t) sinc(pi t / n)`` (0 for ``|t| >= n``)."""
    if t == 0.0:
        return 1.0
    if abs(t) >= n:
        return 0.0
    a = math.pi * t
    return math.sin(a) * math.sin(a / n) * n / (a * a)


@njit(nogil=True, cache=True, error_model="numpy")
def kernel_weights(f: float, n: int, out: np.ndarray) -> float:
    """Fill ``out[:2n]`` with the weights of taps ``-(n-1) .. n`` for fraction ``f``; return their sum.

    ``f`` is in [0, 1).  Order 1 is the bilinear kernel ``(1 - f, f)``.  At ``f == 0``
    every Lanczos tap but the central one is exactly zero, so a zero shift reproduces
    the source exactly; fractions below ``SNAP`` count as zero.
    """
    if n == 1:
        out[0] = 1.0 - f
        out[1] = f
        return 1.0
    ntaps = 2 * n
    if f < SNAP:
        for k in range(ntaps):
            out[k] = 0.0
        out[n - 1] = 1.0
        return 1.0
    # sin(pi f) from the reduced argument min(f, 1 - f) in [0, 1/2]
    g = f if f <= 0.5 else 1.0 - f
    sin_pf = _sin_small(math.pi * g)
    theta = math.pi * f / n  # in [0, pi/n) <= pi/2
    s = _sin_small(theta)
    c = _cos_small(theta)
    s1 = _sin_small(math.pi * (1.0 - f) / n)
    inv_pi2 = n / (math.pi * math.pi)
    total = 0.0
    for idx in range(ntaps):
        k = idx - (n - 1)  # tap offset from floor(position)
        u = f - k
        # sin(pi (f - k)) = (-1)^k sin(pi f);  sin(pi (f - k) / n) by the angle difference,
        # except at k = 1 where that difference cancels as f -> 1 while u^2 -> 0
        sk = _TAP_SIN[n, idx]
        ck = _TAP_COS[n, idx]
        sign = 1.0 if (k & 1) == 0 else -1.0
        sin_un = -s1 if k == 1 else s * ck - c * sk
        w = sign * sin_pf * sin_un * inv_pi2 / (u * u)
        out[idx] = w
        total += w
    return total


@njit(nogil=True, cache=True, error_model="numpy")
def ramp_correct(f: float, n: int, out: np.ndarray) -> None:
    """Adjust the Lanczos weights ``out[:2n]`` for fraction ``f`` so that, once normalised,
    they reproduce a linear ramp exactly (first moment ``sum w_k (k - f) = 0``); their sum
    is unchanged.

    Normalised Lanczos3 moves a ramp, hence a star's centroid, by up to 0.020 px
    (phase 0.77), and with a 1 % scale difference the slowly drifting phase makes star
    fluxes ripple by ~0.2 %.  The correction is ``|w_k| (a + b (k - f))``: proportional
    to the tap's own weight, so the kernel keeps its taper and its exact delta at
    ``f = 0``; it is at most a few 1e-3 of the central weight.  Order 1 (bilinear)
    already reproduces ramps.
    """
    if n == 1:
        return
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    m1 = 0.0
    for idx in range(2 * n):
        d = (idx - (n - 1)) - f
        e = abs(out[idx])
        s0 += e
        s1 += e * d
        s2 += e * d * d
        m1 += out[idx] * d
    det = s0 * s2 - s1 * s1
    if not det > 1e-30:  # a single tap (f = 0): nothing to correct
        return
    b = -m1 * s0 / det
    a = -b * s1 / s0
    for idx in range(2 * n):
        d = (idx - (n - 1)) - f
        out[idx] += abs(out[idx]) * (a + b * d)


@njit(nogil=True, cache=True, error_model="numpy")
def _quantize(f: float, cache_size: int) -> float:
    """Fraction rounded to the nearest of ``cache_size`` table nodes (LSST's kernel cache)."""
    return math.floor(f * cache_size + 0.5) / cache_size


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def grow_block_flags(mask: np.ndarray, bits: int, shift: int) -> np.ndarray:
    """1 for every ``2**shift`` square block of ``mask`` within one block of any of ``bits``.

    A kernel footprint anchored in a block reaches at most its neighbours (taps span at
    most ``2**shift`` pixels), so one lookup at the anchor's block tells the warper
    whether to look for full-footprint mask bits (EDGE) there.
    """
    ny, nx = mask.shape
    size = 1 << shift
    nby = (ny + size - 1) >> shift
    nbx = (nx + size - 1) >> shift
    flags = np.zeros((nby, nbx), dtype=np.uint8)
    for by in prange(nby):
        y0 = by << shift
        y1 = min(y0 + size, ny)
        for y in range(y0, y1):
            for x in range(nx):
                if mask[y, x] & bits:
                    flags[by, x >> shift] = 1
    near = np.zeros((nby, nbx), dtype=np.uint8)
    for by in prange(nby):
        for bx in range(nbx):
            hit = 0
            for yy in range(max(by - 1, 0), min(by + 2, nby)):
                for xx in range(max(bx - 1, 0), min(bx + 2, nbx)):
                    hit |= flags[yy, xx]
            near[by, bx] = hit
    return near


@njit(nogil=True, cache=True, error_model="numpy")
def _row_positions(
    v: int,
    u0: int,
    ncols: int,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    node_row0: int,
    node_col0: int,
    interp: int,
    last_u: int,
    last_v: int,
    colx: np.ndarray,
    coly: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
) -> None:
    """Source positions of grid coordinates ``(u0 .. u0 + ncols - 1, v)``, bilinear in the nodes.

    Nodes sit at ``k * interp`` (and at ``last``) along each axis; the node arrays hold
    node rows from ``node_row0`` and node columns from ``node_col0``.
    """
    nbv = (last_v + interp - 1) // interp
    b = min(v // interp, nbv - 1)
    va = b * interp
    vb = min(va + interp, last_v)
    t = (v - va) / (vb - va)
    r = b - node_row0
    nbu = (last_u + interp - 1) // interp
    k_lo = min(u0 // interp, nbu - 1)
    k_hi = min((u0 + ncols - 1) // interp, nbu - 1) + 1
    for k in range(k_lo, k_hi + 1):
        col = k - node_col0
        colx[col] = grid_x[r, col] * (1.0 - t) + grid_x[r + 1, col] * t
        coly[col] = grid_y[r, col] * (1.0 - t) + grid_y[r + 1, col] * t
    for c in range(ncols):
        u = u0 + c
        k = min(u // interp, nbu - 1)
        ua = k * interp
        ub = min(ua + interp, last_u)
        s = (u - ua) / (ub - ua)
        col = k - node_col0
        out_x[c] = colx[col] * (1.0 - s) + colx[col + 1] * s
        out_y[c] = coly[col] * (1.0 - s) + coly[col + 1] * s


@njit(nogil=True, cache=True, error_model="numpy")
def _row_setup(
    cur_x: np.ndarray,
    cur_y: np.ndarray,
    prev_x: np.ndarray,
    prev_y: np.ndarray,
    ncols: int,
    cache_size: int,
    flx: np.ndarray,
    fly: np.ndarray,
    frx: np.ndarray,
    fry: np.ndarray,
    area: np.ndarray,
) -> None:
    """Per output pixel of a row: floor and fraction of the source position, relative area."""
    for c in range(ncols):
        sx = cur_x[c + 1]
        sy = cur_y[c + 1]
        area[c] = abs((sx - cur_x[c]) * (sy - prev_y[c + 1]) - (sy - cur_y[c]) * (sx - prev_x[c + 1]))
        # positions within SNAP of a pixel centre are exact (WCS round-off must not turn
        # an identity warp into a smoothing one)
        ax = math.floor(sx + SNAP)
        ay = math.floor(sy + SNAP)
        fx = sx - ax
        fy = sy - ay
        flx[c] = ax
        fly[c] = ay
        frx[c] = 0.0 if fx < SNAP else fx
        fry[c] = 0.0 if fy < SNAP else fy
    if cache_size > 0:
        for c in range(ncols):
            fx = _quantize(frx[c], cache_size)
            fy = _quantize(fry[c], cache_size)
            if fx >= 1.0:
                fx -= 1.0
                flx[c] += 1.0
            if fy >= 1.0:
                fy -= 1.0
                fly[c] += 1.0
            frx[c] = fx
            fry[c] = fy


@njit(nogil=True, cache=True, error_model="numpy")
def _row_weights(
    frac: np.ndarray,
    ncols: int,
    n: int,
    w: np.ndarray,
    wsum: np.ndarray,
    sp: np.ndarray,
    sn: np.ndarray,
    cs: np.ndarray,
    s1: np.ndarray,
    fr: np.ndarray,
    om: np.ndarray,
    ramp: bool,
) -> None:
    """Weights ``w[tap, c]`` (float32) and their sums for the fractions of a row.

    Branch-free so that the loops over ``c`` vectorise; a zero fraction gets the exact
    delta (the formula would divide 0 by 0 at the central tap).  With ``ramp`` the
    weights get :func:`ramp_correct`'s first-moment correction, computed here in float32
    over the whole row (a per-column call of the scalar function does not vectorise and
    cost 2.4x the warp time).
    """
    if n == 1:
        for c in range(ncols):
            w[0, c] = np.float32(1.0 - frac[c])
            w[1, c] = np.float32(frac[c])
            wsum[c] = 1.0
        return
    # float32 from here: 8 lanes per vector, and 1e-7 is far below the output precision;
    # 1 - f is formed in float64 (it is the small tap distance when f -> 1)
    for c in range(ncols):
        f = frac[c]
        f32 = np.float32(f)
        om32 = np.float32(1.0 - f)
        sp[c] = _sin_small32(PI32 * min(f32, om32))
        theta = f32 * (PI32 / np.float32(n))
        sn[c] = _sin_small32(theta)
        cs[c] = _cos_small32(theta)
        s1[c] = -_sin_small32(om32 * (PI32 / np.float32(n)))
        fr[c] = f32
        om[c] = om32
        wsum[c] = 0.0
    inv_pi2 = np.float32(n / (math.pi * math.pi))
    zero = np.float32(0.0)
    for idx in range(2 * n):
        k = idx - (n - 1)
        kf = np.float32(k)
        sk = np.float32(_TAP_SIN[n, idx])
        ck = np.float32(_TAP_COS[n, idx])
        sign = inv_pi2 if (k & 1) == 0 else -inv_pi2
        delta = np.float32(1.0) if k == 0 else zero
        if k == 1:
            for c in range(ncols):
                u = om[c]
                wk = sign * sp[c] * s1[c] / (u * u)
                wk = delta if fr[c] == zero else wk
                w[idx, c] = wk
                wsum[c] += wk
        else:
            for c in range(ncols):
                u = fr[c] - kf
                wk = sign * sp[c] * (sn[c] * ck - cs[c] * sk) / (u * u)
                wk = delta if fr[c] == zero else wk
                w[idx, c] = wk
                wsum[c] += wk
    if ramp:
        # first-moment correction (ramp_correct); the per-column moments reuse the scratch
        # rows: s0 = sum |w|, s1 = sum |w| d, s2 = sum |w| d^2, m1 = sum w d (d = k - f)
        mom_s0 = sp
        mom_s1 = sn
        mom_s2 = cs
        mom_m1 = s1
        for c in range(ncols):
            mom_s0[c] = zero
            mom_s1[c] = zero
            mom_s2[c] = zero
            mom_m1[c] = zero
        for idx in range(2 * n):
            kf = np.float32(idx - (n - 1))
            for c in range(ncols):
                d = kf - fr[c]
                wk = w[idx, c]
                e = abs(wk)
                mom_s0[c] += e
                mom_s1[c] += e * d
                mom_s2[c] += e * d * d
                mom_m1[c] += wk * d
        # the correction |w| (a + b d); a and b overwrite m1 and s2
        coef_a = mom_m1
        coef_b = mom_s2
        tiny = np.float32(1e-20)
        for c in range(ncols):
            det = mom_s0[c] * mom_s2[c] - mom_s1[c] * mom_s1[c]
            ok = det > tiny  # a single tap (f = 0): nothing to correct
            b = -mom_m1[c] * mom_s0[c] / (det if ok else np.float32(1.0))
            b = b if ok else zero
            coef_b[c] = b
            coef_a[c] = -b * mom_s1[c] / mom_s0[c]
        for idx in range(2 * n):
            kf = np.float32(idx - (n - 1))
            for c in range(ncols):
                wk = w[idx, c]
                w[idx, c] = wk + abs(wk) * (coef_a[c] + coef_b[c] * (kf - fr[c]))


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _lanczos3_run(
    fimg: np.ndarray,
    fvar: np.ndarray,
    width: int,
    by: int,
    dx: int,
    a: int,
    b: int,
    w: np.ndarray,
    wy: np.ndarray,
    res_i: np.ndarray,
    res_v: np.ndarray,
) -> None:
    """Lanczos3 sums for output pixels ``a .. b-1`` of a row whose taps start at source
    row ``by`` and column ``c + dx``: the same source rows and consecutive columns.

    Written as long loops over the run with contiguous loads so that they vectorise;
    per pixel ``sum_j wy_j sum_k w_k I`` and ``sum_j wy_j^2 sum_k w_k^2 V``.  No
    reassociation: every pixel is summed in the same order as :func:`_lanczos3_one`, so
    a pixel's value does not depend on the run it falls in.
    """
    n = b - a
    ri = res_i[a:b]
    rv = res_v[a:b]
    w0 = w[0, a:b]
    w1 = w[1, a:b]
    w2 = w[2, a:b]
    w3 = w[3, a:b]
    w4 = w[4, a:b]
    w5 = w[5, a:b]
    for t in range(n):
        ri[t] = 0.0
        rv[t] = 0.0
    for j in range(6):
        base = (by + j) * width + a + dx
        si = fimg[base : base + n + 5]
        sv = fvar[base : base + n + 5]
        wj = wy[j, a:b]
        for t in range(n):
            x0 = w0[t]
            x1 = w1[t]
            x2 = w2[t]
            x3 = w3[t]
            x4 = w4[t]
            x5 = w5[t]
            hi = x0 * si[t] + x1 * si[t + 1] + x2 * si[t + 2] + x3 * si[t + 3] + x4 * si[t + 4] + x5 * si[t + 5]
            hv = (
                x0 * x0 * sv[t] + x1 * x1 * sv[t + 1] + x2 * x2 * sv[t + 2]
                + x3 * x3 * sv[t + 3] + x4 * x4 * sv[t + 4] + x5 * x5 * sv[t + 5]
            )
            aj = wj[t]
            ri[t] += aj * hi
            rv[t] += aj * aj * hv


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})
def _lanczos3_one(
    fimg: np.ndarray,
    fvar: np.ndarray,
    width: int,
    by: int,
    bx: int,
    c: int,
    w: np.ndarray,
    wy: np.ndarray,
    res_i: np.ndarray,
    res_v: np.ndarray,
) -> None:
    """:func:`_lanczos3_run` for the single pixel ``c`` whose taps start at (bx, by)."""
    x0 = w[0, c]
    x1 = w[1, c]
    x2 = w[2, c]
    x3 = w[3, c]
    x4 = w[4, c]
    x5 = w[5, c]
    ri = np.float32(0.0)
    rv = np.float32(0.0)
    uw = np.uint64(width)
    o = np.uint64(by) * uw + np.uint64(bx)
    for j in range(6):
        si = fimg[o : o + U6]
        sv = fvar[o : o + U6]
        hi = x0 * si[0] + x1 * si[1] + x2 * si[2] + x3 * si[3] + x4 * si[4] + x5 * si[5]
        hv = (
            x0 * x0 * sv[0] + x1 * x1 * sv[1] + x2 * x2 * sv[2]
            + x3 * x3 * sv[3] + x4 * x4 * sv[4] + x5 * x5 * sv[5]
        )
        aj = wy[j, c]
        ri += aj * hi
        rv += aj * aj * hv
        o += uw
    res_i[c] = ri
    res_v[c] = rv


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _taps_one(
    fimg: np.ndarray,
    fvar: np.ndarray,
    width: int,
    by: int,
    bx: int,
    c: int,
    ntaps: int,
    w: np.ndarray,
    wy: np.ndarray,
    res_i: np.ndarray,
    res_v: np.ndarray,
) -> None:
    """The tap sums of one pixel for any kernel order."""
    acc_i = np.float32(0.0)
    acc_v = np.float32(0.0)
    uw = np.uint64(width)
    o = np.uint64(by) * uw + np.uint64(bx)
    for j in range(ntaps):
        hi = np.float32(0.0)
        hv = np.float32(0.0)
        for k in range(ntaps):
            wk = w[k, c]
            hi += wk * fimg[o + np.uint64(k)]
            hv += wk * wk * fvar[o + np.uint64(k)]
        aj = wy[j, c]
        acc_i += aj * hi
        acc_v += aj * aj * hv
        o += uw
    res_i[c] = acc_i
    res_v[c] = acc_v


#: Shortest run of pixels with shared source rows worth the vectorised loops.
_MIN_RUN = 6


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def warp_block(
    src_img: np.ndarray,
    src_var: np.ndarray,
    src_msk: np.ndarray,
    grow_flags: np.ndarray,
    grow_bits: int,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    node_row0: int,
    node_col0: int,
    interp: int,
    last_u: int,
    last_v: int,
    v0: int,
    u0: int,
    out_img: np.ndarray,
    out_var: np.ndarray,
    out_msk: np.ndarray,
    order: int,
    full_mask_kernel: bool,
    cache_size: int,
    scale: float,
    no_data_bit: int,
    write_invalid: bool,
    ramp: bool,
    r_lo: int,
    r_hi: int,
) -> int:
    """Rows ``r_lo .. r_hi - 1`` of :func:`warp_rows`; returns the pixels written with data.

    Per output row: source positions, fractions and weights for the whole row (long,
    vectorised loops); then the tap sums, run by run where consecutive output pixels
    read the same source rows and consecutive source columns (the common case of a
    near-unit-scale warp: contiguous loads, vectorised), pixel by pixel elsewhere;
    finally masks and stores.
    """
    nrows, ncols = out_img.shape
    src_h, src_w = src_img.shape
    n = order
    ntaps = 2 * n
    x_lo = float(n - 1)
    x_hi = float(src_w - 1 - n)
    y_lo = float(n - 1)
    y_hi = float(src_h - 1 - n)
    has_grow = grow_bits != 0 and grow_flags.shape[0] > 0
    shift = GROW_BLOCK_SHIFT
    n_nodes_u = grid_x.shape[1]
    nan32 = np.float32(np.nan)
    inf32 = np.float32(np.inf)
    prev_x = np.empty(ncols + 1)
    prev_y = np.empty(ncols + 1)
    cur_x = np.empty(ncols + 1)
    cur_y = np.empty(ncols + 1)
    colx = np.empty(n_nodes_u)
    coly = np.empty(n_nodes_u)
    flx = np.empty(ncols)
    fly = np.empty(ncols)
    frx = np.empty(ncols)
    fry = np.empty(ncols)
    area = np.empty(ncols)
    wxs = np.empty((ntaps, ncols), dtype=np.float32)
    wys = np.empty((ntaps, ncols), dtype=np.float32)
    sumx = np.empty(ncols)
    sumy = np.empty(ncols)
    t1 = np.empty(ncols, dtype=np.float32)
    t2 = np.empty(ncols, dtype=np.float32)
    t3 = np.empty(ncols, dtype=np.float32)
    t4 = np.empty(ncols, dtype=np.float32)
    t5 = np.empty(ncols, dtype=np.float32)
    t6 = np.empty(ncols, dtype=np.float32)
    ixs = np.empty(ncols, dtype=np.int64)
    iys = np.empty(ncols, dtype=np.int64)
    valid = np.empty(ncols, dtype=np.bool_)
    res_i = np.empty(ncols, dtype=np.float32)
    res_v = np.empty(ncols, dtype=np.float32)
    _row_positions(
        v0 + r_lo - 1, u0 - 1, ncols + 1, grid_x, grid_y, node_row0, node_col0,
        interp, last_u, last_v, colx, coly, prev_x, prev_y,
    )
    count = 0
    uw = np.uint64(src_w)
    fimg = src_img.reshape(src_h * src_w)
    fvar = src_var.reshape(src_h * src_w)
    fmsk = src_msk.reshape(src_h * src_w)
    for r in range(r_lo, r_hi):
        _row_positions(
            v0 + r, u0 - 1, ncols + 1, grid_x, grid_y, node_row0, node_col0,
            interp, last_u, last_v, colx, coly, cur_x, cur_y,
        )
        _row_setup(cur_x, cur_y, prev_x, prev_y, ncols, cache_size, flx, fly, frx, fry, area)
        _row_weights(frx, ncols, n, wxs, sumx, t1, t2, t3, t4, t5, t6, ramp)
        _row_weights(fry, ncols, n, wys, sumy, t1, t2, t3, t4, t5, t6, ramp)
        for c in range(ncols):
            ax = flx[c]
            ay = fly[c]
            # NaN positions fail these comparisons too
            ok = ax >= x_lo and ax <= x_hi and ay >= y_lo and ay <= y_hi
            valid[c] = ok
            ixs[c] = int(ax) if ok else 0
            iys[c] = int(ay) if ok else 0
        # tap sums: runs sharing source rows with consecutive columns, else one by one
        c = 0
        while c < ncols:
            if not valid[c]:
                c += 1
                continue
            e = c + 1
            if n == 3:
                while e < ncols and valid[e] and iys[e] == iys[c] and ixs[e] - e == ixs[c] - c:
                    e += 1
            if e - c >= _MIN_RUN:
                _lanczos3_run(fimg, fvar, src_w, iys[c] - 2, ixs[c] - c - 2, c, e, wxs, wys, res_i, res_v)
            elif n == 3:
                for cc in range(c, e):
                    _lanczos3_one(fimg, fvar, src_w, iys[cc] - 2, ixs[cc] - 2, cc, wxs, wys, res_i, res_v)
            else:
                for cc in range(c, e):
                    _taps_one(fimg, fvar, src_w, iys[cc] - (n - 1), ixs[cc] - (n - 1), cc, ntaps, wxs, wys, res_i, res_v)
            c = e
        for c in range(ncols):
            if not valid[c]:
                if write_invalid:
                    out_img[r, c] = nan32
                    out_var[r, c] = inf32
                    out_msk[r, c] = no_data_bit
                continue
            ix = ixs[c]
            iy = iys[c]
            fx = frx[c]
            fy = fry[c]
            bx = ix - (n - 1)
            by = iy - (n - 1)
            if full_mask_kernel:
                m = 0
                o = np.uint64(by) * uw + np.uint64(bx)
                for j in range(ntaps):
                    if wys[j, c] != 0.0:
                        for k in range(ntaps):
                            if wxs[k, c] != 0.0:
                                m |= fmsk[o + np.uint64(k)]
                    o += uw
            else:
                o = np.uint64(iy) * uw + np.uint64(ix)
                m = fmsk[o]
                if fx != 0.0:
                    m |= fmsk[o + U1]
                if fy != 0.0:
                    m |= fmsk[o + uw]
                    if fx != 0.0:
                        m |= fmsk[o + uw + U1]
            if has_grow and grow_flags[iy >> shift, ix >> shift]:
                # taps of non-zero weight only: a zero fraction has a single tap
                xa = bx if fx != 0.0 else ix
                xb = ix + n if fx != 0.0 else ix
                ya = by if fy != 0.0 else iy
                yb = iy + n if fy != 0.0 else iy
                g = 0
                for yy in range(ya, yb + 1):
                    for xx in range(xa, xb + 1):
                        g |= src_msk[yy, xx]
                m |= g & grow_bits
            if not write_invalid and (m & no_data_bit) != 0:
                continue
            norm = area[c] / (sumx[c] * sumy[c]) * scale
            out_img[r, c] = np.float32(res_i[c] * norm)
            out_var[r, c] = np.float32(res_v[c] * (norm * norm))
            out_msk[r, c] = m
            count += 1
        # the current row becomes the previous one
        tmp = prev_x
        prev_x = cur_x
        cur_x = tmp
        tmp = prev_y
        prev_y = cur_y
        cur_y = tmp
    return count


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def warp_rows(
    src_img: np.ndarray,
    src_var: np.ndarray,
    src_msk: np.ndarray,
    grow_flags: np.ndarray,
    grow_bits: int,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    node_row0: int,
    node_col0: int,
    interp: int,
    last_u: int,
    last_v: int,
    v0: int,
    u0: int,
    out_img: np.ndarray,
    out_var: np.ndarray,
    out_msk: np.ndarray,
    order: int,
    full_mask_kernel: bool,
    cache_size: int,
    scale: float,
    no_data_bit: int,
    write_invalid: bool,
    ramp: bool,
    nblocks: int,
) -> int:
    """Warp the output rows ``out_*[r, c]`` at grid coordinates ``(u0 + c, v0 + r)``.

    Grid coordinates count destination pixels from one pixel left of / below the box
    the interpolation grid is anchored on, so ``u = 0`` is column ``x0 - 1``; the node
    arrays give source positions (local source indices) at the grid nodes.  Per output
    pixel: relative area from the left and lower neighbours, Lanczos (or bilinear)
    taps, image ``A/sum(K) sum(K I)``, variance ``(A/sum(K))^2 sum(K^2 V)``, mask OR
    under the bilinear footprint (or the full kernel if ``full_mask_kernel``), plus
    ``grow_bits`` OR-ed over every tap of non-zero weight.  Image and variance are
    multiplied by ``scale`` and ``scale**2``.  A pixel whose taps leave the source is
    written NaN / ``no_data_bit`` / inf if ``write_invalid``, else left untouched, as
    is (then) a pixel whose mask has ``no_data_bit``.  Rows are split into ``nblocks``
    contiguous blocks run in parallel; each pixel's value does not depend on the split.
    Returns the number of pixels written with data.
    """
    nrows = out_img.shape[0]
    counts = np.zeros(nblocks, dtype=np.int64)
    for blk in prange(nblocks):
        r_lo = blk * nrows // nblocks
        r_hi = (blk + 1) * nrows // nblocks
        if r_lo < r_hi:
            counts[blk] = warp_block(
                src_img, src_var, src_msk, grow_flags, grow_bits, grid_x, grid_y,
                node_row0, node_col0, interp, last_u, last_v, v0, u0,
                out_img, out_var, out_msk, order, full_mask_kernel, cache_size, scale,
                no_data_bit, write_invalid, ramp, r_lo, r_hi,
            )
    return int(counts.sum())


@njit(nogil=True, cache=True, error_model="numpy")
def affine_resample(
    src: np.ndarray,
    matrix: np.ndarray,
    offset_x: float,
    offset_y: float,
    out: np.ndarray,
    order: int,
    ramp: bool = True,
) -> None:
    """Resample a small image through an affine map with Lanczos-n, zero outside.

    ``out[v, u]`` takes the value of ``src`` at ``(x, y) = matrix @ (u, v) + offset``
    (array index coordinates), with normalised Lanczos weights; taps that fall outside
    ``src`` count as zero, which suits PSF stamps whose wings have decayed.
    """
    h, w = src.shape
    oh, ow = out.shape
    n = order
    ntaps = 2 * n
    wx = np.empty(_MAX_TAPS)
    wy = np.empty(_MAX_TAPS)
    for v in range(oh):
        for u in range(ow):
            x = matrix[0, 0] * u + matrix[0, 1] * v + offset_x
            y = matrix[1, 0] * u + matrix[1, 1] * v + offset_y
            fx0 = math.floor(x)
            fy0 = math.floor(y)
            ix = int(fx0)
            iy = int(fy0)
            if ix + n < 0 or ix - n + 1 >= w or iy + n < 0 or iy - n + 1 >= h:
                out[v, u] = 0.0
                continue
            sx = kernel_weights(x - fx0, n, wx)
            sy = kernel_weights(y - fy0, n, wy)
            if ramp:
                ramp_correct(x - fx0, n, wx)
                ramp_correct(y - fy0, n, wy)
            acc = 0.0
            for j in range(ntaps):
                yy = iy - (n - 1) + j
                if yy < 0 or yy >= h:
                    continue
                row = 0.0
                for k in range(ntaps):
                    xx = ix - (n - 1) + k
                    if xx >= 0 and xx < w:
                        row += wx[k] * src[yy, xx]
                acc += wy[j] * row
            out[v, u] = acc / (sx * sy)


def num_threads() -> int:
    """Threads numba will use for the parallel kernels."""
    return int(numba.get_num_threads())
