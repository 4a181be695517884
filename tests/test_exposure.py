"""In-memory image model: masks, MaskedImage arithmetic, components, WCS helpers, Exposure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from astropy.wcs import WCS

from coadd_core import masks
from coadd_core.exposure import Exposure, assert_exposures_equal, exposure_differences, exposures_equal
from coadd_core.geom import Box
from coadd_core.image import MaskedImage, masked_images_equal
from coadd_core.masks import MaskPlanes, remap_mask
from coadd_core.photocalib import PhotoCalib
from coadd_core.polygon import ValidPolygon
from coadd_core.visit_info import VisitInfo
from coadd_core.wcs_utils import (
    exact_float_card,
    pixel_scale,
    shifted,
    sky_polygon_vertices,
    wcs_equal,
    wcs_from_header,
    wcs_header_dict,
    wcs_to_header,
)


def _random_mi(box: Box, seed: int) -> MaskedImage:
    rng = np.random.default_rng(seed)
    return MaskedImage(
        rng.normal(5.0, 2.0, box.shape),
        rng.integers(0, 1 << 8, box.shape),
        rng.uniform(0.5, 3.0, box.shape),
        bbox=box,
    )


# -- mask planes -------------------------------------------------------------------------


def test_standard_planes_fixed_bits() -> None:
    names = [
        "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT",
        "NO_DATA", "VIGNETTED", "STREAK", "UNMASKEDNAN", "CROSSTALK", "CLIPPED", "REJECTED",
        "SENSOR_EDGE", "INEXACT_PSF", "BRIGHT_OBJECT", "NOT_DEBLENDED", "HIGH_VARIANCE",
        "PARTLY_VIGNETTED",
    ]
    planes = masks.standard_planes()
    assert list(planes) == names
    assert [planes.bit(n) for n in names] == list(range(21))
    assert all(planes.description(n) for n in names)
    assert masks.bitmask("BAD", "SAT", "NO_DATA") == 1 | 2 | 256
    assert masks.names_from_bits(1 | 8 | 1 << 13) == ["BAD", "CR", "CLIPPED"]
    with pytest.raises(KeyError, match="NOPE"):
        masks.bit("NOPE")


def test_add_plane_next_free_bit_up_to_31() -> None:
    planes = masks.standard_planes()
    assert planes.add_plane("A", "first extra") == 21
    assert planes.add_plane("A") == 21  # idempotent
    for i in range(10):
        planes.add_plane(f"X{i}")
    assert planes.bit("X9") == 31
    # bit 31 is the int32 sign bit: masks stay usable with int32 arrays
    value = planes.bitmask("X9")
    arr = np.array([value, 1], dtype=np.int32)
    assert planes.names_from_bits(int(arr[0])) == ["X9"]
    assert (arr & planes.bitmask("X9", "BAD")).tolist() == [value, 1]
    with pytest.raises(ValueError, match="no free mask bit"):
        planes.add_plane("ONE_TOO_MANY")
    assert "A" not in masks.standard_planes()  # the registry itself is untouched


def test_remap_mask_moves_bits_and_adds_planes() -> None:
    foreign = MaskPlanes([("SAT", 0, ""), ("BAD", 1, ""), ("WEIRD", 5, "foreign plane")])
    mask = np.array([[1, 2, 3, 32, 0, 64]], dtype=np.int32)  # 64 is unnamed
    out, planes = remap_mask(mask, foreign, masks.standard_planes())
    assert planes.bit("WEIRD") == 21 and planes.bit("SAT") == 1 and planes.bit("BAD") == 0
    assert out.tolist() == [[2, 1, 3, 1 << 21, 0, 0]]
    same, planes2 = remap_mask(mask & 3, MaskPlanes([("BAD", 0, ""), ("SAT", 1, "")]), masks.standard_planes())
    assert np.array_equal(same, mask & 3) and planes2 == masks.standard_planes()


# -- MaskedImage ---------------------------------------------------------------------------


def test_masked_image_dtypes_and_box() -> None:
    mi = MaskedImage(np.ones((3, 4)), xy0=(10, -2))
    assert mi.image.dtype == np.float32 and mi.mask.dtype == np.int32 and mi.variance.dtype == np.float32
    assert mi.bbox == Box(10, -2, 13, 0) and mi.xy0 == (10, -2)
    assert MaskedImage.zeros(Box(1, 2, 3, 4)).bbox == Box(1, 2, 3, 4)
    assert MaskedImage.empty(Box(1, 2, 3, 4)).shape == (3, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        MaskedImage(np.ones((3, 4)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="does not match"):
        MaskedImage(np.ones((3, 4)), bbox=Box(0, 0, 4, 4))


def test_subset_is_a_view_with_parent_xy0() -> None:
    mi = _random_mi(Box.from_size(20, 10, 100, 200), 1)
    sub = mi.subset(Box(105, 203, 109, 207))
    assert sub.bbox == Box(105, 203, 109, 207) and sub.xy0 == (105, 203)
    assert np.shares_memory(sub.image, mi.image)
    assert np.shares_memory(sub.mask, mi.mask) and np.shares_memory(sub.variance, mi.variance)
    sub.image[:] = -7
    sub.mask[:] |= 1 << 3
    assert np.all(mi.image[3:8, 5:10] == -7)
    assert np.all(mi.mask[3:8, 5:10] & 8)
    # parent pixel (x, y) sits at [y - y0, x - x0] in both
    assert sub.variance[0, 0] == mi.variance[203 - 200, 105 - 100]
    nested = sub.subset(Box(106, 204, 106, 204))
    assert np.shares_memory(nested.image, mi.image) and nested.xy0 == (106, 204)


def test_subset_outside_names_both_boxes() -> None:
    mi = MaskedImage.zeros(Box.from_size(10, 10, 5, 5))
    with pytest.raises(ValueError) as info:
        mi.subset(Box(0, 0, 7, 7))
    assert "Box(x=0..7, y=0..7)" in str(info.value) and "Box(x=5..14, y=5..14)" in str(info.value)


def test_arithmetic_rules() -> None:
    box = Box.from_size(6, 5, -3, 7)
    a, b = _random_mi(box, 2), _random_mi(box, 3)
    a64 = [p.astype(np.float64) for p in (a.image, a.variance)]
    b64 = [p.astype(np.float64) for p in (b.image, b.variance)]

    s = a + b
    np.testing.assert_allclose(s.image, a64[0] + b64[0], rtol=1e-6)
    np.testing.assert_allclose(s.variance, a64[1] + b64[1], rtol=1e-6)
    assert np.array_equal(s.mask, a.mask | b.mask) and s.bbox == box

    d = a - b
    np.testing.assert_allclose(d.image, a64[0] - b64[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.variance, a64[1] + b64[1], rtol=1e-6)
    assert np.array_equal(d.mask, a.mask | b.mask)

    m = a * 3.0
    np.testing.assert_allclose(m.image, 3 * a64[0], rtol=1e-6)
    np.testing.assert_allclose(m.variance, 9 * a64[1], rtol=1e-6)
    assert np.array_equal(m.mask, a.mask)
    assert masked_images_equal(2.0 * a, a * 2.0)

    q = a / b
    expected_var = (a64[1] * b64[0] ** 2 + b64[1] * a64[0] ** 2) / b64[0] ** 4
    np.testing.assert_allclose(q.image, a64[0] / b64[0], rtol=1e-6)
    np.testing.assert_allclose(q.variance, expected_var, rtol=1e-5)
    assert np.array_equal(q.mask, a.mask | b.mask)

    ss = a.scaled_subtract(b, 0.75)
    np.testing.assert_allclose(ss.image, a64[0] - 0.75 * b64[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ss.variance, a64[1] + 0.5625 * b64[1], rtol=1e-6)
    assert np.array_equal(ss.mask, a.mask | b.mask)

    # operands are untouched; in-place forms act on the left operand
    assert np.array_equal(a.image, a64[0].astype(np.float32))
    c = a.copy()
    c += b
    assert masked_images_equal(c, s)
    c /= 2.0
    np.testing.assert_allclose(c.variance, s.variance / 4, rtol=1e-6)


def test_arithmetic_checks_boxes() -> None:
    a = MaskedImage.zeros(Box.from_size(4, 4))
    b = MaskedImage.zeros(Box.from_size(4, 4, 1, 0))
    for op in (lambda: a + b, lambda: a - b, lambda: a / b, lambda: a.scaled_subtract(b, 2.0)):
        with pytest.raises(ValueError, match="different boxes"):
            op()


def test_arithmetic_conforms_foreign_mask_planes() -> None:
    box = Box.from_size(2, 1)
    a = MaskedImage.zeros(box)
    foreign = MaskPlanes([("SAT", 0, ""), ("BAD", 1, "")])
    b = MaskedImage(np.zeros((1, 2)), np.array([[1, 2]]), planes=foreign)
    s = a + b
    assert s.mask.tolist() == [[a.planes.bitmask("SAT"), a.planes.bitmask("BAD")]]


def test_add_mask_plane_copies_shared_dictionary() -> None:
    mi = MaskedImage.zeros(Box.from_size(4, 4))
    view = mi.subset(Box(0, 0, 1, 1))
    assert view.planes is mi.planes
    bit = view.add_mask_plane("NEW", "only on the view")
    assert bit == 21 and "NEW" in view.planes and "NEW" not in mi.planes


# -- PhotoCalib ----------------------------------------------------------------------------


def test_photocalib() -> None:
    pc = PhotoCalib.from_zero_point(27.0)
    assert pc.calibration_mean == pytest.approx(10 ** (-0.4 * (27.0 - 31.4)))
    assert pc.zero_point == pytest.approx(27.0, abs=1e-12)
    assert pc.instflux_to_mag(1.0) == pytest.approx(27.0, abs=1e-12)
    assert pc.instflux_to_nJy(2.0) == pytest.approx(2 * pc.calibration_mean)
    assert math.isnan(pc.instflux_to_mag(-1.0))
    assert pc.mag_to_instflux(pc.instflux_to_mag(123.0)) == pytest.approx(123.0)
    mi = _random_mi(Box.from_size(3, 3), 4)
    cal = PhotoCalib(2.5).calibrate_image(mi)
    np.testing.assert_allclose(cal.image, mi.image * 2.5, rtol=1e-6)
    np.testing.assert_allclose(cal.variance, mi.variance * 6.25, rtol=1e-6)
    assert np.array_equal(cal.mask, mi.mask)
    p = PhotoCalib(1 / 3, 0.1)
    assert PhotoCalib.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    with pytest.raises(ValueError):
        PhotoCalib(0.0)


# -- VisitInfo -----------------------------------------------------------------------------


def test_visit_info_dict_and_header_round_trip(exposure_factory) -> None:
    vi = exposure_factory().visit_info
    assert VisitInfo.from_dict(json.loads(json.dumps(vi.to_dict()))) == vi
    header = vi.to_header()
    for key in ("EXPID", "DETNAME", "DETSER", "FILTER", "BAND", "MJD-OBS", "EXPTIME", "DARKTIME", "AIRMASS", "BORE-RA"):
        assert key in header
    back = VisitInfo.from_header(header)
    for name, value in vi.to_dict().items():
        got = getattr(back, name)
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-15)
        else:
            assert got == value
    assert vi.mjd_mid == pytest.approx(vi.mjd + 150.0 / 86400.0)


def test_visit_info_unknowns() -> None:
    vi = VisitInfo(band="r", exposure_time=30)
    assert vi.airmass is None and isinstance(vi.exposure_time, float)
    header = vi.to_header()
    assert "AIRMASS" not in header and "MJD-OBS" not in header
    assert VisitInfo.from_header(header) == vi
    assert VisitInfo.from_header(fits.Header()) == VisitInfo()
    with pytest.raises(ValueError, match="unknown VisitInfo"):
        VisitInfo.from_dict({"nonsense": 1})


# -- ValidPolygon --------------------------------------------------------------------------


def test_polygon_contains_area_bbox() -> None:
    box = Box.from_size(10, 6, 3, 4)
    poly = ValidPolygon.from_box(box)
    assert poly.area == pytest.approx(60.0)
    assert poly.bbox() == box
    yy, xx = np.mgrid[0:20, 0:20]
    inside = poly.contains(xx, yy)
    assert inside.sum() == 60 and inside[4, 3] and not inside[3, 3]
    tri = ValidPolygon([[0, 0], [10, 0], [0, 10]])
    assert tri.contains(2.0, 2.0) and not tri.contains(6.0, 6.0)
    assert tri.area == pytest.approx(50.0)
    assert np.array_equal(tri.mask(Box(0, 0, 3, 0)), [[True, True, True, True]])


def test_polygon_transform_buffer_round_trip() -> None:
    poly = ValidPolygon.from_box(Box.from_size(100, 50))
    shrunk = poly.shrink(11)
    assert shrunk.area == pytest.approx((100 - 22) * (50 - 22))
    assert shrunk.buffer(11).area == pytest.approx(poly.area)
    moved = poly.transform(lambda x, y: (x + 5.0, 2.0 * y))
    assert moved.area == pytest.approx(2 * poly.area)
    with pytest.raises(ValueError, match="collapses"):
        poly.shrink(30)
    odd = ValidPolygon([[0.1, 0.2], [1 / 3, 5.0], [-7.25, 1e-9]])
    assert ValidPolygon.from_dict(json.loads(json.dumps(odd.to_dict()))) == odd


# -- WCS helpers ---------------------------------------------------------------------------


def test_wcs_header_round_trip_is_exact(sip_wcs: WCS) -> None:
    header = wcs_to_header(sip_wcs)
    assert header["CTYPE1"] == "RA---TAN-SIP" and header["A_ORDER"] == 3
    back = wcs_from_header(header)
    assert list(wcs_to_header(back).items()) == list(header.items())
    # the exact values, not 13-digit approximations
    assert header["CRPIX1"] == sip_wcs.wcs.crpix[0] and header["CD1_2"] == sip_wcs.wcs.cd[0, 1]
    assert header["A_2_0"] == sip_wcs.sip.a[2, 0]
    # through the bytes of a real header too
    reparsed = fits.Header.fromstring(header.tostring())
    assert wcs_header_dict(wcs_from_header(reparsed)) == wcs_header_dict(sip_wcs)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-500, 3000, 2000), rng.uniform(-500, 5000, 2000)
    ra0, dec0 = sip_wcs.all_pix2world(x, y, 0)
    ra1, dec1 = back.all_pix2world(x, y, 0)
    assert np.max(np.abs(ra1 - ra0)) < 1e-12 and np.max(np.abs(dec1 - dec0)) < 1e-12


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_exact_float_card_reads_back_bit_for_bit(value: float) -> None:
    card = exact_float_card("CRVAL1", value, "a comment that may need shortening")
    assert len(str(card)) == 80
    parsed = fits.Header.fromstring(fits.Header([card]).tostring())["CRVAL1"]
    assert parsed == value and math.copysign(1.0, parsed) == math.copysign(1.0, value)


def test_wcs_tan_round_trip() -> None:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [0.5 + 1 / 3, 100.25]
    wcs.wcs.crval = [10.1, -80.2]
    wcs.wcs.cdelt = [-5.5e-05, 5.5e-05]
    wcs.wcs.pc = [[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]]
    header = wcs_to_header(wcs)
    assert "PC1_1" in header and "A_ORDER" not in header
    back = wcs_from_header(header)
    assert wcs_equal(back, wcs)
    assert np.max(np.abs(np.subtract(back.all_pix2world([0, 500], [0, 900], 0), wcs.all_pix2world([0, 500], [0, 900], 0)))) < 1e-12


def test_shifted_wcs_and_scale(sip_wcs: WCS) -> None:
    moved = shifted(sip_wcs, 1000, -37)
    x, y = np.array([0.0, 17.5, 3000.0]), np.array([0.0, -4.25, 4000.0])
    np.testing.assert_allclose(moved.all_pix2world(x - 1000, y + 37, 0), sip_wcs.all_pix2world(x, y, 0), rtol=0, atol=1e-12)
    assert wcs_equal(shifted(moved, -1000, 37), sip_wcs)
    assert pixel_scale(sip_wcs) == pytest.approx(0.187, rel=1e-3)
    verts = sky_polygon_vertices(Box.from_size(2048, 4096), sip_wcs)
    assert verts.shape == (4, 2)
    ra, dec = sip_wcs.all_pix2world([-0.5], [-0.5], 0)
    assert verts[0] == pytest.approx([ra[0], dec[0]], abs=1e-12)
    assert sky_polygon_vertices(Box.from_size(10, 10), sip_wcs, points_per_edge=4).shape == (16, 2)
    assert wcs_from_header(fits.Header()) is None


# -- Exposure ------------------------------------------------------------------------------


def test_exposure_properties_and_subset_view(exposure_factory) -> None:
    exp = exposure_factory()
    assert exp.image is exp.masked_image.image and exp.bbox == exp.masked_image.bbox
    assert exp.band == "i" and exp.physical_filter == "i.MP9702" and exp.unit == "adu"
    box = Box(exp.bbox.x0 + 5, exp.bbox.y0 + 7, exp.bbox.x0 + 30, exp.bbox.y0 + 20)
    sub = exp.subset(box)
    assert sub.bbox == box and sub.wcs is exp.wcs and sub.psf is exp.psf
    assert np.shares_memory(sub.image, exp.image)
    sub.variance[2, 3] = 123.0
    assert exp.variance[box.y0 - exp.bbox.y0 + 2, box.x0 - exp.bbox.x0 + 3] == 123.0
    # parent-coordinate WCS: the same sky position for the same parent pixel
    assert sub.wcs.all_pix2world([[box.x0, box.y0]], 0).tolist() == exp.wcs.all_pix2world([[box.x0, box.y0]], 0).tolist()
    with pytest.raises(ValueError, match="not inside"):
        exp.subset(exp.bbox.grown(1))


def test_exposure_copy_and_equality(exposure_factory) -> None:
    exp = exposure_factory()
    dup = exp.copy()
    assert exposures_equal(exp, dup)
    assert not np.shares_memory(dup.image, exp.image) and dup.wcs is not exp.wcs
    dup.metadata["nested"]["deep"]["k"] = "changed"
    assert exp.metadata["nested"]["deep"]["k"] == "v"
    assert exposure_differences(exp, dup) == ["metadata differs"]
    dup = exp.copy()
    dup.mask[0, 0] ^= 1
    dup.wcs.wcs.crval[0] += 1e-13
    diffs = exposure_differences(exp, dup)
    assert "mask pixels differ" in diffs and any(d.startswith("wcs differs") for d in diffs)
    with pytest.raises(AssertionError, match="mask pixels differ"):
        assert_exposures_equal(exp, dup)
    assert Exposure(MaskedImage.zeros(Box.from_size(2, 2)), photo_calib=PhotoCalib(1.0)).unit == "nJy"
