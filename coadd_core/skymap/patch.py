"""Patches: the pixel tiles of a tract that coadds are built on (LSST ``PatchInfo``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from astropy.wcs import WCS
from lsst import sphgeom

from coadd_core.geom import Box

from ._sky import sky_polygon_from_box

if TYPE_CHECKING:
    from .tract import TractInfo

__all__ = ["PatchInfo"]


@dataclass(frozen=True, eq=True)
class PatchInfo:
    """One patch of a tract.

    The inner boxes of a tract's patches tile it exactly, so each sky position belongs to
    one patch; the outer box adds ``patch_border`` pixels (clipped to the tract) so that
    neighbouring coadds overlap. Both boxes are in the tract's pixel frame and share the
    tract WCS. A patch refers to its tract rather than holding a WCS copy, so pickling it
    ships the tract definition and the WCS is rebuilt bit-for-bit on the other side.
    """

    tract_id: int
    index: tuple[int, int]
    sequential_index: int
    inner_bbox: Box
    outer_bbox: Box
    tract: "TractInfo" = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.outer_bbox.contains(self.inner_bbox):
            raise ValueError(
                f"outer box {self.outer_bbox} does not contain inner box {self.inner_bbox}"
            )

    @property
    def wcs(self) -> WCS:
        """The tract WCS (shared; treat as read-only)."""
        return self.tract.wcs

    @cached_property
    def inner_sky_polygon(self) -> sphgeom.ConvexPolygon:
        """Sky polygon of the inner box's float corners."""
        return sky_polygon_from_box(self.inner_bbox, self.wcs)

    @cached_property
    def outer_sky_polygon(self) -> sphgeom.ConvexPolygon:
        """Sky polygon of the outer box's float corners; the region the registry stores."""
        return sky_polygon_from_box(self.outer_bbox, self.wcs)

    @property
    def region(self) -> sphgeom.ConvexPolygon:
        """The patch's registered region (its outer sky polygon)."""
        return self.outer_sky_polygon

    def inner_center_sky(self) -> tuple[float, float]:
        """``(ra, dec)`` degrees of the inner box centre."""
        cx, cy = self.inner_bbox.center
        ra, dec = self.wcs.wcs_pix2world(np.array([cx]), np.array([cy]), 0)
        return float(ra[0]), float(dec[0])

    def __str__(self) -> str:
        return f"PatchInfo(tract={self.tract_id}, index={self.index}, id={self.sequential_index})"
