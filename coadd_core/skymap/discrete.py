"""Discrete sky map: one square tract per listed position (LSST DiscreteSkyMap).

Used for targeted fields (e.g. obs_cfht's deep fields) where a whole-sky tessellation
would be wasteful.
"""

from __future__ import annotations

import numpy as np

from ._sky import CoordLike, angle_between, radec_deg, unit_vectors
from .base import DEFAULT_CACHE_SIZE, BaseSkyMap
from .config import DiscreteSkyMapConfig
from .tract import TractInfo, tract_bound_radius

__all__ = ["DiscreteSkyMap"]


class DiscreteSkyMap(BaseSkyMap):
    """Tract ``i`` is centred on ``(ra_list[i], dec_list[i])`` with half-size ``radius_list[i]``."""

    kind = "discrete"
    config_class = DiscreteSkyMapConfig

    def __init__(self, config: DiscreteSkyMapConfig, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(config, cache_size)
        cfg = self.config
        self._ra = np.asarray(cfg.ra_list, dtype=float) % 360.0
        self._dec = np.asarray(cfg.dec_list, dtype=float)
        self._vectors = unit_vectors(self._ra, self._dec)
        self._bounds = np.array([tract_bound_radius(r, cfg) for r in cfg.radius_list])

    @property
    def config(self) -> DiscreteSkyMapConfig:
        return self._config  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._ra)

    def _build_tract(self, tract_id: int) -> TractInfo:
        cfg = self.config
        ra, dec = float(self._ra[tract_id]), float(self._dec[tract_id])
        return TractInfo(tract_id, ra, dec, cfg.radius_list[tract_id], cfg)

    def find_tract_ids(self, coords: CoordLike) -> np.ndarray:
        """Tract with the nearest centre (lowest id on ties); it need not contain the position."""
        ra, dec, shape = radec_deg(coords)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise ValueError("positions must be finite")
        vecs = unit_vectors(ra, dec)
        ids = np.empty(len(ra), dtype=np.int64)
        chunk = max(1, 2_000_000 // max(len(self), 1))
        for start in range(0, len(ra), chunk):
            block = vecs[start : start + chunk]
            sep = angle_between(block[:, None, :], self._vectors[None, :, :])
            ids[start : start + chunk] = np.argmin(sep, axis=1)
        return ids.reshape(shape)

    def _patch_list_tract_ids(self, ra: np.ndarray, dec: np.ndarray) -> list[int]:
        """Every tract, as LSST's base ``findTractPatchList`` does; empty ones drop out later."""
        return list(range(len(self)))

    def _candidate_tract_ids(self, centre: np.ndarray, opening: float) -> np.ndarray:
        sep = angle_between(self._vectors, centre[None, :])
        return np.nonzero(sep <= self._bounds + opening)[0].astype(np.int64)
