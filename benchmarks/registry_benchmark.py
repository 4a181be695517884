"""Registry benchmark: spatial-overlap query latency, registration and ingest rates.

In one run, on the same simulated sky:

1. Registers ``--patches`` patches of the project's rings sky map (real tract / patch
   polygons, ~0.22 deg outer boxes, whole tracts nearest RA 180, Dec 0) and
   ``--visit-detectors`` MegaPrime-like CCD footprints (36 per visit, 0.1064 x 0.2396
   deg, 4 x 9 mosaic) of visits pointed at random fields over the same area with
   dithers, in bulk, in our registry on SQLite and on PostgreSQL; then times, one query
   at a time through the public ``Registry`` API:

   * patches overlapping an exposure-detector:
     ``Registry.patches_overlapping_element(instrument, visit, detector)``
   * exposure-detectors overlapping a patch:
     ``Registry.visit_detectors_overlapping_patch(skymap, tract, patch)``

   and checks a sample of the answers against a brute-force ``lsst.sphgeom`` test of
   every registered region (bounding-cap prefilter, then ``Region.relate``).
2. Times metadata ingest of simulated raw files with ``registry.ingest``
   (``read_raw_file_metadata`` then ``register_raw_file``, transfer 'direct'), when
   that module is there.
3. Runs the same registration and queries on ``lsst-daf-butler``'s registry (default
   dimension universe, SQLite) in its own virtualenv, as a subprocess fed the same
   regions through an ``.npz`` file (``benchmarks/_daf_butler_peer.py``), checks that
   its answers equal ours, and prints our speed-up over it.

Progress goes to stderr; the results table to stdout (and ``--json FILE``). Everything
random comes from ``--seed``.

    .venv/bin/python benchmarks/registry_benchmark.py --quick
    source deploy/test-services.sh && \\
        .venv/bin/python benchmarks/registry_benchmark.py --patches 100000 --visit-detectors 1000000

The peer's virtualenv (once):

    python3 -m venv benchmarks/.peer-venv
    benchmarks/.peer-venv/bin/pip install -r benchmarks/requirements-peer.txt
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lsst.sphgeom as sphgeom
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from coadd_core.skymap import make_skymap  # noqa: E402
from registry.dimensions import (  # noqa: E402
    BandRecord,
    DetectorRecord,
    ExposureRecord,
    InstrumentRecord,
    PatchRecord,
    PhysicalFilterRecord,
    SkyMapRecord,
    TractRecord,
    VisitDetectorRegionRecord,
    VisitRecord,
)
from registry.registry import Registry  # noqa: E402

INSTRUMENT = "MegaPrime"
PHYSICAL_FILTER, BAND = "r.MP9602", "r"
DAY_OBS = 20240101
SKYMAP = "rings"
N_DETECTORS = 36
#: MegaPrime CCD on the sky: 2048 x 4612 px at 0.187 arcsec/px (deg).
CCD_W, CCD_H = 2048 * 0.187 / 3600, 4612 * 0.187 / 3600
#: Gaps between CCD columns and rows of the 4 x 9 mosaic (deg).
GAP_X, GAP_Y = 0.0045, 0.0110
FIRST_VISIT = 2_000_000
SKY_CENTRE = (180.0, 0.0)
DEFAULT_PEER_PYTHON = Path(__file__).resolve().parent / ".peer-venv" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "_daf_butler_peer.py"
Q1 = "patches overlapping an exposure-detector"
Q2 = "exposure-detectors overlapping a patch"
TARGET_SPEEDUP, TARGET_MEDIAN_MS, TARGET_P99_MS = 50.0, 1.0, 5.0

_START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


# -- geometry --------------------------------------------------------------------------


def unit(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def radec(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ra = np.degrees(np.arctan2(vectors[..., 1], vectors[..., 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(vectors[..., 2], -1.0, 1.0)))
    return ra, dec


def gnomonic(ra_deg: np.ndarray, dec_deg: np.ndarray, xi_deg: np.ndarray, eta_deg: np.ndarray) -> np.ndarray:
    """Unit vectors at tangent-plane offsets (xi, eta) (..., k) from pointings (...) ."""
    ra, dec = np.radians(ra_deg)[..., None], np.radians(dec_deg)[..., None]
    centre = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)
    east = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    north = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    xi, eta = np.radians(xi_deg)[..., None], np.radians(eta_deg)[..., None]
    v = centre + xi * east + eta * north
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def polygon(vertices: np.ndarray) -> sphgeom.ConvexPolygon:
    return sphgeom.ConvexPolygon([sphgeom.UnitVector3d(float(x), float(y), float(z)) for x, y, z in vertices])


def caps(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre unit vectors and radii (rad) of caps containing polygons (n, k, 3)."""
    centres = vertices.sum(axis=1)
    centres /= np.linalg.norm(centres, axis=-1, keepdims=True)
    cosines = np.einsum("nkj,nj->nk", vertices, centres)
    return centres, np.arccos(np.clip(cosines.min(axis=1), -1.0, 1.0))


