"""Values exchanged with the registry: data IDs, dataset types, dataset references.

A :class:`DatasetRef` crosses process boundaries (Prefect tasks return them; the flow
registers them), so it is a small frozen value that pickles cheaply. Data-ID values end
up in file names, so they are validated here, once, before anything touches a disk or a
database.

Dataset IDs are UUIDs: new outputs get a random time-ordered one (UUIDv7 layout, so
rows inserted together sit together in indexes); raw ingest uses the LSST deterministic
UUIDv5 scheme so re-ingesting a file reproduces the same ID.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from numbers import Integral
from typing import Any, Literal, TypeAlias

from .dimensions import DIMENSION_ORDER, DIMENSIONS, INTEGER_KEYS, DataIdValue, dimension_group

IdMode: TypeAlias = Literal["unique", "type_run", "type"]

#: uuid5(NAMESPACE_DNS, "lsst.org"), the namespace of LSST deterministic dataset IDs.
LSST_DATASET_NAMESPACE = uuid.UUID("840b31d9-05cd-5161-b2c8-00d32b280d0f")

#: A data-ID string value: one safe path component (it becomes part of file names).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,127}")
_DATASET_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}(\.[A-Za-z][A-Za-z0-9_]{0,63})*")
_STORAGE_CLASS = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_MAX_INT = 2**63 - 1
_MAX_COLLECTION_LENGTH = 256


# -- errors --------------------------------------------------------------------------


class RegistryError(Exception):
    """Base class of the registry's own errors."""


class InvalidDataIdError(RegistryError, ValueError):
    """A data ID is missing a key, has an unknown key, or a value that is not allowed."""


class InvalidNameError(RegistryError, ValueError):
    """A collection, dataset type or storage class name is not allowed."""


class ConflictingDefinitionError(RegistryError):
    """Something already registered under this name differs from the new definition."""


class MissingDatasetTypeError(RegistryError, LookupError):
    """The dataset type is not registered."""


class MissingCollectionError(RegistryError, LookupError):
    """The collection does not exist."""


class CollectionTypeError(RegistryError, TypeError):
    """The collection exists but is of the wrong type for the operation."""


class CollectionCycleError(RegistryError, ValueError):
    """A chain would contain itself."""


class DatasetConflictError(RegistryError):
    """A dataset with this (type, run, data ID) or this ID already exists."""


class CalibrationOverlapError(RegistryError, ValueError):
    """Two validity ranges of one calibration data ID overlap in one collection."""


class MissingDimensionRecordError(RegistryError, LookupError):
    """A data ID refers to a dimension record (exposure, detector...) that is not registered."""


class SchemaVersionError(RegistryError):
    """The database schema is absent, older or newer than this software expects."""


# -- data IDs ------------------------------------------------------------------------


def validate_value(key: str, value: Any) -> DataIdValue:
    """``value`` normalised for data-ID key ``key``, or :class:`InvalidDataIdError`.

    Integer keys take integers (not booleans, not strings) in [0, 2**63). String keys
    take 1-128 characters of letters, digits, ``_ . + -``, not starting with ``.``,
    ``+`` or ``-`` and without ``..``: such values are safe as one file-name component.
    """
    if key not in DIMENSIONS:
        raise InvalidDataIdError(f"unknown data ID key {key!r}; known: {', '.join(DIMENSION_ORDER)}")
    if key in INTEGER_KEYS:
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise InvalidDataIdError(f"data ID key {key!r} needs an integer, got {value!r}")
        number = int(value)
        if not 0 <= number <= _MAX_INT:
            raise InvalidDataIdError(f"data ID key {key!r} needs an integer in [0, 2**63), got {number}")
        return number
    if not isinstance(value, str):
        raise InvalidDataIdError(f"data ID key {key!r} needs a string, got {value!r}")
    if not _SAFE_VALUE.fullmatch(value) or ".." in value:
        raise InvalidDataIdError(
            f"invalid value {value!r} for data ID key {key!r}: use 1-128 letters, digits, "
            "'_', '.', '+', '-', not starting with '.', '+' or '-', without '..' or '/'"
        )
    return value


