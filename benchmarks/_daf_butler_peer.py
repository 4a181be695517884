"""Peer side of ``registry_benchmark.py``: the same spatial queries on ``lsst-daf-butler``.

Runs in its own virtualenv (``benchmarks/requirements-peer.txt``), started as a
subprocess by ``registry_benchmark.py``; it imports nothing from this repository. It
reads the regions the benchmark registered in its own registry (an ``.npz`` of
vertices, see :func:`polygons`), creates a fresh daf_butler repository with the default
dimension universe on SQLite, inserts instrument / detector / exposure / visit /
visit_detector_region and skymap / tract / patch records with the same regions, times
the two overlap queries for the same data IDs and writes a JSON report (timings and
every answer, for comparison with ours).

    .peer-venv/bin/python benchmarks/_daf_butler_peer.py --data regions.npz --repo DIR --out peer.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def log(message: str) -> None:
    print(f"[daf_butler {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def polygons(data: Any, name: str, start: int = 0, stop: int | None = None) -> Iterator[Any]:
    """ConvexPolygons ``start:stop`` of ``name``: vertices ``<name>_vertices`` (K, 3) with
    ``<name>_offsets`` (n + 1) marking where each polygon's vertices begin and end."""
    import lsst.sphgeom as sphgeom

    vertices = data[f"{name}_vertices"]
    offsets = data[f"{name}_offsets"]
    stop = len(offsets) - 1 if stop is None else stop
    for i in range(start, stop):
        corners = vertices[offsets[i] : offsets[i + 1]]
        yield sphgeom.ConvexPolygon([sphgeom.UnitVector3d(*map(float, v)) for v in corners])


def insert_chunked(registry: Any, element: str, rows: Iterator[dict[str, Any]], chunk: int) -> int:
    batch: list[dict[str, Any]] = []
    count = 0
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            registry.insertDimensionData(element, *batch)
            count += len(batch)
            batch = []
    if batch:
        registry.insertDimensionData(element, *batch)
        count += len(batch)
    return count


