"""AssembleCoadd: stack warps into a patch coadd by sub-regions (ALGORITHMS.md §6.4-6.5).

For every sub-box (a full-width strip) of the patch each warp is asked for that section only, its mask is
adjusted (alternative masks, removed planes), and the statistics engine combines the
stack.  Sub-boxes are made short enough that the stack of all warps fits in
``config.max_stack_bytes``, so memory stays flat as the number of warps grows; the
stack buffers are allocated once and reused.  Results do not depend on the sub-region
size: every pixel is computed from its own stack.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from astropy.wcs import WCS

from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..interpolate import interpolate_over
from ..masks import MaskPlanes, remap_mask, standard_planes
from ..photocalib import PhotoCalib
from ..stats import StackResult, StatsConfig, stack
from ..warp.inputs import COADD_INPUTS_KEY, CoaddInputs
from .alt_masks import AltMask, apply_alt_edge_mask, apply_alt_mask
from .coadd_psf import make_coadd_psf
from .config import AssembleCoaddConfig
from .prepare import NoWorkFound, WarpHandle

__all__ = [
    "AssembleResult",
    "NoWorkFound",
    "assemble",
    "coadd_aperture_correction",
    "coadd_inputs_table",
    "rejected_mask_map",
    "stats_config",
    "stack_subregions",
]

logger = logging.getLogger(__name__)

#: Bytes per input pixel in the stack: image float32 + mask int32 + variance float32.
_BYTES_PER_INPUT_PIXEL = 12


@dataclass
class AssembleResult:
    """The coadd (nJy, PhotoCalib 1, coadd PSF), the input-count image and run metadata."""

    coadd: Exposure
    n_image: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _bits(planes: MaskPlanes, names: Sequence[str]) -> int:
    return planes.bitmask(*[n for n in names if n in planes]) if names else 0


def rejected_mask_map(and_mask: int, planes: MaskPlanes) -> tuple[tuple[int, int], ...]:
    """LSST ``setRejectedMaskMapping``: bad planes other than NO_DATA/EDGE/CLIPPED ->
    REJECTED, EDGE -> SENSOR_EDGE, CLIPPED -> CLIPPED."""
    edge = planes.bitmask("EDGE")
    clipped = planes.bitmask("CLIPPED")
    to_reject = and_mask & ~(planes.bitmask("NO_DATA") | edge | clipped)
    return ((to_reject, planes.bitmask("REJECTED")), (edge, planes.bitmask("SENSOR_EDGE")), (clipped, clipped))


def stats_config(config: AssembleCoaddConfig, planes: MaskPlanes, extra_bad_planes: Sequence[str] = ()) -> StatsConfig:
    """The statistics control of an assembly (§6.4 step 1 and 3)."""
    and_mask = _bits(planes, tuple(config.bad_mask_planes) + tuple(extra_bad_planes))
    return StatsConfig(
        statistic=config.statistic,
        num_sigma_clip=config.sigma_clip,
        num_iter=config.clip_iter,
        and_mask=and_mask,
        calc_error_from_input_variance=config.calc_error_from_input_variance,
        mask_propagation_thresholds=dict(config.mask_propagation_thresholds),
        rejected_mask_map=rejected_mask_map(and_mask, planes),
    )


def _subregion_rows(n_warps: int, width: int, config: AssembleCoaddConfig) -> int:
    """Rows per full-width strip: as many pixels as a configured sub-region holds, fewer
    if the stack of all warps would exceed the memory budget.

    Strips span the patch width so that each warp section is one contiguous read.
    """
    by_size = (config.subregion_size[0] * config.subregion_size[1]) // max(1, width)
    by_budget = config.max_stack_bytes // max(1, n_warps * width * _BYTES_PER_INPUT_PIXEL)
    return int(max(1, min(by_size, by_budget)))


class _StackBuffers:
    """Flat buffers reused for every sub-region; views are contiguous prefixes."""

    def __init__(self, n: int, rows: int, width: int) -> None:
        size = rows * width
        self.n = n
        self.images = np.empty(n * size, dtype=np.float32)
        self.masks = np.empty(n * size, dtype=np.int32)
        self.variances = np.empty(n * size, dtype=np.float32)
        self.out = [np.empty(size, dtype=t) for t in (np.float32, np.int32, np.float32, np.int32)]

    def views(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, StackResult]:
        size = shape[0] * shape[1]
        cube = (self.n, *shape)
        return (
            self.images[: self.n * size].reshape(cube),
            self.masks[: self.n * size].reshape(cube),
            self.variances[: self.n * size].reshape(cube),
            StackResult(*(a[:size].reshape(shape) for a in self.out)),
        )


def _read_section(
    handle: WarpHandle, box: Box, planes: MaskPlanes, no_data: int,
    image: np.ndarray, mask: np.ndarray, variance: np.ndarray,
) -> None:
    """Copy the warp's pixels of ``box`` into the stack slices; NO_DATA where it has none."""
    inter = box.intersection(handle.bbox)
    if inter != box:
        image.fill(np.nan)
        mask.fill(no_data)
        variance.fill(np.inf)
    if inter.is_empty():
        return
    section = handle.read(inter)
    if section.bbox != inter:
        raise ValueError(f"warp of visit {handle.visit} returned {section.bbox} for {inter}")
    rows, cols = inter.slices(box)
    image[rows, cols] = section.image
    src_mask = section.mask
    if section.planes != planes:
        src_mask, _ = remap_mask(src_mask, section.planes, planes)
    mask[rows, cols] = src_mask
    variance[rows, cols] = section.variance


