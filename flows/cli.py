"""The ``coadd`` command line.

Every subcommand has ``--help``. Errors are reported as one clear line on stderr with a
non-zero exit status; ``--debug`` shows the full traceback instead. Heavy imports
(Prefect, GalSim, SQLAlchemy) happen inside the commands so ``coadd --help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from flows import cli_common

log = logging.getLogger("coadd")

EXIT_ERROR = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure the user can act on; its message is shown without a traceback."""


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a survey: raw MegaPrime frames, calibration frames, refcat and truth",
        description=(
            "Render a small survey with GalSim into real-format CFHT MegaPrime raw files "
            "(one MEF per exposure), bias/dark/flat frames, a reference catalog and truth files."
        ),
    )
    p.add_argument("--preset", default="tiny", help="tiny (seconds), small (tiny CCDs, 8 visits), demo (minutes) or full (all 36 CCDs); default: tiny")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (created)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering CCDs in parallel (default: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("table", "json"), default="table", help="summary format")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from flows.simulate import run_simulation, summary_rows

    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    result = run_simulation(
        args.preset, args.out, seed=args.seed, progress=not args.no_progress, workers=args.workers
    )
    rows = summary_rows(result)
    if args.format == "json":
        print(cli_common.format_json(rows))
    else:
        print(cli_common.format_table(rows))
        print(f"\nwrote {len(rows)} exposures to {args.out}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline that exists so far on simulated data, embedded defaults",
        description=(
            "Simulate the demo survey and run every pipeline stage on it with the embedded "
            "defaults (SQLite registry, local files, local Prefect); print where the outputs are."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"), metavar="DIR", help="output directory (default: ./demo_output)")
    p.add_argument("--preset", default="demo", help="simulation preset (default: demo)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering CCDs (default: 1; pixel transfer between processes outweighs the gain on 2 cores)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    report = run_demo(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    print(report)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score the coadds of a simulated run against the simulator's truth",
        description=(
            "For every patch coadded in a simulated run (the output directory of 'coadd demo'), "
            "assemble the stored warps with CompareWarp and with SafeClip and print, side by "
            "side: the fraction of artifact pixels (trails, ghost, asteroid, cosmic rays) "
            "rejected, the artifact flux left in the coadd, false clips on static and variable "
            "stars, their photometry against truth and the coadd's noise."
        ),
    )
    p.add_argument("out", type=Path, metavar="DIR", help="output directory of a simulated run (holds truth/ and repo/)")
    p.add_argument("--coadds", default="demo/coadd", help="collection of the deepCoadds (default: demo/coadd)")
    p.add_argument("--warps", default="demo/warp", help="collection of the warps (default: demo/warp)")
    p.add_argument("--calexps", default="demo/isr", help="collection of the calexps (default: demo/isr)")
    p.add_argument(
        "--method", action="append", choices=("compare-warp", "safe-clip"),
        help="method to score (repeatable; default: both)",
    )
    p.add_argument(
        "--threshold", type=float, default=1.0,
        help="an artifact pixel adds more than this many sigma of the warp's noise (default: 1)",
    )
    cli_common.add_data_query_argument(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import evaluate_run, format_evaluation

    methods = tuple(args.method or ("compare-warp", "safe-clip"))
    results = evaluate_run(
        args.out, coadds=args.coadds, warps=args.warps, calexps=args.calexps, methods=methods,
        threshold=args.threshold, where=args.data_query,
    )
    print(format_evaluation(results))
    return 0


def _add_camera(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="show a camera definition (detectors, amplifiers)")
    p.add_argument("name", nargs="?", default="MegaPrime", help="camera name (default: MegaPrime)")
    cli_common.add_format_argument(p)
    p.set_defaults(func=_cmd_camera)


def _cmd_camera(args: argparse.Namespace) -> int:
    from coadd_core.camera import load_camera

    camera = load_camera(args.name)
    rows = [
        {
            "detector": det.id,
            "name": det.name,
            "serial": det.serial,
            "fp_x_mm": round(det.focal_plane_x_mm, 2),
            "fp_y_mm": round(det.focal_plane_y_mm, 2),
            "rotation": det.rotation_deg,
            "amps": ",".join(a.name for a in det.amplifiers),
            "gain": ",".join(f"{a.gain:.2f}" for a in det.amplifiers),
        }
        for det in camera.detectors
    ]
    print(cli_common.format_json(rows) if args.format == "json" else cli_common.format_table(rows))
    return 0


def _add_skymap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("skymap", help="sky map geometry: find the tract and patch of a position")
    ssub = p.add_subparsers(dest="skymap_command", metavar="COMMAND", required=True)
    f = ssub.add_parser("find", help="tract and patch (inner region) holding each RA,Dec position")
    f.add_argument("positions", nargs="+", metavar="RA,DEC", help="positions in degrees, e.g. 150.1,2.2")
    f.add_argument("--type", choices=("rings",), default="rings", help="sky map kind (default: rings)")
    cli_common.add_format_argument(f)
    f.set_defaults(func=_cmd_skymap_find)
    r = ssub.add_parser(
        "register",
        help="register a sky map's tracts and patches (with their sky regions) in a repository",
        description=(
            "Write the skymap, tract and patch records with their regions into the registry's "
            "spatial index, and the sky map definition as a skyMap dataset in RUN 'skymaps'. "
            "Project defaults: rings, 120 rings, TAN, 0.185 arcsec/px, patches 4000x4000 + 100 border."
        ),
    )
    cli_common.add_repo_argument(r)
    r.add_argument("name", metavar="NAME", help="sky map name in the registry, e.g. 'rings'")
    r.add_argument("--type", choices=("rings", "discrete"), default="rings", help="sky map kind (default: rings)")
    r.add_argument("--ra-list", type=_float_list, default=None, metavar="RA,...", help="discrete: tract centre RAs (deg)")
    r.add_argument("--dec-list", type=_float_list, default=None, metavar="DEC,...", help="discrete: tract centre Decs (deg)")
    r.add_argument("--radius-list", type=_float_list, default=None, metavar="R,...", help="discrete: tract radii (deg)")
    r.add_argument("--pixel-scale", type=float, default=None, help="arcsec per pixel (default: 0.185)")
    r.add_argument(
        "--tracts",
        default="all",
        help="'all' (default; the rings map has 18938 tracts, a few minutes), 'overlapping' (tracts "
        "overlapping the registered visits) or a comma-separated list of tract ids",
    )
    r.set_defaults(func=_cmd_skymap_register)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _cmd_skymap_register(args: argparse.Namespace) -> int:
    from coadd_core.skymap import make_skymap
    from registry.butler import Butler
    from registry.skymaps import register_skymap, tracts_overlapping_visits

    options: dict = {}
    if args.pixel_scale is not None:
        options["pixel_scale"] = args.pixel_scale
    if args.type == "discrete":
        if not (args.ra_list and args.dec_list and args.radius_list):
            raise CommandError("a discrete sky map needs --ra-list, --dec-list and --radius-list")
        options.update(ra_list=args.ra_list, dec_list=args.dec_list, radius_list=args.radius_list)
    skymap = make_skymap(args.type, **options)
    with Butler.open(args.repo) as butler:
        if args.tracts == "all":
            tract_ids = None
        elif args.tracts == "overlapping":
            tract_ids = tracts_overlapping_visits(butler, skymap)
            if not tract_ids:
                raise CommandError("no registered visit overlaps the sky map: ingest science raws first")
        else:
            try:
                tract_ids = [int(t) for t in args.tracts.split(",")]
            except ValueError:
                raise CommandError(f"--tracts: expected all, overlapping or tract ids, got {args.tracts!r}") from None
        counts = register_skymap(butler, args.name, skymap, tract_ids=tract_ids, progress=True)
    print(f"sky map {args.name!r} ({args.type}): {counts['tracts']} tract(s) and {counts['patches']} patch(es) registered")
    return 0


def _parse_position(text: str) -> tuple[float, float]:
    try:
        ra_text, dec_text = text.split(",")
        ra, dec = float(ra_text), float(dec_text)
    except ValueError as exc:
        raise CommandError(f"invalid position {text!r}: expected RA,DEC in degrees") from exc
    if not -90.0 <= dec <= 90.0:
        raise CommandError(f"invalid position {text!r}: Dec must be within [-90, 90]")
    return ra % 360.0, dec


def _cmd_skymap_find(args: argparse.Namespace) -> int:
    from flows.skymap_info import find_positions

    positions = [_parse_position(p) for p in args.positions]
    rows = find_positions(positions, kind=args.type)
    print(cli_common.format_json(rows) if args.format == "json" else cli_common.format_table(rows))
    return 0


def _add_repo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repo", help="create a data repository")
    rsub = p.add_subparsers(dest="repo_command", metavar="COMMAND", required=True)
    c = rsub.add_parser(
        "create",
        help="create a repository (registry + datastore) at REPO",
        description=(
            "Create a data repository. Embedded defaults: registry sqlite:///REPO/registry.sqlite3, "
            "files under REPO/. For a cluster: --registry-url postgresql+psycopg://... and "
            "--datastore-url s3://bucket/prefix (credentials come from the environment, never the config)."
        ),
    )
    cli_common.add_repo_argument(c)
    c.add_argument("--registry-url", default=None, help="SQLAlchemy URL of the registry database")
    c.add_argument("--datastore-url", default=None, help="root of the datastore (path or s3:// URL)")
    c.add_argument("--exist-ok", action="store_true", help="do nothing if the repository exists")
    c.set_defaults(func=_cmd_repo_create)
    u = rsub.add_parser(
        "upgrade",
        help="migrate the repository's registry schema to this version of the code",
        description="Run the registry's schema migrations (Alembic) up to the newest revision.",
    )
    cli_common.add_repo_argument(u)
    u.set_defaults(func=_cmd_repo_upgrade)


def _cmd_repo_create(args: argparse.Namespace) -> int:
    from registry.butler import Butler

    with Butler.create(
        args.repo, registry_url=args.registry_url, datastore_url=args.datastore_url, exist_ok=args.exist_ok
    ) as butler:
        print(f"repository {butler.repo}: registry {butler.registry.url}, datastore {butler.datastore.root_url}")
    return 0


def _cmd_repo_upgrade(args: argparse.Namespace) -> int:
    from registry.butler import RepoConfig
    from registry.registry import Registry

    config = RepoConfig.load(args.repo)
    Registry.upgrade_schema(config.registry_url)
    with Registry.open(config.registry_url) as registry:
        print(f"registry {registry.url} is at the newest schema")
    return 0


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="ingest raw MegaPrime files (science, bias, dark, flat) into a repository",
        description=(
            "Read each raw file's CCD headers (astro_metadata_translator), register the instrument, "
            "detector, filter, exposure and visit records with each CCD's sky region, and a 'raw' "
            "dataset per exposure-detector. Re-ingesting a file is a reported no-op; a bad file is "
            "reported with its cause and the others are ingested."
        ),
    )
    cli_common.add_repo_argument(p)
    p.add_argument("files", nargs="+", metavar="FILES_OR_URLS", help="raw files, directories, globs or s3:// URLs")
    p.add_argument(
        "--transfer", choices=("copy", "move", "symlink", "direct"), default="copy",
        help="how files enter the datastore (default: copy; direct leaves them in place)",
    )
    p.add_argument("--run", default=None, help="RUN collection (default: <instrument>/raw/all)")
    p.add_argument(
        "--task-runner", dest="task_runner", type=cli_common.parse_task_runner, default=None,
        metavar="RUNNER", help="threads (default), processes or dask[=ADDRESS] for reading headers",
    )
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest import run_ingest

    if args.run is not None:
        cli_common.validate_collection_name(args.run)
    result = run_ingest(args.repo, args.files, transfer=args.transfer, run=args.run, task_runner=args.task_runner)
    print(result["summary"])
    for uri, message in result["failed"]:
        print(f"  failed: {message}")
    return EXIT_ERROR if result["failed"] else 0


def _add_query(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("query", help="query datasets, collections and data IDs of a repository")
    qsub = p.add_subparsers(dest="query_command", metavar="COMMAND", required=True)
    d = qsub.add_parser("datasets", help="datasets of a type in collections, filtered by a data query")
    cli_common.add_repo_argument(d)
    d.add_argument("dataset_type", metavar="DATASET_TYPE")
    d.add_argument(
        "-c", "--collections", type=cli_common.parse_collection_list, required=True,
        metavar="COLLECTIONS", help="comma-separated collections, searched in order",
    )
    cli_common.add_data_query_argument(d)
    d.add_argument("--all", dest="find_first", action="store_false", help="every match, not only the first along the collections")
    cli_common.add_format_argument(d)
    d.set_defaults(func=_cmd_query_datasets)
    c = qsub.add_parser("collections", help="collections (RUN, CHAINED, CALIBRATION) of a repository")
    cli_common.add_repo_argument(c)
    c.add_argument("pattern", nargs="?", default=None, help="glob pattern, e.g. 'MegaPrime/*'")
    cli_common.add_format_argument(c)
    c.set_defaults(func=_cmd_query_collections)
    i = qsub.add_parser("data-ids", help="dimension records (exposure, visit, detector, patch, ...) matching a data query")
    cli_common.add_repo_argument(i)
    i.add_argument("element", metavar="ELEMENT", help="exposure, visit, detector, physical_filter, tract, patch, ...")
    cli_common.add_data_query_argument(i)
    cli_common.add_format_argument(i)
    i.set_defaults(func=_cmd_query_data_ids)


def _cmd_query_datasets(args: argparse.Namespace) -> int:
    from registry.butler import Butler

    with Butler.open(args.repo) as butler:
        refs = butler.query_datasets(args.dataset_type, args.collections, args.data_query, find_first=args.find_first)
    if args.format == "json":
        print(cli_common.format_json(
            {"dataset_type": r.dataset_type, "id": str(r.id), "data_id": dict(r.data_id), "run": r.run, "uri": r.uri}
            for r in refs
        ))
    else:
        rows = [{"type": r.dataset_type, "run": r.run, **dict(r.data_id), "uri": r.uri} for r in refs]
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "uri")) + ["uri"] if rows else None
        print(cli_common.format_table(rows, columns))
    return 0


def _cmd_query_collections(args: argparse.Namespace) -> int:
    from registry.butler import Butler

    with Butler.open(args.repo) as butler:
        names = butler.registry.query_collections(args.pattern)
        rows = []
        for name in names:
            kind = butler.registry.get_collection_type(name)
            row = {"name": name, "type": kind.value}
            if kind.value.upper() == "CHAINED":
                row["children"] = ",".join(butler.registry.get_chain(name))
            rows.append(row)
    if args.format == "json":
        print(cli_common.format_json(rows))
    else:
        print(cli_common.format_table(rows, ["name", "type", "children"]))
    return 0


def _cmd_query_data_ids(args: argparse.Namespace) -> int:
    import dataclasses

    from registry.butler import Butler

    with Butler.open(args.repo) as butler:
        records = butler.registry.query_dimension_records(args.element, where=args.data_query)
    rows = []
    for rec in records:
        row = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec) if f.name not in ("region", "definition", "hash")}
        rows.append(row)
    print(cli_common.format_json(rows) if args.format == "json" else cli_common.format_table(rows))
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline stage over a data query (calibs, isr, ...)",
        description=(
            "Run one pipeline stage as a Prefect flow. Outputs go to the RUN OUTPUT/run, and "
            "OUTPUT becomes a CHAINED collection of that run and the inputs, so the next stage can "
            "read everything through -i OUTPUT. Existing outputs are skipped unless --clobber."
        ),
    )
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    c = stages.add_parser(
        "calibs",
        help="master bias, dark and flat per detector, certified into a CALIBRATION collection",
        description=(
            "Combine the bias, dark and flat raws (found by OBSTYPE) of every detector into master "
            "calibrations (ISR to each calibration's level, clipped mean; dark per second of dark "
            "time; flat normalised to a mean of 1 per detector) and certify them into OUTPUT, a "
            "CALIBRATION collection, valid for all times."
        ),
    )
    cli_common.add_run_arguments(c)
    c.set_defaults(func=_cmd_run_calibs)
    i = stages.add_parser(
        "isr",
        help="raw science CCDs to calexps: ISR, background, cosmic rays, PSF, photometric calibration",
        description=(
            "One task per exposure-detector: ISR with the master calibrations found in the inputs "
            "(by detector, filter and date), then characterize (background model saved as "
            "calexpBackground and subtracted, cosmic rays, PSF from bright isolated stars, zero point "
            "from the reference catalog). With no -d, every science exposure-detector found."
        ),
    )
    cli_common.add_run_arguments(i)
    i.add_argument("--refcat", default=None, help="reference catalog name (default: the only one ingested)")
    i.add_argument("--save-post-isr", action="store_true", help="also write postISRCCD datasets")
    i.set_defaults(func=_cmd_run_isr)
    w = stages.add_parser(
        "warp",
        help="calexps to direct and PSF-matched warps on every patch each visit overlaps",
        description=(
            "One task per visit: its calexps (calibrated to nJy) are Lanczos3-warped onto each patch's "
            "outer box (deepCoadd_directWarp) and PSF-matched to the model PSF "
            "(deepCoadd_psfMatchedWarp). With no -d, every visit and every patch it overlaps; -d may use "
            "visit, detector, band, tract and patch."
        ),
    )
    cli_common.add_run_arguments(w)
    w.add_argument("--skymap", default=None, help="sky map name (default: the one registered)")
    w.set_defaults(func=_cmd_run_warp)
    k = stages.add_parser(
        "coadd",
        help="warps to artifact-free deep coadds per patch x band (CompareWarp, or legacy SafeClip)",
        description=(
            "One task per patch x band: the static-sky template from the PSF-matched warps (clipped "
            "mean), artifacts found by comparing each PSF-matched warp with it (threshold detection, "
            "temporal and spatial rules, sources contained in template footprints preserved), then "
            "the direct warps assembled with the artifacts CLIPPED. Writes deepCoadd and "
            "deepCoadd_nImage, and QA pictures (coadd, CLIPPED mask, epoch count) beside the outputs. "
            "With no -d, every patch x band that has warps."
        ),
    )
    cli_common.add_run_arguments(k)
    k.add_argument("--method", choices=("compare-warp", "safe-clip"), default="compare-warp", help="artifact rejection (default: compare-warp)")
    k.add_argument("--skymap", default=None, help="sky map name (default: the one registered)")
    k.add_argument("--write-template", action="store_true", help="also write deepCoadd_templateCoadd (the static-sky model)")
    k.set_defaults(func=_cmd_run_coadd)


