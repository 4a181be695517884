"""Fixtures shared by the registry test modules: one registry per test, on each backend.

``registry_url`` is parametrised over SQLite (a file in ``tmp_path``) and PostgreSQL (a
new database, uniquely named, created through ``COADD_TEST_POSTGRES_URL`` and dropped
afterwards, so parallel pytest-xdist workers never share one). Without that variable
the PostgreSQL cases fail, they are never skipped: run ``bash deploy/quickstart.sh
test`` or ``source deploy/test-services.sh`` first.

Import the fixtures by name into a test module (``from registry_fixtures import
registry, registry_url``).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import lsst.sphgeom as sphgeom
import pytest
import sqlalchemy as sa

from registry.dimensions import (
    BandRecord,
    DetectorRecord,
    ExposureRecord,
    InstrumentRecord,
    PhysicalFilterRecord,
    VisitRecord,
    tai_ns,
)
from registry.registry import Registry

POSTGRES_URL_VARIABLE = "COADD_TEST_POSTGRES_URL"
INSTRUMENT = "MegaPrime"
FILTERS = {"g.MP9402": "g", "r.MP9602": "r", "i.MP9703": "i"}
INSTRUMENT_RECORD = InstrumentRecord(
    name=INSTRUMENT,
    detector_max=36,
    visit_max=2**31,
    exposure_max=2**31,
    class_name="coadd_core.instrument.MegaPrime",
)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database that is dropped on exit."""
    base = os.environ.get(POSTGRES_URL_VARIABLE)
    if not base:
        pytest.fail(
            f"{POSTGRES_URL_VARIABLE} is not set, so the PostgreSQL registry tests cannot run: "
            "run `bash deploy/quickstart.sh test`, or `source deploy/test-services.sh` and then pytest",
            pytrace=False,
        )
    url = sa.make_url(base)
    name = f"coadd_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{os.path.join(tmp_path, 'registry.sqlite3')}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    """A new registry on each backend."""
    with Registry.create(registry_url) as created:
        yield created


# -- sample data ---------------------------------------------------------------------


def box(ra: float, dec: float, width: float, height: float, rotation: float = 0.0) -> sphgeom.ConvexPolygon:
    """Convex polygon of a ``width`` x ``height`` deg rectangle centred on (ra, dec).

    Corners are placed on the tangent plane at the centre (rotated by ``rotation``
    deg) and projected back to the sphere, like a CCD or patch outline.
    """
    lon, lat = math.radians(ra), math.radians(dec)
    centre = (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
    east = (-math.sin(lon), math.cos(lon), 0.0)
    north = (-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat))
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    corners = []
    for dx, dy in ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)):
        u = math.radians(dx * width * c - dy * height * s)
        v = math.radians(dx * width * s + dy * height * c)
        corners.append(sphgeom.UnitVector3d(*(centre[i] + u * east[i] + v * north[i] for i in range(3))))
    return sphgeom.ConvexPolygon(corners)


def exposure_time(exposure: int) -> int:
    """TAI ns start of sample exposure ``exposure``: one per hour from 2024-01-01."""
    import datetime

    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    return tai_ns(start) + exposure * 3600 * 10**9


def add_instrument(
    registry: Registry, *, detectors: int = 6, exposures: int = 4, visits: bool = False
) -> None:
    """MegaPrime with bands g/r/i, ``detectors`` CCDs and ``exposures`` exposures.

    Exposure ``n`` (1-based) uses filter ``list(FILTERS)[n % 3]`` and lasts 300 s from
    :func:`exposure_time`; with ``visits``, one visit per exposure (same id).
    """
    registry.sync_dimension_record("instrument", INSTRUMENT_RECORD)
    registry.insert_dimension_records(
        "band", [BandRecord(name=b) for b in sorted(set(FILTERS.values()))], on_conflict="ignore"
    )
    registry.insert_dimension_records(
        "physical_filter",
        [PhysicalFilterRecord(instrument=INSTRUMENT, name=n, band=b) for n, b in FILTERS.items()],
        on_conflict="ignore",
    )
    registry.insert_dimension_records(
        "detector",
        [
            DetectorRecord(
                instrument=INSTRUMENT, id=d, full_name=f"ccd{d:02d}", serial=f"S{d}", purpose="SCIENCE"
            )
            for d in range(detectors)
        ],
        on_conflict="ignore",
    )
    records = []
    visit_records = []
    for n in range(1, exposures + 1):
        physical = list(FILTERS)[n % 3]
        begin = exposure_time(n)
        records.append(
            ExposureRecord(
                instrument=INSTRUMENT,
                id=n,
                physical_filter=physical,
                band=FILTERS[physical],
                day_obs=20240101,
                obs_id=f"{n}o",
                observation_type="science" if n % 2 else "flat",
                exposure_time=300.0,
                dark_time=301.0,
                timespan_begin=begin,
                timespan_end=begin + 300 * 10**9,
                tracking_ra=10.0,
                tracking_dec=0.0,
                sky_angle=0.0,
                airmass=1.1,
            )
        )
        visit_records.append(
            VisitRecord(
                instrument=INSTRUMENT,
                id=n,
                physical_filter=physical,
                band=FILTERS[physical],
                day_obs=20240101,
                timespan_begin=begin,
                timespan_end=begin + 300 * 10**9,
            )
        )
    registry.insert_dimension_records("exposure", records, on_conflict="ignore")
    if visits:
        registry.insert_dimension_records("visit", visit_records, on_conflict="ignore")