def stack_subregions(
    handles_and_weights: Sequence[tuple[WarpHandle, float]],
    target: MaskedImage,
    config: AssembleCoaddConfig,
    stats: StatsConfig,
    *,
    alt_masks: Sequence[AltMask | None] | None = None,
    n_image: np.ndarray | None = None,
) -> None:
    """Fill ``target`` (image, mask, variance over the patch) sub-region by sub-region."""
    planes = target.planes
    bbox = target.bbox
    handles = [h for h, _ in handles_and_weights]
    weights = np.array([w for _, w in handles_and_weights], dtype=np.float64)
    n = len(handles)
    width = bbox.width
    rows = _subregion_rows(n, width, config)
    buffers = _StackBuffers(n, rows, width)
    no_data = planes.bitmask("NO_DATA")
    clipped = planes.bitmask("CLIPPED")
    remove = ~np.int32(_bits(planes, config.remove_mask_planes))
    and_mask = np.int32(stats.and_mask)
    read_time = stack_time = 0.0
    n_boxes = 0
    for box in bbox.subregions(width, rows):
        n_boxes += 1
        images, masks, variances, out = buffers.views(box.shape)
        t0 = time.perf_counter()
        for i, handle in enumerate(handles):
            _read_section(handle, box, planes, no_data, images[i], masks[i], variances[i])
            if alt_masks is not None and alt_masks[i] is not None:
                apply_alt_mask(masks[i], box, alt_masks[i], planes, config.bad_mask_planes)
            if n_image is not None:
                n_image[box.slices(bbox)] += ((masks[i] & and_mask) == 0).astype(np.uint16)
            masks[i] &= remove
        t1 = time.perf_counter()
        stack(images, masks, variances, weights, stats, clipped_bit=clipped, no_good_bit=no_data,
              planes=planes, out=out)
        t2 = time.perf_counter()
        sl = box.slices(bbox)
        target.image[sl] = out.image
        target.mask[sl] = out.mask
        target.variance[sl] = out.variance
        read_time += t1 - t0
        stack_time += t2 - t1
    logger.info(
        "stacked %d warps over %d sub-regions of up to %dx%d px: read %.2fs, stack %.2fs",
        n, n_boxes, width, rows, read_time, stack_time,
    )


def coadd_inputs_table(handles_and_weights: Sequence[tuple[WarpHandle, float]]) -> CoaddInputs | None:
    """The coadd's inputs: every warp's visit row and ccd rows with the coadd weight,
    sorted by id; a warp without exactly one visit row is left out with a warning."""
    visits = []
    ccds = []
    for handle, weight in handles_and_weights:
        table = handle.coadd_inputs
        if table is None:
            continue
        if len(table.visits) != 1:
            logger.warning("warp of visit %d has %d visit rows in its inputs; not recorded",
                           handle.visit, len(table.visits))
            continue
        visits.append(replace(table.visits[0], weight=float(weight)))
        ccds.extend(replace(row, weight=float(weight)) for row in table.ccds)
    if not visits:
        return None
    return CoaddInputs(sorted(visits, key=lambda v: v.visit), sorted(ccds, key=lambda c: c.id))


def coadd_aperture_correction(inputs: CoaddInputs) -> float:
    """Total light of a star over the light in the coadd PSF's box: the inputs'
    ``ap_corr`` weighted as the coadd PSF weights their PSFs (coadd weight), and by the
    pixels each put in.  The coadd PSF is normalised over its box like its inputs', so
    PSF or aperture photometry corrected with it alone falls short by this factor."""
    rows = inputs.to_dict()["ccds"]  # the stored rows: no WCS or PSF is parsed
    w = np.array([float(r["weight"]) * int(r["goodpix"]) for r in rows], dtype=np.float64)
    if not len(rows) or w.sum() <= 0:
        return 1.0
    return float(np.dot(w, [float(r.get("ap_corr", 1.0)) for r in rows]) / w.sum())


