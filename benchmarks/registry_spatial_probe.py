"""Quick probe of the registry's spatial index on SQLite.

Registers a contiguous grid of patch-like squares (default 10^5, grouped in tracts of
10 x 10) and visits of 36 CCD-like rectangles (default 10^5 visit-detectors), then times
the overlap queries one at a time through the public ``Registry`` API, as a flow would
call them. Prints registration times, per-query median / p99 latency and the
candidate/exact counts.

    .venv/bin/python benchmarks/registry_spatial_probe.py [--patches N] [--ccds N] [--level L]
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lsst.sphgeom as sphgeom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry.dimensions import (  # noqa: E402
    BandRecord,
    DetectorRecord,
    InstrumentRecord,
    PatchRecord,
    PhysicalFilterRecord,
    SkyMapRecord,
    TractRecord,
    VisitDetectorRegionRecord,
    VisitRecord,
)
from registry.registry import Registry  # noqa: E402
from registry.spatial import HTM_LEVEL  # noqa: E402

PATCH = 0.216  # deg, outer patch box (4200 px at 0.185"/px)
PATCH_STEP = 0.2055  # deg, inner patch size (4000 px)
CCD_W, CCD_H = 0.105, 0.237  # deg, MegaPrime CCD
INSTRUMENT = "MegaPrime"
SKYMAP = "probe"


def box(ra: float, dec: float, width: float, height: float, rotation: float = 0.0) -> sphgeom.ConvexPolygon:
    """Rectangle of width x height deg centred on (ra, dec) on the tangent plane."""
    lon, lat = math.radians(ra), math.radians(dec)
    centre = (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
    east = (-math.sin(lon), math.cos(lon), 0.0)
    north = (-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat))
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = []
    for dx, dy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        u = math.radians(dx * width * c - dy * height * s)
        v = math.radians(dx * width * s + dy * height * c)
        corners.append(sphgeom.UnitVector3d(*(centre[i] + u * east[i] + v * north[i] for i in range(3))))
    return sphgeom.ConvexPolygon(corners)


def sky_grid(n_patches: int) -> tuple[list[TractRecord], list[PatchRecord], float]:
    """Patches on rows of constant Dec from -10 deg up, 10 x 10 per tract; return max Dec."""
    columns = 400
    rows = math.ceil(n_patches / columns)
    tracts: dict[int, list[sphgeom.UnitVector3d]] = {}
    patches = []
    for i in range(n_patches):
        row, col = divmod(i, columns)
        dec = -10.0 + row * PATCH_STEP
        ra = col * PATCH_STEP / math.cos(math.radians(dec))
        tract = (row // 10) * (columns // 10) + col // 10
        region = box(ra, dec, PATCH, PATCH)
        patches.append(
            PatchRecord(skymap=SKYMAP, tract=tract, id=i, cell_x=col % 10, cell_y=row % 10, region=region)
        )
        tracts.setdefault(tract, []).extend(region.getVertices())
    tract_records = [
        TractRecord(skymap=SKYMAP, id=t, region=sphgeom.ConvexPolygon.convexHull(v))
        for t, v in tracts.items()
    ]
    return tract_records, patches, -10.0 + rows * PATCH_STEP


def field(rng: random.Random, max_dec: float) -> tuple[float, float]:
    dec = rng.uniform(-9.0, max_dec - 1.0)
    return rng.uniform(1.0, 60.0), dec


def mosaic(ra: float, dec: float, visit: int) -> list[VisitDetectorRegionRecord]:
    """36 CCDs in 4 rows x 9 columns around the pointing (MegaPrime-like)."""
    records = []
    for detector in range(36):
        row, col = divmod(detector, 9)
        dx = (col - 4) * (CCD_W + 0.005)
        dy = (row - 1.5) * (CCD_H + 0.01)
        ccd_ra = ra + dx / math.cos(math.radians(dec))
        records.append(
            VisitDetectorRegionRecord(
                instrument=INSTRUMENT,
                visit=visit,
                detector=detector,
                region=box(ccd_ra, dec + dy, CCD_W, CCD_H),
            )
        )
    return records


def timed(calls: list[Callable[[], object]]) -> tuple[list[float], list[object]]:
    durations, results = [], []
    for call in calls:
        start = time.perf_counter()
        results.append(call())
        durations.append(time.perf_counter() - start)
    return durations, results


def report(name: str, durations: list[float]) -> None:
    ms = sorted(d * 1e3 for d in durations)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    median = statistics.median(ms)
    print(f"{name:44s} n={len(ms):5d}  median {median:6.3f} ms  p99 {p99:6.3f} ms  max {ms[-1]:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--ccds", type=int, default=100_000, help="visit-detectors (36 per visit)")
    parser.add_argument("--level", type=int, default=HTM_LEVEL)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--path", help="SQLite file to create (default: a temporary directory)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.path) if args.path else Path(tmp) / "registry.sqlite3"
        registry = Registry.create(f"sqlite:///{path}", htm_level=args.level)
        print(f"SQLite registry at {path}, HTM level {registry.htm_level}")

        tracts, patches, max_dec = sky_grid(args.patches)
        registry.sync_dimension_record(
            "skymap",
            SkyMapRecord(name=SKYMAP, hash=b"probe", tract_max=len(tracts), patch_nx_max=10, patch_ny_max=10),
        )
        start = time.perf_counter()
        registry.insert_dimension_records("tract", tracts)
        registry.insert_dimension_records("patch", patches)
        print(
            f"registered {len(tracts)} tracts + {len(patches)} patches in {time.perf_counter() - start:.1f} s"
        )

        registry.sync_dimension_record("instrument", InstrumentRecord(name=INSTRUMENT, detector_max=36))
        registry.sync_dimension_record("band", BandRecord(name="r"))
        registry.sync_dimension_record(
            "physical_filter", PhysicalFilterRecord(instrument=INSTRUMENT, name="r.MP9602", band="r")
        )
        registry.insert_dimension_records(
            "detector", [DetectorRecord(instrument=INSTRUMENT, id=d) for d in range(36)]
        )
        n_visits = math.ceil(args.ccds / 36)
        pointings = [field(rng, max_dec) for _ in range(n_visits)]
        visits = [
            VisitRecord(
                instrument=INSTRUMENT,
                id=v + 1,
                physical_filter="r.MP9602",
                band="r",
                day_obs=20240101,
                region=box(ra, dec, 1.0, 1.0),
            )
            for v, (ra, dec) in enumerate(pointings)
        ]
        ccds = [r for v, (ra, dec) in enumerate(pointings) for r in mosaic(ra, dec, v + 1)][: args.ccds]
        start = time.perf_counter()
        registry.insert_dimension_records("visit", visits)
        registry.insert_dimension_records("visit_detector_region", ccds)
        elapsed = time.perf_counter() - start
        print(f"registered {len(visits)} visits + {len(ccds)} visit-detectors in {elapsed:.1f} s")
        with registry.engine.connect() as connection:
            for table in ("patch_skypix", "visit_detector_region_skypix", "tract_skypix"):
                count = connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                print(f"  {table}: {count} rows")

        queries = [
            box(*field(rng, max_dec), CCD_W, CCD_H, rotation=rng.uniform(0, 180)) for _ in range(args.queries)
        ]
        for query in queries[:50]:  # warm the statement cache and the page cache
            registry.patches_overlapping(query)
        print()
        durations, exact = timed([lambda q=q: registry.patches_overlapping(q) for q in queries])
        report("patches_overlapping(CCD region)", durations)
        _, candidates = timed([lambda q=q: registry.patch_candidates(q) for q in queries])
        sizes = sorted(len(c) for c in candidates)  # type: ignore[arg-type]
        found = sorted(len(e) for e in exact)  # type: ignore[arg-type]
        p99 = sizes[int(0.99 * (len(sizes) - 1))]
        print(
            f"{'':44s} candidates median {statistics.median(sizes):.0f} (p99 {p99}),"
            f" exact median {statistics.median(found):.0f}"
        )

        sample = rng.sample(ccds, min(args.queries, len(ccds)))
        durations, _ = timed(
            [
                lambda r=r: registry.patches_overlapping_element(INSTRUMENT, r.visit, r.detector)
                for r in sample
            ]
        )
        report("patches_overlapping_element(visit, detector)", durations)

        covered = [
            p
            for p in rng.sample(patches, min(args.queries * 5, len(patches)))
            if -8.0 < _dec(p.region) < max_dec - 2.0
        ][: args.queries]
        durations, found_ccds = timed(
            [lambda p=p: registry.visit_detectors_overlapping_patch(SKYMAP, p.tract, p.id) for p in covered]
        )
        report("visit_detectors_overlapping_patch(patch)", durations)
        print(
            f"{'':44s} visit-detectors per patch median {statistics.median(len(c) for c in found_ccds):.0f}"
        )  # type: ignore[arg-type]

        durations, _ = timed([lambda q=q: registry.visit_detectors_overlapping(q) for q in queries])
        report("visit_detectors_overlapping(CCD region)", durations)
        durations, _ = timed([lambda q=q: registry.tracts_overlapping(q) for q in queries])
        report("tracts_overlapping(CCD region)", durations)
        registry.close()


def _dec(region: sphgeom.Region) -> float:
    return sphgeom.LonLat(region.getCentroid()).getLat().asDegrees()


if __name__ == "__main__":
    main()
