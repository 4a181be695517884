"""Spatial index of the registry: HTM trixels of each region, then an exact polygon test.

Every region registered for a spatial element (visit, visit_detector_region, tract,
patch) is pixelised with ``lsst.sphgeom.HtmPixelization``: the *envelope* (every trixel
that may touch the region) is expanded to individual trixel indices and stored, one row
per (element key, index), in ``<element>_skypix`` with a covering index on
``(skypix_index, keys...)``. An overlap query takes the envelope of the query region as
at most :data:`QUERY_MAX_RANGES` index ranges (coarsening only ever adds trixels, so it
is padding, never a loss), looks up the rows with those indices (an index range scan
per range), and keeps the candidates whose region really overlaps the query region
(``Region.relate``, exact for convex polygons). Both envelopes are conservative, so the
candidates are a superset of the answer and the answer is exact.

Why HTM level 8 (LSST's common skypix is level 7)
-------------------------------------------------
Measured with ``benchmarks/registry_spatial_probe.py`` on SQLite (one core): 10^5
patch-like squares on a contiguous grid (0.216 deg, the outer box of a 4000+2x100 px
patch at 0.185"/px) and 10^5 CCD-like rectangles (0.105 x 0.237 deg, MegaPrime, 36 per
visit), then 2000 randomly placed and rotated CCD-sized queries, each truly overlapping
4 patches (median):

=====  ==========  ===========  ===================  ====================  ===============
level  rows/patch  register     patch candidates     patches_overlapping   visit-detector
                   2 x 10^5     median (p99)         median / p99          query p99
=====  ==========  ===========  ===================  ====================  ===============
7      2.3         12 s         25 (80)              0.38 / 0.72 ms        1.41 ms
8      3.8         14 s         13 (30)              0.37 / 0.92 ms        0.82 ms
9      7.8         25 s         8 (13)               0.35 / 0.70 ms        1.03 ms
=====  ==========  ===========  ===================  ====================  ===============

Per-query time is dominated by the fixed cost of one SQL round trip (~0.25 ms), so the
levels differ little in the median; level 8 halves the candidates of level 7 (and cuts
their tail by 2.7x: fewer rows fetched, decoded and tested as regions get larger or
denser) for 1.7x the index rows, while level 9 doubles the rows again and the
registration time, and tract regions (~1.7 deg) would need ~270 rows each. The level is
fixed when a registry is created (stored in ``registry_attribute``), so every overlap
table of one registry uses the same trixels and can be joined on ``skypix_index``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lsst.sphgeom as sphgeom
import sqlalchemy as sa

from . import schema
from .dimensions import ELEMENTS

#: Default HTM level of new registries (see the module docstring for the measurement).
HTM_LEVEL = 8
#: Most index ranges a query envelope is coarsened to (fewer, wider ranges: one SQL
#: statement shape per count, each range an index range scan).
QUERY_MAX_RANGES = 12

KeyTuple = tuple[Any, ...]
#: Slack of the bounding-cap test (the caps are exact; this absorbs float rounding).
CAP_TOLERANCE = 1e-9


def bounding_cap(region: sphgeom.Region) -> tuple[float, float, float, float, float]:
    """(x, y, z, cos, sin) of the region's bounding circle: centre and opening angle."""
    circle = region.getBoundingCircle()
    centre = circle.getCenter()
    angle = circle.getOpeningAngle().asRadians()
    return (centre.x(), centre.y(), centre.z(), math.cos(angle), math.sin(angle))


def encode_region(region: sphgeom.Region | None) -> bytes | None:
    """Bytes stored for ``region`` (``Region.encode()``), ``None`` for no region."""
    return None if region is None else bytes(region.encode())


def decode_region(data: bytes | None) -> sphgeom.Region | None:
    """Region from stored bytes."""
    return None if data is None else sphgeom.Region.decode(bytes(data))


def regions_overlap(a: sphgeom.Region, b: sphgeom.Region) -> bool:
    """Exact overlap test of two regions (they share at least one point)."""
    return not (a.relate(b) & sphgeom.DISJOINT)


class SkyPixelization:
    """HTM pixelisation at one level: region -> trixel indices or index ranges."""

    def __init__(self, level: int = HTM_LEVEL) -> None:
        if not 0 <= level <= sphgeom.HtmPixelization.MAX_LEVEL:
            raise ValueError(f"HTM level {level} out of range")
        self.level = level
        self.pixelization = sphgeom.HtmPixelization(level)

    def indices(self, region: sphgeom.Region) -> list[int]:
        """Every trixel of the region's envelope (what is stored per region)."""
        return [i for begin, end in self.pixelization.envelope(region) for i in range(begin, end)]

    def ranges(self, region: sphgeom.Region, max_ranges: int = QUERY_MAX_RANGES) -> list[tuple[int, int]]:
        """Half-open index ranges covering the region's envelope, at most ``max_ranges``."""
        return [(begin, end) for begin, end in self.pixelization.envelope(region, max_ranges)]


