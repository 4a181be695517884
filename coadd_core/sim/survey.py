"""Survey driver: plan a simulated night, render every CCD, write raw files and truth.

Layout of ``out_dir``::

    raw/<expnum><kind>.fits      one MEF per exposure; kind letter o (object), b (bias),
                                 d (dark), f (flat) as in CFHT file names
    refcat/refcat_<name>.csv     photometric reference stars (ra, dec, <band>_mag[_err])
    truth/*.ecsv                 astropy ECSV tables (see TRUTH_FILES)
    truth/simulation.json        config, seed, file list and summary

Everything is a function of the config and the seed: rerunning gives byte-identical
files, whatever ``workers`` is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from astropy.table import Table
from tqdm import tqdm

from coadd_core.camera import Camera, Detector, load_camera
from coadd_core.sim.artifacts import Ghost, Trail, make_ghosts, make_trails
from coadd_core.sim.calibs import AmpElectronics, amp_electronics, defect_kinds
from coadd_core.sim.conditions import Exposure, plan_exposures
from coadd_core.sim.config import SimConfig, get_preset
from coadd_core.sim.geometry import DetectorOnSky
from coadd_core.sim.rawfile import extension_header, primary_header, write_mef
from coadd_core.sim.refcat import make_refcat, write_refcat
from coadd_core.sim.render import SOURCE_DTYPE, CcdRender, CcdTask, render_ccd, star_stamp_radius
from coadd_core.sim.scene import galaxy_trunc_factor, make_catalog, source_positions, variable_mag

__all__ = ["SurveyPlan", "SimulationResult", "plan_survey", "simulate", "TRUTH_FILES"]

log = logging.getLogger(__name__)

TRUTH_FILES: dict[str, str] = {
    "catalog": "catalog.ecsv",
    "exposures": "exposures.ecsv",
    "visits": "visits.ecsv",
    "epochs": "epochs.ecsv",
    "trails": "trails.ecsv",
    "ghosts": "ghosts.ecsv",
    "cosmic_rays": "cosmic_rays.ecsv",
    "defects": "defects.ecsv",
    "amplifiers": "amplifiers.ecsv",
    "readout": "readout.ecsv",
    "simulation": "simulation.json",
}
"""Truth product -> file name under ``out_dir/truth``.

