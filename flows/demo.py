"""The demo pipeline: every stage that exists so far, on simulated data, embedded defaults.

The flow reads like the data flow: simulate a survey, create a repository (SQLite
registry, local files), ingest the raws, register the sky map over them, make master
calibrations, calexps, warps and CompareWarp coadds of the deepest patches, make
quick-look pictures and report what was made. Tasks exchange paths and small
summaries, never pixel arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.cli_common import format_table


@task(name="simulate-survey")
def simulate_survey(preset: str, out_dir: str, seed: int | None, workers: int) -> dict[str, Any]:
    """Render the survey; returns file paths and the truth summary (no pixels)."""
    from coadd_core.sim import simulate

    result = simulate(preset, out_dir, seed=seed, progress=True, workers=workers)
    return {
        "raw_files": [str(p) for p in result.raw_files],
        "calib_files": {k: [str(p) for p in v] for k, v in result.calib_files.items()},
        "refcat": str(result.refcat_path),
        "truth": {k: str(v) for k, v in result.truth_paths.items()},
        "summary": result.summary,
        "exposures": [dict(e) for e in result.exposures],
        "elapsed_s": result.elapsed_s,
    }


@task(name="raw-previews")
def raw_previews(raw_files: list[str], out_dir: str) -> list[str]:
    """PNG mosaics of the raw science frames for a quick look."""
    from coadd_core.qa import save_raw_previews

    return [str(p) for p in save_raw_previews(raw_files, out_dir, binning=8)]


@task(name="create-repository")
def create_repository(repo: str) -> str:
    """The embedded-default repository (reused when it already exists)."""
    from registry.butler import Butler

    with Butler.create(repo, exist_ok=True) as butler:
        return butler.repo


@task(name="register-skymap")
def register_demo_skymap(repo: str, name: str = "rings") -> dict[str, Any]:
    """The default rings sky map, registered for the tracts the visits overlap."""
    from coadd_core.skymap import make_skymap
    from registry.butler import Butler
    from registry.skymaps import register_skymap, tracts_overlapping_visits

    skymap = make_skymap("rings")
    with Butler.open(repo) as butler:
        tracts = tracts_overlapping_visits(butler, skymap)
        counts = register_skymap(butler, name, skymap, tract_ids=tracts)
        visits: dict[tuple[int, int], set[int]] = {}
        ccds: dict[tuple[int, int], int] = {}
        for rec in butler.registry.query_dimension_records("visit_detector_region"):
            for d in butler.registry.patches_overlapping(rec.region, skymap=name):
                key = (int(d["tract"]), int(d["patch"]))
                visits.setdefault(key, set()).add(int(rec.visit))
                ccds[key] = ccds.get(key, 0) + 1
    # The demo coadds the two deepest patches (most visits, then most CCD overlaps: the
    # best covered, where the survey's artifacts are), which keeps it to minutes.
    deepest = sorted(visits, key=lambda k: (-len(visits[k]), -ccds[k], k))[:2]
    return {
        "skymap": name,
        "tracts": tracts,
        "registered": counts,
        "patches_with_data": sorted(visits),
        "deepest": deepest,
        "depth": {f"{t}/{p}": len(visits[(t, p)]) for t, p in deepest},
    }


def _report(
    sim: dict[str, Any],
    previews: list[str],
    out_dir: Path,
    ingest: dict[str, Any],
    sky: dict[str, Any],
    calibs: dict[str, Any],
    isr: dict[str, Any],
    warps: dict[str, Any],
    coadds: dict[str, Any],
) -> str:
    s = sim["summary"]
    rows = [
        {
            "exposure": e["expnum"],
            "kind": e["kind"],
            "filter": e["physical_filter"],
            "exptime_s": e["exptime"],
            "file": Path(e["file"]).name,
        }
        for e in sim["exposures"]
    ]
    lines = [
        f"Demo pipeline outputs in {out_dir.resolve()}",
        "",
        "1. simulate: raw MegaPrime frames, calibration frames, reference catalog, truth",
        f"   preset {s['preset']}, seed {s['seed']}, detectors {', '.join(s['detectors'])}, "
        f"{sim['elapsed_s']:.1f} s",
        f"   {s['n_science']} science exposures, {s['n_bias']} bias, {s['n_dark']} dark, {s['n_flat']} flat",
        f"   truth: {s['n_stars']} stars ({s['n_saturating_stars']} saturating), {s['n_galaxies']} galaxies, "
        f"{s['n_variables']} variable stars, {s['n_asteroids']} asteroid(s); artifacts: {s['n_trails']} "
        f"satellite trails, {s['n_ghosts']} ghost(s), {s['n_cosmic_rays']} cosmic rays",
        "",
        format_table(rows),
        "",
        "2. repository: SQLite registry + local datastore, raws ingested through the registry",
        f"   {ingest['summary']}",
        f"   sky map {sky['skymap']!r}: tract(s) {', '.join(map(str, sky['tracts']))}; "
        f"{len(sky['patches_with_data'])} patch(es) overlap the science CCDs",
        "3. calibs: master bias, dark, flat per detector, certified in MegaPrime/calib",
        f"   {calibs['summary']}",
        "4. isr: ISR + background + cosmic rays + PSF + zero point per CCD -> calexp (demo/isr)",
        f"   {isr['summary']}",
        _calexp_summary(isr["calexps"]),
        f"5. warp: direct + PSF-matched warps on the deepest patches ({', '.join(f'{k}: {v} visits' for k, v in sky['depth'].items())})",
        f"   {warps['summary']}",
        "6. coadd: template (clipped mean of PSF-matched warps), CompareWarp artifact rejection, deepCoadd",
        f"   {coadds['summary']}",
        *[
            f"   tract {c['tract']} patch {c['patch']}: {c['warps']} warps, {c['clipped_pixels']} CLIPPED coadd pixels"
            for c in coadds["coadds"]
        ],
        f"   QA pictures (coadd, CLIPPED mask, epoch count): {coadds['qa_dir']}",
        f"   score against the truth (CompareWarp and SafeClip side by side): coadd evaluate {out_dir}",
        "",
        f"repository:       {out_dir / 'repo'}  (try: coadd query datasets {out_dir / 'repo'} raw -c MegaPrime/raw/all)",
        f"raw files:        {out_dir / 'raw'}",
        f"reference catalog: {sim['refcat']}",
        f"truth tables:     {out_dir / 'truth'}",
        f"pictures:         {out_dir / 'pictures'} ({len(previews)} PNG)",
    ]
    return "\n".join(lines)


def _calexp_summary(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "   (no new calexps)"
    fwhm = [r["PSF_FWHM"] for r in rows if r.get("PSF_FWHM")]
    zp = [r["ZERO_POINT"] for r in rows if r.get("ZERO_POINT")]
    parts = []
    if fwhm:
        parts.append(f"PSF FWHM {min(fwhm):.2f}..{max(fwhm):.2f} px")
    if zp:
        parts.append(f"zero points {min(zp):.3f}..{max(zp):.3f} mag")
    return "   " + ", ".join(parts)


@flow(name="demo-pipeline", log_prints=False)
def demo_pipeline(out_dir: str = "demo_output", preset: str = "demo", seed: int | None = None, workers: int = 1) -> str:
    """Simulate the demo survey and run every available stage on it; return a report."""
    logger = get_run_logger()
    out = Path(out_dir).resolve()
    logger.info("simulating the %s survey into %s", preset, out)
    sim = simulate_survey(preset, str(out), seed, workers)
    science = [e["file"] for e in sim["exposures"] if e["kind"] == "science"]
    previews = raw_previews(science, str(out / "pictures"))
    repo = create_repository(str(out / "repo"))
    from flows.ingest import ingest_raws

    ingest = ingest_raws(repo=repo, files=sim["raw_files"] + [f for v in sim["calib_files"].values() for f in v], transfer="symlink")
    if ingest["failed"]:
        raise RuntimeError(f"demo ingest failed for {len(ingest['failed'])} file(s): {ingest['failed'][0][1]}")
    sky = register_demo_skymap(repo)
    from flows.calibs import calibs_flow
    from flows.isr import ingest_refcat_task, isr_flow
    from flows.runners import make_task_runner

    ingest_refcat_task(repo, sim["refcat"], "sim_ps1")
    calibs = calibs_flow.with_options(task_runner=make_task_runner("processes"))(
        repo=repo, inputs=["MegaPrime/raw/all"], output="MegaPrime/calib"
    )
    isr = isr_flow.with_options(task_runner=make_task_runner("processes"))(
        repo=repo, inputs=["MegaPrime/raw/all", "MegaPrime/calib"], output="demo/isr"
    )
    from flows.coadd import coadd_flow
    from flows.warp import warp_flow

    tract = sky["deepest"][0][0]
    patch_list = ", ".join(str(p) for t, p in sky["deepest"] if t == tract)
    where = f"tract = {tract} AND patch IN ({patch_list})"
    warps = warp_flow.with_options(task_runner=make_task_runner("processes"))(
        repo=repo, inputs=["demo/isr"], output="demo/warp", where=where
    )
    coadds = coadd_flow.with_options(task_runner=make_task_runner("processes"))(
        repo=repo, inputs=["demo/warp"], output="demo/coadd", where=where, write_template=True
    )
    failed = calibs["failed"] + isr["failed"] + warps["failed"] + coadds["failed"]
    if failed:
        raise RuntimeError(f"demo: {len(failed)} task(s) failed, first: {failed[0][0]}: {failed[0][1]}")
    report = _report(sim, previews, out, ingest, sky, calibs, isr, warps, coadds)
    create_markdown_artifact(
        key="demo-report",
        markdown="```\n" + report + "\n```\n",
        description="What the demo pipeline made and where",
    )
    logger.info("demo finished: %d raw files, %d pictures", len(sim["raw_files"]), len(previews))
    return report


def run_demo(out_dir: Path, *, preset: str = "demo", seed: int | None = None, workers: int = 1) -> str:
    """Entry point for ``coadd demo``."""
    return demo_pipeline(out_dir=str(out_dir), preset=preset, seed=seed, workers=workers)
