"""Calexp benchmark: ISR + characterize of full-size MegaPrime CCDs, as the isr flow runs them.

Inputs are rendered by the simulator (``plan_survey('demo')``): for each detector 3 bias,
3 dark and 3 flat frames combined into masters with coadd_core.calib (the helper of
isr_benchmark.py), and the science frames of the chosen visits; the reference catalog
is ``make_refcat`` as ``simulate`` draws it, written to CSV and read back with
``read_refcat`` (what ``coadd ingest-refcat`` stores). Each CCD goes through what
``flows/isr.py::process_ccd`` does: ``run_isr`` with ``isr_config_for('science', ...)``
and every master, then ``characterize(post_isr, refcat=..., band=...)``.

Measured:

* one CCD in this process: wall and CPU time of ISR, of characterize and of both (best
  and median of ``--repeat`` runs after a warm-up), tracemalloc peak of one call of each;
* peak RSS (``getrusage``) of a fresh worker process that loads one CCD's inputs and
  processes it once;
* a 36-CCD exposure (the first visit's CCDs repeated) on 2 worker processes
  (``ProcessPoolExecutor``, forkserver); each worker loads all inputs from temporary files
  and processes one CCD in its initializer (numba kernels load on first use), so the
  timed part is the pixel work. Wall time against the 120 s target, per-CCD means;
* accuracy per distinct CCD: zero point against the simulator truth, stars used, PSF
  FWHM against the simulated seeing.

Truth: the calexp stays in ADU with a PhotoCalib in nJy per ADU, ``ZERO_POINT`` being the
AB magnitude of 1 ADU. A source of ``counts`` electrons at unit flat reads
``counts * K`` ADU after flat-fielding, where ``K`` is the mean of response / gain over
the master flat's non-BAD pixels (the master is normalised to mean 1 there), so the true
zero point is ``zero_point + 2.5 log10(exposure_time * K)``; the tests' formula with
``K = 1 / gain`` is the unflattened case.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy.io import fits

from isr_benchmark import BUDGET_S, N_CCDS, N_CORES, _masters, _peak_mib, _time
from stack_benchmark import _reset_peak_rss, _status_mib

log = logging.getLogger("calexp_benchmark")

DEFAULT_DETECTORS = ("ccd12", "ccd13", "ccd21", "ccd22")
MASTERS = ("bias", "dark", "flat")
ZP_TARGET = 0.01  # 1 % in the calibration
FWHM_TARGET = 0.03


# -- inputs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CcdTruth:
    """What the simulator put into one science CCD."""

    key: str
    detector: str
    visit: int
    zero_point: float  # AB mag of 1 ADU of the flat-fielded image
    seeing_px: float
    star_adu: dict[int, float]  # refcat id -> true flux (ADU, flat-fielded) of stars on the CCD


def ccd_key(detector: str, visit: int) -> str:
    return f"{detector}-v{visit}"


def _render_raw(plan: Any, exp: Any, det: Any) -> tuple[np.ndarray, fits.Header]:
    """Raw uint16 frame and its extension header, as ``simulate`` writes them."""
    from coadd_core.sim import render_ccd
    from coadd_core.sim.rawfile import extension_header

    obs = plan.config.observing
    raw = render_ccd(plan.ccd_task(exp, det)).raw
    header = extension_header(exp, plan.camera, det, plan.view(exp, det).wcs_cards, len(plan.detectors), obs.run_id, obs.target_name)
    return raw, header


def flat_gain_factor(plan: Any, det: Any, flat_mask: np.ndarray) -> float:
    """``K``: ADU per electron (at unit flat) of the flat-fielded image (module docstring)."""
    from coadd_core.masks import bitmask
    from coadd_core.sim.calibs import response_map

    per_e = response_map(det, plan.config.observing.band, plan.config.effects, plan.seed).astype(np.float64)
    for amp, elec in zip(det.amplifiers, plan.electronics[det.name]):
        per_e[amp.bbox.slices(det.bbox)] /= elec.gain
    good = (flat_mask & np.int32(bitmask("BAD"))) == 0
    return float(per_e[good].mean())


def prepare_detector(detector: str, visits: tuple[int, ...], seed: int | None, workdir: str) -> list[CcdTruth]:
    """Render one detector's calibration and science frames; write masters and raws to files."""
    warnings.simplefilter("ignore")
    from coadd_core.camera import load_camera
    from coadd_core.fits_io import write_exposure
    from coadd_core.sim import plan_survey

    plan = plan_survey("demo", seed)
    det = plan.detector(detector)
    calibs = {kind: [_render_raw(plan, e, det) for e in plan.exposures if e.kind == kind] for kind in MASTERS}
    camera_det = load_camera("MegaPrime").detector_from_header(calibs["bias"][0][1])
    masters = _masters(calibs, camera_det)
    del calibs
    for kind, master in masters.items():
        write_exposure(master, Path(workdir) / f"{detector}_{kind}.fits")
    k_factor = flat_gain_factor(plan, det, masters["flat"].mask)
    ref_ids = set(int(i) for i in plan.catalog["id"][np.asarray(plan.catalog["kind"]) == "star"])
    out = []
    for visit in visits:
        exp = plan.science[visit]
        raw, header = _render_raw(plan, exp, det)
        key = ccd_key(detector, visit)
        np.savez(Path(workdir) / f"{key}_raw.npz", raw=raw, header=np.array(header.tostring()))
        sources = plan.ccd_task(exp, det).sources
        stars = {int(i): float(c) * k_factor for i, c in zip(sources["id"], sources["counts"]) if int(i) in ref_ids}
        out.append(
            CcdTruth(
                key=key,
                detector=detector,
                visit=visit,
                zero_point=exp.zero_point + 2.5 * math.log10(exp.exposure_time * k_factor),
                seeing_px=exp.conditions.seeing_fwhm_arcsec / plan.pixel_scale,
                star_adu=stars,
            )
        )
    log.info("prepared %s (K = %.5f ADU/e-)", detector, k_factor)
    return out


