"""Cosmic-ray detection and repair (LSST ``findCosmicRays``, the SDSS algorithm).

A pixel is a cosmic-ray candidate when it exceeds the mean of an opposite pair of
neighbours by ``min_sigma`` noise sigma (condition 2) and is sharper than any
PSF-convolved source can be: ``t * (v - f*dv) > mean + f*dmean`` for one of the four
directions, with ``t = cond3_fac2 * (PSF neighbour / PSF peak)`` (condition 3).  The
frame is scanned in raster order, each candidate being replaced by its estimate at
once so the tail of a track is found too.  Short straight segments (2-4 pixels) are then
put to conditions 2 and 3 with their sums against the parallel segments beside them
(``find_lines``; LSST tests single pixels only): a faint track whose pixels each stand
4-6 sigma above their neighbours stands sqrt(length) times higher as a segment, and a
PSF cannot make a segment sharper across than it makes a pixel.  Where the segments
beside it lie a little below the sky (within twice their noise), a segment is
measured against the sky instead, known without noise: a 2-pixel hit on the sky then
needs 6 sigma of its own noise, not of that plus its neighbours'.  Candidates are grouped
8-connected into cosmic rays, those with fewer than ``min_dn`` counts dropped (condition 1), and the
neighbours of each ray re-examined ``n_iteration`` times with half the threshold and no
noise allowance.  Each elongated ray is then followed beyond its ends along its line
(``follow_tracks``; LSST does not): a track crossing a bright star's wing is never sharper
than the PSF there, since the wing is convex, but it stands above the pixels beside it
once their curvature is allowed for (a log-quadratic interpolation across the track,
which also repairs those pixels).  Rays touching saturated pixels are treated as part of
the saturation (SAT, not repaired); the others, grown by ``grow`` pixels (the faint
track edges the neighbour test misses; LSST does not grow), are marked CR and INTRP and
interpolated.

Why this method and not L.A.Cosmic (astroscrappy 1.3, installed): measured on the
``tiny`` simulation (4 visits x 2 CCDs, seeing 3.2-6.5 px, 400-2500 e-/px rays; pixels
within 1 px of saturation left out) and on one 2048 x 4612 ``demo`` CCD (693 truth ray
pixels above 5 sigma), single core, CPU time, on a machine shared with other jobs:

==================================  =================  ===========  ============  =========
method                              truth ray pixels   false, on    false, other  CPU per
                                    > 5 sigma found    star cores   (pixels)      full CCD
==================================  =================  ===========  ============  =========
this finder, Gaussian FWHM 4 px     97.0 % (163/168)   0            13            0.04 s
this finder, true PSF               97.0 % (163/168)   0            12            0.04 s
                                    100 % (693/693)
astroscrappy sigclip 4.5, sigfrac   96.4 % (162/168)   19           784           23 s
0.3, objlim 5, niter 4, sepmed,     99.1 % (687/693)
meanmask, median fine structure
==================================  =================  ===========  ============  =========

(The few "false" pixels of this finder sit in the simulator's pixel-scale ringing around
saturated stars; the finder measured without ``grow``.)  L.A.Cosmic's Laplacian and median filters touch every pixel several
times per iteration, which is two orders of magnitude beyond the per-CCD budget, and its
``objlim`` test still takes the cores of well-sampled stars in good seeing.  This finder
examines past condition 2 only the few pixels much brighter than a neighbour pair, uses
the PSF to protect star cores, and runs as one numba scan.  Its misses: three pixels of
rays lying on sources (condition 3 cannot tell them from the source) and two of a ray
touching a saturated star (handed to SAT by design).  Following the tracks, on the
``demo`` preset's 32 CCDs: 14 more ray pixels flagged, among them the 8 of a ray crossing
a bright star's wing (its charge removed to within 2 % in sum, each pixel within 2
sigma; the coadd had kept it at 10 sigma), 2 more pixels away from any ray, none on a
star core.  Without the core rule a 2-pixel ray next to a bright star was followed into
its core (35 pixels).  The segments, on the same CCDs: 73 more ray pixels flagged, 14 of
them more than 2 px from any ray (the simulator's ringing next to saturated stars; 4
times as many before the trough rule, 10 times as many with the segment's noise taken
without the neighbours' everywhere), none on a star core; measured against the sky
where the neighbours allow, 72 more, 14 of them away from rays (a 2-pixel noise pair
of 5.9 sigma, grown, and 2 pixels), and truth ray pixels above 3 sigma left go from 91
to 85.  On pure noise (24 CCDs) the single-pixel test flags 25 noise "rays" and the
segments one more.  The segment scan costs 0.3 s per full CCD (the single-pixel finder
0.03 s, tracks 0.01 s).

Repair: each ray pixel takes the mean of the directional linear interpolations (rows,
columns, diagonals, from the nearest usable pixels within 4 px) that lie within two
sigma of the lowest one (residual charge only raises an estimate); the variance plane
is left as it was, as in LSST.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numba
import numpy as np

from ..image import MaskedImage
from ..psf import Psf, neighbour_ratios
from .config import CosmicRayConfig

__all__ = ["CosmicRayResult", "find_cosmic_rays", "psf_sharpness_thresholds"]

logger = logging.getLogger(__name__)

_MAX_TRACK_STEPS = 512
"""Longest continuation of a track from one end (pixels): a ray crossing a whole galaxy."""
_LINE_LENGTHS = (2, 3, 4)
"""Lengths (px) of the straight segments :func:`_scan_lines` tests."""
_LINE_TROUGH_SIGMA = 2.5
"""A segment between parallel segments this many sigma below the background is not a track."""
_LINE_SKY_SIGMA = 2.0
"""Segments beside a segment whose mean lies at most this many sigma below the sky are
noise about the sky, and the segment is measured against the sky."""
_LOG_MIN_SNR = 5.0
"""Least S/N of the four pixels a log-quadratic estimate across a track is made from."""
_END_RADIUS = 5.0
"""Pixels of a ray within this distance (px) of an end set the direction it is followed in."""


@dataclass
class CosmicRayResult:
    """Cosmic rays found: their pixels (parent coordinates) and ray ids (0-based)."""

    n_cosmic_rays: int
    xs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    n_near_saturation: int = 0
    too_many: bool = False
    n_track_pixels: int = 0
    """Pixels found by following the rays' tracks (``follow_tracks``), repaired across them."""

    @property
    def n_pixels(self) -> int:
        return int(len(self.xs))