@dataclass
class Sky:
    """Every registered region, as vertex arrays (4 vertices per polygon)."""

    skymap: Any
    tract_ids: np.ndarray  # (T,)
    tract_vertices: np.ndarray  # (T, 4, 3)
    patch_tract: np.ndarray  # (N,)
    patch_id: np.ndarray  # (N,)
    patch_cell: np.ndarray  # (N, 2)
    patch_vertices: np.ndarray  # (N, 4, 3)
    visit_ids: np.ndarray  # (V,)
    visit_vertices: np.ndarray  # (V, 4, 3)
    visit_pointing: np.ndarray  # (V, 3) ra, dec, rotation (deg)
    ccd_visit: np.ndarray  # (M,)
    ccd_detector: np.ndarray  # (M,)
    ccd_vertices: np.ndarray  # (M, 4, 3)
    patch_polygons: list[sphgeom.ConvexPolygon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.patch_caps = caps(self.patch_vertices)
        self.ccd_caps = caps(self.ccd_vertices)


def four_vertices(region: sphgeom.ConvexPolygon, what: str) -> np.ndarray:
    vertices = np.array([[v.x(), v.y(), v.z()] for v in region.getVertices()])
    if vertices.shape != (4, 3):
        raise RuntimeError(f"{what}: expected a 4-vertex polygon, got {len(vertices)} vertices")
    return vertices


def make_patches(n_patches: int) -> tuple[Any, list[Any], list[Any]]:
    """Whole tracts of the rings sky map nearest SKY_CENTRE until n_patches (the last
    tract's patches cut at n_patches)."""
    skymap = make_skymap("rings")
    side = math.sqrt(n_patches * 0.2055**2 * 1.3)
    while True:
        step = 0.25
        n = int(side / step) + 1
        offsets = (np.arange(n) - (n - 1) / 2) * step
        xi, eta = np.meshgrid(offsets, offsets)
        order = np.argsort(np.hypot(xi, eta), axis=None)
        points = gnomonic(
            np.array(SKY_CENTRE[0]), np.array(SKY_CENTRE[1]), xi.ravel()[order], eta.ravel()[order]
        )
        ra, dec = radec(points)
        ids = skymap.find_tract_ids(np.stack([ra, dec], axis=-1))
        _, first = np.unique(ids, return_index=True)
        candidates = [int(t) for t in ids[np.sort(first)]]
        tracts, patches, count = [], [], 0
        for tract_id in candidates:
            tract = skymap[tract_id]
            tracts.append(tract)
            for patch in tract:
                patches.append(patch)
                count += 1
                if count == n_patches:
                    return skymap, tracts, patches
        side *= 1.5


def make_sky(n_patches: int, n_ccds: int, rng: np.random.Generator, dithers: int, dither_deg: float) -> Sky:
    log(f"building {n_patches} patch polygons from the rings sky map")
    skymap, tracts, patches = make_patches(n_patches)
    tract_vertices = np.stack([four_vertices(t.region, f"tract {t.id}") for t in tracts])
    patch_polygons = [p.region for p in patches]
    patch_vertices = np.stack([four_vertices(r, "patch") for r in patch_polygons])
    patch_tract = np.array([p.tract_id for p in patches], dtype=np.int64)
    patch_id = np.array([p.sequential_index for p in patches], dtype=np.int64)
    patch_cell = np.array([p.index for p in patches], dtype=np.int64)
    log(f"  {len(tracts)} tracts, {len(patches)} patches")

    # Fields centred on random patches (so uniform over the patch area), each observed
    # `dithers` times with tangent-plane offsets up to +-dither_deg and a small rotation.
    n_visits = math.ceil(n_ccds / N_DETECTORS)
    n_fields = math.ceil(n_visits / dithers)
    log(
        f"building {n_ccds} CCD footprints: {n_visits} visits of {N_DETECTORS} CCDs, "
        f"{n_fields} fields x {dithers} dithers"
    )
    patch_centres, _ = caps(patch_vertices)
    field_ra, field_dec = radec(patch_centres[rng.integers(0, len(patches), n_fields)])
    field_ra = np.repeat(field_ra, dithers)[:n_visits]
    field_dec = np.repeat(field_dec, dithers)[:n_visits]
    dx, dy = rng.uniform(-dither_deg, dither_deg, (2, n_visits))
    pointing_ra, pointing_dec = radec(gnomonic(field_ra, field_dec, dx[:, None], dy[:, None])[:, 0])
    rotation = rng.uniform(-1.0, 1.0, n_visits)

    # CCD corners in the focal plane (deg), 4 rows x 9 columns.
    row, col = np.divmod(np.arange(N_DETECTORS), 9)
    cx = (col - 4) * (CCD_W + GAP_X)
    cy = (row - 1.5) * (CCD_H + GAP_Y)
    corner = np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    fx = cx[:, None] + corner[None, :, 0] * CCD_W  # (36, 4)
    fy = cy[:, None] + corner[None, :, 1] * CCD_H
    outline_x = np.array([fx.min(), fx.max(), fx.max(), fx.min()])
    outline_y = np.array([fy.min(), fy.min(), fy.max(), fy.max()])

    ccd_vertices = np.empty((n_visits * N_DETECTORS, 4, 3))
    visit_vertices = np.empty((n_visits, 4, 3))
    for start in range(0, n_visits, 5000):
        stop = min(n_visits, start + 5000)
        c, s = np.cos(np.radians(rotation[start:stop])), np.sin(np.radians(rotation[start:stop]))
        xi = fx[None] * c[:, None, None] - fy[None] * s[:, None, None]  # (v, 36, 4)
        eta = fx[None] * s[:, None, None] + fy[None] * c[:, None, None]
        v = gnomonic(pointing_ra[start:stop, None], pointing_dec[start:stop, None], xi, eta)
        ccd_vertices[start * N_DETECTORS : stop * N_DETECTORS] = v.reshape(-1, 4, 3)
        oxi = outline_x[None] * c[:, None] - outline_y[None] * s[:, None]
        oeta = outline_x[None] * s[:, None] + outline_y[None] * c[:, None]
        visit_vertices[start:stop] = gnomonic(pointing_ra[start:stop], pointing_dec[start:stop], oxi, oeta)
    visit_ids = FIRST_VISIT + np.arange(n_visits, dtype=np.int64)
    return Sky(
        skymap=skymap,
        tract_ids=np.array([t.id for t in tracts], dtype=np.int64),
        tract_vertices=tract_vertices,
        patch_tract=patch_tract,
        patch_id=patch_id,
        patch_cell=patch_cell,
        patch_vertices=patch_vertices,
        visit_ids=visit_ids,
        visit_vertices=visit_vertices,
        visit_pointing=np.stack([pointing_ra, pointing_dec, rotation], axis=-1),
        ccd_visit=np.repeat(visit_ids, N_DETECTORS)[:n_ccds],
        ccd_detector=np.tile(np.arange(N_DETECTORS, dtype=np.int64), n_visits)[:n_ccds],
        ccd_vertices=ccd_vertices[:n_ccds],
        patch_polygons=patch_polygons,
    )


def brute_force_patches(sky: Sky, i: int) -> set[tuple[int, int]]:
    """(tract, patch) of every patch overlapping CCD i: cap prefilter, then exact test."""
    region = polygon(sky.ccd_vertices[i])
    centres, radii = sky.patch_caps
    c, r = sky.ccd_caps[0][i], sky.ccd_caps[1][i]
    near = np.nonzero(np.arccos(np.clip(centres @ c, -1, 1)) <= radii + r + 1e-9)[0]
    return {
        (int(sky.patch_tract[j]), int(sky.patch_id[j]))
        for j in near
        if not (region.relate(sky.patch_polygons[j]) & sphgeom.DISJOINT)
    }


def brute_force_ccds(sky: Sky, j: int) -> set[tuple[int, int]]:
    """(visit, detector) of every CCD overlapping patch j."""
    region = sky.patch_polygons[j]
    centres, radii = sky.ccd_caps
    c, r = sky.patch_caps[0][j], sky.patch_caps[1][j]
    near = np.nonzero(np.arccos(np.clip(centres @ c, -1, 1)) <= radii + r + 1e-9)[0]
    return {
        (int(sky.ccd_visit[i]), int(sky.ccd_detector[i]))
        for i in near
        if not (region.relate(polygon(sky.ccd_vertices[i])) & sphgeom.DISJOINT)
    }


# -- statistics and results --------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(
    durations: Sequence[float],
    answers: Sequence[Sequence[Any]] | None = None,
    cpu: Sequence[float] | None = None,
) -> dict[str, Any]:
    ms = [d * 1e3 for d in durations]
    out: dict[str, Any] = {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }
    if cpu:
        # Client-process CPU time: on a busy machine, closer to what an idle one would show.
        cpu_ms = [c * 1e3 for c in cpu]
        out["cpu_median_ms"] = statistics.median(cpu_ms)
        out["cpu_p99_ms"] = percentile(cpu_ms, 0.99)
    if answers is not None:
        out["answers_median"] = statistics.median(len(a) for a in answers)
    return out