def write_refcat_file(seed: int | None, workdir: str) -> tuple[str, str]:
    """The simulator's refcat (same random stream as ``simulate``) as CSV; returns (path, band)."""
    from coadd_core.sim import plan_survey
    from coadd_core.sim.refcat import make_refcat, write_refcat
    from coadd_core.sim.survey import _TAG_REFCAT

    plan = plan_survey("demo", seed)
    band = plan.config.observing.band
    table = make_refcat(plan.catalog, plan.config.refcat, band, np.random.default_rng([plan.seed, _TAG_REFCAT]))
    return str(write_refcat(table, Path(workdir) / "refcat.csv")), band


# -- the per-CCD work (flows/isr.py::process_ccd without the butler) ------------------------
@dataclass
class CcdInputs:
    raw: np.ndarray
    header: fits.Header
    masters: dict[str, Any]


def load_inputs(workdir: str, key: str) -> CcdInputs:
    from coadd_core.fits_io import read_exposure

    with np.load(Path(workdir) / f"{key}_raw.npz") as data:
        raw, header = data["raw"], fits.Header.fromstring(str(data["header"]))
    detector = key.split("-")[0]
    masters = {kind: read_exposure(Path(workdir) / f"{detector}_{kind}.fits") for kind in MASTERS}
    return CcdInputs(raw, header, masters)


def run_isr_step(inputs: CcdInputs) -> Any:
    from coadd_core.isr import isr_config_for, run_isr

    m = inputs.masters
    config = isr_config_for("science", have_bias=True, have_flat=True, do_dark=True)
    return run_isr(inputs.raw, inputs.header, bias=m["bias"], dark=m["dark"], flat=m["flat"], config=config)


def run_characterize_step(post_isr: Any, refcat: Any, band: str) -> Any:
    from coadd_core.characterize import characterize

    return characterize(post_isr, refcat=refcat, band=band)


# -- worker processes ---------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _quiet() -> None:
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("coadd_core").setLevel(logging.ERROR)


