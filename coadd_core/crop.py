"""Trim an exposure to the part that holds data.

A visit's warp covers a whole patch outer box, but one CCD fills only a strip of it;
storing the NO_DATA rest would make a warp file of a small overlap as large as the
patch. Warps are stored on the box of their data instead (parent coordinates keep
their place on the patch), and readers treat pixels outside it as NO_DATA.

Also: :func:`cutouts`, many small stamps of an array at once (PSF stars, the variable
rule's per-epoch fluxes).
"""

from __future__ import annotations

import numpy as np

from coadd_core.exposure import Exposure
from coadd_core.geom import Box


def data_bbox(exposure: Exposure, *, no_data_plane: str = "NO_DATA") -> Box:
    """The smallest box holding every pixel without ``no_data_plane`` (empty if none)."""
    bit = exposure.planes.bitmask(no_data_plane)
    has_data = (exposure.mask & bit) == 0
    rows = np.flatnonzero(has_data.any(axis=1))
    if rows.size == 0:
        x0, y0 = exposure.bbox.xy0
        return Box(x0, y0, x0 - 1, y0 - 1)
    cols = np.flatnonzero(has_data[rows[0] : rows[-1] + 1].any(axis=0))
    x0, y0 = exposure.bbox.xy0
    return Box(x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]), y0 + int(rows[-1]))


def crop_to_data(exposure: Exposure, *, margin: int = 0) -> Exposure | None:
    """A copy of ``exposure`` cut to its data box grown by ``margin`` (None if no data)."""
    box = data_bbox(exposure)
    if box.is_empty():
        return None
    box = box.grown(margin).intersection(exposure.bbox)
    return exposure.subset(box).copy()


def cutouts(array: np.ndarray, cx: np.ndarray, cy: np.ndarray, half: int) -> np.ndarray:
    """Stamps ``array[cy-half:cy+half+1, cx-half:cx+half+1]`` (all inside the array)."""
    size = 2 * half + 1
    offs = np.arange(-half, half + 1)
    rows = (cy[:, None] + offs[None, :])[:, :, None]
    cols = (cx[:, None] + offs[None, :])[:, None, :]
    return array[np.broadcast_to(rows, (len(cx), size, size)), np.broadcast_to(cols, (len(cx), size, size))]
