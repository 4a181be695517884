"""The dimension universe: the keys of data IDs, how they relate, and their records.

A *dimension* is one data-ID key (``instrument``, ``exposure``, ``patch``...). Some
dimensions *require* others to be meaningful (a detector number means nothing without
its instrument) and some *imply* others (an exposure was taken through one physical
filter, which belongs to one band). A dataset type names a set of dimensions; the
*required* ones identify a dataset, the *implied* ones are looked up from dimension
records and stored beside them so queries can filter on, say, ``band`` for raws.

A *dimension element* is a table of records: each dimension with metadata, plus
``visit_detector_region`` (a region per visit and detector), which is not a data-ID key
of its own. Element tables name their own key ``id`` (or ``name``); the data-ID key is
the element name.

Times (exposure and visit timespans, calibration validity ranges) are stored as integer
nanoseconds since 1970-01-01T00:00:00 TAI, the convention of the LSST butler: integers
compare exactly, which half-open validity ranges need, and TAI has no leap seconds.
:func:`tai_ns` converts ``datetime`` and ``astropy.time.Time`` values.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

if TYPE_CHECKING:
    import astropy.time
    import lsst.sphgeom

DataIdValue: TypeAlias = int | str
TimeLike: TypeAlias = "int | datetime.datetime | astropy.time.Time"

#: Largest TAI nanosecond value; stands for "unbounded" at the end of a validity range.
TIME_MAX = 2**63 - 1
#: Smallest TAI nanosecond value; "unbounded" at the beginning.
TIME_MIN = -(2**63)

_UNIX_EPOCH_JD = 2440587.5
_NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class Dimension:
    """One data-ID key: its value type and its relations to other keys."""

    name: str
    value_type: type
    requires: tuple[str, ...] = ()
    implies: tuple[str, ...] = ()


#: Every data-ID key, in the order data IDs are shown.
DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("instrument", str),
        Dimension("band", str),
        Dimension("physical_filter", str, requires=("instrument",), implies=("band",)),
        Dimension("day_obs", int, requires=("instrument",)),
        Dimension("exposure", int, requires=("instrument",), implies=("physical_filter", "day_obs")),
        Dimension("visit", int, requires=("instrument",), implies=("physical_filter", "day_obs")),
        Dimension("detector", int, requires=("instrument",)),
        Dimension("skymap", str),
        Dimension("tract", int, requires=("skymap",)),
        Dimension("patch", int, requires=("skymap", "tract")),
    )
}
DIMENSION_ORDER: tuple[str, ...] = tuple(DIMENSIONS)
INTEGER_KEYS: frozenset[str] = frozenset(n for n, d in DIMENSIONS.items() if d.value_type is int)


def _closure(names: Iterable[str], attribute: str) -> set[str]:
    result: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in result:
            continue
        result.add(name)
        pending.extend(getattr(DIMENSIONS[name], attribute))
    return result


def sort_dimensions(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` in the universe's display order."""
    wanted = set(names)
    return tuple(n for n in DIMENSION_ORDER if n in wanted)