def _init_worker(workdir: str, keys: list[str], refcat_path: str, band: str, warm_up: bool, barrier: Any) -> None:
    """Load every input once; optionally process one CCD so numba kernels are loaded.

    With a ``barrier`` the workers leave their initializers together, so the timed runs
    start on every worker at once.
    """
    _quiet()
    import coadd_core.characterize  # noqa: F401 - imports count as start-up, not as loading
    import coadd_core.isr  # noqa: F401
    from coadd_core.characterize import read_refcat

    start, cpu = time.perf_counter(), time.process_time()
    _STATE["inputs"] = {}
    masters: dict[str, dict[str, Any]] = {}
    for key in keys:
        det = key.split("-")[0]
        if det in masters:  # one set of masters per detector, shared by its CCDs
            with np.load(Path(workdir) / f"{key}_raw.npz") as data:
                _STATE["inputs"][key] = CcdInputs(data["raw"], fits.Header.fromstring(str(data["header"])), masters[det])
        else:
            _STATE["inputs"][key] = load_inputs(workdir, key)
            masters[det] = _STATE["inputs"][key].masters
    _STATE["refcat"] = read_refcat(refcat_path)
    _STATE["band"] = band
    _STATE["load_s"] = (time.perf_counter() - start, time.process_time() - cpu)
    _STATE["rss_loaded_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    _STATE["warm_up_s"] = (0.0, 0.0)
    if warm_up:
        start, cpu = time.perf_counter(), time.process_time()
        run_characterize_step(run_isr_step(_STATE["inputs"][keys[0]]).exposure, _STATE["refcat"], band)
        _STATE["warm_up_s"] = (time.perf_counter() - start, time.process_time() - cpu)
    if barrier is not None:
        barrier.wait()


def _process(key: str) -> dict[str, Any]:
    """One CCD: ISR then characterize, timed; the summary the flow records plus the matches."""
    inputs, refcat = _STATE["inputs"][key], _STATE["refcat"]
    rss_before = _status_mib("VmRSS")
    hwm_reset = _reset_peak_rss()
    t0, c0, start = time.perf_counter(), time.process_time(), time.time()
    isr = run_isr_step(inputs)
    t1, c1 = time.perf_counter(), time.process_time()
    result = run_characterize_step(isr.exposure, refcat, _STATE["band"])
    t2, c2, end = time.perf_counter(), time.process_time(), time.time()
    md = result.calexp.metadata
    out: dict[str, Any] = {
        "key": key,
        "pid": os.getpid(),
        "start": start,
        "end": end,
        "isr_wall": t1 - t0,
        "isr_cpu": c1 - c0,
        "char_wall": t2 - t1,
        "char_cpu": c2 - c1,
        "wall": t2 - t0,
        "cpu": c2 - c0,
        "rss_before_mib": rss_before,
        "rss_peak_mib": _status_mib("VmHWM") if hwm_reset else math.nan,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "rss_loaded_mib": _STATE["rss_loaded_mib"],
        "load_s": _STATE["load_s"],
        "warm_up_s": _STATE["warm_up_s"],
        "calibration_mean": result.calexp.photo_calib.calibration_mean,
        "metadata": {k: md.get(k) for k in (
            "ZERO_POINT", "ZERO_POINT_ERR", "PHOTOCAL_SOURCE", "N_PHOTOCAL_STARS", "N_PHOTOCAL_MATCHED",
            "PSF_FWHM", "PSF_APCORR", "N_PSF_STARS", "N_COSMIC_RAYS", "N_DETECTED",
        )},
    }
    if result.photocal is not None:
        m = result.photocal.matches
        out["matches"] = {
            "ref_id": [int(refcat["id"][i]) for i in m["ref_index"]],
            "psf_flux": [float(v) for v in m["psf_flux"]],
            "used": [bool(v) for v in m["used"]],
        }
    return out


def _context() -> Any:
    """Workers fork from a small server started first thing in :func:`main`.

    ``getrusage`` keeps a process's peak RSS across fork and exec, so a worker forked or
    spawned from this (large) process would report this process's RSS as its own peak.
    """
    return multiprocessing.get_context("forkserver")


def _spawn_pool(workers: int, workdir: str, keys: list[str], refcat_path: str, band: str, warm_up: bool) -> ProcessPoolExecutor:
    """Fresh workers; more than one wait for each other at the end of start-up.

    The pool starts a worker per submitted task until it has ``workers`` of them, so
    callers submit at least ``workers`` tasks at once.
    """
    ctx = _context()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(workdir, keys, refcat_path, band, warm_up, ctx.Barrier(workers) if workers > 1 else None),
    )


