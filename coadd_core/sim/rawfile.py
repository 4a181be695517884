"""CFHT MegaPrime raw files: headers and a streaming multi-extension FITS writer.

One file per exposure: a primary HDU without pixels, then one ``IMAGE`` extension per
CCD (``EXTNAME = 'ccdNN'``, ``INHERIT = F``, a complete header each) holding uint16
pixels stored as int16 with ``BZERO = 32768``. Extensions are written as they are
rendered, so a full 36-CCD exposure never sits in memory at once; the file appears under
its final name only when complete. Nothing time-dependent is written: ``DATE`` is
derived from the observation, so the same inputs give the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from astropy.io import fits
from astropy.time import Time

from coadd_core.camera import Camera, Detector
from coadd_core.sim.conditions import (
    CFHT_LATITUDE_DEG,
    CFHT_LONGITUDE_DEG,
    Exposure,
)

__all__ = ["primary_header", "extension_header", "write_mef", "observation_cards"]

_BLOCK = 2880
_SOFTWARE = "coadd_core.sim simulator"


def _utc(mjd: float) -> tuple[str, str]:
    """('YYYY-MM-DD', 'HH:MM:SS.ss') of an MJD in UTC."""
    iso = Time(mjd, format="mjd", scale="utc", precision=2).isot
    date, time = iso.split("T")
    return date, time


def _sexagesimal(value_deg: float, hours: bool) -> str:
    v = value_deg / 15.0 if hours else value_deg
    sign = "-" if v < 0 else ""
    v = abs(v)
    d = int(v)
    m = int((v - d) * 60)
    s = ((v - d) * 60 - m) * 60
    if round(s, 2) >= 60.0:
        s = 0.0
        m += 1
    if m == 60:
        m = 0
        d += 1
    return f"{sign}{d:02d}:{m:02d}:{s:05.2f}"


def observation_cards(
    exposure: Exposure, camera: Camera, n_ccds: int, run_id: str, target: str
) -> list[tuple[str, Any, str]]:
    """Keywords describing the observation, identical in the primary and every extension."""
    date_obs, utc_obs = _utc(exposure.mjd_start)
    date_end, utc_end = _utc(exposure.mjd_end)
    date_written, written = _utc(exposure.mjd_end + 60.0 / 86400.0)
    if exposure.kind != "science":
        target = exposure.kind.upper()
    return [
        ("FILENAME", exposure.filename.removesuffix(".fits"), "Base filename at acquisition"),
        ("DATE", f"{date_written}T{written[:8]}", "UTC Date of file creation"),
        ("IMAGESWV", _SOFTWARE, "Image creation software version"),
        ("ORIGIN", "CFHT", "Canada-France-Hawaii Telescope"),
        ("TELESCOP", camera.telescope, "Hawaii Big Island, Mauna Kea"),
        ("INSTRUME", "MegaPrime", ""),
        ("DETECTOR", "MegaCam", ""),
        ("NCCDS", n_ccds, "Number of devices"),
        ("NAMPS", 2 * n_ccds, "Number of amplifiers"),
        ("PIXSIZE1", camera.pixel_size_mm * 1000.0, "Pixel size for axis 1 (microns)"),
        ("PIXSIZE2", camera.pixel_size_mm * 1000.0, "Pixel size for axis 2 (microns)"),
        ("PIXSCAL1", camera.pixel_scale_arcsec, "Pixel scale for axis 1 (arcsec/pixel)"),
        ("PIXSCAL2", camera.pixel_scale_arcsec, "Pixel scale for axis 2 (arcsec/pixel)"),
        ("CCDSUM", "1 1", "Binning factors"),
        ("CCDBIN1", 1, "Binning factor along first axis"),
        ("CCDBIN2", 1, "Binning factor along second axis"),
        ("OBSTYPE", exposure.obstype, "Observation/ Exposure type"),
        ("EXPTYPE", exposure.obstype, "OBSTYPE is the new name for this"),
        ("EXPNUM", exposure.expnum, "CFHT odometer number"),
        ("OBSID", exposure.expnum, "CFHT odometer number"),
        ("OBJECT", target, ""),
        ("RUNID", run_id, ""),
        ("EXPTIME", float(exposure.exposure_time), "Measured integration time (seconds)"),
        ("EXPREQ", float(exposure.exposure_time), "Requested integration time (seconds)"),
        ("DARKTIME", float(exposure.dark_time), "Dark current time (seconds)"),
        ("FILTER", exposure.physical_filter, "Name of filter in position"),
        ("TIMESYS", "UTC", "Time System for DATExxxx"),
        ("DATE-OBS", date_obs, "Date at start of observation (UTC)"),
        ("UTIME", utc_obs, "Time at start of observation (UT)"),
        ("UTC-OBS", utc_obs, "Time at start of observation (UTC)"),
        ("MJDATE", round(exposure.mjd_start, 8), "Modified Julian Date at start of observation"),
        ("MJD-OBS", round(exposure.mjd_start, 8), "Modified Julian Date at start of obs."),
        ("DATEEND", date_end, "Date at end of observation (UTC)"),
        ("UTCEND", utc_end, "Time at end of observation (UTC)"),
        ("MJDEND", round(exposure.mjd_end, 8), "Modified Julian Date at end of obs."),
        ("EQUINOX", 2000.0, "Equinox of coordinates"),
        ("RA", _sexagesimal(exposure.ra_deg, hours=True), "Object right ascension"),
        ("DEC", _sexagesimal(exposure.dec_deg, hours=False), "Object declination"),
        ("RA_DEG", round(exposure.ra_deg, 7), "Object right ascension in degrees"),
        ("DEC_DEG", round(exposure.dec_deg, 7), "Object declination in degrees"),
        ("AIRMASS", exposure.airmass, "Airmass at start of observation"),
        ("TELALT", exposure.alt_deg, "Telescope altitude at start of observation, deg"),
        ("TELAZ", exposure.az_deg, "Telescope azimuth at start, deg, 0=N 90=E 270=W"),
        ("ROTANGLE", 0.0, "Telescope bonnette rotation angle in degrees"),
        ("LATITUDE", CFHT_LATITUDE_DEG, "Latitude (degrees N)"),
        ("LONGITUD", CFHT_LONGITUDE_DEG, "Longitude (degrees E)"),
        ("TEMPERAT", exposure.temperature_c, "temp, air, weather tower deg C"),
        ("RELHUMID", exposure.humidity, "relative humidity, weather tower %"),
        ("PRESSURE", exposure.pressure_hpa, "barometric pressure, control room mb"),
    ]


def primary_header(exposure: Exposure, camera: Camera, n_ccds: int, run_id: str, target: str) -> fits.Header:
    """Primary HDU header: no pixels, the observation keywords, ``NEXTEND``."""
    header = fits.Header()
    header["SIMPLE"] = (True, "Standard FITS")
    header["BITPIX"] = (16, "number of bits per data pixel")
    header["NAXIS"] = (0, "number of data axes")
    header["EXTEND"] = (True, "File contains extensions")
    header["NEXTEND"] = (n_ccds, "Number of extensions")
    _add_observation(header, exposure, camera, n_ccds, run_id, target)
    header["RADESYS"] = ("ICRS", "Coordinate system of RA_DEG/DEC_DEG")
    return header


def _add_observation(header: fits.Header, exposure: Exposure, camera: Camera, n_ccds: int, run_id: str, target: str) -> None:
    for key, value, comment in observation_cards(exposure, camera, n_ccds, run_id, target):
        header[key] = (value, comment)


def extension_header(
    exposure: Exposure,
    camera: Camera,
    detector: Detector,
    wcs_cards: dict[str, Any],
    n_ccds: int,
    run_id: str,
    target: str,
) -> fits.Header:
    """Complete header of one CCD extension (``INHERIT = F``)."""
    header = fits.Header()
    header["XTENSION"] = ("IMAGE", "Image extension")
    header["BITPIX"] = (16, "number of bits per data pixel")
    header["NAXIS"] = (2, "number of data axes")
    header["NAXIS1"] = (detector.raw_width, "length of data axis 1")
    header["NAXIS2"] = (detector.raw_height, "length of data axis 2")
    header["PCOUNT"] = (0, "required keyword; must = 0")
    header["GCOUNT"] = (1, "required keyword; must = 1")
    header["BZERO"] = (32768, "offset data range to that of unsigned short")
    header["BSCALE"] = (1, "default scaling factor")
    header["EXTNAME"] = (detector.name, "Extension name")
    header["INHERIT"] = (False, "Extension header is complete")
    _add_observation(header, exposure, camera, n_ccds, run_id, target)
    nn = detector.name.removeprefix("ccd")
    header["AMPNAME"] = (f"{nn}a + {nn}b", "List of amplifiers names for this image")
    header["AMPLIST"] = ("A", "Data are now as if CCD read from A amp")
    header["DETSIZE"] = (camera.detsize_section(), "Total data pixels in full mosaic")
    header["DETSEC"] = (camera.detsec(detector), "Mosaic area of the entire readout")
    comments = {
        "CCDNAME": "Name of the CCD (manufacturer reference)",
        "DATASEC": "Imaging area of the whole CCD in raw frame",
        "BIASSEC": "Irrelevant after splicing: see BSECA, BSECB",
        "CCDSIZE": "Detector imaging area size",
    }
    for key, value in detector.header_cards().items():
        amp = key[-1]
        comment = comments.get(key, "")
        if key.startswith("ASEC"):
            comment = f"Section by {amp} amplifier in raw frame"
        elif key.startswith("DSEC"):
            comment = f"Image area of {amp} amplifier in raw frame"
        elif key.startswith("TSEC"):
            comment = f"Trim section of {amp} amplifier = DSEC{amp}"
        elif key.startswith("BSEC"):
            comment = f"Overscan of {amp} amplifier in raw frame"
        elif key.startswith("CSEC"):
            comment = f"Section in full CCD after BSEC{amp} cut out"
        header[key] = (value, comment)
    amps = detector.amplifiers
    header["MAXLIN"] = (int(min(a.max_linear for a in amps)), "Level at 1% linearity departure (ADU)")
    for a in amps:
        header[f"MAXLIN{a.name}"] = (int(a.max_linear), f"Level at 1% linearity departure (ADU) - {a.name} amp")
    header["SATURATE"] = (int(min(a.saturation for a in amps)), "Pixel saturation level (ADU)")
    for a in amps:
        header[f"GAIN{a.name}"] = (a.gain, f"Converting gain of {a.name} amplifier (e-/ADU)")
    header["RDNOISE"] = (round(float(np.mean([a.read_noise for a in amps])), 2), "Read noise (electrons) = Average [A,B] amps")
    for a in amps:
        header[f"RDNOISE{a.name}"] = (a.read_noise, f"Read noise (electrons) {a.name} amplifier")
    header["DARKCUR"] = (detector.dark_current, "Dark current (e-/pixel/hour)")
    header["RADESYS"] = ("ICRS", "Coordinate system of the WCS and RA_DEG/DEC_DEG")
    wcs_comments = {
        "CRVAL1": "WCS Ref value (RA in decimal degrees)",
        "CRVAL2": "WCS Ref value (DEC in decimal degrees)",
        "CRPIX1": "WCS Ref pixel: boresight in the raw frame",
        "CRPIX2": "WCS Ref pixel: boresight in the raw frame",
    }
    for key, value in wcs_cards.items():
        header[key] = (value, wcs_comments.get(key, "WCS"))
    if exposure.rotation_deg:
        header["COMMENT"] = f"Simulated sky rotation: PA of focal-plane +y = {exposure.rotation_deg:g} deg"
    return header


def _padded(data: bytes) -> bytes:
    extra = (-len(data)) % _BLOCK
    return data + b"\0" * extra


def _header_bytes(header: fits.Header) -> bytes:
    text = header.tostring(sep="", endcard=True, padding=True)
    return text.encode("ascii")


def write_mef(path: Path, primary: fits.Header, extensions: Iterable[tuple[fits.Header, np.ndarray]]) -> int:
    """Stream a MEF to ``path`` (via a temporary name); returns the file size in bytes.

    Each extension's pixels must be a uint16 array of shape (NAXIS2, NAXIS1); they are
    stored as big-endian int16 with ``BZERO = 32768`` as MegaPrime does.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    size = 0
    try:
        with open(tmp, "wb") as f:
            chunk = _header_bytes(primary)
            f.write(chunk)
            size += len(chunk)
            for header, pixels in extensions:
                if pixels.dtype != np.uint16 or pixels.shape != (header["NAXIS2"], header["NAXIS1"]):
                    raise ValueError(f"{header.get('EXTNAME')}: pixels must be uint16 of the header's shape")
                chunk = _header_bytes(header)
                f.write(chunk)
                size += len(chunk)
                stored = (pixels ^ np.uint16(0x8000)).view(np.int16).astype(">i2", copy=False)
                chunk = _padded(stored.tobytes())
                f.write(chunk)
                size += len(chunk)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return size
