"""``coadd run isr``: raw science CCDs to calexps (ISR, then characterize).

The flow reads like the data flow: find the science raws, look up each one's master
calibrations (by detector, filter and observation date) and the reference catalog,
submit one coarse task per exposure-detector (ISR + background + cosmic rays + PSF +
photometric calibration: seconds of work), and register the calexps the tasks wrote.
Existing calexps are skipped unless clobbering; a failed detector is reported and the
others finish.
"""

from __future__ import annotations

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

REFCAT_RUN_PREFIX = "refcats"
SCIENCE = "exposure.observation_type = 'science'"


@task(name="isr-characterize")
def process_ccd(
    worker: WorkerButler,
    raw_ref: DatasetRef,
    calibs: dict[str, DatasetRef | None],
    refcat_ref: DatasetRef | None,
    types: dict[str, DatasetType],
    run: str,
    unique_name: bool,
    save_post_isr: bool,
) -> TaskOutcome:
    """ISR and characterize one CCD; write calexp and calexpBackground (and postISRCCD)."""
    from coadd_core.characterize import characterize
    from coadd_core.isr import cfht_isr_config, run_isr

    data_id = dict(raw_ref.data_id)
    label = f"exposure {data_id['exposure']} detector {data_id['detector']}"
    try:
        header, raw = worker.get(raw_ref, "RawImage")
        masters = {k: worker.get(ref, "Exposure") for k, ref in calibs.items() if ref is not None}
        config = cfht_isr_config(have_bias="bias" in masters, have_flat="flat" in masters, do_dark="dark" in masters)
        isr = run_isr(raw, header, bias=masters.get("bias"), dark=masters.get("dark"), flat=masters.get("flat"), config=config)
        refcat = worker.get(refcat_ref, "Table") if refcat_ref is not None else None
        result = characterize(isr.exposure, refcat=refcat, band=str(data_id["band"]))
        visit_id = {"instrument": data_id["instrument"], "visit": data_id["exposure"], "detector": data_id["detector"]}
        refs = [
            worker.write(result.calexp, types["calexp"], visit_id, run, unique_name=unique_name),
            worker.write(result.background, types["calexpBackground"], visit_id, run, unique_name=unique_name),
        ]
        if save_post_isr:
            refs.append(worker.write(isr.exposure, types["postISRCCD"], data_id, run, unique_name=unique_name))
        meta = {k: result.metadata.get(k) for k in ("PSF_FWHM", "ZERO_POINT", "PHOTOCAL_SOURCE", "N_PSF_STARS", "N_COSMIC_RAYS")}
        return TaskOutcome(label, tuple(refs), metadata={**data_id, **meta})
    except Exception as exc:  # noqa: BLE001 - one detector's failure must not stop the others
        return TaskOutcome(label, (), f"{exc.__class__.__name__}: {exc}")


def find_refcat(butler: Any, name: str | None) -> DatasetRef | None:
    """The reference catalog named ``name`` (or the only one there is), else None."""
    runs = butler.registry.query_collections(f"{REFCAT_RUN_PREFIX}/*")
    if name is not None:
        wanted = f"{REFCAT_RUN_PREFIX}/{name}"
        if wanted not in runs:
            raise LookupError(f"no reference catalog {name!r}; ingested: {[r.split('/', 1)[1] for r in runs] or 'none'}")
        runs = [wanted]
    if len(runs) != 1:
        return None
    found = butler.registry.query_datasets("refcat", runs)
    return found[0] if found else None


