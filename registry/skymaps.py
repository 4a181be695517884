"""Sky-map registration: skymap, tract and patch records with their regions.

Regions are the OUTER (bordered) boxes as LSST registers them, so a query for patches
overlapping a CCD finds every patch whose pixels the CCD can contribute to. Patch
polygons of a tract are computed in one vectorised WCS call per tract.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

import numpy as np

from registry.dimensions import PatchRecord, SkyMapRecord, TractRecord
from registry.refs import ConflictingDefinitionError

log = logging.getLogger(__name__)

SKYMAP_RUN = "skymaps"


def _polygon(ra: np.ndarray, dec: np.ndarray) -> Any:
    from lsst import sphgeom

    return sphgeom.ConvexPolygon(
        [sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(float(r), float(d))) for r, d in zip(ra, dec)]
    )


def tract_patch_records(name: str, tract: Any) -> tuple[TractRecord, list[PatchRecord]]:
    """The tract's record and its patches' records (outer-box polygons)."""
    nx, ny = tract.num_patches
    patches = [tract.get_patch_info((x, y)) for y in range(ny) for x in range(nx)]
    corners = np.concatenate([p.outer_bbox.corners(float_box=True) for p in patches])
    ra, dec = tract.wcs.wcs_pix2world(corners[:, 0], corners[:, 1], 0)
    records = []
    for i, patch in enumerate(patches):
        sl = slice(4 * i, 4 * i + 4)
        records.append(
            PatchRecord(
                skymap=name,
                tract=tract.id,
                id=patch.sequential_index,
                cell_x=patch.index[0],
                cell_y=patch.index[1],
                region=_polygon(ra[sl], dec[sl]),
            )
        )
    return TractRecord(skymap=name, id=tract.id, region=tract.outer_sky_polygon), records


def register_skymap(
    butler: Any,
    name: str,
    skymap: Any,
    *,
    tract_ids: Iterable[int] | None = None,
    progress: bool = False,
    batch_tracts: int = 200,
) -> dict[str, int]:
    """Register ``skymap`` as ``name``: its record, tracts and patches, and a ``skyMap`` dataset.

    ``tract_ids`` limits the tracts registered (all of them by default: the default rings
    map has 18938 tracts and about 1.2 million patches). Registering again adds missing
    tracts; a different definition under the same name is an error.
    """
    registry = butler.registry
    nx, ny = skymap.max_patch_counts()
    record = SkyMapRecord(
        name=name,
        hash=bytes.fromhex(skymap.config_hash),
        tract_max=len(skymap),
        patch_nx_max=nx,
        patch_ny_max=ny,
        definition=skymap.to_dict(),
    )
    existing = registry.get_dimension_record("skymap", {"skymap": name})
    if existing is not None and existing.hash != record.hash:
        raise ConflictingDefinitionError(
            f"sky map {name!r} is already registered with a different definition"
        )
    if existing is None:
        registry.sync_dimension_record("skymap", record)
    ids = list(range(len(skymap))) if tract_ids is None else sorted({int(t) for t in tract_ids})
    for t in ids:
        if not 0 <= t < len(skymap):
            raise IndexError(f"tract {t} is not in sky map {name!r} (0..{len(skymap) - 1})")
    counts = {"tracts": 0, "patches": 0}
    bar = _progress(len(ids), progress)
    for chunk in _chunks(ids, batch_tracts):
        tracts, patches = [], []
        for t in chunk:
            tract_record, patch_records = tract_patch_records(name, skymap[t])
            tracts.append(tract_record)
            patches += patch_records
        counts["tracts"] += registry.insert_dimension_records("tract", tracts, on_conflict="ignore")
        counts["patches"] += registry.insert_dimension_records("patch", patches, on_conflict="ignore")
        bar.update(len(chunk))
    bar.close()
    registry.register_run(SKYMAP_RUN)
    if registry.find_dataset("skyMap", {"skymap": name}, [SKYMAP_RUN]) is None:
        butler.put(skymap, "skyMap", {"skymap": name}, SKYMAP_RUN)
    log.info("sky map %s: %d tract(s), %d patch(es) registered", name, counts["tracts"], counts["patches"])
    return counts


def _chunks(items: list[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="tract", desc="register tracts", disable=not enabled or total < 2)


def tracts_overlapping_visits(butler: Any, skymap: Any, instrument: str | None = None) -> list[int]:
    """Tracts whose regions overlap any registered visit region (for partial registration)."""
    ids: set[int] = set()
    data_id = {"instrument": instrument} if instrument else None
    for rec in butler.registry.query_dimension_records("visit", data_id=data_id):
        if rec.region is None:
            continue
        for tract, _patches in skymap.find_overlapping(rec.region):
            ids.add(int(tract.id))
    return sorted(ids)