# -- measurement --------------------------------------------------------------------------
def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def single_ccd(workdir: str, key: str, refcat_path: str, band: str, repeat: int) -> dict[str, Any]:
    """Best/median wall and best CPU of ISR, characterize and both; tracemalloc peaks."""
    from coadd_core.characterize import read_refcat

    inputs = load_inputs(workdir, key)
    refcat = read_refcat(refcat_path)
    post = run_isr_step(inputs).exposure
    runs: dict[str, Callable[[], Any]] = {
        "ISR (run_isr)": lambda: run_isr_step(inputs),
        "characterize": lambda: run_characterize_step(post, refcat, band),
        "ISR + characterize": lambda: run_characterize_step(run_isr_step(inputs).exposure, refcat, band),
    }
    out = {}
    for name, fn in runs.items():
        best, median, cpu, _ = _time(fn, repeat)
        out[name] = {"best_wall": best, "median_wall": median, "best_cpu": cpu, "peak_mib": _peak_mib(fn)}
        log.info("%s: best %.3f s wall, %.3f s CPU", name, best, cpu)
    return out


def fresh_worker(workdir: str, key: str, refcat_path: str, band: str) -> dict[str, Any]:
    """Peak RSS of a new process that loads one CCD's inputs and processes it once (cold)."""
    with _spawn_pool(1, workdir, [key], refcat_path, band, warm_up=False) as pool:
        return pool.submit(_process, key).result()


