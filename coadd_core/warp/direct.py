"""Direct warps: one visit's calexps resampled onto a patch (LSST ``MakeDirectWarpTask``, §5.2).

The warp box is the patch *outer* box grown by ``border`` pixels (room for PSF
matching).  Every detector whose outline overlaps the patch is calibrated to nJy on the
fly (image x c, variance x c^2) and warped with the grid anchored on the whole warp
box, so its pixels are exactly those of LSST's "warp into the whole box, then copy";
only the part of the box the detector can reach is computed.  Later detectors
overwrite earlier ones where both have data.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
from astropy.wcs import WCS
from pydantic import BaseModel, ConfigDict, Field

from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..masks import standard_planes
from ..photocalib import PhotoCalib
from .inputs import COADD_INPUTS_KEY, CcdRow, CoaddInputs, VisitRow
from .resample import WarperConfig, dest_footprint, warp_masked_image_into
from .transform import PixelTransform, clip_polygon_to_rectangle, map_outline, polygon_area

__all__ = ["MakeWarpConfig", "make_direct_warp", "warp_box"]

logger = logging.getLogger(__name__)


class MakeWarpConfig(BaseModel):
    """Direct-warp parameters (LSST ``MakeDirectWarpConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    border: int = Field(
        256, ge=0, description="Pixels added around the patch outer box (room for PSF matching); LSST border."
    )
    warper: WarperConfig = Field(
        default_factory=WarperConfig,
        description="Resampling: lanczos3, exact kernel (cacheSize 0); LSST warper.",
    )
    min_coverage_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Skip warps covering less of the patch outer box than this; LSST has none (any pixel counts).",
    )
    detectors_per_visit: int = Field(
        36, gt=0, description="Packing of ccd row ids, visit * n + detector (MegaPrime: 36); LSST's id packer."
    )


def warp_box(patch_outer_bbox: Box, config: MakeWarpConfig) -> Box:
    """The direct warp's box: the patch outer box grown by ``config.border``."""
    return patch_outer_bbox.grown(config.border)


def _usable_calibration(calexp: Exposure) -> float | None:
    calib = calexp.photo_calib
    if calib is None:
        return None
    c = calib.calibration_mean
    return c if math.isfinite(c) and c > 0 else None


def _overlaps_patch(calexp: Exposure, transform: PixelTransform, patch_outer_bbox: Box) -> bool:
    """Does the detector's outline (float box, densified, in patch pixels) meet the patch?"""
    outline = map_outline(calexp.bbox.corners(float_box=True), transform)
    if not np.all(np.isfinite(outline)):
        outline = outline[np.all(np.isfinite(outline), axis=1)]
    corners = patch_outer_bbox.corners(float_box=True)
    inside = clip_polygon_to_rectangle(outline, corners[0, 0], corners[0, 1], corners[2, 0], corners[2, 1])
    return polygon_area(inside) > 0.0


