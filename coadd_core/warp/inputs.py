"""CoaddInputs: the table of calexps behind a warp or coadd (LSST ``CoaddInputs``, §6.6).

A warp records one *visit* row and one *ccd* row per detector that put pixels into it,
with what the coadd PSF and later steps need: the detector's box, WCS and original
(calexp-frame) PSF, calibration, valid polygon and observation metadata.

The table is stored in an exposure's metadata under ``"coadd_inputs"``.  To survive
that, :class:`CoaddInputs` *is* its own JSON-compatible dict form (a ``dict``
subclass) with typed, lazily parsed ``visits`` and ``ccds`` views; after a FITS round
trip the metadata holds a plain dict again, which :meth:`CoaddInputs.from_metadata`
turns back into the table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Iterable, Mapping

import numpy as np
from astropy.wcs import WCS

from ..exposure import Exposure
from ..geom import Box
from ..photocalib import PhotoCalib
from ..polygon import ValidPolygon
from ..psf import Psf
from ..visit_info import VisitInfo
from ..wcs_utils import wcs_from_header_dict, wcs_header_dict
from .transform import PixelTransform
from .warped_psf import WarpedPsf

__all__ = [
    "COADD_INPUTS_KEY",
    "CcdRow",
    "CoaddInputs",
    "VisitRow",
    "coadd_inputs_psf_at",
    "get_coadd_inputs",
]

#: Metadata key holding a warp's or coadd's inputs table.
COADD_INPUTS_KEY = "coadd_inputs"


def _psf_from_dict(data: Mapping[str, Any]) -> Psf:
    params = dict(data)
    if params.get("type") == "ImagePsf":
        params["array"] = np.asarray(params["array"], dtype=np.float64)
    return Psf.from_dict(params)


@dataclass(frozen=True, eq=False)
class CcdRow:
    """One input calexp (LSST ``CoaddInputs.ccds`` row).

    ``psf`` is the *original* calexp PSF in calexp pixels, ``wcs`` the calexp WCS and
    ``bbox`` the calexp box; ``goodpix`` counts the pixels it put into the warp and
    ``weight`` is 1 in warps (the visit weight in coadds).
    """

    id: int
    visit: int
    detector: int
    goodpix: int
    weight: float
    bbox: Box
    wcs: WCS
    psf: Psf | None = None
    photo_calib: PhotoCalib | None = None
    valid_polygon: ValidPolygon | None = None
    visit_info: VisitInfo | None = None
    physical_filter: str | None = None
    ap_corr: float = 1.0
    """Total light of a star over the light in ``psf``'s box (the calexp's ``PSF_APCORR``):
    PSF models are normalised over their box, calibrations count the light beyond it."""

    @property
    def ccd(self) -> int:
        """The detector number (LSST column name ``ccd``)."""
        return self.detector

    def with_valid_polygon(self, polygon: ValidPolygon | None) -> "CcdRow":
        return replace(self, valid_polygon=polygon)

    def covers(self, transform: PixelTransform, x: float, y: float) -> bool:
        """True if coadd position (x, y) maps inside the float box and the valid polygon.

        ``transform`` maps coadd (destination) pixels to this calexp's pixels.
        """
        sx, sy = transform.dest_to_src(np.array([x]), np.array([y]))
        px, py = float(sx[0]), float(sy[0])
        b = self.bbox
        if not (b.x0 - 0.5 <= px <= b.x1 + 0.5 and b.y0 - 0.5 <= py <= b.y1 + 0.5):
            return False
        return self.valid_polygon is None or bool(self.valid_polygon.contains(px, py))

    def warped_psf(self, coadd_wcs: WCS, kernel_name: str = "lanczos3") -> WarpedPsf:
        """The calexp PSF as seen in the coadd/warp pixel frame."""
        if self.psf is None:
            raise ValueError(f"ccd row visit={self.visit} detector={self.detector} has no PSF")
        cx, cy = self.bbox.center
        dx, dy = PixelTransform(self.wcs, coadd_wcs).src_to_dest(np.array([cx]), np.array([cy]))
        return WarpedPsf(self.psf, self.wcs, coadd_wcs, kernel_name, (float(dx[0]), float(dy[0])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "visit": self.visit,
            "ccd": self.detector,
            "goodpix": self.goodpix,
            "weight": self.weight,
            "bbox": self.bbox.to_list(),
            "wcs": wcs_header_dict(self.wcs),
            "psf": None if self.psf is None else self.psf.to_dict(),
            "photo_calib": None if self.photo_calib is None else self.photo_calib.to_dict(),
            "valid_polygon": None if self.valid_polygon is None else self.valid_polygon.to_dict(),
            "visit_info": None if self.visit_info is None else self.visit_info.to_dict(),
            "filter": self.physical_filter,
            "ap_corr": self.ap_corr,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CcdRow":
        return cls(
            id=int(data["id"]),
            visit=int(data["visit"]),
            detector=int(data["ccd"]),
            goodpix=int(data["goodpix"]),
            weight=float(data["weight"]),
            bbox=Box.from_list(data["bbox"]),
            wcs=wcs_from_header_dict(data["wcs"]),
            psf=None if data.get("psf") is None else _psf_from_dict(data["psf"]),
            photo_calib=None if data.get("photo_calib") is None else PhotoCalib.from_dict(data["photo_calib"]),
            valid_polygon=None if data.get("valid_polygon") is None else ValidPolygon.from_dict(data["valid_polygon"]),
            visit_info=None if data.get("visit_info") is None else VisitInfo.from_dict(data["visit_info"]),
            physical_filter=data.get("filter"),
            ap_corr=float(data.get("ap_corr", 1.0)),
        )


@dataclass(frozen=True, eq=False)
class VisitRow:
    """One input visit (LSST ``CoaddInputs.visits`` row); ``bbox`` is the warp's box."""

    visit: int
    goodpix: int
    weight: float
    bbox: Box
    physical_filter: str | None = None
    visit_info: VisitInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.visit,
            "goodpix": self.goodpix,
            "weight": self.weight,
            "bbox": self.bbox.to_list(),
            "filter": self.physical_filter,
            "visit_info": None if self.visit_info is None else self.visit_info.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VisitRow":
        return cls(
            visit=int(data["id"]),
            goodpix=int(data["goodpix"]),
            weight=float(data["weight"]),
            bbox=Box.from_list(data["bbox"]),
            physical_filter=data.get("filter"),
            visit_info=None if data.get("visit_info") is None else VisitInfo.from_dict(data["visit_info"]),
        )


