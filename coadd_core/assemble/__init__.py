"""Coadd assembly: AssembleCoadd, CompareWarp and SafeClip (ALGORITHMS.md §6-§8).

Warps are passed as :class:`WarpHandle` objects (visit, box, a ``read(bbox)`` callable,
PSF, CoaddInputs) so that only the section of each sub-region is ever in memory::

    direct = [WarpHandle.from_file(p) for p in direct_paths]
    psf_matched = [WarpHandle.from_file(p) for p in psf_matched_paths]
    result = compare_warp_assemble(direct, psf_matched, patch_bbox, tract_wcs, CompareWarpConfig())
    result.coadd, result.n_image, result.template, result.alt_masks, result.epoch_count

The steps are also usable one by one: ``compute_weights``, ``assemble``,
``build_template``, ``find_artifacts``, ``filter_artifacts``, ``safe_clip_assemble``.
"""

from .alt_masks import AltMask
from .assemble import AssembleResult, assemble, process_results, stats_config
from .coadd_psf import CoaddPsf, CoaddPsfInput, make_coadd_psf
from .compare_warp import (
    CompareWarpResult,
    FindArtifactsResult,
    build_template,
    compare_warp_assemble,
    filter_artifacts,
    find_artifacts,
)
from .config import (
    AssembleCoaddConfig,
    CompareWarpConfig,
    SafeClipConfig,
    ScaleVarianceConfig,
    StaticSkyModelConfig,
)
from .prepare import NoWorkFound, WarpHandle, compute_weights, mean_variance
from .safe_clip import SafeClipResult, safe_clip_assemble
from .scale_variance import ExceedsMaxVarianceScaleError, scale_variance

__all__ = [
    "AltMask",
    "AssembleCoaddConfig",
    "AssembleResult",
    "CoaddPsf",
    "CoaddPsfInput",
    "CompareWarpConfig",
    "CompareWarpResult",
    "ExceedsMaxVarianceScaleError",
    "FindArtifactsResult",
    "NoWorkFound",
    "SafeClipConfig",
    "SafeClipResult",
    "ScaleVarianceConfig",
    "StaticSkyModelConfig",
    "WarpHandle",
    "assemble",
    "build_template",
    "compare_warp_assemble",
    "compute_weights",
    "filter_artifacts",
    "find_artifacts",
    "make_coadd_psf",
    "mean_variance",
    "process_results",
    "safe_clip_assemble",
    "scale_variance",
    "stats_config",
]
