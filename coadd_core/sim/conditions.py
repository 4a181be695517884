"""The simulated night: exposures, their timing, pointing and observing conditions.

Calibration frames are taken in the afternoon with the telescope parked at the zenith;
science visits follow from ``ObservingConfig.start_utc``. Times are whole seconds so the
header strings (``UTC-OBS``) and MJDs agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.time import Time

from coadd_core.sim.config import BAND_PHYSICAL_FILTERS, SimConfig
from coadd_core.sim.geometry import offset_by

__all__ = [
    "CFHT_LONGITUDE_DEG",
    "CFHT_LATITUDE_DEG",
    "CFHT_ELEVATION_M",
    "VisitConditions",
    "Exposure",
    "FILE_SUFFIX",
    "plan_exposures",
    "alt_az",
]

CFHT_LONGITUDE_DEG = -155.468876
CFHT_LATITUDE_DEG = 19.825252
CFHT_ELEVATION_M = 4215.0

FILE_SUFFIX: dict[str, str] = {"science": "o", "bias": "b", "dark": "d", "flat": "f"}
"""CFHT file-name letter per exposure kind: ``<expnum><letter>.fits``."""

_SECONDS_PER_DAY = 86400.0


def _gmst_deg(mjd: float) -> float:
    # IAU 1982 GMST, linear term only: plenty for alt/az and airmass keywords
    return (280.46061837 + 360.98564736629 * (mjd + 2400000.5 - 2451545.0)) % 360.0


def alt_az(ra_deg: float, dec_deg: float, mjd: float) -> tuple[float, float]:
    """Altitude and azimuth (deg, azimuth N through E) of a position seen from CFHT."""
    lst = _gmst_deg(mjd) + CFHT_LONGITUDE_DEG
    ha = math.radians(lst - ra_deg)
    phi, dec = math.radians(CFHT_LATITUDE_DEG), math.radians(dec_deg)
    sin_alt = math.sin(phi) * math.sin(dec) + math.cos(phi) * math.cos(dec) * math.cos(ha)
    alt = math.asin(max(-1.0, min(1.0, sin_alt)))
    az = math.atan2(
        -math.cos(dec) * math.sin(ha), math.sin(dec) * math.cos(phi) - math.cos(dec) * math.sin(phi) * math.cos(ha)
    )
    return math.degrees(alt), math.degrees(az) % 360.0


def _zenith(mjd: float) -> tuple[float, float]:
    return (_gmst_deg(mjd) + CFHT_LONGITUDE_DEG) % 360.0, CFHT_LATITUDE_DEG


@dataclass(frozen=True)
class VisitConditions:
    """Per-visit observing conditions of a science exposure."""

    visit_index: int
    dither_east_arcsec: float
    dither_north_arcsec: float
    seeing_fwhm_arcsec: float
    moffat_beta: float
    psf_g1: float
    psf_g2: float
    sky_mag_arcsec2: float
    transparency: float
    zero_point_nominal: float
    extinction: float


@dataclass(frozen=True)
class Exposure:
    """One exposure of the night; ``conditions`` is set for science visits only."""

    expnum: int
    kind: str
    band: str
    physical_filter: str
    mjd_start: float
    exposure_time: float
    dark_time: float
    ra_deg: float
    dec_deg: float
    rotation_deg: float
    alt_deg: float
    az_deg: float
    airmass: float
    temperature_c: float
    humidity: float
    pressure_hpa: float
    conditions: VisitConditions | None = None
    flat_level_e: float = 0.0
    sequence: int = 0

    @property
    def obstype(self) -> str:
        """Header ``OBSTYPE``."""
        return "OBJECT" if self.kind == "science" else self.kind.upper()

    @property
    def filename(self) -> str:
        return f"{self.expnum}{FILE_SUFFIX[self.kind]}.fits"

    @property
    def mjd_end(self) -> float:
        return self.mjd_start + self.exposure_time / _SECONDS_PER_DAY

    @property
    def mjd_mid(self) -> float:
        return self.mjd_start + 0.5 * self.exposure_time / _SECONDS_PER_DAY

    @property
    def zero_point(self) -> float:
        """AB mag giving 1 e-/s through this visit's atmosphere and clouds, unit flat."""
        c = self.conditions
        if c is None:
            return math.nan
        return c.zero_point_nominal - c.extinction * (self.airmass - 1.0) + 2.5 * math.log10(c.transparency)

    def sky_e_per_pixel(self, pixel_scale_arcsec: float) -> float:
        """Sky electrons per pixel in this exposure at unit flat."""
        c = self.conditions
        if c is None:
            return 0.0
        return 10 ** (0.4 * (c.zero_point_nominal - c.sky_mag_arcsec2)) * self.exposure_time * pixel_scale_arcsec**2

    def counts_e(self, mag: np.ndarray | float) -> np.ndarray:
        """Expected electrons (unit flat) of sources of AB magnitude ``mag``."""
        return 10 ** (0.4 * (self.zero_point - np.asarray(mag, dtype=float))) * self.exposure_time