catalog: every source (id, kind, ra, dec, per-band AB mag and nJy flux, Sersic shape,
variable and asteroid parameters); exposures: every exposure (file, type, time,
pointing); visits: per-visit conditions (seeing, sky, transparency, zero point, airmass,
dither, rotation); epochs: per-visit truth of variables and asteroids (position, mag,
expected electrons, pixel position); trails / ghosts: artifacts on the sky plus their
expected electrons; cosmic_rays: every track with detector, assembled and raw pixels and
sky position; defects: bad-column boxes and their kind; amplifiers: per-amp electronics
(gain, noise, bias level and ramp, full well); readout: per-exposure bias level of each
amp (level + that exposure's jitter).
"""

# random-stream tags of the planning steps
_TAG_EXPOSURES, _TAG_SCENE, _TAG_TRAILS, _TAG_GHOSTS, _TAG_REFCAT = 101, 102, 103, 104, 105
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class SurveyPlan:
    """The planned night: detectors, exposures, truth catalog and artifacts."""

    config: SimConfig
    seed: int
    camera: Camera
    detectors: tuple[Detector, ...]
    exposures: tuple[Exposure, ...]
    catalog: Table
    trails: tuple[Trail, ...]
    ghosts: tuple[Ghost, ...]
    electronics: dict[str, tuple[AmpElectronics, ...]]

    @property
    def science(self) -> tuple[Exposure, ...]:
        return tuple(e for e in self.exposures if e.kind == "science")

    @property
    def pixel_scale(self) -> float:
        return self.camera.pixel_scale_arcsec

    def exposure(self, expnum: int) -> Exposure:
        for e in self.exposures:
            if e.expnum == expnum:
                return e
        raise KeyError(f"no exposure {expnum}")

    def detector(self, name: str) -> Detector:
        for d in self.detectors:
            if d.name == name:
                return d
        raise KeyError(f"no detector {name}")

    def view(self, exposure: Exposure, detector: Detector) -> DetectorOnSky:
        """The detector on the sky in an exposure (its raw-header WCS)."""
        return DetectorOnSky.create(
            detector, exposure.ra_deg, exposure.dec_deg, exposure.rotation_deg, self.pixel_scale
        )

    def source_magnitudes(self, exposure: Exposure) -> np.ndarray:
        """Magnitude of every catalog source in the exposure's band at mid-exposure."""
        mags = np.array(self.catalog[f"{exposure.band}_mag"], dtype=float)
        for i in np.flatnonzero(np.asarray(self.catalog["kind"]) == "variable"):
            mags[i] = float(variable_mag(self.catalog[i], exposure.band, exposure.mjd_mid))
        return mags

    def ccd_task(self, exposure: Exposure | int, detector: Detector | str) -> CcdTask:
        """Everything the renderer needs for one CCD of one exposure."""
        exp = exposure if isinstance(exposure, Exposure) else self.exposure(exposure)
        det = detector if isinstance(detector, Detector) else self.detector(detector)
        view = self.view(exp, det)
        cfg = self.config
        task = CcdTask(
            exposure=exp,
            detector=det,
            wcs_cards=view.wcs_cards,
            electronics=self.electronics[det.name],
            effects=cfg.effects,
            artifacts=cfg.artifacts,
            seed=self.seed,
            pixel_scale=self.pixel_scale,
            folding_threshold=cfg.gsparams_folding_threshold,
        )
        if exp.kind != "science":
            return task
        return _science_task(task, self, exp, view)


def _science_task(task: CcdTask, plan: SurveyPlan, exp: Exposure, view: DetectorOnSky) -> CcdTask:
    """Add the sources, sky and artifacts that fall on this CCD to a science task."""
    cat = plan.catalog
    det = view.detector
    cond = exp.conditions
    assert cond is not None
    scale = plan.pixel_scale
    fwhm_px = cond.seeing_fwhm_arcsec / scale
    ra, dec = source_positions(cat, exp.mjd_mid)
    x, y = view.sky_to_pixel(ra, dec)
    counts = exp.counts_e(plan.source_magnitudes(exp))
    kind = np.asarray(cat["kind"])
    sersic = np.array(cat["sersic_n"], dtype=float)
    hlr = np.array(cat["half_light_radius_arcsec"], dtype=float)
    ell = np.array(cat["ellipticity"], dtype=float)
    radius = star_stamp_radius(counts, fwhm_px, cond.moffat_beta).astype(float)
    is_gal = kind == "galaxy"
    if is_gal.any():
        major = galaxy_trunc_factor(sersic[is_gal]) * hlr[is_gal] * np.sqrt((1 + ell[is_gal]) / (1 - ell[is_gal]))
        radius[is_gal] = np.clip(np.ceil(major / scale + 4.0 * fwhm_px), 8, 400)
    trail_xi = np.zeros(len(cat))
    trail_eta = np.zeros(len(cat))
    is_ast = kind == "asteroid"
    if is_ast.any():
        dist = np.array(cat["ast_rate_arcsec_per_hour"])[is_ast] * exp.exposure_time / 3600.0
        pa = np.radians(np.array(cat["ast_pa_deg"])[is_ast])
        trail_xi[is_ast] = dist * np.sin(pa)
        trail_eta[is_ast] = dist * np.cos(pa)
        radius[is_ast] += np.ceil(0.5 * dist / scale)
    h, w = det.bbox.shape
    keep = (x > -radius - 0.5) & (x < w - 0.5 + radius) & (y > -radius - 0.5) & (y < h - 0.5 + radius)
    idx = np.flatnonzero(keep)
    sources = np.zeros(len(idx), dtype=SOURCE_DTYPE)
    sources["id"] = np.asarray(cat["id"])[idx]
    sources["x"] = x[idx]
    sources["y"] = y[idx]
    sources["counts"] = counts[idx]
    sources["sersic_n"] = sersic[idx]
    sources["hlr"] = hlr[idx]
    sources["g"] = ell[idx]
    sources["beta_deg"] = 90.0 - np.array(cat["position_angle_deg"], dtype=float)[idx]
    sources["trail_xi"] = trail_xi[idx]
    sources["trail_eta"] = trail_eta[idx]
    sources["radius"] = radius[idx].astype(int)

    trails = []
    for t in plan.trails:
        if t.expnum != exp.expnum:
            continue
        tx, ty = view.sky_to_pixel([t.ra1, t.ra2], [t.dec1, t.dec2])
        sigma = t.width_fwhm_arcsec * _FWHM_TO_SIGMA / scale
        trails.append((float(tx[0]), float(ty[0]), float(tx[1]), float(ty[1]), sigma, t.peak_e))
    ghosts = []
    for g in plan.ghosts:
        if g.expnum != exp.expnum:
            continue
        gx, gy = view.sky_to_pixel(g.ra, g.dec)
        ghosts.append((float(gx[0]), float(gy[0]), g.radius_arcsec / scale, g.inner_radius_arcsec / scale, g.peak_e))
    return dataclasses.replace(
        task,
        sky_e=exp.sky_e_per_pixel(scale),
        sources=sources,
        trails=tuple(trails),
        ghosts=tuple(ghosts),
    )


def _build_detectors(config: SimConfig, camera: Camera) -> tuple[Detector, ...]:
    out = []
    for choice in config.detectors:
        base = camera[choice.name]
        if choice.amp_width is None and choice.height is None and choice.focal_plane_mm is None:
            out.append(base)
            continue
        out.append(
            base.with_layout(
                choice.amp_width or base.amplifiers[0].bbox.width,
                choice.height or base.bbox.height,
                focal_plane_mm=choice.focal_plane_mm,
            )
        )
    return tuple(out)


def _special_positions(catalog: Table, science: Sequence[Exposure]) -> tuple[np.ndarray, np.ndarray]:
    """Sky positions artifacts should keep clear of: variables (but the faint ones, so the
    artifacts fall where they would without them), saturating stars, asteroids."""
    kinds = np.asarray(catalog["kind"])
    faint = np.asarray(catalog["near_limit"], bool) if "near_limit" in catalog.colnames else np.zeros(len(kinds), bool)
    fixed = ((kinds == "variable") & ~faint) | np.asarray(catalog["bright"])
    ra = [np.asarray(catalog["ra"], dtype=float)[fixed]]
    dec = [np.asarray(catalog["dec"], dtype=float)[fixed]]
    for e in science:
        a, d = source_positions(catalog, e.mjd_mid)
        moving = kinds == "asteroid"
        ra.append(a[moving])
        dec.append(d[moving])
    return np.concatenate(ra), np.concatenate(dec)


def plan_survey(config: SimConfig | str, seed: int | None = None) -> SurveyPlan:
    """Plan a simulated survey (no pixels yet): exposures, truth catalog, artifacts."""
    if isinstance(config, str):
        config = get_preset(config)
    seed = config.seed if seed is None else int(seed)
    camera = load_camera(config.camera)
    detectors = _build_detectors(config, camera)
    exposures = plan_exposures(config, np.random.default_rng([seed, _TAG_EXPOSURES]))
    science = [e for e in exposures if e.kind == "science"]
    catalog = make_catalog(
        config,
        detectors,
        science,
        camera.pixel_scale_arcsec,
        camera.plate_scale_arcsec_per_mm,
        np.random.default_rng([seed, _TAG_SCENE]),
    )
    avoid = _special_positions(catalog, science)
    trails = make_trails(
        config.artifacts,
        science,
        detectors,
        camera.pixel_scale_arcsec,
        camera.plate_scale_arcsec_per_mm,
        np.random.default_rng([seed, _TAG_TRAILS]),
        avoid=avoid,
    )
    ghosts = make_ghosts(
        config.artifacts,
        science,
        detectors,
        camera.pixel_scale_arcsec,
        np.random.default_rng([seed, _TAG_GHOSTS]),
        avoid=avoid,
    )
    electronics = {d.name: amp_electronics(d, config.effects, seed) for d in detectors}
    return SurveyPlan(
        config=config,
        seed=seed,
        camera=camera,
        detectors=detectors,
        exposures=tuple(exposures),
        catalog=catalog,
        trails=tuple(trails),
        ghosts=tuple(ghosts),
        electronics=electronics,
    )


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote, and a summary of it."""

    out_dir: Path
    config: SimConfig
    seed: int
    raw_files: tuple[Path, ...]
    calib_files: dict[str, tuple[Path, ...]]
    refcat_path: Path
    truth_paths: dict[str, Path]
    summary: dict[str, Any]
    exposures: tuple[dict[str, Any], ...] = ()
    elapsed_s: float = field(default=0.0, compare=False)

    @property
    def all_raw_files(self) -> tuple[Path, ...]:
        """Calibration files first, then science, in time order."""
        calibs = [p for kind in ("bias", "dark", "flat") for p in self.calib_files.get(kind, ())]
        return tuple(calibs) + self.raw_files


def _render_stream(tasks: Iterable[CcdTask], workers: int, bar: tqdm) -> Iterator[CcdRender]:
    """Renders in task order; with workers > 1 a bounded window of them runs in processes."""
    if workers <= 1:
        for task in tasks:
            result = render_ccd(task)
            bar.update(1)
            yield result
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        window: deque[Future[CcdRender]] = deque()
        for task in tasks:
            window.append(pool.submit(render_ccd, task))
            if len(window) >= 2 * workers:
                result = window.popleft().result()
                bar.update(1)
                yield result
        while window:
            result = window.popleft().result()
            bar.update(1)
            yield result


def simulate(
    preset_or_config: str | SimConfig,
    out_dir: str | Path,
    *,
    seed: int | None = None,
    progress: bool = True,
    workers: int = 1,
) -> SimulationResult:
    """Simulate a survey and write its raw files, refcat and truth under ``out_dir``.

    ``preset_or_config`` is a preset name (``tiny``, ``demo``, ``full``) or a
    :class:`SimConfig`; ``seed`` overrides the config's. ``workers > 1`` renders CCDs in
    that many processes with identical results.
    """
    start = time.perf_counter()
    plan = plan_survey(preset_or_config, seed)
    cfg = plan.config
    out = Path(out_dir)
    raw_dir = out / "raw"
    truth_dir = out / "truth"
    raw_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    n_det = len(plan.detectors)
    tasks = (plan.ccd_task(e, d) for e in plan.exposures for d in plan.detectors)
    bar = tqdm(total=len(plan.exposures) * n_det, desc="render CCDs", unit="ccd", disable=not progress)
    renders = _render_stream(tasks, max(1, int(workers)), bar)
    cosmic_rows: list[dict[str, Any]] = []
    files: dict[str, list[Path]] = {"science": [], "bias": [], "dark": [], "flat": []}
    n_saturated = 0
    bytes_written = 0
    try:
        for exp in plan.exposures:
            primary = primary_header(exp, plan.camera, n_det, cfg.observing.run_id, cfg.observing.target_name)

            def extensions(exp: Exposure = exp) -> Iterator[tuple[Any, np.ndarray]]:
                nonlocal n_saturated
                for det in plan.detectors:
                    render = next(renders)
                    if (render.expnum, render.detector) != (exp.expnum, det.name):
                        raise RuntimeError("render stream out of order")
                    n_saturated += render.n_saturated
                    view = plan.view(exp, det)
                    cosmic_rows.extend(_cosmic_ray_rows(exp, view, render))
                    header = extension_header(
                        exp, plan.camera, det, view.wcs_cards, n_det, cfg.observing.run_id, cfg.observing.target_name
                    )
                    yield header, render.raw

            path = raw_dir / exp.filename
            bytes_written += write_mef(path, primary, extensions())
            files[exp.kind].append(path)
    finally:
        renders.close()
        bar.close()

    truth_paths = _write_truth(plan, truth_dir, cosmic_rows)
    refcat = make_refcat(
        plan.catalog, cfg.refcat, cfg.observing.band, np.random.default_rng([plan.seed, _TAG_REFCAT])
    )
    refcat_path = write_refcat(refcat, out / "refcat" / f"refcat_{cfg.refcat.name}.csv")

    kinds = np.asarray(plan.catalog["kind"])
    summary: dict[str, Any] = {
        "preset": cfg.name,
        "seed": plan.seed,
        "detectors": [d.name for d in plan.detectors],
        "n_science": len(files["science"]),
        "n_bias": len(files["bias"]),
        "n_dark": len(files["dark"]),
        "n_flat": len(files["flat"]),
        "n_ccd_renders": len(plan.exposures) * n_det,
        "n_stars": int(np.sum(kinds == "star")),
        "n_saturating_stars": int(np.sum(np.asarray(plan.catalog["bright"]))),
        "n_galaxies": int(np.sum(kinds == "galaxy")),
        "n_variables": int(np.sum(kinds == "variable")),
        "n_asteroids": int(np.sum(kinds == "asteroid")),
        "n_trails": len(plan.trails),
        "n_ghosts": len(plan.ghosts),
        "n_cosmic_rays": len(cosmic_rows),
        "n_saturated_pixels": n_saturated,
        "n_refcat_stars": len(refcat),
        "raw_bytes": bytes_written,
    }
    exposures = tuple(
        {
            "expnum": e.expnum,
            "kind": e.kind,
            "file": str((raw_dir / e.filename)),
            "physical_filter": e.physical_filter,
            "exptime": e.exposure_time,
            "mjd": e.mjd_start,
        }
        for e in plan.exposures
    )
    _write_json(
        truth_dir / TRUTH_FILES["simulation"],
        {
            "preset": cfg.name,
            "seed": plan.seed,
            "config": cfg.model_dump(mode="json"),
            "camera": plan.camera.name,
            "raw_files": [str(p.relative_to(out)) for p in files["science"]],
            "calib_files": {k: [str(p.relative_to(out)) for p in files[k]] for k in ("bias", "dark", "flat")},
            "refcat": str(refcat_path.relative_to(out)),
            "truth": {k: v for k, v in TRUTH_FILES.items() if k != "simulation"},
            "summary": summary,
        },
    )
    truth_paths["simulation"] = truth_dir / TRUTH_FILES["simulation"]
    elapsed = time.perf_counter() - start
    log.info(
        "simulated %s: %d exposures x %d CCDs in %.1f s -> %s",
        cfg.name, len(plan.exposures), n_det, elapsed, out,
    )
    return SimulationResult(
        out_dir=out,
        config=cfg,
        seed=plan.seed,
        raw_files=tuple(files["science"]),
        calib_files={k: tuple(files[k]) for k in ("bias", "dark", "flat")},
        refcat_path=refcat_path,
        truth_paths=truth_paths,
        summary=summary,
        exposures=exposures,
        elapsed_s=elapsed,
    )


def _cosmic_ray_rows(exp: Exposure, view: DetectorOnSky, render: CcdRender) -> list[dict[str, Any]]:
    if not render.cosmic_rays:
        return []
    det = view.detector
    rays = render.cosmic_rays
    x0 = np.array([r.x0 for r in rays])
    y0 = np.array([r.y0 for r in rays])
    x1 = np.array([r.x1 for r in rays])
    y1 = np.array([r.y1 for r in rays])
    rx0, ry0 = det.assembled_to_raw(np.clip(x0, -0.49, det.bbox.x1 + 0.49), y0)
    rx1, ry1 = det.assembled_to_raw(np.clip(x1, -0.49, det.bbox.x1 + 0.49), y1)
    ra, dec = view.pixel_to_sky(0.5 * (x0 + x1), 0.5 * (y0 + y1))
    rows = []
    for k, r in enumerate(rays):
        rows.append(
            {
                "expnum": exp.expnum,
                "detector": det.name,
                "x0": r.x0, "y0": r.y0, "x1": r.x1, "y1": r.y1,
                "x0_raw": float(rx0[k]), "y0_raw": float(ry0[k]),
                "x1_raw": float(rx1[k]), "y1_raw": float(ry1[k]),
                "ra": float(ra[k]), "dec": float(dec[k]),
                "charge_e": r.charge_e,
                "n_pixels": r.n_pixels,
            }
        )
    return rows


def _table(rows: Sequence[dict[str, Any]], names: Sequence[str], dtypes: Sequence[Any], meta: dict[str, str]) -> Table:
    if rows:
        table = Table(rows=[[row[n] for n in names] for row in rows], names=names, dtype=dtypes)
    else:
        table = Table(names=names, dtype=dtypes)
    table.meta.update(meta)
    return table


def _write_truth(plan: SurveyPlan, truth_dir: Path, cosmic_rows: list[dict[str, Any]]) -> dict[str, Path]:
    paths = {}

    def write(key: str, table: Table) -> None:
        path = truth_dir / TRUTH_FILES[key]
        table.write(path, format="ascii.ecsv", overwrite=True)
        paths[key] = path

    scale = plan.pixel_scale
    write("catalog", plan.catalog)
    write("exposures", _exposures_table(plan))
    write("visits", _visits_table(plan, scale))
    write("epochs", _epochs_table(plan))
    trail_rows = []
    for t in plan.trails:
        exp = plan.exposure(t.expnum)
        crossed = []
        for det in plan.detectors:
            view = plan.view(exp, det)
            tx, ty = view.sky_to_pixel([t.ra1, t.ra2], [t.dec1, t.dec2])
            s = np.linspace(0, 1, 4001)
            on = view.contains(tx[0] + s * (tx[1] - tx[0]), ty[0] + s * (ty[1] - ty[0]))
            if on.any():
                crossed.append(det.name)
        trail_rows.append({**t.__dict__, "detectors": ",".join(crossed)})
    write(
        "trails",
        _table(
            trail_rows,
            ["trail_id", "expnum", "ra1", "dec1", "ra2", "dec2", "width_fwhm_arcsec", "sb_mag_arcsec2", "peak_e", "detectors"],
            [int, int, float, float, float, float, float, float, float, str],
            {"description": "great-circle segments (deg); peak_e = e-/px at unit flat; width = Gaussian FWHM"},
        ),
    )
    ghost_rows = []
    for g in plan.ghosts:
        exp = plan.exposure(g.expnum)
        det_name, gx, gy = "", math.nan, math.nan
        for det in plan.detectors:
            view = plan.view(exp, det)
            x, y = view.sky_to_pixel(g.ra, g.dec)
            if view.contains(x, y)[0]:
                det_name, gx, gy = det.name, float(x[0]), float(y[0])
        ghost_rows.append({**g.__dict__, "detector": det_name, "x": gx, "y": gy})
    write(
        "ghosts",
        _table(
            ghost_rows,
            ["ghost_id", "expnum", "ra", "dec", "radius_arcsec", "inner_radius_arcsec", "sb_mag_arcsec2", "peak_e", "detector", "x", "y"],
            [int, int, float, float, float, float, float, float, str, float, float],
            {"description": "soft-edged ring; x, y = centre in assembled pixels of `detector`; peak_e = e-/px at unit flat"},
        ),
    )
    write(
        "cosmic_rays",
        _table(
            cosmic_rows,
            ["expnum", "detector", "x0", "y0", "x1", "y1", "x0_raw", "y0_raw", "x1_raw", "y1_raw", "ra", "dec", "charge_e", "n_pixels"],
            [int, str, float, float, float, float, float, float, float, float, float, float, float, int],
            {"description": "track ends in assembled (x, y) and raw-frame (x_raw, y_raw) 0-based pixels; ra, dec of the midpoint"},
        ),
    )
    defect_rows = []
    for det in plan.detectors:
        for box, kind in zip(det.defects, defect_kinds(det, plan.seed)):
            defect_rows.append(
                {"detector": det.name, "x0": box.x0, "y0": box.y0, "width": box.width, "height": box.height, "kind": kind}
            )
    write(
        "defects",
        _table(
            defect_rows,
            ["detector", "x0", "y0", "width", "height", "kind"],
            [str, int, int, int, int, str],
            {"description": "boxes in assembled 0-based pixels; dead = low response, hot = extra dark current"},
        ),
    )
    amp_rows = []
    readout_rows = []
    for det in plan.detectors:
        for amp, elec in zip(det.amplifiers, plan.electronics[det.name]):
            amp_rows.append(
                {
                    "detector": det.name, "amp": amp.name, "gain": elec.gain, "read_noise": elec.read_noise,
                    "saturation": elec.saturation, "bias_level": elec.bias_level,
                    "ramp_amplitude_adu": elec.ramp_amplitude, "ramp_rows": elec.ramp_rows,
                    "slope_adu": elec.slope, "full_well_e": elec.full_well_e,
                }
            )
    for exp in plan.exposures:
        for det in plan.detectors:
            task = plan.ccd_task(exp, det) if exp.kind != "science" else _bare_task(plan, exp, det)
            for elec, jitter in zip(task.electronics, task.bias_jitter()):
                readout_rows.append(
                    {"expnum": exp.expnum, "detector": det.name, "amp": elec.name, "bias_level": elec.bias_level + jitter}
                )
    write(
        "amplifiers",
        _table(
            amp_rows,
            ["detector", "amp", "gain", "read_noise", "saturation", "bias_level", "ramp_amplitude_adu", "ramp_rows", "slope_adu", "full_well_e"],
            [str, str, float, float, float, float, float, float, float, float],
            {"description": "bias(row) = bias_level + jitter + ramp_amplitude_adu*exp(-row/ramp_rows) + slope_adu*row/(raw rows-1), raw rows incl. parallel overscan"},
        ),
    )
    write(
        "readout",
        _table(
            readout_rows,
            ["expnum", "detector", "amp", "bias_level"],
            [int, str, str, float],
            {"description": "bias level of each amp in each exposure (level + jitter, ADU) before ramp and slope"},
        ),
    )
    return paths


def _bare_task(plan: SurveyPlan, exp: Exposure, det: Detector) -> CcdTask:
    return CcdTask(
        exposure=exp,
        detector=det,
        wcs_cards={},
        electronics=plan.electronics[det.name],
        effects=plan.config.effects,
        artifacts=plan.config.artifacts,
        seed=plan.seed,
        pixel_scale=plan.pixel_scale,
    )


def _exposures_table(plan: SurveyPlan) -> Table:
    rows = [
        {
            "expnum": e.expnum, "kind": e.kind, "obstype": e.obstype, "file": f"raw/{e.filename}",
            "band": e.band, "physical_filter": e.physical_filter, "mjd_start": e.mjd_start,
            "mjd_mid": e.mjd_mid, "exposure_time": e.exposure_time, "dark_time": e.dark_time,
            "ra_deg": e.ra_deg, "dec_deg": e.dec_deg, "rotation_deg": e.rotation_deg,
            "alt_deg": e.alt_deg, "az_deg": e.az_deg, "airmass": e.airmass,
            "flat_level_e": e.flat_level_e,
        }
        for e in plan.exposures
    ]
    names = list(rows[0]) if rows else ["expnum"]
    dtypes = [type(rows[0][n]) if rows else int for n in names]
    return _table(rows, names, dtypes, {"description": "every exposure in time order; ra/dec = telescope pointing"})


def _visits_table(plan: SurveyPlan, scale: float) -> Table:
    rows = []
    for e in plan.science:
        c = e.conditions
        assert c is not None
        rows.append(
            {
                "expnum": e.expnum, "visit": c.visit_index, "file": f"raw/{e.filename}",
                "band": e.band, "physical_filter": e.physical_filter,
                "mjd_start": e.mjd_start, "mjd_mid": e.mjd_mid, "exposure_time": e.exposure_time,
                "ra_deg": e.ra_deg, "dec_deg": e.dec_deg,
                "dither_east_arcsec": c.dither_east_arcsec, "dither_north_arcsec": c.dither_north_arcsec,
                "rotation_deg": e.rotation_deg,
                "seeing_fwhm_arcsec": c.seeing_fwhm_arcsec, "seeing_fwhm_px": c.seeing_fwhm_arcsec / scale,
                "moffat_beta": c.moffat_beta, "psf_g1": c.psf_g1, "psf_g2": c.psf_g2,
                "sky_mag_arcsec2": c.sky_mag_arcsec2, "sky_e_per_px": e.sky_e_per_pixel(scale),
                "transparency": c.transparency, "airmass": e.airmass, "extinction": c.extinction,
                "zero_point_nominal": c.zero_point_nominal, "zero_point": e.zero_point,
                "alt_deg": e.alt_deg, "az_deg": e.az_deg,
                "has_trail": any(t.expnum == e.expnum for t in plan.trails),
                "has_ghost": any(g.expnum == e.expnum for g in plan.ghosts),
            }
        )
    names = list(rows[0]) if rows else ["expnum"]
    dtypes = [type(rows[0][n]) if rows else int for n in names]
    return _table(
        rows, names, dtypes,
        {"description": "zero_point: AB mag for 1 e-/s at unit flat incl. extinction and transparency; sky_e_per_px at unit flat"},
    )


def _epochs_table(plan: SurveyPlan) -> Table:
    cat = plan.catalog
    kinds = np.asarray(cat["kind"])
    moving = np.flatnonzero((kinds == "variable") | (kinds == "asteroid"))
    rows = []
    for e in plan.science:
        ra, dec = source_positions(cat, e.mjd_mid)
        mags = plan.source_magnitudes(e)
        views = [plan.view(e, d) for d in plan.detectors]
        pix = [v.sky_to_pixel(ra[moving], dec[moving]) for v in views]
        for j, i in enumerate(moving):
            det_name, x, y, xr, yr = "", math.nan, math.nan, math.nan, math.nan
            for v, (px, py) in zip(views, pix):
                if v.contains(px[j], py[j]):
                    det_name, x, y = v.detector.name, float(px[j]), float(py[j])
                    rx, ry = v.detector.assembled_to_raw(x, y)
                    xr, yr = float(rx), float(ry)
            rows.append(
                {
                    "expnum": e.expnum, "visit": e.conditions.visit_index if e.conditions else -1,
                    "id": int(cat["id"][i]), "kind": str(kinds[i]), "mjd_mid": e.mjd_mid,
                    "ra": float(ra[i]), "dec": float(dec[i]), "mag": float(mags[i]),
                    "flux_nJy": float(3631.0e9 * 10 ** (-0.4 * mags[i])),
                    "counts_e": float(e.counts_e(mags[i])),
                    "detector": det_name, "x": x, "y": y, "x_raw": xr, "y_raw": yr,
                }
            )
    names = ["expnum", "visit", "id", "kind", "mjd_mid", "ra", "dec", "mag", "flux_nJy", "counts_e", "detector", "x", "y", "x_raw", "y_raw"]
    dtypes = [int, int, int, str, float, float, float, float, float, float, str, float, float, float, float]
    return _table(
        rows, names, dtypes,
        {"description": "per-visit truth of variables and asteroids at mid-exposure; counts_e at unit flat; x, y assembled and x_raw, y_raw raw 0-based pixels (NaN off the CCDs)"},
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