def dimension_group(names: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a set of dimensions into (required, implied), both in display order.

    Required dependencies are added (``patch`` brings ``skymap`` and ``tract``); a
    dimension implied by another one in the set is implied, not required, so
    ``{instrument, exposure, detector, band}`` is identified by instrument, exposure
    and detector alone.
    """
    names = list(names)
    unknown = [n for n in names if n not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown dimension(s) {unknown}; known: {', '.join(DIMENSION_ORDER)}")
    full = _closure(names, "requires")
    implied_by_others: set[str] = set()
    for name in full:
        implied_by_others |= _closure(DIMENSIONS[name].implies, "implies")
    required = full - implied_by_others
    implied = _closure(required, "implies") - required
    return sort_dimensions(required), sort_dimensions(implied)


# -- times ---------------------------------------------------------------------------


def tai_ns(value: TimeLike) -> int:
    """Integer nanoseconds since 1970-01-01 TAI for a time given in any common form.

    ``int`` values are taken as already in that convention; ``datetime`` values must be
    timezone-aware (a naive one is ambiguous, so it is refused) and are taken as UTC;
    ``astropy.time.Time`` values are converted from their own scale.
    """
    if isinstance(value, bool):
        raise TypeError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    from astropy.time import Time

    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} is ambiguous: give a timezone (UTC)")
        value = Time(value.astimezone(datetime.UTC).replace(tzinfo=None), scale="utc")
    if not isinstance(value, Time):
        raise TypeError(f"not a time: {value!r} (use int TAI ns, an aware datetime or astropy Time)")
    tai = value.tai
    # jd1 holds the integer-and-a-half part exactly; jd2 the fraction, to ~10 ns.
    return round((float(tai.jd1) - _UNIX_EPOCH_JD) * _NS_PER_DAY) + round(float(tai.jd2) * _NS_PER_DAY)


def time_from_tai_ns(ns: int) -> astropy.time.Time:
    """The ``astropy.time.Time`` (TAI scale) of integer nanoseconds since 1970 TAI."""
    from astropy.time import Time

    days, rest = divmod(int(ns), _NS_PER_DAY)
    return Time(_UNIX_EPOCH_JD + days, rest / _NS_PER_DAY, format="jd", scale="tai")


# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentRecord:
    """A camera; ``class_name`` names the code that knows its raw format."""

    name: str
    visit_max: int | None = None
    exposure_max: int | None = None
    detector_max: int | None = None
    class_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BandRecord:
    """An abstract filter (``g``, ``r``...), shared by instruments so coadds can mix them."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PhysicalFilterRecord:
    """A real filter of one instrument (``r.MP9602``) and the band it measures."""

    instrument: str
    name: str
    band: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DetectorRecord:
    """One CCD of an instrument (MegaPrime: ``id`` 0..35, ``full_name`` ``ccd00``...)."""

    instrument: str
    id: int
    full_name: str | None = None
    serial: str | None = None
    purpose: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposureRecord:
    """One shutter opening; timespan in TAI ns (see module docstring), angles in degrees."""

    instrument: str
    id: int
    physical_filter: str
    band: str
    day_obs: int
    obs_id: str | None = None
    observation_type: str | None = None
    exposure_time: float | None = None
    dark_time: float | None = None
    timespan_begin: int | None = None
    timespan_end: int | None = None
    tracking_ra: float | None = None
    tracking_dec: float | None = None
    sky_angle: float | None = None
    airmass: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitRecord:
    """A visit (MegaPrime: one-to-one with exposure, same id); ``region`` covers all CCDs."""

    instrument: str
    id: int
    physical_filter: str
    band: str
    day_obs: int
    timespan_begin: int | None = None
    timespan_end: int | None = None
    region: lsst.sphgeom.Region | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitDetectorRegionRecord:
    """The sky region one detector saw in one visit (padded, see ALGORITHMS §10)."""

    instrument: str
    visit: int
    detector: int
    region: lsst.sphgeom.Region | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkyMapRecord:
    """A sky tessellation; ``hash`` identifies its definition, ``definition`` is its JSON config."""

    name: str
    hash: bytes
    tract_max: int
    patch_nx_max: int
    patch_ny_max: int
    definition: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TractRecord:
    """One tract of a sky map with its (outer) sky region."""

    skymap: str
    id: int
    region: lsst.sphgeom.Region | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PatchRecord:
    """One patch; ``cell_x``/``cell_y`` are its x/y index in the tract, region is the outer box."""

    skymap: str
    tract: int
    id: int
    cell_x: int
    cell_y: int
    region: lsst.sphgeom.Region | None = field(default=None, compare=False)


Record: TypeAlias = (
    InstrumentRecord
    | BandRecord
    | PhysicalFilterRecord
    | DetectorRecord
    | ExposureRecord
    | VisitRecord
    | VisitDetectorRegionRecord
    | SkyMapRecord
    | TractRecord
    | PatchRecord
)


@dataclass(frozen=True)
class DimensionElement:
    """A table of records: which data-ID keys identify a row and in which columns.

    ``keys`` maps each data-ID key to its column (``{"instrument": "instrument",
    "exposure": "id"}``); ``implied`` lists the columns that hold implied data-ID values.
    """

    name: str
    record_class: type
    keys: Mapping[str, str]
    implied: tuple[str, ...] = ()
    spatial: bool = False
    SPATIAL_COLUMN: ClassVar[str] = "region"

    @functools.cached_property
    def columns(self) -> tuple[str, ...]:
        """Every column of the element's table, in record field order."""
        return tuple(f.name for f in dataclasses.fields(self.record_class))

    def data_id_of(self, record: Record) -> dict[str, DataIdValue]:
        """Data ID (keys and implied values) identified by ``record``."""
        result = {key: getattr(record, column) for key, column in self.keys.items()}
        result.update((name, getattr(record, name)) for name in self.implied)
        return result


ELEMENTS: dict[str, DimensionElement] = {
    e.name: e
    for e in (
        DimensionElement("instrument", InstrumentRecord, {"instrument": "name"}),
        DimensionElement("band", BandRecord, {"band": "name"}),
        DimensionElement(
            "physical_filter",
            PhysicalFilterRecord,
            {"instrument": "instrument", "physical_filter": "name"},
            implied=("band",),
        ),
        DimensionElement("detector", DetectorRecord, {"instrument": "instrument", "detector": "id"}),
        DimensionElement(
            "exposure",
            ExposureRecord,
            {"instrument": "instrument", "exposure": "id"},
            implied=("physical_filter", "band", "day_obs"),
        ),
        DimensionElement(
            "visit",
            VisitRecord,
            {"instrument": "instrument", "visit": "id"},
            implied=("physical_filter", "band", "day_obs"),
            spatial=True,
        ),
        DimensionElement(
            "visit_detector_region",
            VisitDetectorRegionRecord,
            {"instrument": "instrument", "visit": "visit", "detector": "detector"},
            spatial=True,
        ),
        DimensionElement("skymap", SkyMapRecord, {"skymap": "name"}),
        DimensionElement("tract", TractRecord, {"skymap": "skymap", "tract": "id"}, spatial=True),
        DimensionElement(
            "patch",
            PatchRecord,
            {"skymap": "skymap", "tract": "tract", "patch": "id"},
            spatial=True,
        ),
    )
}

#: Elements whose records give the implied values of a dimension, by dimension name.
IMPLYING_ELEMENTS: dict[str, str] = {
    "physical_filter": "physical_filter",
    "exposure": "exposure",
    "visit": "visit",
}


def get_element(name: str) -> DimensionElement:
    """The element called ``name``, or a ``KeyError`` listing the known ones."""
    try:
        return ELEMENTS[name]
    except KeyError:
        raise KeyError(f"unknown dimension element {name!r}; known: {', '.join(ELEMENTS)}") from None
