"""Single-frame characterisation: background, cosmic rays, PSF, photometric calibration.

``characterize(post_isr, refcat=..., band=..., config=...)`` turns a post-ISR exposure
into a calexp (ALGORITHMS.md §3); the pieces are usable on their own.
"""

from .characterize import CharacterizeResult, characterize
from .config import CharacterizeConfig, CosmicRayConfig, PhotoCalConfig, PsfMeasureConfig, RefcatColumns
from .cosmic_rays import CosmicRayResult, find_cosmic_rays
from .photocal import PhotoCalError, PhotoCalResult, calibrate_photometry, fit_zero_point, nominal_photo_calib
from .psf_measure import PsfMeasurement, PsfMeasurementError, measure_psf
from .refcat import RefcatError, read_refcat

__all__ = [
    "CharacterizeConfig",
    "CharacterizeResult",
    "CosmicRayConfig",
    "CosmicRayResult",
    "PhotoCalConfig",
    "PhotoCalError",
    "PhotoCalResult",
    "PsfMeasureConfig",
    "PsfMeasurement",
    "PsfMeasurementError",
    "RefcatColumns",
    "RefcatError",
    "calibrate_photometry",
    "characterize",
    "find_cosmic_rays",
    "fit_zero_point",
    "measure_psf",
    "nominal_photo_calib",
    "read_refcat",
]
