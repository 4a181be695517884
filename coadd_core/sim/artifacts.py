"""Transient artifacts: satellite trails, an optical ghost and cosmic rays.

Trails and ghosts are defined on the sky (so the truth is instrument independent) and
drawn through each CCD's header WCS; a great circle is a straight line in a TAN
projection, so a trail is exactly a line in raw pixels. Cosmic rays are drawn in pixels
(after the flat: they are charge, not light) and reported with their sky position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from coadd_core.camera import Detector
from coadd_core.sim.conditions import Exposure
from coadd_core.sim.config import ArtifactConfig
from coadd_core.sim.geometry import DetectorOnSky, offset_by

__all__ = [
    "Trail",
    "Ghost",
    "CosmicRay",
    "make_trails",
    "make_ghosts",
    "draw_trail",
    "draw_ghost",
    "add_cosmic_rays",
    "surface_brightness_e",
]

def surface_brightness_e(exposure: Exposure, sb_mag: float, pixel_scale: float) -> float:
    """Electrons per pixel (unit flat) of a surface brightness in mag/arcsec^2."""
    return float(10 ** (0.4 * (exposure.zero_point - sb_mag)) * exposure.exposure_time * pixel_scale**2)


@dataclass(frozen=True)
class Trail:
    """A satellite trail: the great-circle segment between two sky points."""

    trail_id: int
    expnum: int
    ra1: float
    dec1: float
    ra2: float
    dec2: float
    width_fwhm_arcsec: float
    sb_mag_arcsec2: float
    peak_e: float


@dataclass(frozen=True)
class Ghost:
    """A diffuse pupil-shaped ghost: a soft-edged ring on the sky."""

    ghost_id: int
    expnum: int
    ra: float
    dec: float
    radius_arcsec: float
    inner_radius_arcsec: float
    sb_mag_arcsec2: float
    peak_e: float


@dataclass(frozen=True)
class CosmicRay:
    """One cosmic-ray track, in assembled pixels (raw = assembled + the amp offset)."""

    x0: float
    y0: float
    x1: float
    y1: float
    charge_e: float
    n_pixels: int


def _random_point_on(view: DetectorOnSky, rng: np.random.Generator, inset: float) -> tuple[float, float]:
    box = view.detector.bbox
    inset_x = min(inset, 0.45 * box.width)
    inset_y = min(inset, 0.45 * box.height)
    x = rng.uniform(box.x0 + inset_x, box.x1 - inset_x)
    y = rng.uniform(box.y0 + inset_y, box.y1 - inset_y)
    ra, dec = view.pixel_to_sky(x, y)
    return float(ra[0]), float(dec[0])


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _great_circle_distance_arcsec(ra1, dec1, ra2, dec2, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Angular distance of points from the great circle through two points."""
    if len(ra) == 0:
        return np.zeros(0)
    pole = np.cross(_unit_vectors(np.array(ra1), np.array(dec1)), _unit_vectors(np.array(ra2), np.array(dec2)))
    pole /= np.linalg.norm(pole)
    return np.degrees(np.abs(np.arcsin(np.clip(_unit_vectors(ra, dec) @ pole, -1, 1)))) * 3600.0


