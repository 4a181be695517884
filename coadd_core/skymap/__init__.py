"""Sky maps: tracts and patches that coadds are built on (LSST ``lsst.skymap``).

``make_skymap("rings")`` gives the project's default rings map; ``make_skymap("discrete",
ra_list=..., dec_list=..., radius_list=...)`` a map of chosen fields.
"""

from ._sky import CoordLike, RegionLike, sky_polygon_from_box
from .base import BaseSkyMap, TractPatchList, make_skymap, skymap_from_dict
from .config import DiscreteSkyMapConfig, RingsSkyMapConfig, SkyMapConfig
from .discrete import DiscreteSkyMap
from .patch import PatchInfo
from .rings import RingInnerRegion, RingsSkyMap, ring_tract_counts
from .tract import InnerRegion, TractInfo, make_tract_wcs, tract_bound_radius

__all__ = [
    "BaseSkyMap",
    "CoordLike",
    "DiscreteSkyMap",
    "DiscreteSkyMapConfig",
    "InnerRegion",
    "PatchInfo",
    "RegionLike",
    "RingInnerRegion",
    "RingsSkyMap",
    "RingsSkyMapConfig",
    "SkyMapConfig",
    "TractInfo",
    "TractPatchList",
    "make_skymap",
    "make_tract_wcs",
    "ring_tract_counts",
    "sky_polygon_from_box",
    "skymap_from_dict",
    "tract_bound_radius",
]
