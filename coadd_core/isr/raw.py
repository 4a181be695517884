"""Raw MegaPrime header -> observation metadata and assembled-frame WCS (ALGORITHMS.md §1.1, §12).

Observation metadata come from ``astro_metadata_translator``'s MegaPrime translator,
like the registry's ingest, so ISR and the butler agree on every value. The raw header
WCS refers to the untrimmed frame (CRPIX counts the 32 serial-overscan columns left of
amp A's data), so after trimming it is shifted by the data section's offset.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from typing import Any, Mapping

from astropy.io import fits
from astropy.wcs import WCS

from coadd_core.camera import Detector
from coadd_core.visit_info import VisitInfo
from coadd_core.wcs_utils import exact_float_card, wcs_from_header

__all__ = ["visit_info_from_header", "assembled_wcs", "band_of"]

log = logging.getLogger(__name__)


def band_of(physical_filter: str | None) -> str | None:
    """Band of a MegaPrime physical filter: the part before the dot (``i.MP9702`` -> ``i``)."""
    if not physical_filter:
        return None
    return physical_filter.split(".", 1)[0] or None


def _float(quantity: Any, unit: str) -> float | None:
    if quantity is None:
        return None
    try:
        value = float(quantity.to_value(unit))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def visit_info_from_header(header: fits.Header | Mapping[str, Any]) -> VisitInfo:
    """VisitInfo of one raw CCD extension header (missing properties become None)."""
    from astro_metadata_translator import ObservationInfo

    if not isinstance(header, fits.Header):
        header = fits.Header(list(header.items()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = ObservationInfo(header, pedantic=False)
    begin = info.datetime_begin
    radec = info.tracking_radec
    altaz = info.altaz_begin
    loc = info.location
    rot = info.boresight_rotation_angle
    values: dict[str, Any] = {
        "instrument": info.instrument,
        "exposure_id": info.exposure_id,
        "visit_id": info.visit_id if info.visit_id is not None else info.exposure_id,
        "detector": info.detector_num,
        "detector_name": info.detector_name,
        "detector_serial": info.detector_serial,
        "physical_filter": info.physical_filter,
        "band": band_of(info.physical_filter),
        "mjd": None if begin is None else float(begin.utc.mjd),
        "exposure_time": _float(info.exposure_time, "s"),
        "dark_time": _float(info.dark_time, "s"),
        "airmass": None if info.boresight_airmass is None else float(info.boresight_airmass),
        "observation_type": info.observation_type,
        "observation_id": info.observation_id,
        "science_program": info.science_program,
        "object_name": info.object,
        "boresight_ra": None if radec is None else float(radec.ra.deg),
        "boresight_dec": None if radec is None else float(radec.dec.deg),
        "boresight_az": None if altaz is None else float(altaz.az.deg),
        "boresight_alt": None if altaz is None else float(altaz.alt.deg),
        "boresight_rot_angle": None if rot is None else float(rot.deg),
        "rot_type": None if info.boresight_rotation_coord is None else str(info.boresight_rotation_coord).upper(),
        "air_temperature": _float(info.temperature, "deg_C"),
        "air_pressure": _float(info.pressure, "Pa"),
        "humidity": None if info.relative_humidity is None else float(info.relative_humidity),
    }
    if loc is not None:
        geodetic = loc.to_geodetic()
        values["observatory_longitude"] = float(geodetic.lon.deg)
        values["observatory_latitude"] = float(geodetic.lat.deg)
        values["observatory_elevation"] = float(geodetic.height.to_value("m"))
    return VisitInfo(**values)


_WCS_KEYWORD = re.compile(
    r"^(WCSAXES|CTYPE[12]|CUNIT[12]|CRPIX[12]|CRVAL[12]|CD[12]_[12]|PC[12]_[12]|CDELT[12]|RADESYS|"
    r"EQUINOX|LONPOLE|LATPOLE|PV[12]_\d+|A_ORDER|B_ORDER|AP_ORDER|BP_ORDER|A_\d_\d|B_\d_\d|AP_\d_\d|BP_\d_\d)$"
)


def assembled_wcs(header: fits.Header | Mapping[str, Any], detector: Detector) -> WCS | None:
    """The raw header's WCS moved to assembled pixels (CRPIX1 - 32 for MegaPrime); None if absent.

    Both amps of a spliced MegaPrime frame sit 32 columns right of their assembled
    place, so one shift serves the whole CCD. Only the WCS keywords are parsed (a raw
    header holds a hundred others), and CRPIX is shifted before the single parse.
    """
    offsets = {(a.raw_x_offset, a.raw_y_offset) for a in detector.amplifiers}
    if len(offsets) != 1:
        raise ValueError(f"{detector.name}: amps are offset differently {sorted(offsets)}; one WCS cannot fit")
    dx, dy = offsets.pop()
    items = header.cards if isinstance(header, fits.Header) else [fits.Card(k, v) for k, v in header.items()]
    cards = [fits.Card(c.keyword, c.value) for c in items if _WCS_KEYWORD.match(c.keyword)]
    small = fits.Header(cards)
    if "CTYPE1" not in small or "CTYPE2" not in small:
        return None
    for key, delta in (("CRPIX1", dx), ("CRPIX2", dy)):
        if key in small:
            value = float(small[key]) - float(delta)
            del small[key]
            small.append(exact_float_card(key, value))
    try:
        return wcs_from_header(small)
    except ValueError as exc:
        log.warning("raw header WCS unusable: %s", exc)
        return None
