"""Sky geometry of the simulation: tangent-plane projections and detectors on the sky.

A detector's sky mapping is exactly the TAN WCS written into its raw header, so every
truth position and every rendered pixel agree with what the header says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from coadd_core.camera import Detector

__all__ = ["gnomonic", "inverse_gnomonic", "offset_by", "DetectorOnSky", "fp_to_sky_matrix"]


def gnomonic(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi East, eta North; degrees) of (ra, dec) about (ra0, dec0)."""
    ra = np.radians(np.asarray(ra, dtype=float))
    dec = np.radians(np.asarray(dec, dtype=float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(dec) + math.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (math.cos(d0) * np.sin(dec) - math.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def inverse_gnomonic(xi: Any, eta: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`gnomonic`: (ra, dec) in degrees, ra in [0, 360)."""
    x = np.radians(np.asarray(xi, dtype=float))
    y = np.radians(np.asarray(eta, dtype=float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    denom = math.cos(d0) - y * math.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def offset_by(ra: Any, dec: Any, pa_deg: Any, sep_deg: Any) -> tuple[np.ndarray, np.ndarray]:
    """Point at angular distance ``sep_deg`` and position angle ``pa_deg`` (E of N)."""
    a = np.radians(np.asarray(ra, dtype=float))
    d = np.radians(np.asarray(dec, dtype=float))
    pa = np.radians(np.asarray(pa_deg, dtype=float))
    s = np.radians(np.asarray(sep_deg, dtype=float))
    dec2 = np.arcsin(np.sin(d) * np.cos(s) + np.cos(d) * np.sin(s) * np.cos(pa))
    ra2 = a + np.arctan2(np.sin(pa) * np.sin(s) * np.cos(d), np.cos(s) - np.sin(d) * np.sin(dec2))
    return np.degrees(ra2) % 360.0, np.degrees(dec2)


def fp_to_sky_matrix(rotation_deg: float, plate_scale_arcsec_per_mm: float) -> np.ndarray:
    """Focal-plane mm -> (xi East, eta North) arcsec for a sky rotation (PA of fp +y)."""
    t = math.radians(rotation_deg)
    return plate_scale_arcsec_per_mm * np.array([[-math.cos(t), math.sin(t)], [math.sin(t), math.cos(t)]])


@dataclass(frozen=True)
class DetectorOnSky:
    """A detector placed on the sky by one exposure's pointing (its raw-header WCS)."""

    detector: Detector
    wcs_cards: dict[str, Any]

    @classmethod
    def create(
        cls, detector: Detector, ra: float, dec: float, rotation_deg: float, pixel_scale_arcsec: float
    ) -> "DetectorOnSky":
        return cls(detector, detector.raw_wcs_cards(ra, dec, rotation_deg, pixel_scale_arcsec))

    def wcs(self) -> WCS:
        """The raw-frame WCS exactly as the header states it."""
        return self._wcs

    @cached_property
    def _wcs(self) -> WCS:
        return WCS(fits.Header(self.wcs_cards))

    @property
    def _offset(self) -> tuple[int, int]:
        amp = self.detector.amplifiers[0]
        return amp.raw_x_offset, amp.raw_y_offset

    def sky_to_pixel(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """Assembled (0-based) pixel positions of sky positions."""
        ra = np.atleast_1d(np.asarray(ra, dtype=float))
        dec = np.atleast_1d(np.asarray(dec, dtype=float))
        x, y = self._wcs.wcs_world2pix(ra, dec, 0)
        dx, dy = self._offset
        return np.asarray(x) - dx, np.asarray(y) - dy

    def pixel_to_sky(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Sky positions of assembled (0-based) pixel positions."""
        dx, dy = self._offset
        x = np.atleast_1d(np.asarray(x, dtype=float)) + dx
        y = np.atleast_1d(np.asarray(y, dtype=float)) + dy
        ra, dec = self._wcs.wcs_pix2world(x, y, 0)
        return np.asarray(ra) % 360.0, np.asarray(dec)

    def contains(self, x: Any, y: Any, margin: float = 0.0) -> np.ndarray:
        """True where assembled positions lie on the CCD at least ``margin`` px from its edges."""
        box = self.detector.bbox
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return (
            (x >= box.x0 - 0.5 + margin)
            & (x <= box.x1 + 0.5 - margin)
            & (y >= box.y0 - 0.5 + margin)
            & (y <= box.y1 + 0.5 - margin)
        )

    def jacobian_arcsec(self) -> tuple[float, float, float, float]:
        """Local pixel -> (xi, eta) arcsec matrix (dxi/dx, dxi/dy, deta/dx, deta/dy)."""
        c = self.wcs_cards
        return (c["CD1_1"] * 3600.0, c["CD1_2"] * 3600.0, c["CD2_1"] * 3600.0, c["CD2_2"] * 3600.0)
