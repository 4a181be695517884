"""The template's sources for CompareWarp's variable rule: where a star is, and how much
of its light the template holds once its bright neighbours' profiles are taken out.

A faint star on the wing of a bright one sits on a slope steeper than its own profile:
neither the smoothed template nor a difference of Gaussians (whose wide half reaches the
bright core) has a maximum there, and a PSF-weighted flux counts the wing as the star's.
The PSF-matched template has one round PSF everywhere, so each bright round source's
azimuthal median profile models its wing well (the faint star covers a few percent of
each ring, which a median ignores).  Peaks are sought, and faint sources' fluxes
measured, on the template with those profiles removed; bright sources keep their own
flux from the template itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..crop import cutouts
from ..exposure import Exposure
from ..geom import Box
from .config import CompareWarpConfig

__all__ = ["TemplateSources", "psf_weighted_fluxes", "psf_weights", "subtract_round_profiles", "template_sources"]

_DOG_NOISE = math.sqrt(0.45 / (4.0 * math.pi))
"""Noise of a difference of Gaussians (sigma minus twice it) per unit pixel noise, times
sigma: the sum of its squared weights is (1 + 1/4 - 4/5) / (4 pi sigma^2)."""

_SMOOTH_NOISE = math.sqrt(1.0 / (4.0 * math.pi))
"""The same for a Gaussian of sigma alone."""

_CENTROID_ITERATIONS = 20
"""Most recentrings of the weight in :func:`_centroid_and_ellipticity`."""

_BIN = 0.5
"""Width (pixels) of the rings of a bright source's azimuthal median profile."""


_STAMP_CHUNK = 1024
"""Sources whose stamps are gathered at once by :func:`psf_weighted_fluxes`."""


def psf_weights(sigma: float) -> np.ndarray:
    """A normalised Gaussian stamp of ``sigma`` out to 3 sigma."""
    h = int(math.ceil(3.0 * sigma))
    dy, dx = np.mgrid[-h : h + 1, -h : h + 1]
    phi = np.exp(-0.5 * (dx**2 + dy**2) / sigma**2)
    return phi / phi.sum()


def psf_weighted_fluxes(image: np.ndarray, xy: np.ndarray, bbox: Box, sigma: float) -> np.ndarray:
    """PSF-weighted flux ``sum(phi I) / sum(phi^2)`` of a Gaussian ``phi`` of ``sigma`` at
    each parent ``(x, y)`` of ``xy``; NaN where the stamp leaves the image or holds NaN."""
    phi = psf_weights(sigma)
    h = phi.shape[0] // 2
    ny, nx = image.shape
    ix, iy = xy[:, 0] - bbox.x0, xy[:, 1] - bbox.y0
    inside = (ix >= h) & (ix < nx - h) & (iy >= h) & (iy < ny - h)
    out = np.full(len(xy), np.nan)
    norm = float((phi**2).sum())
    rows = np.flatnonzero(inside)
    for start in range(0, len(rows), _STAMP_CHUNK):  # bounded temporaries
        k = rows[start : start + _STAMP_CHUNK]
        stamps = cutouts(image, ix[k], iy[k], h).astype(np.float64)
        out[k] = np.einsum("kij,ij->k", stamps, phi) / norm
    return out


@dataclass(frozen=True)
class TemplateSources:
    """Source peaks of the template, ``(m, 2)`` parent ``(x, y)``, and each one's
    PSF-weighted template flux (a faint source's without its bright neighbours' wings)."""

    peaks: np.ndarray
    flux: np.ndarray


