"""Spatial index on SQLite and PostgreSQL: the HTM lookup returns a superset, and the
exact post-filter returns exactly what a brute-force sphgeom test over every region
finds, for randomly placed CCD-like and patch-like polygons (including near a pole and
across RA = 0)."""

from __future__ import annotations

import random

import lsst.sphgeom as sphgeom
import pytest
from registry_fixtures import (  # noqa: F401  (fixtures are used by name)
    INSTRUMENT,
    add_instrument,
    box,
    registry,
    registry_url,
)

from registry.dimensions import (
    PatchRecord,
    SkyMapRecord,
    TractRecord,
    VisitDetectorRegionRecord,
    VisitRecord,
)
from registry.registry import Registry
from registry.spatial import SkyPixelization, regions_overlap

SKYMAP = "test_rings"
PATCH = 0.216  # deg: outer box of a 4000 + 2 x 100 px patch at 0.185"/px
CCD = (0.105, 0.237)  # deg: a MegaPrime CCD
CENTRES = [(12.0, 1.0), (0.05, -0.3), (200.0, 89.7)]  # an ordinary field, RA = 0, near the pole


def _random_position(rng: random.Random) -> tuple[float, float]:
    ra, dec = rng.choice(CENTRES)
    return (ra + rng.uniform(-1.2, 1.2)) % 360.0, max(-89.9, min(89.9, dec + rng.uniform(-1.0, 1.0)))


def _populate(registry: Registry, rng: random.Random) -> tuple[dict, dict, dict]:
    """Random tracts/patches and visits/detectors; return their regions by data-ID tuple."""
    registry.sync_dimension_record(
        "skymap", SkyMapRecord(name=SKYMAP, hash=b"h", tract_max=10, patch_nx_max=100, patch_ny_max=100)
    )
    tracts = {(SKYMAP, t): box(*_random_position(rng), 1.7, 1.7, rng.uniform(0, 90)) for t in range(6)}
    registry.insert_dimension_records(
        "tract", [TractRecord(skymap=s, id=t, region=r) for (s, t), r in tracts.items()]
    )
    patches = {}
    for i in range(900):
        ra, dec = _random_position(rng)
        patches[(SKYMAP, i % 6, i)] = box(ra, dec, PATCH, PATCH, rng.uniform(0, 90))
    registry.insert_dimension_records(
        "patch",
        [
            PatchRecord(skymap=s, tract=t, id=p, cell_x=p % 30, cell_y=p // 30, region=r)
            for (s, t, p), r in patches.items()
        ],
    )
    add_instrument(registry, detectors=36, exposures=10, visits=True)
    ccds = {}
    for visit in range(1, 11):
        for detector in range(36):
            ra, dec = _random_position(rng)
            ccds[(INSTRUMENT, visit, detector)] = box(ra, dec, *CCD, rotation=rng.uniform(0, 180))
    registry.insert_dimension_records(
        "visit_detector_region",
        [
            VisitDetectorRegionRecord(instrument=i, visit=v, detector=d, region=r)
            for (i, v, d), r in ccds.items()
        ],
    )
    return tracts, patches, ccds


def _brute_force(region: sphgeom.Region, regions: dict) -> list[tuple]:
    return sorted(key for key, other in regions.items() if regions_overlap(region, other))


def _keys(data_ids: list, names: tuple[str, ...]) -> list[tuple]:
    return [tuple(d[n] for n in names) for d in data_ids]


def test_overlaps_are_exact_and_candidates_a_superset(registry: Registry) -> None:
    rng = random.Random(20240101)
    tracts, patches, ccds = _populate(registry, rng)
    queries = [box(*_random_position(rng), *CCD, rotation=rng.uniform(0, 180)) for _ in range(60)]
    queries += [box(*_random_position(rng), PATCH, PATCH) for _ in range(20)]
    queries.append(
        sphgeom.Circle(
            sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(12.0, 1.0)), sphgeom.Angle.fromDegrees(1.5)
        )
    )
    nonempty = 0
    for query in queries:
        exact = _keys(registry.patches_overlapping(query), ("skymap", "tract", "patch"))
        candidates = set(_keys(registry.patch_candidates(query), ("skymap", "tract", "patch")))
        assert exact == _brute_force(query, patches)
        assert candidates >= set(exact)
        nonempty += bool(exact)
        ccd_keys = _keys(registry.visit_detectors_overlapping(query), ("instrument", "visit", "detector"))
        assert ccd_keys == _brute_force(query, ccds)
        assert _keys(registry.tracts_overlapping(query), ("skymap", "tract")) == _brute_force(query, tracts)
    assert nonempty > len(queries) // 3  # the test really exercises overlaps


def test_element_to_element_queries(registry: Registry) -> None:
    rng = random.Random(7)
    _, patches, ccds = _populate(registry, rng)
    for key in rng.sample(sorted(ccds), 40):
        _, visit, detector = key
        found = registry.patches_overlapping_element(INSTRUMENT, visit, detector)
        assert _keys(found, ("skymap", "tract", "patch")) == _brute_force(ccds[key], patches)
    for key in rng.sample(sorted(patches), 40):
        found = registry.visit_detectors_overlapping_patch(*key)
        assert _keys(found, ("instrument", "visit", "detector")) == _brute_force(patches[key], ccds)
    # Constraints narrow the lookup.
    some = sorted(patches)[0]
    assert registry.patches_overlapping(patches[some], skymap="other") == []
    assert registry.visit_detectors_overlapping(patches[some], instrument="HSC") == []


