"""The registry: what datasets exist, in which collections, for which data IDs.

One :class:`Registry` wraps one database (SQLite file or PostgreSQL) through SQLAlchemy
Core. Writers are the flow processes (workers only write files and return
:class:`~registry.refs.DatasetRef` values, which the flow registers in batches), but
several flows may write at once, so every write is one short transaction that is
retried on lock conflicts (see :mod:`registry.engine`).

Every user-given value reaches SQL as a bound parameter: data IDs are validated, and
DATA_QUERY text is parsed by :mod:`registry.dataquery` and compiled against a fixed set
of columns.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import lsst.sphgeom as sphgeom
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from . import migrations, schema
from .collections import CollectionManager, CollectionRecord, CollectionType
from .dataquery import Node, UnknownKeyError, parse, resolver_from_columns, to_sqlalchemy
from .dimensions import (
    ELEMENTS,
    TIME_MAX,
    TIME_MIN,
    DimensionElement,
    Record,
    TimeLike,
    get_element,
    tai_ns,
)
from .engine import (
    bulk_insert,
    create_engine,
    describe_url,
    insert_ignoring_conflicts,
    integrity_violation,
    is_sqlite,
    run_transaction,
)
from .refs import (
    CalibrationOverlapError,
    CollectionTypeError,
    ConflictingDefinitionError,
    DataId,
    DatasetConflictError,
    DatasetRef,
    DatasetType,
    InvalidDataIdError,
    MissingDatasetTypeError,
    MissingDimensionRecordError,
    RegistryError,
    SchemaVersionError,
    validate_collection_name,
    validate_value,
)
from .spatial import HTM_LEVEL, SpatialIndex, bounding_cap, decode_region, encode_region

log = logging.getLogger(__name__)

T = TypeVar("T")
OnConflict = Literal["fail", "ignore"]

#: Largest number of values bound in one ``IN (...)`` (SQLite allows 32766 variables).
_CHUNK = 500
_TIMESPAN_COLUMNS = ("timespan_begin", "timespan_end")
_IMPLYING = ("exposure", "visit")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Registry:
    """Datasets, collections, dimension records and the spatial index of one database.

    Use :meth:`create` for a new database and :meth:`open` for an existing one; both
    take a SQLAlchemy URL (``sqlite:///repo/registry.sqlite3``,
    ``postgresql+psycopg://user:pw@host:5432/db``). Each process opens its own.
    """

    def __init__(self, engine: sa.Engine, *, htm_level: int) -> None:
        self._engine = engine
        self._spatial = SpatialIndex(htm_level)
        self._collections = CollectionManager()
        self._dataset_types: dict[str, tuple[int, DatasetType]] = {}
        self._dataset_types_by_id: dict[int, DatasetType] = {}
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def create(cls, url: str | sa.URL, *, htm_level: int = HTM_LEVEL, exist_ok: bool = False) -> Registry:
        """Create the registry schema (migrations to head) in an empty database.

        With ``exist_ok``, an up-to-date registry already there is opened instead.
        """
        _prepare_sqlite_path(url, must_exist=False)
        engine = create_engine(url)
        try:
            created = run_transaction(engine, lambda c: cls._create_schema(c, htm_level, exist_ok))
        except BaseException:
            engine.dispose()
            raise
        log.info("%s registry at %s", "created" if created else "opened existing", describe_url(engine.url))
        return cls._open_engine(engine)

    @staticmethod
    def _create_schema(connection: sa.Connection, htm_level: int, exist_ok: bool) -> bool:
        revision = migrations.current_revision(connection)
        if revision is not None:
            where = describe_url(connection.engine.url)
            if revision == migrations.head_revision() and exist_ok:
                return False
            raise SchemaVersionError(
                f"{where} already holds a registry (schema revision {revision}); "
                "use Registry.open()" + (" or upgrade it" if revision != migrations.head_revision() else "")
            )
        migrations.upgrade(connection)
        connection.execute(
            sa.insert(schema.registry_attribute),
            [
                {"name": "htm_level", "value": str(htm_level)},
                {"name": "created", "value": datetime.datetime.now(datetime.UTC).isoformat()},
            ],
        )
        return True

    @classmethod
    def open(cls, url: str | sa.URL) -> Registry:
        """Open an existing registry, checking that its schema is the one this code expects."""
        _prepare_sqlite_path(url, must_exist=True)
        return cls._open_engine(create_engine(url))

    @classmethod
    def _open_engine(cls, engine: sa.Engine) -> Registry:
        try:
            level = run_transaction(engine, cls._check_schema, write=False)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, htm_level=level)

    @staticmethod
    def _check_schema(connection: sa.Connection) -> int:
        where = describe_url(connection.engine.url)
        revision = migrations.current_revision(connection)
        head = migrations.head_revision()
        if revision is None:
            raise SchemaVersionError(
                f"no registry in {where} (empty database?): create one with Registry.create()"
            )
        if revision != head:
            if revision in migrations.known_revisions():
                raise SchemaVersionError(
                    f"registry schema in {where} is older (revision {revision}) than this code (revision "
                    f"{head}): run Registry.upgrade_schema() on it first"
                )
            raise SchemaVersionError(
                f"registry schema in {where} (revision {revision}) is newer than this code knows (head "
                f"{head}): upgrade the software"
            )
        a = schema.registry_attribute.c
        value = connection.execute(sa.select(a.value).where(a.name == "htm_level")).scalar_one()
        return int(value)

    @classmethod
    def upgrade_schema(cls, url: str | sa.URL) -> None:
        """Migrate an existing registry's schema to the head revision."""
        engine = create_engine(url)
        try:
            run_transaction(engine, migrations.upgrade)
        finally:
            engine.dispose()

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a Registry holds database connections: open one in each process instead")

    def __repr__(self) -> str:
        return f"Registry({self.url!r})"

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return describe_url(self._engine.url)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tools such as benchmarks)."""
        return self._engine

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self._engine)

    @property
    def htm_level(self) -> int:
        """HTM level of this registry's spatial index."""
        return self._spatial.level

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        return run_transaction(self._engine, work, write=True)

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        return run_transaction(self._engine, work, write=False)

    # -- dimension records -----------------------------------------------------------

    @staticmethod
    def _record_to_row(element: DimensionElement, record: Record) -> dict[str, Any]:
        if not isinstance(record, element.record_class):
            raise TypeError(f"{element.name} records are {element.record_class.__name__}, got {record!r}")
        row = {column: getattr(record, column) for column in element.columns}
        for key, column in element.keys.items():
            row[column] = validate_value(key, row[column])
        for name in element.implied:
            row[name] = validate_value(name, row[name])
        for column in _TIMESPAN_COLUMNS:
            if row.get(column) is not None:
                row[column] = tai_ns(row[column])
        if element.spatial:
            region = row["region"]
            cap = bounding_cap(region) if region is not None else (None,) * 5
            row.update(zip(("bound_x", "bound_y", "bound_z", "bound_cos", "bound_sin"), cap))
            row["region"] = encode_region(region)
        return row

    @staticmethod
    def _row_to_record(element: DimensionElement, row: Mapping[str, Any]) -> Record:
        values = {column: row[column] for column in element.columns}
        if element.spatial:
            values["region"] = decode_region(values["region"])
        if "hash" in values and values["hash"] is not None:
            values["hash"] = bytes(values["hash"])
        return element.record_class(**values)

    @staticmethod
    def _row_key(element: DimensionElement, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[column] for column in element.keys.values())

    @staticmethod
    def _key_condition(
        element: DimensionElement, table: sa.Table, key: Sequence[Any]
    ) -> sa.ColumnElement[bool]:
        return sa.and_(*(table.c[column] == value for column, value in zip(element.keys.values(), key)))

    def _check_bands(
        self, connection: sa.Connection, element: DimensionElement, rows: list[dict[str, Any]]
    ) -> None:
        """Exposures and visits must carry the band of their physical filter."""
        if element.name not in _IMPLYING:
            return
        pf = schema.physical_filter.c
        wanted = sorted({(row["instrument"], row["physical_filter"]) for row in rows})
        bands: dict[tuple[str, str], str] = {}
        for instrument in sorted({i for i, _ in wanted}):
            names = [n for i, n in wanted if i == instrument]
            for chunk in _chunks(names):
                query = sa.select(pf.name, pf.band).where(pf.instrument == instrument, pf.name.in_(chunk))
                bands.update(((instrument, r.name), r.band) for r in connection.execute(query))
        for row in rows:
            known = bands.get((row["instrument"], row["physical_filter"]))
            if known is None:
                raise MissingDimensionRecordError(
                    f"physical_filter {row['physical_filter']!r} of instrument {row['instrument']!r} "
                    f"is not registered ({element.name} {row['id']})"
                )
            if known != row["band"]:
                raise InvalidDataIdError(
                    f"{element.name} {row['id']} says band {row['band']!r} but physical_filter "
                    f"{row['physical_filter']!r} is in band {known!r}"
                )

    def _existing_keys(
        self, connection: sa.Connection, element: DimensionElement, rows: list[dict[str, Any]]
    ) -> set[tuple[Any, ...]]:
        table = schema.ELEMENT_TABLES[element.name]
        key_columns = list(element.keys.values())
        first, rest = key_columns[0], key_columns[1:]
        found: set[tuple[Any, ...]] = set()
        for value in sorted({row[first] for row in rows}):
            statement = sa.select(*(table.c[c] for c in key_columns)).where(table.c[first] == value)
            if rest:
                last_values = sorted({row[key_columns[-1]] for row in rows if row[first] == value})
                for chunk in _chunks(last_values):
                    found.update(
                        tuple(r)
                        for r in connection.execute(statement.where(table.c[key_columns[-1]].in_(chunk)))
                    )
            else:
                found.update(tuple(r) for r in connection.execute(statement))
        return found

    def insert_dimension_records(
        self, element: str, records: Iterable[Record], *, on_conflict: OnConflict = "fail"
    ) -> int:
        """Insert records of ``element`` in one transaction; return how many were new.

        ``on_conflict='fail'`` makes any existing key an error (nothing is inserted);
        ``'ignore'`` skips records whose key exists (without comparing them: use
        :meth:`sync_dimension_record` for that). Regions are indexed in the same
        transaction.
        """
        if on_conflict not in ("fail", "ignore"):
            raise ValueError(f"on_conflict must be 'fail' or 'ignore', not {on_conflict!r}")
        el = get_element(element)
        records = list(records)
        rows = [self._record_to_row(el, r) for r in records]
        if not rows:
            return 0
        regions = {
            self._row_key(el, row): record.region  # type: ignore[union-attr]
            for row, record in zip(rows, records)
            if el.spatial
        }
        table = schema.ELEMENT_TABLES[el.name]

        def work(connection: sa.Connection) -> int:
            self._check_bands(connection, el, rows)
            new = rows
            if on_conflict == "ignore":
                existing = self._existing_keys(connection, el, rows)
                unique: dict[tuple[Any, ...], dict[str, Any]] = {}
                for row in rows:
                    key = self._row_key(el, row)
                    if key not in existing:
                        unique.setdefault(key, row)
                new = list(unique.values())
                statement = insert_ignoring_conflicts(connection, table)
            else:
                statement = sa.insert(table)
            if new:
                connection.execute(statement, new)
                keys = [self._row_key(el, row) for row in new] if el.spatial else []
                keyed = [(key, regions[key]) for key in keys]
                self._index_regions(connection, el, keyed, ignore_conflicts=on_conflict == "ignore")
            return len(new)

        try:
            count = self._write(work)
        except IntegrityError as error:
            raise self._dimension_integrity_error(el, error) from error
        log.debug("inserted %d %s record(s)", count, el.name)
        return count

    def _index_regions(
        self,
        connection: sa.Connection,
        element: DimensionElement,
        keyed_regions: list[tuple[tuple[Any, ...], sphgeom.Region | None]],
        *,
        ignore_conflicts: bool,
    ) -> None:
        if not element.spatial:
            return
        rows = self._spatial.rows_for(element.name, keyed_regions)
        if not rows:
            return
        table = schema.SKYPIX_TABLES[element.name]
        columns = self._spatial.columns(element.name)
        if ignore_conflicts:
            statement = insert_ignoring_conflicts(connection, table)
            connection.execute(statement, [dict(zip(columns, row)) for row in rows])
        else:
            bulk_insert(connection, table, columns, rows)

    @staticmethod
    def _dimension_integrity_error(element: DimensionElement, error: IntegrityError) -> RegistryError:
        kind = integrity_violation(error)
        if kind == "unique":
            return ConflictingDefinitionError(
                f"some {element.name} records already exist (nothing was inserted); "
                f"use on_conflict='ignore' or sync_dimension_record: {error.orig}"
            )
        if kind == "foreign_key":
            return MissingDimensionRecordError(
                f"{element.name} records refer to dimension records that are not registered "
                f"(nothing was inserted): {error.orig}"
            )
        return RegistryError(f"cannot insert {element.name} records: {error.orig}")

    def sync_dimension_record(self, element: str, record: Record) -> bool:
        """Insert ``record`` unless an identical one exists; return whether it was inserted.

        A different record with the same key is a :class:`ConflictingDefinitionError`
        naming the fields that differ. Safe to call from several processes at once.
        """
        el = get_element(element)
        row = self._record_to_row(el, record)
        table = schema.ELEMENT_TABLES[el.name]
        key = self._row_key(el, row)

        def work(connection: sa.Connection) -> bool:
            self._check_bands(connection, el, [row])
            statement = insert_ignoring_conflicts(connection, table).returning(*table.primary_key.columns)
            inserted = connection.execute(statement, row).first() is not None
            if inserted:
                region = getattr(record, "region", None)
                self._index_regions(connection, el, [(key, region)], ignore_conflicts=False)
                return True
            existing = (
                connection.execute(sa.select(table).where(self._key_condition(el, table, key)))
                .mappings()
                .one()
            )
            differing = [c for c in el.columns if not _same_value(existing[c], row[c])]
            if differing:
                details = ", ".join(f"{c}: {existing[c]!r} != {row[c]!r}" for c in differing if c != "region")
                if "region" in differing:
                    details = (details + ", " if details else "") + "region differs"
                raise ConflictingDefinitionError(f"{el.name} {dict(zip(el.keys, key))} exists with {details}")
            return False

        try:
            return self._write(work)
        except IntegrityError as error:
            raise self._dimension_integrity_error(el, error) from error

    def get_dimension_record(self, element: str, data_id: Mapping[str, Any]) -> Record | None:
        """The record of ``element`` identified by ``data_id`` (extra keys ignored), or ``None``."""
        el = get_element(element)
        missing = [k for k in el.keys if k not in data_id]
        if missing:
            raise InvalidDataIdError(
                f"{el.name} records are identified by {', '.join(el.keys)}; missing {missing}"
            )
        key = tuple(validate_value(k, data_id[k]) for k in el.keys)
        table = schema.ELEMENT_TABLES[el.name]

        def work(connection: sa.Connection) -> Record | None:
            row = (
                connection.execute(sa.select(table).where(self._key_condition(el, table, key)))
                .mappings()
                .first()
            )
            return None if row is None else self._row_to_record(el, row)

        return self._read(work)

    def _element_resolver(self, el: DimensionElement) -> dict[str, sa.ColumnElement[Any]]:
        table = schema.ELEMENT_TABLES[el.name]
        columns: dict[str, sa.ColumnElement[Any]] = {key: table.c[column] for key, column in el.keys.items()}
        columns.update((name, table.c[name]) for name in el.implied)
        columns.update((f"{el.name}.{c.name}", c) for c in table.c if c.name != "region")
        return columns

    def query_dimension_records(
        self, element: str, where: str | Node = "", data_id: Mapping[str, Any] | None = None
    ) -> list[Record]:
        """Records of ``element`` matching a DATA_QUERY and/or data-ID values, in key order.

        Keys are the element's data-ID keys (``instrument``, ``exposure``...), its
        implied keys and ``<element>.<column>`` for any column (``exposure.obs_id``).
        """
        el = get_element(element)
        table = schema.ELEMENT_TABLES[el.name]
        statement = self._element_query(el, table, where, data_id)

        def work(connection: sa.Connection) -> list[Record]:
            return [self._row_to_record(el, row) for row in connection.execute(statement).mappings()]

        return self._read(work)

    def _element_query(
        self, el: DimensionElement, table: sa.Table, where: str | Node, data_id: Mapping[str, Any] | None
    ) -> sa.Select:
        node = parse(where) if isinstance(where, str) else where
        columns = self._element_resolver(el)
        conditions = [to_sqlalchemy(node, resolver_from_columns(columns))]
        for key, value in (data_id or {}).items():
            if key not in columns:
                raise UnknownKeyError(key, columns)
            conditions.append(columns[key] == validate_value(key, value))
        order = [table.c[c] for c in el.keys.values()]
        return sa.select(table).where(*conditions).order_by(*order)

    def query_data_ids(
        self, element: str, where: str | Node = "", data_id: Mapping[str, Any] | None = None
    ) -> list[DataId]:
        """Data IDs (keys and implied values) of the records of ``element`` that match."""
        el = get_element(element)
        return [DataId(el.data_id_of(r)) for r in self.query_dimension_records(element, where, data_id)]

    def expand_data_id(self, data_id: Mapping[str, Any]) -> DataId:
        """``data_id`` plus the values it implies (an exposure's physical filter, band, day_obs)."""
        values = {k: validate_value(k, v) for k, v in data_id.items()}
        self._read(lambda c: self._add_implied(c, [values]))
        return DataId(values)

    def _add_implied(self, connection: sa.Connection, data_ids: list[dict[str, Any]]) -> None:
        """Fill implied values in place from exposure/visit/physical_filter records."""
        for name in _IMPLYING:
            wanted = sorted({(d["instrument"], d[name]) for d in data_ids if name in d and "instrument" in d})
            if not wanted:
                continue
            table = schema.ELEMENT_TABLES[name]
            found: dict[tuple[str, int], Any] = {}
            for instrument in sorted({i for i, _ in wanted}):
                ids = [n for i, n in wanted if i == instrument]
                for chunk in _chunks(ids):
                    query = sa.select(
                        table.c.id, table.c.physical_filter, table.c.band, table.c.day_obs
                    ).where(table.c.instrument == instrument, table.c.id.in_(chunk))
                    found.update(((instrument, r.id), r) for r in connection.execute(query))
            for d in data_ids:
                if name not in d:
                    continue
                row = found.get((d.get("instrument"), d[name]))
                if row is None:
                    raise MissingDimensionRecordError(
                        f"{name} {d[name]} of instrument {d.get('instrument')!r} is not registered"
                    )
                for key in ("physical_filter", "band", "day_obs"):
                    _merge_implied(d, key, getattr(row, key), f"{name} {d[name]}")
        wanted_filters = sorted(
            {
                (d["instrument"], d["physical_filter"])
                for d in data_ids
                if "physical_filter" in d and "instrument" in d
            }
        )
        if wanted_filters:
            pf = schema.physical_filter.c
            bands: dict[tuple[str, str], str] = {}
            for instrument in sorted({i for i, _ in wanted_filters}):
                names = [n for i, n in wanted_filters if i == instrument]
                for chunk in _chunks(names):
                    query = sa.select(pf.name, pf.band).where(pf.instrument == instrument, pf.name.in_(chunk))
                    bands.update(((instrument, r.name), r.band) for r in connection.execute(query))
            for d in data_ids:
                if "physical_filter" in d and "instrument" in d:
                    band = bands.get((d["instrument"], d["physical_filter"]))
                    if band is None:
                        raise MissingDimensionRecordError(
                            f"physical_filter {d['physical_filter']!r} of instrument {d['instrument']!r} "
                            "is not registered"
                        )
                    _merge_implied(d, "band", band, f"physical_filter {d['physical_filter']!r}")

    # -- dataset types ---------------------------------------------------------------

    def register_dataset_type(self, dataset_type: DatasetType) -> bool:
        """Register a dataset type; return whether it was new.

        Registering the same definition again is a no-op; a different definition under
        the same name is a :class:`ConflictingDefinitionError`.
        """
        if not isinstance(dataset_type, DatasetType):
            raise TypeError(f"expected a DatasetType, got {dataset_type!r}")
        t = schema.dataset_type
        row = {
            "name": dataset_type.name,
            "dimensions": ",".join(dataset_type.dimensions),
            "storage_class": dataset_type.storage_class,
            "is_calibration": dataset_type.is_calibration,
        }

        def work(connection: sa.Connection) -> tuple[bool, int, DatasetType]:
            statement = insert_ignoring_conflicts(connection, t, ["name"]).returning(t.c.id)
            inserted = connection.execute(statement, row).first() is not None
            existing = connection.execute(sa.select(t).where(t.c.name == dataset_type.name)).mappings().one()
            stored = _dataset_type_from_row(existing)
            if stored != dataset_type:
                raise ConflictingDefinitionError(
                    f"dataset type {dataset_type.name!r} is already registered as {_describe_type(stored)}, "
                    f"not {_describe_type(dataset_type)}"
                )
            return inserted, existing["id"], stored

        inserted, type_id, stored = self._write(work)
        self._remember_dataset_type(type_id, stored)
        if inserted:
            log.debug("registered dataset type %s", _describe_type(stored))
        return inserted

    def _remember_dataset_type(self, type_id: int, dataset_type: DatasetType) -> None:
        with self._lock:
            self._dataset_types[dataset_type.name] = (type_id, dataset_type)
            self._dataset_types_by_id[type_id] = dataset_type

    def _dataset_type_info(
        self, connection: sa.Connection | None, name: str | DatasetType
    ) -> tuple[int, DatasetType]:
        key = name.name if isinstance(name, DatasetType) else name
        info = self._dataset_types.get(key)
        if info is None:
            t = schema.dataset_type

            def work(c: sa.Connection) -> Any:
                return c.execute(sa.select(t).where(t.c.name == key)).mappings().first()

            row = work(connection) if connection is not None else self._read(work)
            if row is None:
                raise MissingDatasetTypeError(f"dataset type {key!r} is not registered")
            info = (row["id"], _dataset_type_from_row(row))
            self._remember_dataset_type(*info)
        if isinstance(name, DatasetType) and name != info[1]:
            raise ConflictingDefinitionError(
                f"dataset type {key!r} is registered as {_describe_type(info[1])}, not {_describe_type(name)}"
            )
        return info

    def get_dataset_type(self, name: str) -> DatasetType:
        """The registered dataset type called ``name`` (:class:`MissingDatasetTypeError` if none)."""
        return self._dataset_type_info(None, name)[1]

    def query_dataset_types(self, pattern: str | None = None) -> list[DatasetType]:
        """Registered dataset types, sorted by name, optionally matching a glob."""
        import fnmatch

        t = schema.dataset_type
        rows = self._read(lambda c: list(c.execute(sa.select(t).order_by(t.c.name)).mappings()))
        types = [_dataset_type_from_row(r) for r in rows]
        return [d for d in types if pattern is None or fnmatch.fnmatchcase(d.name, pattern)]

    # -- collections -----------------------------------------------------------------

    def register_run(self, name: str, doc: str | None = None) -> bool:
        """Create RUN collection ``name`` if needed; return whether it was created."""
        return self._register_collection(name, CollectionType.RUN, doc)

    def register_calibration_collection(self, name: str, doc: str | None = None) -> bool:
        """Create CALIBRATION collection ``name`` if needed; return whether it was created."""
        return self._register_collection(name, CollectionType.CALIBRATION, doc)

    def _register_collection(self, name: str, type_: CollectionType, doc: str | None) -> bool:
        _, created = self._write(lambda c: self._collections.register(c, name, type_, doc))
        if created:
            log.info("registered %s collection %s", type_.value, name)
        return created

    def register_chain(self, name: str, children: Sequence[str], doc: str | None = None) -> None:
        """Define (or redefine) CHAINED collection ``name`` as the ordered ``children``.

        Children may be chains themselves; a chain that would contain itself is a
        :class:`~registry.refs.CollectionCycleError` and nothing changes.
        """
        if isinstance(children, str):
            children = [children]
        children = [validate_collection_name(c) for c in children]

        def work(connection: sa.Connection) -> None:
            chain, _ = self._collections.register(connection, name, CollectionType.CHAINED, doc)
            self._collections.set_chain(connection, chain, children)

        self._write(work)
        log.info("chain %s = %s", name, ", ".join(children))

    def get_collection_type(self, name: str) -> CollectionType:
        """Type of collection ``name``."""
        return self._read(lambda c: self._collections.get(c, name)).type

    def get_chain(self, name: str) -> tuple[str, ...]:
        """Direct children of CHAINED collection ``name``."""

        def work(connection: sa.Connection) -> tuple[str, ...]:
            record = self._collections.get(connection, name)
            if record.type is not CollectionType.CHAINED:
                raise CollectionTypeError(
                    f"collection {name!r} is a {record.type.value} collection, not CHAINED"
                )
            return tuple(r.name for r in self._collections.children(connection, record))

        return self._read(work)

    def resolve_collections(self, collections: str | Sequence[str]) -> list[str]:
        """The RUN and CALIBRATION collections searched for ``collections``, in order."""
        return [r.name for r in self._read(lambda c: self._collections.flatten(c, collections))]

    def query_collections(
        self,
        pattern: str | re.Pattern[str] | None = None,
        types: Iterable[CollectionType | str] | None = None,
    ) -> list[str]:
        """Names of collections matching a glob or regular expression, sorted."""
        kinds = None if types is None else [CollectionType(t) for t in types]
        return self._read(lambda c: self._collections.query(c, pattern, kinds))

    # -- datasets --------------------------------------------------------------------

    def insert_datasets(
        self,
        refs: Iterable[DatasetRef],
        *,
        on_conflict: OnConflict = "fail",
        replacing: Iterable[DatasetRef | uuid.UUID] = (),
    ) -> list[DatasetRef]:
        """Register datasets (already written by workers) in one transaction.

        Data IDs are validated and completed with their implied values from dimension
        records; the returned refs carry the completed data IDs. With
        ``on_conflict='fail'`` any clash (same ID, or same type, run and data ID) is a
        :class:`DatasetConflictError` and nothing is inserted; with ``'ignore'`` refs whose
        (type, run, data ID) exists are skipped and the stored refs returned in their place.
        Datasets in ``replacing`` are removed in the same transaction (a clobbering
        rewrite: the old entry disappears exactly when the new one appears).
        """
        if on_conflict not in ("fail", "ignore"):
            raise ValueError(f"on_conflict must be 'fail' or 'ignore', not {on_conflict!r}")
        refs = list(refs)
        if not refs:
            return []
        _check_batch(refs)

        replaced_ids = sorted({r.id if isinstance(r, DatasetRef) else r for r in replacing})

        def work(connection: sa.Connection) -> list[DatasetRef]:
            if replaced_ids:
                self._delete_datasets(connection, replaced_ids)
            prepared = self._prepare_dataset_rows(connection, refs)
            rows = [row for row, _ in prepared]
            completed = [ref for _, ref in prepared]
            if on_conflict == "ignore":
                existing = self._existing_datasets(connection, rows)
                keep = [i for i, row in enumerate(rows) if _dataset_identity(row) not in existing]
                result = [existing.get(_dataset_identity(row), ref) for row, ref in zip(rows, completed)]
                rows = [rows[i] for i in keep]
                completed = result
            if rows:
                connection.execute(sa.insert(schema.dataset), rows)
            return completed

        try:
            result = self._write(work)
        except IntegrityError as error:
            raise self._dataset_integrity_error(refs, error) from error
        log.debug("registered %d dataset(s)", len(result))
        return result

    def _prepare_dataset_rows(
        self, connection: sa.Connection, refs: list[DatasetRef]
    ) -> list[tuple[dict[str, Any], DatasetRef]]:
        now = datetime.datetime.now(datetime.UTC)
        types: dict[str, tuple[int, DatasetType]] = {}
        runs: dict[str, CollectionRecord] = {}
        values: list[dict[str, Any]] = []
        for ref in refs:
            if ref.dataset_type not in types:
                types[ref.dataset_type] = self._dataset_type_info(connection, ref.dataset_type)
            if ref.run not in runs:
                run = self._collections.get(connection, ref.run)
                if run.type is not CollectionType.RUN:
                    raise CollectionTypeError(
                        f"datasets are written to RUN collections; {ref.run!r} is {run.type.value}"
                    )
                runs[ref.run] = run
            dataset_type = types[ref.dataset_type][1]
            values.append(dict(dataset_type.normalize_data_id(ref.data_id)))
        self._add_implied(connection, values)
        prepared = []
        for ref, data_id in zip(refs, values):
            type_id, dataset_type = types[ref.dataset_type]
            full = DataId({k: data_id[k] for k in dataset_type.keys})
            row: dict[str, Any] = {
                "id": ref.id,
                "dataset_type_id": type_id,
                "run_id": runs[ref.run].id,
                "data_id_key": full.key_string(dataset_type.dimensions),
                "uri": ref.uri,
                "file_size": ref.size,
                "checksum": ref.checksum,
                "created": now,
            }
            row.update((column, full.get(column)) for column in schema.DATASET_DATA_ID_COLUMNS)
            prepared.append(
                (row, DatasetRef(ref.id, ref.dataset_type, ref.run, full, ref.uri, ref.size, ref.checksum))
            )
        return prepared

    def _existing_datasets(
        self, connection: sa.Connection, rows: list[dict[str, Any]]
    ) -> dict[tuple[int, int, str], DatasetRef]:
        d = schema.dataset.c
        found: dict[tuple[int, int, str], DatasetRef] = {}
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        for row in rows:
            groups[(row["dataset_type_id"], row["run_id"])].append(row["data_id_key"])
        for (type_id, run_id), keys in groups.items():
            for chunk in _chunks(sorted(set(keys))):
                query = sa.select(schema.dataset).where(
                    d.dataset_type_id == type_id, d.run_id == run_id, d.data_id_key.in_(chunk)
                )
                for row in connection.execute(query).mappings():
                    found[_dataset_identity(row)] = self._ref_from_row(connection, row)
        return found

    def _dataset_integrity_error(self, refs: list[DatasetRef], error: IntegrityError) -> RegistryError:
        kind = integrity_violation(error)
        if kind == "unique":
            clashes = self._read(lambda c: self._find_clashes(c, refs))
            shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
            return DatasetConflictError(
                f"datasets already registered, nothing inserted: {shown or error.orig}"
            )
        if kind == "foreign_key":
            return MissingDimensionRecordError(
                f"datasets refer to dimension records that are not registered, nothing inserted: {error.orig}"
            )
        return RegistryError(f"cannot register datasets: {error.orig}")

    def _find_clashes(self, connection: sa.Connection, refs: list[DatasetRef]) -> list[str]:
        d = schema.dataset.c
        ids = [r.id for r in refs]
        clashes: list[str] = []
        for chunk in _chunks(ids):
            for row in connection.execute(sa.select(d.id).where(d.id.in_(chunk))):
                clashes.append(f"dataset ID {row.id} exists")
        try:
            prepared = self._prepare_dataset_rows(connection, refs)
        except RegistryError:
            return clashes
        existing = self._existing_datasets(connection, [row for row, _ in prepared])
        for row, ref in prepared:
            if _dataset_identity(row) in existing:
                clashes.append(f"{ref.dataset_type} {dict(ref.data_id)} exists in run {ref.run!r}")
        return clashes

    def remove_datasets(self, refs: Iterable[DatasetRef | uuid.UUID]) -> int:
        """Forget datasets (and their certifications); return how many existed.

        Only registry entries are removed: deleting files is the datastore's job.
        """
        ids = sorted({r.id if isinstance(r, DatasetRef) else r for r in refs})
        removed = self._write(lambda c: self._delete_datasets(c, ids)) if ids else 0
        log.debug("removed %d dataset(s)", removed)
        return removed

    @staticmethod
    def _delete_datasets(connection: sa.Connection, ids: list[uuid.UUID]) -> int:
        removed = 0
        for chunk in _chunks(ids):
            connection.execute(sa.delete(schema.calibration).where(schema.calibration.c.dataset_id.in_(chunk)))
            removed += connection.execute(sa.delete(schema.dataset).where(schema.dataset.c.id.in_(chunk))).rowcount
        return removed

    def count_datasets_with_uri(self, uri: str) -> int:
        """How many registered datasets refer to file ``uri`` (raws share one file per exposure)."""
        d = schema.dataset.c
        return int(
            self._read(lambda c: c.execute(sa.select(sa.func.count()).where(d.uri == uri)).scalar_one())
        )

    def known_uris(self) -> set[str]:
        """Every file URI the registry refers to (for finding orphaned files)."""
        d = schema.dataset.c
        return set(self._read(lambda c: [u for (u,) in c.execute(sa.select(d.uri).distinct()) if u]))

    def _ref_from_row(self, connection: sa.Connection, row: Mapping[str, Any]) -> DatasetRef:
        dataset_type = self._dataset_types_by_id.get(row["dataset_type_id"])
        if dataset_type is None:
            t = schema.dataset_type
            type_row = (
                connection.execute(sa.select(t).where(t.c.id == row["dataset_type_id"])).mappings().one()
            )
            dataset_type = _dataset_type_from_row(type_row)
            self._remember_dataset_type(type_row["id"], dataset_type)
        run = self._collections.by_id(connection, row["run_id"])
        data_id = DataId({k: row[k] for k in dataset_type.keys if row[k] is not None})
        return DatasetRef(
            row["id"], dataset_type.name, run.name, data_id, row["uri"], row["file_size"], row["checksum"]
        )

    def get_dataset(self, dataset_id: uuid.UUID) -> DatasetRef | None:
        """The dataset with this ID, or ``None``."""
        d = schema.dataset

        def work(connection: sa.Connection) -> DatasetRef | None:
            row = connection.execute(sa.select(d).where(d.c.id == dataset_id)).mappings().first()
            return None if row is None else self._ref_from_row(connection, row)

        return self._read(work)

    def _dataset_conditions(
        self, dataset_type: DatasetType, where: str | Node, data_id: Mapping[str, Any] | None
    ) -> tuple[list[sa.ColumnElement[bool]], dict[str, sa.Table]]:
        """SQL conditions of a dataset query and the element tables they need joined."""
        d = schema.dataset.c
        columns: dict[str, sa.ColumnElement[Any]] = {k: d[k] for k in dataset_type.keys}
        joinable = {
            name: schema.ELEMENT_TABLES[name]
            for name, el in ELEMENTS.items()
            if set(el.keys) <= set(dataset_type.keys)
        }
        for name, table in joinable.items():
            columns.update((f"{name}.{c.name}", c) for c in table.c if c.name != "region")
        used: dict[str, sa.Table] = {}

        def resolve(key: str) -> sa.ColumnElement[Any]:
            column = columns.get(key)
            if column is None:
                raise UnknownKeyError(key, [k for k in columns if "." not in k])
            element = key.partition(".")[0] if "." in key else None
            if element is not None:
                used[element] = joinable[element]
            return column

        node = parse(where) if isinstance(where, str) else where
        conditions = [to_sqlalchemy(node, resolve)]
        for key, value in (data_id or {}).items():
            if key not in dataset_type.keys:
                raise InvalidDataIdError(
                    f"{key!r} is not a dimension of {dataset_type.name!r} ({', '.join(dataset_type.keys)})"
                )
            conditions.append(d[key] == validate_value(key, value))
        return conditions, used

    @staticmethod
    def _join_elements(from_: sa.FromClause, used: Mapping[str, sa.Table]) -> sa.FromClause:
        d = schema.dataset.c
        for name, table in used.items():
            on = sa.and_(*(table.c[column] == d[key] for key, column in ELEMENTS[name].keys.items()))
            from_ = from_.join(table, on)
        return from_

    def query_datasets(
        self,
        dataset_type: str | DatasetType,
        collections: str | Sequence[str],
        where: str | Node = "",
        data_id: Mapping[str, Any] | None = None,
        *,
        find_first: bool = True,
        time: TimeLike | None = None,
    ) -> list[DatasetRef]:
        """Datasets of one type in ``collections`` matching a DATA_QUERY and data-ID values.

        ``where`` may use the type's data-ID keys, required or implied (``band='r' AND
        detector < 4``), and ``<element>.<column>`` of its dimension records
        (``exposure.observation_type='science'``). With ``find_first`` each data ID is
        returned once, from the first collection of the (flattened) search path that has
        it. CALIBRATION collections are searched for calibration types only, at
        ``time``; without ``time`` all certified datasets match (not allowed with
        ``find_first``). Results are sorted by data ID.
        """
        when = None if time is None else tai_ns(time)

        def work(connection: sa.Connection) -> list[DatasetRef]:
            type_id, dtype = self._dataset_type_info(connection, dataset_type)
            path = self._collections.flatten(connection, collections)
            rank = {record.id: i for i, record in enumerate(path)}
            runs = [r.id for r in path if r.type is CollectionType.RUN]
            calibs = (
                [r.id for r in path if r.type is CollectionType.CALIBRATION] if dtype.is_calibration else []
            )
            if calibs and when is None and find_first:
                raise RegistryError(
                    f"finding {dtype.name!r} in calibration collections needs a time (or find_first=False)"
                )
            conditions, used = self._dataset_conditions(dtype, where, data_id)
            d = schema.dataset
            found: list[tuple[int, Mapping[str, Any]]] = []
            if runs:
                statement = (
                    sa.select(d)
                    .select_from(self._join_elements(d, used))
                    .where(d.c.dataset_type_id == type_id, d.c.run_id.in_(runs), *conditions)
                )
                found += [(rank[row["run_id"]], row) for row in connection.execute(statement).mappings()]
            if calibs:
                cal = schema.calibration
                from_ = self._join_elements(cal.join(d, cal.c.dataset_id == d.c.id), used)
                statement = (
                    sa.select(d, cal.c.collection_id)
                    .select_from(from_)
                    .where(cal.c.dataset_type_id == type_id, cal.c.collection_id.in_(calibs), *conditions)
                )
                if when is not None:
                    statement = statement.where(cal.c.valid_begin <= when, cal.c.valid_end > when)
                found += [
                    (rank[row["collection_id"]], row) for row in connection.execute(statement).mappings()
                ]
            found.sort(key=lambda item: (item[1]["data_id_key"], item[0]))
            refs: list[DatasetRef] = []
            seen: set[str] = set()
            for _, row in found:
                if find_first:
                    if row["data_id_key"] in seen:
                        continue
                    seen.add(row["data_id_key"])
                refs.append(self._ref_from_row(connection, row))
            refs.sort(key=lambda r: tuple(r.data_id[k] for k in dtype.dimensions))
            return refs

        return self._read(work)

    def find_dataset(
        self,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any],
        collections: str | Sequence[str],
        *,
        time: TimeLike | None = None,
        timespan: tuple[TimeLike | None, TimeLike | None] | None = None,
    ) -> DatasetRef | None:
        """The first dataset of ``dataset_type`` with ``data_id`` along ``collections``.

        Keys of ``data_id`` that are not dimensions of the type are ignored, and missing
        required values are filled from implied ones: a raw's data ID (instrument,
        exposure, detector) finds its flat through the exposure's physical filter.

        In CALIBRATION collections a dataset matches if its validity range contains
        ``time``, or overlaps ``timespan`` = [begin, end) (more than one match is then
        an error, as the choice would be arbitrary). Without either, the middle of the
        exposure's timespan is used when the data ID has an exposure.
        """
        if time is not None and timespan is not None:
            raise ValueError("give time or timespan, not both")
        when: tuple[int, int] | None = None
        if time is not None:
            when = (tai_ns(time), tai_ns(time) + 1)
        elif timespan is not None:
            when = (
                TIME_MIN if timespan[0] is None else tai_ns(timespan[0]),
                TIME_MAX if timespan[1] is None else tai_ns(timespan[1]),
            )
            if not when[0] < when[1]:
                raise ValueError(f"empty timespan {timespan}")

        def work(connection: sa.Connection) -> DatasetRef | None:
            type_id, dtype = self._dataset_type_info(connection, dataset_type)
            values = {k: validate_value(k, v) for k, v in data_id.items()}
            if any(k not in values for k in dtype.dimensions):
                self._add_implied(connection, [values])
            key = dtype.normalize_data_id(values, strict=False).key_string(dtype.dimensions)
            span = when
            if span is None and dtype.is_calibration:
                middle = self._exposure_midpoint(connection, values)
                span = None if middle is None else (middle, middle + 1)
            d = schema.dataset
            for record in self._collections.flatten(connection, collections):
                if record.type is CollectionType.RUN:
                    statement = sa.select(d).where(
                        d.c.dataset_type_id == type_id, d.c.run_id == record.id, d.c.data_id_key == key
                    )
                elif record.type is CollectionType.CALIBRATION and dtype.is_calibration:
                    if span is None:
                        raise RegistryError(
                            f"finding {dtype.name!r} in calibration collection {record.name!r} needs a time "
                            "(give time=... or timespan=..., or a data ID of an exposure with a timespan)"
                        )
                    cal = schema.calibration.c
                    statement = (
                        sa.select(d)
                        .select_from(schema.calibration.join(d, cal.dataset_id == d.c.id))
                        .where(
                            cal.collection_id == record.id,
                            cal.dataset_type_id == type_id,
                            cal.data_id_key == key,
                            cal.valid_begin < span[1],
                            cal.valid_end > span[0],
                        )
                        .limit(2)
                    )
                else:
                    continue
                rows = connection.execute(statement).mappings().all()
                if len(rows) > 1:
                    raise RegistryError(
                        f"{dtype.name} for {key} in {record.name!r}: several validity ranges overlap "
                        "the requested timespan; give a time instead"
                    )
                if rows:
                    return self._ref_from_row(connection, rows[0])
            return None

        return self._read(work)

    @staticmethod
    def _exposure_midpoint(connection: sa.Connection, data_id: Mapping[str, Any]) -> int | None:
        if "exposure" not in data_id or "instrument" not in data_id:
            return None
        e = schema.exposure.c
        row = connection.execute(
            sa.select(e.timespan_begin, e.timespan_end).where(
                e.instrument == data_id["instrument"], e.id == data_id["exposure"]
            )
        ).first()
        if row is None or row.timespan_begin is None:
            return None
        end = row.timespan_end if row.timespan_end is not None else row.timespan_begin
        return (row.timespan_begin + end) // 2

    def certify(
        self,
        collection: str,
        refs: Iterable[DatasetRef],
        begin: TimeLike | None,
        end: TimeLike | None,
    ) -> None:
        """Declare calibration datasets valid in ``collection`` for ``[begin, end)``.

        ``None`` leaves that end unbounded. A validity range overlapping another one
        for the same dataset type and data ID in this collection is a
        :class:`CalibrationOverlapError` and nothing is certified.
        """
        refs = list(refs)
        lo = TIME_MIN if begin is None else tai_ns(begin)
        hi = TIME_MAX if end is None else tai_ns(end)
        if not lo < hi:
            raise ValueError(f"empty validity range [{begin}, {end})")
        ids = sorted({r.id for r in refs})

        def work(connection: sa.Connection) -> None:
            record = self._collections.get(connection, collection)
            if record.type is not CollectionType.CALIBRATION:
                raise CollectionTypeError(
                    f"{collection!r} is a {record.type.value} collection, not CALIBRATION"
                )
            c = schema.collection.c
            # Serialises certifications into one collection on PostgreSQL (SQLite's
            # BEGIN IMMEDIATE already does).
            connection.execute(sa.select(c.id).where(c.id == record.id).with_for_update())
            d = schema.dataset.c
            rows = []
            for chunk in _chunks(ids):
                query = sa.select(d.id, d.dataset_type_id, d.data_id_key).where(d.id.in_(chunk))
                rows.extend(connection.execute(query))
            if len(rows) != len(ids):
                missing = sorted(set(ids) - {row.id for row in rows})
                raise RegistryError(f"cannot certify unregistered dataset(s) {missing[:5]}")
            seen: set[tuple[int, str]] = set()
            for row in rows:
                dtype = self._dataset_type_info(connection, self._type_name(connection, row.dataset_type_id))[
                    1
                ]
                if not dtype.is_calibration:
                    raise RegistryError(
                        f"dataset type {dtype.name!r} is not a calibration type; cannot certify it"
                    )
                identity = (row.dataset_type_id, row.data_id_key)
                if identity in seen:
                    raise CalibrationOverlapError(
                        f"two {dtype.name} datasets for {row.data_id_key} certified for the same range"
                    )
                seen.add(identity)
                self._check_overlap(
                    connection, record, dtype.name, row.dataset_type_id, row.data_id_key, lo, hi
                )
            connection.execute(
                sa.insert(schema.calibration),
                [
                    {
                        "collection_id": record.id,
                        "dataset_id": row.id,
                        "dataset_type_id": row.dataset_type_id,
                        "data_id_key": row.data_id_key,
                        "valid_begin": lo,
                        "valid_end": hi,
                    }
                    for row in rows
                ],
            )

        if ids:
            self._write(work)
            log.info("certified %d dataset(s) in %s", len(ids), collection)

    def _type_name(self, connection: sa.Connection, type_id: int) -> str:
        known = self._dataset_types_by_id.get(type_id)
        if known is not None:
            return known.name
        t = schema.dataset_type.c
        return connection.execute(sa.select(t.name).where(t.id == type_id)).scalar_one()

    @staticmethod
    def _check_overlap(
        connection: sa.Connection,
        record: CollectionRecord,
        type_name: str,
        type_id: int,
        data_id_key: str,
        lo: int,
        hi: int,
    ) -> None:
        cal = schema.calibration.c
        clash = connection.execute(
            sa.select(cal.valid_begin, cal.valid_end).where(
                cal.collection_id == record.id,
                cal.dataset_type_id == type_id,
                cal.data_id_key == data_id_key,
                cal.valid_begin < hi,
                cal.valid_end > lo,
            )
        ).first()
        if clash is not None:
            raise CalibrationOverlapError(
                f"{type_name} for {data_id_key} in {record.name!r}: validity "
                f"[{_show_time(lo)}, {_show_time(hi)}) overlaps the certified "
                f"[{_show_time(clash.valid_begin)}, {_show_time(clash.valid_end)})"
            )

    # -- spatial queries -------------------------------------------------------------

    def _spatial_query(
        self,
        element: str,
        region: sphgeom.Region | tuple[str, Mapping[str, Any]],
        exact: bool,
        constraints: dict[str, Any],
    ) -> list[DataId]:
        """Overlap query on ``element``; ``region`` may be (element, data ID) of a stored one."""
        el = get_element(element)
        if not el.spatial:
            raise ValueError(f"{element} has no regions")
        names = list(el.keys)
        filters = {k: validate_value(k, v) for k, v in constraints.items() if v is not None}
        # One connection, no retry wrapper: these are single reads on the hot path.
        with self._engine.connect() as connection:
            if isinstance(region, tuple):
                region = self._stored_region(connection, *region)
            if exact:
                keys = self._spatial.overlapping(connection, element, region, filters)
            else:
                keys = sorted(self._spatial.candidates(connection, element, region, filters))
        return [DataId(dict(zip(names, key))) for key in keys]

    @staticmethod
    def _stored_region(connection: sa.Connection, element: str, data_id: Mapping[str, Any]) -> sphgeom.Region:
        el = get_element(element)
        missing = [k for k in el.keys if k not in data_id]
        if missing or not el.spatial:
            raise InvalidDataIdError(
                f"{element} regions are identified by {', '.join(el.keys)}; missing {missing}"
            )
        key = [validate_value(k, data_id[k]) for k in el.keys]
        table = schema.ELEMENT_TABLES[el.name]
        data = connection.execute(
            sa.select(table.c.region).where(Registry._key_condition(el, table, key))
        ).scalar_one_or_none()
        if data is None:
            raise MissingDimensionRecordError(f"no {element} region registered for {dict(zip(el.keys, key))}")
        region = decode_region(data)
        assert region is not None
        return region

    def region_of(self, element: str, data_id: Mapping[str, Any]) -> sphgeom.Region:
        """Stored region of one spatial element (``MissingDimensionRecordError`` if none)."""
        with self._engine.connect() as connection:
            return self._stored_region(connection, element, data_id)

    def overlapping(self, element: str, region: sphgeom.Region, **constraints: Any) -> list[DataId]:
        """Data IDs of ``element`` whose region overlaps ``region`` (exact), sorted."""
        return self._spatial_query(element, region, True, constraints)

    def spatial_candidates(self, element: str, region: sphgeom.Region, **constraints: Any) -> list[DataId]:
        """The index lookup alone: a superset of :meth:`overlapping`, before the exact test."""
        return self._spatial_query(element, region, False, constraints)

    def patches_overlapping(self, region: sphgeom.Region, *, skymap: str | None = None) -> list[DataId]:
        """Patches (skymap, tract, patch) overlapping ``region``."""
        return self._spatial_query("patch", region, True, {"skymap": skymap})

    def patch_candidates(self, region: sphgeom.Region, *, skymap: str | None = None) -> list[DataId]:
        """Patches sharing an HTM trixel and a bounding-cap overlap with ``region``
        (superset of :meth:`patches_overlapping`)."""
        return self._spatial_query("patch", region, False, {"skymap": skymap})

    def patches_overlapping_element(
        self, instrument: str, visit: int, detector: int, *, skymap: str | None = None
    ) -> list[DataId]:
        """Patches overlapping the region of one visit and detector."""
        source = ("visit_detector_region", {"instrument": instrument, "visit": visit, "detector": detector})
        return self._spatial_query("patch", source, True, {"skymap": skymap})

    def tracts_overlapping(self, region: sphgeom.Region, *, skymap: str | None = None) -> list[DataId]:
        """Tracts (skymap, tract) overlapping ``region``."""
        return self._spatial_query("tract", region, True, {"skymap": skymap})

    def visits_overlapping(self, region: sphgeom.Region, *, instrument: str | None = None) -> list[DataId]:
        """Visits (instrument, visit) whose whole-camera region overlaps ``region``."""
        return self._spatial_query("visit", region, True, {"instrument": instrument})

    def visit_detectors_overlapping(
        self, region: sphgeom.Region, *, instrument: str | None = None
    ) -> list[DataId]:
        """Visit-detectors (instrument, visit, detector) overlapping ``region``."""
        return self._spatial_query("visit_detector_region", region, True, {"instrument": instrument})

    def visit_detectors_overlapping_patch(
        self, skymap: str, tract: int, patch: int, *, instrument: str | None = None
    ) -> list[DataId]:
        """Visit-detectors overlapping one patch's region."""
        source = ("patch", {"skymap": skymap, "tract": tract, "patch": patch})
        return self._spatial_query("visit_detector_region", source, True, {"instrument": instrument})


