"""Tracts: square regions of sky with one WCS, tiled by patches (LSST ``ExplicitTractInfo``)."""

from __future__ import annotations

import logging
import math
from functools import cached_property
from typing import Iterator, Protocol, Sequence

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from lsst import sphgeom

from coadd_core.geom import Box

from ._sky import (
    CoordLike,
    RegionLike,
    angle_between,
    as_region,
    bounding_circle,
    offset_points,
    pixels_to_polygon,
    radec_deg,
    sky_polygon_from_box,
    unit_vectors,
)
from .config import SkyMapConfig
from .patch import PatchInfo

__all__ = ["InnerRegion", "TractInfo", "make_tract_wcs", "tract_bound_radius"]

log = logging.getLogger(__name__)

_VERTEX_SHRINK = 0.001
"""Pixels by which the float tract box is shrunk before taking its corners as vertices,
so the vertices are strictly inside the tract (LSST does the same)."""

_ANGLE_EPS = 1e-9
"""Radians of slack in the angular prefilters, far above rounding and far below a pixel."""


class InnerRegion(Protocol):
    """The part of the sky a tract owns uniquely (where ``find_tract`` picks it)."""

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        """Boolean mask of positions inside the region."""
        ...

    @property
    def sky_region(self) -> sphgeom.Region:
        """The region as a sphgeom object, for spatial queries."""
        ...


