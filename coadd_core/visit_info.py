"""Observation metadata of one exposure (LSST ``VisitInfo`` plus filter and detector ids).

Every field may be ``None`` (unknown).  Times: ``mjd`` is the *start* of the exposure as
a Modified Julian Date in the UTC time scale (what raw headers record; LSST's own
``VisitInfo`` stores the TAI mid-point instead - see :attr:`VisitInfo.mjd_mid`).  Angles
are in degrees, pressure in Pa, temperature in deg C, humidity in percent.

FITS keywords follow the LSST names where LSST has one (``EXPID``, ``EXPTIME``,
``DARKTIME``, ``BORE-RA``, ``OBS-LONG``, ``AIRTEMP``...).  Header floats are limited to
20 characters by astropy, so the header copy is for people and foreign readers; the
lossless copy is :meth:`VisitInfo.to_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from astropy.io import fits

__all__ = ["VisitInfo", "VISIT_INFO_KEYWORDS"]

# field name -> (FITS keyword, python type, comment)
VISIT_INFO_KEYWORDS: dict[str, tuple[str, type, str]] = {
    "instrument": ("INSTRUME", str, "instrument name"),
    "exposure_id": ("EXPID", int, "exposure id"),
    "visit_id": ("VISITID", int, "visit id"),
    "detector": ("DETECTOR", int, "detector id"),
    "detector_name": ("DETNAME", str, "detector name"),
    "detector_serial": ("DETSER", str, "detector serial number"),
    "physical_filter": ("FILTER", str, "physical filter"),
    "band": ("BAND", str, "abstract filter (band)"),
    "mjd": ("MJD-OBS", float, "[d] exposure start, MJD (UTC)"),
    "exposure_time": ("EXPTIME", float, "[s] exposure (shutter open) time"),
    "dark_time": ("DARKTIME", float, "[s] time from CCD flush to readout"),
    "airmass": ("AIRMASS", float, "airmass at the boresight"),
    "observation_type": ("OBSTYPE", str, "observation type (science, bias, flat...)"),
    "observation_id": ("OBSID", str, "observation id"),
    "science_program": ("PROGRAM", str, "science program"),
    "object_name": ("OBJECT", str, "target name"),
    "boresight_ra": ("BORE-RA", float, "[deg] boresight ICRS RA"),
    "boresight_dec": ("BORE-DEC", float, "[deg] boresight ICRS Dec"),
    "boresight_az": ("BORE-AZ", float, "[deg] boresight azimuth"),
    "boresight_alt": ("BORE-ALT", float, "[deg] boresight altitude"),
    "boresight_rot_angle": ("BORE-ROTANG", float, "[deg] rotator angle"),
    "rot_type": ("ROTTYPE", str, "rotation type (UNKNOWN, SKY, HORIZON, MOUNT)"),
    "observatory_longitude": ("OBS-LONG", float, "[deg] observatory longitude (east +)"),
    "observatory_latitude": ("OBS-LAT", float, "[deg] observatory latitude"),
    "observatory_elevation": ("OBS-ELEV", float, "[m] observatory elevation"),
    "air_temperature": ("AIRTEMP", float, "[C] air temperature"),
    "air_pressure": ("AIRPRESS", float, "[Pa] air pressure"),
    "humidity": ("HUMIDITY", float, "[%] relative humidity"),
}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = VISIT_INFO_KEYWORDS[name][1]
    if kind is str:
        return str(value)
    if kind is int:
        if isinstance(value, bool) or int(value) != value:
            raise ValueError(f"VisitInfo.{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, bool):
        raise ValueError(f"VisitInfo.{name} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class VisitInfo:
    """Immutable observation metadata; see the module docstring for units and scales."""

    instrument: str | None = None
    exposure_id: int | None = None
    visit_id: int | None = None
    detector: int | None = None
    detector_name: str | None = None
    detector_serial: str | None = None
    physical_filter: str | None = None
    band: str | None = None
    mjd: float | None = None
    exposure_time: float | None = None
    dark_time: float | None = None
    airmass: float | None = None
    observation_type: str | None = None
    observation_id: str | None = None
    science_program: str | None = None
    object_name: str | None = None
    boresight_ra: float | None = None
    boresight_dec: float | None = None
    boresight_az: float | None = None
    boresight_alt: float | None = None
    boresight_rot_angle: float | None = None
    rot_type: str | None = None
    observatory_longitude: float | None = None
    observatory_latitude: float | None = None
    observatory_elevation: float | None = None
    air_temperature: float | None = None
    air_pressure: float | None = None
    humidity: float | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))

    @property
    def mjd_mid(self) -> float | None:
        """MJD (UTC) of the middle of the exposure, if start and exposure time are known."""
        if self.mjd is None or self.exposure_time is None:
            return None
        return self.mjd + 0.5 * self.exposure_time / 86400.0

    def replace(self, **changes: Any) -> "VisitInfo":
        return dataclasses.replace(self, **changes)

    # -- dict --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields, ``None`` included (JSON-compatible, lossless)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VisitInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VisitInfo fields: {', '.join(sorted(unknown))}")
        return cls(**dict(data))

    # -- FITS header -------------------------------------------------------------------
    def to_header(self, header: fits.Header | None = None) -> fits.Header:
        """Set the keywords of known fields on ``header`` (a new one if None).

        Unknown fields and non-finite floats are left out, since FITS has no null.
        """
        header = fits.Header() if header is None else header
        for name, (key, _, comment) in VISIT_INFO_KEYWORDS.items():
            value = getattr(self, name)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            card_key = key if len(key) <= 8 else f"HIERARCH {key}"
            header[card_key] = (value, comment)
        if self.mjd is not None and math.isfinite(self.mjd):
            header["TIMESYS"] = ("UTC", "time scale of MJD-OBS/DATE-OBS")
            header["DATE-OBS"] = (_mjd_to_isot(self.mjd), "exposure start (UTC)")
        return header

    @classmethod
    def from_header(cls, header: Mapping[str, Any]) -> "VisitInfo":
        """Read the keywords written by :meth:`to_header`; absent ones become None."""
        values: dict[str, Any] = {}
        for name, (key, _, _) in VISIT_INFO_KEYWORDS.items():
            if key in header:
                raw = header[key]
                values[name] = None if isinstance(raw, fits.card.Undefined) else _coerce(name, raw)
        if values.get("mjd") is None and "DATE-OBS" in header:
            values["mjd"] = _isot_to_mjd(str(header["DATE-OBS"]))
        return cls(**values)

    @staticmethod
    def header_keywords() -> tuple[str, ...]:
        """Every keyword :meth:`to_header` may write."""
        return tuple(k for k, _, _ in VISIT_INFO_KEYWORDS.values()) + ("TIMESYS", "DATE-OBS")


def _mjd_to_isot(mjd: float) -> str:
    from astropy.time import Time

    return str(Time(mjd, format="mjd", scale="utc").isot)


def _isot_to_mjd(text: str) -> float:
    from astropy.time import Time

    return float(Time(text, format="isot", scale="utc").mjd)
