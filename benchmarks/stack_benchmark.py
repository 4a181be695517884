"""Stacking throughput and coadd-assembly memory.

1. One cube of ``--epochs`` x ``--size`` x ``--size`` float32 images (with int32 masks,
   float32 variances and per-epoch weights) is combined by

   * ``coadd_core.stats.stack`` MEANCLIP (weighted, masked, the LSST definition:
     median/IQR first pass, then mean +- k sigma on the full good set),
   * ``astropy.stats.sigma_clip`` (axis 0, masked input) followed by a weighted mean,
   * ``ccdproc.Combiner`` ``sigma_clipping`` + ``average_combine`` (weights set),
   * a plain numpy weighted mean (no masks, no clipping),

   reporting million pixel-epochs per second (epochs x pixels / wall time, best of
   ``--repeat``) and our speed-up over each.

2. Peak memory of assembling one patch from ``--memory-warps`` on-disk warps (written
   with ``coadd_core.fits_io.write_exposure`` to a temporary directory; sections read
   per sub-region), each case in a fresh process: peak resident memory above the
   process's baseline, and wall time.

Run: ``.venv/bin/python benchmarks/stack_benchmark.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coadd_core.masks import bitmask  # noqa: E402
from coadd_core.stats import StatsConfig, stack  # noqa: E402

logger = logging.getLogger("stack_benchmark")

BAD = bitmask("BAD")
SAT = bitmask("SAT")


def make_cube(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noise around a sky level, 1 % cosmic-ray-like outliers, 2 % masked pixels."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size), np.float32)
    masks = np.zeros((n, size, size), np.int32)
    variances = np.empty((n, size, size), np.float32)
    for i in range(n):
        sigma = rng.uniform(8.0, 12.0)
        images[i] = rng.standard_normal((size, size), dtype=np.float32) * np.float32(sigma) + np.float32(100.0)
        hits = rng.random((size, size)) < 0.01
        images[i][hits] += rng.uniform(50, 2000, hits.sum()).astype(np.float32)
        masks[i][rng.random((size, size)) < 0.02] = BAD
        variances[i] = np.float32(sigma * sigma)
    weights = 1.0 / variances[:, 0, 0].astype(np.float64)
    return images, masks, variances, weights


def best_time(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and the process CPU time (all threads) of that run."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        gc.collect()
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu)
    return best


def run_ours(images, masks, variances, weights, k, n_iter):
    cfg = StatsConfig(statistic="MEANCLIP", num_sigma_clip=k, num_iter=n_iter, and_mask=BAD | SAT,
                      mask_propagation_thresholds={"SAT": 0.1})
    out = stack(images, masks, variances, weights, cfg, clipped_bit=bitmask("CLIPPED"), no_good_bit=bitmask("NO_DATA"))

    def fn():
        stack(images, masks, variances, weights, cfg, clipped_bit=bitmask("CLIPPED"),
              no_good_bit=bitmask("NO_DATA"), out=out)

    return fn


def run_astropy(images, masks, weights, k, n_iter):
    from astropy.stats import sigma_clip

    w = weights[:, None, None]

    def fn():
        # masked inputs as NaN: astropy's fast (nan-function) path
        data = np.where((masks & (BAD | SAT)) != 0, np.float32(np.nan), images)
        clipped = sigma_clip(data, sigma=k, maxiters=n_iter, axis=0, cenfunc="median", stdfunc="std",
                             masked=False, copy=False)
        good = np.isfinite(clipped)
        return np.nansum(clipped * w, axis=0) / np.sum(good * w, axis=0)

    return fn


def run_ccdproc(images, masks, weights, k, n_iter):
    import astropy.units as u
    from ccdproc import CCDData, Combiner

    ccds = [CCDData(images[i], mask=(masks[i] & (BAD | SAT)) != 0, unit=u.adu) for i in range(len(images))]

    def fn():
        comb = Combiner(ccds)
        comb.weights = weights
        comb.sigma_clipping(low_thresh=k, high_thresh=k, func=np.ma.median)
        return comb.average_combine()

    return fn


def run_numpy(images, weights):
    w = weights.astype(np.float32)[:, None, None]
    total = np.float32(weights.sum())

    def fn():
        return np.einsum("i,ijk->jk", w[:, 0, 0], images) / total

    return fn


# --------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _memory_case(paths: list[str], subregion: tuple[int, int], budget: int, queue) -> None:
    from coadd_core.assemble import AssembleCoaddConfig, WarpHandle, assemble, compute_weights
    from coadd_core.geom import Box

    handles = [WarpHandle.from_file(p, mean_variance=100.0) for p in paths]
    cfg = AssembleCoaddConfig(subregion_size=subregion, max_stack_bytes=budget)
    weights = compute_weights(handles, cfg)
    patch = handles[0].bbox
    # compile the kernels on a tiny stack so compilation is not counted
    assemble(weights[:2], Box(patch.x0, patch.y0, patch.x0 + 15, patch.y0 + 15), None, cfg)
    gc.collect()
    base = _status_mib("VmRSS")
    reset = _reset_peak_rss()
    t0 = time.perf_counter()
    assemble(weights, patch, None, cfg)
    elapsed = time.perf_counter() - t0
    peak = _status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put((base, peak, elapsed))


def memory_benchmark(n_list: list[int], size: int, subregion: tuple[int, int], budget: int) -> list[tuple]:
    from coadd_core.exposure import Exposure
    from coadd_core.fits_io import write_exposure
    from coadd_core.image import MaskedImage
    from coadd_core.photocalib import PhotoCalib
    from coadd_core.psf import GaussianPsf
    from coadd_core.visit_info import VisitInfo

    rng = np.random.default_rng(5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stackbench") as tmp:
        paths = []
        t0 = time.perf_counter()
        for i in range(max(n_list)):
            img = rng.standard_normal((size, size), dtype=np.float32) * np.float32(10.0)
            exp = Exposure(MaskedImage(img, None, np.full((size, size), 100.0, np.float32)),
                           psf=GaussianPsf(1.7 + 0.01 * i), photo_calib=PhotoCalib(1.0),
                           visit_info=VisitInfo(visit_id=i, band="r"))
            path = os.path.join(tmp, f"warp_{i:03d}.fits")
            write_exposure(exp, path)
            paths.append(path)
        logger.info("wrote %d warps of %dx%d in %.1fs", len(paths), size, size, time.perf_counter() - t0)
        ctx = mp.get_context("spawn")
        for n in n_list:
            queue = ctx.Queue()
            proc = ctx.Process(target=_memory_case, args=(paths[:n], subregion, budget, queue))
            proc.start()
            base, peak, elapsed = queue.get()
            proc.join()
            rows.append((n, base, peak, peak - base, elapsed))
    return rows


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="images in the cube (default 20)")
    parser.add_argument("--size", type=int, default=2000, help="image side in pixels (default 2000)")
    parser.add_argument("--sigma", type=float, default=3.0, help="clip in sigma (default 3)")
    parser.add_argument("--iterations", type=int, default=3, help="clip iterations, ours and theirs (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of ours and numpy; best kept (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-astropy", action="store_true")
    parser.add_argument("--skip-ccdproc", action="store_true")
    parser.add_argument("--memory-warps", default="10,40", help="warp counts for the memory test ('' to skip)")
    parser.add_argument("--memory-size", type=int, default=2000, help="patch side of the memory test (default 2000)")
    parser.add_argument("--subregion", default="2000x500", help="sub-region WxH of the memory test (default 2000x500)")
    parser.add_argument("--budget-mib", type=int, default=64, help="stack memory budget, MiB (default 64)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    images, masks, variances, weights = make_cube(args.epochs, args.size, args.seed)
    npe = args.epochs * args.size * args.size / 1e6
    print(f"cube: {args.epochs} epochs x {args.size} x {args.size} = {npe:.0f} M pixel-epochs")

    results: dict[str, float] = {}
    t0 = time.perf_counter()
    ours = run_ours(images, masks, variances, weights, args.sigma, args.iterations)
    print(f"ours: first call (compile or load cached kernels) {time.perf_counter() - t0:.2f}s")
    results["ours MEANCLIP (numba)"] = best_time(ours, args.repeat)
    results["numpy weighted mean"] = best_time(run_numpy(images, weights), args.repeat)
    if not args.skip_astropy:
        results["astropy sigma_clip + mean"] = best_time(run_astropy(images, masks, weights, args.sigma,
                                                                     args.iterations), 1)
    if not args.skip_ccdproc:
        results["ccdproc Combiner"] = best_time(run_ccdproc(images, masks, weights, args.sigma, args.iterations), 1)

    ref_wall, ref_cpu = results["ours MEANCLIP (numba)"]
    print(f"\n{'method':30s} {'wall s':>7s} {'Mpix-epoch/s':>13s} {'ours faster':>12s} "
          f"{'CPU s':>7s} {'Mpix-epoch/CPU-s':>17s}")
    for name, (wall, cpu) in results.items():
        print(f"{name:30s} {wall:7.3f} {npe / wall:13.1f} {wall / ref_wall:11.2f}x {cpu:7.3f} {npe / cpu:17.1f}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} (wall-clock ratios favour single-threaded methods on a busy machine)")

    counts = [int(c) for c in args.memory_warps.split(",") if c.strip()]
    if counts:
        del images, masks, variances
        gc.collect()
        w, h = (int(v) for v in args.subregion.lower().split("x"))
        rows = memory_benchmark(counts, args.memory_size, (w, h), args.budget_mib * 2**20)
        print(f"\nassembly of a {args.memory_size}x{args.memory_size} patch from on-disk warps "
              f"(sub-regions {w}x{h}, stack budget {args.budget_mib} MiB), one process per case:")
        print(f"{'warps':>6s} {'baseline MiB':>13s} {'peak MiB':>9s} {'increase MiB':>13s} {'time s':>7s}")
        for n, base, peak, inc, elapsed in rows:
            print(f"{n:6d} {base:13.0f} {peak:9.0f} {inc:13.0f} {elapsed:7.2f}")
        if len(rows) >= 2:
            print(f"peak increase ratio {rows[-1][0]} vs {rows[0][0]} warps: {rows[-1][3] / rows[0][3]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