def make_tract_wcs(
    ra_deg: float,
    dec_deg: float,
    crpix: tuple[float, float],
    pixel_scale_arcsec: float,
    projection: str,
) -> WCS:
    """Tract WCS: CRVAL at the centre, CD = [[-s, 0], [0, s]] (RA to -x, north up).

    ``crpix`` is the 0-based pixel position of the centre; the FITS value is one more.
    """
    scale = pixel_scale_arcsec / 3600.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [crpix[0] + 1.0, crpix[1] + 1.0]
    wcs.wcs.cd = np.array([[-scale, 0.0], [0.0, scale]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def _projected_radius(theta: float, projection: str) -> float:
    """Distance (radians, in the projection plane) of a point ``theta`` from the centre."""
    if projection == "STG":
        return 2.0 * math.tan(theta / 2.0)
    return math.tan(theta)


def tract_bound_radius(radius_deg: float, config: SkyMapConfig) -> float:
    """Conservative angular radius (radians) of the cap holding a tract's whole bounding box.

    Known before the tract is built, so sky maps can discard far tracts cheaply: the box
    half-size is at most the projected (radius + overlap) plus half a patch of padding
    plus rounding, and a projected distance d maps to an angle no larger than d.
    """
    theta = math.radians(radius_deg + config.tract_overlap)
    if theta >= math.radians(80.0):
        return math.pi
    scale = math.radians(config.pixel_scale / 3600.0)
    half = [
        _projected_radius(theta, config.projection) / scale + dim / 2.0 + 2.0
        for dim in config.patch_inner_dimensions
    ]
    bound = math.hypot(*half) * scale
    return min(bound * (1.0 + 1e-6) + _ANGLE_EPS, math.pi)


def _expand_to_int_range(lo: float, hi: float) -> tuple[int, int]:
    """Integer pixel range covering the float interval [lo, hi] (afw ``Box2I(Box2D)``, EXPAND)."""
    return int(math.floor(lo + 0.5)), int(math.ceil(hi - 0.5))


class TractInfo:
    """One tract: centre, WCS, pixel bounding box starting at (0, 0), and its patch grid.

    Parameters
    ----------
    tract_id
        Tract id within its sky map.
    ctr_ra, ctr_dec
        Tract centre (ICRS degrees); the WCS reference point.
    radius
        Half-size of the tract's unique region (degrees); the box covers radius +
        ``config.tract_overlap`` in the four cardinal directions.
    config
        Sky map config (pixel scale, projection, overlap, patch layout).
    inner_region
        The tract's unique region; ``None`` means the tract bounding box (discrete maps).
    """

    def __init__(
        self,
        tract_id: int,
        ctr_ra: float,
        ctr_dec: float,
        radius: float,
        config: SkyMapConfig,
        inner_region: InnerRegion | None = None,
    ) -> None:
        self._id = int(tract_id)
        self._ctr = (float(ctr_ra) % 360.0, float(ctr_dec))
        self._radius = float(radius)
        self._config = config
        self._inner_region = inner_region
        dims = config.patch_inner_dimensions
        self._patch_dims = (int(dims[0]), int(dims[1]))
        self._border = int(config.patch_border)
        self._bbox, self._num_patches, self._wcs = self._layout()
        log.debug("built tract %d: %s, %s patches", self._id, self._bbox, self._num_patches)

    def _layout(self) -> tuple[Box, tuple[int, int], WCS]:
        """Bounding box, patch counts and final WCS (ALGORITHMS §4 "Tract bounding box")."""
        cfg = self._config
        ra, dec = self._ctr
        initial = make_tract_wcs(ra, dec, (0.0, 0.0), cfg.pixel_scale, cfg.projection)
        bearings = np.array([0.0, 90.0, 180.0, 270.0])
        pra, pdec = offset_points(ra, dec, bearings, self._radius + cfg.tract_overlap)
        px, py = initial.wcs_world2pix(pra, pdec, 0)
        if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
            raise ValueError(
                f"tract {self._id}: radius {self._radius} deg is too large for {cfg.projection}"
            )
        mins: list[int] = []
        counts: list[int] = []
        for values, inner in ((px, self._patch_dims[0]), (py, self._patch_dims[1])):
            lo, hi = _expand_to_int_range(float(np.min(values)), float(np.max(values)))
            size = hi - lo + 1
            num = -(-size // inner)
            lo -= (num * inner - size) // 2
            mins.append(lo)
            counts.append(num)
        bbox = Box.from_size(counts[0] * self._patch_dims[0], counts[1] * self._patch_dims[1])
        crpix = (float(-mins[0]), float(-mins[1]))
        wcs = make_tract_wcs(ra, dec, crpix, cfg.pixel_scale, cfg.projection)
        return bbox, (counts[0], counts[1]), wcs

    # -- basic properties -------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._id

    @property
    def ctr_radec(self) -> tuple[float, float]:
        """Tract centre ``(ra, dec)`` in degrees (the WCS CRVAL)."""
        return self._ctr

    @property
    def ctr_coord(self) -> SkyCoord:
        return SkyCoord(self._ctr[0], self._ctr[1], unit="deg", frame="icrs")

    @property
    def radius(self) -> float:
        """Half-size (deg) of the unique region used to size the tract."""
        return self._radius

    @property
    def config(self) -> SkyMapConfig:
        return self._config

    @property
    def wcs(self) -> WCS:
        """Tract WCS; shared with the patches, so treat it as read-only."""
        return self._wcs

    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def num_patches(self) -> tuple[int, int]:
        """Number of patches ``(nx, ny)``."""
        return self._num_patches

    @property
    def patch_inner_dimensions(self) -> tuple[int, int]:
        return self._patch_dims

    @property
    def patch_border(self) -> int:
        return self._border

    @cached_property
    def vertices(self) -> np.ndarray:
        """``(4, 2)`` ``(ra, dec)`` degrees of the bbox corners shrunk by 0.001 px."""
        corners = self._shrunk_corners()
        ra, dec = self._wcs.wcs_pix2world(corners[:, 0], corners[:, 1], 0)
        return np.stack([ra, dec], axis=-1)

    def _shrunk_corners(self) -> np.ndarray:
        b = self._bbox
        lo_x, lo_y = b.x0 - 0.5 + _VERTEX_SHRINK, b.y0 - 0.5 + _VERTEX_SHRINK
        hi_x, hi_y = b.x1 + 0.5 - _VERTEX_SHRINK, b.y1 + 0.5 - _VERTEX_SHRINK
        return np.array([[lo_x, lo_y], [hi_x, lo_y], [hi_x, hi_y], [lo_x, hi_y]])

    @cached_property
    def vertex_polygon(self) -> sphgeom.ConvexPolygon:
        """Sky polygon through the tract vertices."""
        return pixels_to_polygon(self._shrunk_corners(), self._wcs)

    @cached_property
    def outer_sky_polygon(self) -> sphgeom.ConvexPolygon:
        """Sky polygon of the bbox's float corners; the tract region the registry stores."""
        return sky_polygon_from_box(self._bbox, self._wcs)

    @property
    def region(self) -> sphgeom.ConvexPolygon:
        """The tract's registered region (its outer sky polygon)."""
        return self.outer_sky_polygon

    @cached_property
    def inner_sky_region(self) -> sphgeom.Region:
        """Uniquely owned region: an RA/Dec box for rings tracts, else the vertex polygon."""
        if self._inner_region is None:
            return self.vertex_polygon
        return self._inner_region.sky_region

    # -- pixel <-> sky ------------------------------------------------------------------
    def sky_to_pixel(self, coords: CoordLike) -> tuple[np.ndarray, np.ndarray]:
        """Tract pixel positions of ``coords``; NaN where the projection is undefined."""
        ra, dec, shape = radec_deg(coords)
        x, y = self._world_to_pixel(ra, dec)
        return x.reshape(shape), y.reshape(shape)

    def pixel_to_sky(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ra, dec)`` degrees of tract pixel positions."""
        xa = np.asarray(x, dtype=float)
        ya = np.asarray(y, dtype=float)
        ra, dec = self._wcs.wcs_pix2world(xa.ravel(), ya.ravel(), 0)
        return ra.reshape(xa.shape), dec.reshape(xa.shape)

    def _world_to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if ra.size == 0:
            return np.empty(0), np.empty(0)
        x, y = self._wcs.wcs_world2pix(ra, dec, 0)
        # Beyond 90 deg TAN has no image, and STG far from the centre is useless here.
        far = angle_between(unit_vectors(ra, dec), unit_vectors(*self._ctr)) >= math.radians(89.0)
        x = np.where(far, np.nan, x)
        y = np.where(far, np.nan, y)
        return x, y

    def _nearest_pixels(
        self, ra: np.ndarray, dec: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest integer pixels and a mask of those inside the bbox (afw ``Point2I(Point2D)``)."""
        x, y = self._world_to_pixel(ra, dec)
        ok = np.isfinite(x) & np.isfinite(y)
        ix = np.floor(np.where(ok, x, 0.0) + 0.5).astype(np.int64)
        iy = np.floor(np.where(ok, y, 0.0) + 0.5).astype(np.int64)
        b = self._bbox
        inside = ok & (ix >= b.x0) & (ix <= b.x1) & (iy >= b.y0) & (iy <= b.y1)
        return ix, iy, inside

    def contains(self, coords: CoordLike) -> np.ndarray:
        """Whether the nearest pixel of each position is in the tract bbox (shape of input)."""
        ra, dec, shape = radec_deg(coords)
        return self._nearest_pixels(ra, dec)[2].reshape(shape)

    def inner_contains(self, coords: CoordLike) -> np.ndarray:
        """Whether each position is in the tract's unique region (shape of input)."""
        ra, dec, shape = radec_deg(coords)
        if self._inner_region is None:
            return self._nearest_pixels(ra, dec)[2].reshape(shape)
        return np.asarray(self._inner_region.contains(ra, dec), dtype=bool).reshape(shape)

    # -- patches ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_patches[0] * self._num_patches[1]

    def __iter__(self) -> Iterator[PatchInfo]:
        nx, ny = self._num_patches
        for y in range(ny):
            for x in range(nx):
                yield self.get_patch_info((x, y))

    def __getitem__(self, index: int | tuple[int, int]) -> PatchInfo:
        return self.get_patch_info(index)

    def sequential_from_index(self, index: tuple[int, int]) -> int:
        """Sequential patch id ``nx * y + x``; IndexError outside the grid."""
        x, y = self._check_index(index)
        return self._num_patches[0] * y + x

    def patch_index_from_sequential(self, sequential: int) -> tuple[int, int]:
        """Patch index ``(x, y)`` of a sequential id; IndexError outside the grid."""
        seq = int(sequential)
        if not 0 <= seq < len(self):
            raise IndexError(f"patch id {seq} is not in [0, {len(self) - 1}] for tract {self._id}")
        nx = self._num_patches[0]
        return seq % nx, seq // nx

    def _check_index(self, index: Sequence[int]) -> tuple[int, int]:
        if len(index) != 2:
            raise ValueError(f"patch index must be (x, y), got {index!r}")
        x, y = int(index[0]), int(index[1])
        nx, ny = self._num_patches
        if not (0 <= x < nx and 0 <= y < ny):
            raise IndexError(
                f"patch index {(x, y)} is not in [0-{nx - 1}, 0-{ny - 1}] for tract {self._id}"
            )
        return x, y

    def get_patch_info(self, index: int | tuple[int, int]) -> PatchInfo:
        """Patch by ``(x, y)`` index or sequential id; IndexError when out of range."""
        if isinstance(index, (int, np.integer)):
            x, y = self.patch_index_from_sequential(int(index))
        else:
            x, y = self._check_index(index)
        w, h = self._patch_dims
        inner = Box(x * w, y * h, (x + 1) * w - 1, (y + 1) * h - 1)
        outer = inner.grown(self._border).intersection(self._bbox)
        return PatchInfo(
            tract_id=self._id,
            index=(x, y),
            sequential_index=self._num_patches[0] * y + x,
            inner_bbox=inner,
            outer_bbox=outer,
            tract=self,
        )

    def find_patch_indices(self, coords: CoordLike) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised patch ``(x, y)`` of the inner box holding each position; -1 off the tract."""
        ra, dec, shape = radec_deg(coords)
        ix, iy, inside = self._nearest_pixels(ra, dec)
        px = np.where(inside, ix // self._patch_dims[0], -1)
        py = np.where(inside, iy // self._patch_dims[1], -1)
        return px.reshape(shape), py.reshape(shape)

    def find_patch(self, coord: CoordLike) -> PatchInfo:
        """The patch whose inner box contains ``coord``; LookupError if it is off the tract."""
        px, py = self.find_patch_indices(coord)
        if px.size != 1:
            raise ValueError("find_patch takes one position; use find_patch_indices for many")
        x, y = int(px.ravel()[0]), int(py.ravel()[0])
        if x < 0:
            raise LookupError(f"position {coord!r} is not in tract {self._id}")
        return self.get_patch_info((x, y))

    def find_patch_list(self, coords: CoordLike) -> list[PatchInfo]:
        """Patches that contain, or may contain, the area spanned by ``coords`` (LSST rule).

        The pixel bbox of the positions, grown by the patch border and clipped to the tract,
        selects every patch whose inner index range it touches: conservative, and meant for
        areas smaller than a tract. Positions with no pixel position are ignored.
        """
        ra, dec, _ = radec_deg(coords)
        x, y = self._world_to_pixel(ra, dec)
        ok = np.isfinite(x) & np.isfinite(y)
        if not np.any(ok):
            return []
        span = Box.enclosing(x[ok], y[ok]).grown(self._border).intersection(self._bbox)
        if span.is_empty():
            return []
        w, h = self._patch_dims
        return [
            self.get_patch_info((px, py))
            for py in range(span.y0 // h, span.y1 // h + 1)
            for px in range(span.x0 // w, span.x1 // w + 1)
        ]

    @cached_property
    def _patch_caps(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre unit vectors and angular radii of caps holding each patch's outer polygon."""
        nx, ny = self._num_patches
        w, h = self._patch_dims
        px, py = np.meshgrid(np.arange(nx), np.arange(ny))
        px, py = px.ravel(), py.ravel()
        x0 = np.maximum(px * w - self._border, self._bbox.x0) - 0.5
        y0 = np.maximum(py * h - self._border, self._bbox.y0) - 0.5
        x1 = np.minimum((px + 1) * w - 1 + self._border, self._bbox.x1) + 0.5
        y1 = np.minimum((py + 1) * h - 1 + self._border, self._bbox.y1) + 0.5
        xs = np.stack([(x0 + x1) / 2, x0, x1, x1, x0], axis=-1)
        ys = np.stack([(y0 + y1) / 2, y0, y0, y1, y1], axis=-1)
        ra, dec = self._wcs.wcs_pix2world(xs.ravel(), ys.ravel(), 0)
        vecs = unit_vectors(ra, dec).reshape(-1, 5, 3)
        centres = vecs[:, 0, :]
        radii = np.max(angle_between(centres[:, None, :], vecs[:, 1:, :]), axis=1)
        return centres, radii

    def patches_overlapping(self, region: RegionLike) -> list[PatchInfo]:
        """Patches whose outer sky polygon overlaps ``region`` (sphgeom region or (Box, WCS)).

        Patch bounding caps discard distant patches with one vectorised test; the rest get
        the exact polygon test. An overlap sphgeom cannot decide counts as an overlap.
        """
        sky_region = as_region(region)
        if self.outer_sky_polygon.overlaps(sky_region) is False:
            return []
        circle = bounding_circle(sky_region)
        if circle is None:
            return []
        centre, opening = circle
        caps, radii = self._patch_caps
        near = np.nonzero(angle_between(caps, centre[None, :]) <= radii + opening + _ANGLE_EPS)[0]
        nx = self._num_patches[0]
        result = []
        for seq in near:
            patch = self.get_patch_info((int(seq % nx), int(seq // nx)))
            if patch.outer_sky_polygon.overlaps(sky_region) is not False:
                result.append(patch)
        return result

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from the definition: a pickled astropy WCS goes through a FITS header
        # and comes back differing in the last bits, which would break reproducibility.
        ra, dec = self._ctr
        return (type(self), (self._id, ra, dec, self._radius, self._config, self._inner_region))

    def _key(self) -> tuple[object, ...]:
        return (self._id, self._ctr, self._radius, self._config, self._inner_region)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TractInfo):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"TractInfo(id={self._id}, ctr=({self._ctr[0]:.6f}, {self._ctr[1]:.6f}), "
            f"bbox={self._bbox}, num_patches={self._num_patches})"
        )