@flow(name="isr")
def isr_flow(
    repo: str,
    inputs: list[str],
    output: str,
    where: str = "",
    clobber: bool = False,
    refcat: str | None = None,
    save_post_isr: bool = False,
) -> dict[str, Any]:
    """ISR + characterize every science exposure-detector matching ``where``."""
    logger = get_run_logger()
    setup = open_stage(repo, inputs, output, ("calexp", "calexpBackground", "postISRCCD"))
    butler, run, worker, types = setup.butler, setup.run, setup.worker, setup.types
    registry = butler.registry
    query = f"({where}) AND {SCIENCE}" if where.strip() else SCIENCE
    raws = butler.query_datasets("raw", inputs, query)
    if not raws:
        raise LookupError(f"no science raws match {query!r} in {inputs}")
    refcat_ref = find_refcat(butler, refcat)
    if refcat_ref is None:
        logger.warning("no reference catalog: calexps keep the nominal zero point (PHOTOCAL_SOURCE=nominal)")
    visit_ids = [
        {"instrument": r.data_id["instrument"], "visit": r.data_id["exposure"], "detector": r.data_id["detector"]}
        for r in raws
    ]
    existing = existing_outputs(butler, "calexp", run, visit_ids)
    futures, replacing, skipped = [], {}, 0
    for raw, vid in zip(raws, visit_ids):
        key = (vid["instrument"], vid["visit"], vid["detector"])
        old = existing.get(key)
        if old is not None and not clobber:
            skipped += 1
            continue
        calibs = {
            name: registry.find_dataset(name, raw.data_id, inputs) for name in ("bias", "dark", "flat")
        }
        label = f"exposure {vid['visit']} detector {vid['detector']}"
        if old is not None:
            replacing[label] = [old] + [
                r for r in (registry.find_dataset("calexpBackground", vid, [run]),) if r is not None
            ]
        futures.append(process_ccd.submit(worker, raw, calibs, refcat_ref, types, run, old is not None, save_post_isr))
    outcomes = [f.result() for f in futures]
    registered, failed = register_outcomes(butler, outcomes, replacing=replacing)
    butler.close()
    done = [o for o in outcomes if o.ok]
    rows = [dict(o.metadata) for o in done]
    if rows:
        create_table_artifact(key="isr-calexps", table=rows, description="Calexps made: PSF FWHM, zero point, stars used")
    summary = f"{len(done)} calexp(s) made, {skipped} already there" + (f", {len(failed)} failed" if failed else "")
    logger.info("isr: %s", summary)
    if failed:
        logger.error(failure_summary(failed))
        create_markdown_artifact(key="isr-failures", markdown="```\n" + failure_summary(failed) + "\n```")
    return {
        "made": len(done),
        "skipped": skipped,
        "failed": [(o.label, o.error) for o in failed],
        "summary": summary,
        "run": run,
        "calexps": rows,
    }


def run_isr_stage(
    repo: str,
    inputs: Sequence[str],
    output: str,
    *,
    where: str = "",
    clobber: bool = False,
    refcat: str | None = None,
    save_post_isr: bool = False,
    task_runner: TaskRunnerSpec | None = None,
) -> dict[str, Any]:
    """Entry point for ``coadd run isr``."""
    runner = make_task_runner(task_runner)
    return isr_flow.with_options(task_runner=runner)(
        repo=repo, inputs=list(inputs), output=output, where=where, clobber=clobber,
        refcat=refcat, save_post_isr=save_post_isr,
    )


@task(name="ingest-refcat")
def ingest_refcat_task(repo: str, path: str, name: str) -> str:
    """Ingest a reference catalog file into ``repo`` (flow-friendly wrapper)."""
    from registry.butler import Butler

    with Butler.open(repo) as butler:
        return ingest_refcat(butler, path, name).run


def ingest_refcat(butler: Any, path: str, name: str, **columns: Any) -> DatasetRef:
    """Store a reference catalog (CSV/FITS with ra, dec, <band>_mag[_err]) as dataset ``refcat``."""
    from coadd_core.characterize import RefcatColumns
    from coadd_core.characterize.refcat import read_refcat
    from registry.datastore import validate_component

    validate_component("name", name)
    table = read_refcat(path, columns=RefcatColumns(**{k: v for k, v in columns.items() if v is not None}))
    run = f"{REFCAT_RUN_PREFIX}/{name}"
    butler.registry.register_run(run)
    existing = butler.registry.find_dataset("refcat", {}, [run])
    if existing is not None:
        butler.remove([existing])
    return butler.put(table, "refcat", {}, run)