class DataId(Mapping[str, DataIdValue]):
    """Immutable, hashable, picklable data ID: ``{"instrument": "MegaPrime", "detector": 3}``.

    Keys are kept in the universe's display order, so ``repr`` and iteration are stable.
    Construct with :func:`make_data_id` to validate values.
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, items: Mapping[str, DataIdValue] | Iterable[tuple[str, DataIdValue]] = ()) -> None:
        mapping = dict(items)
        self._items: dict[str, DataIdValue] = {k: mapping[k] for k in DIMENSION_ORDER if k in mapping}
        if len(self._items) != len(mapping):
            extra = sorted(set(mapping) - set(self._items))
            raise InvalidDataIdError(f"unknown data ID key(s) {extra}; known: {', '.join(DIMENSION_ORDER)}")
        self._hash: int | None = None

    def __getitem__(self, key: str) -> DataIdValue:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DataId):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"DataId({self._items!r})"

    def __reduce__(self) -> tuple[type, tuple[dict[str, DataIdValue]]]:
        return (DataId, (self._items,))

    def subset(self, keys: Iterable[str]) -> DataId:
        """The values of ``keys`` that this data ID has."""
        return DataId({k: self._items[k] for k in keys if k in self._items})

    def key_string(self, keys: Iterable[str] | None = None) -> str:
        """``dim=value,...`` sorted by key name: the canonical identity of a data ID.

        This is the tail of the LSST deterministic UUIDv5 name and the registry's
        uniqueness key.
        """
        names = sorted(self._items if keys is None else keys)
        return ",".join(f"{name}={self._items[name]}" for name in names)


def make_data_id(data_id: Mapping[str, Any] | None = None, **kwargs: Any) -> DataId:
    """Validated :class:`DataId` from a mapping and/or keyword arguments."""
    merged = dict(data_id or {})
    merged.update(kwargs)
    return DataId({key: validate_value(key, value) for key, value in merged.items()})


# -- names ---------------------------------------------------------------------------


def validate_collection_name(name: Any) -> str:
    """``name`` if it is a valid collection name, else :class:`InvalidNameError`.

    Collections may be nested with ``/`` (``MegaPrime/raw/all``, ``u/me/coadd``); every
    segment obeys the data-ID string rules, since RUN names become directories.
    """
    if not isinstance(name, str) or not name or len(name) > _MAX_COLLECTION_LENGTH:
        raise InvalidNameError(f"invalid collection name {name!r}")
    for segment in name.split("/"):
        if not _SAFE_VALUE.fullmatch(segment) or ".." in segment:
            raise InvalidNameError(
                f"invalid collection name {name!r}: each '/'-separated part needs letters, digits, "
                "'_', '.', '+', '-', not starting with '.', '+' or '-', and no '..'"
            )
    return name


def validate_dataset_type_name(name: Any) -> str:
    """``name`` if it is a valid dataset type name (``deepCoadd_psfMatchedWarp``)."""
    if not isinstance(name, str) or not _DATASET_TYPE_NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid dataset type name {name!r}: a letter then letters, digits or '_' "
            "(optionally '.component')"
        )
    return name


# -- dataset types -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetType:
    """Name, dimensions and storage class of a kind of dataset (``calexp``, ``flat``...).

    ``dimensions`` may be given in any order and may include implied or redundant
    dimensions; it is normalised to the required ones (see
    :func:`registry.dimensions.dimension_group`). ``is_calibration`` marks types that
    can be certified into CALIBRATION collections with validity ranges.
    """

    name: str
    dimensions: tuple[str, ...]
    storage_class: str
    is_calibration: bool = False
    implied: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_dataset_type_name(self.name)
        if not isinstance(self.storage_class, str) or not _STORAGE_CLASS.fullmatch(self.storage_class):
            raise InvalidNameError(f"invalid storage class {self.storage_class!r} for {self.name!r}")
        if isinstance(self.dimensions, str):
            raise TypeError(f"dimensions of {self.name!r} must be a collection of names, not a string")
        try:
            required, implied = dimension_group(self.dimensions)
        except ValueError as error:
            raise InvalidNameError(f"dataset type {self.name!r}: {error}") from None
        object.__setattr__(self, "dimensions", required)
        object.__setattr__(self, "implied", implied)
        object.__setattr__(self, "is_calibration", bool(self.is_calibration))

    @property
    def keys(self) -> tuple[str, ...]:
        """Required then implied data-ID keys."""
        return self.dimensions + self.implied

    def normalize_data_id(self, data_id: Mapping[str, Any], *, strict: bool = True) -> DataId:
        """Validated data ID with every required key and any implied ones given.

        With ``strict``, keys that are not dimensions of this type are an error;
        otherwise they are dropped (useful to look up a bias with a raw's data ID).
        """
        missing = [k for k in self.dimensions if k not in data_id]
        if missing:
            raise InvalidDataIdError(
                f"data ID {dict(data_id)} for {self.name!r} lacks {', '.join(missing)} "
                f"(needs {', '.join(self.dimensions)})"
            )
        keys = set(self.keys)
        extra = [k for k in data_id if k not in keys]
        if extra and strict:
            raise InvalidDataIdError(
                f"data ID keys {extra} are not dimensions of {self.name!r} ({', '.join(self.keys)})"
            )
        return DataId({k: validate_value(k, v) for k, v in data_id.items() if k in keys})


# -- dataset IDs ---------------------------------------------------------------------


class _Uuid7Source:
    """Time-ordered random UUIDs (RFC 9562 version 7), monotonic within a process.

    48 bits of Unix milliseconds, then a 12-bit counter that orders IDs made in the
    same millisecond, then 62 random bits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        self._pid = os.getpid()

    def __call__(self) -> uuid.UUID:
        with self._lock:
            if os.getpid() != self._pid:  # forked: do not share the sequence
                self._pid, self._last_ms, self._counter = os.getpid(), -1, 0
            now = time.time_ns() // 1_000_000
            if now > self._last_ms:
                self._last_ms = now
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x7FF
            else:
                self._counter += 1
                if self._counter > 0xFFF:
                    self._last_ms += 1
                    self._counter = 0
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)


