"""Warp benchmark: our Lanczos3 warper against reproject and SWarp on one MegaPrime CCD.

One run, same input and output grid for every method:

* input: one full MegaPrime CCD, 2048 x 4612 px at 0.185"/px, TAN WCS, synthetic
  Gaussian stars (known fluxes) plus white noise, flat variance, a mask with a few bad
  columns and an EDGE border;
* output: a 2100 x 4200 px box of a rings sky-map tract (TAN, north up), the CCD
  rotated by ``--rotation`` degrees relative to it;
* methods: ours (``coadd_core.warp.warp_masked_image``, Lanczos3, image + variance +
  mask) at 1 and 2 numba threads; ``reproject.reproject_interp`` (bicubic) and
  ``reproject.reproject_adaptive`` (image only, one process); SWarp ``LANCZOS3``
  (image only, ``COMBINE N``: resampling alone) at 1 and 2 threads if the ``SWarp``
  executable is installed (Debian package ``swarp``): its time includes reading the
  input FITS and writing the resampled image and weight map, as a SWarp run always
  does; we also time that FITS I/O with astropy and subtract it for an approximate
  I/O-free figure.

Speed is output megapixels (of the common 2100 x 4200 grid) per second of wall time,
best of ``--repeat`` runs; the table gives our speed over each peer's.  Quality: the
flux of every star fully inside the output, summed in a 25 x 25 px box around its
predicted position, divided by the same sum in the input (noise-free copies, so the
ratio measures the resampling alone): mean and rms per method.

    .venv/bin/python benchmarks/warp_benchmark.py
    .venv/bin/python benchmarks/warp_benchmark.py --repeat 5 --json warp.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numba
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coadd_core.geom import Box  # noqa: E402
from coadd_core.image import MaskedImage  # noqa: E402
from coadd_core.masks import bitmask  # noqa: E402
from coadd_core.psf import GaussianPsf  # noqa: E402
from coadd_core.skymap import make_skymap  # noqa: E402
from coadd_core.warp import PixelTransform, WarperConfig, warp_masked_image  # noqa: E402
from coadd_core.wcs_utils import shifted, wcs_to_header  # noqa: E402

log = logging.getLogger("warp_benchmark")

CCD_SHAPE = (4612, 2048)  # rows, columns
OUT_SHAPE = (4200, 2100)
PIXEL_SCALE = 0.185  # arcsec
CENTRE = (150.12, 2.21)  # deg, COSMOS
STAR_SIGMA = 1.9  # px (FWHM 4.5 px = 0.83")
STAR_FLUX = 1e5
NOISE_SIGMA = 10.0
APERTURE_HALF = 12


@dataclass
class Result:
    method: str
    threads: int
    seconds: float
    cpu_seconds: float
    mpix_per_s: float
    flux_mean: float | None = None
    flux_rms: float | None = None
    n_stars: int = 0
    note: str = ""
    first_seconds: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


# -- inputs ----------------------------------------------------------------------------------


def megaprime_wcs(rotation_deg: float) -> WCS:
    """TAN WCS of a MegaPrime CCD (0.185"/px, x to the west as the mosaic's lower half)."""
    s = PIXEL_SCALE / 3600.0
    th = math.radians(rotation_deg)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(CENTRE)
    wcs.wcs.crpix = [CCD_SHAPE[1] / 2 + 0.5, CCD_SHAPE[0] / 2 + 0.5]
    wcs.wcs.cd = np.array([[-s * math.cos(th), s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.set()
    return wcs


def make_inputs(seed: int, n_stars: int, rotation: float) -> tuple[MaskedImage, np.ndarray, WCS, WCS, Box, np.ndarray]:
    """CCD masked image (stars + noise), its noise-free star image, CCD WCS, tract WCS, output box, star positions."""
    rng = np.random.default_rng(seed)
    ccd_wcs = megaprime_wcs(rotation)
    tract = make_skymap("rings").find_tract(CENTRE)
    cx, cy = tract.wcs.all_world2pix(np.array([CENTRE[0]]), np.array([CENTRE[1]]), 0)
    box = Box.from_size(OUT_SHAPE[1], OUT_SHAPE[0], int(round(cx[0])) - OUT_SHAPE[1] // 2, int(round(cy[0])) - OUT_SHAPE[0] // 2)
    # stars on a jittered grid, well separated, away from the CCD edges
    nx = max(int(math.sqrt(n_stars * CCD_SHAPE[1] / CCD_SHAPE[0])), 1)
    ny = max(n_stars // nx, 1)
    gx = (np.arange(nx) + 0.5) * (CCD_SHAPE[1] - 80) / nx + 40
    gy = (np.arange(ny) + 0.5) * (CCD_SHAPE[0] - 80) / ny + 40
    xs, ys = np.meshgrid(gx, gy)
    pos = np.column_stack([xs.ravel(), ys.ravel()]) + rng.uniform(-5, 5, size=(xs.size, 2))
    truth = np.zeros(CCD_SHAPE, dtype=np.float64)
    psf = GaussianPsf(STAR_SIGMA, size=2 * math.ceil(6 * STAR_SIGMA) + 1)
    frame = Box.from_shape(CCD_SHAPE)
    for x, y in pos:
        stamp = psf.compute_image(x, y)
        truth[stamp.bbox.slices(frame)] += STAR_FLUX * stamp.array
    image = (truth + rng.normal(0.0, NOISE_SIGMA, size=CCD_SHAPE)).astype(np.float32)
    mask = np.zeros(CCD_SHAPE, dtype=np.int32)
    edge = bitmask("EDGE")
    mask[:8, :] = mask[-8:, :] = edge
    mask[:, :8] = mask[:, -8:] = edge
    for col in rng.integers(50, CCD_SHAPE[1] - 50, size=4):
        mask[:, col] |= bitmask("BAD")
    variance = np.full(CCD_SHAPE, NOISE_SIGMA**2, dtype=np.float32)
    return MaskedImage(image, mask, variance), truth.astype(np.float32), ccd_wcs, tract.wcs, box, pos


# -- quality ---------------------------------------------------------------------------------


def star_flux_ratios(out: np.ndarray, box: Box, truth_sums: np.ndarray, dest_pos: np.ndarray) -> np.ndarray:
    ratios = []
    h = APERTURE_HALF
    for (x, y), ref in zip(dest_pos, truth_sums):
        i, j = int(round(x)) - box.x0, int(round(y)) - box.y0
        if h <= i < out.shape[1] - h and h <= j < out.shape[0] - h:
            sub = out[j - h : j + h + 1, i - h : i + h + 1]
            if np.all(np.isfinite(sub)):
                ratios.append(float(sub.sum(dtype=np.float64)) / ref)
    return np.array(ratios)


def input_sums(truth: np.ndarray, pos: np.ndarray) -> np.ndarray:
    h = APERTURE_HALF
    return np.array(
        [truth[int(round(y)) - h : int(round(y)) + h + 1, int(round(x)) - h : int(round(x)) + h + 1].sum(dtype=np.float64) for x, y in pos]
    )


# -- timing ----------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (SWarp runs as a child)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, float, object]:
    """(best wall, CPU of that run, first wall, last result) of ``repeat`` calls."""
    best = math.inf
    best_cpu = math.nan
    first = None
    result = None
    for _ in range(repeat):
        c0 = _cpu_seconds()
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        dc = _cpu_seconds() - c0
        first = dt if first is None else first
        if dt < best:
            best, best_cpu = dt, dc
    return best, best_cpu, float(first), result


OURS = "ours lanczos3 (image+var+mask)"


def run_ours(mi: MaskedImage, truth: np.ndarray, ccd_wcs: WCS, tract_wcs: WCS, box: Box, threads: int,
             repeat: int, sums: np.ndarray, dest_pos: np.ndarray, exact_ramp: bool = True) -> Result:
    numba.set_num_threads(threads)
    config = WarperConfig(exact_ramp=exact_ramp)
    warp_masked_image(mi, ccd_wcs, tract_wcs, box, config)  # compile / load the kernels
    best, cpu, first, out = timed(lambda: warp_masked_image(mi, ccd_wcs, tract_wcs, box, config), repeat)
    clean = warp_masked_image(MaskedImage(truth, mi.mask, mi.variance), ccd_wcs, tract_wcs, box, config)
    ratios = star_flux_ratios(clean.image, box, sums, dest_pos)
    label = OURS if exact_ramp else "ours, plain Lanczos3 weights (LSST's)"
    return Result(label, threads, best, cpu, OUT_SHAPE[0] * OUT_SHAPE[1] / best / 1e6,
                  float(ratios.mean()), float(ratios.std()), len(ratios), first_seconds=first)


def run_reproject(kind: str, image: np.ndarray, truth: np.ndarray, ccd_wcs: WCS, out_wcs: WCS, repeat: int,
                  sums: np.ndarray, dest_pos: np.ndarray, box: Box) -> Result:
    import reproject

    if kind == "interp":
        fn = lambda data: reproject.reproject_interp((data, ccd_wcs), out_wcs, shape_out=OUT_SHAPE, order="bicubic", return_footprint=False)  # noqa: E731
        name = "reproject_interp bicubic"
    else:
        fn = lambda data: reproject.reproject_adaptive((data, ccd_wcs), out_wcs, shape_out=OUT_SHAPE, return_footprint=False)  # noqa: E731
        name = "reproject_adaptive"
    best, cpu, first, _ = timed(lambda: fn(image), repeat)
    ratios = star_flux_ratios(fn(truth), box, sums, dest_pos)
    return Result(name, 1, best, cpu, OUT_SHAPE[0] * OUT_SHAPE[1] / best / 1e6,
                  float(ratios.mean()), float(ratios.std()), len(ratios), first_seconds=first)


def swarp_executable() -> str | None:
    for name in ("SWarp", "swarp"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_swarp(exe: str, workdir: Path, image: np.ndarray, truth: np.ndarray, ccd_wcs: WCS, out_wcs: WCS,
              threads: int, repeat: int, sums: np.ndarray, dest_pos: np.ndarray, box: Box) -> Result:
    header = wcs_to_header(ccd_wcs)
    for name, data in (("ccd.fits", image), ("truth.fits", truth)):
        fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(workdir / name, overwrite=True)
    head = wcs_to_header(out_wcs)
    head["NAXIS"] = 2
    head["NAXIS1"] = OUT_SHAPE[1]
    head["NAXIS2"] = OUT_SHAPE[0]
    text = "".join(card.image for card in head.cards) + "END".ljust(80)
    config = workdir / "default.swarp"
    subprocess.run([exe, "-d"], stdout=config.open("w"), check=True)

    def call(src: str, out: str) -> None:
        (workdir / f"{out}.head").write_text("\n".join(text[i : i + 80] for i in range(0, len(text), 80)) + "\n")
        subprocess.run(
            [
                exe, src, "-c", str(config),
                "-IMAGEOUT_NAME", f"{out}.fits", "-WEIGHTOUT_NAME", f"{out}.weight.fits",
                "-RESAMPLING_TYPE", "LANCZOS3", "-SUBTRACT_BACK", "N", "-COMBINE", "N",
                "-NTHREADS", str(threads), "-WRITE_XML", "N",
                "-VERBOSE_TYPE", "QUIET", "-FSCALASTRO_TYPE", "FIXED", "-RESAMPLE_DIR", str(workdir),
                "-WEIGHT_TYPE", "NONE", "-COPY_KEYWORDS", "",
            ],
            cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    best, cpu, first, _ = timed(lambda: call("ccd.fits", "coadd"), repeat)
    call("truth.fits", "coadd")
    # COMBINE N: the resampled image on the output grid (and its weight) is the product
    out = fits.getdata(workdir / "truth.resamp.fits").astype(np.float64)
    ratios = star_flux_ratios(out, box, sums, dest_pos)
    # SWarp reads the input and writes the resampled image and its weight map
    io = _fits_io_seconds(workdir)
    return Result("SWarp LANCZOS3 (image, incl. FITS I/O)", threads, best, cpu, OUT_SHAPE[0] * OUT_SHAPE[1] / best / 1e6,
                  float(ratios.mean()), float(ratios.std()), len(ratios), first_seconds=first,
                  extra={"io_seconds_estimate": io, "mpix_per_s_without_io": OUT_SHAPE[0] * OUT_SHAPE[1] / max(best - io, 1e-3) / 1e6})


def _fits_io_seconds(workdir: Path) -> float:
    """astropy time to read the CCD and write two output-sized images (SWarp's I/O, roughly)."""
    out = np.zeros(OUT_SHAPE, dtype=np.float32)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        _ = np.array(fits.getdata(workdir / "ccd.fits"))
        for name in ("io_a.fits", "io_b.fits"):
            fits.PrimaryHDU(out).writeto(workdir / name, overwrite=True)
        best = min(best, time.perf_counter() - t0)
    return best


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per method (best is reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for ours and SWarp")
    parser.add_argument("--stars", type=int, default=300, help="number of stars on the CCD")
    parser.add_argument("--rotation", type=float, default=0.7, help="CCD rotation relative to the tract (deg)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-reproject", action="store_true", help="skip the reproject peers")
    parser.add_argument("--no-swarp", action="store_true", help="skip SWarp even if installed")
    parser.add_argument("--plain", action="store_true",
                        help="also time our warper with plain (not ramp-corrected) Lanczos weights, as LSST")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    load_start = os.getloadavg()[0]
    mi, truth, ccd_wcs, tract_wcs, box, pos = make_inputs(args.seed, args.stars, args.rotation)
    out_wcs = shifted(tract_wcs, box.x0, box.y0)
    sums = input_sums(truth, pos)
    dx, dy = PixelTransform(ccd_wcs, tract_wcs).src_to_dest(pos[:, 0], pos[:, 1])
    dest_pos = np.column_stack([dx, dy])
    results: list[Result] = []
    max_threads = numba.config.NUMBA_NUM_THREADS
    for threads in args.threads:
        if threads > max_threads:
            log.warning("skipping %d threads: numba allows %d", threads, max_threads)
            continue
        log.info("ours, %d thread(s)...", threads)
        results.append(run_ours(mi, truth, ccd_wcs, tract_wcs, box, threads, args.repeat, sums, dest_pos))
        if args.plain:
            results.append(run_ours(mi, truth, ccd_wcs, tract_wcs, box, threads, args.repeat, sums, dest_pos, False))
    if not args.no_reproject:
        try:
            for kind in ("interp", "adaptive"):
                log.info("reproject %s...", kind)
                results.append(run_reproject(kind, mi.image, truth, ccd_wcs, out_wcs, args.repeat, sums, dest_pos, box))
        except ImportError:
            log.warning("reproject is not installed: skipped")
    exe = None if args.no_swarp else swarp_executable()
    if exe is None and not args.no_swarp:
        log.warning("SWarp is not installed (Debian package 'swarp'): skipped")
    if exe is not None:
        with tempfile.TemporaryDirectory(prefix="warp-bench-") as tmp:
            for threads in args.threads:
                log.info("SWarp, %d thread(s)...", threads)
                results.append(run_swarp(exe, Path(tmp), mi.image, truth, ccd_wcs, out_wcs, threads, args.repeat, sums, dest_pos, box))
    load_end = os.getloadavg()[0]

    ours = {r.threads: r for r in results if r.method == OURS}
    print(f"\nwarp benchmark: CCD {CCD_SHAPE[1]}x{CCD_SHAPE[0]} -> {OUT_SHAPE[1]}x{OUT_SHAPE[0]} "
          f"({OUT_SHAPE[0] * OUT_SHAPE[1] / 1e6:.2f} Mpix), rotation {args.rotation} deg, best of {args.repeat}; "
          f"load average {load_start:.1f} -> {load_end:.1f} on {os.cpu_count()} CPUs")
    print(f"{'method':42s} {'thr':>3s} {'wall s':>7s} {'cpu s':>7s} {'Mpix/s':>7s} {'ours/peer':>10s}  {'flux ratio':>18s}")
    for r in results:
        mine = ours.get(r.threads) or (ours[min(ours)] if ours else None)
        ratio = "" if (mine is None or r.method == OURS) else f"{mine.mpix_per_s / r.mpix_per_s:9.2f}x"
        flux = "" if r.flux_mean is None else f"{r.flux_mean:.5f} +- {r.flux_rms:.5f}"
        print(f"{r.method:42s} {r.threads:3d} {r.seconds:7.3f} {r.cpu_seconds:7.3f} {r.mpix_per_s:7.2f} {ratio:>10s}  {flux:>18s}")
        if "mpix_per_s_without_io" in r.extra:
            speed = r.extra["mpix_per_s_without_io"]
            ratio = "" if mine is None else f"{mine.mpix_per_s / speed:9.2f}x"
            label = "  ~ without its FITS I/O (astropy-timed)"
            print(f"{label:42s} {r.threads:3d} {r.seconds - r.extra['io_seconds_estimate']:7.3f} {'':7s} {speed:7.2f} {ratio:>10s}")
    if exe is None and not args.no_swarp:
        print("SWarp: not installed (apt-get install swarp), not compared")
    if args.json:
        args.json.write_text(json.dumps({"load_average": [load_start, load_end], "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