def test_candidates_shrink_with_exact_test(registry: Registry) -> None:
    """On a dense patch grid the lookup (trixels, then bounding caps) is a superset of the
    exact answer and much smaller than the grid."""
    registry.sync_dimension_record(
        "skymap", SkyMapRecord(name=SKYMAP, hash=b"h", tract_max=1, patch_nx_max=40, patch_ny_max=40)
    )
    registry.sync_dimension_record(
        "tract", TractRecord(skymap=SKYMAP, id=0, region=box(50.0, 10.0, 4.0, 4.0))
    )
    step = 0.2
    patches = {}
    for y in range(16):
        for x in range(16):
            patches[(SKYMAP, 0, y * 16 + x)] = box(48.5 + x * step, 8.5 + y * step, PATCH, PATCH)
    registry.insert_dimension_records(
        "patch",
        [
            PatchRecord(skymap=s, tract=t, id=p, cell_x=p % 16, cell_y=p // 16, region=r)
            for (s, t, p), r in patches.items()
        ],
    )
    query = box(50.01, 10.02, *CCD, rotation=30.0)
    exact = _keys(registry.patches_overlapping(query), ("skymap", "tract", "patch"))
    candidates = _keys(registry.patch_candidates(query), ("skymap", "tract", "patch"))
    assert exact == _brute_force(query, patches)
    assert set(candidates) >= set(exact) and len(candidates) < len(patches) // 4


def test_visit_regions_and_replacing_records(registry: Registry) -> None:
    add_instrument(registry, exposures=2)
    visit = VisitRecord(
        instrument=INSTRUMENT,
        id=1,
        physical_filter="r.MP9602",
        band="r",
        day_obs=20240101,
        region=box(30.0, -20.0, 1.0, 1.0),
    )
    assert registry.sync_dimension_record("visit", visit)
    assert not registry.sync_dimension_record("visit", visit)
    found = registry.visits_overlapping(box(30.4, -20.4, 0.2, 0.2))
    assert [(d["instrument"], d["visit"]) for d in found] == [(INSTRUMENT, 1)]
    assert registry.visits_overlapping(box(40.0, -20.0, 0.2, 0.2)) == []
    stored = registry.get_dimension_record("visit", {"instrument": INSTRUMENT, "visit": 1})
    assert stored is not None and bytes(stored.region.encode()) == bytes(visit.region.encode())


def test_htm_level_is_fixed_at_creation(registry_url: str) -> None:
    with Registry.create(registry_url, htm_level=6) as created:
        created.sync_dimension_record(
            "skymap", SkyMapRecord(name=SKYMAP, hash=b"h", tract_max=1, patch_nx_max=1, patch_ny_max=1)
        )
        created.sync_dimension_record(
            "tract", TractRecord(skymap=SKYMAP, id=0, region=box(5.0, 5.0, 1.0, 1.0))
        )
    with Registry.open(registry_url) as opened:
        assert opened.htm_level == 6
        assert len(opened.tracts_overlapping(box(5.5, 5.5, 0.2, 0.2))) == 1


@pytest.mark.parametrize("level", [6, 8, 10])
def test_envelope_covers_every_vertex(level: int) -> None:
    rng = random.Random(level)
    pixelization = SkyPixelization(level)
    for _ in range(200):
        polygon = box(*_random_position(rng), *CCD, rotation=rng.uniform(0, 180))
        indices = set(pixelization.indices(polygon))
        for vertex in polygon.getVertices():
            assert pixelization.pixelization.index(vertex) in indices
        query_ranges = pixelization.ranges(polygon, max_ranges=2)
        assert len(query_ranges) <= 2
        assert all(any(b <= i < e for b, e in query_ranges) for i in indices)


def test_upgrade_from_0001_backfills_bounding_caps(registry_url: str) -> None:
    """A registry made before bounding caps existed is refused until upgraded; the
    upgrade fills the caps in from the stored regions and queries stay exact."""
    import sqlalchemy as sa

    from registry import migrations
    from registry.engine import create_engine
    from registry.refs import SchemaVersionError

    with Registry.create(registry_url) as reg:
        add_instrument(reg)
        reg.sync_dimension_record(
            "skymap", SkyMapRecord(name="m", hash=b"h", tract_max=1, patch_nx_max=4, patch_ny_max=4)
        )
        reg.sync_dimension_record("tract", TractRecord(skymap="m", id=0, region=box(20.0, 5.0, 2.0, 2.0)))
        patches = {i: box(19.5 + 0.25 * (i % 4), 4.5 + 0.25 * (i // 4), 0.22, 0.22) for i in range(16)}
        reg.insert_dimension_records(
            "patch", [PatchRecord(skymap="m", tract=0, id=i, cell_x=i % 4, cell_y=i // 4, region=r) for i, r in patches.items()]
        )
        query = box(20.0, 5.0, 0.1, 0.24, rotation=20.0)
        before = reg.patches_overlapping(query)
    engine = create_engine(registry_url)
    with engine.begin() as connection:
        migrations.downgrade(connection, "0001")
    engine.dispose()
    with pytest.raises(SchemaVersionError):
        Registry.open(registry_url)
    Registry.upgrade_schema(registry_url)
    with Registry.open(registry_url) as reg:
        assert reg.patches_overlapping(query) == before
        with reg.engine.connect() as connection:
            caps = connection.execute(sa.text("SELECT COUNT(*) FROM patch WHERE bound_x IS NULL")).scalar_one()
        assert caps == 0