def psf_sharpness_thresholds(psf: Psf, cond3_fac2: float) -> tuple[float, float, float]:
    """(horizontal, vertical, diagonal) thresholds: ``cond3_fac2`` x PSF neighbour / peak."""
    th_h, th_v, th_d = neighbour_ratios(psf.kernel_image())
    return cond3_fac2 * th_h, cond3_fac2 * th_v, cond3_fac2 * th_d


# -----------------------------------------------------------------------------------
# numba kernels
# -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True, inline="always")
def _is_cr(
    img: np.ndarray, var: np.ndarray, y: int, x: int, min_sigma: float,
    th_h: float, th_v: float, th_d: float, f3: float,
) -> tuple[bool, float]:
    """Conditions 2 and 3 at (y, x); the estimate is the mean that passed condition 3."""
    v = img[y, x]
    if not v >= 0.0:
        return False, 0.0
    mean_we = 0.5 * (img[y, x - 1] + img[y, x + 1])
    mean_ns = 0.5 * (img[y - 1, x] + img[y + 1, x])
    mean_swne = 0.5 * (img[y - 1, x - 1] + img[y + 1, x + 1])
    mean_nwse = 0.5 * (img[y + 1, x - 1] + img[y - 1, x + 1])
    # condition 2 fails when v < mean + thr for all four pairs, i.e. v - min(mean) < thr;
    # tested without a square root since almost every pixel fails it
    lowest = min(min(mean_we, mean_ns), min(mean_swne, mean_nwse))
    excess = v - lowest
    if not excess > 0.0 or excess * excess < min_sigma * min_sigma * var[y, x]:
        return False, 0.0
    dv = math.sqrt(var[y, x])
    d_ns = 0.5 * math.sqrt(var[y - 1, x] + var[y + 1, x])
    d_we = 0.5 * math.sqrt(var[y, x - 1] + var[y, x + 1])
    d_swne = 0.5 * math.sqrt(var[y - 1, x - 1] + var[y + 1, x + 1])
    d_nwse = 0.5 * math.sqrt(var[y + 1, x - 1] + var[y - 1, x + 1])
    peak = v - f3 * dv
    if th_v * peak > mean_ns + f3 * d_ns:
        return True, mean_ns
    if th_h * peak > mean_we + f3 * d_we:
        return True, mean_we
    if th_d * peak > mean_swne + f3 * d_swne:
        return True, mean_swne
    if th_d * peak > mean_nwse + f3 * d_nwse:
        return True, mean_nwse
    return False, 0.0


