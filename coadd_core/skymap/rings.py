"""Rings sky map: declination rings cut into tracts, plus two polar caps (LSST RingsSkyMap).

The ring/tract arithmetic lives in small vectorised functions used both by ``find_tract``
and by each tract's inner-region test, so the two can never disagree about which tract
owns a position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from lsst import sphgeom

from ._sky import CoordLike, angle_between, radec_deg, unit_vectors
from .base import DEFAULT_CACHE_SIZE, BaseSkyMap
from .config import RingsSkyMapConfig
from .tract import TractInfo, tract_bound_radius

__all__ = ["RingsSkyMap", "RingInnerRegion", "ring_tract_counts"]

_TWO_PI = 2.0 * math.pi

_REGION_PAD = 1e-10
"""Radians added around each inner sky box so that float rounding at band edges never
leaves out a position ``find_tract`` assigns to the tract (1e-10 rad ~ 1e-4 px)."""


def ring_tract_counts(num_rings: int) -> np.ndarray:
    """Tracts per ring: ``int(2 pi cos(d) / ringSize) + 1``, d = ring edge nearer the equator."""
    ring_size = math.pi / (num_rings + 1)
    counts = []
    for r in range(num_rings):
        start = ring_size * (r + 0.5) - 0.5 * math.pi
        stop = start + ring_size
        d = min(abs(start), abs(stop))
        counts.append(int(_TWO_PI * math.cos(d) / ring_size) + 1)
    return np.array(counts, dtype=np.int64)


def _ring_of_dec(dec_rad: np.ndarray, ring_size: float, num_rings: int) -> np.ndarray:
    """Ring number per Dec: -1 south cap, 0..num_rings-1 rings, num_rings north cap."""
    first_start = 0.5 * ring_size - 0.5 * math.pi
    ring = np.floor((dec_rad - first_start) / ring_size)
    ring = np.where(dec_rad < first_start, -1, ring)
    ring = np.where(dec_rad > -first_start, num_rings, ring)
    return np.clip(ring, -1, num_rings).astype(np.int64)


def _tract_in_ring(ra_rad: np.ndarray, count: np.ndarray, ra_start_rad: float) -> np.ndarray:
    """Tract number in its ring: nearest centre in RA, wrapping ``count`` back to 0."""
    delta = np.mod(ra_rad - ra_start_rad, _TWO_PI)
    k = np.floor(delta / (_TWO_PI / count) + 0.5).astype(np.int64)
    return np.where(k >= count, 0, k)


@dataclass(frozen=True)
class RingInnerRegion:
    """Unique region of a rings tract: its Dec band and RA slice (or a polar cap)."""

    ring: int
    tract_in_ring: int
    count: int
    ring_size: float
    num_rings: int
    ra_start: float

    def contains(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
        ring = _ring_of_dec(np.radians(dec_deg), self.ring_size, self.num_rings)
        if self.ring in (-1, self.num_rings):
            return ring == self.ring
        k = _tract_in_ring(np.radians(ra_deg), np.int64(self.count), self.ra_start)
        return (ring == self.ring) & (k == self.tract_in_ring)

    @property
    def sky_region(self) -> sphgeom.Box:
        """The band (or cap) as a sphgeom box, padded by ``_REGION_PAD``."""
        return self._exact_box().dilatedBy(sphgeom.Angle(_REGION_PAD))

    def _exact_box(self) -> sphgeom.Box:
        half = 0.5 * math.pi
        if self.ring == -1:
            lat = sphgeom.AngleInterval.fromRadians(-half, -half + 0.5 * self.ring_size)
            return sphgeom.Box(sphgeom.NormalizedAngleInterval.full(), lat)
        if self.ring == self.num_rings:
            lat = sphgeom.AngleInterval.fromRadians(half - 0.5 * self.ring_size, half)
            return sphgeom.Box(sphgeom.NormalizedAngleInterval.full(), lat)
        width = _TWO_PI / self.count
        lo = (self.ra_start + (self.tract_in_ring - 0.5) * width) % _TWO_PI
        hi = (self.ra_start + (self.tract_in_ring + 0.5) * width) % _TWO_PI
        lon = sphgeom.NormalizedAngleInterval.fromRadians(lo, hi)
        dec_lo = -half + (self.ring + 0.5) * self.ring_size
        lat = sphgeom.AngleInterval.fromRadians(dec_lo, dec_lo + self.ring_size)
        return sphgeom.Box(lon, lat)


class RingsSkyMap(BaseSkyMap):
    """Rings sky map (LSST ``RingsSkyMap``, version 1 numbering).

    Tract 0 is the south polar cap; then ring 0 (southernmost) tracts in increasing RA
    starting at ``ra_start``, ring 1, ...; the last id is the north polar cap.
    """

    kind = "rings"
    config_class = RingsSkyMapConfig

    def __init__(
        self, config: RingsSkyMapConfig | None = None, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        super().__init__(config if config is not None else RingsSkyMapConfig(), cache_size)
        cfg = self.config
        self._num_rings = cfg.num_rings
        self._ring_size = math.pi / (cfg.num_rings + 1)
        self._ra_start = math.radians(cfg.ra_start)
        self._counts = ring_tract_counts(cfg.num_rings)
        # Id of the first tract of each ring (index num_rings: the north cap).
        self._first_ids = np.concatenate([[1], 1 + np.cumsum(self._counts)]).astype(np.int64)
        self._num_tracts = int(self._counts.sum()) + 2
        self._bound = tract_bound_radius(math.degrees(0.5 * self._ring_size), cfg)

    @property
    def config(self) -> RingsSkyMapConfig:
        return self._config  # type: ignore[return-value]

    @property
    def ring_size(self) -> float:
        """Ring height in Dec (radians): pi / (num_rings + 1)."""
        return self._ring_size

    @property
    def ring_counts(self) -> np.ndarray:
        """Number of tracts in each ring, south to north."""
        return self._counts.copy()

    def __len__(self) -> int:
        return self._num_tracts

    def ring_indices(self, tract_id: int) -> tuple[int, int]:
        """``(ring, tract_in_ring)``; ring -1 / num_rings for the south / north cap."""
        tid = int(tract_id)
        if not 0 <= tid < self._num_tracts:
            raise IndexError(f"tract id {tid} is not in [0, {self._num_tracts - 1}]")
        if tid == 0:
            return -1, 0
        if tid == self._num_tracts - 1:
            return self._num_rings, 0
        ring = int(np.searchsorted(self._first_ids, tid, side="right")) - 1
        return ring, tid - int(self._first_ids[ring])

    def tract_id(self, ring: int, tract_in_ring: int) -> int:
        """Inverse of ``ring_indices``."""
        if ring == -1:
            return 0
        if ring == self._num_rings:
            return self._num_tracts - 1
        if not 0 <= ring < self._num_rings or not 0 <= tract_in_ring < self._counts[ring]:
            raise IndexError(f"no tract ({ring}, {tract_in_ring}) in this rings sky map")
        return int(self._first_ids[ring]) + int(tract_in_ring)

    def _centre(self, ring: int, tract_in_ring: int) -> tuple[float, float]:
        if ring == -1:
            return 0.0, -90.0
        if ring == self._num_rings:
            return 0.0, 90.0
        dec = self._ring_size * (ring + 1) - 0.5 * math.pi
        ra = (_TWO_PI * tract_in_ring / self._counts[ring] + self._ra_start) % _TWO_PI
        return math.degrees(ra), math.degrees(dec)

    def _build_tract(self, tract_id: int) -> TractInfo:
        ring, k = self.ring_indices(tract_id)
        ra, dec = self._centre(ring, k)
        count = int(self._counts[ring]) if 0 <= ring < self._num_rings else 1
        inner = RingInnerRegion(ring, k, count, self._ring_size, self._num_rings, self._ra_start)
        return TractInfo(tract_id, ra, dec, math.degrees(0.5 * self._ring_size), self.config, inner)

    def find_tract_ids(self, coords: CoordLike) -> np.ndarray:
        ra, dec, shape = radec_deg(coords)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise ValueError("positions must be finite")
        return self._tract_ids(np.radians(ra), np.radians(dec)).reshape(shape)

    def _tract_ids(self, ra_rad: np.ndarray, dec_rad: np.ndarray) -> np.ndarray:
        ring = _ring_of_dec(dec_rad, self._ring_size, self._num_rings)
        ids = np.where(ring < 0, 0, self._num_tracts - 1).astype(np.int64)
        in_ring = (ring >= 0) & (ring < self._num_rings)
        r = ring[in_ring]
        k = _tract_in_ring(ra_rad[in_ring], self._counts[r], self._ra_start)
        ids[in_ring] = self._first_ids[r] + k
        return ids

    def _patch_list_tract_ids(self, ra: np.ndarray, dec: np.ndarray) -> list[int]:
        """Tracts whose bbox holds a position, searched in adjacent rings (LSST findAllTracts)."""
        ra_rad, dec_rad = np.radians(ra), np.radians(dec)
        base_ring = _ring_of_dec(dec_rad, self._ring_size, self._num_rings)
        candidates = {0, self._num_tracts - 1}
        for dr in (-1, 0, 1):
            ring = base_ring + dr
            ok = (ring >= 0) & (ring < self._num_rings)
            r = ring[ok]
            k = _tract_in_ring(ra_rad[ok], self._counts[r], self._ra_start)
            for dk in (-1, 0, 1):
                kk = np.mod(k + dk, self._counts[r])
                candidates.update(int(i) for i in np.unique(self._first_ids[r] + kk))
        coords = np.stack([ra, dec], axis=-1)
        return [tid for tid in sorted(candidates) if bool(np.any(self[tid].contains(coords)))]

    def _candidate_tract_ids(self, centre: np.ndarray, opening: float) -> np.ndarray:
        reach = self._bound + opening
        centre_dec = math.asin(max(-1.0, min(1.0, float(centre[2]))))
        ids: list[np.ndarray] = []
        if centre_dec + 0.5 * math.pi <= reach:
            ids.append(np.array([0]))
        ring_decs = self._ring_size * (np.arange(self._num_rings) + 1) - 0.5 * math.pi
        for ring in np.nonzero(np.abs(ring_decs - centre_dec) <= reach)[0]:
            count = int(self._counts[ring])
            ra = np.degrees((_TWO_PI * np.arange(count) / count + self._ra_start) % _TWO_PI)
            dec = np.full(count, math.degrees(ring_decs[ring]))
            near = angle_between(unit_vectors(ra, dec), centre[None, :]) <= reach
            ids.append(self._first_ids[ring] + np.nonzero(near)[0])
        if 0.5 * math.pi - centre_dec <= reach:
            ids.append(np.array([self._num_tracts - 1]))
        return np.concatenate(ids).astype(np.int64) if ids else np.empty(0, dtype=np.int64)

    def _representative_tracts(self) -> Iterator[TractInfo]:
        """One tract per ring plus the caps: tracts of a ring differ only by a rotation in RA."""
        yield self[0]
        for ring in range(self._num_rings):
            yield self[int(self._first_ids[ring])]
        yield self[self._num_tracts - 1]
