"""Empirical rescaling of a warp's variance plane (LSST ``ScaleVarianceTask``, §7.5).

Resampling and PSF matching correlate the noise, so a PSF-matched warp's variance plane
no longer matches its pixel scatter; CompareWarp thresholds its warp differences in
units of that variance, so it is rescaled to the measured noise first.
"""

from __future__ import annotations

import logging

import numpy as np

from ..background import BackgroundConfig, fit_background
from ..image import MaskedImage
from ..stats import IQR_TO_SIGMA
from .config import ScaleVarianceConfig

__all__ = ["ExceedsMaxVarianceScaleError", "measure_variance_scale", "scale_variance"]

logger = logging.getLogger(__name__)


class ExceedsMaxVarianceScaleError(RuntimeError):
    """The measured variance factor exceeds the configured limit by both methods."""


def _iqr(values: np.ndarray) -> float:
    q1, q3 = np.percentile(values, [25.0, 75.0])
    return float(q3 - q1)


def measure_variance_scale(mi: MaskedImage, config: ScaleVarianceConfig = ScaleVarianceConfig()) -> float:
    """Factor by which the variance plane underestimates the pixel noise.

    A temporary background (cells of ``bin_size``, interpolated) is removed first;
    pixel method: ``(0.74 IQR(image / sqrt(var)))^2``; if above ``limit``, image method:
    ``(0.74 IQR(image))^2 / median(var)``; above ``limit`` again is an error.
    """
    planes = mi.planes
    ignored = tuple(p for p in config.mask_planes if p in planes)
    bg_config = BackgroundConfig(
        bin_size=config.bin_size, use_approx=False, undersample_style="REDUCE_INTERP_ORDER",
        ignored_mask_planes=ignored,
    )
    background = fit_background(mi, bg_config).evaluate()
    image = mi.image - background
    bad = np.int32(planes.bitmask(*ignored)) if ignored else np.int32(0)
    var = mi.variance
    good = ((mi.mask & bad) == 0) & np.isfinite(image) & np.isfinite(var) & (var > 0)
    if good.sum() < 2:
        return 1.0
    img, v = image[good].astype(np.float64), var[good].astype(np.float64)
    factor = (IQR_TO_SIGMA * _iqr(img / np.sqrt(v))) ** 2
    if factor > config.limit:
        factor = (IQR_TO_SIGMA * _iqr(img)) ** 2 / float(np.median(v))
        if factor > config.limit:
            raise ExceedsMaxVarianceScaleError(f"variance scale factor {factor:.3g} exceeds {config.limit}")
    return float(factor)


def scale_variance(mi: MaskedImage, config: ScaleVarianceConfig = ScaleVarianceConfig()) -> float:
    """Multiply the variance plane of ``mi`` by :func:`measure_variance_scale`; returns it."""
    factor = measure_variance_scale(mi, config)
    mi.variance *= np.float32(factor)
    logger.debug("variance scaled by %.4f", factor)
    return factor