def _finish_stage(result: dict) -> int:
    print(result["summary"])
    for label, message in result["failed"]:
        print(f"  failed: {label}: {message}")
    return EXIT_ERROR if result["failed"] else 0


def _cmd_run_calibs(args: argparse.Namespace) -> int:
    from flows.calibs import run_calibs

    result = run_calibs(
        args.repo, args.inputs, args.output, where=args.data_query, clobber=args.clobber, task_runner=args.task_runner
    )
    return _finish_stage(result)


def _cmd_run_isr(args: argparse.Namespace) -> int:
    from flows.isr import run_isr_stage

    result = run_isr_stage(
        args.repo, args.inputs, args.output, where=args.data_query, clobber=args.clobber,
        refcat=args.refcat, save_post_isr=args.save_post_isr, task_runner=args.task_runner,
    )
    return _finish_stage(result)


def _cmd_run_warp(args: argparse.Namespace) -> int:
    from flows.warp import run_warp_stage

    result = run_warp_stage(
        args.repo, args.inputs, args.output, where=args.data_query, clobber=args.clobber,
        skymap=args.skymap, task_runner=args.task_runner,
    )
    return _finish_stage(result)


def _cmd_run_coadd(args: argparse.Namespace) -> int:
    from flows.coadd import run_coadd_stage

    result = run_coadd_stage(
        args.repo, args.inputs, args.output, where=args.data_query, clobber=args.clobber, method=args.method,
        skymap=args.skymap, write_template=args.write_template, task_runner=args.task_runner,
    )
    code = _finish_stage(result)
    if result.get("qa_dir"):
        print(f"QA pictures: {result['qa_dir']}")
    return code