def _weather(rng: np.random.Generator) -> tuple[float, float, float]:
    return (
        round(float(rng.uniform(0.5, 3.0)), 2),
        round(float(rng.uniform(10.0, 30.0)), 1),
        round(float(rng.uniform(614.0, 618.0)), 2),
    )


def plan_exposures(config: SimConfig, rng: np.random.Generator) -> list[Exposure]:
    """Every exposure of the night in time order: biases, darks, flats, then science."""
    obs = config.observing
    cal = config.calibrations
    mjd0 = float(Time(obs.start_utc, format="isot", scale="utc").mjd)
    exposures: list[Exposure] = []
    expnum = config.first_expnum

    # afternoon calibrations, starting 5 h before the first visit
    t = mjd0 - 5.0 / 24.0
    calib_plan: list[tuple[str, str, float, int]] = []
    calib_plan += [("bias", obs.band, 0.0, i) for i in range(cal.n_bias)]
    calib_plan += [("dark", obs.band, cal.dark_time, i) for i in range(cal.n_dark)]
    for band in config.flat_bands:
        calib_plan += [("flat", band, cal.flat_time, i) for i in range(cal.n_flat)]
    for kind, band, exptime, seq in calib_plan:
        ra, dec = _zenith(t)
        temp, hum, pres = _weather(rng)
        exposures.append(
            Exposure(
                expnum=expnum,
                kind=kind,
                band=band,
                physical_filter=BAND_PHYSICAL_FILTERS[band],
                mjd_start=t,
                exposure_time=exptime,
                dark_time=exptime,
                ra_deg=round(ra, 6),
                dec_deg=dec,
                rotation_deg=0.0,
                alt_deg=90.0,
                az_deg=0.0,
                airmass=1.0,
                temperature_c=temp,
                humidity=hum,
                pressure_hpa=pres,
                flat_level_e=cal.flat_level_e if kind == "flat" else 0.0,
                sequence=seq,
            )
        )
        expnum += 1
        t += (math.ceil(exptime) + 40.0) / _SECONDS_PER_DAY

    n = obs.n_visits
    seeing = rng.uniform(*obs.seeing_fwhm_arcsec, size=n)
    # spread the seeing over the whole range so visits differ clearly
    if n > 1:
        lo, hi = obs.seeing_fwhm_arcsec
        seeing = np.sort(seeing)
        seeing[0], seeing[-1] = lo, hi
        seeing = rng.permutation(seeing)
    sky = rng.uniform(*obs.sky_mag_arcsec2, size=n)
    transparency = rng.uniform(*obs.transparency, size=n)
    radius = obs.dither_arcsec * np.sqrt(rng.uniform(0.0, 1.0, size=n))
    angle = rng.uniform(0.0, 360.0, size=n)
    radius[0] = 0.0
    g = rng.normal(0.0, obs.psf_ellipticity_rms, size=(n, 2))
    zp = obs.zero_points[obs.band]
    k = obs.extinction[obs.band]
    for i in range(n):
        t = mjd0 + i * obs.visit_spacing_s / _SECONDS_PER_DAY
        ra, dec = offset_by(obs.ra_deg, obs.dec_deg, angle[i], radius[i] / 3600.0)
        ra, dec = float(ra), float(dec)
        east = radius[i] * math.sin(math.radians(angle[i]))
        north = radius[i] * math.cos(math.radians(angle[i]))
        alt, az = alt_az(ra, dec, t + 0.5 * obs.exposure_time / _SECONDS_PER_DAY)
        airmass = 1.0 / math.sin(math.radians(max(alt, 5.0)))
        temp, hum, pres = _weather(rng)
        exposures.append(
            Exposure(
                expnum=expnum,
                kind="science",
                band=obs.band,
                physical_filter=obs.physical_filter,
                mjd_start=t,
                exposure_time=obs.exposure_time,
                dark_time=obs.exposure_time,
                ra_deg=ra,
                dec_deg=dec,
                rotation_deg=obs.rotation_deg if obs.rotated_visit == i else 0.0,
                alt_deg=round(alt, 4),
                az_deg=round(az, 4),
                airmass=round(airmass, 4),
                temperature_c=temp,
                humidity=hum,
                pressure_hpa=pres,
                conditions=VisitConditions(
                    visit_index=i,
                    dither_east_arcsec=float(east),
                    dither_north_arcsec=float(north),
                    seeing_fwhm_arcsec=round(float(seeing[i]), 4),
                    moffat_beta=obs.moffat_beta,
                    psf_g1=float(g[i, 0]),
                    psf_g2=float(g[i, 1]),
                    sky_mag_arcsec2=round(float(sky[i]), 4),
                    transparency=round(float(transparency[i]), 4),
                    zero_point_nominal=zp,
                    extinction=k,
                ),
                sequence=i,
            )
        )
        expnum += 1
    return exposures