def register(butler: Any, data: Any, meta: dict[str, Any], chunk: int) -> dict[str, float]:
    registry = butler.registry
    instrument = meta["instrument"]
    skymap = meta["skymap"]
    n_detectors = int(meta["detectors"])
    day_obs = int(meta["day_obs"])
    physical_filter, band = meta["physical_filter"], meta["band"]
    times: dict[str, float] = {}

    registry.insertDimensionData(
        "instrument",
        {
            "name": instrument,
            "detector_max": n_detectors,
            "visit_max": 2**31 - 1,
            "exposure_max": 2**31 - 1,
            "visit_system": 0,
        },
    )
    registry.insertDimensionData(
        "physical_filter", {"instrument": instrument, "name": physical_filter, "band": band}
    )
    registry.insertDimensionData(
        "detector",
        *({"instrument": instrument, "id": d, "full_name": f"ccd{d:02d}"} for d in range(n_detectors)),
    )
    registry.insertDimensionData("day_obs", {"instrument": instrument, "id": day_obs})
    registry.insertDimensionData(
        "skymap",
        {
            "name": skymap,
            "hash": bytes.fromhex(meta["skymap_hash"]),
            "tract_max": int(meta["tract_max"]),
            "patch_nx_max": int(meta["patch_nx_max"]),
            "patch_ny_max": int(meta["patch_ny_max"]),
        },
    )

    start = time.perf_counter()
    tract_ids = data["tract_id"]
    insert_chunked(
        registry,
        "tract",
        ({"skymap": skymap, "id": int(t), "region": r} for t, r in zip(tract_ids, polygons(data, "tract"))),
        chunk,
    )
    patch_tract, patch_id, patch_cell = data["patch_tract"], data["patch_id"], data["patch_cell"]
    n_patches = len(patch_id)
    log(f"registering {len(tract_ids)} tracts + {n_patches} patches")
    insert_chunked(
        registry,
        "patch",
        (
            {
                "skymap": skymap,
                "tract": int(patch_tract[i]),
                "id": int(patch_id[i]),
                "cell_x": int(patch_cell[i, 0]),
                "cell_y": int(patch_cell[i, 1]),
                "region": region,
            }
            for i, region in enumerate(polygons(data, "patch"))
        ),
        chunk,
    )
    times["patches"] = time.perf_counter() - start
    log(f"  {times['patches']:.1f} s")

    visit_ids = data["visit_id"]
    log(f"registering {len(visit_ids)} exposures + visits")
    start = time.perf_counter()
    registry.insertDimensionData(
        "group", *({"instrument": instrument, "name": f"g{int(v)}"} for v in visit_ids)
    )
    insert_chunked(
        registry,
        "exposure",
        (
            {
                "instrument": instrument,
                "id": int(v),
                "day_obs": day_obs,
                "group": f"g{int(v)}",
                "physical_filter": physical_filter,
                "obs_id": f"{int(v)}p",
                "observation_type": "science",
            }
            for v in visit_ids
        ),
        chunk,
    )
    insert_chunked(
        registry,
        "visit",
        (
            {
                "instrument": instrument,
                "id": int(v),
                "day_obs": day_obs,
                "physical_filter": physical_filter,
                "name": f"{int(v)}",
                "region": region,
            }
            for v, region in zip(visit_ids, polygons(data, "visit"))
        ),
        chunk,
    )
    insert_chunked(
        registry,
        "visit_definition",
        ({"instrument": instrument, "exposure": int(v), "visit": int(v)} for v in visit_ids),
        chunk,
    )
    times["visits"] = time.perf_counter() - start
    log(f"  {times['visits']:.1f} s")

    ccd_visit, ccd_detector = data["ccd_visit"], data["ccd_detector"]
    n_ccds = len(ccd_visit)
    log(f"registering {n_ccds} visit-detector regions (chunks of {chunk})")
    start = time.perf_counter()
    done = 0
    step = max(chunk, 50_000)
    while done < n_ccds:
        stop = min(n_ccds, done + step)
        insert_chunked(
            registry,
            "visit_detector_region",
            (
                {
                    "instrument": instrument,
                    "visit": int(ccd_visit[i]),
                    "detector": int(ccd_detector[i]),
                    "region": region,
                }
                for i, region in zip(range(done, stop), polygons(data, "ccd", done, stop))
            ),
            chunk,
        )
        done = stop
        elapsed = time.perf_counter() - start
        log(f"  {done}/{n_ccds} visit-detectors, {elapsed:.0f} s ({done / elapsed:.0f}/s)")
    times["visit_detectors"] = time.perf_counter() - start
    return times


def timed_queries(
    calls: list[Any], budget_s: float, minimum: int
) -> tuple[list[float], list[Any], list[float]]:
    """Wall-clock seconds, answers and process CPU seconds of each call; stops after
    ``budget_s`` seconds once ``minimum`` calls are done."""
    durations, answers, cpu = [], [], []
    begin = time.perf_counter()
    for call in calls:
        if len(durations) >= minimum and time.perf_counter() - begin > budget_s:
            log(f"  time budget of {budget_s:g} s reached after {len(durations)} queries")
            break
        start, start_cpu = time.perf_counter(), time.process_time()
        answers.append(call())
        durations.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return durations, answers, cpu


