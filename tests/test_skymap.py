"""Sky map invariants (ALGORITHMS.md §4 and §11 item 14)."""

from __future__ import annotations

import functools
import itertools
import math
import pickle

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lsst import sphgeom

from coadd_core.geom import Box
from coadd_core.skymap import (
    DiscreteSkyMap,
    DiscreteSkyMapConfig,
    RingsSkyMap,
    RingsSkyMapConfig,
    TractInfo,
    make_skymap,
    sky_polygon_from_box,
    skymap_from_dict,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def rings() -> RingsSkyMap:
    return make_skymap("rings")  # type: ignore[return-value]


def _expected_ring_counts(num_rings: int) -> list[int]:
    size = math.pi / (num_rings + 1)
    counts = []
    for r in range(num_rings):
        start = size * (r + 0.5) - math.pi / 2
        d = min(abs(start), abs(start + size))
        counts.append(int(2 * math.pi * math.cos(d) / size) + 1)
    return counts


def _vec(ra: float, dec: float) -> sphgeom.UnitVector3d:
    return sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(ra, dec))


def _pixel_of(tract: TractInfo, ra: float, dec: float) -> tuple[int, int]:
    x, y = tract.sky_to_pixel([ra, dec])
    return int(np.floor(float(x) + 0.5)), int(np.floor(float(y) + 0.5))


ras = st.floats(0.0, 360.0, allow_nan=False, exclude_max=True)
decs = st.floats(-90.0, 90.0, allow_nan=False)


# -- configs ---------------------------------------------------------------------------
def test_project_defaults() -> None:
    cfg = RingsSkyMapConfig()
    assert (cfg.num_rings, cfg.projection, cfg.ra_start) == (120, "TAN", 0.0)
    assert cfg.tract_overlap == pytest.approx(1 / 60)
    assert cfg.pixel_scale == 0.185
    assert cfg.patch_inner_dimensions == (4000, 4000)
    assert cfg.patch_border == 100
    with pytest.raises(ValueError):
        RingsSkyMapConfig(projection="SIN")
    with pytest.raises(ValueError):
        RingsSkyMapConfig(num_rings=0)


def test_discrete_unequal_lists_raise() -> None:
    with pytest.raises(ValueError):
        DiscreteSkyMapConfig(ra_list=[10.0, 20.0], dec_list=[0.0], radius_list=[1.0, 1.0])
    with pytest.raises(ValueError):
        make_skymap("discrete", ra_list=[10.0], dec_list=[0.0, 1.0], radius_list=[1.0])
    with pytest.raises(ValueError):
        make_skymap("healpix")


def test_serialisation_round_trip_and_stable_hash(rings: RingsSkyMap) -> None:
    again = skymap_from_dict(rings.to_dict())
    assert again == rings and again.config_hash == rings.config_hash
    assert rings.config_hash == "b11ff7cde2a32cd4cad60f7c7caa6b5e56ac51c7"
    assert make_skymap("rings", num_rings=119).config_hash != rings.config_hash
    disc = make_skymap(
        "discrete", ra_list=[214.263], dec_list=[52.082], radius_list=[0.5], projection="STG"
    )
    back = DiscreteSkyMap.from_dict(disc.to_dict())
    assert isinstance(back, DiscreteSkyMap) and back.config_hash == disc.config_hash
    assert back[0].wcs.wcs.ctype[0] == "RA---STG"


def test_pickle_ships_the_definition_and_tracts_rebuild_equal() -> None:
    sky = RingsSkyMap(RingsSkyMapConfig(num_rings=20), cache_size=1)
    first = sky[5]
    sky[6]
    assert sky[5] is not first and sky[5] == first  # evicted, rebuilt identically
    clone = pickle.loads(pickle.dumps(sky))
    assert clone == sky and clone[5] == first
    tract = pickle.loads(pickle.dumps(first))
    assert tract == first and tract[3] == first[3]
    assert tract.outer_sky_polygon == first.outer_sky_polygon