@numba.njit(nogil=True, cache=True, fastmath=False)
def _scan(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, min_sigma: float,
    th_h: float, th_v: float, th_d: float, f3: float, max_pixels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Raster scan for candidates (conditions 2, 3, not bad), replacing each at once.

    Returns ys, xs, original values and the count (-1 when more than ``max_pixels``).
    """
    ny, nx = img.shape
    cap = 4096
    ys = np.empty(cap, np.int64)
    xs = np.empty(cap, np.int64)
    vals = np.empty(cap, np.float32)
    quick = np.zeros(nx, np.bool_)
    k2 = min_sigma * min_sigma
    n = 0
    for y in range(1, ny - 1):
        # branch-free condition 2 for the whole row (vectorises); rows above already hold
        # their replacements, and a replacement in this row is handled below
        up = img[y - 1]
        row = img[y]
        down = img[y + 1]
        vrow = var[y]
        for x in range(1, nx - 1):
            v = row[x]
            m1 = 0.5 * (row[x - 1] + row[x + 1])
            m2 = 0.5 * (up[x] + down[x])
            m3 = 0.5 * (up[x - 1] + down[x + 1])
            m4 = 0.5 * (down[x - 1] + up[x + 1])
            e = v - min(min(m1, m2), min(m3, m4))
            quick[x] = (v >= 0.0) & (e > 0.0) & (e * e >= k2 * vrow[x])
        replaced_left = False
        for x in range(1, nx - 1):
            # a replacement lowers the right neighbour's row mean, which can only help it
            if not (quick[x] or replaced_left):
                continue
            replaced_left = False
            ok, est = _is_cr(img, var, y, x, min_sigma, th_h, th_v, th_d, f3)
            if not ok or mask[y, x] & bad_bits:
                continue
            if n == cap:
                cap *= 2
                ys2 = np.empty(cap, np.int64)
                xs2 = np.empty(cap, np.int64)
                vals2 = np.empty(cap, np.float32)
                ys2[:n] = ys[:n]
                xs2[:n] = xs[:n]
                vals2[:n] = vals[:n]
                ys, xs, vals = ys2, xs2, vals2
            ys[n] = y
            xs[n] = x
            vals[n] = img[y, x]
            img[y, x] = est
            replaced_left = True
            n += 1
            if n > max_pixels:
                return ys[:n], xs[:n], vals[:n], -1
    return ys[:n], xs[:n], vals[:n], n


@numba.njit(nogil=True, cache=True)
def _scan_lines(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, taken: np.ndarray,
    min_sigma: float, th_h: float, th_v: float, th_d: float, f3: float, min_pixel_sigma: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Short straight segments (``_LINE_LENGTHS`` pixels, along rows, columns or
    diagonals) passing conditions 2 and 3 with their sums: the segment's sum exceeds the
    mean of the two parallel segments beside it by ``min_sigma`` sigma of that
    difference's noise (a looser test lets a few noise segments through per CCD), or
    exceeds the sky by ``min_sigma`` sigma of its own noise where that mean lies less
    than ``_LINE_SKY_SIGMA`` of its noise below the sky (there the neighbours only add
    their noise), and is
    sharper than the PSF across (for a PSF, the ratio of those line sums is that
    of the pixels next to the peak), every pixel standing ``min_pixel_sigma`` above its
    own two neighbours across, and neither segment beside it in a trough
    (``_LINE_TROUGH_SIGMA``).  A faint track whose pixels each fall below the
    single-pixel test is found at sqrt(length) times their significance.  Pixels already
    ``taken`` are left out; found pixels take their neighbours' mean in ``img``."""
    ny, nx = img.shape
    out_y = [0]  # typed by the literal, emptied at once
    out_x = [0]
    out_v = [np.float32(0.0)]
    out_y.pop()
    out_x.pop()
    out_v.pop()
    # (step dy, dx, across dy, dx, PSF threshold): rows, columns, the two diagonals
    dirs = ((0, 1, 1, 0, th_v), (1, 0, 0, 1, th_h), (1, 1, 1, -1, th_d), (1, -1, 1, 1, th_d))
    for y in range(1, ny - 1):
        for x in range(1, nx - 1):
            v0 = img[y, x]
            if not (v0 > 0.0 and v0 * v0 > min_pixel_sigma * min_pixel_sigma * var[y, x]) or taken[y, x]:
                continue
            for sdy, sdx, ady, adx, th in dirs:
                for length in _LINE_LENGTHS:
                    yl, xl = y + (length - 1) * sdy, x + (length - 1) * sdx
                    if yl < 1 or yl >= ny - 1 or xl < 1 or xl >= nx - 1:
                        continue
                    total = 0.0
                    v_total = 0.0
                    lo = 0.0
                    hi = 0.0
                    v_lo = 0.0
                    v_hi = 0.0
                    ok = True
                    for j in range(length):
                        yy, xx = y + j * sdy, x + j * sdx
                        if taken[yy, xx] or mask[yy, xx] & bad_bits:
                            ok = False
                            break
                        v = img[yy, xx]
                        side = 0.5 * (img[yy - ady, xx - adx] + img[yy + ady, xx + adx])
                        if not (v - side > 0.0 and (v - side) ** 2 > min_pixel_sigma**2 * var[yy, xx]):
                            ok = False
                            break
                        total += v
                        v_total += var[yy, xx]
                        lo += img[yy - ady, xx - adx]
                        hi += img[yy + ady, xx + adx]
                        v_lo += var[yy - ady, xx - adx]
                        v_hi += var[yy + ady, xx + adx]
                    if not ok:
                        continue
                    # a track lies on a smooth background: pattern noise and ringing put
                    # it between troughs
                    if lo < -_LINE_TROUGH_SIGMA * math.sqrt(v_lo) or hi < -_LINE_TROUGH_SIGMA * math.sqrt(v_hi):
                        continue
                    beside = 0.5 * (lo + hi)
                    v_beside = 0.25 * (v_lo + v_hi)
                    # neighbours a little below the sky (0 here) are noise about it, and
                    # the sky is known without any; further below, a real dip
                    on_sky = -_LINE_SKY_SIGMA * math.sqrt(v_beside) <= beside <= 0.0
                    excess = total - (0.0 if on_sky else beside)
                    if excess * excess < min_sigma * min_sigma * (v_total + (0.0 if on_sky else v_beside)):
                        continue
                    if not th * (total - f3 * math.sqrt(v_total)) > beside + f3 * math.sqrt(v_beside):
                        continue
                    for j in range(length):
                        yy, xx = y + j * sdy, x + j * sdx
                        out_y.append(yy)
                        out_x.append(xx)
                        out_v.append(img[yy, xx])
                        taken[yy, xx] = True
                        img[yy, xx] = 0.5 * (img[yy - ady, xx - adx] + img[yy + ady, xx + adx])
                    break
                if taken[y, x]:
                    break
    return np.array(out_y, dtype=np.int64), np.array(out_x, dtype=np.int64), np.array(out_v, dtype=np.float32)


@numba.njit(nogil=True, cache=True)
def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(nogil=True, cache=True)
def _group(ys: np.ndarray, xs: np.ndarray, nx: int) -> np.ndarray:
    """8-connected groups of pixels listed in raster order: the root index of each.

    Neighbours are found by binary search on the sorted linear indices, so no image-sized
    scratch array is needed.
    """
    n = len(ys)
    parent = np.arange(n)
    lin = ys * nx + xs
    for i in range(n):
        y, x = ys[i], xs[i]
        # only neighbours earlier in raster order: the row above and the pixel to the left
        for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
            yy, xx = y + dy, x + dx
            if yy < 0 or xx < 0 or xx >= nx:
                continue
            key = yy * nx + xx
            j = np.searchsorted(lin, key)
            if j < n and lin[j] == key:
                a, b = _find(parent, i), _find(parent, j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    roots = np.empty(n, np.int64)
    for i in range(n):
        roots[i] = _find(parent, i)
    return roots


@numba.njit(nogil=True, cache=True)
def _grow_rays(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, member: np.ndarray,
    ys: np.ndarray, xs: np.ndarray, ids: np.ndarray, min_sigma: float,
    th_h: float, th_v: float, th_d: float, n_iteration: int, max_pixels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add contaminated neighbours of each ray (half threshold, no noise allowance)."""
    ny, nx = img.shape
    for _ in range(n_iteration):
        n0 = len(ys)
        add_y = []
        add_x = []
        add_id = []
        for i in range(n0):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    y, x = ys[i] + dy, xs[i] + dx
                    if y < 2 or y >= ny - 2 or x < 2 or x >= nx - 2 or member[y, x] or mask[y, x] & bad_bits:
                        continue
                    ok, est = _is_cr(img, var, y, x, 0.5 * min_sigma, th_h, th_v, th_d, 0.0)
                    if ok:
                        member[y, x] = True
                        img[y, x] = est
                        add_y.append(y)
                        add_x.append(x)
                        add_id.append(ids[i])
        if len(add_y) == 0:
            break
        m = len(add_y)
        ys2 = np.empty(n0 + m, np.int64)
        xs2 = np.empty(n0 + m, np.int64)
        ids2 = np.empty(n0 + m, np.int64)
        ys2[:n0] = ys
        xs2[:n0] = xs
        ids2[:n0] = ids
        for k in range(m):
            ys2[n0 + k] = add_y[k]
            xs2[n0 + k] = add_x[k]
            ids2[n0 + k] = add_id[k]
        ys, xs, ids = ys2, xs2, ids2
        if len(ys) > max_pixels:
            break
    return ys, xs, ids


@numba.njit(nogil=True, cache=True, inline="always")
def _across(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, member: np.ndarray,
    y: int, x: int, dy: int, dx: int,
) -> tuple[float, float, int]:
    """Estimate of pixel ``(y, x)`` from its neighbours across a track (offset
    ``(dy, dx)``), its variance, and what the profile across is: 0 unknown (the linear
    mean of the two nearest), 1 convex (the log-quadratic interpolation through the two
    on each side, lower than the linear mean), 2 concave (a source's core; linear mean).

    The profile is known where all four pixels are usable and above ``_LOG_MIN_SNR``
    sigma.  A star's wing falls by a factor per pixel, so the linear mean across a track
    overshoots there by the wing's curvature; in a core it undershoots, and a core is no
    place to follow a track into."""
    ny, nx = img.shape
    v1, v2 = img[y - dy, x - dx], img[y + dy, x + dx]
    est = 0.5 * (v1 + v2)
    est_var = 0.25 * (var[y - dy, x - dx] + var[y + dy, x + dx])
    y2a, x2a, y2b, x2b = y - 2 * dy, x - 2 * dx, y + 2 * dy, x + 2 * dx
    if y2a < 0 or y2a >= ny or y2b < 0 or y2b >= ny or x2a < 0 or x2a >= nx or x2b < 0 or x2b >= nx:
        return est, est_var, 0
    inner = 0.0
    outer = 0.0
    rel_inner = 0.0
    rel_outer = 0.0
    for k in (-2, -1, 1, 2):
        yy, xx = y + k * dy, x + k * dx
        v = img[yy, xx]
        vv = max(var[yy, xx], 0.0)
        if member[yy, xx] or mask[yy, xx] & bad_bits or not (v > 0.0 and v * v > _LOG_MIN_SNR**2 * vv):
            return est, est_var, 0
        if k == -1 or k == 1:
            inner += 0.5 * math.log(v)
            rel_inner += 0.25 * vv / (v * v)
        else:
            outer += 0.5 * math.log(v)
            rel_outer += 0.25 * vv / (v * v)
    # log f = a + c k^2 through the mean logs at |k| = 1 and 2
    c = (outer - inner) / 3.0
    log_est = inner - c
    quad = math.exp(log_est)
    if quad >= est:
        return est, est_var, 2
    return quad, quad * quad * ((16.0 / 9.0) * rel_inner + (1.0 / 9.0) * rel_outer), 1


@numba.njit(nogil=True, cache=True, inline="always")
def _add_moments(mom: np.ndarray, x: float, y: float) -> None:
    """Add pixel ``(x, y)`` to moments ``(n, sx, sy, sxx, syy, sxy)``."""
    mom[0] += 1.0
    mom[1] += x
    mom[2] += y
    mom[3] += x * x
    mom[4] += y * y
    mom[5] += x * y


@numba.njit(nogil=True, cache=True, inline="always")
def _axis(mom: np.ndarray) -> tuple[bool, float, float]:
    """Unit major axis ``(ux, uy)`` of pixel moments ``(n, sx, sy, sxx, syy, sxy)`` and
    whether it is a line: the major-axis variance four times the minor one (a
    one-pixel-wide line counts 1/12 across)."""
    n = mom[0]
    if n < 2:
        return False, 1.0, 0.0
    cx, cy = mom[1] / n, mom[2] / n
    cxx = mom[3] / n - cx * cx
    cyy = mom[4] / n - cy * cy
    cxy = mom[5] / n - cx * cy
    half = 0.5 * (cxx + cyy)
    disc = math.sqrt(max(0.25 * (cxx - cyy) ** 2 + cxy * cxy, 0.0))
    if half + disc < 4.0 * max(half - disc, 1.0 / 12.0):
        return False, 1.0, 0.0
    theta = 0.5 * math.atan2(2.0 * cxy, cxx - cyy)
    return True, math.cos(theta), math.sin(theta)


@numba.njit(nogil=True, cache=True)
def _follow_tracks(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, member: np.ndarray,
    ys: np.ndarray, xs: np.ndarray, ids: np.ndarray, n_rays: int, min_sigma: float,
    min_pixels: int, max_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels continuing each elongated ray beyond its ends (see ``follow_tracks``).

    A ray of at least ``min_pixels`` pixels that is a line is followed from each end (its
    pixels with the least and greatest position along the major axis) in the direction
    of the line its pixels within ``_END_RADIUS`` of that end make (the whole ray's if
    they make none): step one pixel along it; of the pixel there and its two neighbours
    across the line, accept those exceeding their estimate from the pixels across the
    line (:func:`_across`) by ``min_sigma`` sigma of the difference, never in a source's
    core (each accepted pixel takes its estimate in ``img``); go on from the one standing
    out most, stop at the first step accepting none.  Returns the new pixels, their ray
    ids and across-line offsets ``(dy, dx)``.
    """
    ny, nx = img.shape
    mom = np.zeros((n_rays, 6))
    for i in range(len(ys)):
        _add_moments(mom[ids[i]], float(xs[i]), float(ys[i]))
    first = np.full(n_rays, -1, np.int64)  # linked list of each ray's pixels
    nxt = np.full(len(ys), -1, np.int64)
    for i in range(len(ys)):
        nxt[i] = first[ids[i]]
        first[ids[i]] = i
    out_y = [0]  # typed by the literal, emptied at once
    out_x = [0]
    out_id = [0]
    out_ay = [0]
    out_ax = [0]
    out_y.pop()
    out_x.pop()
    out_id.pop()
    out_ay.pop()
    out_ax.pop()
    end_mom = np.zeros(6)
    for r in range(n_rays):
        if mom[r, 0] < min_pixels:
            continue
        line, gx, gy = _axis(mom[r])
        if not line:
            continue
        # the two ends along the whole ray's axis
        lo, hi = -1, -1
        t_lo, t_hi = 1e30, -1e30
        i = first[r]
        while i >= 0:
            t = xs[i] * gx + ys[i] * gy
            if t < t_lo:
                t_lo, lo = t, i
            if t > t_hi:
                t_hi, hi = t, i
            i = nxt[i]
        for end, sign in ((lo, -1.0), (hi, 1.0)):
            ex, ey = float(xs[end]), float(ys[end])
            end_mom[:] = 0.0
            i = first[r]
            while i >= 0:
                x, y = float(xs[i]), float(ys[i])
                if (x - ex) ** 2 + (y - ey) ** 2 <= _END_RADIUS**2:
                    _add_moments(end_mom, x, y)
                i = nxt[i]
            local, ux, uy = _axis(end_mom)
            if not (local and end_mom[0] >= min_pixels):
                ux, uy = gx, gy
            if ux * gx + uy * gy < 0.0:
                ux, uy = -ux, -uy
            ux, uy = sign * ux, sign * uy
            # the 8-neighbour direction nearest the perpendicular (-uy, ux)
            k = round(math.atan2(ux, -uy) / (0.25 * math.pi))
            ady = int(round(math.sin(0.25 * math.pi * k)))
            adx = int(round(math.cos(0.25 * math.pi * k)))
            step = 1.0 / max(abs(ux), abs(uy))
            px, py = ex, ey
            for _ in range(max_steps):
                ly = int(round(py + step * uy))
                lx = int(round(px + step * ux))
                best = 0.0
                by, bx = -1, -1
                for j in (-1, 0, 1):
                    y, x = ly + j * ady, lx + j * adx
                    if y < 1 or y >= ny - 1 or x < 1 or x >= nx - 1 or member[y, x] or mask[y, x] & bad_bits:
                        continue
                    v = img[y, x]
                    pair, pair_var, profile = _across(img, var, mask, bad_bits, member, y, x, ady, adx)
                    if profile == 2:
                        continue
                    excess = v - pair
                    noise2 = var[y, x] + pair_var
                    if v >= 0.0 and excess > 0.0 and excess * excess > min_sigma * min_sigma * noise2:
                        member[y, x] = True
                        img[y, x] = pair
                        out_y.append(y)
                        out_x.append(x)
                        out_id.append(r)
                        out_ay.append(ady)
                        out_ax.append(adx)
                        score = excess / math.sqrt(max(noise2, 1e-30))
                        if score > best:
                            best, by, bx = score, y, x
                if by < 0:
                    break
                px, py = float(bx), float(by)
    across = np.empty((len(out_ay), 2), np.int64)
    across[:, 0] = np.array(out_ay, dtype=np.int64)
    across[:, 1] = np.array(out_ax, dtype=np.int64)
    return np.array(out_y, dtype=np.int64), np.array(out_x, dtype=np.int64), np.array(out_id, dtype=np.int64), across


@numba.njit(nogil=True, cache=True)
def _repair_across(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, member: np.ndarray,
    ys: np.ndarray, xs: np.ndarray, ady: np.ndarray, adx: np.ndarray, out: np.ndarray,
) -> None:
    """Replace ``out`` of each track pixel by its log-quadratic estimate across the track
    (:func:`_across`) where there is one."""
    for i in range(len(ys)):
        est, _, profile = _across(img, var, mask, bad_bits, member, ys[i], xs[i], ady[i], adx[i])
        if profile == 1:
            out[i] = est


@numba.njit(nogil=True, cache=True)
def _repair(
    img: np.ndarray, var: np.ndarray, mask: np.ndarray, bad_bits: int, member: np.ndarray,
    ys: np.ndarray, xs: np.ndarray, out: np.ndarray,
) -> None:
    """Interpolated values of the listed pixels from usable pixels (not bad, not a ray
    ``member``; see the module doc)."""
    ny, nx = img.shape
    dirs_y = (0, 1, 1, 1)
    dirs_x = (1, 0, 1, -1)
    est = np.empty(4, np.float64)
    for i in range(len(ys)):
        y, x = ys[i], xs[i]
        n_est = 0
        for d in range(4):
            sy, sx = dirs_y[d], dirs_x[d]
            vp = 0.0
            kp = 0
            for k in range(1, 5):
                yy, xx = y + k * sy, x + k * sx
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    break
                if not member[yy, xx] and not mask[yy, xx] & bad_bits:
                    vp = img[yy, xx]
                    kp = k
                    break
            vm = 0.0
            km = 0
            for k in range(1, 5):
                yy, xx = y - k * sy, x - k * sx
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    break
                if not member[yy, xx] and not mask[yy, xx] & bad_bits:
                    vm = img[yy, xx]
                    km = k
                    break
            if kp > 0 and km > 0:
                est[n_est] = (vp * km + vm * kp) / (kp + km)
                n_est += 1
        if n_est > 0:
            lo = est[0]
            for k in range(1, n_est):
                if est[k] < lo:
                    lo = est[k]
            tol = 2.0 * math.sqrt(max(var[y, x], 0.0))
            s = 0.0
            c = 0
            for k in range(n_est):
                if est[k] <= lo + tol:
                    s += est[k]
                    c += 1
            out[i] = s / c
            continue
        s = 0.0
        c = 0
        for yy in range(max(0, y - 3), min(ny, y + 4)):
            for xx in range(max(0, x - 3), min(nx, x + 4)):
                if not member[yy, xx] and not mask[yy, xx] & bad_bits:
                    s += img[yy, xx]
                    c += 1
        out[i] = s / c if c > 0 else 0.0


def _grow(
    ys: np.ndarray, xs: np.ndarray, ids: np.ndarray, member: np.ndarray, mask: np.ndarray, bad_bits: np.int32, grow: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ray pixels plus every usable pixel within ``grow`` of them (a square), each
    given the id of a ray next to it; ``member`` is updated."""
    ny, nx = member.shape
    d = np.arange(-grow, grow + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    cy = (ys[:, None] + dy[None, :]).ravel()
    cx = (xs[:, None] + dx[None, :]).ravel()
    cid = np.repeat(ids, len(dy))
    ok = (cy >= 0) & (cy < ny) & (cx >= 0) & (cx < nx)
    cy, cx, cid = cy[ok], cx[ok], cid[ok]
    ok = ~member[cy, cx] & ((mask[cy, cx] & bad_bits) == 0)
    cy, cx, cid = cy[ok], cx[ok], cid[ok]
    _, first = np.unique(cy * nx + cx, return_index=True)
    cy, cx, cid = cy[first], cx[first], cid[first]
    member[cy, cx] = True
    return np.concatenate([ys, cy]), np.concatenate([xs, cx]), np.concatenate([ids, cid])


# -----------------------------------------------------------------------------------
# driver
# -----------------------------------------------------------------------------------
def find_cosmic_rays(
    mi: MaskedImage, psf: Psf, config: CosmicRayConfig = CosmicRayConfig(), *, background: float = 0.0
) -> CosmicRayResult:
    """Find, mask (CR, INTRP) and repair cosmic rays in ``mi`` in place.

    ``mi`` should be background-subtracted (or give its constant ``background``);
    ``psf`` sets the sharpness thresholds.  Nothing is masked if more than
    ``n_cr_pixel_max`` pixels qualify (logged), as LSST's repair task does.
    """
    planes = mi.planes
    bad_bits = 0
    for name in config.bad_mask_planes:
        if name in planes:
            bad_bits |= planes.bitmask(name)
    bits = np.int32(bad_bits)
    mask = mi.mask
    th_h, th_v, th_d = psf_sharpness_thresholds(psf, config.cond3_fac2)
    # the scan edits its image as it goes: work on a copy
    work = np.array(mi.image, dtype=np.float32, order="C", copy=True)
    if background:
        work -= np.float32(background)
    var = np.ascontiguousarray(mi.variance, dtype=np.float32)
    ys, xs, vals, n = _scan(
        work, var, mask, bits, config.min_sigma, th_h, th_v, th_d, config.cond3_fac, config.n_cr_pixel_max
    )
    if n < 0:
        logger.warning("more than %d cosmic-ray pixels: nothing masked", config.n_cr_pixel_max)
        return CosmicRayResult(0, too_many=True)
    n_line = 0
    if config.find_lines:
        taken = np.zeros(work.shape, dtype=np.bool_)
        taken[ys, xs] = True
        ly, lx, lv = _scan_lines(
            work, var, mask, bits, taken, config.min_sigma, th_h, th_v, th_d, config.cond3_fac, config.line_pixel_sigma
        )
        n_line = len(ly)
        if n_line:
            # _group wants raster order
            ys, xs, vals = np.concatenate([ys, ly]), np.concatenate([xs, lx]), np.concatenate([vals, lv])
            order = np.argsort(ys * work.shape[1] + xs, kind="stable")
            ys, xs, vals = ys[order], xs[order], vals[order]
            n = len(ys)
    if n == 0:
        return CosmicRayResult(0)
    roots = _group(ys, xs, work.shape[1])
    # condition 1: enough counts (original values) in each ray
    work[ys, xs] = vals
    _, ray_of = np.unique(roots, return_inverse=True)
    totals = np.bincount(ray_of, weights=vals.astype(np.float64))
    keep_ray = totals >= config.min_dn
    keep = keep_ray[ray_of]
    ys, xs, ids = ys[keep], xs[keep], ray_of[keep]
    if len(ys) == 0:
        return CosmicRayResult(0)
    _, ids = np.unique(ids, return_inverse=True)
    ids = ids.astype(np.int64)
    # first repair, then look for contaminated neighbours on the repaired image
    member = np.zeros(work.shape, dtype=np.bool_)
    member[ys, xs] = True
    first = np.empty(len(ys), np.float64)
    _repair(work, var, mask, bits, member, ys, xs, first)
    work[ys, xs] = first
    ys, xs, ids = _grow_rays(
        work, var, mask, bits, member, ys, xs, ids, config.min_sigma,
        th_h, th_v, th_d, config.n_iteration, config.n_cr_pixel_max,
    )
    n_rays = int(ids.max()) + 1
    # track pixels: beyond a ray's ends along its line; repaired across it, never grown
    track = np.zeros(len(ys), dtype=bool)
    across = np.zeros((len(ys), 2), dtype=np.int64)
    if config.follow_tracks:
        ty, tx, tid, track_across = _follow_tracks(
            work, var, mask, bits, member, ys, xs, ids, n_rays, 0.5 * config.min_sigma,
            config.track_min_pixels, _MAX_TRACK_STEPS,
        )
        ys, xs, ids = np.concatenate([ys, ty]), np.concatenate([xs, tx]), np.concatenate([ids, tid])
        track = np.concatenate([track, np.ones(len(ty), dtype=bool)])
        across = np.concatenate([across, track_across])
    if len(ys) > config.n_cr_pixel_max:
        logger.warning("more than %d cosmic-ray pixels: nothing masked", config.n_cr_pixel_max)
        return CosmicRayResult(0, too_many=True)
    # rays next to saturation belong to it (bleed trails): SAT, left alone
    sat_bit = np.int32(planes.bitmask("SAT"))
    ny, nx = mask.shape
    near_sat = np.zeros(n_rays, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy = np.clip(ys + dy, 0, ny - 1)
            xx = np.clip(xs + dx, 0, nx - 1)
            near_sat[ids[(mask[yy, xx] & sat_bit) != 0]] = True
    to_sat = near_sat[ids]
    if to_sat.any():
        mask[ys[to_sat], xs[to_sat]] |= sat_bit
        member[ys[to_sat], xs[to_sat]] = False
    ys, xs, ids, track, across = ys[~to_sat], xs[~to_sat], ids[~to_sat], track[~to_sat], across[~to_sat]
    _, ids = np.unique(ids, return_inverse=True)
    n_cr = int(ids.max()) + 1 if len(ids) else 0
    n_track = int(track.sum())
    if config.grow and len(ys):
        gy, gx, gid = _grow(ys[~track], xs[~track], ids[~track], member, mask, bits, config.grow)
        ys, xs, ids = np.concatenate([gy, ys[track]]), np.concatenate([gx, xs[track]]), np.concatenate([gid, ids[track]])
        across = np.concatenate([np.zeros((len(gy), 2), dtype=np.int64), across[track]])
        track = np.concatenate([np.zeros(len(gy), dtype=bool), np.ones(n_track, dtype=bool)])
    cr_bit = np.int32(planes.bitmask("CR"))
    if config.keep_crs:
        mask[ys, xs] |= cr_bit
    else:
        # final repair from the original pixels, every ray pixel excluded
        values = np.empty(len(ys), np.float64)
        original = np.ascontiguousarray(mi.image, dtype=np.float32)
        _repair(original, var, mask, bits, member, ys, xs, values)
        if n_track:
            on_track = values[track]
            _repair_across(original, var, mask, bits, member, ys[track], xs[track], across[track, 0], across[track, 1], on_track)
            values[track] = on_track
        mi.image[ys, xs] = values.astype(np.float32)
        mask[ys, xs] |= cr_bit | np.int32(planes.bitmask("INTRP"))
    x0, y0 = mi.xy0
    logger.info(
        "%d cosmic rays (%d pixels; %d found as segments, %d followed along tracks) repaired; "
        "%d rays next to saturation left as SAT",
        n_cr, len(ys), n_line, n_track, int(near_sat.sum()),
    )
    return CosmicRayResult(
        n_cosmic_rays=n_cr,
        xs=xs.astype(np.int64) + x0,
        ys=ys.astype(np.int64) + y0,
        ids=ids.astype(np.int64),
        n_near_saturation=int(near_sat.sum()),
        n_track_pixels=n_track,
    )
