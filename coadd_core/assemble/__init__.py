"""Coadd assembly: AssembleCoadd, CompareWarp and SafeClip (ALGORITHMS.md §6-§8)."""

from .alt_masks import AltMask
from .assemble import AssembleResult, assemble, process_results, stats_config
from .coadd_psf import CoaddPsf, CoaddPsfInput, make_coadd_psf
from .config import (
    AssembleCoaddConfig,
    CompareWarpConfig,
    SafeClipConfig,
    ScaleVarianceConfig,
    StaticSkyModelConfig,
)
from .prepare import NoWorkFound, WarpHandle, compute_weights, mean_variance

__all__ = [
    "AltMask",
    "AssembleCoaddConfig",
    "AssembleResult",
    "CoaddPsf",
    "CoaddPsfInput",
    "CompareWarpConfig",
    "NoWorkFound",
    "SafeClipConfig",
    "ScaleVarianceConfig",
    "StaticSkyModelConfig",
    "WarpHandle",
    "assemble",
    "compute_weights",
    "make_coadd_psf",
    "mean_variance",
    "process_results",
    "stats_config",
]