def _add_ingest_refcat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest-refcat",
        help="ingest a reference catalog (CSV or FITS: ra, dec, <band>_mag[, <band>_mag_err])",
        description=(
            "Store a photometric reference catalog in the repository (RUN refcats/NAME). Columns: "
            "ra, dec in degrees and <band>_mag AB magnitudes with optional <band>_mag_err; other "
            "names can be given with the options. Ingesting again under the same name replaces it."
        ),
    )
    cli_common.add_repo_argument(p)
    p.add_argument("file", metavar="FILE", help="CSV, ECSV or FITS table")
    p.add_argument("--name", default=None, help="catalog name (default: the file name without extension)")
    p.add_argument("--ra-column", default=None, help="RA column (default: ra)")
    p.add_argument("--dec-column", default=None, help="Dec column (default: dec)")
    p.add_argument("--mag-column", default=None, help="magnitude column template (default: {band}_mag)")
    p.add_argument("--mag-err-column", default=None, help="magnitude error template (default: {band}_mag_err)")
    p.set_defaults(func=_cmd_ingest_refcat)


def _cmd_ingest_refcat(args: argparse.Namespace) -> int:
    import os

    from flows.isr import ingest_refcat
    from registry.butler import Butler

    name = args.name or os.path.basename(args.file).split(".")[0]
    with Butler.open(args.repo) as butler:
        ref = ingest_refcat(
            butler, args.file, name, ra=args.ra_column, dec=args.dec_column, mag=args.mag_column,
            mag_err=args.mag_err_column,
        )
        table = butler.get(ref)
    bands = sorted(c[: -len("_mag")] for c in table.colnames if c.endswith("_mag"))
    print(f"reference catalog {name!r}: {len(table)} sources, bands {', '.join(bands)} ({ref.run})")
    return 0