def make_direct_warp(
    calexps: Sequence[Exposure],
    patch_outer_bbox: Box,
    tract_wcs: WCS,
    config: MakeWarpConfig | None = None,
    *,
    visit: int,
) -> Exposure | None:
    """One visit's calexps warped onto a patch, in nJy (LSST ``deepCoadd_directWarp``).

    Pixels no detector reaches are image NaN, mask NO_DATA, variance +inf.  Detectors
    whose WCS, PSF or calibration is missing (or non-finite) are skipped with a
    warning, as are those whose outline misses the patch outer box.  Each detector that
    contributes gets a ccd row (goodpix = pixels it wrote, weight 1) in the
    ``coadd_inputs`` metadata table; the visit row counts the warp's good pixels.

    Returns None (logged) when no calexp is given, none overlaps, no pixel lands, or
    the covered fraction of the patch outer box is below
    ``config.min_coverage_fraction``.  The warp's PSF is left unset: the coadd PSF is
    built from the ccd rows (see :func:`coadd_inputs_psf_at`).  Metadata:
    ``VISIT``, ``WARP_TYPE``, ``WARP_BORDER``, ``PATCH_OUTER_BBOX``, ``WARP_GOODPIX``,
    ``COVERAGE_FRACTION`` (of the patch outer box), ``N_CCDS``.
    """
    cfg = config or MakeWarpConfig()
    if not calexps:
        logger.info("visit %d: no calexps, no direct warp", visit)
        return None
    box = warp_box(patch_outer_bbox, cfg)
    planes = standard_planes()
    out = MaskedImage(
        np.full(box.shape, np.nan, dtype=np.float32),
        np.full(box.shape, planes.bitmask("NO_DATA"), dtype=np.int32),
        np.full(box.shape, np.inf, dtype=np.float32),
        xy0=box.xy0,
        planes=planes,
    )
    rows: list[CcdRow] = []
    first: Exposure | None = None
    for index, calexp in enumerate(calexps):
        info = calexp.visit_info
        detector = info.detector if info is not None and info.detector is not None else index
        calibration = _usable_calibration(calexp)
        if calexp.wcs is None or calexp.psf is None or calibration is None:
            logger.warning(
                "visit %d detector %d: missing WCS, PSF or calibration, skipped", visit, detector
            )
            continue
        transform = PixelTransform(calexp.wcs, tract_wcs)
        if not _overlaps_patch(calexp, transform, patch_outer_bbox):
            logger.debug("visit %d detector %d does not overlap the patch", visit, detector)
            continue
        region = dest_footprint(calexp.bbox, transform, box)
        if region.is_empty():
            continue
        for name in calexp.planes:
            out.add_mask_plane(name, calexp.planes.description(name))
        written = warp_masked_image_into(
            out,
            calexp.masked_image,
            calexp.wcs,
            tract_wcs,
            cfg.warper,
            region=region,
            grid_anchor=box,
            scale=calibration,
            write_invalid=False,
        )
        logger.debug("visit %d detector %d: %d pixels", visit, detector, written)
        if written == 0:
            continue
        first = first or calexp
        rows.append(
            CcdRow(
                id=visit * cfg.detectors_per_visit + detector,
                visit=visit,
                detector=detector,
                goodpix=written,
                weight=1.0,
                bbox=calexp.bbox,
                wcs=calexp.wcs,
                psf=calexp.psf,
                photo_calib=calexp.photo_calib,
                valid_polygon=calexp.valid_polygon,
                visit_info=calexp.visit_info,
                physical_filter=calexp.physical_filter,
                ap_corr=float(calexp.metadata.get("PSF_APCORR", 1.0)),
            )
        )
    if first is None:
        logger.info("visit %d: no pixel lands on %s, no direct warp", visit, patch_outer_bbox)
        return None
    no_data = out.planes.bitmask("NO_DATA")
    goodpix = int(np.count_nonzero((out.mask & no_data) == 0))
    rows_o, cols_o = patch_outer_bbox.slices(box)
    covered = int(np.count_nonzero((out.mask[rows_o, cols_o] & no_data) == 0))
    coverage = covered / patch_outer_bbox.area
    if goodpix == 0 or coverage < cfg.min_coverage_fraction:
        logger.info(
            "visit %d: covers %.4f of the patch (minimum %.4f), no direct warp",
            visit, coverage, cfg.min_coverage_fraction,
        )
        return None
    inputs = CoaddInputs(
        [VisitRow(visit, goodpix, 1.0, box, first.physical_filter, first.visit_info)], rows
    )
    metadata = {
        "VISIT": visit,
        "WARP_TYPE": "direct",
        "WARP_BORDER": cfg.border,
        "PATCH_OUTER_BBOX": patch_outer_bbox.to_list(),
        "WARP_GOODPIX": goodpix,
        "COVERAGE_FRACTION": coverage,
        "N_CCDS": len(rows),
        COADD_INPUTS_KEY: inputs,
    }
    logger.info("visit %d: direct warp from %d detectors, coverage %.3f", visit, len(rows), coverage)
    return Exposure(
        out,
        wcs=tract_wcs,
        psf=None,
        photo_calib=PhotoCalib(1.0),
        visit_info=first.visit_info,
        metadata=metadata,
    )