def _finish_masks(mi: MaskedImage) -> None:
    """§6.4 steps 5-6: INEXACT_PSF where inputs were rejected or clipped; zero variance is no data."""
    planes = mi.planes
    rejected = np.int32(planes.bitmask("SENSOR_EDGE", "CLIPPED", "REJECTED"))
    mi.mask[(mi.mask & rejected) != 0] |= np.int32(planes.bitmask("INEXACT_PSF"))
    mi.mask[mi.variance == 0] |= np.int32(planes.bitmask("NO_DATA"))


def process_results(mi: MaskedImage, config: AssembleCoaddConfig) -> int:
    """LSST ``processResults``: interpolate over NO_DATA along rows (fallback: the image
    median if positive, else 0), then make every non-positive or NaN variance +inf."""
    n_interp = 0
    if config.do_interp:
        no_data = mi.planes.bitmask("NO_DATA")
        if np.any(mi.mask & np.int32(no_data)):
            finite = mi.image[np.isfinite(mi.image)]
            fallback = max(float(np.median(finite)), 0.0) if finite.size else 0.0
            n_interp = interpolate_over(mi, no_data, fallback=fallback)
    bad_var = ~(mi.variance > 0)
    mi.variance[bad_var] = np.inf
    return n_interp


def assemble(
    handles_and_weights: Sequence[tuple[WarpHandle, float]],
    patch_bbox: Box,
    tract_wcs: WCS | None,
    config: AssembleCoaddConfig,
    *,
    alt_masks: Sequence[AltMask | None] | None = None,
    extra_bad_mask_planes: Sequence[str] = (),
) -> AssembleResult:
    """Coadd the weighted warps over ``patch_bbox`` (LSST ``AssembleCoaddTask.run``).

    ``alt_masks`` (one per warp, or None) are applied to the warps' masks and their EDGE
    spans flag the coadd (CompareWarp); ``extra_bad_mask_planes`` join the bad planes
    (CompareWarp and SafeClip add CLIPPED).
    """
    if not handles_and_weights:
        raise NoWorkFound("no warps to coadd")
    if alt_masks is not None and len(alt_masks) != len(handles_and_weights):
        raise ValueError("alt_masks must have one entry per warp")
    t_start = time.perf_counter()
    planes = standard_planes()
    stats = stats_config(config, planes, extra_bad_mask_planes)
    coadd_mi = MaskedImage.empty(patch_bbox, planes=planes)
    n_image = np.zeros(patch_bbox.shape, dtype=np.uint16) if config.do_n_image else None
    stack_subregions(handles_and_weights, coadd_mi, config, stats, alt_masks=alt_masks, n_image=n_image)
    _finish_masks(coadd_mi)
    if alt_masks is not None:
        apply_alt_edge_mask(coadd_mi.mask, patch_bbox, list(alt_masks), planes)
    n_interp = process_results(coadd_mi, config)
    handles = [h for h, _ in handles_and_weights]
    weights = [float(w) for _, w in handles_and_weights]
    psf = make_coadd_psf(handles_and_weights, patch_bbox, tract_wcs, config)
    metadata: dict[str, Any] = {
        "BUNIT": "nJy",
        "COADD_STATISTIC": config.statistic,
        "COADD_WARP_TYPE": config.warp_type,
        "COADD_NINPUTS": len(handles),
        "COADD_VISITS": [int(h.visit) for h in handles],
        "COADD_WEIGHTS": weights,
        "COADD_NINTERP": int(n_interp),
    }
    band = next((h.band for h in handles if h.band is not None), None)
    if band is not None:
        metadata["BAND"] = band
    result_metadata = dict(metadata)
    inputs = coadd_inputs_table(handles_and_weights)
    if inputs is not None:
        metadata["PSF_APCORR"] = result_metadata["PSF_APCORR"] = coadd_aperture_correction(inputs)
        metadata[COADD_INPUTS_KEY] = inputs
    coadd = Exposure(coadd_mi, wcs=tract_wcs, psf=psf, photo_calib=PhotoCalib(1.0), metadata=metadata)
    logger.info(
        "assembled %s coadd of %d warps over %s in %.2fs (%d pixels interpolated)",
        config.statistic, len(handles), patch_bbox, time.perf_counter() - t_start, n_interp,
    )
    return AssembleResult(coadd, n_image, result_metadata)