# -- rings layout ----------------------------------------------------------------------
def test_default_rings_tract_count(rings: RingsSkyMap) -> None:
    counts = _expected_ring_counts(120)
    assert list(rings.ring_counts) == counts
    assert len(rings) == sum(counts) + 2 == 18938


@FAST
@given(st.integers(0, 18937))
def test_ring_indices_round_trip(rings: RingsSkyMap, tract_id: int) -> None:
    ring, k = rings.ring_indices(tract_id)
    assert rings.tract_id(ring, k) == tract_id
    if tract_id == 0:
        assert ring == -1
    elif tract_id == len(rings) - 1:
        assert ring == 120


def test_tract_ids_out_of_range(rings: RingsSkyMap) -> None:
    with pytest.raises(IndexError):
        rings[len(rings)]
    with pytest.raises(IndexError):
        rings[-1]


@pytest.mark.parametrize("tract_id", [0, 1, 500, 9000, 9400, 18936, 18937])
def test_tract_wcs_and_bbox(rings: RingsSkyMap, tract_id: int) -> None:
    tract = rings[tract_id]
    ring, k = rings.ring_indices(tract_id)
    size = math.pi / 121
    if 0 <= ring < 120:
        assert tract.ctr_radec[1] == pytest.approx(math.degrees(size * (ring + 1) - math.pi / 2))
        assert tract.ctr_radec[0] == pytest.approx(360.0 * k / rings.ring_counts[ring])
    wcs = tract.wcs.wcs
    s = 0.185 / 3600
    np.testing.assert_allclose(wcs.crval, tract.ctr_radec)
    np.testing.assert_allclose(wcs.cd, [[-s, 0], [0, s]])
    assert tract.bbox.xy0 == (0, 0)
    nx, ny = tract.num_patches
    assert (tract.bbox.width, tract.bbox.height) == (4000 * nx, 4000 * ny)
    # The centre (CRPIX, FITS 1-based) is within a pixel of the bbox centre.
    cx, cy = tract.bbox.center
    assert abs(wcs.crpix[0] - 1 - cx) <= 1 and abs(wcs.crpix[1] - 1 - cy) <= 1
    x, y = tract.sky_to_pixel(tract.ctr_coord)
    assert abs(float(x) - cx) <= 1 and abs(float(y) - cy) <= 1
    # The box holds radius + overlap in every cardinal direction.
    half = math.tan(math.radians(math.degrees(size / 2) + 1 / 60)) / math.radians(s)
    assert min(cx, cy) + 0.5 >= half - 1
    # Vertices: the bbox corners shrunk by 0.001 px, inside the outer polygon.
    vx, vy = tract.sky_to_pixel(tract.vertices)
    for values, hi in ((vx, tract.bbox.x1), (vy, tract.bbox.y1)):
        np.testing.assert_allclose(np.unique(np.round(values, 6)), [-0.499, hi + 0.499], atol=1e-5)
    poly = tract.outer_sky_polygon
    assert all(poly.contains(_vec(ra, dec)) for ra, dec in tract.vertices)


# -- patch grid ------------------------------------------------------------------------
def _discrete_tract(dims: tuple[int, int], border: int, radius: float, scale: float) -> TractInfo:
    sky = make_skymap(
        "discrete",
        ra_list=[150.0],
        dec_list=[2.0],
        radius_list=[radius],
        patch_inner_dimensions=dims,
        patch_border=border,
        pixel_scale=scale,
    )
    return sky[0]


grid_params = st.tuples(
    st.tuples(st.integers(50, 900), st.integers(50, 900)),
    st.integers(0, 50),
    st.floats(0.0, 0.05),
    st.floats(0.5, 2.0),
)


