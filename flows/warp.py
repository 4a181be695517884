"""``coadd run warp``: calexps to direct and PSF-matched warps per visit x patch.

The flow reads like makeWarp: find the calexps, find the patches each visit's CCDs
overlap through the registry's spatial index, then one task per visit reads that
visit's calexps once and writes a ``deepCoadd_directWarp`` and a
``deepCoadd_psfMatchedWarp`` for every patch it touches. One task per visit (rather
than per visit x patch) reads each calexp once; a visit is seconds of work, coarse
enough for any task runner. The flow registers what the tasks wrote.

Warps are stored on the box of their data (parent coordinates of the patch), not the
whole patch: a CCD strip on a patch is a small file, and the coadd treats pixels
outside a warp's box as NO_DATA.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.cli_common import TaskRunnerSpec
from flows.runners import make_task_runner
from flows.stage import (
    TaskOutcome,
    existing_outputs,
    failure_summary,
    open_stage,
    register_outcomes,
)
from registry.refs import DatasetRef, DatasetType
from registry.worker import WorkerButler

WARP_TYPES = ("deepCoadd_directWarp", "deepCoadd_psfMatchedWarp")


@task(name="warp-visit")
def warp_visit(
    worker: WorkerButler,
    visit: int,
    instrument: str,
    calexp_refs: list[DatasetRef],
    patches: list[tuple[int, int]],
    skymap_name: str,
    skymap: Any,
    types: dict[str, DatasetType],
    run: str,
    unique_name: bool,
) -> TaskOutcome:
    """Warp one visit's calexps onto each of ``patches`` (tract, patch): direct + PSF-matched."""
    from coadd_core.crop import crop_to_data
    from coadd_core.warp import make_direct_warp
    from coadd_core.warp.psf_matched import make_psf_matched_warp

    label = f"visit {visit}"
    try:
        calexps = [worker.get(ref, "Exposure") for ref in calexp_refs]
        refs: list[DatasetRef] = []
        stats: list[dict[str, Any]] = []
        for tract_id, patch_id in patches:
            tract = skymap[tract_id]
            patch = tract[patch_id]
            direct = make_direct_warp(calexps, patch.outer_bbox, tract.wcs, visit=visit)
            direct = crop_to_data(direct) if direct is not None else None
            if direct is None:
                continue
            data_id = {"instrument": instrument, "visit": visit, "skymap": skymap_name, "tract": tract_id, "patch": patch_id}
            refs.append(worker.write(direct, types["deepCoadd_directWarp"], data_id, run, unique_name=unique_name))
            matched = make_psf_matched_warp(direct, patch_outer_bbox=patch.outer_bbox)
            matched = crop_to_data(matched) if matched is not None else None
            if matched is not None:
                refs.append(worker.write(matched, types["deepCoadd_psfMatchedWarp"], data_id, run, unique_name=unique_name))
            stats.append(
                {
                    "visit": visit,
                    "tract": tract_id,
                    "patch": patch_id,
                    "coverage": round(float(direct.metadata.get("COVERAGE_FRACTION", 0.0)), 4),
                    "ccds": int(direct.metadata.get("N_CCDS", 0)),
                    "psf_matched": matched is not None,
                    "psf_broader_than_model": bool(matched.metadata.get("PSF_BROADER_THAN_MODEL", False)) if matched is not None else None,
                }
            )
        return TaskOutcome(label, tuple(refs), metadata={"patches": stats})
    except Exception as exc:  # noqa: BLE001 - one visit's failure must not stop the others
        return TaskOutcome(label, (), f"{exc.__class__.__name__}: {exc}")


