"""PSF star selection and a pixelised PSF model (LSST ``objectSizeStarSelector`` + PSFEx roles).

Selection: single-peak footprints above ``min_snr`` whose neighbourhood has no
SAT/BAD/CR/EDGE/NO_DATA/INTRP pixel and whose stamp lies on the image; Gaussian-weighted
adaptive moments give a centroid, a size (determinant radius) and an ellipticity; round
objects (``|e| <= max_ellipticity``) in the densest ``+-size_tolerance`` window of size
form the stellar locus, the smallest well-populated sizes in a frame (galaxies are
larger, and their sizes spread).  A locus star whose centred stamp differs from its
half-turn image by more than ``max_asymmetry`` of its flux, at ``asymmetry_sigma``
significance, is a blend the detection did not split (a neighbour a few FWHM away with a
tenth of the flux makes no peak of its own next to a bright star) and is left out: a
PSF is point-symmetric to within a per cent, and one such star among three faint ones
moved the zero point of a ``tiny`` CCD by 26 % (its stamp's excess was 17 % of its
flux, chi^2 600 sigma; clean stars stay within 5 sigma).

Model: the weighted mean of the stars' stamps, each shifted by its sub-pixel centroid to
the centre pixel with a band-limited (Fourier) shift and normalised by its flux, with
inverse-variance weights per pixel (so the brightest stars dominate); pixels of
neighbouring footprints and bad pixels carry no weight (they are filled with the current
model before shifting, so the shift does not spread them).  Beyond ``wing_radius_fwhm``
the model is replaced by its azimuthal mean (blended over one FWHM): per pixel the wings
are noise, and a few per cent of spurious wing flux would move the normalisation of the
core by as much (measured: 2 % on a CCD with one bright and four faint stars, 0.2 %
after).  Fluxes are refitted with the model, stars whose residual chi^2 exceeds
``max_chi2_factor`` times the median are dropped, and the model is re-centred,
``n_model_iterations`` times.  The result is an :class:`ImagePsf` (``stamp_size``
square, unit sum), constant over the CCD.  If fewer than ``min_stars`` stars reach
``min_snr`` the threshold is halved down to ``min_snr_floor``.  The unit sum holds the
stars' noise over the whole box, an error every PSF flux shares
(``normalisation_err``): 0.1-0.9 % on the ``tiny`` CCDs with one star above 10^5 ADU,
4-7 % when three stars of 10^4 ADU make the model (sky noise ~30 ADU over 41 x 41
pixels each), 0.05-0.15 % on a full ``demo`` CCD (30-40 stars).

Why pixelised rather than a fitted Moffat: the mean stamp keeps whatever the real
profile is (ellipticity, asymmetric wings, a non-Moffat core) and matches what PSFEx
gives LSST; a Moffat would be exact only for simulated data drawn from one.  A Moffat
is still fitted to the *model* to report the seeing.

FWHM, three ways (all in pixels):

* ``fwhm`` - geometric mean of the principal FWHMs of an elliptical Moffat, integrated
  over pixels and fitted to the model: the FWHM of the *atmospheric* profile, with the
  pixel response removed; this is what the simulator's ``seeing_fwhm_px`` is.
* ``fwhm_pixelised`` - ``2 sqrt(A / pi)`` for the area ``A`` where the band-limited
  interpolation of the model is above half its maximum: the FWHM of the
  pixel-convolved profile (what an image shows), a few percent larger for small PSFs.
* ``fwhm_moments`` - LSST's ``2.3548 * sigma`` with ``sigma`` the determinant radius of
  adaptive moments.

On the ``tiny`` simulation (seeing 3.24-6.49 px, Moffat beta 3.5, 4-8 stars per CCD)
``fwhm`` is within 0.6 % of the simulated seeing and ``fwhm_pixelised`` within 0.9 % of
the same measure on the true PSF drawn into pixels; on a full CCD (34 stars) 0.05 %.

The fitted Moffat also gives the light outside the model's box: ``aperture_correction``
= the Moffat's integral over the plane (the model sums to one over its box), which
turns PSF fluxes into total fluxes (0.2 % at FWHM 5.4 px, 0.6 % at 6.5 px).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from scipy.optimize import least_squares

from ..crop import cutouts
from ..detection import Footprints
from ..image import MaskedImage
from ..psf import SIGMA_TO_FWHM, ImagePsf, Psf, adaptive_moments
from .config import PsfMeasureConfig

__all__ = [
    "PsfMeasurement",
    "PsfMeasurementError",
    "fit_moffat",
    "fourier_shift",
    "half_max_fwhm",
    "measure_moments",
    "measure_psf",
    "box_has_bits",
    "moffat_total",
    "plane_bits",
    "point_asymmetry",
    "psf_fluxes",
    "stellar_locus",
]

logger = logging.getLogger(__name__)


class PsfMeasurementError(RuntimeError):
    """Too few usable stars to build a PSF model."""


# -----------------------------------------------------------------------------------
# adaptive moments of many sources at once
# -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _moments_batch(
    image: np.ndarray, mask: np.ndarray, bad_bits: int, labels: np.ndarray, ids: np.ndarray,
    xs: np.ndarray, ys: np.ndarray, sigma0: float, half: int, max_iter: int,
) -> np.ndarray:
    """Adaptive moments per source: rows (xc, yc, ixx, iyy, ixy, flux, ok) in array coords.

    Pixels of other footprints (label not 0 nor the source's id), pixels with a
    ``bad_bits`` mask bit and non-finite pixels are left out.  ``flux`` is the Gaussian-weighted flux scaled to a Gaussian's total.
    """
    ny, nx = image.shape
    n = len(xs)
    out = np.full((n, 7), np.nan)
    for k in range(n):
        xc = float(xs[k])
        yc = float(ys[k])
        ixx = sigma0 * sigma0
        iyy = ixx
        ixy = 0.0
        own = ids[k]
        ok = False
        flux = np.nan
        for it in range(max_iter):
            det = ixx * iyy - ixy * ixy
            if not det > 0:
                break
            a = iyy / det
            b = -ixy / det
            c = ixx / det
            ix0 = int(math.floor(xc + 0.5))
            iy0 = int(math.floor(yc + 0.5))
            s0 = 0.0
            sx = 0.0
            sy = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            for y in range(max(0, iy0 - half), min(ny, iy0 + half + 1)):
                dy = y - yc
                for x in range(max(0, ix0 - half), min(nx, ix0 + half + 1)):
                    lab = labels[y, x]
                    if mask[y, x] & bad_bits or (lab != 0 and lab != own):
                        continue
                    dx = x - xc
                    q = a * dx * dx + 2.0 * b * dx * dy + c * dy * dy
                    if q > 36.0:
                        continue
                    v = image[y, x]
                    if not np.isfinite(v):
                        continue
                    w = math.exp(-0.5 * q)
                    wi = w * v
                    s0 += wi
                    sx += wi * dx
                    sy += wi * dy
                    sxx += wi * dx * dx
                    syy += wi * dy * dy
                    sxy += wi * dx * dy
            if not s0 > 0:
                break
            mx = sx / s0
            my = sy / s0
            nxx = 2.0 * (sxx / s0 - mx * mx)
            nyy = 2.0 * (syy / s0 - my * my)
            nxy = 2.0 * (sxy / s0 - mx * my)
            if not (nxx > 0.01 and nyy > 0.01 and nxx * nyy - nxy * nxy > 0):
                break
            change = abs(mx) + abs(my) + abs(nxx - ixx) + abs(nyy - iyy) + abs(nxy - ixy)
            xc += mx
            yc += my
            ixx, iyy, ixy = nxx, nyy, nxy
            if abs(xc - xs[k]) > 3.0 or abs(yc - ys[k]) > 3.0 or ixx > half * half or iyy > half * half:
                break
            flux = 2.0 * s0  # a Gaussian's total under its own matched weight
            if change < 1e-4:
                ok = True
                break
        out[k, 0] = xc
        out[k, 1] = yc
        out[k, 2] = ixx
        out[k, 3] = iyy
        out[k, 4] = ixy
        out[k, 5] = flux
        out[k, 6] = 1.0 if ok else 0.0
    return out


def measure_moments(
    image: np.ndarray, mask: np.ndarray, bad_bits: int, labels: np.ndarray, ids: np.ndarray,
    xs: np.ndarray, ys: np.ndarray, sigma0: float, half: int = 20, max_iter: int = 100,
) -> np.ndarray:
    """Adaptive moments of sources at array positions ``(xs, ys)`` (see ``_moments_batch``)."""
    return _moments_batch(
        np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.int32),
        np.int32(bad_bits),
        np.ascontiguousarray(labels, dtype=np.int32), np.asarray(ids, dtype=np.int64),
        np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64),
        float(sigma0), int(half), int(max_iter),
    )


# -----------------------------------------------------------------------------------
# stamps
# -----------------------------------------------------------------------------------
def fourier_shift(stamps: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Band-limited shift of each stamp (n, N, N) by (dx, dy): content moves by +d.

    Stamps are zero-padded to an odd size; the sum is conserved and the centroid moves
    by exactly d.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    n, ny, nx = stamps.shape
    # a margin of 10 px keeps wrapped-around content (the stamp edges are sky) 20 px away,
    # where the periodic sinc has fallen below 2 %
    pad = 10
    py, px = ny + 2 * pad, nx + 2 * pad
    py += 1 - py % 2
    px += 1 - px % 2
    padded = np.zeros((n, py, px))
    padded[:, pad : pad + ny, pad : pad + nx] = stamps
    fy = np.fft.fftfreq(py)[None, :, None]
    fx = np.fft.rfftfreq(px)[None, None, :]
    phase = np.exp(-2j * np.pi * (fx * np.asarray(dx)[:, None, None] + fy * np.asarray(dy)[:, None, None]))
    shifted = np.fft.irfft2(np.fft.rfft2(padded) * phase, s=(py, px))
    return shifted[:, pad : pad + ny, pad : pad + nx]


def half_max_fwhm(kernel: np.ndarray, oversample: int = 8) -> float:
    """``2 sqrt(A/pi)`` of the area above half maximum of the band-limited interpolation."""
    k = np.asarray(kernel, dtype=np.float64)
    n = k.shape[0]
    m = n * oversample
    spec = np.fft.fftshift(np.fft.fft2(k))
    big = np.zeros((m, m), dtype=complex)
    lo = m // 2 - n // 2  # zero frequency of the small spectrum onto that of the big one
    big[lo : lo + n, lo : lo + n] = spec
    fine = np.real(np.fft.ifft2(np.fft.ifftshift(big))) * (m / n) ** 2
    peak = fine.max()
    area = np.count_nonzero(fine >= 0.5 * peak) / oversample**2
    return 2.0 * math.sqrt(area / math.pi)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(3)


def _moffat_image(params: np.ndarray, n: int) -> np.ndarray:
    """Elliptical Moffat integrated over each pixel (3 x 3 Gauss-Legendre nodes)."""
    amp, alpha, beta, e1, e2, x0, y0 = params
    half = n // 2
    grid = np.arange(-half, half + 1, dtype=np.float64)
    nodes = 0.5 * _GL_NODES
    xs = (grid[:, None] + nodes[None, :]).ravel() - x0
    ys = (grid[:, None] + nodes[None, :]).ravel() - y0
    norm = math.sqrt(max(1.0 - e1 * e1 - e2 * e2, 1e-12))
    q = ((1 + e1) * xs[None, :] ** 2 + 2 * e2 * xs[None, :] * ys[:, None] + (1 - e1) * ys[:, None] ** 2) / norm
    prof = (1.0 + q / (alpha * alpha)) ** (-beta)
    w = 0.5 * _GL_WEIGHTS
    return amp * np.einsum("aibj,i,j->ab", prof.reshape(n, 3, n, 3), w, w)


def fit_moffat(kernel: np.ndarray) -> dict[str, float]:
    """Elliptical pixel-integrated Moffat fitted to a PSF image.

    Returns ``fwhm`` (geometric mean of the principal FWHMs), ``beta``, ``e1``/``e2``
    (shape of the unit-determinant quadratic form), ``amp``/``alpha`` and the fit's rms
    residual relative to the peak.
    """
    k = np.asarray(kernel, dtype=np.float64)
    n = k.shape[0]
    _, _, ixx, iyy, ixy = adaptive_moments(k)
    sigma = (ixx * iyy - ixy * ixy) ** 0.25
    beta0 = 3.0
    alpha0 = SIGMA_TO_FWHM * sigma / (2.0 * math.sqrt(2 ** (1 / beta0) - 1))
    p0 = np.array([k.max(), alpha0, beta0, 0.0, 0.0, 0.0, 0.0])
    lower = [0.0, 0.05, 1.01, -0.9, -0.9, -2.0, -2.0]
    upper = [np.inf, 10.0 * n, 200.0, 0.9, 0.9, 2.0, 2.0]

    def resid(p: np.ndarray) -> np.ndarray:
        return (_moffat_image(p, n) - k).ravel()

    # an iterative trust-region solver: no dense SVD (slow under BLAS thread contention)
    fit = least_squares(
        resid, p0, bounds=(lower, upper), x_scale="jac", tr_solver="lsmr", xtol=1e-10, ftol=1e-12
    )
    amp, alpha, beta, e1, e2, _, _ = fit.x
    fwhm = 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0)
    rms = float(np.sqrt(np.mean(fit.fun**2)) / k.max())
    return {
        "fwhm": float(fwhm), "beta": float(beta), "e1": float(e1), "e2": float(e2), "rms": rms,
        "amp": float(amp), "alpha": float(alpha),
    }


# -----------------------------------------------------------------------------------
# measurement
# -----------------------------------------------------------------------------------
@dataclass
class PsfMeasurement:
    """The PSF model and how it was made."""

    psf: ImagePsf
    fwhm: float
    fwhm_pixelised: float
    fwhm_moments: float
    sigma: float
    moffat_beta: float
    n_candidates: int
    n_stars: int
    star_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    star_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    star_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    aperture_correction: float = 1.0
    min_snr: float = math.nan
    n_blended: int = 0  # locus stars left out as unsplit blends
    normalisation_err: float = 0.0  # relative 1-sigma error of the model's sum (common to all PSF fluxes)

    def describe(self) -> None:
        """Fill the Moffat FWHM and beta, the half-maximum FWHM and the wing correction."""
        model = self.psf.array
        moffat = fit_moffat(model)
        self.fwhm = moffat["fwhm"]
        self.moffat_beta = moffat["beta"]
        self.fwhm_pixelised = half_max_fwhm(model)
        self.aperture_correction = moffat_total(moffat)

    def summary(self) -> dict[str, Any]:
        return {
            "PSF_FWHM": self.fwhm,
            "PSF_FWHM_PIXELISED": self.fwhm_pixelised,
            "PSF_FWHM_MOMENTS": self.fwhm_moments,
            "PSF_SIGMA": self.sigma,
            "PSF_MOFFAT_BETA": self.moffat_beta,
            "N_PSF_CANDIDATES": self.n_candidates,
            "N_PSF_STARS": self.n_stars,
            "PSF_APCORR": self.aperture_correction,
        }


def plane_bits(mi: MaskedImage, names: tuple[str, ...]) -> int:
    """OR of the bits of the named planes the image has."""
    bits = 0
    for name in names:
        if name in mi.planes:
            bits |= mi.planes.bitmask(name)
    return bits


@numba.njit(nogil=True, cache=True)
def _box_any_kernel(mask: np.ndarray, bits: int, cx: np.ndarray, cy: np.ndarray, half: int) -> np.ndarray:
    ny, nx = mask.shape
    out = np.zeros(len(cx), dtype=np.bool_)
    for k in range(len(cx)):
        for y in range(max(0, cy[k] - half), min(ny, cy[k] + half + 1)):
            for x in range(max(0, cx[k] - half), min(nx, cx[k] + half + 1)):
                if mask[y, x] & bits:
                    out[k] = True
                    break
            if out[k]:
                break
    return out


def box_has_bits(mask: np.ndarray, bits: int, cx: np.ndarray, cy: np.ndarray, half: int) -> np.ndarray:
    """True where a pixel with any of ``bits`` lies in the (2 half + 1)^2 box around (cx, cy)."""
    return _box_any_kernel(
        np.ascontiguousarray(mask, dtype=np.int32), np.int32(bits), np.asarray(cx, np.int64),
        np.asarray(cy, np.int64), int(half),
    )


def stellar_locus(sizes: np.ndarray, tolerance: float) -> np.ndarray:
    """Members of the densest window ``|s / s_i - 1| < tolerance`` (ties: smallest size)."""
    s = np.asarray(sizes, dtype=float)
    if len(s) == 0:
        return np.zeros(0, dtype=bool)
    counts = (np.abs(s[None, :] / s[:, None] - 1.0) < tolerance).sum(axis=1)
    best = np.flatnonzero(counts == counts.max())
    centre = s[best[np.argmin(s[best])]]
    members = np.abs(s / centre - 1.0) < tolerance
    centre = float(np.median(s[members]))
    return np.abs(s / centre - 1.0) < tolerance


def psf_fluxes(
    psf: Psf, image: np.ndarray, variance: np.ndarray, mask: np.ndarray, bad_bits: int, labels: np.ndarray,
    ids: np.ndarray, xs: np.ndarray, ys: np.ndarray, fit_radius: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted least-squares PSF fluxes and errors at array positions (xs, ys).

    ``f = sum(P D) / sum(P^2)`` over pixels without ``bad_bits``, not in another footprint (and within
    ``fit_radius`` px of the position when given), with the model shifted to each
    position; unweighted so a star's own photon noise cannot bias it.  The model is
    normalised over its whole box, so a core-only fit still measures the total.  Sources
    whose model stamp leaves the image get NaN.
    """
    kernel = psf.kernel_image()
    n = kernel.shape[0]
    half = n // 2
    ny, nx = image.shape
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    flux = np.full(len(xs), np.nan)
    err = np.full(len(xs), np.nan)
    cx = np.floor(xs + 0.5).astype(np.int64)
    cy = np.floor(ys + 0.5).astype(np.int64)
    inside = (cx >= half) & (cx < nx - half) & (cy >= half) & (cy < ny - half)
    idx = np.flatnonzero(inside)
    if len(idx) == 0:
        return flux, err
    models = fourier_shift(np.broadcast_to(kernel, (len(idx), n, n)), xs[idx] - cx[idx], ys[idx] - cy[idx])
    data = cutouts(image, cx[idx], cy[idx], half).astype(np.float64)
    var = cutouts(variance, cx[idx], cy[idx], half).astype(np.float64)
    lab = cutouts(labels, cx[idx], cy[idx], half)
    good = (cutouts(mask, cx[idx], cy[idx], half) & np.int32(bad_bits)) == 0
    good &= (lab == 0) | (lab == np.asarray(ids)[idx][:, None, None])
    good &= np.isfinite(data) & np.isfinite(var)
    if fit_radius is not None:
        off = np.arange(-half, half + 1, dtype=np.float64)
        ddx = off[None, None, :] - (xs[idx] - cx[idx])[:, None, None]
        ddy = off[None, :, None] - (ys[idx] - cy[idx])[:, None, None]
        good &= ddx * ddx + ddy * ddy <= fit_radius * fit_radius
    p = np.where(good, models, 0.0)
    d = np.where(good, data, 0.0)
    v = np.where(good, var, 0.0)
    spp = (p * p).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        flux[idx] = (p * d).sum(axis=(1, 2)) / spp
        err[idx] = np.sqrt((p * p * v).sum(axis=(1, 2))) / spp
    return flux, err


def _circular_wings(model: np.ndarray, weight: np.ndarray, rr: np.ndarray, r1: float, width: float) -> np.ndarray:
    """Replace the model beyond ``r1`` by its weighted azimuthal mean profile.

    Per pixel the wings are dominated by noise (and, near image edges or neighbours,
    by whichever faint stars happen to cover them), and a few per cent of spurious wing
    flux changes the normalisation of the core by as much; averaged in annuli the
    profile is ~sqrt(2 pi r) times less noisy.  The switch is a linear blend over
    ``width`` pixels so the profile stays continuous.
    """
    ring = np.floor(rr * 2.0).astype(np.int64)  # half-pixel annuli
    den = np.bincount(ring.ravel(), weights=weight.ravel())
    num = np.bincount(ring.ravel(), weights=(weight * model).ravel())
    rad = np.bincount(ring.ravel(), weights=(weight * rr).ravel())
    filled = den > 0
    if filled.sum() < 2:
        return model
    radius = rad[filled] / den[filled]
    profile = np.interp(rr, radius, num[filled] / den[filled])
    t = np.clip((rr - r1) / max(width, 1.0), 0.0, 1.0)
    return (1.0 - t) * model + t * profile


def _stamps(
    mi: MaskedImage, labels: np.ndarray, ids: np.ndarray, xc: np.ndarray, yc: np.ndarray, half: int, bad_bits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stamps around array positions: (data, variance, valid, dx, dy) with dx, dy the
    offsets of the centroids from the stamps' centre pixels; pixels of other footprints,
    with ``bad_bits`` or not finite are invalid (variance 1 there)."""
    icx = np.floor(xc + 0.5).astype(np.int64)
    icy = np.floor(yc + 0.5).astype(np.int64)
    data = cutouts(mi.image, icx, icy, half).astype(np.float64)
    var = cutouts(mi.variance, icx, icy, half).astype(np.float64)
    lab = cutouts(labels, icx, icy, half)
    valid = (cutouts(mi.mask, icx, icy, half) & np.int32(bad_bits)) == 0
    valid &= (lab == 0) | (lab == ids[:, None, None])
    valid &= np.isfinite(data) & np.isfinite(var) & (var > 0)
    return data, np.where(valid, var, 1.0), valid, xc - icx, yc - icy


def point_asymmetry(
    data: np.ndarray, var: np.ndarray, valid: np.ndarray, dx: np.ndarray, dy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp: the flux fraction that breaks point symmetry, and its significance.

    The stamp is centred on its centroid (band-limited shift; an invalid pixel is filled
    with its mirror image first, so masking adds no asymmetry), and ``d = c - rot180(c)``
    is taken over pixels valid in both.  A neighbour of flux F appears as +F and -F in
    ``d``, so the fraction is ``(sum |d| - sum E|noise|) / (2 flux)`` (a lower bound: the
    noise term is taken off where the signal dominates too); the significance is the
    chi^2 of ``d`` (each mirror pair counted once) in sigma above its mean.
    """
    mirror = valid[:, ::-1, ::-1]
    filled = np.where(valid, data, np.where(mirror, data[:, ::-1, ::-1], 0.0))
    centred = fourier_shift(filled, -dx, -dy)
    both = valid & mirror
    d = np.where(both, centred - centred[:, ::-1, ::-1], 0.0)
    v = var + var[:, ::-1, ::-1]
    flux = np.where(both, centred, 0.0).sum(axis=(1, 2))
    noise = np.where(both, np.sqrt(2.0 * v / math.pi), 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = (np.abs(d).sum(axis=(1, 2)) - noise) / (2.0 * flux)
        n = both.sum(axis=(1, 2))
        sigma = (np.where(both, d * d / v, 0.0).sum(axis=(1, 2)) - n) / (2.0 * np.sqrt(n))
    return np.where(flux > 0, fraction, np.inf), sigma


def _build_model(
    data: np.ndarray, var: np.ndarray, valid: np.ndarray, dx: np.ndarray, dy: np.ndarray,
    config: PsfMeasureConfig, fwhm_guess: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Iterated weighted mean of centred, normalised stamps.

    Returns the model, the kept stars and the relative error of the model's sum over
    its box, ``sqrt(sum 1 / sum_stars w)`` over the pixels: the stars' noise over the
    whole box, which moves every PSF flux made with the model alike.
    """
    n_star, n, _ = data.shape
    half = n // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    rr = np.hypot(xx, yy)
    keep = np.ones(n_star, dtype=bool)
    model: np.ndarray | None = None
    fitted = None
    norm_err = math.nan
    for it in range(config.n_model_iterations + 1):
        if model is None:
            # first pass: bad pixels as zeros (and their neighbours ignored), flux = sum
            filled = np.where(valid, data, 0.0)
            erode = valid.copy()
            erode[:, 1:, :] &= valid[:, :-1, :]
            erode[:, :-1, :] &= valid[:, 1:, :]
            erode[:, :, 1:] &= valid[:, :, :-1]
            erode[:, :, :-1] &= valid[:, :, 1:]
            weight_mask = erode
            flux = filled.sum(axis=(1, 2))
        else:
            fitted = fourier_shift(np.broadcast_to(model, data.shape), dx, dy)
            p = np.where(valid, fitted, 0.0)
            flux = (p * np.where(valid, data, 0.0)).sum(axis=(1, 2)) / (p * p).sum(axis=(1, 2))
            filled = np.where(valid, data, fitted * flux[:, None, None])
            weight_mask = valid
            # outlier rejection on the residual chi^2 inside 3 FWHM
            core = rr <= 3.0 * fwhm_guess
            resid = (data - flux[:, None, None] * fitted) ** 2 / var
            use = valid & core[None, :, :]
            chi2 = np.where(use, resid, 0.0).sum(axis=(1, 2)) / np.maximum(use.sum(axis=(1, 2)), 1)
            if it == config.n_model_iterations:
                break
            med = float(np.median(chi2[keep]))
            keep &= chi2 <= config.max_chi2_factor * med
            if keep.sum() < config.min_stars:
                raise PsfMeasurementError(f"only {int(keep.sum())} stars left after chi^2 rejection")
        good = keep & (flux > 0)
        centred = fourier_shift(filled[good] / flux[good, None, None], -dx[good], -dy[good])
        w = np.where(weight_mask[good], (flux[good] ** 2)[:, None, None] / var[good], 0.0)
        wsum = w.sum(axis=0)
        new = np.where(wsum > 0, (w * centred).sum(axis=0) / np.where(wsum > 0, wsum, 1.0), 0.0)
        new = _circular_wings(new, wsum, rr, config.wing_radius_fwhm * fwhm_guess, fwhm_guess)
        total = new.sum()
        if not total > 0:
            raise PsfMeasurementError("PSF model has no positive flux")
        new /= total
        norm_err = math.sqrt(float(np.sum(1.0 / wsum[wsum > 0]))) / total
        # re-centre: the weighted mean can drift by the stars' centroid errors
        xc, yc, _, _, _ = adaptive_moments(new)
        if abs(xc) > 1e-3 or abs(yc) > 1e-3:
            new = fourier_shift(new[None], np.array([-xc]), np.array([-yc]))[0]
            new /= new.sum()
        model = new
    assert model is not None
    return model, keep, norm_err


def _select_stars(
    mi: MaskedImage, footprints: Footprints, sigma_guess: float, config: PsfMeasureConfig,
    min_snr: float, bad_bits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidates above ``min_snr`` -> (ids, moments rows, sizes) of locus stars, n candidates."""
    half = config.stamp_size // 2
    ny, nx = mi.shape
    peaks = footprints.peaks
    first = np.r_[True, peaks["id"][1:] != peaks["id"][:-1]] if len(peaks) else np.zeros(0, bool)
    brightest = peaks[first]
    n_peaks = footprints.n_peaks
    cand = brightest[(n_peaks[brightest["id"] - 1] == 1) & (brightest["significance"] >= min_snr)]
    cand = cand[np.argsort(-cand["significance"], kind="stable")][: config.max_candidates]
    n_candidates = len(cand)
    cx = cand["x"].astype(np.int64) - mi.bbox.x0
    cy = cand["y"].astype(np.int64) - mi.bbox.y0
    on_image = (cx >= half + 1) & (cx < nx - half - 1) & (cy >= half + 1) & (cy < ny - half - 1)
    clean = ~box_has_bits(mi.mask, bad_bits, cx, cy, config.bad_box_half_size)
    sel = on_image & clean
    cand, cx, cy = cand[sel], cx[sel], cy[sel]
    mom = measure_moments(
        mi.image, mi.mask, bad_bits, footprints.labels, cand["id"], cx, cy, sigma_guess, half=min(half, 25)
    )
    ok = mom[:, 6] > 0
    ixx, iyy, ixy = mom[:, 2], mom[:, 3], mom[:, 4]
    with np.errstate(invalid="ignore"):
        size = (ixx * iyy - ixy * ixy) ** 0.25
        ell = np.hypot(ixx - iyy, 2 * ixy) / (ixx + iyy)
        # the recentred stamp must still lie on the image
        rx = np.floor(mom[:, 0] + 0.5)
        ry = np.floor(mom[:, 1] + 0.5)
    ok &= np.isfinite(size) & (ell <= config.max_ellipticity)
    ok &= (rx >= half) & (rx < nx - half) & (ry >= half) & (ry < ny - half)
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 7)), np.zeros(0), n_candidates, 0
    idx = idx[stellar_locus(size[idx], config.size_tolerance)]
    ids = cand["id"][idx].astype(np.int64)
    fraction, significance = point_asymmetry(
        *_stamps(mi, footprints.labels, ids, mom[idx, 0], mom[idx, 1], half, bad_bits)
    )
    blended = (fraction > config.max_asymmetry) & (significance > config.asymmetry_sigma)
    if blended.any():
        logger.debug("left out %d asymmetric PSF candidates (unsplit blends)", int(blended.sum()))
    idx, ids = idx[~blended], ids[~blended]
    return ids, mom[idx], size[idx], n_candidates, int(blended.sum())


def moffat_total(moffat: dict[str, float]) -> float:
    """Integral over the plane of a fitted Moffat (``amp pi alpha^2 / (beta - 1)``)."""
    return moffat["amp"] * math.pi * moffat["alpha"] ** 2 / (moffat["beta"] - 1.0)


def measure_psf(
    mi: MaskedImage,
    footprints: Footprints,
    sigma_guess: float,
    config: PsfMeasureConfig = PsfMeasureConfig(),
    *,
    describe: bool = True,
) -> PsfMeasurement:
    """Select PSF stars among ``footprints`` of the background-subtracted ``mi`` and
    build a pixelised PSF model from them (see the module docstring).

    ``describe`` also fits the Moffat and half-maximum widths (:meth:`PsfMeasurement.describe`);
    intermediate iterations can skip it.

    When fewer than ``min_stars`` stars reach ``min_snr`` the threshold is halved, down
    to ``min_snr_floor``, so sparse or poorly seen frames still get a model.
    """
    n = config.stamp_size
    if n % 2 == 0:
        raise ValueError(f"stamp_size must be odd, got {n}")
    half = n // 2
    bad_bits = plane_bits(mi, config.bad_mask_planes)
    min_snr = config.min_snr
    while True:
        ids, mom, size, n_candidates, n_blended = _select_stars(mi, footprints, sigma_guess, config, min_snr, bad_bits)
        if len(ids) >= config.min_stars or min_snr <= config.min_snr_floor:
            break
        min_snr = max(0.5 * min_snr, config.min_snr_floor)
        logger.info("too few PSF stars; lowering the S/N threshold to %.1f", min_snr)
    if len(ids) < config.min_stars:
        raise PsfMeasurementError(
            f"only {len(ids)} clean, isolated, round stars on the stellar locus among "
            f"{n_candidates} candidates with S/N >= {min_snr:g} (need {config.min_stars})"
        )
    xc, yc = mom[:, 0], mom[:, 1]
    data, var, valid, dx, dy = _stamps(mi, footprints.labels, ids, xc, yc, half, bad_bits)
    fwhm_guess = SIGMA_TO_FWHM * float(np.median(size))
    model, keep, norm_err = _build_model(data, var, valid, dx, dy, config, fwhm_guess)
    psf = ImagePsf(model)
    sigma = psf.sigma
    result = PsfMeasurement(
        psf=psf,
        fwhm=math.nan,
        fwhm_pixelised=math.nan,
        fwhm_moments=SIGMA_TO_FWHM * sigma,
        sigma=sigma,
        moffat_beta=math.nan,
        n_candidates=n_candidates,
        n_stars=int(keep.sum()),
        star_ids=ids[keep],
        star_x=xc[keep] + mi.bbox.x0,
        star_y=yc[keep] + mi.bbox.y0,
        min_snr=min_snr,
        n_blended=n_blended,
        normalisation_err=norm_err,
    )
    if describe:
        result.describe()
    logger.info(
        "PSF from %d stars (%d candidates, %d unsplit blends left out, S/N >= %g): FWHM %.3f px "
        "(pixelised %.3f, moments %.3f), beta %.2f, total/stamp %.4f",
        result.n_stars, n_candidates, n_blended, min_snr, result.fwhm, result.fwhm_pixelised, result.fwhm_moments,
        result.moffat_beta, result.aperture_correction,
    )
    return result
