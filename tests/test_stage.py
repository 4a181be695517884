"""Stage plumbing: output chains, worker-side writes, batched registration, failures."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from coadd_core.exposure import assert_exposures_equal
from flows.stage import TaskOutcome, existing_outputs, output_run, prepare_output, register_outcomes
from registry.butler import Butler
from registry.dimensions import DetectorRecord, InstrumentRecord
from registry.worker import WorkerButler


@pytest.fixture
def butler(tmp_path: Path) -> Butler:
    b = Butler.create(tmp_path / "repo")
    b.registry.sync_dimension_record("instrument", InstrumentRecord(name="MegaPrime", detector_max=36))
    for det in range(3):
        b.registry.sync_dimension_record("detector", DetectorRecord(instrument="MegaPrime", id=det))
    return b


def test_output_chain_puts_the_run_first(butler: Butler) -> None:
    butler.registry.register_run("raw/all")
    run = prepare_output(butler, "u/me/isr", ["raw/all"])
    assert run == output_run("u/me/isr") == "u/me/isr/run"
    assert butler.registry.get_chain("u/me/isr") == ("u/me/isr/run", "raw/all")
    # Rerun with the output among the inputs: no cycle, same chain.
    prepare_output(butler, "u/me/isr", ["u/me/isr", "raw/all"])
    assert butler.registry.get_chain("u/me/isr") == ("u/me/isr/run", "raw/all")


def test_worker_writes_flow_registers(butler: Butler, exposure_factory) -> None:
    worker = pickle.loads(pickle.dumps(WorkerButler.from_butler(butler)))
    dtype = butler.registry.get_dataset_type("bias")
    run = prepare_output(butler, "calib", [])
    outcomes = []
    for det in range(3):
        ref = worker.write(exposure_factory(seed=det), dtype, {"instrument": "MegaPrime", "detector": det}, run)
        outcomes.append(TaskOutcome(f"det{det}", (ref,)))
    outcomes.append(TaskOutcome("det9", (), "boom"))
    registered, failed = register_outcomes(butler, outcomes)
    assert len(registered) == 3 and [f.label for f in failed] == ["det9"]
    got = worker.get(registered[1], "Exposure")
    assert_exposures_equal(got, exposure_factory(seed=1))
    found = existing_outputs(butler, "bias", run, [{"instrument": "MegaPrime", "detector": d} for d in range(4)])
    assert sorted(found) == [("MegaPrime", 0), ("MegaPrime", 1), ("MegaPrime", 2)]


def test_clobber_replaces_in_one_transaction(butler: Butler, exposure_factory) -> None:
    worker = WorkerButler.from_butler(butler)
    dtype = butler.registry.get_dataset_type("bias")
    run = prepare_output(butler, "calib", [])
    data_id = {"instrument": "MegaPrime", "detector": 0}
    (old,), _ = register_outcomes(butler, [TaskOutcome("a", (worker.write(exposure_factory(seed=1), dtype, data_id, run),))])
    new = worker.write(exposure_factory(seed=2), dtype, data_id, run, unique_name=True)
    assert butler.datastore.exists(old.uri)  # the registered file was not touched
    (done,), failed = register_outcomes(butler, [TaskOutcome("a", (new,))], replacing={"a": [old]})
    assert not failed and done.id == new.id
    assert not butler.datastore.exists(old.uri)
    assert [r.id for r in butler.query_datasets("bias", [run])] == [new.id]
