"""Registry behaviour on SQLite and PostgreSQL: schema versions, dimension records,
dataset types, collections and chains, dataset insert/query/find, DATA_QUERY filters,
calibration validity ranges, dataset IDs, data-ID validation, atomic batches and
concurrent writers."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import multiprocessing
import os
import pickle
import uuid

import hypothesis
import hypothesis.strategies as st
import pytest
from registry_fixtures import (  # noqa: F401  (fixtures are used by name)
    FILTERS,
    INSTRUMENT,
    INSTRUMENT_RECORD,
    add_instrument,
    exposure_time,
    registry,
    registry_url,
)

from registry import migrations, schema
from registry.collections import CollectionType
from registry.dataquery import DataQuerySyntaxError, UnknownKeyError
from registry.dimensions import (
    BandRecord,
    DetectorRecord,
    ExposureRecord,
    InstrumentRecord,
    PhysicalFilterRecord,
    SkyMapRecord,
    dimension_group,
    tai_ns,
    time_from_tai_ns,
)
from registry.engine import create_engine, describe_url
from registry.refs import (
    LSST_DATASET_NAMESPACE,
    CalibrationOverlapError,
    CollectionCycleError,
    CollectionTypeError,
    ConflictingDefinitionError,
    DatasetConflictError,
    DatasetRef,
    DatasetType,
    InvalidDataIdError,
    InvalidNameError,
    MissingCollectionError,
    MissingDatasetTypeError,
    MissingDimensionRecordError,
    RegistryError,
    SchemaVersionError,
    deterministic_dataset_id,
    make_data_id,
    uuid7,
)
from registry.registry import Registry

RAW = DatasetType("raw", ["instrument", "exposure", "detector"], "Exposure")
CALEXP = DatasetType("calexp", ["instrument", "visit", "detector"], "ExposureF")
BIAS = DatasetType("bias", ["instrument", "detector"], "ExposureF", is_calibration=True)
FLAT = DatasetType("flat", ["instrument", "detector", "physical_filter"], "ExposureF", is_calibration=True)


def raw_ref(exposure: int, detector: int, run: str, **kwargs: object) -> DatasetRef:
    data_id = {"instrument": INSTRUMENT, "exposure": exposure, "detector": detector}
    return DatasetRef.new(RAW, data_id, run, **kwargs)  # type: ignore[arg-type]


def with_file(ref: DatasetRef) -> DatasetRef:
    return ref.with_file(f"file:///repo/{ref.run}/{ref.id}.fits", 1234, "sha256:" + "0" * 64)


# -- schema and migrations -------------------------------------------------------------


def test_create_then_open_and_clear_errors(registry_url: str) -> None:
    with pytest.raises(SchemaVersionError, match="create one with Registry.create"):
        Registry.open(registry_url)
    with Registry.create(registry_url) as created:
        assert created.htm_level == 8
        created.register_run("run/a")
    with Registry.open(registry_url) as opened:
        assert opened.query_collections() == ["run/a"]
    with pytest.raises(SchemaVersionError, match="already holds a registry"):
        Registry.create(registry_url)
    with Registry.create(registry_url, exist_ok=True) as again:
        assert again.query_collections() == ["run/a"]


def test_open_refuses_newer_schema(registry_url: str) -> None:
    Registry.create(registry_url).close()
    engine = create_engine(registry_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {migrations.VERSION_TABLE} SET version_num = 'ffff'")
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="newer than this code"):
        Registry.open(registry_url)


def test_schema_module_matches_head_migration(registry: Registry) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with registry.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [
            d
            for d in compare_metadata(context, schema.metadata)
            if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)
        ]
    assert differences == []


def test_sqlite_open_missing_file_does_not_create_it(tmp_path) -> None:
    path = tmp_path / "missing.sqlite3"
    with pytest.raises(SchemaVersionError, match="does not exist"):
        Registry.open(f"sqlite:///{path}")
    assert not path.exists()


def test_sqlite_engine_settings(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
    engine.dispose()


def test_password_never_shown() -> None:
    url = "postgresql+psycopg://alice:s3cret@db.example:5432/registry"
    assert "s3cret" not in describe_url(url)
    assert "***" in describe_url(url)


# -- dimension records ---------------------------------------------------------------


def test_dimension_records_sync_is_idempotent(registry: Registry) -> None:
    record = InstrumentRecord(name=INSTRUMENT, detector_max=36, class_name="x.MegaPrime")
    assert registry.sync_dimension_record("instrument", record) is True
    assert registry.sync_dimension_record("instrument", record) is False
    with pytest.raises(ConflictingDefinitionError, match="detector_max"):
        registry.sync_dimension_record("instrument", InstrumentRecord(name=INSTRUMENT, detector_max=40))
    assert registry.get_dimension_record("instrument", {"instrument": INSTRUMENT}) == record

    skymap = SkyMapRecord(
        name="rings",
        hash=b"\x01\x02",
        tract_max=10,
        patch_nx_max=9,
        patch_ny_max=9,
        definition={"numRings": 120, "pixelScale": 0.185},
    )
    assert registry.sync_dimension_record("skymap", skymap)
    assert not registry.sync_dimension_record("skymap", skymap)
    assert registry.get_dimension_record("skymap", {"skymap": "rings"}) == skymap


def test_insert_dimension_records_fail_and_ignore(registry: Registry) -> None:
    add_instrument(registry, detectors=3, exposures=0)
    more = [DetectorRecord(instrument=INSTRUMENT, id=d) for d in (2, 3, 4)]
    with pytest.raises(ConflictingDefinitionError, match="nothing was inserted"):
        registry.insert_dimension_records("detector", more)
    assert [d["detector"] for d in registry.query_data_ids("detector")] == [0, 1, 2]
    assert registry.insert_dimension_records("detector", more, on_conflict="ignore") == 2
    assert registry.insert_dimension_records("detector", more, on_conflict="ignore") == 0
    assert [d["detector"] for d in registry.query_data_ids("detector")] == [0, 1, 2, 3, 4]
    with pytest.raises(MissingDimensionRecordError):
        registry.insert_dimension_records("detector", [DetectorRecord(instrument="HSC", id=0)])


def test_exposure_records_query_and_implied_values(registry: Registry) -> None:
    add_instrument(registry, exposures=6)
    record = registry.get_dimension_record("exposure", {"instrument": INSTRUMENT, "exposure": 2})
    assert isinstance(record, ExposureRecord)
    assert record.timespan_begin == exposure_time(2) and record.physical_filter == list(FILTERS)[2]
    assert (
        abs(
            (
                time_from_tai_ns(record.timespan_begin).utc.datetime - datetime.datetime(2024, 1, 1, 2)
            ).total_seconds()
        )
        < 1e-3
    )

    ids = registry.query_data_ids("exposure", "band = 'r' AND exposure.observation_type = 'science'")
    assert ids == [
        make_data_id(
            instrument=INSTRUMENT, exposure=1, band="r", physical_filter="r.MP9602", day_obs=20240101
        )
    ]
    assert [d["exposure"] for d in registry.query_data_ids("exposure", "exposure IN (1..6:2)")] == [1, 3, 5]
    assert len(registry.query_dimension_records("exposure", data_id={"band": "g"})) == 2
    assert registry.expand_data_id({"instrument": INSTRUMENT, "exposure": 4, "detector": 1}) == {
        "instrument": INSTRUMENT,
        "exposure": 4,
        "detector": 1,
        "physical_filter": "r.MP9602",
        "band": "r",
        "day_obs": 20240101,
    }
    with pytest.raises(InvalidDataIdError, match="band"):
        registry.expand_data_id({"instrument": INSTRUMENT, "exposure": 4, "band": "g"})
    with pytest.raises(MissingDimensionRecordError):
        registry.expand_data_id({"instrument": INSTRUMENT, "exposure": 99})


def test_exposure_band_must_match_its_filter(registry: Registry) -> None:
    add_instrument(registry, exposures=0)
    wrong = ExposureRecord(
        instrument=INSTRUMENT, id=7, physical_filter="r.MP9602", band="g", day_obs=20240101
    )
    with pytest.raises(InvalidDataIdError, match="band"):
        registry.insert_dimension_records("exposure", [wrong])


def test_times_in_tai_ns() -> None:
    from astropy.time import Time

    utc = datetime.datetime(2017, 1, 1, tzinfo=datetime.UTC)
    # TAI - UTC = 37 s from 2017-01-01.
    assert tai_ns(utc) == (int(utc.timestamp()) + 37) * 10**9
    assert tai_ns(Time("2017-01-01T00:00:37", scale="tai")) == tai_ns(utc)
    with pytest.raises(ValueError, match="naive"):
        tai_ns(datetime.datetime(2017, 1, 1))


# -- dataset types and collections -----------------------------------------------------


def test_dataset_type_registration_and_conflict(registry: Registry) -> None:
    assert registry.register_dataset_type(RAW) is True
    assert registry.register_dataset_type(DatasetType("raw", ["detector", "exposure"], "Exposure")) is False
    with pytest.raises(ConflictingDefinitionError, match="raw"):
        registry.register_dataset_type(DatasetType("raw", ["instrument", "visit", "detector"], "Exposure"))
    with pytest.raises(ConflictingDefinitionError):
        registry.register_dataset_type(DatasetType("raw", RAW.dimensions, "ExposureF"))
    assert registry.get_dataset_type("raw") == RAW
    assert registry.get_dataset_type("raw").implied == ("band", "physical_filter", "day_obs")
    with pytest.raises(MissingDatasetTypeError):
        registry.get_dataset_type("calexp")
    registry.register_dataset_type(BIAS)
    assert [d.name for d in registry.query_dataset_types()] == ["bias", "raw"]


def test_dimension_groups_follow_lsst() -> None:
    assert dimension_group(["patch", "band"]) == (("band", "skymap", "tract", "patch"), ())
    assert dimension_group(["instrument", "visit", "skymap", "tract", "patch"])[0] == (
        "instrument",
        "visit",
        "skymap",
        "tract",
        "patch",
    )
    assert FLAT.dimensions == ("instrument", "physical_filter", "detector") and FLAT.implied == ("band",)


def test_collections_chains_and_cycles(registry: Registry) -> None:
    for run in ("a", "b", "c"):
        registry.register_run(run)
    registry.register_calibration_collection("calib")
    assert registry.register_run("a") is False
    with pytest.raises(CollectionTypeError):
        registry.register_calibration_collection("a")
    registry.register_chain("inner", ["b", "a"])
    registry.register_chain("outer", ["c", "inner", "a", "calib"])
    assert registry.resolve_collections("outer") == ["c", "b", "a", "calib"]
    assert registry.get_chain("outer") == ("c", "inner", "a", "calib")
    with pytest.raises(CollectionCycleError):
        registry.register_chain("inner", ["b", "outer"])
    with pytest.raises(CollectionCycleError):
        registry.register_chain("inner", ["inner"])
    assert registry.get_chain("inner") == ("b", "a")  # unchanged after the refusals
    with pytest.raises(MissingCollectionError):
        registry.register_chain("broken", ["nope"])
    assert registry.get_collection_type("outer") is CollectionType.CHAINED
    assert registry.query_collections("*er") == ["inner", "outer"]
    assert registry.query_collections(types=["CALIBRATION"]) == ["calib"]
    with pytest.raises(InvalidNameError):
        registry.register_run("../escape")


# -- datasets ------------------------------------------------------------------------


def test_insert_query_find_along_chains(registry: Registry) -> None:
    add_instrument(registry, exposures=4)
    registry.register_dataset_type(RAW)
    for run in ("raw/old", "raw/new"):
        registry.register_run(run)
    old = registry.insert_datasets([with_file(raw_ref(e, d, "raw/old")) for e in (1, 2, 3) for d in (0, 1)])
    new = registry.insert_datasets([with_file(raw_ref(e, 0, "raw/new")) for e in (2, 3, 4)])
    assert old[0].data_id == {
        "instrument": INSTRUMENT,
        "exposure": 1,
        "detector": 0,
        "band": "r",
        "physical_filter": "r.MP9602",
        "day_obs": 20240101,
    }
    assert old[0].uri and old[0].size == 1234

    registry.register_chain("raw/all", ["raw/new", "raw/old"])
    registry.register_chain("defaults", ["raw/all"])  # a chain of chains
    found = registry.find_dataset("raw", {"instrument": INSTRUMENT, "exposure": 2, "detector": 0}, "defaults")
    assert found == new[0]
    found = registry.find_dataset("raw", {"instrument": INSTRUMENT, "exposure": 2, "detector": 1}, "defaults")
    assert found is not None and found.run == "raw/old"
    assert (
        registry.find_dataset("raw", {"instrument": INSTRUMENT, "exposure": 4, "detector": 1}, "defaults")
        is None
    )

    first = registry.query_datasets("raw", "defaults")
    assert len(first) == 7
    assert {(r.data_id["exposure"], r.data_id["detector"]): r.run for r in first}[(3, 0)] == "raw/new"
    assert len(registry.query_datasets("raw", "defaults", find_first=False)) == 9
    assert (
        registry.query_datasets("raw", ["raw/old", "raw/new"], data_id={"exposure": 3, "detector": 0})[0].run
        == "raw/old"
    )
    assert registry.get_dataset(new[1].id) == new[1]

    assert registry.remove_datasets(new[:1]) == 1
    found = registry.find_dataset("raw", {"instrument": INSTRUMENT, "exposure": 2, "detector": 0}, "defaults")
    assert found is not None and found.run == "raw/old"


def test_data_query_filters_and_injection(registry: Registry) -> None:
    add_instrument(registry, detectors=6, exposures=6)
    registry.register_dataset_type(RAW)
    registry.register_run("raw/all")
    registry.insert_datasets([raw_ref(e, d, "raw/all") for e in range(1, 7) for d in range(6)])

    refs = registry.query_datasets("raw", "raw/all", "band='r' AND detector < 4")
    assert {(r.data_id["exposure"], r.data_id["detector"]) for r in refs} == {
        (e, d) for e in (1, 4) for d in range(4)
    }
    assert all(r.data_id["band"] == "r" for r in refs)
    refs = registry.query_datasets("raw", "raw/all", "exposure.observation_type = 'science' AND detector = 0")
    assert [r.data_id["exposure"] for r in refs] == [1, 3, 5]
    assert (
        len(
            registry.query_datasets(
                "raw", "raw/all", "physical_filter IN ('g.MP9402') OR exposure = 2", data_id={"detector": 5}
            )
        )
        == 3
    )

    # Injection attempts: text never becomes SQL.
    with pytest.raises(DataQuerySyntaxError):
        registry.query_datasets("raw", "raw/all", "band = 'r'; DROP TABLE dataset; --")
    assert registry.query_datasets("raw", "raw/all", "band = 'r'' OR ''1''=''1'") == []
    assert registry.query_datasets("raw", "raw/all", data_id={"band": "r"})  # data_id values are bound too
    with pytest.raises(InvalidDataIdError):
        registry.query_datasets("raw", "raw/all", data_id={"band": "r' OR '1'='1"})
    with pytest.raises(UnknownKeyError, match="tract"):
        registry.query_datasets("raw", "raw/all", "tract = 1")
    assert len(registry.query_datasets("raw", "raw/all")) == 36


def test_failed_batch_inserts_nothing(registry: Registry) -> None:
    add_instrument(registry, exposures=3)
    registry.register_dataset_type(RAW)
    registry.register_run("raw/all")
    registry.insert_datasets([raw_ref(1, 0, "raw/all")])

    duplicate_in_batch = [raw_ref(2, 0, "raw/all"), raw_ref(2, 1, "raw/all"), raw_ref(2, 0, "raw/all")]
    with pytest.raises(DatasetConflictError, match="twice"):
        registry.insert_datasets(duplicate_in_batch)
    clashing_with_db = [raw_ref(3, 0, "raw/all"), raw_ref(1, 0, "raw/all"), raw_ref(3, 1, "raw/all")]
    with pytest.raises(DatasetConflictError, match="exists in run 'raw/all'"):
        registry.insert_datasets(clashing_with_db)
    unknown_exposure = [raw_ref(3, 0, "raw/all"), raw_ref(99, 0, "raw/all")]
    with pytest.raises(MissingDimensionRecordError, match="exposure 99"):
        registry.insert_datasets(unknown_exposure)
    with pytest.raises(MissingCollectionError):
        registry.insert_datasets([raw_ref(3, 0, "raw/other")])
    assert [r.data_id["exposure"] for r in registry.query_datasets("raw", "raw/all")] == [1]


def test_reingest_with_deterministic_ids_is_idempotent(registry: Registry) -> None:
    add_instrument(registry, exposures=2)
    registry.register_dataset_type(RAW)
    registry.register_run("raw/all")
    batch = [raw_ref(e, d, "raw/all", id_mode="type_run") for e in (1, 2) for d in (0, 1)]
    first = registry.insert_datasets(batch[:2])
    again = registry.insert_datasets(batch, on_conflict="ignore")
    assert [r.id for r in again] == [r.id for r in batch]
    assert again[:2] == first
    assert len(registry.query_datasets("raw", "raw/all")) == 4


def test_calibration_certify_and_lookup(registry: Registry) -> None:
    add_instrument(registry, detectors=2, exposures=4)
    for dataset_type in (BIAS, FLAT, RAW):
        registry.register_dataset_type(dataset_type)
    registry.register_run("calib/2023")
    registry.register_run("calib/2024")
    registry.register_calibration_collection("calib")
    t0, t1, t2 = exposure_time(0), exposure_time(3), exposure_time(100)
    bias_a = registry.insert_datasets(
        [DatasetRef.new(BIAS, {"instrument": INSTRUMENT, "detector": d}, "calib/2023") for d in (0, 1)]
    )
    bias_b = registry.insert_datasets(
        [DatasetRef.new(BIAS, {"instrument": INSTRUMENT, "detector": d}, "calib/2024") for d in (0, 1)]
    )
    flats = registry.insert_datasets(
        [
            DatasetRef.new(
                FLAT, {"instrument": INSTRUMENT, "detector": d, "physical_filter": f}, "calib/2024"
            )
            for d in (0, 1)
            for f in FILTERS
        ]
    )
    registry.certify("calib", bias_a, t0, t1)
    registry.certify("calib", bias_b, t1, None)
    registry.certify("calib", flats, t0, t2)
    assert flats[0].data_id["band"] == FILTERS[flats[0].data_id["physical_filter"]]

    bias = registry.find_dataset(
        "bias", {"instrument": INSTRUMENT, "detector": 1}, "calib", time=exposure_time(1)
    )
    assert bias == bias_a[1]
    bias = registry.find_dataset("bias", {"instrument": INSTRUMENT, "detector": 1}, "calib", time=t1)
    assert bias == bias_b[1]  # half-open: t1 belongs to the second range
    assert (
        registry.find_dataset("bias", {"instrument": INSTRUMENT, "detector": 1}, "calib", time=t0 - 1) is None
    )

    # A raw's data ID finds its flat: physical filter from the exposure, time from its timespan.
    raw_data_id = {"instrument": INSTRUMENT, "exposure": 2, "detector": 0}
    flat = registry.find_dataset("flat", raw_data_id, "calib")
    assert flat is not None and flat.data_id["physical_filter"] == list(FILTERS)[2]
    assert registry.find_dataset("bias", raw_data_id, "calib") == bias_a[0]
    assert (
        registry.find_dataset("bias", {"instrument": INSTRUMENT, "exposure": 4, "detector": 0}, "calib")
        == bias_b[0]
    )

    detector1 = {"instrument": INSTRUMENT, "detector": 1}
    assert registry.find_dataset("bias", detector1, "calib", timespan=(t0 - 10, t0 + 10)) == bias_a[1]
    assert registry.find_dataset("bias", detector1, "calib", timespan=(t1 + 5, None)) == bias_b[1]
    with pytest.raises(RegistryError, match="several validity ranges"):
        registry.find_dataset("bias", detector1, "calib", timespan=(t1 - 5, t1 + 5))

    at_t1 = registry.query_datasets("bias", "calib", time=t1)
    assert at_t1 == sorted(bias_b, key=lambda r: r.data_id["detector"])
    assert len(registry.query_datasets("bias", "calib", find_first=False)) == 4
    assert len(registry.query_datasets("flat", "calib", "band = 'g'", time=t1)) == 2
    with pytest.raises(RegistryError, match="needs a time"):
        registry.query_datasets("bias", "calib")

    with pytest.raises(CalibrationOverlapError, match="overlaps"):
        registry.certify("calib", bias_a[:1], t1 - 1, t1 + 1)
    # A batch with one overlapping range certifies nothing.
    registry.register_calibration_collection("calib2")
    registry.certify("calib2", bias_a[1:], t0, t1)
    with pytest.raises(CalibrationOverlapError):
        registry.certify("calib2", [bias_a[0], bias_b[1]], t0, t1)
    assert registry.find_dataset("bias", {"instrument": INSTRUMENT, "detector": 0}, "calib2", time=t0) is None
    raws = registry.insert_datasets([raw_ref(1, 0, "calib/2024")])
    with pytest.raises(RegistryError, match="not a calibration type"):
        registry.certify("calib", raws, t0, t1)
    with pytest.raises(CollectionTypeError):
        registry.certify("calib/2024", bias_a, t0, t1)


# -- dataset IDs and data IDs --------------------------------------------------------


def test_deterministic_uuid5_follows_lsst() -> None:
    assert LSST_DATASET_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_DNS, "lsst.org")
    assert str(LSST_DATASET_NAMESPACE) == "840b31d9-05cd-5161-b2c8-00d32b280d0f"
    data_id = {"instrument": INSTRUMENT, "exposure": 1038843, "detector": 7}
    a = DatasetRef.new(RAW, data_id, "MegaPrime/raw/all", id_mode="type_run")
    b = DatasetRef.new(RAW, dict(reversed(list(data_id.items()))), "MegaPrime/raw/all", id_mode="type_run")
    assert a.id == b.id and a.id.version == 5
    expected = uuid.uuid5(
        LSST_DATASET_NAMESPACE,
        "dataset_type=raw,run=MegaPrime/raw/all,detector=7,exposure=1038843,instrument=MegaPrime",
    )
    assert a.id == expected
    assert DatasetRef.new(RAW, data_id, "other/run", id_mode="type_run").id != a.id
    assert (
        DatasetRef.new(RAW, data_id, "other/run", id_mode="type").id
        == DatasetRef.new(RAW, data_id, "MegaPrime/raw/all", id_mode="type").id
        == deterministic_dataset_id("raw", data_id)
    )
    # Implied values do not change the ID.
    assert DatasetRef.new(RAW, {**data_id, "band": "r"}, "MegaPrime/raw/all", id_mode="type_run").id == a.id


def test_random_ids_are_time_ordered_uuid7() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert DatasetRef.new(RAW, {"instrument": "X", "exposure": 1, "detector": 1}, "r").id.version == 7


@pytest.mark.parametrize(
    "bad", ["../../etc", "/abs", "a/b", ".hidden", "x\x00y", "tab\tbed", "a" * 200, "", "-x"]
)
def test_invalid_string_values_rejected(bad: str) -> None:
    with pytest.raises(InvalidDataIdError, match="instrument"):
        make_data_id(instrument=bad)
    with pytest.raises(InvalidDataIdError):
        DatasetRef.new(FLAT, {"instrument": "MegaPrime", "detector": 1, "physical_filter": bad}, "run")


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.one_of(st.text(max_size=140), st.from_regex(r"[A-Za-z0-9_.+/\-]{1,20}", fullmatch=True)))
def test_accepted_strings_are_single_safe_path_components(text: str) -> None:
    try:
        value = make_data_id(physical_filter=text)["physical_filter"]
    except InvalidDataIdError:
        return
    assert value == text and os.path.basename(text) == text and os.path.normpath(text) == text
    assert not text.startswith((".", "-")) and ".." not in text and text.isprintable() and len(text) <= 128


@pytest.mark.parametrize("bad", ["3", 3.0, True, -1, 2**63, None])
def test_invalid_integer_values_rejected(bad: object) -> None:
    with pytest.raises(InvalidDataIdError, match="detector"):
        make_data_id(detector=bad)


def test_invalid_values_never_reach_the_database(registry: Registry) -> None:
    with pytest.raises(InvalidDataIdError, match="'../../etc'"):
        registry.sync_dimension_record("instrument", InstrumentRecord(name="../../etc"))
    with pytest.raises(InvalidDataIdError):
        registry.insert_dimension_records("band", [BandRecord(name="a/b")])
    with pytest.raises(InvalidDataIdError):
        registry.insert_dimension_records(
            "physical_filter", [PhysicalFilterRecord(instrument="MegaPrime", name="/abs", band="r")]
        )
    with pytest.raises(InvalidDataIdError):
        DatasetRef.new(RAW, {"instrument": INSTRUMENT, "exposure": 1}, "run")  # missing detector
    with pytest.raises(InvalidDataIdError, match="not dimensions"):
        DatasetRef.new(BIAS, {"instrument": INSTRUMENT, "detector": 1, "exposure": 3}, "run")
    assert registry.query_dimension_records("instrument") == []


def test_dataset_ref_is_a_small_picklable_value() -> None:
    ref = with_file(raw_ref(12, 3, "MegaPrime/raw/all"))
    data = pickle.dumps(ref)
    assert len(data) < 600
    again = pickle.loads(data)
    assert again == ref and hash(again) == hash(ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.run = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ref.data_id["detector"] = 4  # type: ignore[index]
    assert pickle.loads(pickle.dumps(RAW)) == RAW


# -- concurrency ---------------------------------------------------------------------

WORKERS = 8
BATCHES = 10
PER_BATCH = 6


def _concurrent_writer(url: str, worker: int) -> tuple[list[str], int]:
    """Open a registry, sync shared records, insert this worker's datasets in batches."""
    retries = 0

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            nonlocal retries
            retries += "transient database conflict" in record.getMessage()

    logging.getLogger("registry.engine").addHandler(Count())
    ids: list[str] = []
    with Registry.open(url) as registry:
        registry.sync_dimension_record("instrument", INSTRUMENT_RECORD)
        registry.register_run("shared/run")
        registry.register_dataset_type(RAW)
        for batch in range(BATCHES):
            refs = [raw_ref(batch * PER_BATCH + i + 1, worker, "shared/run") for i in range(PER_BATCH)]
            ids += [str(r.id) for r in registry.insert_datasets(refs)]
    return ids, retries


def test_concurrent_writers_lose_nothing(registry: Registry, registry_url: str) -> None:
    add_instrument(registry, detectors=WORKERS, exposures=BATCHES * PER_BATCH)
    registry.close()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["registry.registry", "registry_fixtures"])
    with context.Pool(WORKERS) as pool:
        results = pool.starmap(_concurrent_writer, [(registry_url, w) for w in range(WORKERS)])
    written = [i for ids, _ in results for i in ids]
    assert sum(retries for _, retries in results) == 0  # the busy timeout did its job
    assert len(written) == len(set(written)) == WORKERS * BATCHES * PER_BATCH
    with Registry.open(registry_url) as reopened:
        stored = reopened.query_datasets("raw", "shared/run")
    assert sorted(str(r.id) for r in stored) == sorted(written)
    assert {(r.data_id["exposure"], r.data_id["detector"]) for r in stored} == {
        (e, d) for e in range(1, BATCHES * PER_BATCH + 1) for d in range(WORKERS)
    }
