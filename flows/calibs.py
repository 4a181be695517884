"""``coadd run calibs``: master bias, dark and flat per detector, certified for use.

The flow reads like cp_pipe: find the bias/dark/flat raws by OBSTYPE, make each
detector's master bias, then its master dark (which needs the bias), then its master
flat per physical filter (which needs both), and certify every master into the output
CALIBRATION collection with a validity range. One task per (detector, calibration)
reads its raws, runs ISR at the calibration's level and combines them; tasks return
references and the flow registers and certifies.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.cli_common import TaskRunnerSpec
from flows.runners import make_task_runner
from flows.stage import TaskOutcome, failure_summary, register_outcomes
from registry.refs import DatasetRef, DatasetType
from registry.worker import WorkerButler

CALIB_TYPES = ("bias", "dark", "flat")


def _with_type(where: str, observation_type: str) -> str:
    clause = f"exposure.observation_type = '{observation_type}'"
    return f"({where}) AND {clause}" if where.strip() else clause


@task(name="master-calibration")
def make_master(
    worker: WorkerButler,
    kind: str,
    raw_refs: list[DatasetRef],
    inputs: dict[str, DatasetRef | None],
    dataset_type: DatasetType,
    data_id: dict[str, Any],
    run: str,
    unique_name: bool,
) -> TaskOutcome:
    """ISR each raw at the calibration's level, combine them, write the master."""
    from coadd_core.calib import combine_bias, combine_dark, combine_flat
    from coadd_core.isr import isr_config_for, run_isr

    label = f"{kind} {data_id}"
    try:
        calibs = {name: worker.get(ref, "Exposure") for name, ref in inputs.items() if ref is not None}
        overrides = {"do_dark": "dark" in calibs} if kind == "flat" else {}
        config = isr_config_for(kind, **overrides)  # type: ignore[arg-type]
        processed = []
        for ref in raw_refs:
            header, data = worker.get(ref, "RawImage")
            processed.append(
                run_isr(data, header, bias=calibs.get("bias"), dark=calibs.get("dark"), config=config).exposure
            )
        combiner = {"bias": combine_bias, "dark": combine_dark, "flat": combine_flat}[kind]
        master = combiner(processed)
        master.metadata.update({"OBSTYPE": kind, "NCOMBINE": len(processed)})
        ref = worker.write(master, dataset_type, data_id, run, unique_name=unique_name)
        return TaskOutcome(label, (ref,), metadata={"inputs": len(processed)})
    except Exception as exc:  # noqa: BLE001 - one detector's failure must not stop the others
        return TaskOutcome(label, (), f"{exc.__class__.__name__}: {exc}")


@flow(name="calibs")
def calibs_flow(
    repo: str,
    inputs: list[str],
    output: str,
    where: str = "",
    clobber: bool = False,
) -> dict[str, Any]:
    """Master bias, dark and flat of every detector with calibration raws in ``inputs``."""
    from registry.butler import Butler

    logger = get_run_logger()
    butler = Butler.open(repo)
    registry = butler.registry
    run = f"{output}/run"
    registry.register_run(run)
    registry.register_calibration_collection(output)
    worker = WorkerButler.from_butler(butler)
    made: dict[str, list[DatasetRef]] = defaultdict(list)
    failures: list[TaskOutcome] = []
    skipped = 0
    masters: dict[tuple[str, tuple], DatasetRef] = {}

    for kind in CALIB_TYPES:
        dtype = registry.get_dataset_type(kind)
        raws = butler.query_datasets("raw", inputs, _with_type(where, kind))
        groups: dict[tuple, list[DatasetRef]] = defaultdict(list)
        for ref in raws:
            data_id = {"instrument": ref.data_id["instrument"], "detector": ref.data_id["detector"]}
            if kind == "flat":
                data_id["physical_filter"] = ref.data_id["physical_filter"]
            groups[tuple(sorted(data_id.items()))].append(ref)
        if not groups:
            logger.warning("no %s raws found in %s", kind, inputs)
            continue
        futures, replacing = [], {}
        for key, refs in sorted(groups.items()):
            data_id = dict(key)
            existing = registry.find_dataset(dtype, data_id, [run])
            if existing is not None and not clobber:
                masters[(kind, key)] = existing
                skipped += 1
                continue
            needs = {"bias": (), "dark": ("bias",), "flat": ("bias",)}[kind]
            det_key = tuple(sorted({"instrument": data_id["instrument"], "detector": data_id["detector"]}.items()))
            calib_inputs = {name: masters.get((name, det_key)) for name in needs}
            if kind == "flat" and masters.get(("dark", det_key)) is not None:
                # The dark is subtracted from flats when there is one (cp_pipe's flat level).
                calib_inputs["dark"] = masters[("dark", det_key)]
            missing = [name for name, ref in calib_inputs.items() if ref is None]
            if missing:
                failures.append(TaskOutcome(f"{kind} {data_id}", (), f"no master {', '.join(missing)} for this detector"))
                continue
            label = f"{kind} {data_id}"
            if existing is not None:
                replacing[label] = [existing]
            futures.append(
                make_master.submit(worker, kind, refs, calib_inputs, dtype, data_id, run, existing is not None)
            )
        outcomes = [f.result() for f in futures]
        registered, failed = register_outcomes(butler, outcomes, replacing=replacing)
        failures += failed
        for ref in registered:
            key = tuple(sorted((k, ref.data_id[k]) for k in dtype.dimensions))
            masters[(kind, key)] = ref
            made[kind].append(ref)
        logger.info("%s: %d master(s) made", kind, len(registered))

    # Certify whatever is not certified yet: unbounded validity (a later certification
    # with dates can narrow it).
    to_certify = [ref for refs in made.values() for ref in refs]
    for kind in CALIB_TYPES:
        refs = [r for r in to_certify if r.dataset_type == kind]
        if refs:
            registry.certify(output, refs, None, None)
    butler.close()
    summary = ", ".join(f"{len(made[k])} {k}" for k in CALIB_TYPES) + f" made, {skipped} already there"
    logger.info("calibs: %s", summary)
    create_markdown_artifact(key="calibs-report", markdown=f"**{summary}**\n\n" + (failure_summary(failures) if failures else ""))
    return {
        "made": {k: len(v) for k, v in made.items()},
        "skipped": skipped,
        "failed": [(o.label, o.error) for o in failures],
        "summary": summary,
        "run": run,
    }


def run_calibs(
    repo: str,
    inputs: Sequence[str],
    output: str,
    *,
    where: str = "",
    clobber: bool = False,
    task_runner: TaskRunnerSpec | None = None,
) -> dict[str, Any]:
    """Entry point for ``coadd run calibs``."""
    runner = make_task_runner(task_runner)
    return calibs_flow.with_options(task_runner=runner)(
        repo=repo, inputs=list(inputs), output=output, where=where, clobber=clobber
    )