@dataclass
class Queries:
    q1: np.ndarray  # CCD indices
    q2: np.ndarray  # patch indices
    w1: np.ndarray  # warm-up CCD indices
    w2: np.ndarray  # warm-up patch indices


def timed(calls: Sequence[Callable[[], Any]]) -> tuple[list[float], list[Any], list[float]]:
    """Wall-clock seconds, answers and this process's CPU seconds of each call."""
    durations, answers, cpu = [], [], []
    for call in calls:
        start, start_cpu = time.perf_counter(), time.process_time()
        answers.append(call())
        durations.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return durations, answers, cpu


# -- our registry ------------------------------------------------------------------------


def register(registry: Registry, sky: Sky, chunk: int) -> dict[str, float]:
    """Register every record in bulk (``insert_dimension_records`` per ``chunk``)."""
    times: dict[str, float] = {}
    n_tracts_max = len(sky.skymap)
    nx, ny = sky.skymap.max_patch_counts()
    registry.sync_dimension_record(
        "skymap",
        SkyMapRecord(
            name=SKYMAP,
            hash=bytes.fromhex(sky.skymap.config_hash),
            tract_max=n_tracts_max,
            patch_nx_max=nx,
            patch_ny_max=ny,
        ),
    )
    registry.sync_dimension_record(
        "instrument", InstrumentRecord(name=INSTRUMENT, detector_max=N_DETECTORS, class_name="MegaPrime")
    )
    registry.sync_dimension_record("band", BandRecord(name=BAND))
    registry.sync_dimension_record(
        "physical_filter", PhysicalFilterRecord(instrument=INSTRUMENT, name=PHYSICAL_FILTER, band=BAND)
    )
    registry.insert_dimension_records(
        "detector",
        [DetectorRecord(instrument=INSTRUMENT, id=d, full_name=f"ccd{d:02d}") for d in range(N_DETECTORS)],
    )

    log(f"  registering {len(sky.tract_ids)} tracts + {len(sky.patch_id)} patches")
    start = time.perf_counter()
    registry.insert_dimension_records(
        "tract",
        [
            TractRecord(skymap=SKYMAP, id=int(t), region=polygon(v))
            for t, v in zip(sky.tract_ids, sky.tract_vertices)
        ],
    )
    for lo in range(0, len(sky.patch_id), chunk):
        hi = min(len(sky.patch_id), lo + chunk)
        registry.insert_dimension_records(
            "patch",
            [
                PatchRecord(
                    skymap=SKYMAP,
                    tract=int(sky.patch_tract[i]),
                    id=int(sky.patch_id[i]),
                    cell_x=int(sky.patch_cell[i, 0]),
                    cell_y=int(sky.patch_cell[i, 1]),
                    region=sky.patch_polygons[i],
                )
                for i in range(lo, hi)
            ],
        )
    times["patches"] = time.perf_counter() - start
    log(f"    {times['patches']:.1f} s")

    log(f"  registering {len(sky.visit_ids)} exposures + visits")
    start = time.perf_counter()
    for lo in range(0, len(sky.visit_ids), chunk):
        ids = sky.visit_ids[lo : lo + chunk]
        registry.insert_dimension_records(
            "exposure",
            [
                ExposureRecord(
                    instrument=INSTRUMENT,
                    id=int(v),
                    physical_filter=PHYSICAL_FILTER,
                    band=BAND,
                    day_obs=DAY_OBS,
                    obs_id=f"{int(v)}p",
                    observation_type="science",
                    tracking_ra=float(sky.visit_pointing[lo + k, 0]),
                    tracking_dec=float(sky.visit_pointing[lo + k, 1]),
                    sky_angle=float(sky.visit_pointing[lo + k, 2]),
                )
                for k, v in enumerate(ids)
            ],
        )
        registry.insert_dimension_records(
            "visit",
            [
                VisitRecord(
                    instrument=INSTRUMENT,
                    id=int(v),
                    physical_filter=PHYSICAL_FILTER,
                    band=BAND,
                    day_obs=DAY_OBS,
                    region=polygon(sky.visit_vertices[lo + k]),
                )
                for k, v in enumerate(ids)
            ],
        )
    times["visits"] = time.perf_counter() - start
    log(f"    {times['visits']:.1f} s")

    n = len(sky.ccd_visit)
    log(f"  registering {n} visit-detector regions ({chunk} per transaction)")
    start = time.perf_counter()
    last = start
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        registry.insert_dimension_records(
            "visit_detector_region",
            [
                VisitDetectorRegionRecord(
                    instrument=INSTRUMENT,
                    visit=int(sky.ccd_visit[i]),
                    detector=int(sky.ccd_detector[i]),
                    region=polygon(sky.ccd_vertices[i]),
                )
                for i in range(lo, hi)
            ],
        )
        now = time.perf_counter()
        if now - last > 10 or hi == n:
            log(f"    {hi}/{n} visit-detectors, {now - start:.0f} s ({hi / (now - start):.0f}/s)")
            last = now
    times["visit_detectors"] = time.perf_counter() - start
    return times


