"""Helpers on astropy ``WCS`` objects: exact FITS headers, shifts, scales, sky polygons.

Convention (as in LSST): an exposure's in-memory WCS maps *parent* pixel coordinates with
origin 0 (``wcs.pixel_to_world_values(x, y)``); the image's ``xy0`` places its array in
that frame.  On disk a FITS header WCS refers to the array, so writers use
:func:`shifted` by ``xy0``.

astropy's own ``WCS.to_header`` prints values to about 13 significant digits and header
cards are limited to 20 characters, both lossy; :func:`wcs_to_header` writes every float
with its shortest exact representation instead (longer than 20 characters where needed,
which FITS free-format values allow), so header -> WCS -> header is the identity.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Mapping

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from .geom import Box

__all__ = [
    "exact_float_card",
    "pixel_scale",
    "shifted",
    "sky_polygon_vertices",
    "wcs_equal",
    "wcs_from_header",
    "wcs_from_header_dict",
    "wcs_header_dict",
    "wcs_to_header",
]


def exact_float_card(key: str, value: float, comment: str = "") -> fits.Card:
    """A header card whose float value reads back bit-for-bit."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{key}: FITS headers cannot hold {value!r}")
    text = repr(value).upper()
    if len(text) <= 20:
        return fits.Card(key, value, comment)
    if len(key) > 8:
        raise ValueError(f"exact float cards need a standard keyword, got {key!r}")
    image = f"{key:<8}= {text:>20}"
    room = 80 - len(image) - 3
    if comment and room > 0:
        image += f" / {comment[:room]}"
    return fits.Card.fromstring(image)


def _sip_cards(name: str, order: int, coeffs: np.ndarray) -> list[fits.Card]:
    cards = [fits.Card(f"{name}_ORDER", int(order), "SIP polynomial order")]
    for p in range(order + 1):
        for q in range(order + 1 - p):
            c = float(coeffs[p, q])
            if c != 0.0:
                cards.append(exact_float_card(f"{name}_{p}_{q}", c))
    return cards


