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
    p.add_argument("--preset", default="tiny", help="tiny (seconds), demo (minutes) or full (all 36 CCDs); default: tiny")
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
    p.add_argument("--workers", type=int, default=2, help="processes rendering CCDs (default: 2)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    report = run_demo(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    print(report)
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
    _add_simulate,
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
    for noisy in ("httpx", "httpcore", "urllib3", "botocore", "aiobotocore", "s3fs", "numba"):
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
