"""A photometric reference catalog drawn from the truth stars (Pan-STARRS-like depth).

Magnitudes get a random error whose size is also reported: an error floor plus a term
growing as the flux falls, 0.2 mag at ``depth_mag``. Positions are the truth positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.table import Table

from coadd_core.sim.config import RefcatConfig

__all__ = ["make_refcat", "write_refcat", "magnitude_error"]


def magnitude_error(mag: np.ndarray, config: RefcatConfig) -> np.ndarray:
    """Reported 1-sigma magnitude error of a reference star of magnitude ``mag``."""
    mag = np.asarray(mag, dtype=float)
    return np.hypot(config.error_floor, 0.2 * 10 ** (0.4 * (mag - config.depth_mag)))


def make_refcat(catalog: Table, config: RefcatConfig, ref_band: str, rng: np.random.Generator) -> Table:
    """Reference stars with ``ra``, ``dec`` and ``<band>_mag``/``<band>_mag_err`` columns."""
    kinds = np.asarray(catalog["kind"])
    keep = kinds == "star"
    if config.include_variables:
        keep |= kinds == "variable"
    keep &= np.asarray(catalog[f"{ref_band}_mag"]) <= config.mag_limit
    stars = catalog[keep]
    out = Table()
    out["id"] = np.asarray(stars["id"], dtype=np.int64)
    out["ra"] = np.round(np.asarray(stars["ra"], dtype=float), 9)
    out["dec"] = np.round(np.asarray(stars["dec"], dtype=float), 9)
    for band in config.bands:
        truth = np.asarray(stars[f"{band}_mag"], dtype=float)
        err = magnitude_error(truth, config)
        out[f"{band}_mag"] = np.round(truth + rng.normal(0.0, 1.0, size=len(truth)) * err, 5)
        out[f"{band}_mag_err"] = np.round(err, 5)
    out.meta["reference_band"] = ref_band
    return out


def write_refcat(table: Table, path: Path) -> Path:
    """Write the refcat as plain CSV (one header line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.write(path, format="ascii.csv", overwrite=True)
    return path