def _peaks(image: np.ndarray, noise: np.ndarray, sigma: float, threshold: float, zone: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, x, snr)`` of the local maxima of a difference of Gaussians (sigma minus twice
    it) above ``threshold`` times its noise (``noise``: per-pixel noise over the image);
    with a ``zone``, also of the image smoothed by the first Gaussian alone inside it,
    where the wings were taken out."""
    smooth = ndimage.gaussian_filter(image, sigma)
    dog = smooth - ndimage.gaussian_filter(image, 2.0 * sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = dog / (noise * (_DOG_NOISE / sigma))
    found = (dog >= ndimage.maximum_filter(dog, size=3)) & (snr > threshold)
    if zone is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            smooth_snr = smooth / (noise * (_SMOOTH_NOISE / sigma))
        extra = zone & (smooth >= ndimage.maximum_filter(smooth, size=3)) & (smooth_snr > threshold) & ~found
        snr = np.where(extra, smooth_snr, snr)
        found |= extra
    y, x = np.nonzero(found)
    return y, x, snr[y, x]


def _stamp(shape: tuple[int, int], y: int, x: int, h: int) -> tuple[slice, slice]:
    return slice(max(y - h, 0), min(y + h + 1, shape[0])), slice(max(x - h, 0), min(x + h + 1, shape[1]))


def _centroid_and_ellipticity(image: np.ndarray, good: np.ndarray, y: int, x: int, sigma: float) -> tuple[float, float, float]:
    """Centroid and ellipticity ``|e|`` from moments of the good pixels weighted by a
    Gaussian of ``sigma`` recentred on the centroid until it settles (a weight centred on
    the peak pixel pulls the centroid toward it by a fifth of a pixel: on a steep wing,
    a dipole as bright as a faint star).  A saturated core left out is symmetric."""
    sl = _stamp(image.shape, y, x, int(math.ceil(4 * sigma)))
    yy, xx = np.mgrid[sl[0], sl[1]]
    values = np.clip(np.where(good[sl], image[sl], 0.0), 0.0, None)
    cy, cx = float(y), float(x)
    for _ in range(_CENTROID_ITERATIONS):
        w = values * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / sigma**2)
        total = float(w.sum())
        if total <= 0:
            return float(y), float(x), 1.0
        ny, nx = float((w * yy).sum() / total), float((w * xx).sum() / total)
        if abs(ny - y) > sigma or abs(nx - x) > sigma:
            return float(y), float(x), 1.0  # not one source centred here
        moved = math.hypot(ny - cy, nx - cx)
        cy, cx = ny, nx
        if moved < 1e-3:
            break
    dy, dx = yy - cy, xx - cx
    ixx, iyy, ixy = (w * dx * dx).sum() / total, (w * dy * dy).sum() / total, (w * dx * dy).sum() / total
    trace = ixx + iyy
    e = math.hypot(ixx - iyy, 2 * ixy) / trace if trace > 0 else 1.0
    return cy, cx, float(e)


def subtract_round_profiles(
    image: np.ndarray, good: np.ndarray, pixel_noise: float, sources: np.ndarray, sigma: float, config: CompareWarpConfig
) -> np.ndarray:
    """Subtract, in place, the azimuthal median profile of each round source in
    ``sources`` (``(k, 2)`` array ``(y, x)``, brightest first) out to
    ``variable_halo_radius_sigma`` PSF sigma, or to where the profile drops below half
    ``pixel_noise``; returns the discs of ``variable_halo_radius_sigma`` around them,
    outside their cores (``variable_halo_core_sigma``): there the wide half of a
    band-pass reaches the bright core's residual."""
    zone = np.zeros(image.shape, dtype=bool)
    core = config.variable_halo_core_sigma * sigma / _BIN
    h = int(math.ceil(config.variable_halo_radius_sigma * sigma))
    for y, x in sources:
        cy, cx, e = _centroid_and_ellipticity(image, good, int(y), int(x), sigma)
        if e > config.variable_halo_max_ellipticity:
            continue  # a galaxy or a blend: its profile is not a function of radius
        sl = _stamp(image.shape, int(y), int(x), h)
        yy, xx = np.mgrid[sl[0], sl[1]]
        radius = np.hypot(yy - cy, xx - cx) / _BIN
        ring = radius.astype(np.int64)
        labels = np.where(good[sl], ring + 1, 0)
        n_rings = int(ring.max()) + 1
        profile = np.asarray(ndimage.median(image[sl], labels, index=np.arange(1, n_rings + 1)), dtype=np.float64)
        profile = np.nan_to_num(profile, nan=0.0)  # rings with no good pixel
        low = np.flatnonzero(profile < 0.5 * pixel_noise)
        end = min(int(low[0]) if len(low) else n_rings, int(h / _BIN))  # not into the stamp's corners
        profile[end:] = 0.0
        # each ring's median stands for its middle: interpolated, no steps of a ring's width
        model = np.interp(radius, np.arange(n_rings) + 0.5, profile)
        image[sl] -= np.where(good[sl], model, 0.0).astype(image.dtype)
        zone[sl] |= (ring > core) & (ring < int(h / _BIN))
    return zone


def template_sources(template: Exposure, sigma: float, config: CompareWarpConfig) -> TemplateSources:
    """The template's source peaks for the variable rule (local maxima of a difference of
    Gaussians above ``variable_peak_threshold`` times its noise, from the variance plane)
    and their PSF-weighted fluxes.

    Sources above ``variable_halo_min_snr`` are bright: their peaks and fluxes come from
    the template; the round ones' profiles are then subtracted, and the other peaks and
    fluxes come from what is left.  Where a profile was subtracted, maxima of the plainly
    smoothed image count too: the wide half of the band-pass still reaches the bright
    core's residual there.  The band-pass finds a faint star on a neighbour's
    wing; noise peaks are harmless, since the other epochs' flux decides."""
    good = np.isfinite(template.image) & np.isfinite(template.variance) & (template.variance > 0)
    image = np.where(good, template.image, np.float32(0.0)).astype(np.float32, copy=False)  # patch-sized
    noise = np.sqrt(np.where(good, template.variance, np.inf))
    y, x, snr = _peaks(image, noise, sigma, config.variable_peak_threshold)
    bright = snr >= config.variable_halo_min_snr
    order = np.flatnonzero(bright)[np.argsort(-snr[bright])]
    xy0 = np.array([template.bbox.x0, template.bbox.y0])
    bright_xy = np.stack([x[order], y[order]], axis=1) + xy0
    bright_flux = psf_weighted_fluxes(template.image, bright_xy, template.bbox, sigma)
    pixel_noise = float(np.median(noise[good])) if good.any() else 0.0
    if len(order):
        zone = subtract_round_profiles(image, good, pixel_noise, np.stack([y[order], x[order]], axis=1), sigma, config)
        y, x, snr = _peaks(image, noise, sigma, config.variable_peak_threshold, zone)
    faint_xy = np.stack([x, y], axis=1) + xy0
    if len(bright_xy) and len(faint_xy):  # a bright source's own peak stands for its core
        dist, _ = cKDTree(bright_xy).query(faint_xy)
        faint_xy = faint_xy[dist > config.variable_halo_core_sigma * sigma]
    faint_flux = psf_weighted_fluxes(image, faint_xy, template.bbox, sigma)
    peaks = np.concatenate([bright_xy, faint_xy]).astype(np.int64).reshape(-1, 2)
    return TemplateSources(peaks, np.concatenate([bright_flux, faint_flux]))
