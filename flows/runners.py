"""Prefect task runners from the ``--task-runner`` choice."""

from __future__ import annotations

import os
from typing import Any

from flows.cli_common import TaskRunnerSpec


def default_workers() -> int:
    """One worker per core: pixel tasks are CPU-bound and coarse."""
    return max(1, os.cpu_count() or 1)


def make_task_runner(spec: TaskRunnerSpec | str | None) -> Any:
    """A Prefect task runner for ``threads``, ``processes`` or ``dask[=ADDRESS]``."""
    from flows.cli_common import parse_task_runner

    if spec is None:
        spec = TaskRunnerSpec()
    elif isinstance(spec, str):
        spec = parse_task_runner(spec)
    workers = spec.max_workers or default_workers()
    if spec.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if spec.kind == "processes":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # pragma: no cover - optional extra
        raise RuntimeError("the dask task runner needs the 'dask' extra: pip install coadd-pipeline[dask]") from exc
    if spec.address:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
