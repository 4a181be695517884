"""Warp task granularity: one task per visit x patch, or one task per visit with all its patches.

The warp flow (``flows/warp.py``) runs one task per visit that reads the visit's calexps
once and writes a direct and a PSF-matched warp for every patch they touch.  The
alternative is one task per visit x patch, each reading the calexps that overlap its
patch: more, smaller tasks (better balance over the workers) for more reads (a calexp
touching k patches is read k times).  This benchmark times both on the same work.

Inputs, made in-process and written through the datastore as the ISR stage writes
calexps: the demo simulation's geometry (the MegaPrime CCDs ccd12, ccd13, ccd21 and
ccd22, full size 2048 x 4612, placed by the camera model at the demo pointing, visits
dithered by 60" and one rotated by 45 deg), each calexp with ~300 Moffat stars (beta
3.5, seeing 0.6-1.2"), white noise, an EDGE border, a 41 px pixelised PSF model and a
calibration.  Patches: the ``rings`` sky map's, found per calexp from its sky polygon.

Both layouts call the flow's own task body (``flows.warp.warp_visit.fn``: datastore
reads, ``make_direct_warp``, ``make_psf_matched_warp``, crop, datastore writes) in a
pool of ``--workers`` processes (default 2), so they make the same files:

* ``visit-patch``: one task per (visit, patch) with the calexps overlapping that patch;
* ``visit``: one task per visit with all its calexps and patches (the flow today).

Workers are started and warmed up (imports, numba caches) before timing, and the
calexp files are read once beforehand so both layouts start from the same page cache.
The layouts alternate over ``--repeat`` rounds; each round's outputs are deleted after
it.  Reported: best and median wall time, the summed CPU time of the tasks (all their
threads), the number of calexp reads, the load average before and after, and an
idle-machine estimate that does not depend on other work: the finish time of the tasks
handed in order to the first free worker, each worker on a core of its own and each
task lasting its measured CPU time (exact with ``--numba-threads 1``).

    .venv/bin/python benchmarks/warp_granularity_benchmark.py
    .venv/bin/python benchmarks/warp_granularity_benchmark.py --visits 8 --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coadd_core.camera import load_camera  # noqa: E402
from coadd_core.exposure import Exposure  # noqa: E402
from coadd_core.geom import Box  # noqa: E402
from coadd_core.image import MaskedImage  # noqa: E402
from coadd_core.masks import bitmask  # noqa: E402
from coadd_core.photocalib import PhotoCalib  # noqa: E402
from coadd_core.psf import ImagePsf, MoffatPsf  # noqa: E402
from coadd_core.sim.geometry import DetectorOnSky, offset_by  # noqa: E402
from coadd_core.skymap import make_skymap  # noqa: E402
from coadd_core.visit_info import VisitInfo  # noqa: E402
from coadd_core.wcs_utils import shifted  # noqa: E402
from registry.dataset_types import STANDARD_DATASET_TYPES  # noqa: E402
from registry.refs import DatasetRef  # noqa: E402
from registry.worker import WorkerButler  # noqa: E402

INSTRUMENT = "MegaPrime"
SKYMAP = "rings"
DETECTORS = ("ccd12", "ccd13", "ccd21", "ccd22")  # the demo simulation's CCDs
POINTING = (150.1, 2.2)  # the demo's field centre (deg)
PIXEL_SCALE = 0.185  # arcsec, the camera's
DITHER_ARCSEC = 60.0
ROTATED_VISIT = 3  # rotated by 45 deg, as in the demo
CALEXP_RUN = "bench/calexp"
TYPES = {t.name: t for t in STANDARD_DATASET_TYPES}


@dataclass
class Unit:
    """One task: a visit, the calexps it reads and the patches it warps onto."""

    visit: int
    refs: list[DatasetRef]
    patches: list[tuple[int, int]]


@dataclass
class Run:
    layout: str
    round: int
    wall: float
    cpu: float
    tasks: int
    calexp_reads: int
    outputs: int
    task_wall_max: float
    load_before: float
    load_after: float
    makespan_from_cpu: float  # wall if each worker had a core of its own (task wall = its CPU, FIFO order)
    task_cpu: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


# -- inputs ----------------------------------------------------------------------------------


def _calexp(detector_name: str, visit: int, ra: float, dec: float, rotation: float, fwhm_px: float,
            rng: np.random.Generator) -> Exposure:
    """A full-size calexp of one CCD: Moffat stars, white noise, EDGE border, pixelised PSF."""
    det = load_camera()[detector_name]
    on_sky = DetectorOnSky.create(det, ra, dec, rotation, PIXEL_SCALE)
    amp = det.amplifiers[0]
    wcs = shifted(on_sky.wcs(), amp.raw_x_offset, amp.raw_y_offset)  # raw frame -> assembled pixels
    shape = det.bbox.shape
    image = rng.normal(0.0, 10.0, size=shape)
    frame = Box.from_shape(shape)
    stars = MoffatPsf(fwhm_px, beta=3.5, size=61)
    for x, y, flux in zip(rng.uniform(20, shape[1] - 20, 300), rng.uniform(20, shape[0] - 20, 300),
                          10 ** rng.uniform(3.0, 5.5, 300)):
        stamp = stars.compute_image(x, y)
        box = stamp.bbox.intersection(frame)
        image[box.slices(frame)] += flux * stamp.array[box.slices(stamp.bbox)]
    mask = np.zeros(shape, dtype=np.int32)
    edge = bitmask("EDGE")
    mask[:8, :] |= edge
    mask[-8:, :] |= edge
    mask[:, :8] |= edge
    mask[:, -8:] |= edge
    mi = MaskedImage(image.astype(np.float32), mask, np.full(shape, 100.0, np.float32))
    return Exposure(
        mi,
        wcs=wcs,
        psf=ImagePsf(MoffatPsf(fwhm_px, beta=3.5, size=41).kernel_image()),
        photo_calib=PhotoCalib(2.0),
        visit_info=VisitInfo(visit_id=visit, detector=det.id, band="r", physical_filter="r.MP9602"),
    )


def make_calexps(worker: WorkerButler, n_visits: int, seed: int) -> dict[int, list[DatasetRef]]:
    """Write the calexps of ``n_visits`` visits; their refs per visit."""
    rng = np.random.default_rng(seed)
    refs: dict[int, list[DatasetRef]] = {}
    for v in range(n_visits):
        visit = 1000 + v
        ra, dec = offset_by(POINTING[0], POINTING[1], 90.0 * v + 30.0, DITHER_ARCSEC / 3600.0 if v else 0.0)
        rotation = 45.0 if v == ROTATED_VISIT else 0.0
        fwhm_px = rng.uniform(0.6, 1.2) / PIXEL_SCALE
        refs[visit] = []
        for name in DETECTORS:
            exp = _calexp(name, visit, float(ra), float(dec), rotation, fwhm_px, rng)
            data_id = {"instrument": INSTRUMENT, "visit": visit, "detector": exp.visit_info.detector}
            refs[visit].append(worker.write(exp, TYPES["calexp"], data_id, CALEXP_RUN))
        print(f"  visit {visit}: {len(DETECTORS)} calexps, seeing {fwhm_px * PIXEL_SCALE:.2f}\"", flush=True)
    return refs


def _read_manifest(path: Path) -> dict[int, list[DatasetRef]] | None:
    if not path.exists():
        return None
    out: dict[int, list[DatasetRef]] = {}
    for row in json.loads(path.read_text()):
        ref = DatasetRef.new(TYPES["calexp"], row["data_id"], CALEXP_RUN).with_file(row["uri"], row["size"], row["checksum"])
        out.setdefault(int(row["data_id"]["visit"]), []).append(ref)
    return out


def _write_manifest(path: Path, refs: dict[int, list[DatasetRef]]) -> None:
    rows = [{"data_id": dict(r.data_id), "uri": r.uri, "size": r.size, "checksum": r.checksum} for rs in refs.values() for r in rs]
    path.write_text(json.dumps(rows))


def plan_units(worker: WorkerButler, refs: dict[int, list[DatasetRef]], sky: Any) -> tuple[list[Unit], list[Unit]]:
    """The two layouts of the same work: per (visit, patch) and per visit."""
    from coadd_core.fits_io import read_exposure_info

    per_patch: list[Unit] = []
    per_visit: list[Unit] = []
    for visit, visit_refs in sorted(refs.items()):
        overlapping: dict[tuple[int, int], list[DatasetRef]] = {}
        for ref in visit_refs:
            info = read_exposure_info(worker.datastore.local_path_or_url(ref.uri))
            for tract, patches in sky.find_overlapping((info.bbox, info.wcs)):
                for patch in patches:
                    overlapping.setdefault((tract.id, patch.sequential_index), []).append(ref)
        per_visit.append(Unit(visit, list(visit_refs), sorted(overlapping)))
        per_patch += [Unit(visit, r, [key]) for key, r in sorted(overlapping.items())]
    return per_patch, per_visit


# -- workers ---------------------------------------------------------------------------------


def _warm(numba_threads: int | None) -> None:
    """Imports and numba kernels loaded before timing (a small direct + PSF-matched warp)."""
    import numba

    if numba_threads:
        numba.set_num_threads(numba_threads)
    import flows.warp  # noqa: F401  (imports Prefect, as a flow worker does)
    from coadd_core.warp import make_direct_warp, make_psf_matched_warp

    exp = _calexp("ccd12", 1, POINTING[0], POINTING[1], 0.0, 5.0, np.random.default_rng(0))
    small = exp.subset(Box(900, 2200, 1199, 2499))
    ra, dec = small.wcs.all_pix2world([1050.0], [2350.0], 0)  # parent pixels
    tract = make_skymap(SKYMAP).find_tract((float(ra[0]), float(dec[0])))
    patch = tract.find_patch((float(ra[0]), float(dec[0])))
    direct = make_direct_warp([small], patch.outer_bbox, tract.wcs, visit=1)
    make_psf_matched_warp(direct, patch_outer_bbox=patch.outer_bbox)


def _started(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _task(worker: WorkerButler, unit: Unit, sky: Any, run: str) -> dict[str, Any]:
    """The flow's warp task body on one unit, with its CPU and wall time."""
    from flows.warp import warp_visit

    types = {name: TYPES[name] for name in ("deepCoadd_directWarp", "deepCoadd_psfMatchedWarp")}
    c0, t0 = time.process_time(), time.perf_counter()
    outcome = warp_visit.fn(worker, unit.visit, INSTRUMENT, unit.refs, unit.patches, SKYMAP, sky, types, run, False)
    return {
        "cpu": time.process_time() - c0,
        "wall": time.perf_counter() - t0,
        "error": outcome.error,
        "outputs": [(r.dataset_type, tuple(sorted(r.data_id.items())), r.size) for r in outcome.refs],
    }


