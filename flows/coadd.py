"""``coadd run coadd``: warps to artifact-free deep coadds per patch x band.

The flow reads like CompareWarpAssembleCoadd: find the patches and bands that have
warps, then one task per patch x band builds the static-sky template from the
PSF-matched warps, finds the artifacts by comparing each PSF-matched warp with it, and
assembles the direct warps with the artifacts CLIPPED (or runs the legacy SafeClip).
Warps are read through file handles section by section, so a task's memory does not
grow with the number of visits. Each task writes ``deepCoadd``, ``deepCoadd_nImage``
(and ``deepCoadd_templateCoadd`` when asked) and QA pictures: a preview of the coadd,
its CLIPPED mask and the epoch-count image, beside the outputs and as Prefect artifacts.
"""

from __future__ import annotations

import base64
import os
from collections import defaultdict
from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

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

METHODS = ("compare-warp", "safe-clip")
OUTPUT_TYPES = ("deepCoadd", "deepCoadd_nImage", "deepCoadd_templateCoadd")


def _handles(worker: WorkerButler, refs: list[DatasetRef]) -> list[Any]:
    from coadd_core.assemble import WarpHandle

    return [
        WarpHandle.from_file(
            worker.datastore.local_path_or_url(ref.uri), visit=int(ref.data_id["visit"]),
            storage_options=worker.storage_options or None,
        )
        for ref in refs
    ]


@task(name="assemble-patch")
def assemble_patch(
    worker: WorkerButler,
    data_id: dict[str, Any],
    direct_refs: list[DatasetRef],
    psf_matched_refs: list[DatasetRef],
    skymap: Any,
    method: str,
    write_template: bool,
    types: dict[str, DatasetType],
    run: str,
    unique_name: bool,
    qa_dir: str | None,
) -> TaskOutcome:
    """Coadd one patch x band; write the coadd, its nImage (and template) and QA pictures."""
    from coadd_core.assemble import CompareWarpConfig, SafeClipConfig, compare_warp_assemble, safe_clip_assemble
    from coadd_core.qa import coadd_qa_pictures

    label = f"tract {data_id['tract']} patch {data_id['patch']} band {data_id['band']}"
    try:
        tract = skymap[data_id["tract"]]
        patch = tract[data_id["patch"]]
        direct = _handles(worker, direct_refs)
        if method == "safe-clip":
            result = safe_clip_assemble(direct, patch.outer_bbox, tract.wcs, SafeClipConfig(do_n_image=True))
            template, epoch_count = None, None
        else:
            config = CompareWarpConfig(do_n_image=True)
            result = compare_warp_assemble(direct, _handles(worker, psf_matched_refs), patch.outer_bbox, tract.wcs, config)
            template, epoch_count = result.template, result.epoch_count
        coadd = result.coadd
        coadd.metadata.update({"COADD_METHOD": method, "N_WARPS": len(direct)})
        refs = [worker.write(coadd, types["deepCoadd"], data_id, run, unique_name=unique_name)]
        if result.n_image is not None:
            refs.append(worker.write((result.n_image, coadd.bbox.xy0), types["deepCoadd_nImage"], data_id, run, unique_name=unique_name))
        if write_template and template is not None:
            refs.append(worker.write(template, types["deepCoadd_templateCoadd"], data_id, run, unique_name=unique_name))
        pictures: dict[str, str] = {}
        if qa_dir is not None:
            pictures = {k: str(v) for k, v in coadd_qa_pictures(coadd, epoch_count, qa_dir, title=label).items()}
        clipped_bit = coadd.planes.bitmask("CLIPPED")
        n_clipped_pixels = int(((coadd.mask & clipped_bit) != 0).sum())
        meta = {
            **data_id,
            "method": method,
            "warps": len(direct),
            "clipped_pixels": n_clipped_pixels,
            "clipped_spans": sum(len(m.clipped) for m in result.alt_masks.values()) if result.alt_masks else 0,
            "pictures": pictures,
        }
        return TaskOutcome(label, tuple(refs), metadata=meta)
    except Exception as exc:  # noqa: BLE001 - one patch's failure must not stop the others
        if _no_work(exc):
            # LSST's NoWorkFound: the warps that reach this patch hold no usable pixels
            # (e.g. a sliver of a CCD edge); nothing to make, not a failure.
            return TaskOutcome(label, (), None, metadata={**data_id, "no_work": str(exc)})
        return TaskOutcome(label, (), f"{exc.__class__.__name__}: {exc}")


def _no_work(exc: BaseException) -> bool:
    from coadd_core.assemble import NoWorkFound

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NoWorkFound):
            return True
        seen = seen.__cause__
    return False