def _add_check_query(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-query",
        help="parse a DATA_QUERY expression and show it normalised (or where it is wrong)",
    )
    p.add_argument("query", metavar="DATA_QUERY")
    p.set_defaults(func=_cmd_check_query)


def _cmd_check_query(args: argparse.Namespace) -> int:
    from registry import dataquery

    node = dataquery.parse(args.query)
    keys = sorted(dataquery.identifiers(node)) if node is not None else []
    print(dataquery.format(node) if node is not None else "(no constraint)")
    print("keys: " + (", ".join(keys) if keys else "-"))
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_evaluate,
    _add_simulate,
    _add_repo,
    _add_ingest,
    _add_ingest_refcat,
    _add_query,
    _add_run,
    _add_camera,
    _add_skymap,
    _add_check_query,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coadd",
        description=(
            "Coadd and template pipeline for wide-field imaging surveys: raw CCD frames in, "
            "artifact-free deep coadds and difference-imaging templates out."
        ),
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default: INFO)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "httpcore", "urllib3", "botocore", "aiobotocore", "s3fs", "numba", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, args.log_level)))
    from flows.prefect_env import apply_embedded_defaults

    apply_embedded_defaults("WARNING" if args.log_level == "INFO" else args.log_level)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("coadd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into messages
        if args.debug:
            raise
        print(f"coadd: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, (CommandError,)):
        return message
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    if isinstance(exc, KeyError):
        message = message.strip("'\"")
    return message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
