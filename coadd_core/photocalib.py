"""Photometric calibration: instrumental flux -> nJy (LSST ``PhotoCalib``, constant case).

A calibration is one factor ``c`` (nJy per image unit) with an uncertainty.  AB
magnitudes use ``mag = -2.5 log10(flux / nJy) + 31.4``, so the zero point (magnitude of
one image unit) is ``ZP = 31.4 - 2.5 log10(c)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .image import MaskedImage

__all__ = ["AB_NJY_ZERO_POINT", "PhotoCalib"]

#: AB magnitude of a source of 1 nJy.
AB_NJY_ZERO_POINT = 31.4


@dataclass(frozen=True, slots=True)
class PhotoCalib:
    """Constant calibration: ``calibration_mean`` nJy per image unit, +- ``calibration_err``."""

    calibration_mean: float
    calibration_err: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "calibration_mean", float(self.calibration_mean))
        object.__setattr__(self, "calibration_err", float(self.calibration_err))
        if not (math.isfinite(self.calibration_mean) and self.calibration_mean > 0):
            raise ValueError(f"calibration_mean must be positive, got {self.calibration_mean!r}")
        if not self.calibration_err >= 0:
            raise ValueError(f"calibration_err must be >= 0, got {self.calibration_err!r}")

    @classmethod
    def from_zero_point(cls, zero_point: float, zero_point_err: float = 0.0) -> "PhotoCalib":
        """Calibration whose one image unit has AB magnitude ``zero_point``."""
        mean = 10.0 ** (-0.4 * (zero_point - AB_NJY_ZERO_POINT))
        return cls(mean, mean * 0.4 * math.log(10.0) * zero_point_err)

    @property
    def zero_point(self) -> float:
        """AB magnitude of one image unit."""
        return AB_NJY_ZERO_POINT - 2.5 * math.log10(self.calibration_mean)

    @property
    def is_nJy(self) -> bool:
        """True when the image is already in nJy (factor exactly 1, as for warps/coadds)."""
        return self.calibration_mean == 1.0

    def instflux_to_nJy(self, instflux: float | np.ndarray) -> float | np.ndarray:
        return np.multiply(instflux, self.calibration_mean)

    def instflux_err_to_nJy(
        self, instflux: float | np.ndarray, instflux_err: float | np.ndarray
    ) -> float | np.ndarray:
        """Error of the calibrated flux, including the calibration's own uncertainty."""
        c, dc = self.calibration_mean, self.calibration_err
        return np.hypot(np.multiply(instflux_err, c), np.multiply(instflux, dc))

    def instflux_to_mag(self, instflux: float | np.ndarray) -> float | np.ndarray:
        """AB magnitude; NaN for non-positive fluxes."""
        flux = np.asarray(self.instflux_to_nJy(instflux), dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(flux > 0, -2.5 * np.log10(flux) + AB_NJY_ZERO_POINT, np.nan)
        return float(mag) if mag.ndim == 0 else mag

    def mag_to_instflux(self, mag: float | np.ndarray) -> float | np.ndarray:
        return np.power(10.0, -0.4 * (np.asarray(mag) - AB_NJY_ZERO_POINT)) / self.calibration_mean

    def calibrate_image(self, masked_image: MaskedImage) -> MaskedImage:
        """New image in nJy: image * c, variance * c^2 (calibration error not propagated).

        Leaving the calibration error out of the variance matches LSST's
        ``calibrateImage``: it is common to all pixels and would be double counted by
        any later per-pixel statistic.
        """
        return masked_image * self.calibration_mean

    def to_dict(self) -> dict[str, Any]:
        return {"calibration_mean": self.calibration_mean, "calibration_err": self.calibration_err}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhotoCalib":
        return cls(float(data["calibration_mean"]), float(data.get("calibration_err", 0.0)))
