"""``coadd ingest``: raw files into the repository, as a Prefect flow.

Workers read headers (coarse tasks: a batch of files each) and return small metadata
records; the flow process registers dimension records, transfers each file and
registers its ``raw`` datasets. A bad file is reported with its cause and the rest of
the batch goes on; re-ingesting a file is a reported no-op.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.cli_common import TaskRunnerSpec
from flows.runners import make_task_runner
from registry.ingest import IngestError, IngestReport, RawFileMetadata, read_raw_file_metadata, register_raw_file

RAW_SUFFIXES = (".fits", ".fits.fz", ".fz", ".fits.gz")


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files, directories (their raw FITS files, recursively) and URLs, in sorted order."""
    found: list[str] = []
    for item in inputs:
        if "://" in item:
            found.append(item)
        elif os.path.isdir(item):
            for root, _dirs, files in os.walk(item):
                found += [os.path.join(root, f) for f in files if f.endswith(RAW_SUFFIXES)]
        elif any(ch in item for ch in "*?["):
            found += glob.glob(item)
        else:
            found.append(item)
    return sorted(dict.fromkeys(os.path.abspath(f) if "://" not in f else f for f in found))


@task(name="read-raw-headers")
def read_headers(uris: list[str], storage_options: dict[str, Any]) -> list[RawFileMetadata | tuple[str, str]]:
    """Metadata of each file, or (file, error message) for files that cannot be ingested."""
    out: list[RawFileMetadata | tuple[str, str]] = []
    for uri in uris:
        try:
            out.append(read_raw_file_metadata(uri, storage_options=storage_options))
        except IngestError as exc:
            out.append((uri, str(exc)))
    return out


def _batches(items: list[str], n: int) -> list[list[str]]:
    n = max(1, min(n, len(items)))
    return [items[i::n] for i in range(n)] if items else []


@flow(name="ingest-raws")
def ingest_raws(
    repo: str,
    files: list[str],
    transfer: str = "copy",
    run: str | None = None,
    batches: int = 4,
) -> dict[str, Any]:
    """Ingest raw MegaPrime files (science and bias/dark/flat) into ``repo``."""
    from registry.butler import Butler

    logger = get_run_logger()
    uris = expand_inputs(files)
    if not uris:
        raise IngestError(f"no raw files found in {list(files)}")
    butler = Butler.open(repo)
    report = IngestReport()
    futures = [read_headers.submit(batch, butler.datastore.storage_options) for batch in _batches(uris, batches)]
    results = [item for future in futures for item in future.result()]
    by_uri = {(r.uri if isinstance(r, RawFileMetadata) else r[0]): r for r in results}
    for uri in uris:
        item = by_uri[uri]
        if not isinstance(item, RawFileMetadata):
            report.failed.append(item)
            logger.error("cannot ingest %s", item[1])
            continue
        try:
            status, count = register_raw_file(butler, item, run=run, transfer=transfer)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
            message = f"{uri}: {exc}"
            report.failed.append((uri, message))
            logger.error("cannot ingest %s", message)
            continue
        if status == "already":
            report.already.append(uri)
            logger.info("%s: already ingested, nothing to do", uri)
        else:
            report.ingested.append(uri)
            report.datasets += count
    butler.close()
    logger.info("ingest: %s", report.summary())
    create_markdown_artifact(
        key="ingest-report",
        markdown=_markdown(report),
        description="Raw ingest summary",
    )
    return {
        "ingested": report.ingested,
        "already": report.already,
        "failed": report.failed,
        "datasets": report.datasets,
        "summary": report.summary(),
    }


def _markdown(report: IngestReport) -> str:
    lines = [f"**{report.summary()}**", ""]
    if report.failed:
        lines += ["| file | error |", "|---|---|"]
        lines += [f"| `{os.path.basename(f)}` | {msg.replace('|', '/')} |" for f, msg in report.failed]
    return "\n".join(lines)


def run_ingest(
    repo: str, files: Sequence[str], *, transfer: str = "copy", run: str | None = None,
    task_runner: TaskRunnerSpec | None = None,
) -> dict[str, Any]:
    """Entry point for ``coadd ingest`` (header reads run on threads by default)."""
    spec = task_runner or TaskRunnerSpec(kind="threads")
    runner = make_task_runner(spec)
    return ingest_raws.with_options(task_runner=runner)(
        repo=repo, files=list(files), transfer=transfer, run=run
    )