#: A new random time-ordered UUID (version 7).
uuid7 = _Uuid7Source()


def deterministic_dataset_id(
    dataset_type: str, data_id: Mapping[str, DataIdValue], run: str | None = None
) -> uuid.UUID:
    """LSST deterministic dataset ID: UUIDv5 of ``dataset_type=N[,run=R],dim=value,...``.

    ``data_id`` must hold exactly the required dimensions (sorted here by name, values
    through ``str``); ``run`` is given for the "type+run" mode used by raw ingest.
    """
    items = [f"dataset_type={dataset_type}"]
    if run is not None:
        items.append(f"run={run}")
    items.extend(f"{name}={data_id[name]}" for name in sorted(data_id))
    return uuid.uuid5(LSST_DATASET_NAMESPACE, ",".join(items))


def make_dataset_id(
    dataset_type: DatasetType, data_id: Mapping[str, DataIdValue], run: str, mode: IdMode
) -> uuid.UUID:
    """Dataset ID for ``mode``: ``unique`` (random UUIDv7), ``type_run`` or ``type`` (UUIDv5)."""
    if mode == "unique":
        return uuid7()
    required = {k: data_id[k] for k in dataset_type.dimensions}
    if mode == "type_run":
        return deterministic_dataset_id(dataset_type.name, required, run)
    if mode == "type":
        return deterministic_dataset_id(dataset_type.name, required)
    raise ValueError(f"unknown dataset ID mode {mode!r}: use 'unique', 'type_run' or 'type'")


# -- dataset references --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """One dataset: ID, type name, RUN, data ID and, once written, its file.

    Small and immutable so tasks can return it and the flow can register it; ``data_id``
    holds the required values and, when known, the implied ones (``band`` for a raw).
    """

    id: uuid.UUID
    dataset_type: str
    run: str
    data_id: DataId
    uri: str | None = None
    size: int | None = None
    checksum: str | None = None

    @classmethod
    def new(
        cls,
        dataset_type: DatasetType,
        data_id: Mapping[str, Any],
        run: str,
        *,
        id_mode: IdMode = "unique",
        uri: str | None = None,
        size: int | None = None,
        checksum: str | None = None,
    ) -> DatasetRef:
        """A reference for a dataset about to be written, with a validated data ID."""
        validate_collection_name(run)
        normalized = dataset_type.normalize_data_id(data_id)
        dataset_id = make_dataset_id(dataset_type, normalized, run, id_mode)
        return cls(dataset_id, dataset_type.name, run, normalized, uri, size, checksum)

    def with_file(self, uri: str, size: int, checksum: str) -> DatasetRef:
        """The same dataset, now with the file the datastore wrote."""
        return replace(self, uri=uri, size=size, checksum=checksum)

    def __str__(self) -> str:
        values = ", ".join(f"{k}={v!r}" for k, v in self.data_id.items())
        return f"{self.dataset_type}@{{{values}}} [{self.run}] ({self.id})"
