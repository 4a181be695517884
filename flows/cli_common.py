"""Argument conventions shared by every ``coadd`` subcommand.

LSST users know these from ``pipetask`` and ``butler``:

* ``coadd run STAGE REPO -i INPUT_COLLECTIONS -o OUTPUT_COLLECTION [-d DATA_QUERY]
  [--clobber] [--task-runner threads|processes|dask[=SCHEDULER_ADDRESS]]``
* ``coadd query datasets REPO DATASET_TYPE -c COLLECTIONS [-d DATA_QUERY]
  [--format table|json]``

Keeping them in one place means every stage parses, validates and documents them the
same way.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

TaskRunnerKind = Literal["threads", "processes", "dask"]

_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
_DASK_ADDRESS_RE = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://[A-Za-z0-9_.\-\[\]:]+$")


@dataclass(frozen=True)
class TaskRunnerSpec:
    """Which Prefect task runner a flow uses, as given by ``--task-runner``.

    ``threads`` suits I/O-bound glue; ``processes`` is the default for pixel work
    (astropy's WCS is not thread-safe); ``dask`` runs on a dask.distributed cluster,
    local (no address) or at ``SCHEDULER_ADDRESS``.
    """

    kind: TaskRunnerKind = "processes"
    address: str | None = None
    max_workers: int | None = None

    def __str__(self) -> str:
        return self.kind if self.address is None else f"{self.kind}={self.address}"


def parse_task_runner(text: str) -> TaskRunnerSpec:
    """Parse ``threads``, ``processes``, ``dask`` or ``dask=tcp://host:port``."""
    kind, sep, address = text.strip().partition("=")
    kind = kind.strip().lower()
    if kind not in ("threads", "processes", "dask"):
        raise argparse.ArgumentTypeError(
            f"unknown task runner {text!r}: use threads, processes, dask or dask=ADDRESS"
        )
    if sep and kind != "dask":
        raise argparse.ArgumentTypeError(f"only the dask task runner takes an address, got {text!r}")
    if sep:
        address = address.strip()
        if not _DASK_ADDRESS_RE.match(address):
            raise argparse.ArgumentTypeError(
                f"invalid dask scheduler address {address!r}: expected e.g. tcp://host:8786"
            )
        return TaskRunnerSpec(kind="dask", address=address)
    return TaskRunnerSpec(kind=kind)  # type: ignore[arg-type]


def parse_collection_list(text: str) -> list[str]:
    """Split a comma-separated list of collection names and validate each name."""
    names = [part.strip() for part in text.split(",")]
    if not names or any(not name for name in names):
        raise argparse.ArgumentTypeError(f"empty collection name in {text!r}")
    for name in names:
        validate_collection_name(name)
    return names


def validate_collection_name(name: str) -> str:
    """Collection names become directory names in the datastore: keep them tame."""
    if not _COLLECTION_RE.match(name) or ".." in name or name.endswith("/"):
        raise argparse.ArgumentTypeError(
            f"invalid collection name {name!r}: use letters, digits, '_', '-', '.' and '/' "
            "(not starting with '/' and without '..')"
        )
    return name


def _collection_arg(text: str) -> str:
    return validate_collection_name(text.strip())


def add_repo_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="repository path or URI (a directory with butler.yaml)")


def add_data_query_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--data-query",
        dest="data_query",
        metavar="DATA_QUERY",
        default="",
        help=(
            "constraint on data-ID keys, e.g. \"instrument='MegaPrime' AND exposure IN (1001, 1002) "
            "AND detector < 4 AND band='r'\" (default: everything)"
        ),
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``coadd run STAGE`` conventions to ``parser``."""
    add_repo_argument(parser)
    parser.add_argument(
        "-i",
        "--input",
        dest="inputs",
        metavar="INPUT_COLLECTIONS",
        type=parse_collection_list,
        required=True,
        help="comma-separated collections to read from, searched in order",
    )
    parser.add_argument(
        "-o",
        "--output",
        dest="output",
        metavar="OUTPUT_COLLECTION",
        type=_collection_arg,
        required=True,
        help="RUN collection to write into (created if needed)",
    )
    add_data_query_argument(parser)
    parser.add_argument(
        "--clobber",
        action="store_true",
        help="recompute and replace outputs that already exist (default: skip them)",
    )
    parser.add_argument(
        "--task-runner",
        dest="task_runner",
        metavar="RUNNER",
        type=parse_task_runner,
        default=TaskRunnerSpec(),
        help="threads, processes (default) or dask[=SCHEDULER_ADDRESS]",
    )


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows as an aligned plain-text table (what ``butler query-datasets`` prints)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0].keys())
    cells = [[_cell(row.get(col)) for col in cols] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(cols)]
    lines = [
        "  ".join(col.ljust(w) for col, w in zip(cols, widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def format_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """One JSON array of objects; values that JSON cannot hold become strings."""
    return json.dumps(list(rows), indent=2, default=str, sort_keys=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
