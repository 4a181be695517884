"""Exposure: a MaskedImage with its WCS, PSF, calibration and metadata (LSST ``ExposureF``).

The WCS maps *parent* pixel coordinates (origin 0), as in LSST, so a sub-image keeps the
same WCS object and only its ``xy0`` changes.  Components other than the pixels are
treated as immutable values and shared between an exposure and its views.
"""

from __future__ import annotations

import copy as _copy
from typing import Any

import numpy as np
from astropy.wcs import WCS

from .geom import Box
from .image import MaskedImage
from .masks import MaskPlanes
from .photocalib import PhotoCalib
from .polygon import ValidPolygon
from .psf import Psf
from .visit_info import VisitInfo
from .wcs_utils import wcs_header_dict

__all__ = ["Exposure", "assert_exposures_equal", "exposure_differences", "exposures_equal"]


class Exposure:
    """Pixels plus the components coaddition needs (ALGORITHMS.md §0, §3)."""

    __slots__ = (
        "masked_image",
        "wcs",
        "psf",
        "photo_calib",
        "visit_info",
        "valid_polygon",
        "metadata",
    )

    def __init__(
        self,
        masked_image: MaskedImage,
        wcs: WCS | None = None,
        psf: Psf | None = None,
        photo_calib: PhotoCalib | None = None,
        visit_info: VisitInfo | None = None,
        valid_polygon: ValidPolygon | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(masked_image, MaskedImage):
            raise TypeError(f"masked_image must be a MaskedImage, got {type(masked_image).__name__}")
        self.masked_image = masked_image
        self.wcs = wcs
        self.psf = psf
        self.photo_calib = photo_calib
        self.visit_info = visit_info
        self.valid_polygon = valid_polygon
        self.metadata: dict[str, Any] = {} if metadata is None else metadata

    # -- pixel shortcuts ---------------------------------------------------------------
    @property
    def image(self) -> np.ndarray:
        return self.masked_image.image

    @property
    def mask(self) -> np.ndarray:
        return self.masked_image.mask

    @property
    def variance(self) -> np.ndarray:
        return self.masked_image.variance

    @property
    def bbox(self) -> Box:
        return self.masked_image.bbox

    @property
    def xy0(self) -> tuple[int, int]:
        return self.masked_image.xy0

    @property
    def planes(self) -> MaskPlanes:
        return self.masked_image.planes

    # -- component shortcuts -----------------------------------------------------------
    @property
    def band(self) -> str | None:
        return None if self.visit_info is None else self.visit_info.band

    @property
    def physical_filter(self) -> str | None:
        return None if self.visit_info is None else self.visit_info.physical_filter

    @property
    def unit(self) -> str:
        """Pixel unit: ``nJy`` when the calibration is exactly 1 (warps, coadds), else ``adu``."""
        return "nJy" if self.photo_calib is not None and self.photo_calib.is_nJy else "adu"

    # -- views and copies --------------------------------------------------------------
    def subset(self, box: Box) -> "Exposure":
        """View of ``box`` (parent coordinates): pixels shared, same WCS and components."""
        return Exposure(
            self.masked_image.subset(box),
            wcs=self.wcs,
            psf=self.psf,
            photo_calib=self.photo_calib,
            visit_info=self.visit_info,
            valid_polygon=self.valid_polygon,
            metadata=self.metadata,
        )

    def __getitem__(self, box: Box) -> "Exposure":
        return self.subset(box)

    def copy(self) -> "Exposure":
        """Deep copy: new pixel arrays, WCS and metadata (immutable components shared)."""
        return Exposure(
            self.masked_image.copy(),
            wcs=None if self.wcs is None else _copy.deepcopy(self.wcs),
            psf=self.psf,
            photo_calib=self.photo_calib,
            visit_info=self.visit_info,
            valid_polygon=self.valid_polygon,
            metadata=_copy.deepcopy(self.metadata),
        )

    def __repr__(self) -> str:
        parts = [f"bbox={self.bbox}"]
        for name in ("wcs", "psf", "photo_calib", "visit_info", "valid_polygon"):
            if getattr(self, name) is not None:
                parts.append(name)
        return f"Exposure({', '.join(parts)})"


def _metadata_equal(a: Any, b: Any) -> bool:
    """Structural equality that also treats NaN as equal to NaN and keeps types strict."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_metadata_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_metadata_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return bool(a == b)


def exposure_differences(a: Exposure, b: Exposure) -> list[str]:
    """Human-readable list of what differs between two exposures (empty if identical)."""
    out: list[str] = []
    if a.bbox != b.bbox:
        out.append(f"bbox {a.bbox} != {b.bbox}")
    else:
        if not np.array_equal(a.image, b.image, equal_nan=True):
            out.append("image pixels differ")
        if not np.array_equal(a.mask, b.mask):
            out.append("mask pixels differ")
        if not np.array_equal(a.variance, b.variance, equal_nan=True):
            out.append("variance pixels differ")
    if a.planes != b.planes:
        out.append(f"mask planes {a.planes!r} != {b.planes!r}")
    if (a.wcs is None) != (b.wcs is None):
        out.append(f"wcs {a.wcs is not None} vs {b.wcs is not None}")
    elif a.wcs is not None and b.wcs is not None:
        ha, hb = wcs_header_dict(a.wcs), wcs_header_dict(b.wcs)
        if ha != hb:
            keys = sorted(k for k in set(ha) | set(hb) if ha.get(k) != hb.get(k))
            out.append(f"wcs differs in {keys}")
    if a.psf != b.psf:
        out.append(f"psf {a.psf!r} != {b.psf!r}")
    for name in ("photo_calib", "visit_info", "valid_polygon"):
        if getattr(a, name) != getattr(b, name):
            out.append(f"{name} {getattr(a, name)!r} != {getattr(b, name)!r}")
    if not _metadata_equal(a.metadata, b.metadata):
        out.append("metadata differs")
    return out


def exposures_equal(a: Exposure, b: Exposure) -> bool:
    """True if pixels, planes, exact WCS header and every other component agree."""
    return not exposure_differences(a, b)


def assert_exposures_equal(a: Exposure, b: Exposure) -> None:
    """AssertionError listing every difference."""
    diffs = exposure_differences(a, b)
    if diffs:
        raise AssertionError("exposures differ: " + "; ".join(diffs))