def run_ours(backend: str, url: str, sky: Sky, queries: Queries, args: argparse.Namespace) -> dict[str, Any]:
    log(f"{backend}: creating registry")
    registry = Registry.create(url)
    try:
        result: dict[str, Any] = {"backend": backend, "htm_level": registry.htm_level}
        result["register_s"] = register(registry, sky, args.chunk)
        if backend == "postgresql":
            with registry.engine.connect() as connection:
                connection.exec_driver_sql("ANALYZE")
                connection.commit()
        with registry.engine.connect() as connection:
            result["skypix_rows"] = {
                table: connection.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                for table in ("patch_skypix", "visit_detector_region_skypix")
            }

        def q1(i: int) -> Callable[[], Any]:
            visit, detector = int(sky.ccd_visit[i]), int(sky.ccd_detector[i])
            return lambda: registry.patches_overlapping_element(INSTRUMENT, visit, detector)

        def q2(j: int) -> Callable[[], Any]:
            tract, patch = int(sky.patch_tract[j]), int(sky.patch_id[j])
            return lambda: registry.visit_detectors_overlapping_patch(SKYMAP, tract, patch)

        log(f"{backend}: warming up ({len(queries.w1)} + {len(queries.w2)} queries)")
        timed([q1(int(i)) for i in queries.w1] + [q2(int(j)) for j in queries.w2])
        log(f"{backend}: timing {len(queries.q1)} queries '{Q1}'")
        d1, a1, c1 = timed([q1(int(i)) for i in queries.q1])
        log(f"{backend}: timing {len(queries.q2)} queries '{Q2}'")
        d2, a2, c2 = timed([q2(int(j)) for j in queries.q2])
        answers1 = [sorted((d["tract"], d["patch"]) for d in a) for a in a1]
        answers2 = [sorted((d["visit"], d["detector"]) for d in a) for a in a2]
        result["q1"] = summary(d1, answers1, c1)
        result["q2"] = summary(d2, answers2, c2)
        for name in ("q1", "q2"):
            log(f"  {name}: median {result[name]['median_ms']:.3f} ms, p99 {result[name]['p99_ms']:.3f} ms")

        n_check = min(args.verify, len(queries.q1), len(queries.q2))
        log(f"{backend}: checking {n_check} + {n_check} answers against brute force")
        bad1 = sum(set(answers1[k]) != brute_force_patches(sky, int(queries.q1[k])) for k in range(n_check))
        bad2 = sum(set(answers2[k]) != brute_force_ccds(sky, int(queries.q2[k])) for k in range(n_check))
        result["verified"] = {"checked": n_check, "q1_mismatches": bad1, "q2_mismatches": bad2}
        if bad1 or bad2:
            log(f"  MISMATCH: {bad1} + {bad2} answers differ from brute force")
        result["_answers"] = (answers1, answers2)
        return result
    finally:
        registry.close()


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``, dropped afterwards."""
    import sqlalchemy as sa

    url = sa.make_url(server_url)
    if url.get_driver_name() in ("", "psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    name = f"coadd_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def postgres_version(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


# -- the peer (lsst-daf-butler, separate virtualenv) -----------------------------------


def write_peer_data(path: Path, sky: Sky, queries: Queries, n_queries: int, n_warm: int) -> None:
    def flat(vertices: np.ndarray) -> dict[str, np.ndarray]:
        n, k, _ = vertices.shape
        return {"vertices": vertices.reshape(-1, 3), "offsets": np.arange(n + 1, dtype=np.int64) * k}

    arrays: dict[str, Any] = {}
    for name, vertices in (
        ("tract", sky.tract_vertices),
        ("patch", sky.patch_vertices),
        ("visit", sky.visit_vertices),
        ("ccd", sky.ccd_vertices),
    ):
        for key, value in flat(vertices).items():
            arrays[f"{name}_{key}"] = value
    q1 = np.concatenate([queries.w1[:n_warm], queries.q1[:n_queries]])
    q2 = np.concatenate([queries.w2[:n_warm], queries.q2[:n_queries]])
    nx, ny = sky.skymap.max_patch_counts()
    meta = {
        "instrument": INSTRUMENT,
        "skymap": SKYMAP,
        "skymap_hash": sky.skymap.config_hash,
        "tract_max": len(sky.skymap),
        "patch_nx_max": nx,
        "patch_ny_max": ny,
        "detectors": N_DETECTORS,
        "day_obs": DAY_OBS,
        "physical_filter": PHYSICAL_FILTER,
        "band": BAND,
        "warmup": int(min(n_warm, len(queries.w1), len(queries.w2))),
    }
    np.savez(
        path,
        meta=np.array(json.dumps(meta)),
        tract_id=sky.tract_ids,
        patch_tract=sky.patch_tract,
        patch_id=sky.patch_id,
        patch_cell=sky.patch_cell,
        visit_id=sky.visit_ids,
        ccd_visit=sky.ccd_visit,
        ccd_detector=sky.ccd_detector,
        q1_visit=sky.ccd_visit[q1],
        q1_detector=sky.ccd_detector[q1],
        q2_tract=sky.patch_tract[q2],
        q2_patch=sky.patch_id[q2],
        **arrays,
    )


def run_peer(
    sky: Sky, queries: Queries, ours: dict[str, Any] | None, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    python = Path(args.peer_python)
    if not python.exists():
        return {
            "ok": False,
            "error": f"no peer virtualenv at {python}; create it with: "
            "python3 -m venv benchmarks/.peer-venv && "
            "benchmarks/.peer-venv/bin/pip install -r benchmarks/requirements-peer.txt",
        }
    check = subprocess.run(
        [str(python), "-c", "import lsst.daf.butler, lsst.sphgeom; print(lsst.daf.butler.__version__)"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        return {
            "ok": False,
            "error": "lsst-daf-butler does not import in the peer virtualenv: " + check.stderr.strip()[-800:],
        }
    n_queries, n_warm = args.peer_queries, 10
    data = work / "peer_regions.npz"
    out = work / "peer_report.json"
    log(f"daf_butler {check.stdout.strip()}: writing regions to {data}")
    write_peer_data(data, sky, queries, n_queries, n_warm)
    command = [
        str(python),
        str(PEER_SCRIPT),
        "--data",
        str(data),
        "--repo",
        str(work / "peer_repo"),
        "--out",
        str(out),
        "--api",
        args.peer_api,
        "--chunk",
        str(args.peer_chunk),
        "--budget",
        str(args.peer_budget),
        "--min-queries",
        str(min(50, n_queries)),
    ]
    log("running the peer: " + " ".join(command))
    try:
        completed = subprocess.run(command, timeout=args.peer_timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the peer did not finish in --peer-timeout {args.peer_timeout} s"}
    if not out.exists():
        return {"ok": False, "error": f"the peer exited with status {completed.returncode} without a report"}
    report = json.loads(out.read_text())
    if not report.get("ok"):
        return report
    d1, d2 = report.pop("q1_s"), report.pop("q2_s")
    a1 = [[tuple(x) for x in a] for a in report.pop("q1_answers")]
    a2 = [[tuple(x) for x in a] for a in report.pop("q2_answers")]
    report["q1"] = summary(d1, a1, report.pop("q1_cpu_s", None))
    report["q2"] = summary(d2, a2, report.pop("q2_cpu_s", None))
    if ours is not None:
        ours1, ours2 = ours["_answers"]
        report["q1_mismatches_vs_ours"] = sum(sorted(a) != sorted(b) for a, b in zip(a1, ours1))
        report["q2_mismatches_vs_ours"] = sum(sorted(a) != sorted(b) for a, b in zip(a2, ours2))
        report["compared"] = [min(len(a1), len(ours1)), min(len(a2), len(ours2))]
    return report


# -- ingest ------------------------------------------------------------------------------


def find_ingest() -> tuple[tuple[Callable[..., Any], Callable[..., Any]] | None, str]:
    """``registry.ingest``'s header reader and file registrar, or why there are none."""
    if importlib.util.find_spec("registry.ingest") is None:
        return None, "module registry.ingest does not exist in this tree: ingest rate not measured"
    module = importlib.import_module("registry.ingest")
    read = getattr(module, "read_raw_file_metadata", None)
    register_file = getattr(module, "register_raw_file", None)
    if not (callable(read) and callable(register_file)):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        return None, f"registry.ingest has no read_raw_file_metadata / register_raw_file (public: {public})"
    return (read, register_file), "registry.ingest.read_raw_file_metadata + register_raw_file"


