"""Warping: resampling onto a sky-map WCS, direct and PSF-matched warps (ALGORITHMS.md §5).

Importing the package registers :class:`WarpedPsf` for ``Psf.from_dict``.
"""

from .direct import MakeWarpConfig, make_direct_warp, warp_box
from .inputs import (
    COADD_INPUTS_KEY,
    CcdRow,
    CoaddInputs,
    VisitRow,
    coadd_inputs_psf_at,
    get_coadd_inputs,
)
from .psf_matched import (
    ModelPsfConfig,
    PsfMatchConfig,
    make_model_psf,
    make_psf_matched_warp,
)
from .resample import (
    WarperConfig,
    dest_footprint,
    sum_variance_ratio,
    warp_exposure,
    warp_masked_image,
    warp_masked_image_into,
    warp_noise_autocorrelation,
)
from .transform import PixelTransform
from .warped_psf import WarpedPsf

__all__ = [
    "COADD_INPUTS_KEY",
    "CcdRow",
    "CoaddInputs",
    "MakeWarpConfig",
    "ModelPsfConfig",
    "PsfMatchConfig",
    "VisitRow",
    "coadd_inputs_psf_at",
    "get_coadd_inputs",
    "make_direct_warp",
    "make_model_psf",
    "make_psf_matched_warp",
    "warp_box",
    "PixelTransform",
    "WarpedPsf",
    "WarperConfig",
    "dest_footprint",
    "sum_variance_ratio",
    "warp_exposure",
    "warp_masked_image",
    "warp_masked_image_into",
    "warp_noise_autocorrelation",
]