class SpatialIndex:
    """Reads and writes the ``<element>_skypix`` tables on a given connection."""

    def __init__(self, level: int = HTM_LEVEL) -> None:
        self.pixelization = SkyPixelization(level)
        self._statements: dict[tuple[str, int, tuple[str, ...]], sa.Select] = {}

    @property
    def level(self) -> int:
        return self.pixelization.level

    # -- writing ---------------------------------------------------------------------

    def rows_for(
        self, element: str, keyed_regions: Iterable[tuple[KeyTuple, sphgeom.Region | None]]
    ) -> list[KeyTuple]:
        """Overlap-table rows ``(*key, skypix_index)`` for (key, region) pairs of ``element``.

        Keys are tuples in the element's key order; pairs without a region give no rows.
        """
        rows: list[KeyTuple] = []
        for key, region in keyed_regions:
            if region is not None:
                rows.extend((*key, index) for index in self.pixelization.indices(region))
        return rows

    @staticmethod
    def columns(element: str) -> list[str]:
        """Column names of an overlap-table row, in :meth:`rows_for` order."""
        return [*ELEMENTS[element].keys.values(), "skypix_index"]

    # -- reading ---------------------------------------------------------------------

    def _statement(self, element: str, n_ranges: int, constraints: tuple[str, ...]) -> sa.Select:
        cache_key = (element, n_ranges, constraints)
        statement = self._statements.get(cache_key)
        if statement is None:
            statement = self._build_statement(element, n_ranges, constraints)
            self._statements[cache_key] = statement
        return statement

    @staticmethod
    def _build_statement(element: str, n_ranges: int, constraints: tuple[str, ...]) -> sa.Select:
        keys = ELEMENTS[element].keys
        parent = schema.ELEMENT_TABLES[element]
        skypix = schema.SKYPIX_TABLES[element]
        key_columns = list(keys.values())
        index = skypix.c.skypix_index
        extra = [skypix.c[keys[name]] == sa.bindparam(f"k_{name}") for name in constraints]
        # One SELECT per range, merged by UNION (which also removes duplicates): an OR of
        # ranges would make SQLite scan the whole table instead of the index.
        per_range = [
            sa.select(*(skypix.c[c] for c in key_columns)).where(
                index >= sa.bindparam(f"b{i}"), index < sa.bindparam(f"e{i}"), *extra
            )
            for i in range(n_ranges)
        ]
        matches = (sa.union(*per_range) if n_ranges > 1 else per_range[0].distinct()).subquery()
        join_on = sa.and_(*(parent.c[c] == matches.c[c] for c in key_columns))
        # Two caps overlap iff the angle between their centres is at most the sum of their
        # opening angles: dot(c1, c2) >= cos(a1 + a2) = cos a1 cos a2 - sin a1 sin a2.
        p = parent.c
        cap_test = sa.or_(
            p.bound_x.is_(None),
            p.bound_x * sa.bindparam("qx") + p.bound_y * sa.bindparam("qy") + p.bound_z * sa.bindparam("qz")
            >= p.bound_cos * sa.bindparam("qcos") - p.bound_sin * sa.bindparam("qsin") - CAP_TOLERANCE,
        )
        return (
            sa.select(*(parent.c[c] for c in key_columns), parent.c.region)
            .select_from(matches.join(parent, join_on))
            .where(cap_test)
        )

    def candidates(
        self,
        connection: sa.Connection,
        element: str,
        region: sphgeom.Region,
        constraints: Mapping[str, Any] | None = None,
    ) -> dict[KeyTuple, sphgeom.Region]:
        """Elements whose stored envelope shares a trixel with ``region``'s envelope.

        Keys are tuples of data-ID values in the element's key order; ``constraints``
        restricts data-ID keys of the element to given values (e.g. ``skymap``).
        """
        constraints = dict(constraints or {})
        unknown = set(constraints) - set(ELEMENTS[element].keys)
        if unknown:
            raise KeyError(f"{element} has no key(s) {sorted(unknown)}")
        ranges = self.pixelization.ranges(region)
        if not ranges:
            return {}
        names = tuple(sorted(constraints))
        params: dict[str, Any] = {f"k_{name}": constraints[name] for name in names}
        for i, (begin, end) in enumerate(ranges):
            params[f"b{i}"] = begin
            params[f"e{i}"] = end
        qx, qy, qz, qcos, qsin = bounding_cap(region)
        if qcos < 0.0:
            # A query cap wider than a hemisphere: the sum of angles may pass pi, where the
            # cosine test stops being monotonic; let every candidate through.
            qx = qy = qz = 0.0
            qcos, qsin = -2.0, 0.0
        params.update(qx=qx, qy=qy, qz=qz, qcos=qcos, qsin=qsin)
        rows = connection.execute(self._statement(element, len(ranges), names), params).fetchall()
        decode = sphgeom.Region.decode
        found: dict[KeyTuple, sphgeom.Region] = {}
        for row in rows:
            if row[-1] is not None:
                found[tuple(row[:-1])] = decode(bytes(row[-1]))
        return found

    def overlapping(
        self,
        connection: sa.Connection,
        element: str,
        region: sphgeom.Region,
        constraints: Mapping[str, Any] | None = None,
    ) -> list[KeyTuple]:
        """Keys of the elements whose region overlaps ``region`` (exact), sorted."""
        found = self.candidates(connection, element, region, constraints)
        disjoint = sphgeom.DISJOINT
        return sorted(key for key, other in found.items() if not (region.relate(other) & disjoint))


def key_dicts(element: str, keys: Sequence[KeyTuple]) -> list[dict[str, Any]]:
    """Data-ID dicts of key tuples of ``element``."""
    names = list(ELEMENTS[element].keys)
    return [dict(zip(names, key)) for key in keys]
