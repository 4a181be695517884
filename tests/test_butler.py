"""Butler facade: put/get/exists/remove, sub-box reads, crash safety, clobbering, S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from coadd_core.exposure import assert_exposures_equal
from coadd_core.geom import Box
from registry.butler import Butler, ButlerError, DatasetExistsError, DatasetNotFoundError
from registry.datastore import UnsafePathError
from registry.dimensions import DetectorRecord, InstrumentRecord
from registry.refs import InvalidDataIdError


def _setup_dimensions(butler: Butler) -> None:
    butler.registry.sync_dimension_record("instrument", InstrumentRecord(name="MegaPrime", detector_max=36))
    for det in range(4):
        butler.registry.sync_dimension_record(
            "detector", DetectorRecord(instrument="MegaPrime", id=det, full_name=f"ccd{det:02d}")
        )


@pytest.fixture
def butler(tmp_path: Path) -> Butler:
    b = Butler.create(tmp_path / "repo")
    _setup_dimensions(b)
    return b


def test_create_and_open_by_path(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Butler.create(repo).close()
    assert (repo / "butler.yaml").is_file() and (repo / "registry.sqlite3").is_file()
    with Butler.open(repo) as again:
        assert "bias" in {t.name for t in again.registry.query_dataset_types()}
    with pytest.raises(ButlerError, match="already exists"):
        Butler.create(repo)
    with pytest.raises(ButlerError, match="no repository"):
        Butler.open(tmp_path / "nothing")


def test_put_get_round_trip_and_sub_box(butler: Butler, exposure_factory) -> None:
    exposure = exposure_factory()
    ref = butler.put(exposure, "bias", {"instrument": "MegaPrime", "detector": 1}, "calib/run1")
    assert ref.uri and ref.size and ref.checksum.startswith("sha256:")
    got = butler.get("bias", {"instrument": "MegaPrime", "detector": 1}, ["calib/run1"])
    assert_exposures_equal(exposure, got)
    box = exposure.bbox
    sub = Box(box.x0 + 5, box.y0 + 7, box.x0 + 20, box.y0 + 30)
    part = butler.get(ref, bbox=sub)
    assert part.bbox == sub
    np.testing.assert_array_equal(part.image, exposure.subset(sub).image)
    assert butler.exists("bias", {"instrument": "MegaPrime", "detector": 1}, "calib/run1")
    assert not butler.exists("bias", {"instrument": "MegaPrime", "detector": 2}, "calib/run1")


def test_put_twice_needs_clobber(butler: Butler, exposure_factory) -> None:
    data_id = {"instrument": "MegaPrime", "detector": 0}
    first = butler.put(exposure_factory(seed=1), "bias", data_id, "r")
    with pytest.raises(DatasetExistsError):
        butler.put(exposure_factory(seed=2), "bias", data_id, "r")
    second = butler.put(exposure_factory(seed=2), "bias", data_id, "r", clobber=True)
    assert second.id != first.id and second.uri != first.uri
    assert not butler.datastore.exists(first.uri)
    assert_exposures_equal(butler.get(second), exposure_factory(seed=2))
    assert len(butler.query_datasets("bias", ["r"])) == 1


def test_put_killed_between_write_and_commit(butler: Butler, exposure_factory, monkeypatch) -> None:
    data_id = {"instrument": "MegaPrime", "detector": 3}

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the registry commit")

    monkeypatch.setattr(butler.registry, "insert_datasets", crash)
    with pytest.raises(RuntimeError, match="killed"):
        butler.put(exposure_factory(), "bias", data_id, "r")
    monkeypatch.undo()
    assert butler.query_datasets("bias", ["r"]) == []
    assert butler.orphans() == []
    ref = butler.put(exposure_factory(), "bias", data_id, "r")
    assert butler.get(ref).bbox == exposure_factory().bbox


def test_hard_kill_leaves_only_an_unregistered_orphan(butler: Butler, exposure_factory) -> None:
    data_id = {"instrument": "MegaPrime", "detector": 2}
    butler.registry.register_run("r")
    orphan = butler.write(exposure_factory(), "bias", data_id, "r")  # process dies before register
    assert butler.query_datasets("bias", ["r"]) == []
    assert butler.orphans() == [orphan.uri]
    ref = butler.put(exposure_factory(seed=5), "bias", data_id, "r")
    assert butler.orphans() == []
    assert_exposures_equal(butler.get(ref), exposure_factory(seed=5))


@pytest.mark.parametrize("bad", ["../../etc", "/abs"])
def test_unsafe_data_id_rejected(butler: Butler, exposure_factory, bad: str) -> None:
    with pytest.raises((InvalidDataIdError, UnsafePathError, ValueError)) as err:
        butler.put(exposure_factory(), "flat", {"instrument": "MegaPrime", "detector": 0, "physical_filter": bad}, "r")
    assert bad in str(err.value) or "physical_filter" in str(err.value)
    assert not any(p.name.endswith(".fits") for p in Path(butler.datastore.root).rglob("*"))


def test_remove_unregisters_and_deletes(butler: Butler, exposure_factory) -> None:
    ref = butler.put(exposure_factory(), "bias", {"instrument": "MegaPrime", "detector": 1}, "r")
    assert butler.remove([ref]) == 1
    assert not butler.datastore.exists(ref.uri)
    with pytest.raises(DatasetNotFoundError):
        butler.get("bias", {"instrument": "MegaPrime", "detector": 1}, "r")


def test_chain_lookup_first_child_wins(butler: Butler, exposure_factory) -> None:
    data_id = {"instrument": "MegaPrime", "detector": 1}
    butler.put(exposure_factory(seed=1), "bias", data_id, "old")
    newer = butler.put(exposure_factory(seed=2), "bias", data_id, "new")
    butler.registry.register_chain("calib/current", ["new", "old"])
    assert butler.find("bias", data_id, "calib/current").id == newer.id


@pytest.mark.s3
def test_butler_on_s3_datastore(tmp_path: Path, s3_server, exposure_factory) -> None:
    root = s3_server.url(f"repo-{uuid.uuid4().hex}")
    b = Butler.create(
        root,
        registry_url=f"sqlite:///{tmp_path / 'reg.sqlite3'}",
        storage_options=s3_server.storage_options,
    )
    _setup_dimensions(b)
    exposure = exposure_factory()
    ref = b.put(exposure, "bias", {"instrument": "MegaPrime", "detector": 1}, "r")
    assert ref.uri.startswith("s3://")
    again = Butler.open(root, storage_options=s3_server.storage_options)
    assert_exposures_equal(again.get(ref), exposure)
    box = exposure.bbox
    sub = Box(box.x0, box.y0, box.x0 + 9, box.y0 + 9)
    np.testing.assert_array_equal(again.get(ref, bbox=sub).variance, exposure.subset(sub).variance)


def test_credentials_never_written_to_config(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Butler.create(
        repo,
        registry_url=f"sqlite:///{tmp_path / 'r.sqlite3'}",
        storage_options={"key": "AKIDEXAMPLE", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://x"}},
    ).close()
    text = (repo / "butler.yaml").read_text()
    assert "s3cr3t" not in text and "AKIDEXAMPLE" not in text
    assert "endpoint_url" in text
