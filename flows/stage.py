"""What every ``coadd run STAGE`` flow shares: output collections, skipping, registering.

Output collections follow the LSST convention: ``-o NAME`` writes into the RUN
``NAME/run`` and makes ``NAME`` a CHAINED collection of that run followed by the inputs,
so a later stage can read everything through ``-i NAME``. Rerunning with the same
``-o`` writes into the same run and skips outputs that exist (unless clobbering), so a
killed run resumes where it stopped.

Pixel tasks return :class:`TaskOutcome` values (small: refs and a few numbers); the flow
registers all outputs in batched transactions and reports failures without stopping
the other tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from registry.refs import DatasetRef

log = logging.getLogger(__name__)

RUN_SUFFIX = "run"


@dataclass(frozen=True)
class TaskOutcome:
    """What a pixel task hands back: the files it wrote (unregistered refs) or its error."""

    label: str
    refs: tuple[DatasetRef, ...] = ()
    error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def output_run(output: str) -> str:
    """The RUN collection a stage writes into for ``-o output``."""
    return f"{output}/{RUN_SUFFIX}"


def prepare_output(butler: Any, output: str, inputs: Sequence[str]) -> str:
    """Create the output RUN and (re)define the output chain; return the RUN name."""
    run = output_run(output)
    registry = butler.registry
    registry.register_run(run)
    children = [run] + [c for c in inputs if c not in (output, run)]
    registry.register_chain(output, children)
    return run


def register_outcomes(
    butler: Any, outcomes: Iterable[TaskOutcome], *, replacing: Mapping[str, Sequence[DatasetRef]] | None = None
) -> tuple[list[DatasetRef], list[TaskOutcome]]:
    """Register every successful task's refs; returns (registered refs, failed outcomes).

    ``replacing`` maps a task label to the older datasets its outputs replace (clobber).
    Each task's outputs go in one transaction, so a task's outputs appear together.
    """
    registered: list[DatasetRef] = []
    failed: list[TaskOutcome] = []
    for outcome in outcomes:
        if not outcome.ok:
            failed.append(outcome)
            continue
        if not outcome.refs:
            continue
        old = list((replacing or {}).get(outcome.label, ()))
        try:
            registered += butler.register(outcome.refs, replacing=old)
        except Exception as exc:  # noqa: BLE001 - reported per task, the batch goes on
            failed.append(TaskOutcome(outcome.label, (), f"could not register outputs: {exc}"))
    return registered, failed


def existing_outputs(
    butler: Any, dataset_type: str, run: str, data_ids: Iterable[Mapping[str, Any]]
) -> dict[tuple, DatasetRef]:
    """Outputs of ``dataset_type`` already in ``run``, keyed by their required data-ID values."""
    dtype = butler.registry.get_dataset_type(dataset_type)
    wanted = {tuple(d[k] for k in dtype.dimensions) for d in data_ids}
    if not wanted:
        return {}
    found = {}
    for ref in butler.registry.query_datasets(dtype, [run]):
        key = tuple(ref.data_id[k] for k in dtype.dimensions)
        if key in wanted:
            found[key] = ref
    return found


def failure_summary(failed: Sequence[TaskOutcome]) -> str:
    lines = [f"{len(failed)} task(s) failed:"]
    lines += [f"  {o.label}: {o.error}" for o in failed[:20]]
    if len(failed) > 20:
        lines.append(f"  ... and {len(failed) - 20} more")
    return "\n".join(lines)


@dataclass
class StageSetup:
    """What every pixel stage opens first: the butler, its output RUN, the file-only
    butler handed to tasks and the output dataset types."""

    butler: Any
    run: str
    worker: Any
    types: dict[str, Any]
    skymap_name: str | None = None
    skymap: Any = None


def open_stage(
    repo: str,
    inputs: Sequence[str],
    output: str,
    type_names: Iterable[str],
    *,
    with_skymap: bool = False,
    skymap: str | None = None,
) -> StageSetup:
    """Open ``repo``, find the sky map if the stage needs one (before anything is
    written, so a missing one leaves no output collection behind), make ``output``
    (RUN + CHAINED, :func:`prepare_output`) and look up the output dataset types; the
    caller closes ``setup.butler``."""
    from registry.butler import Butler
    from registry.worker import WorkerButler

    butler = Butler.open(repo)
    skymap_name, sky = load_skymap(butler, skymap) if with_skymap else (None, None)
    run = prepare_output(butler, output, inputs)
    types = {name: butler.registry.get_dataset_type(name) for name in type_names}
    return StageSetup(butler, run, WorkerButler.from_butler(butler), types, skymap_name, sky)


def load_skymap(butler: Any, name: str | None) -> tuple[str, Any]:
    """The sky map ``name`` (or the only one registered) and its object, from RUN ``skymaps``."""
    names = [r.name for r in butler.registry.query_dimension_records("skymap")]
    if name is not None:
        if name not in names:
            raise LookupError(f"no sky map {name!r} registered; registered: {names or 'none'}")
    elif len(names) != 1:
        raise LookupError(
            f"{'no sky map is' if not names else 'several sky maps are'} registered ({names}); "
            "register one with 'coadd skymap register' or choose with --skymap"
        )
    else:
        name = names[0]
    return name, butler.get("skyMap", {"skymap": name}, "skymaps")


class StageFailedError(RuntimeError):
    """Some tasks of a stage failed; the others finished and were registered."""