def exposure_run(
    workdir: str, keys: list[str], n_ccds: int, extra: list[str], refcat_path: str, band: str, workers: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """``n_ccds`` runs of ``keys`` (cycled) on ``workers`` warmed-up processes, then ``extra``."""
    runs = [keys[i % len(keys)] for i in range(n_ccds)]
    if n_ccds < workers:
        raise ValueError(f"--n-ccds {n_ccds} is less than --workers {workers}")
    submitted = time.time()
    with _spawn_pool(workers, workdir, list(dict.fromkeys(keys + extra)), refcat_path, band, warm_up=True) as pool:
        timed = list(pool.map(_process, runs))
        others = list(pool.map(_process, extra))
    return timed, others, submitted


def accuracy_rows(results: dict[str, dict[str, Any]], truths: dict[str, CcdTruth]) -> list[dict[str, Any]]:
    rows = []
    for key, truth in truths.items():
        r = results[key]
        md = r["metadata"]
        d_zp = md["ZERO_POINT"] - truth.zero_point
        calib_true = 10.0 ** (-0.4 * (truth.zero_point - 31.4))
        ratios = []
        if "matches" in r:
            m = r["matches"]
            ratios = [f / truth.star_adu[i] for i, f, u in zip(m["ref_id"], m["psf_flux"], m["used"]) if u and i in truth.star_adu]
        rows.append(
            {
                "ccd": key,
                "seeing_px": truth.seeing_px,
                "psf_fwhm_px": md["PSF_FWHM"],
                "fwhm_diff_pct": 100.0 * (md["PSF_FWHM"] / truth.seeing_px - 1.0),
                "n_psf_stars": md["N_PSF_STARS"],
                "zp_source": md["PHOTOCAL_SOURCE"],
                "zero_point": md["ZERO_POINT"],
                "zero_point_true": truth.zero_point,
                "zp_diff_mmag": 1000.0 * d_zp,
                "zp_err_mmag": 1000.0 * md["ZERO_POINT_ERR"],
                "calib_diff_pct": 100.0 * (r["calibration_mean"] / calib_true - 1.0),
                "n_zp_stars": md["N_PHOTOCAL_STARS"],
                "n_zp_matched": md["N_PHOTOCAL_MATCHED"],
                "star_flux_ratio": float(np.median(ratios)) if ratios else math.nan,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2]
    )
    parser.add_argument("--detectors", nargs="+", default=list(DEFAULT_DETECTORS), help="demo detectors (default the 4 of the preset)")
    parser.add_argument("--visits", nargs="+", type=int, default=[0, 4, 5], help="science visits for accuracy; the first is the timed exposure (default 0 4 5)")
    parser.add_argument("--n-ccds", type=int, default=N_CCDS, help=f"CCD runs of the timed exposure (default {N_CCDS})")
    parser.add_argument("--workers", type=int, default=N_CORES, help=f"worker processes (default {N_CORES})")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the single-CCD measurements after a warm-up (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="simulation seed (default the preset's)")
    parser.add_argument("--quick", action="store_true", help="ccd13 and ccd22 of visit 0, 12 runs, repeat 1")
    parser.add_argument("--workdir", default=None, help="folder for the temporary inputs (default a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if args.quick:
        args.detectors, args.visits, args.n_ccds, args.repeat = ["ccd13", "ccd22"], [0], 12, 1
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("coadd_core").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    multiprocessing.forkserver.ensure_running()  # while this process is small (see _context)
    load_start = _load()

    with tempfile.TemporaryDirectory(prefix="calexp_bench_", dir=args.workdir) as workdir:
        t0, c0 = time.perf_counter(), time.process_time()
        refcat_path, band = write_refcat_file(args.seed, workdir)
        with ProcessPoolExecutor(min(args.workers, len(args.detectors)), mp_context=_context()) as pool:
            futures = [pool.submit(prepare_detector, d, tuple(args.visits), args.seed, workdir) for d in args.detectors]
            truths = {t.key: t for f in futures for t in f.result()}
        prep_wall = time.perf_counter() - t0
        exposure_keys = [ccd_key(d, args.visits[0]) for d in args.detectors]
        extra = [k for k in truths if k not in exposure_keys]

        single = single_ccd(workdir, exposure_keys[0], refcat_path, band, args.repeat)
        fresh = fresh_worker(workdir, exposure_keys[0], refcat_path, band)
        timed, others, submitted = exposure_run(workdir, exposure_keys, args.n_ccds, extra, refcat_path, band, args.workers)
    load_end = _load()

    wall = max(r["end"] for r in timed) - min(r["start"] for r in timed)
    cold_wall = max(r["end"] for r in timed) - submitted
    cpu_total = sum(r["cpu"] for r in timed)
    scale = N_CCDS / args.n_ccds
    first = {}
    for r in timed + others:
        first.setdefault(r["key"], r)
    rows = accuracy_rows(first, truths)
    worker_stats = {r["pid"]: r for r in timed}

    print(f"Calexp benchmark: demo preset, detectors {' '.join(args.detectors)}, visits {' '.join(map(str, args.visits))}; "
          f"inputs rendered in {prep_wall:.0f} s; {os.cpu_count()} cores; load average (1/5/15 min) {load_start} at start, {load_end} at end")
    print(f"\nOne CCD ({exposure_keys[0]}) in this process, {args.repeat} timed run(s) after a warm-up:")
    print("| step | best wall s | median wall s | best CPU s | tracemalloc peak MiB |")
    print("|---|---|---|---|---|")
    for name, s in single.items():
        print(f"| {name} | {s['best_wall']:.3f} | {s['median_wall']:.3f} | {s['best_cpu']:.3f} | {s['peak_mib']:.0f} |")
    print(f"\nFresh worker process, one CCD (first, cold call: {fresh['wall']:.2f} s wall, {fresh['cpu']:.2f} s CPU):")
    print("| RSS | MiB |")
    print("|---|---|")
    print(f"| after imports and loading the inputs (raw + 3 masters from FITS) | {fresh['rss_before_mib']:.0f} |")
    print(f"| peak during ISR + characterize (VmHWM reset before) | {fresh['rss_peak_mib']:.0f} "
          f"(+{fresh['rss_peak_mib'] - fresh['rss_before_mib']:.0f}) |")
    print(f"| process lifetime peak (getrusage ru_maxrss) | {fresh['rss_mib']:.0f} (after loading: {fresh['rss_loaded_mib']:.0f}) |")
    print(f"\n{args.n_ccds}-CCD exposure on {args.workers} worker processes ({len(exposure_keys)} distinct CCDs repeated), workers warmed up:")
    print("| | value |")
    print("|---|---|")
    print(f"| wall, first start to last end | {wall:.1f} s" + (f" ({wall * scale:.1f} s scaled to {N_CCDS} CCDs)" if scale != 1 else "") + " |")
    print(f"| wall from submission (worker start, imports, loading, warm-up included) | {cold_wall:.1f} s |")
    print(f"| target | {BUDGET_S:.0f} s: {'met' if wall * scale <= BUDGET_S else 'NOT met'} ({100 * wall * scale / BUDGET_S:.0f} % of it) |")
    print(f"| CPU, sum over CCDs | {cpu_total:.1f} s ({cpu_total * scale / args.workers:.1f} s per core for {N_CCDS} CCDs) |")
    for label, w, c in (("ISR", "isr_wall", "isr_cpu"), ("characterize", "char_wall", "char_cpu"), ("ISR + characterize", "wall", "cpu")):
        print(f"| per-CCD mean, {label} | {statistics.mean(r[w] for r in timed):.2f} s wall, {statistics.mean(r[c] for r in timed):.2f} s CPU |")
    for pid, r in sorted(worker_stats.items()):
        n = sum(1 for t in timed if t["pid"] == pid)
        print(f"| worker {pid} | {n} CCDs; inputs loaded in {r['load_s'][0]:.1f} s, warm-up CCD {r['warm_up_s'][0]:.1f} s wall / "
              f"{r['warm_up_s'][1]:.1f} s CPU; RSS {r['rss_before_mib']:.0f} MiB with inputs, "
              f"peak {max(t['rss_peak_mib'] for t in timed if t['pid'] == pid):.0f} MiB |")
    print("\nAccuracy per CCD (ZP: AB mag of 1 ADU; calib.: nJy per ADU against the truth; star flux: median over the "
          "zero-point stars of PSF flux / true flux):")
    print("| CCD | seeing px | PSF FWHM px | FWHM diff | PSF stars | ZP fit | ZP truth | ZP diff mmag | ZP err mmag | calib. diff | ZP stars | star flux / truth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w in rows:
        print(f"| {w['ccd']} | {w['seeing_px']:.3f} | {w['psf_fwhm_px']:.3f} | {w['fwhm_diff_pct']:+.2f} % | {w['n_psf_stars']} | "
              f"{w['zero_point']:.4f} | {w['zero_point_true']:.4f} | {w['zp_diff_mmag']:+.1f} | {w['zp_err_mmag']:.1f} | "
              f"{w['calib_diff_pct']:+.2f} % | {w['n_zp_stars']}/{w['n_zp_matched']} | {w['star_flux_ratio']:.4f} |")
    worst_zp = max(abs(w["calib_diff_pct"]) for w in rows)
    worst_fwhm = max(abs(w["fwhm_diff_pct"]) for w in rows)
    zp_ok, fwhm_ok = worst_zp <= 100 * ZP_TARGET, worst_fwhm <= 100 * FWHM_TARGET
    print(f"\nworst calibration difference {worst_zp:.2f} % (target {100 * ZP_TARGET:.0f} %: {'met' if zp_ok else 'NOT met'}); "
          f"worst FWHM difference {worst_fwhm:.2f} % (target {100 * FWHM_TARGET:.0f} %: {'met' if fwhm_ok else 'NOT met'})")
    if args.json:
        payload = {
            "args": vars(args), "load_average": {"start": load_start, "end": load_end}, "single_ccd": single,
            "fresh_worker": {k: fresh[k] for k in ("rss_before_mib", "rss_peak_mib", "rss_loaded_mib", "rss_mib", "wall", "cpu")},
            "exposure": {"wall": wall, "cold_wall": cold_wall, "cpu_total": cpu_total, "runs": [{k: v for k, v in r.items() if k != "matches"} for r in timed]},
            "accuracy": rows,
        }
        Path(args.json).write_text(json.dumps(payload, indent=1, default=float))
    return 0 if zp_ok and fwhm_ok else 1


if __name__ == "__main__":
    sys.exit(main())
