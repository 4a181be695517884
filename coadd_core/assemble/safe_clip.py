"""SafeClip coadds: outliers found on the difference of an unclipped and a clipped coadd,
clipped only in the one or two warps whose own detections cover them (LSST
``SafeClipAssembleCoaddTask``, legacy; ALGORITHMS.md §8)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from astropy.wcs import WCS

from ..detection import Footprints, detect_footprints
from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..masks import MaskPlanes, remap_mask, standard_planes
from .alt_masks import AltMask, empty_spans, spans_from_mask
from .assemble import assemble, stack_subregions, stats_config
from .coadd_psf import make_coadd_psf
from .config import SafeClipConfig
from .prepare import WarpHandle, compute_weights

__all__ = [
    "SafeClipResult",
    "build_difference_image",
    "choose_clipped_warps",
    "detect_clip",
    "detect_clip_big",
    "safe_clip_assemble",
]

logger = logging.getLogger(__name__)


@dataclass
class SafeClipResult:
    coadd: Exposure
    n_image: np.ndarray | None
    difference: Exposure
    alt_masks: dict[int, AltMask]
    metadata: dict[str, Any] = field(default_factory=dict)


def build_difference_image(
    handles_and_weights: Sequence[tuple[WarpHandle, float]],
    patch_bbox: Box,
    tract_wcs: WCS | None,
    config: SafeClipConfig,
) -> Exposure:
    """MEAN minus MEANCLIP coadd (variances add), with the MEAN coadd's PSF (LSST
    ``buildDifferenceImage``)."""
    planes = standard_planes()
    coadds = []
    for statistic in ("MEAN", "MEANCLIP"):
        cfg = config.model_copy(update={"statistic": statistic, "do_n_image": False})
        mi = MaskedImage.empty(patch_bbox, planes=planes)
        stack_subregions(handles_and_weights, mi, cfg, stats_config(cfg, planes))
        coadds.append(mi)
    mean, clipped = coadds
    diff = MaskedImage(mean.image - clipped.image, mean.mask | clipped.mask, mean.variance + clipped.variance,
                       xy0=patch_bbox.xy0, planes=planes)
    psf = make_coadd_psf(handles_and_weights, patch_bbox, tract_wcs, config)
    return Exposure(diff, wcs=tract_wcs, psf=psf)


def choose_clipped_warps(ignore: np.ndarray, detected: np.ndarray, n_pix: np.ndarray,
                         config: SafeClipConfig) -> np.ndarray:
    """Boolean ``(n_warps, n_footprints)``: which warps to clip for each footprint.

    ``ignore[i, j]`` counts footprint ``j``'s pixels with a bad plane in warp ``i``,
    ``detected[i, j]`` its pixels detected (and not bad) in warp ``i``.
    """
    usable = n_pix[None, :] - ignore
    candidate = (ignore <= detected) & (usable > 0.5 * n_pix[None, :]) & (detected > 0)
    overlap = np.where(candidate, detected / np.maximum(usable, 1), 0.0)
    clip = np.zeros(ignore.shape, dtype=bool)
    for j in range(ignore.shape[1]):
        cands = np.flatnonzero(candidate[:, j])
        if len(cands) == 0:
            continue
        ov = overlap[cands, j]
        if len(cands) == 1:
            if ov[0] > config.min_clip_foot_overlap_single:
                clip[cands[0], j] = True
            continue
        above = cands[ov > config.min_clip_foot_overlap]
        if len(above) == 1:
            clip[above[0], j] = True
        double = ov > config.min_clip_foot_overlap_double
        if double.sum() == 2 and len(cands) > 3:
            rest = ov[~double]
            if rest.max(initial=0.0) <= config.max_clip_foot_overlap_double:
                clip[cands[double], j] = True
    return clip


def _warp_mask(handle: WarpHandle, bbox: Box, planes: MaskPlanes) -> np.ndarray:
    """The warp's mask over the patch; NO_DATA where the warp has no pixels."""
    out = np.full(bbox.shape, planes.bitmask("NO_DATA"), dtype=np.int32)
    inter = bbox.intersection(handle.bbox)
    if not inter.is_empty():
        section = handle.read(inter)
        mask = section.mask
        if section.planes != planes:
            mask, _ = remap_mask(mask, section.planes, planes)
        out[inter.slices(bbox)] = mask
    return out