class CoaddInputs(dict):
    """Visits and ccds tables; the dict content is the serialised form (``to_dict``)."""

    def __init__(self, visits: Iterable[VisitRow] = (), ccds: Iterable[CcdRow] = ()) -> None:
        visit_rows = tuple(visits)
        ccd_rows = tuple(ccds)
        super().__init__(
            visits=[v.to_dict() for v in visit_rows],
            ccds=[c.to_dict() for c in ccd_rows],
        )
        self.__dict__["visits"] = visit_rows
        self.__dict__["ccds"] = ccd_rows

    @cached_property
    def visits(self) -> tuple[VisitRow, ...]:
        return tuple(VisitRow.from_dict(v) for v in self["visits"])

    @cached_property
    def ccds(self) -> tuple[CcdRow, ...]:
        return tuple(CcdRow.from_dict(c) for c in self["ccds"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible copy."""
        return {"visits": list(self["visits"]), "ccds": list(self["ccds"])}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CoaddInputs":
        obj = cls.__new__(cls)
        dict.__init__(obj, visits=list(data.get("visits", [])), ccds=list(data.get("ccds", [])))
        return obj

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "CoaddInputs | None":
        """The table in an exposure's metadata (object or plain dict), or None."""
        value = metadata.get(COADD_INPUTS_KEY)
        if value is None:
            return None
        return value if isinstance(value, CoaddInputs) else cls.from_dict(value)

    def with_ccds(self, ccds: Iterable[CcdRow]) -> "CoaddInputs":
        return CoaddInputs(self.visits, ccds)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CoaddInputs.from_dict, (self.to_dict(),))

    def __deepcopy__(self, memo: dict[int, Any]) -> "CoaddInputs":
        import copy

        return CoaddInputs.from_dict(copy.deepcopy(self.to_dict(), memo))

    def __repr__(self) -> str:
        return f"CoaddInputs({len(self['visits'])} visits, {len(self['ccds'])} ccds)"


def get_coadd_inputs(exposure: Exposure) -> CoaddInputs | None:
    """The inputs table of a warp or coadd, if it has one."""
    return CoaddInputs.from_metadata(exposure.metadata)


def coadd_inputs_psf_at(
    inputs: CoaddInputs, coadd_wcs: WCS, x: float, y: float, kernel_name: str = "lanczos3"
) -> np.ndarray:
    """Weighted mean of the covering inputs' warped PSFs at coadd position (x, y) (§6.6).

    Only ccd rows whose calexp position of (x, y) lies inside their float box and valid
    polygon contribute; each warped kernel is normalised to unit sum, smaller kernels
    are centred in the largest.  ValueError if no input covers the point.
    """
    kernels: list[tuple[float, np.ndarray]] = []
    for row in inputs.ccds:
        if row.psf is None:
            continue
        if not row.covers(PixelTransform(row.wcs, coadd_wcs), x, y):
            continue
        kernel = row.warped_psf(coadd_wcs, kernel_name).kernel_image(x, y)
        kernels.append((row.weight, kernel / kernel.sum()))
    if not kernels:
        raise ValueError(f"no input images cover coadd position ({x}, {y})")
    size = max(k.shape[0] for _, k in kernels)
    total = np.zeros((size, size))
    weight = 0.0
    for w, k in kernels:
        pad = (size - k.shape[0]) // 2
        total[pad : pad + k.shape[0], pad : pad + k.shape[0]] += w * k
        weight += w
    return total / weight