def _embedded_png(path: str, width: int = 360) -> str:
    with open(path, "rb") as stream:
        data = base64.b64encode(stream.read()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" width="{width}"/>'


QA_EMBED_BUDGET = 1_000_000
"""Characters of embedded pictures in the QA artifact: Prefect drops events larger than
its 1.5 MB default (PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES), so past this the
pictures are listed by path instead."""


def qa_markdown(rows: list[dict[str, Any]], budget: int = QA_EMBED_BUDGET) -> str:
    """The QA artifact: per patch, its coadd, CLIPPED and epoch-count pictures, embedded
    while ``budget`` characters last and listed by path after that."""
    blocks = []
    room = budget  # once a patch's pictures do not fit, every later patch is listed too
    for r in rows:
        pics = r.get("pictures") or {}
        paths = [pics[k] for k in ("coadd", "clipped", "epoch_count") if k in pics]
        if not paths:
            continue
        head = f"### tract {r['tract']} patch {r['patch']} band {r['band']}\n\n"
        images = [_embedded_png(p) for p in paths] if room > 0 else []
        size = sum(len(i) for i in images)
        if images and size <= room:
            room -= size
            blocks.append(head + " ".join(images))
        else:
            room = 0
            blocks.append(head + "\n".join(f"- `{p}`" for p in paths))
    return "\n\n".join(blocks)


@flow(name="coadd")
def coadd_flow(
    repo: str,
    inputs: list[str],
    output: str,
    where: str = "",
    clobber: bool = False,
    method: str = "compare-warp",
    skymap: str | None = None,
    write_template: bool = False,
) -> dict[str, Any]:
    """Deep coadds of every patch x band that has warps in ``inputs``."""
    from registry import dataquery

    if method not in METHODS:
        raise ValueError(f"unknown coadd method {method!r}; use one of {', '.join(METHODS)}")
    logger = get_run_logger()
    node = dataquery.parse(where)
    setup = open_stage(repo, inputs, output, OUTPUT_TYPES, with_skymap=True, skymap=skymap)
    butler, run, worker, types = setup.butler, setup.run, setup.worker, setup.types
    registry = butler.registry
    skymap_name, sky = setup.skymap_name, setup.skymap
    groups: dict[tuple, dict[str, list[DatasetRef]]] = defaultdict(lambda: {"direct": [], "psf": []})
    for kind, dtype in (("direct", "deepCoadd_directWarp"), ("psf", "deepCoadd_psfMatchedWarp")):
        for ref in butler.query_datasets(dtype, inputs, data_id={"skymap": skymap_name}):
            if not dataquery.evaluate(node, dict(ref.data_id)):
                continue
            key = (skymap_name, int(ref.data_id["tract"]), int(ref.data_id["patch"]), str(ref.data_id["band"]))
            groups[key][kind].append(ref)
    groups = {k: v for k, v in groups.items() if v["direct"]}
    if not groups:
        raise LookupError(f"no warps in {inputs} for sky map {skymap_name!r} matching {where!r}")
    wanted = [{"skymap": s, "tract": t, "patch": p, "band": b} for s, t, p, b in groups]
    existing = existing_outputs(butler, "deepCoadd", run, wanted)
    qa_root = os.path.join(butler.datastore.root, "qa", *output.split("/")) if butler.datastore.is_local else None
    futures, replacing, skipped = [], {}, 0
    for key, warps in sorted(groups.items()):
        s, t, p, b = key
        data_id = {"skymap": s, "tract": t, "patch": p, "band": b}
        old = existing.get((b, s, t, p)) or existing.get(key)
        if old is not None and not clobber:
            skipped += 1
            continue
        label = f"tract {t} patch {p} band {b}"
        if old is not None:
            replacing[label] = [old] + [
                r for name in ("deepCoadd_nImage", "deepCoadd_templateCoadd")
                if (r := registry.find_dataset(name, data_id, [run])) is not None
            ]
        qa_dir = None if qa_root is None else os.path.join(qa_root, str(t), str(p), b)
        futures.append(
            assemble_patch.submit(
                worker, data_id, sorted(warps["direct"], key=lambda r: r.data_id["visit"]),
                sorted(warps["psf"], key=lambda r: r.data_id["visit"]), sky, method, write_template, types,
                run, old is not None, qa_dir,
            )
        )
    outcomes = [f.result() for f in futures]
    registered, failed = register_outcomes(butler, outcomes, replacing=replacing)
    butler.close()
    no_work = [o for o in outcomes if o.ok and "no_work" in o.metadata]
    for o in no_work:
        logger.warning("%s: nothing to coadd (%s)", o.label, o.metadata["no_work"])
    rows = [dict(o.metadata) for o in outcomes if o.ok and "no_work" not in o.metadata]
    if rows:
        create_table_artifact(
            key="coadds",
            table=[{k: v for k, v in r.items() if k != "pictures"} for r in rows],
            description="Coadds made: warps, CLIPPED coadd pixels, clipped warp spans",
        )
        markdown = qa_markdown(rows)
        if markdown:
            create_markdown_artifact(key="coadd-qa", markdown=markdown, description="Coadd, CLIPPED mask, epoch count")
    n_coadds = sum(1 for r in registered if r.dataset_type == "deepCoadd")
    summary = f"{n_coadds} coadd(s) made ({method}), {skipped} already there"
    if no_work:
        summary += f", {len(no_work)} with no usable warps"
    if failed:
        summary += f", {len(failed)} failed"
        logger.error(failure_summary(failed))
    logger.info("coadd: %s", summary)
    return {
        "made": n_coadds,
        "skipped": skipped,
        "failed": [(o.label, o.error) for o in failed],
        "summary": summary,
        "run": run,
        "coadds": rows,
        "qa_dir": qa_root,
    }


def run_coadd_stage(
    repo: str,
    inputs: Sequence[str],
    output: str,
    *,
    where: str = "",
    clobber: bool = False,
    method: str = "compare-warp",
    skymap: str | None = None,
    write_template: bool = False,
    task_runner: TaskRunnerSpec | None = None,
) -> dict[str, Any]:
    """Entry point for ``coadd run coadd``."""
    runner = make_task_runner(task_runner)
    return coadd_flow.with_options(task_runner=runner)(
        repo=repo, inputs=list(inputs), output=output, where=where, clobber=clobber,
        method=method, skymap=skymap, write_template=write_template,
    )