@FAST
@given(grid_params)
@example(((4000, 4000), 100, 0.74, 0.185))
def test_inner_boxes_tile_and_outer_boxes_are_grown_inner(params: tuple) -> None:
    dims, border, radius, scale = params
    tract = _discrete_tract(dims, border, radius, scale)
    patches = list(tract)
    nx, ny = tract.num_patches
    assert len(patches) == len(tract) == nx * ny
    assert sum(p.inner_bbox.area for p in patches) == tract.bbox.area
    for a, b in itertools.combinations(patches, 2):
        assert a.inner_bbox.intersection(b.inner_bbox).is_empty()
    union = patches[0].inner_bbox
    for p in patches:
        union = union.union(p.inner_bbox)
        assert p.inner_bbox.width == dims[0] and p.inner_bbox.height == dims[1]
        assert p.outer_bbox == p.inner_bbox.grown(border).intersection(tract.bbox)
        assert tract.bbox.contains(p.outer_bbox)
    assert union == tract.bbox


@FAST
@given(grid_params)
def test_outer_boxes_overlap_neighbours_by_the_border(params: tuple) -> None:
    dims, border, radius, scale = params
    tract = _discrete_tract(dims, border, radius, scale)
    nx, ny = tract.num_patches
    for x, y in itertools.product(range(nx), range(ny)):
        p = tract[(x, y)]
        if x + 1 < nx:
            q = tract[(x + 1, y)]
            assert p.outer_bbox.intersection(q.inner_bbox).width == border
            assert q.outer_bbox.intersection(p.inner_bbox).width == border
            both = p.outer_bbox.intersection(q.outer_bbox)
            assert both.width == 2 * border
            assert both.is_empty() if border == 0 else both.height == p.outer_bbox.height
        if y + 1 < ny:
            q = tract[(x, y + 1)]
            assert p.outer_bbox.intersection(q.inner_bbox).height == border
            assert q.outer_bbox.intersection(p.inner_bbox).height == border
            assert p.outer_bbox.intersection(q.outer_bbox).height == 2 * border


@FAST
@given(grid_params, st.data())
def test_sequential_ids_round_trip(params: tuple, data: st.DataObject) -> None:
    tract = _discrete_tract(*params)
    nx, ny = tract.num_patches
    x = data.draw(st.integers(0, nx - 1))
    y = data.draw(st.integers(0, ny - 1))
    seq = tract.sequential_from_index((x, y))
    assert seq == nx * y + x
    assert tract.patch_index_from_sequential(seq) == (x, y)
    assert tract.get_patch_info(seq) == tract.get_patch_info((x, y)) == tract[(x, y)]
    assert tract[seq].sequential_index == seq
    for bad in [(nx, y), (x, ny), (-1, y), (x, -1)]:
        with pytest.raises(IndexError):
            tract.get_patch_info(bad)
    with pytest.raises(IndexError):
        tract.get_patch_info(nx * ny)
    with pytest.raises(IndexError):
        tract.patch_index_from_sequential(-1)


def test_patch_polygons_contain_their_inner_centre(rings: RingsSkyMap) -> None:
    for tract_id in (0, 4321, 18937):
        tract = rings[tract_id]
        for patch in tract:
            assert patch.wcs is tract.wcs
            ra, dec = patch.inner_center_sky()
            point = _vec(ra, dec)
            assert patch.inner_sky_polygon.contains(point)
            assert patch.outer_sky_polygon.contains(point)


# -- position lookups ------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(ras, decs)
@example(0.0, -90.0)
@example(0.0, 90.0)
@example(359.9999999, 0.0)
@example(0.0, 0.0)
@example(180.0, 89.999)
@example(359.9999999, -89.2)
def test_every_position_has_one_rings_tract_and_one_patch(
    rings: RingsSkyMap, ra: float, dec: float
) -> None:
    tract = rings.find_tract([ra, dec])
    assert bool(tract.inner_contains([ra, dec]))
    assert tract.inner_sky_region.contains(_vec(ra, dec))
    assert bool(tract.contains([ra, dec]))
    px, py = _pixel_of(tract, ra, dec)
    owners = [p for p in tract if p.inner_bbox.contains_point(px, py)]
    assert len(owners) == 1
    assert tract.find_patch([ra, dec]) == owners[0]
    assert owners[0].outer_bbox.contains_point(px, py)