@flow(name="warp")
def warp_flow(
    repo: str,
    inputs: list[str],
    output: str,
    where: str = "",
    clobber: bool = False,
    skymap: str | None = None,
) -> dict[str, Any]:
    """Direct and PSF-matched warps of every visit onto every patch it overlaps."""
    from registry import dataquery

    logger = get_run_logger()
    node = dataquery.parse(where)
    setup = open_stage(repo, inputs, output, WARP_TYPES, with_skymap=True, skymap=skymap)
    butler, run, worker, types = setup.butler, setup.run, setup.worker, setup.types
    registry = butler.registry
    skymap_name, sky = setup.skymap_name, setup.skymap

    calexps = butler.query_datasets("calexp", inputs)
    by_visit: dict[tuple[str, int], list[DatasetRef]] = defaultdict(list)
    todo: dict[tuple[str, int], set[tuple[int, int]]] = defaultdict(set)
    for ref in calexps:
        key = (ref.data_id["instrument"], ref.data_id["visit"])
        for p in registry.patches_overlapping_element(key[0], key[1], ref.data_id["detector"], skymap=skymap_name):
            data_id = {**dict(ref.data_id), "skymap": skymap_name, "tract": p["tract"], "patch": p["patch"]}
            if dataquery.evaluate(node, data_id):
                todo[key].add((int(p["tract"]), int(p["patch"])))
                if ref not in by_visit[key]:
                    by_visit[key].append(ref)
    if not todo:
        raise LookupError(f"no calexp in {inputs} overlaps a patch of sky map {skymap_name!r} matching {where!r}")
    wanted = [
        {"instrument": i, "visit": v, "skymap": skymap_name, "tract": t, "patch": p}
        for (i, v), patches in todo.items()
        for t, p in patches
    ]
    existing = existing_outputs(butler, "deepCoadd_directWarp", run, wanted)
    existing_pm = existing_outputs(butler, "deepCoadd_psfMatchedWarp", run, wanted)
    futures, replacing, skipped = [], {}, 0
    for (instrument, visit), patches in sorted(todo.items()):
        keep = []
        old: list[DatasetRef] = []
        for t, p in sorted(patches):
            key = (instrument, visit, skymap_name, t, p)
            if key in existing and not clobber:
                skipped += 1
                continue
            keep.append((t, p))
            old += [r for r in (existing.get(key), existing_pm.get(key)) if r is not None]
        if not keep:
            continue
        if old:
            replacing[f"visit {visit}"] = old
        futures.append(
            warp_visit.submit(
                worker, visit, instrument, by_visit[(instrument, visit)], keep, skymap_name, sky, types, run, bool(old)
            )
        )
    outcomes = [f.result() for f in futures]
    registered, failed = register_outcomes(butler, outcomes, replacing=replacing)
    butler.close()
    rows = [row for o in outcomes if o.ok for row in o.metadata.get("patches", [])]
    if rows:
        create_table_artifact(key="warps", table=rows, description="Warps made: coverage, CCDs, PSF matching")
    n_direct = sum(1 for r in registered if r.dataset_type == "deepCoadd_directWarp")
    n_matched = sum(1 for r in registered if r.dataset_type == "deepCoadd_psfMatchedWarp")
    summary = f"{n_direct} direct and {n_matched} PSF-matched warp(s) made, {skipped} already there"
    if failed:
        summary += f", {len(failed)} visit(s) failed"
        logger.error(failure_summary(failed))
    broader = [r for r in rows if r.get("psf_broader_than_model")]
    if broader:
        logger.warning("%d warp(s) have a PSF broader than the model PSF: matching is approximate there", len(broader))
    logger.info("warp: %s", summary)
    return {
        "direct": n_direct,
        "psf_matched": n_matched,
        "skipped": skipped,
        "failed": [(o.label, o.error) for o in failed],
        "summary": summary,
        "run": run,
        "warps": rows,
    }


def run_warp_stage(
    repo: str,
    inputs: Sequence[str],
    output: str,
    *,
    where: str = "",
    clobber: bool = False,
    skymap: str | None = None,
    task_runner: TaskRunnerSpec | None = None,
) -> dict[str, Any]:
    """Entry point for ``coadd run warp``."""
    runner = make_task_runner(task_runner)
    return warp_flow.with_options(task_runner=runner)(
        repo=repo, inputs=list(inputs), output=output, where=where, clobber=clobber, skymap=skymap
    )