def detect_clip(
    difference: Exposure, handles: Sequence[WarpHandle], config: SafeClipConfig
) -> tuple[Footprints, np.ndarray]:
    """Footprints of the difference image and which warps each is clipped in (LSST
    ``detectClip``)."""
    mi = difference.masked_image.copy()
    sigma = float(difference.psf.sigma) if difference.psf is not None else float("nan")
    result = detect_footprints(mi, sigma, config.clip_detection)
    fp = result.positive
    if result.negative is not None:
        fp = result.negative if fp is None else fp.merge(result.negative)
    assert fp is not None
    bbox = difference.bbox
    planes = standard_planes()
    bad = np.int32(planes.bitmask(*[p for p in config.bad_mask_planes if p in planes]))
    det_bits = np.int32(planes.bitmask("DETECTED", "DETECTED_NEGATIVE"))
    n = len(fp)
    labels = fp.labels.ravel()
    inside = labels > 0
    lab = labels[inside]
    n_pix = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    ignore = np.zeros((len(handles), n))
    detected = np.zeros((len(handles), n))
    for i, handle in enumerate(handles):
        mask = _warp_mask(handle, bbox, planes).ravel()[inside]
        is_bad = (mask & bad) != 0
        ignore[i] = np.bincount(lab, weights=is_bad, minlength=n + 1)[1:]
        detected[i] = np.bincount(lab, weights=((mask & det_bits) != 0) & ~is_bad, minlength=n + 1)[1:]
    return fp, choose_clipped_warps(ignore, detected, n_pix, config)


def detect_clip_big(
    handles: Sequence[WarpHandle], clipped: list[np.ndarray], bbox: Box, config: SafeClipConfig
) -> list[np.ndarray]:
    """Grow each warp's clipped area to whole detections of that warp that hold more than
    ``minBigOverlap`` clipped good pixels (LSST ``detectClipBig``)."""
    planes = standard_planes()
    bad = np.int32(planes.bitmask(*[p for p in config.bad_mask_planes if p in planes]))
    det_bits = np.int32(planes.bitmask("DETECTED"))
    out = []
    for handle, clip in zip(handles, clipped):
        if not clip.any():
            out.append(clip)
            continue
        mask = _warp_mask(handle, bbox, planes)
        own = Footprints.from_mask((mask & det_bits) != 0, bbox)
        if len(own) == 0:
            out.append(clip)
            continue
        good_clip = clip & ((mask & bad) == 0)
        n = len(own)
        overlap = np.bincount(own.labels[good_clip], minlength=n + 1)[1:]
        big = (own.areas >= config.min_big_overlap) & (overlap > config.min_big_overlap)
        if big.any():
            keep = np.concatenate([[False], big])
            clip = clip | keep[own.labels]
        out.append(clip)
    return out


def safe_clip_assemble(
    direct_handles: Sequence[WarpHandle],
    patch_bbox: Box,
    tract_wcs: WCS | None,
    config: SafeClipConfig = SafeClipConfig(),
) -> SafeClipResult:
    """SafeClip coadd (§8): difference image, clip detection, big-footprint growth, and a
    mean with the clipped inputs excluded."""
    t0 = time.perf_counter()
    weights = compute_weights(direct_handles, config, patch_bbox=patch_bbox)
    handles = [h for h, _ in weights]
    difference = build_difference_image(weights, patch_bbox, tract_wcs, config)
    fp, clip_table = detect_clip(difference, handles, config)
    clipped = []
    for i in range(len(handles)):
        ids = np.flatnonzero(clip_table[i]) + 1
        clipped.append(np.isin(fp.labels, ids) if len(ids) else np.zeros(patch_bbox.shape, bool))
    clipped = detect_clip_big(handles, clipped, patch_bbox, config)
    alt_masks = [AltMask(clipped=spans_from_mask(c, patch_bbox), no_data=empty_spans(), edge=empty_spans())
                 for c in clipped]
    final = assemble(weights, patch_bbox, tract_wcs, config, alt_masks=alt_masks, extra_bad_mask_planes=("CLIPPED",))
    metadata = dict(final.metadata)
    metadata["COADD_NCLIPPED_FOOTPRINTS"] = int(clip_table.sum())
    logger.info("SafeClip: %d clip footprints of %d, %.2fs", int(clip_table.any(axis=0).sum()), len(fp),
                time.perf_counter() - t0)
    return SafeClipResult(final.coadd, final.n_image, difference,
                          {h.visit: a for h, a in zip(handles, alt_masks)}, metadata)