def test_rings_cover_the_sphere_vectorised(rings: RingsSkyMap) -> None:
    rng = np.random.default_rng(42)
    n = 20000
    ra = np.concatenate(
        [rng.uniform(0, 360, n), rng.uniform(0, 360, 500), rng.uniform(-1e-9, 1e-9, 500) % 360]
    )
    dec = np.concatenate([
        np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
        rng.choice([-1, 1], 500) * rng.uniform(88.0, 90.0, 500),
        rng.uniform(-90, 90, 500),
    ])
    ids = rings.find_tract_ids(np.stack([ra, dec], axis=-1))
    assert ids.shape == ra.shape and ids.min() >= 0 and ids.max() < len(rings)
    for tid in np.unique(ids[:: max(1, len(ids) // 300)]):
        tract = rings[int(tid)]
        sel = ids == tid
        pts = np.stack([ra[sel], dec[sel]], axis=-1)
        assert np.all(tract.inner_contains(pts))
        assert np.all(tract.contains(pts))
        px, py = tract.find_patch_indices(pts)
        assert np.all(px >= 0) and np.all(py >= 0)


def test_inner_regions_are_unique(rings: RingsSkyMap) -> None:
    """A position's bbox-containing tracts all overlap, but only one owns it."""
    rng = np.random.default_rng(7)
    for ra, dec in zip(rng.uniform(0, 360, 40), rng.uniform(-90, 90, 40)):
        holders = rings.find_tract_patch_list([[ra, dec]])
        owners = [t.id for t, _ in holders if bool(t.inner_contains([ra, dec]))]
        assert owners == [int(rings.find_tract_ids([ra, dec]))]


@FAST
@given(st.integers(1, 18936), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_points_of_an_inner_band_map_back_to_its_tract(
    rings: RingsSkyMap, tract_id: int, u: float, v: float
) -> None:
    ring, k = rings.ring_indices(tract_id)
    size = math.pi / 121
    width = 360.0 / rings.ring_counts[ring]
    ra = (width * (k - 0.5 + u)) % 360.0
    dec = math.degrees(-math.pi / 2 + (ring + 0.5 + v) * size)
    assert int(rings.find_tract_ids([ra, dec])) == tract_id


def test_skycoord_and_array_inputs_agree(rings: RingsSkyMap) -> None:
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 50), rng.uniform(-80, 80, 50)
    icrs = SkyCoord(ra, dec, unit="deg", frame="icrs")
    ids = rings.find_tract_ids(np.stack([ra, dec], axis=-1))
    np.testing.assert_array_equal(rings.find_tract_ids(icrs), ids)
    np.testing.assert_array_equal(rings.find_tract_ids(icrs.galactic), ids)
    assert rings.find_tract(icrs[0]).id == ids[0]
    tract = rings[int(ids[0])]
    assert tract.find_patch(icrs[0]) == tract.find_patch((ra[0], dec[0]))


def test_find_patch_off_tract_raises(rings: RingsSkyMap) -> None:
    tract = rings[9000]
    ra, dec = tract.ctr_radec
    with pytest.raises(LookupError):
        tract.find_patch([(ra + 180.0) % 360.0, -dec])
    with pytest.raises(LookupError):
        tract.find_patch([ra, dec + 5.0])


def test_find_patch_list_follows_the_lsst_rule(rings: RingsSkyMap) -> None:
    tract = rings[9000]
    xs = np.array([3990.0, 4050.0, 7000.0])
    ys = np.array([100.0, 500.0, 8020.0])
    ra, dec = tract.pixel_to_sky(xs, ys)
    patches = tract.find_patch_list(np.stack([ra, dec], axis=-1))
    # bbox x 3990..7000, y 100..8020, grown by 100: x 3890..7100 -> 0..1, y 0..8120 -> 0..2
    assert sorted(p.index for p in patches) == sorted(itertools.product(range(2), range(3)))
    single = tract.find_patch_list([ra[0], dec[0]])
    assert sorted(p.index for p in single) == [(0, 0), (1, 0)]
    far = tract.find_patch_list([(tract.ctr_radec[0] + 180) % 360, -tract.ctr_radec[1]])
    assert far == []


def test_find_tract_patch_list_includes_each_positions_patch(rings: RingsSkyMap) -> None:
    rng = np.random.default_rng(11)
    for _ in range(5):
        ra0, dec0 = rng.uniform(0, 360), rng.uniform(-85, 85)
        offsets = rng.uniform(-0.05, 0.05, (4, 2))
        pts = np.array([ra0, dec0]) + offsets
        found = {(t.id, p.index) for t, ps in rings.find_tract_patch_list(pts) for p in ps}
        for pt in pts:
            tract = rings.find_tract(pt)
            assert (tract.id, tract.find_patch(pt).index) in found


# -- overlap queries -------------------------------------------------------------------
def _ccd_wcs(ra: float, dec: float, rotation_deg: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [1024.5, 2306.5]
    s = 0.187 / 3600
    c, sn = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    wcs.wcs.cd = np.array([[-s * c, s * sn], [s * sn, s * c]])
    wcs.wcs.set()
    return wcs


CCD = Box.from_size(2048, 4612)


@settings(max_examples=20, deadline=None)
@given(ras, st.floats(-89.9, 89.9), st.floats(0.0, 360.0))
@example(0.0, 0.0, 30.0)
@example(359.99, -88.9, 0.0)
@example(10.0, 89.5, 45.0)
def test_find_overlapping_ccd_footprint_is_exact(
    rings: RingsSkyMap, ra: float, dec: float, rot: float
) -> None:
    wcs = _ccd_wcs(ra, dec, rot)
    footprint = sky_polygon_from_box(CCD, wcs)
    result = rings.find_overlapping((CCD, wcs))
    assert result
    found = {(t.id, p.sequential_index) for t, ps in result for p in ps}
    for tract, patches in result:
        assert patches == sorted(patches, key=lambda p: p.sequential_index)
        for patch in patches:
            assert patch.outer_sky_polygon.overlaps(footprint)
    # Brute force over every tract with a centre within 3 deg, and all of their patches.
    nearby = _tracts_near(ra, dec, 3.0)
    assert len(nearby) < 40
    expected = {
        (tid, p.sequential_index)
        for tid in nearby
        for p in rings[tid]
        if p.outer_sky_polygon.overlaps(footprint)
    }
    assert found == expected
    # The footprint centre's own tract and patch are among the results.
    tract = rings.find_tract([ra, dec])
    assert (tract.id, tract.find_patch([ra, dec]).sequential_index) in found


@functools.lru_cache(maxsize=1)
def _default_centre_vectors() -> np.ndarray:
    """Unit vectors of every default rings tract centre, from the ring formula."""
    size = math.pi / 121
    ra, dec = [0.0], [-math.pi / 2]
    for r, n in enumerate(_expected_ring_counts(120)):
        ra.extend(2 * math.pi * k / n for k in range(n))
        dec.extend([size * (r + 1) - math.pi / 2] * n)
    ra.append(0.0)
    dec.append(math.pi / 2)
    ra_a, dec_a = np.array(ra), np.array(dec)
    cos_dec = np.cos(dec_a)
    return np.stack([cos_dec * np.cos(ra_a), cos_dec * np.sin(ra_a), np.sin(dec_a)], axis=-1)


def _tracts_near(ra: float, dec: float, radius_deg: float) -> list[int]:
    r, d = math.radians(ra), math.radians(dec)
    v = np.array([math.cos(d) * math.cos(r), math.cos(d) * math.sin(r), math.sin(d)])
    cos_sep = _default_centre_vectors() @ v
    return [int(i) for i in np.nonzero(cos_sep >= math.cos(math.radians(radius_deg)))[0]]


def test_find_overlapping_builds_only_nearby_tracts(monkeypatch: pytest.MonkeyPatch) -> None:
    sky = make_skymap("rings")
    built: list[int] = []
    original = sky._build_tract

    def counting(tract_id: int) -> TractInfo:
        built.append(tract_id)
        return original(tract_id)

    monkeypatch.setattr(sky, "_build_tract", counting)
    centre = _vec(45.0, -30.0)
    result = sky.find_overlapping(sphgeom.Circle(centre, sphgeom.Angle.fromDegrees(0.2)))
    assert 1 <= len(result) <= 4
    assert len(built) <= 12
    sky.find_tract([45.0, -30.0])
    assert len(set(built)) <= 12


def test_find_overlapping_sphgeom_circle_matches_brute_force() -> None:
    sky = make_skymap("rings", num_rings=30, patch_inner_dimensions=(8000, 8000))
    centre = _vec(200.0, 60.0)
    circle = sphgeom.Circle(centre, sphgeom.Angle.fromDegrees(4.0))
    found = {(t.id, p.sequential_index) for t, ps in sky.find_overlapping(circle) for p in ps}
    expected = {
        (t.id, p.sequential_index)
        for t in sky
        if t.outer_sky_polygon.overlaps(circle) is not False
        for p in t
        if p.outer_sky_polygon.overlaps(circle) is not False
    }
    assert found == expected and found


# -- discrete maps ---------------------------------------------------------------------
def test_discrete_map_lookups() -> None:
    sky = make_skymap(
        "discrete",
        ra_list=[214.263, 215.463, 10.0],
        dec_list=[52.082, 53.282, -89.0],
        radius_list=[0.0, 0.3, 0.5],
        projection="STG",
        tract_overlap=1.0,
    )
    assert len(sky) == 3 and [t.id for t in sky] == [0, 1, 2]
    assert sky.find_tract([214.3, 52.1]).id == 0
    assert sky.find_tract([215.4, 53.2]).id == 1
    assert sky.find_tract(SkyCoord(100.0, -89.9, unit="deg")).id == 2
    for tract in sky:
        cx, cy = tract.bbox.center
        x, y = tract.sky_to_pixel(tract.ctr_radec)
        assert abs(float(x) - cx) <= 1 and abs(float(y) - cy) <= 1
        assert tract.wcs.wcs.ctype[1] == "DEC--STG"
        # Discrete inner region = tract bbox.
        corner = tract.pixel_to_sky(np.array([2.0, tract.bbox.x1 + 3.0]), np.array([2.0, 2.0]))
        pts = np.stack(corner, axis=-1)
        np.testing.assert_array_equal(tract.inner_contains(pts), [True, False])
        np.testing.assert_array_equal(tract.contains(pts), [True, False])
    wcs = _ccd_wcs(214.263, 52.082, 10.0)
    footprint = sky_polygon_from_box(CCD, wcs)
    result = sky.find_overlapping((CCD, wcs))
    expected = [(t, [p for p in t if p.outer_sky_polygon.overlaps(footprint)]) for t in sky]
    assert result == [(t, ps) for t, ps in expected if ps]
    assert [t.id for t, _ in result] == [0, 1]
    far = _ccd_wcs(100.0, 0.0, 0.0)
    assert sky.find_overlapping((CCD, far)) == []
    nx_max = max(t.num_patches[0] for t in sky)
    ny_max = max(t.num_patches[1] for t in sky)
    assert sky.max_patch_counts() == (nx_max, ny_max)
