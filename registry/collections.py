"""Collections: RUN (where datasets are written), CHAINED (ordered search paths) and
CALIBRATION (datasets certified for validity ranges).

A chain may contain chains; searching one flattens it depth-first into an ordered list
of RUN and CALIBRATION collections, keeping the first occurrence of each, so the first
child that has a dataset wins. A chain that would contain itself is refused when it is
defined, never discovered during a search.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from . import schema
from .engine import insert_ignoring_conflicts
from .refs import (
    CollectionCycleError,
    CollectionTypeError,
    InvalidNameError,
    MissingCollectionError,
    validate_collection_name,
)


class CollectionType(enum.StrEnum):
    """Kinds of collection, stored by value in ``collection.type``."""

    RUN = "RUN"
    CHAINED = "CHAINED"
    CALIBRATION = "CALIBRATION"


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    """A collection's database ID, name and type."""

    id: int
    name: str
    type: CollectionType


class CollectionManager:
    """Collection rows and chains, on connections handed in by the registry.

    Names, IDs and types never change once created (collections are not removed), so
    they are cached; chain contents can be redefined and are always read afresh.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, CollectionRecord] = {}
        self._by_id: dict[int, CollectionRecord] = {}
        self._lock = threading.Lock()

    def _remember(self, record: CollectionRecord) -> CollectionRecord:
        with self._lock:
            self._by_name[record.name] = record
            self._by_id[record.id] = record
        return record

    def find(self, connection: sa.Connection, name: str) -> CollectionRecord | None:
        """The collection called ``name``, or ``None``."""
        record = self._by_name.get(name)
        if record is not None:
            return record
        c = schema.collection.c
        row = connection.execute(sa.select(c.id, c.name, c.type).where(c.name == name)).first()
        if row is None:
            return None
        return self._remember(CollectionRecord(row.id, row.name, CollectionType(row.type)))

    def get(self, connection: sa.Connection, name: str) -> CollectionRecord:
        """The collection called ``name``, or :class:`MissingCollectionError`."""
        if not isinstance(name, str):
            raise InvalidNameError(f"collection names are strings, got {name!r}")
        record = self.find(connection, name)
        if record is None:
            raise MissingCollectionError(f"collection {name!r} does not exist")
        return record

    def by_id(self, connection: sa.Connection, collection_id: int) -> CollectionRecord:
        """The collection with database ID ``collection_id``."""
        record = self._by_id.get(collection_id)
        if record is not None:
            return record
        c = schema.collection.c
        row = connection.execute(sa.select(c.id, c.name, c.type).where(c.id == collection_id)).one()
        return self._remember(CollectionRecord(row.id, row.name, CollectionType(row.type)))

    def register(
        self, connection: sa.Connection, name: str, type_: CollectionType, doc: str | None = None
    ) -> tuple[CollectionRecord, bool]:
        """Create the collection if it does not exist; return it and whether it was created.

        An existing collection of another type is an error (the caller's transaction is
        then rolled back).
        """
        validate_collection_name(name)
        table = schema.collection
        statement = insert_ignoring_conflicts(connection, table, ["name"]).returning(table.c.id)
        created = (
            connection.execute(statement, {"name": name, "type": type_.value, "doc": doc}).first() is not None
        )
        record = self.get(connection, name)
        if record.type is not type_:
            raise CollectionTypeError(
                f"collection {name!r} already exists as a {record.type.value} collection, not {type_.value}"
            )
        return record, created

    def children(self, connection: sa.Connection, chain: CollectionRecord) -> list[CollectionRecord]:
        """Direct children of a CHAINED collection, in search order."""
        t = schema.collection_chain.c
        rows = connection.execute(
            sa.select(t.child_id).where(t.parent_id == chain.id).order_by(t.position)
        ).scalars()
        return [self.by_id(connection, child_id) for child_id in rows]

    def set_chain(self, connection: sa.Connection, chain: CollectionRecord, children: Sequence[str]) -> None:
        """Replace the children of ``chain``; refuse cycles and duplicates."""
        if chain.type is not CollectionType.CHAINED:
            raise CollectionTypeError(
                f"collection {chain.name!r} is a {chain.type.value} collection, not CHAINED"
            )
        seen: set[str] = set()
        records = []
        for name in children:
            if name in seen:
                raise ValueError(f"collection {name!r} appears twice in chain {chain.name!r}")
            seen.add(name)
            records.append(self.get(connection, name))
        for record in records:
            if record.id == chain.id or self._reaches(connection, record, chain.id):
                raise CollectionCycleError(
                    f"chain {chain.name!r} cannot contain {record.name!r}: "
                    f"{record.name!r} {'is' if record.id == chain.id else 'contains'} {chain.name!r}"
                )
        t = schema.collection_chain
        connection.execute(sa.delete(t).where(t.c.parent_id == chain.id))
        if records:
            connection.execute(
                sa.insert(t),
                [{"parent_id": chain.id, "position": i, "child_id": r.id} for i, r in enumerate(records)],
            )

    def _reaches(self, connection: sa.Connection, start: CollectionRecord, target_id: int) -> bool:
        pending = [start]
        visited: set[int] = set()
        while pending:
            record = pending.pop()
            if record.id in visited or record.type is not CollectionType.CHAINED:
                continue
            visited.add(record.id)
            for child in self.children(connection, record):
                if child.id == target_id:
                    return True
                pending.append(child)
        return False

    def flatten(self, connection: sa.Connection, names: str | Iterable[str]) -> list[CollectionRecord]:
        """RUN and CALIBRATION collections to search, in order, chains expanded."""
        if isinstance(names, str):
            names = [names]
        result: list[CollectionRecord] = []
        seen: set[int] = set()

        def visit(record: CollectionRecord, stack: tuple[int, ...]) -> None:
            if record.type is CollectionType.CHAINED:
                if record.id in stack:  # defended against at definition; never loop
                    raise CollectionCycleError(f"chain {record.name!r} contains itself")
                for child in self.children(connection, record):
                    visit(child, stack + (record.id,))
            elif record.id not in seen:
                seen.add(record.id)
                result.append(record)

        for name in names:
            visit(self.get(connection, name), ())
        return result

    def query(
        self,
        connection: sa.Connection,
        pattern: str | re.Pattern[str] | None = None,
        types: Iterable[CollectionType] | None = None,
    ) -> list[str]:
        """Sorted names matching a glob (``u/me/*``) or compiled regular expression."""
        c = schema.collection.c
        statement = sa.select(c.name, c.type).order_by(c.name)
        if types is not None:
            statement = statement.where(c.type.in_([CollectionType(t).value for t in types]))
        names = [row.name for row in connection.execute(statement)]
        if pattern is None:
            return names
        if isinstance(pattern, re.Pattern):
            return [n for n in names if pattern.fullmatch(n)]
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]