def run_ingest(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Ingest every simulated raw file (transfer 'direct') into a new repository, one
    file at a time in this process: header read, then registration."""
    functions, description = find_ingest()
    if functions is None:
        return {"ok": False, "error": description}
    read, register_file = functions
    from coadd_core.sim import simulate
    from registry.butler import Butler

    sim_dir = Path(args.ingest_sim_dir) if args.ingest_sim_dir else work / "sim"
    raw_dir = sim_dir / "raw"

    def raw_files() -> list[Path]:
        suffixes = (".fits", ".fits.fz", ".fz", ".fits.gz")
        return sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.name.endswith(suffixes))

    if not raw_dir.is_dir() or not raw_files():
        log(f"ingest: simulating the '{args.ingest_preset}' survey into {sim_dir}")
        start = time.perf_counter()
        simulate(args.ingest_preset, sim_dir, seed=args.seed, progress=False)
        log(f"  {time.perf_counter() - start:.0f} s")
    files = raw_files()
    if not files:
        return {"ok": False, "error": f"the simulation wrote no raw files under {raw_dir}"}
    repo = work / "ingest_repo"
    shutil.rmtree(repo, ignore_errors=True)
    log(f"ingest: {description}, {len(files)} files, transfer 'direct', into {repo}")
    read(str(files[0]))  # untimed: loads the metadata translator
    butler = Butler.create(repo)
    try:
        read_s = register_s = 0.0
        datasets, already = 0, 0
        for path in files:
            start = time.perf_counter()
            meta = read(str(path))
            middle = time.perf_counter()
            status, count = register_file(butler, meta, transfer="direct")
            register_s += time.perf_counter() - middle
            read_s += middle - start
            datasets += count
            already += status != "ingested"
        with butler.registry.engine.connect() as connection:
            n_regions = connection.exec_driver_sql("SELECT count(*) FROM visit_detector_region").scalar()
        total = read_s + register_s
        return {
            "ok": True,
            "api": description,
            "preset": args.ingest_preset,
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "not_new": already,
            "seconds": total,
            "read_headers_s": read_s,
            "register_s": register_s,
            "files_per_s": len(files) / total,
            "datasets": datasets,
            "exposure_detectors_per_s": datasets / total,
            "science_regions": n_regions,
        }
    finally:
        butler.close()


# -- report ------------------------------------------------------------------------------


def fmt_ratio(peer: float | None, ours: float) -> str:
    return "-" if peer is None or ours <= 0 else f"{peer / ours:,.0f}x"


def print_report(results: dict[str, Any]) -> None:
    peer = results.get("peer") or {}
    peer_ok = bool(peer.get("ok"))
    cfg = results["config"]
    print()
    print(
        f"Registry benchmark: {cfg['patches']:,} patches, {cfg['visit_detectors']:,} exposure-detectors, "
        f"{cfg['queries']} queries each (peer: up to {cfg['peer_queries']}), seed {cfg['seed']}"
    )
    print()
    header = (
        f"{'registry':16s} {'backend':10s} {'query':42s} {'n':>5s} {'median ms':>10s} {'p99 ms':>9s} "
        f"{'cpu med ms':>10s} {'answers':>7s} {'speed-up median':>15s} {'speed-up p99':>12s}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for run in results["ours"]:
        rows.append(("coadd registry", run["backend"], run))
    if peer_ok:
        rows.append(("lsst-daf-butler", "sqlite", peer))
    for name, backend, run in rows:
        for key, label in (("q1", Q1), ("q2", Q2)):
            s = run[key]
            if name == "coadd registry" and peer_ok:
                up_med = fmt_ratio(peer[key]["median_ms"], s["median_ms"])
                up_p99 = fmt_ratio(peer[key]["p99_ms"], s["p99_ms"])
            else:
                up_med = up_p99 = "-"
            cpu = f"{s['cpu_median_ms']:10.3f}" if "cpu_median_ms" in s else f"{'-':>10s}"
            print(
                f"{name:16s} {backend:10s} {label:42s} {s['n']:5d} {s['median_ms']:10.3f} {s['p99_ms']:9.3f} "
                f"{cpu} {s['answers_median']:7.0f} {up_med:>15s} {up_p99:>12s}"
            )
    print()
    print(
        f"{'registry':16s} {'backend':10s} {'registration (bulk)':42s} {'seconds':>10s} {'per second':>12s}"
    )
    for name, backend, run in rows:
        reg = run["register_s"]
        for what, key, count in (
            ("tracts + patches", "patches", cfg["patches"]),
            ("exposures + visits", "visits", cfg["visits"]),
            ("exposure-detector regions", "visit_detectors", cfg["visit_detectors"]),
        ):
            print(f"{name:16s} {backend:10s} {what:42s} {reg[key]:10.1f} {count / reg[key]:12,.0f}")
    print()
    for run in results["ours"]:
        v = run["verified"]
        state = "exact" if not (v["q1_mismatches"] or v["q2_mismatches"]) else "MISMATCH"
        print(
            f"check {run['backend']}: {v['checked']} + {v['checked']} answers vs brute-force sphgeom: "
            f"{v['q1_mismatches']} + {v['q2_mismatches']} differ ({state}); HTM level {run['htm_level']}, "
            f"skypix rows {run['skypix_rows']}"
        )
    if peer_ok:
        what = f"daf_butler ({peer['versions']['lsst-daf-butler']}, {peer['universe']}, api {peer['api']})"
        if "compared" in peer:
            print(
                f"check {what}: {peer['compared'][0]} + {peer['compared'][1]} answers vs ours (SQLite): "
                f"{peer['q1_mismatches_vs_ours']} + {peer['q2_mismatches_vs_ours']} differ"
            )
        else:
            print(f"{what}: answers not compared (our SQLite backend was not run)")
    elif peer:
        print(f"daf_butler: not measured: {peer.get('error')}")
    ingest = results.get("ingest") or {}
    if ingest.get("ok"):
        print(
            f"ingest ({ingest['api']}, '{ingest['preset']}' simulation, transfer 'direct'): "
            f"{ingest['files']} files ({ingest['bytes'] / 1e6:.0f} MB) in {ingest['seconds']:.2f} s "
            f"(headers {ingest['read_headers_s']:.2f} s + registration {ingest['register_s']:.2f} s) = "
            f"{ingest['files_per_s']:.1f} files/s, {ingest['datasets']} raw datasets = "
            f"{ingest['exposure_detectors_per_s']:.0f} exposure-detectors/s "
            f"({ingest['science_regions']} science regions)"
        )
    elif ingest:
        print(f"ingest: not measured: {ingest.get('error')}")
    env = results["environment"]
    print(
        f"machine: {env['cpus']} CPUs, load average (1, 5, 15 min) {env['load_average_at_start']} at start, "
        f"{env['load_average_at_end']} at end; SQLite {env['sqlite']}"
        + (f", PostgreSQL {env['postgresql']}" if "postgresql" in env else "")
    )
    sqlite_run = next((r for r in results["ours"] if r["backend"] == "sqlite"), None)
    if sqlite_run is not None:
        checks = []
        for key in ("q1", "q2"):
            s = sqlite_run[key]
            ok = s["median_ms"] < TARGET_MEDIAN_MS and s["p99_ms"] < TARGET_P99_MS
            if peer_ok:
                ok = ok and peer[key]["median_ms"] / s["median_ms"] >= TARGET_SPEEDUP
            checks.append(ok)
        target = f"median < {TARGET_MEDIAN_MS:g} ms, p99 < {TARGET_P99_MS:g} ms" + (
            f", >= {TARGET_SPEEDUP:g}x daf_butler" if peer_ok else ""
        )
        print(f"target on SQLite ({target}): {'met' if all(checks) else 'NOT met'}")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    import sqlalchemy

    return {
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "numpy": np.__version__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=100_000, help="patches to register (default 100000)")
    parser.add_argument(
        "--visit-detectors",
        type=int,
        default=1_000_000,
        help="exposure-detector (visit_detector_region) regions to register (default 1000000)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fast check: 10^4 patches, 10^5 exposure-detectors"
    )
    parser.add_argument(
        "--queries", type=int, default=2000, help="timed queries of each kind per backend (default 2000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed queries of each kind first (default 100)"
    )
    parser.add_argument(
        "--verify", type=int, default=200, help="answers of each kind checked by brute force (default 200)"
    )
    parser.add_argument("--seed", type=int, default=20240101, help="random seed (default 20240101)")
    parser.add_argument("--dithers", type=int, default=5, help="visits per field (default 5)")
    parser.add_argument(
        "--dither-deg", type=float, default=0.15, help="largest dither offset per axis, deg (default 0.15)"
    )
    parser.add_argument(
        "--chunk", type=int, default=50_000, help="records per insert transaction (default 50000)"
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default both; PostgreSQL is skipped, with a message, "
        "when no URL is given)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("COADD_TEST_POSTGRES_URL"),
        help="PostgreSQL server URL (default $COADD_TEST_POSTGRES_URL, set by "
        "`source deploy/test-services.sh`); the benchmark creates and drops its own database there",
    )
    parser.add_argument(
        "--peer",
        choices=("auto", "skip"),
        default="auto",
        help="run the lsst-daf-butler comparison (default auto)",
    )
    parser.add_argument(
        "--peer-python",
        default=str(DEFAULT_PEER_PYTHON),
        help=f"python of the peer virtualenv (default {DEFAULT_PEER_PYTHON})",
    )
    parser.add_argument(
        "--peer-queries", type=int, default=200, help="timed peer queries of each kind (default 200)"
    )
    parser.add_argument(
        "--peer-api",
        choices=("registry", "query"),
        default="registry",
        help="daf_butler interface: registry.queryDataIds (default) or butler.query()",
    )
    parser.add_argument(
        "--peer-chunk", type=int, default=10_000, help="records per daf_butler insertDimensionData call"
    )
    parser.add_argument(
        "--peer-budget",
        type=float,
        default=180.0,
        help="seconds of timed peer queries of each kind; it stops there once 50 are done (default 180)",
    )
    parser.add_argument(
        "--peer-timeout", type=float, default=3600, help="seconds before the peer is stopped (default 3600)"
    )
    parser.add_argument(
        "--ingest",
        choices=("auto", "skip"),
        default="auto",
        help="time registry.ingest of simulated raws (default auto)",
    )
    parser.add_argument(
        "--ingest-preset", default="tiny", help="coadd_core.sim preset for the ingest files (default tiny)"
    )
    parser.add_argument(
        "--ingest-sim-dir", help="reuse (or write) the simulated survey here instead of the work directory"
    )
    parser.add_argument(
        "--workdir",
        help="directory for databases and temporary files (default: a new temporary one, removed)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.patches, args.visit_detectors = 10_000, 100_000

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown backend(s) {sorted(unknown)}")
    rng = np.random.default_rng(args.seed)

    results: dict[str, Any] = {"environment": environment(), "ours": [], "skipped": []}
    with contextlib.ExitStack() as stack:
        if args.workdir:
            work = Path(args.workdir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-bench-")))
        sky = make_sky(args.patches, args.visit_detectors, rng, args.dithers, args.dither_deg)
        n_q = min(args.queries, len(sky.ccd_visit), len(sky.patch_id))
        n_w = min(args.warmup, len(sky.ccd_visit) - n_q, len(sky.patch_id) - n_q)
        ccd_pick = rng.choice(len(sky.ccd_visit), n_q + n_w, replace=False)
        patch_pick = rng.choice(len(sky.patch_id), n_q + n_w, replace=False)
        queries = Queries(q1=ccd_pick[:n_q], q2=patch_pick[:n_q], w1=ccd_pick[n_q:], w2=patch_pick[n_q:])
        results["config"] = {
            "patches": len(sky.patch_id),
            "tracts": len(sky.tract_ids),
            "visits": len(sky.visit_ids),
            "visit_detectors": len(sky.ccd_visit),
            "queries": n_q,
            "warmup": n_w,
            "peer_queries": min(args.peer_queries, n_q) if args.peer == "auto" else 0,
            "seed": args.seed,
            "dithers": args.dithers,
            "dither_deg": args.dither_deg,
            "chunk": args.chunk,
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        }

        for backend in backends:
            if backend == "sqlite":
                path = work / "registry.sqlite3"
                if path.exists():
                    path.unlink()
                results["ours"].append(run_ours("sqlite", f"sqlite:///{path}", sky, queries, args))
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
            elif not args.postgres_url:
                message = (
                    "postgresql: no URL (set COADD_TEST_POSTGRES_URL with "
                    "`source deploy/test-services.sh`, or --postgres-url)"
                )
                log("skipping " + message)
                results["skipped"].append(message)
            else:
                results["environment"]["postgresql"] = postgres_version(args.postgres_url)
                with postgres_database(args.postgres_url) as url:
                    results["ours"].append(run_ours("postgresql", url, sky, queries, args))

        if args.peer == "auto":
            ours_sqlite = next((r for r in results["ours"] if r["backend"] == "sqlite"), None)
            peer_queries = Queries(
                q1=queries.q1[: args.peer_queries],
                q2=queries.q2[: args.peer_queries],
                w1=queries.w1,
                w2=queries.w2,
            )
            if ours_sqlite is not None:
                ours_sqlite = dict(ours_sqlite)
                a1, a2 = ours_sqlite["_answers"]
                ours_sqlite["_answers"] = (a1[: args.peer_queries], a2[: args.peer_queries])
            peer_dir = work / "peer"
            shutil.rmtree(peer_dir, ignore_errors=True)
            peer_dir.mkdir()
            results["peer"] = run_peer(sky, peer_queries, ours_sqlite, args, peer_dir)
            if not results["peer"].get("ok"):
                log(f"daf_butler: not measured: {results['peer'].get('error')}")
            shutil.rmtree(peer_dir, ignore_errors=True)

        if args.ingest == "auto":
            try:
                results["ingest"] = run_ingest(args, work)
            except Exception as error:  # report, keep the other results
                results["ingest"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            if not results["ingest"].get("ok"):
                log(f"ingest: {results['ingest']['error']}")

    for run in results["ours"]:
        run.pop("_answers", None)
    results["environment"]["load_average_at_end"] = load_average()
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    failed = any(r["verified"]["q1_mismatches"] or r["verified"]["q2_mismatches"] for r in results["ours"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
