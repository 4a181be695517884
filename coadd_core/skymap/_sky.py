"""Sky-position plumbing shared by the sky maps.

Everything works on plain ``(ra, dec)`` numpy arrays in degrees so that lookups over many
positions stay vectorised; astropy ``SkyCoord`` and ``lsst.sphgeom`` points are converted
at the boundary.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from lsst import sphgeom

from coadd_core.geom import Box

__all__ = [
    "CoordLike",
    "RegionLike",
    "radec_deg",
    "unit_vectors",
    "angular_separation",
    "offset_points",
    "pixels_to_polygon",
    "sky_polygon_from_box",
    "as_region",
    "bounding_circle",
]

CoordLike = Union[
    SkyCoord,
    sphgeom.LonLat,
    sphgeom.UnitVector3d,
    np.ndarray,
    Sequence[float],
    Sequence[Sequence[float]],
]
"""Sky position(s): a ``SkyCoord`` (any frame, scalar or array), a sphgeom point, or an
array-like of shape ``(..., 2)`` holding ``(ra, dec)`` ICRS degrees."""

RegionLike = Union[sphgeom.Region, tuple[Box, WCS]]
"""A sphgeom region, or a pixel footprint given as ``(Box, astropy WCS)``."""


def radec_deg(coords: CoordLike) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Flatten ``coords`` into ICRS ``(ra, dec)`` degree arrays plus the input's shape.

    The shape lets callers hand results back with the layout they were given (``()``
    for a single position).
    """
    if isinstance(coords, SkyCoord):
        icrs = coords.icrs
        ra = np.asarray(icrs.ra.deg, dtype=float)
        dec = np.asarray(icrs.dec.deg, dtype=float)
        return ra.ravel(), dec.ravel(), ra.shape
    if isinstance(coords, sphgeom.UnitVector3d):
        coords = sphgeom.LonLat(coords)
    if isinstance(coords, sphgeom.LonLat):
        return (
            np.array([coords.getLon().asDegrees()]),
            np.array([coords.getLat().asDegrees()]),
            (),
        )
    arr = np.asarray(coords, dtype=float)
    if arr.ndim == 0 or arr.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) array of (ra, dec) degrees, got shape {arr.shape}")
    shape = arr.shape[:-1]
    flat = arr.reshape(-1, 2)
    return flat[:, 0].copy(), flat[:, 1].copy(), shape


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Cartesian unit vectors ``(N, 3)`` of ``(ra, dec)`` degrees."""
    ra = np.radians(np.asarray(ra_deg, dtype=float))
    dec = np.radians(np.asarray(dec_deg, dtype=float))
    cos_dec = np.cos(dec)
    return np.stack([cos_dec * np.cos(ra), cos_dec * np.sin(ra), np.sin(dec)], axis=-1)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (radians) between unit vectors, accurate for tiny and near-antipodal angles."""
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.sum(a * b, axis=-1)
    return np.arctan2(cross, dot)


def angular_separation(
    ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray
) -> np.ndarray:
    """Great-circle distance (radians) between positions given in degrees (broadcasting)."""
    return angle_between(unit_vectors(ra1, dec1), unit_vectors(ra2, dec2))


def offset_points(
    ra_deg: float, dec_deg: float, bearings_deg: np.ndarray, distance_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``distance_deg`` away from ``(ra, dec)`` along bearings (east of north).

    Built from the local east/north basis of the starting longitude so that it stays
    well defined at the poles, where "north" is taken along the meridian of ``ra`` (the
    limit of the off-pole case, matching a zenithal WCS centred there).
    """
    ra = np.radians(ra_deg)
    dec = np.radians(dec_deg)
    theta = np.radians(np.asarray(bearings_deg, dtype=float))
    delta = np.radians(distance_deg)
    centre = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    east = np.array([-np.sin(ra), np.cos(ra), 0.0])
    north = np.array([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)])
    direction = np.cos(theta)[:, None] * north + np.sin(theta)[:, None] * east
    points = np.cos(delta) * centre + np.sin(delta) * direction
    out_ra = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360.0
    out_dec = np.degrees(np.arcsin(np.clip(points[:, 2], -1.0, 1.0)))
    return out_ra, out_dec


def pixels_to_polygon(xy: np.ndarray, wcs: WCS) -> sphgeom.ConvexPolygon:
    """Spherical convex hull of the sky positions of pixel points ``xy`` (N, 2)."""
    xy = np.asarray(xy, dtype=float)
    ra, dec = wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        raise ValueError("pixel corners do not map to the sky through this WCS")
    vecs = unit_vectors(ra, dec)
    return sphgeom.ConvexPolygon.convexHull([sphgeom.UnitVector3d(*v) for v in vecs])


def sky_polygon_from_box(box: Box, wcs: WCS) -> sphgeom.ConvexPolygon:
    """Sky polygon of an integer pixel box: its float corners (box +- 0.5) through ``wcs``.

    LSST ``makeSkyPolygonFromBBox``; this is how patch, tract and CCD regions are made.
    """
    if box.is_empty():
        raise ValueError(f"cannot make a sky polygon from empty box {box}")
    return pixels_to_polygon(box.corners(float_box=True), wcs)


def as_region(region: RegionLike) -> sphgeom.Region:
    """A sphgeom region from either a region or a ``(Box, WCS)`` pixel footprint."""
    if isinstance(region, sphgeom.Region):
        return region
    if isinstance(region, tuple) and len(region) == 2:
        box, wcs = region
        if isinstance(box, Box) and isinstance(wcs, WCS):
            return sky_polygon_from_box(box, wcs)
    raise TypeError(f"expected an lsst.sphgeom region or a (Box, WCS) pair, got {type(region)!r}")


def bounding_circle(region: sphgeom.Region) -> tuple[np.ndarray, float] | None:
    """Centre unit vector and opening angle (radians) of a cap holding ``region``.

    Returns ``None`` when the region is empty; the opening angle is ``pi`` when the
    bounding cap is the whole sky, so callers can prefilter uniformly.
    """
    circle = region.getBoundingCircle()
    if circle.isEmpty():
        return None
    if circle.isFull():
        return np.array([0.0, 0.0, 1.0]), float(np.pi)
    centre = circle.getCenter()
    vec = np.array([centre.x(), centre.y(), centre.z()], dtype=float)
    return vec, float(circle.getOpeningAngle().asRadians())
