"""Behaviour shared by every sky map: tract cache, lookups, overlap queries, serialisation."""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from typing import Any, ClassVar, Iterator

import numpy as np

from ._sky import CoordLike, RegionLike, as_region, bounding_circle, radec_deg
from .config import SkyMapConfig
from .patch import PatchInfo
from .tract import TractInfo

__all__ = ["BaseSkyMap", "TractPatchList", "make_skymap", "skymap_from_dict"]

log = logging.getLogger(__name__)

TractPatchList = list[tuple[TractInfo, list[PatchInfo]]]
"""``[(tract, [patch, ...]), ...]`` ordered by tract id."""

_KINDS: dict[str, type["BaseSkyMap"]] = {}

DEFAULT_CACHE_SIZE = 4096
"""Tracts kept built at once: enough for any survey footprint being processed, while a
full pass over a 120-ring map (~18 000 tracts) does not hold every WCS in memory."""


class BaseSkyMap(ABC):
    """A tessellation of (part of) the sky into tracts, each tiled by patches.

    Tracts are built on first access and kept in a bounded LRU cache, so lookups never
    need the whole map built.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[SkyMapConfig]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is not None:
            _KINDS[kind] = cls

    def __init__(self, config: SkyMapConfig, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config)!r}"
            )
        self._config = config
        self._cache: OrderedDict[int, TractInfo] = OrderedDict()
        self._cache_size = max(int(cache_size), 1)

    @property
    def config(self) -> SkyMapConfig:
        return self._config

    # -- tract access --------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int:
        """Number of tracts."""

    @abstractmethod
    def _build_tract(self, tract_id: int) -> TractInfo:
        """Construct tract ``tract_id`` (already range-checked)."""

    def __getitem__(self, tract_id: int) -> TractInfo:
        if not isinstance(tract_id, (int, np.integer)) or isinstance(tract_id, bool):
            raise TypeError(f"tract id must be an integer, got {tract_id!r}")
        tid = int(tract_id)
        if not 0 <= tid < len(self):
            raise IndexError(f"tract id {tid} is not in [0, {len(self) - 1}]")
        tract = self._cache.get(tid)
        if tract is None:
            tract = self._build_tract(tid)
            self._cache[tid] = tract
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(tid)
        return tract

    def __iter__(self) -> Iterator[TractInfo]:
        for tid in range(len(self)):
            yield self[tid]

    # -- position lookups ----------------------------------------------------------------
    @abstractmethod
    def find_tract_ids(self, coords: CoordLike) -> np.ndarray:
        """Vectorised ``find_tract``: tract id per position (shape of the input)."""

    def find_tract(self, coord: CoordLike) -> TractInfo:
        """The tract a single position belongs to."""
        ids = np.asarray(self.find_tract_ids(coord)).ravel()
        if ids.size != 1:
            raise ValueError("find_tract takes one position; use find_tract_ids for many")
        return self[int(ids[0])]

    @abstractmethod
    def _patch_list_tract_ids(self, ra: np.ndarray, dec: np.ndarray) -> list[int]:
        """Tracts ``find_tract_patch_list`` considers for these positions."""

    def find_tract_patch_list(self, coords: CoordLike) -> TractPatchList:
        """Tracts and patches that contain, or may contain, the area spanned by ``coords``.

        Each candidate tract uses ``TractInfo.find_patch_list`` (conservative); tracts with
        no patch are left out.
        """
        ra, dec, _ = radec_deg(coords)
        result: TractPatchList = []
        for tid in sorted(set(self._patch_list_tract_ids(ra, dec))):
            tract = self[tid]
            patches = tract.find_patch_list(np.stack([ra, dec], axis=-1))
            if patches:
                result.append((tract, patches))
        return result

    # -- region queries ------------------------------------------------------------------
    @abstractmethod
    def _candidate_tract_ids(self, centre: np.ndarray, opening: float) -> np.ndarray:
        """Ids of tracts whose bounding cap may reach the cap (centre vector, opening angle)."""

    def find_overlapping(self, region: RegionLike) -> TractPatchList:
        """Tracts and patches whose outer sky polygons overlap ``region``.

        ``region`` is an ``lsst.sphgeom`` region or a ``(Box, WCS)`` pixel footprint (its
        float corners through the WCS). Tracts are preselected by angular distance between
        bounding caps, so only nearby tracts are built.
        """
        sky_region = as_region(region)
        circle = bounding_circle(sky_region)
        if circle is None:
            return []
        result: TractPatchList = []
        for tid in np.sort(self._candidate_tract_ids(*circle)):
            tract = self[int(tid)]
            patches = tract.patches_overlapping(sky_region)
            if patches:
                result.append((tract, patches))
        return result

    # -- registry support ----------------------------------------------------------------
    def max_patch_counts(self) -> tuple[int, int]:
        """Largest ``(nx, ny)`` over all tracts (registry ``patch_nx_max``, ``patch_ny_max``)."""
        nx, ny = 0, 0
        for tract in self._representative_tracts():
            nx = max(nx, tract.num_patches[0])
            ny = max(ny, tract.num_patches[1])
        return nx, ny

    def _representative_tracts(self) -> Iterator[TractInfo]:
        """Tracts whose patch grids include every distinct grid of the map."""
        return iter(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready definition; ``skymap_from_dict`` rebuilds an equal sky map."""
        return {"kind": self.kind, "config": self._config.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseSkyMap":
        """Rebuild a sky map written by ``to_dict``."""
        return skymap_from_dict(data)

    @property
    def config_hash(self) -> str:
        """SHA-1 hex digest of the canonical JSON definition, stable across processes."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BaseSkyMap):
            return NotImplemented
        return self.kind == other.kind and self._config == other._config

    def __hash__(self) -> int:
        return hash((self.kind, self._config))

    def __reduce__(self) -> tuple[Any, ...]:
        # Ship the definition only: tracts rebuild lazily wherever the map is unpickled.
        return (type(self), (self._config, self._cache_size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"


def make_skymap(kind: str, **options: Any) -> BaseSkyMap:
    """Build a sky map of ``kind`` ('rings' or 'discrete') from config field values."""
    try:
        cls = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown sky map kind {kind!r}; known: {sorted(_KINDS)}") from None
    return cls(cls.config_class(**options))


def skymap_from_dict(data: dict[str, Any]) -> BaseSkyMap:
    """Inverse of ``BaseSkyMap.to_dict``."""
    try:
        cls = _KINDS[data["kind"]]
    except KeyError:
        raise ValueError(f"not a sky map definition: {data!r}") from None
    return cls(cls.config_class.model_validate(data["config"]))