# -- helpers ---------------------------------------------------------------------------


def _prepare_sqlite_path(url: str | sa.URL, *, must_exist: bool) -> None:
    """Refuse to open a SQLite file that is not there (connecting would create it empty);
    create the parent directory of a new one."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = os.path.abspath(parsed.database)
    if must_exist and not os.path.exists(path):
        raise SchemaVersionError(
            f"no registry at {path} (file does not exist): create one with Registry.create()"
        )
    if not must_exist:
        os.makedirs(os.path.dirname(path), exist_ok=True)


def _same_value(stored: Any, new: Any) -> bool:
    if isinstance(stored, memoryview):
        stored = bytes(stored)
    if isinstance(new, memoryview):
        new = bytes(new)
    return stored == new


def _merge_implied(data_id: dict[str, Any], key: str, value: Any, source: str) -> None:
    given = data_id.get(key)
    if given is not None and given != value:
        raise InvalidDataIdError(f"data ID says {key}={given!r} but {source} has {key}={value!r}")
    data_id[key] = value


def _dataset_type_from_row(row: Mapping[str, Any]) -> DatasetType:
    dims = tuple(d for d in row["dimensions"].split(",") if d)
    return DatasetType(row["name"], dims, row["storage_class"], bool(row["is_calibration"]))


def _describe_type(dataset_type: DatasetType) -> str:
    calib = ", calibration" if dataset_type.is_calibration else ""
    return f"{dataset_type.name}({', '.join(dataset_type.dimensions)}; {dataset_type.storage_class}{calib})"


def _dataset_identity(row: Mapping[str, Any]) -> tuple[int, int, str]:
    return (row["dataset_type_id"], row["run_id"], row["data_id_key"])


def _check_batch(refs: list[DatasetRef]) -> None:
    """Reject a batch that clashes with itself before touching the database."""
    ids: set[uuid.UUID] = set()
    keys: dict[tuple[str, str, DataId], DatasetRef] = {}
    for ref in refs:
        if not isinstance(ref, DatasetRef):
            raise TypeError(f"expected DatasetRef, got {ref!r}")
        if not isinstance(ref.id, uuid.UUID):
            raise TypeError(f"dataset ID of {ref} must be a UUID")
        if ref.id in ids:
            raise DatasetConflictError(f"dataset ID {ref.id} appears twice in one batch, nothing inserted")
        ids.add(ref.id)
        if ref.size is not None and (
            isinstance(ref.size, bool) or not isinstance(ref.size, int) or ref.size < 0
        ):
            raise ValueError(f"invalid file size {ref.size!r} for {ref}")
        identity = (ref.dataset_type, ref.run, ref.data_id)
        if identity in keys:
            raise DatasetConflictError(
                f"{ref.dataset_type} {dict(ref.data_id)} appears twice for run {ref.run!r} in one batch, "
                "nothing inserted"
            )
        keys[identity] = ref


def _show_time(ns: int) -> str:
    if ns <= TIME_MIN:
        return "-inf"
    if ns >= TIME_MAX:
        return "+inf"
    from .dimensions import time_from_tai_ns

    return time_from_tai_ns(ns).isot + " TAI"
