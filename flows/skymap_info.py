"""Sky-map lookups for the command line (``coadd skymap find``)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def find_positions(positions: Sequence[tuple[float, float]], kind: str = "rings") -> list[dict[str, Any]]:
    """Tract and patch whose inner regions hold each (RA, Dec) position, in degrees."""
    from coadd_core.skymap import make_skymap

    skymap = make_skymap(kind)
    radec = np.array(positions, dtype=float).reshape(-1, 2)
    tract_ids = skymap.find_tract_ids(radec)
    rows = []
    for (r, d), tract_id in zip(radec, tract_ids):
        tract = skymap[int(tract_id)]
        patch = tract.find_patch((r, d))
        x, y = tract.sky_to_pixel(np.array([[r, d]]))
        rows.append(
            {
                "ra": float(r),
                "dec": float(d),
                "tract": int(tract_id),
                "patch": patch.sequential_index,
                "patch_x": patch.index[0],
                "patch_y": patch.index[1],
                "tract_x_px": round(float(x[0]), 2),
                "tract_y_px": round(float(y[0]), 2),
            }
        )
    return rows