def _separation_arcsec(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    if len(ra) == 0:
        return np.zeros(0)
    dots = _unit_vectors(ra, dec) @ _unit_vectors(np.array(ra0), np.array(dec0))
    return np.degrees(np.arccos(np.clip(dots, -1, 1))) * 3600.0


_PLACEMENT_TRIES = 50


def make_trails(
    config: ArtifactConfig,
    science: Sequence[Exposure],
    detectors: Sequence[Detector],
    pixel_scale: float,
    plate_scale: float,
    rng: np.random.Generator,
    avoid: tuple[np.ndarray, np.ndarray] | None = None,
    avoid_arcsec: float = 8.0,
) -> list[Trail]:
    """One trail in each visit listed in ``config.trail_visits``, crossing the CCDs.

    Trails keep ``avoid_arcsec`` (plus their width) away from the ``avoid`` positions
    when a few random tries allow, so the truth of special sources stays clean.
    """
    reach_mm = max(math.hypot(*d.center_mm) + math.hypot(d.bbox.width, d.bbox.height) * d.pixel_size_mm for d in detectors)
    half_length_deg = 1.5 * reach_mm * plate_scale / 3600.0
    avoid_ra, avoid_dec = avoid if avoid is not None else (np.zeros(0), np.zeros(0))
    trails = []
    for k, visit in enumerate(config.trail_visits):
        exp = science[visit]
        width = float(rng.uniform(*config.trail_width_arcsec))
        best: tuple[float, tuple[float, float, float, float]] | None = None
        for _ in range(_PLACEMENT_TRIES):
            det = detectors[int(rng.integers(len(detectors)))]
            view = DetectorOnSky.create(det, exp.ra_deg, exp.dec_deg, exp.rotation_deg, pixel_scale)
            ra, dec = _random_point_on(view, rng, inset=0.25 * min(det.bbox.width, det.bbox.height))
            pa = exp.rotation_deg + float(rng.uniform(*config.trail_angle_deg))
            ra1, dec1 = offset_by(ra, dec, pa, half_length_deg)
            ra2, dec2 = offset_by(ra, dec, pa + 180.0, half_length_deg)
            clearance = float(np.min(_great_circle_distance_arcsec(ra1, dec1, ra2, dec2, avoid_ra, avoid_dec), initial=np.inf))
            if best is None or clearance > best[0]:
                best = (clearance, (float(ra1), float(dec1), float(ra2), float(dec2)))
            if clearance >= avoid_arcsec + 2 * width:
                break
        assert best is not None
        ra1, dec1, ra2, dec2 = best[1]
        sb = float(rng.uniform(*config.trail_sb_mag))
        trails.append(
            Trail(
                trail_id=k + 1,
                expnum=exp.expnum,
                ra1=float(ra1),
                dec1=float(dec1),
                ra2=float(ra2),
                dec2=float(dec2),
                width_fwhm_arcsec=round(width, 4),
                sb_mag_arcsec2=round(sb, 4),
                peak_e=surface_brightness_e(exp, round(sb, 4), pixel_scale),
            )
        )
    return trails


def make_ghosts(
    config: ArtifactConfig,
    science: Sequence[Exposure],
    detectors: Sequence[Detector],
    pixel_scale: float,
    rng: np.random.Generator,
    avoid: tuple[np.ndarray, np.ndarray] | None = None,
    avoid_arcsec: float = 8.0,
) -> list[Ghost]:
    """The ghost of ``config.ghost_visit``, centred on one of the CCDs (clear of ``avoid``)."""
    if config.ghost_visit is None:
        return []
    exp = science[config.ghost_visit]
    radius_px = config.ghost_radius_arcsec / pixel_scale
    avoid_ra, avoid_dec = avoid if avoid is not None else (np.zeros(0), np.zeros(0))
    best: tuple[float, tuple[float, float]] | None = None
    for _ in range(_PLACEMENT_TRIES):
        det = detectors[int(rng.integers(len(detectors)))]
        view = DetectorOnSky.create(det, exp.ra_deg, exp.dec_deg, exp.rotation_deg, pixel_scale)
        ra, dec = _random_point_on(view, rng, inset=radius_px)
        clearance = float(np.min(_separation_arcsec(ra, dec, avoid_ra, avoid_dec), initial=np.inf))
        clearance -= config.ghost_radius_arcsec * 1.3
        if best is None or clearance > best[0]:
            best = (clearance, (ra, dec))
        if clearance >= avoid_arcsec:
            break
    assert best is not None
    ra, dec = best[1]
    return [
        Ghost(
            ghost_id=1,
            expnum=exp.expnum,
            ra=ra,
            dec=dec,
            radius_arcsec=config.ghost_radius_arcsec,
            inner_radius_arcsec=round(config.ghost_radius_arcsec * config.ghost_inner_fraction, 4),
            sb_mag_arcsec2=config.ghost_sb_mag,
            peak_e=surface_brightness_e(exp, config.ghost_sb_mag, pixel_scale),
        )
    ]


def draw_trail(
    image: np.ndarray, x1: float, y1: float, x2: float, y2: float, sigma_px: float, peak: float
) -> int:
    """Add a Gaussian-profile line segment to ``image`` (assembled pixels); returns pixels touched."""
    ny, nx = image.shape
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy)
    if length == 0 or peak == 0:
        return 0
    ux, uy = dx / length, dy / length
    reach = 5.0 * sigma_px
    touched = 0
    y_lo = max(0, int(math.floor(min(y1, y2) - reach)))
    y_hi = min(ny - 1, int(math.ceil(max(y1, y2) + reach)))
    chunk = 256
    for r0 in range(y_lo, y_hi + 1, chunk):
        r1 = min(r0 + chunk - 1, y_hi)
        if abs(uy) > 1e-3:
            # a band of half-width `reach` across the line spans reach/|uy| along a row
            half = reach / abs(uy)
            xs = [x1 + (y - y1) * dx / dy for y in (r0, r1)]
            c0 = max(0, int(math.floor(min(xs) - half)))
            c1 = min(nx - 1, int(math.ceil(max(xs) + half)))
        else:
            c0, c1 = 0, nx - 1
        if c1 < c0:
            continue
        yy, xx = np.mgrid[r0 : r1 + 1, c0 : c1 + 1].astype(np.float64)
        px, py = xx - x1, yy - y1
        along = px * ux + py * uy
        perp = -px * uy + py * ux
        inside = (np.abs(perp) < reach) & (along >= 0) & (along <= length)
        if not inside.any():
            continue
        value = np.where(inside, peak * np.exp(-0.5 * (perp / sigma_px) ** 2), 0.0)
        image[r0 : r1 + 1, c0 : c1 + 1] += value.astype(image.dtype)
        touched += int(inside.sum())
    return touched