def run(args: argparse.Namespace) -> dict[str, Any]:
    import lsst.daf.butler
    import lsst.sphgeom
    import sqlalchemy
    from lsst.daf.butler import Butler

    with np.load(args.data) as npz:  # read every array once (NpzFile reads on each access)
        data = {key: npz[key] for key in npz.files}
    meta = json.loads(str(data["meta"]))
    instrument, skymap = meta["instrument"], meta["skymap"]
    report: dict[str, Any] = {
        "ok": False,
        "versions": {
            "lsst-daf-butler": lsst.daf.butler.__version__,
            "lsst-sphgeom": getattr(lsst.sphgeom, "__version__", "?"),
            "sqlalchemy": sqlalchemy.__version__,
            "python": platform.python_version(),
        },
        "api": args.api,
    }
    repo = Path(args.repo)
    log(f"creating repository {repo} (default dimension universe, SQLite)")
    Butler.makeRepo(str(repo))
    butler = Butler.from_config(str(repo), writeable=True)
    universe = butler.dimensions
    report["universe"] = (
        f"{universe.namespace} {universe.version}, common skypix {universe.commonSkyPix.name}"
    )
    report["register_s"] = register(butler, data, meta, args.chunk)

    q1_visit, q1_detector = data["q1_visit"], data["q1_detector"]
    q2_tract, q2_patch = data["q2_tract"], data["q2_patch"]
    registry = butler.registry

    def patches_of(visit: int, detector: int) -> list[list[int]]:
        data_id = {"instrument": instrument, "visit": visit, "detector": detector}
        if args.api == "query":
            with butler.query() as query:
                rows = list(query.data_ids(["patch"]).where(data_id, skymap=skymap))
        else:
            rows = list(registry.queryDataIds(["patch"], dataId=data_id, skymap=skymap))
        return sorted([int(r["tract"]), int(r["patch"])] for r in rows)

    def ccds_of(tract: int, patch: int) -> list[list[int]]:
        data_id = {"skymap": skymap, "tract": tract, "patch": patch}
        if args.api == "query":
            with butler.query() as query:
                rows = list(query.data_ids(["visit", "detector"]).where(data_id, instrument=instrument))
        else:
            rows = list(registry.queryDataIds(["visit", "detector"], dataId=data_id, instrument=instrument))
        return sorted([int(r["visit"]), int(r["detector"])] for r in rows)

    q1 = [lambda v=int(v), d=int(d): patches_of(v, d) for v, d in zip(q1_visit, q1_detector)]
    q2 = [lambda t=int(t), p=int(p): ccds_of(t, p) for t, p in zip(q2_tract, q2_patch)]
    warm = int(meta.get("warmup", 0))  # the first `warm` data IDs of each kind are not timed
    log(f"warming up with {warm} queries of each kind")
    for call in q1[:warm] + q2[:warm]:
        call()
    q1, q2 = q1[warm:], q2[warm:]
    log(f"timing {len(q1)} patch queries (api={args.api})")
    report["q1_s"], report["q1_answers"], report["q1_cpu_s"] = timed_queries(
        q1, args.budget, args.min_queries
    )
    log(f"  median {1e3 * float(np.median(report['q1_s'])):.1f} ms")
    log(f"timing {len(q2)} visit-detector queries (api={args.api})")
    report["q2_s"], report["q2_answers"], report["q2_cpu_s"] = timed_queries(
        q2, args.budget, args.min_queries
    )
    log(f"  median {1e3 * float(np.median(report['q2_s'])):.1f} ms")
    report["ok"] = True
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help=".npz of regions and query data IDs")
    parser.add_argument("--repo", required=True, help="directory of the new daf_butler repository")
    parser.add_argument("--out", required=True, help="JSON report to write")
    parser.add_argument(
        "--api",
        choices=("registry", "query"),
        default="registry",
        help="registry.queryDataIds (default) or the butler.query() interface",
    )
    parser.add_argument("--chunk", type=int, default=10_000, help="records per insertDimensionData call")
    parser.add_argument(
        "--budget",
        type=float,
        default=float("inf"),
        help="seconds of timed queries of each kind, after --min-queries (default: no limit)",
    )
    parser.add_argument(
        "--min-queries", type=int, default=50, help="queries timed whatever the budget (default 50)"
    )
    args = parser.parse_args()
    try:
        report = run(args)
    except Exception as error:  # reported to the benchmark, which prints it
        report = {
            "ok": False,
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
        log(report["traceback"])
    Path(args.out).write_text(json.dumps(report))
    sys.exit(0 if report.get("ok") else 1)


if __name__ == "__main__":
    main()