def fifo_makespan(durations: list[float], workers: int) -> float:
    """Finish time of tasks handed in order to the first free of ``workers`` (as the pool does)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def time_layout(pool: ProcessPoolExecutor, workers: int, worker: WorkerButler, units: list[Unit], sky: Any,
                layout: str, rnd: int) -> tuple[Run, list[tuple[Any, ...]]]:
    """Run one layout's tasks on the pool; its timings and the (type, data ID, size) of what it wrote."""
    run = f"bench/{layout.replace('-', '_')}_{rnd}"
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    results = [f.result() for f in [pool.submit(_task, worker, u, sky, run) for u in units]]
    wall = time.perf_counter() - t0
    outputs = sorted(o for r in results for o in r["outputs"])
    shutil.rmtree(Path(worker.datastore_url) / run, ignore_errors=True)
    cpus = [r["cpu"] for r in results]
    return Run(
        layout, rnd, wall, sum(cpus), len(units), sum(len(u.refs) for u in units),
        len(outputs), max(r["wall"] for r in results), load_before, os.getloadavg()[0],
        fifo_makespan(cpus, workers), cpus, [r["error"] for r in results if r["error"]],
    ), outputs


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=4, help="visits of 4 full-size CCDs each (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds, each timing both layouts (default 2)")
    parser.add_argument("--numba-threads", type=int, default=None,
                        help="numba threads per worker (default: numba's, as the flow's workers)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the calexps here and reuse them on the next run (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the inputs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.visits < 1 or args.workers < 1 or args.repeat < 1:
        parser.error("--visits, --workers and --repeat must be positive")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="warp_granularity_")
        root = Path(tmp.name)
    else:
        root = args.workdir.resolve()
        root.mkdir(parents=True, exist_ok=True)
    try:
        worker = WorkerButler(str(root / "datastore"))
        manifest = root / f"calexps_{args.visits}_{args.seed}.json"
        refs = _read_manifest(manifest)
        if refs is None:
            print(f"writing {args.visits} visits x {len(DETECTORS)} full-size calexps under {root} ...", flush=True)
            refs = make_calexps(worker, args.visits, args.seed)
            _write_manifest(manifest, refs)
        sky = make_skymap(SKYMAP)
        per_patch, per_visit = plan_units(worker, refs, sky)
        n_pairs = sum(len(u.patches) for u in per_visit)
        print(f"work: {args.visits} visits, {sum(len(r) for r in refs.values())} calexps, {n_pairs} visit x patch pairs "
              f"(patches per calexp {sum(len(u.refs) for u in per_patch) / sum(len(r) for r in refs.values()):.2f})")
        # the same page cache for both layouts: every calexp read once before timing
        for rs in refs.values():
            for r in rs:
                with open(worker.datastore.local_path_or_url(r.uri), "rb") as fh:
                    while fh.read(1 << 24):
                        pass
        layouts = {"visit-patch": per_patch, "visit": per_visit}
        runs: list[Run] = []
        produced: dict[str, list[tuple[Any, ...]]] = {}
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_warm, initargs=(args.numba_threads,)) as pool:
            pids = {f.result() for f in [pool.submit(_started, 2.0) for _ in range(args.workers)]}
            print(f"{len(pids)} warm worker processes; cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
            for rnd in range(args.repeat):
                order = list(layouts) if rnd % 2 == 0 else list(reversed(layouts))
                for layout in order:
                    result, outputs = time_layout(pool, args.workers, worker, layouts[layout], sky, layout, rnd)
                    produced.setdefault(layout, outputs)
                    runs.append(result)
                    print(f"  round {rnd} {layout:>11}: wall {result.wall:7.2f} s, task CPU {result.cpu:7.2f} s, "
                          f"idle-core estimate {result.makespan_from_cpu:7.2f} s, "
                          f"{result.tasks} tasks, {result.calexp_reads} calexp reads, {result.outputs} files, "
                          f"load {result.load_before:.2f} -> {result.load_after:.2f}"
                          + (f", FAILED {result.failed}" if result.failed else ""), flush=True)
        same = produced["visit-patch"] == produced["visit"]
        summary: dict[str, dict[str, float]] = {}
        for layout in layouts:
            mine = [r for r in runs if r.layout == layout]
            summary[layout] = {
                "wall_best": min(r.wall for r in mine),
                "wall_median": statistics.median(r.wall for r in mine),
                "cpu_best_run": min(mine, key=lambda r: r.wall).cpu,
                "cpu_median": statistics.median(r.cpu for r in mine),
                "makespan_from_cpu_median": statistics.median(r.makespan_from_cpu for r in mine),
                "tasks": mine[0].tasks,
                "calexp_reads": mine[0].calexp_reads,
            }
        a, b = summary["visit-patch"], summary["visit"]
        print()
        print(f"{'layout':<28} {'tasks':>5} {'reads':>5} {'wall best':>10} {'wall median':>12} {'CPU median':>11} "
              f"{'idle-core est.':>15}")
        for name, label in (("visit-patch", "one task per visit x patch"), ("visit", "one task per visit")):
            s = summary[name]
            print(f"{label:<28} {s['tasks']:>5} {s['calexp_reads']:>5} {s['wall_best']:>9.2f}s "
                  f"{s['wall_median']:>11.2f}s {s['cpu_median']:>10.2f}s {s['makespan_from_cpu_median']:>14.2f}s")
        print(f"ratio visit x patch / visit: wall {a['wall_best'] / b['wall_best']:.2f} (best), "
              f"{a['wall_median'] / b['wall_median']:.2f} (median); CPU {a['cpu_median'] / b['cpu_median']:.2f}; "
              f"idle-core estimate {a['makespan_from_cpu_median'] / b['makespan_from_cpu_median']:.2f}")
        print(f"same output files (data IDs and sizes) in both layouts: {same}")
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "runs": [asdict(r) for r in runs], "same_outputs": same,
                                             "visits": args.visits, "workers": args.workers,
                                             "numba_threads": args.numba_threads}, indent=2))
        return 0 if same and not any(r.failed for r in runs) else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