def draw_ghost(
    image: np.ndarray, xc: float, yc: float, radius_px: float, inner_px: float, peak: float
) -> int:
    """Add a soft-edged ring (outer ``radius_px``, hole ``inner_px``); returns pixels touched."""
    ny, nx = image.shape
    edge = max(0.08 * radius_px, 1.0)
    reach = radius_px + 6 * edge
    x0, x1 = max(0, int(xc - reach)), min(nx - 1, int(xc + reach) + 1)
    y0, y1 = max(0, int(yc - reach)), min(ny - 1, int(yc + reach) + 1)
    if x1 < x0 or y1 < y0:
        return 0
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    r = np.hypot(xx - xc, yy - yc)
    outer = 1.0 / (1.0 + np.exp(np.clip((r - radius_px) / edge, -50, 50)))
    hole = 1.0 / (1.0 + np.exp(np.clip((inner_px - r) / edge, -50, 50))) if inner_px > 0 else 1.0
    image[y0 : y1 + 1, x0 : x1 + 1] += (peak * outer * hole).astype(image.dtype)
    return int((r < radius_px).sum())


def add_cosmic_rays(
    image: np.ndarray,
    config: ArtifactConfig,
    dark_time: float,
    pixel_size_mm: float,
    rng: np.random.Generator,
) -> list[CosmicRay]:
    """Add cosmic-ray tracks (electrons) to an assembled image; returns what was added."""
    ny, nx = image.shape
    if dark_time <= 0:
        return []
    area_cm2 = nx * ny * (pixel_size_mm / 10.0) ** 2
    n = max(config.min_cosmic_rays_per_ccd, int(rng.poisson(config.cosmic_ray_rate * area_cm2 * dark_time)))
    rays = []
    for _ in range(n):
        x0 = rng.uniform(-0.5, nx - 0.5)
        y0 = rng.uniform(-0.5, ny - 0.5)
        length = min(rng.exponential(config.cosmic_ray_length_px), config.cosmic_ray_max_length_px)
        angle = rng.uniform(0.0, 2 * np.pi)
        x1 = float(np.clip(x0 + length * math.cos(angle), -0.49, nx - 0.51))
        y1 = float(np.clip(y0 + length * math.sin(angle), -0.49, ny - 0.51))
        true_length = math.hypot(x1 - x0, y1 - y0)
        charge = float(rng.uniform(*config.cosmic_ray_charge_per_px)) * max(true_length, 1.0)
        steps = max(2, int(math.ceil(true_length * 4)))
        t = np.linspace(0.0, 1.0, steps)
        ix = np.clip(np.floor(x0 + t * (x1 - x0) + 0.5).astype(int), 0, nx - 1)
        iy = np.clip(np.floor(y0 + t * (y1 - y0) + 0.5).astype(int), 0, ny - 1)
        flat_index = iy * nx + ix
        np.add.at(image.reshape(-1), flat_index, charge / steps)
        rays.append(
            CosmicRay(
                x0=round(float(x0), 3),
                y0=round(float(y0), 3),
                x1=round(x1, 3),
                y1=round(y1, 3),
                charge_e=round(charge, 1),
                n_pixels=int(np.unique(flat_index).size),
            )
        )
    return rays