def wcs_to_header(wcs: WCS) -> fits.Header:
    """Exact FITS header of a 2-D celestial WCS (TAN, TAN-SIP, or other projections with PV)."""
    if wcs.naxis != 2:
        raise ValueError(f"only 2-D WCSs are supported, got naxis={wcs.naxis}")
    w = copy.deepcopy(wcs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w.wcs.set()
    p = w.wcs
    sip = w.sip
    cards: list[fits.Card] = [fits.Card("WCSAXES", 2, "number of WCS axes")]
    for i in range(2):
        ctype = str(p.ctype[i])
        if sip is not None and not ctype.endswith("-SIP"):
            ctype += "-SIP"
        cards.append(fits.Card(f"CTYPE{i + 1}", ctype, "coordinate type"))
    for i in range(2):
        unit = str(p.cunit[i])
        if unit:
            cards.append(fits.Card(f"CUNIT{i + 1}", unit, "coordinate unit"))
    for i in range(2):
        cards.append(exact_float_card(f"CRPIX{i + 1}", p.crpix[i], "reference pixel (1-based)"))
    for i in range(2):
        cards.append(exact_float_card(f"CRVAL{i + 1}", p.crval[i], "reference sky coordinate"))
    if p.has_cd():
        for i in range(2):
            for j in range(2):
                cards.append(exact_float_card(f"CD{i + 1}_{j + 1}", p.cd[i, j], "linear transformation"))
    else:
        pc = p.get_pc()
        cdelt = p.get_cdelt()
        for i in range(2):
            for j in range(2):
                cards.append(exact_float_card(f"PC{i + 1}_{j + 1}", pc[i, j], "linear transformation"))
        for i in range(2):
            cards.append(exact_float_card(f"CDELT{i + 1}", cdelt[i], "coordinate increment"))
    for key, value in (("LONPOLE", p.lonpole), ("LATPOLE", p.latpole)):
        if math.isfinite(value):
            cards.append(exact_float_card(key, value, "native pole"))
    if p.radesys:
        cards.append(fits.Card("RADESYS", str(p.radesys), "reference frame"))
    if math.isfinite(p.equinox):
        cards.append(exact_float_card("EQUINOX", p.equinox, "equinox"))
    for i, m, value in p.get_pv():
        cards.append(exact_float_card(f"PV{i}_{m}", value, "projection parameter"))
    if sip is not None:
        cards += _sip_cards("A", sip.a_order, sip.a)
        cards += _sip_cards("B", sip.b_order, sip.b)
        if sip.ap is not None:
            cards += _sip_cards("AP", sip.ap_order, sip.ap)
        if sip.bp is not None:
            cards += _sip_cards("BP", sip.bp_order, sip.bp)
    return fits.Header(cards)


def wcs_from_header(header: fits.Header | Mapping[str, object]) -> WCS | None:
    """Primary (key ' ') celestial WCS of a header, or None if it has no CTYPE1/CTYPE2."""
    if "CTYPE1" not in header or "CTYPE2" not in header:
        return None
    if not isinstance(header, fits.Header):
        header = _header_from_dict(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, key=" ", relax=True, naxis=2)
    if not wcs.has_celestial:
        raise ValueError(f"header WCS is not celestial: CTYPE = {list(wcs.wcs.ctype)}")
    return wcs


def wcs_header_dict(wcs: WCS) -> dict[str, object]:
    """:func:`wcs_to_header` as an ordered ``{keyword: value}`` dict (JSON-compatible, exact)."""
    return {card.keyword: card.value for card in wcs_to_header(wcs).cards}


def _header_from_dict(data: Mapping[str, object]) -> fits.Header:
    cards = []
    for key, value in data.items():
        if isinstance(value, float):
            cards.append(exact_float_card(key, value))
        else:
            cards.append(fits.Card(key, value))
    return fits.Header(cards)


def wcs_from_header_dict(data: Mapping[str, object]) -> WCS:
    """Inverse of :func:`wcs_header_dict`."""
    wcs = wcs_from_header(_header_from_dict(data))
    if wcs is None:
        raise ValueError("WCS dictionary lacks CTYPE1/CTYPE2")
    return wcs


def shifted(wcs: WCS, dx: float, dy: float) -> WCS:
    """WCS ``w'`` with ``w'(x, y) = w(x + dx, y + dy)``.

    ``shifted(wcs, x0, y0)`` turns a parent-coordinate WCS into one for an array whose
    first pixel is parent (x0, y0); ``shifted(wcs, -x0, -y0)`` undoes it.  SIP terms are
    relative to CRPIX, so moving CRPIX moves the whole mapping.
    """
    header = wcs_to_header(wcs)
    for key, delta in (("CRPIX1", dx), ("CRPIX2", dy)):
        idx = header.index(key)
        value = float(header[key]) - float(delta)
        del header[key]
        header.insert(idx, exact_float_card(key, value, "reference pixel (1-based)"))
    result = wcs_from_header(header)
    if result is None:  # pragma: no cover - wcs_to_header always writes CTYPEs
        raise ValueError("shifted WCS lost its CTYPE keywords")
    return result


def wcs_equal(a: WCS | None, b: WCS | None) -> bool:
    """True if both are None or their exact headers have identical keywords and values."""
    if a is None or b is None:
        return a is b
    return wcs_header_dict(a) == wcs_header_dict(b)


def pixel_scale(wcs: WCS, x: float | None = None, y: float | None = None) -> float:
    """Local pixel scale in arcsec (square root of the pixel's solid angle) at (x, y).

    Defaults to the reference pixel.  Includes SIP distortion, unlike
    ``proj_plane_pixel_scales`` which only reads the linear part.
    """
    if x is None or y is None:
        x = float(wcs.wcs.crpix[0]) - 1.0
        y = float(wcs.wcs.crpix[1]) - 1.0
    px = np.array([x - 0.5, x + 0.5, x - 0.5])
    py = np.array([y - 0.5, y - 0.5, y + 0.5])
    ra, dec = wcs.all_pix2world(px, py, 0)
    ra = np.radians(ra)
    dec = np.radians(dec)
    vec = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    area = float(np.linalg.norm(np.cross(vec[1] - vec[0], vec[2] - vec[0])))
    return math.degrees(math.sqrt(area)) * 3600.0


def sky_polygon_vertices(box: Box, wcs: WCS, points_per_edge: int = 1) -> np.ndarray:
    """``N x 2`` (RA, Dec) in degrees of the box's outer pixel edges, counter-clockwise.

    With ``points_per_edge > 1`` each edge is subdivided so the polygon follows a curved
    (distorted) boundary more closely.
    """
    corners = box.corners(float_box=True)
    if points_per_edge > 1:
        nxt = np.roll(corners, -1, axis=0)
        t = np.arange(points_per_edge, dtype=float)[None, :, None] / points_per_edge
        corners = (corners[:, None, :] + t * (nxt - corners)[:, None, :]).reshape(-1, 2)
    ra, dec = wcs.all_pix2world(corners[:, 0], corners[:, 1], 0)
    return np.column_stack([ra, dec])
