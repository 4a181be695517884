"""Photometric reference catalogs from CSV/ECSV/FITS files or tables.

Whatever the source names its columns, the returned table uses ``ra``, ``dec`` (deg,
ICRS) and ``<band>_mag`` / ``<band>_mag_err`` (AB), the names the simulator writes
and :func:`coadd_core.characterize.characterize` reads.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from astropy.table import Table

from .config import RefcatColumns

__all__ = ["RefcatError", "read_refcat"]

logger = logging.getLogger(__name__)

_FORMATS = {
    ".csv": "ascii.csv",
    ".txt": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
}


class RefcatError(ValueError):
    """A reference catalog lacks a required column or holds unusable values."""


def _format_of(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1:
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def _bands_in(table: Table, template: str) -> list[str]:
    pattern = re.compile("^" + re.escape(template).replace(re.escape("{band}"), "(.+)") + "$")
    return [m.group(1) for name in table.colnames if (m := pattern.match(name))]


def read_refcat(
    source: str | Path | Table,
    *,
    bands: Sequence[str] | None = None,
    columns: RefcatColumns = RefcatColumns(),
) -> Table:
    """Read a reference catalog and return it with standard column names.

    ``source`` is a file (CSV, ECSV or FITS, optionally gzipped) or an astropy
    ``Table``.  ``columns`` names the RA/Dec columns and the magnitude / error templates
    (``{band}`` is substituted); ``bands`` lists the bands required (default: every band
    whose magnitude column is present).  Error columns are optional; a missing one is
    filled with NaN.  Raises :class:`RefcatError` naming the missing columns and those
    available.
    """
    if isinstance(source, Table):
        table = source
        origin = "table"
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"reference catalog {path} does not exist")
        fmt = _format_of(path)
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
        origin = str(path)
    available = list(table.colnames)
    missing = [c for c in (columns.ra, columns.dec) if c not in table.colnames]
    if missing:
        raise RefcatError(f"{origin}: missing position column(s) {missing}; columns are {available}")
    found = _bands_in(table, columns.mag)
    if bands is None:
        bands = found
        if not bands:
            raise RefcatError(
                f"{origin}: no magnitude column matching {columns.mag!r}; columns are {available}"
            )
    else:
        absent = [columns.mag.format(band=b) for b in bands if columns.mag.format(band=b) not in table.colnames]
        if absent:
            raise RefcatError(f"{origin}: missing magnitude column(s) {absent}; columns are {available}")
    out = Table()
    ra = np.asarray(table[columns.ra], dtype=np.float64)
    dec = np.asarray(table[columns.dec], dtype=np.float64)
    if np.any(np.abs(dec[np.isfinite(dec)]) > 90.0):
        raise RefcatError(f"{origin}: declinations outside [-90, 90] deg (radians given?)")
    out["ra"] = np.mod(ra, 360.0)
    out["dec"] = dec
    for band in bands:
        out[f"{band}_mag"] = np.asarray(table[columns.mag.format(band=band)], dtype=np.float64)
        err_name = columns.mag_err.format(band=band)
        if err_name in table.colnames:
            out[f"{band}_mag_err"] = np.asarray(table[err_name], dtype=np.float64)
        else:
            out[f"{band}_mag_err"] = np.full(len(table), np.nan)
    for extra in ("id",):
        if extra in table.colnames:
            out[extra] = table[extra]
    out.meta.update(table.meta)
    logger.debug("read %d reference objects with bands %s from %s", len(out), list(bands), origin)
    return out
