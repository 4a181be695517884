"""Warper (ALGORITHMS.md §5.1, §11.2-3): flux, centroids, variance, masks, edges, chunking."""

from __future__ import annotations

import json
import math
import tracemalloc

import numba
import numpy as np
import pytest
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask
from coadd_core.photocalib import PhotoCalib
from coadd_core.psf import GaussianPsf, ImagePsf, Psf, adaptive_moments
from coadd_core.warp import (
    PixelTransform,
    WarpedPsf,
    WarperConfig,
    sum_variance_ratio,
    warp_exposure,
    warp_masked_image,
    warp_masked_image_into,
)
from coadd_core.warp.kernels import kernel_weights, lanczos, ramp_correct
from coadd_core.wcs_utils import wcs_from_header_dict

NO_DATA = bitmask("NO_DATA")
BAD = bitmask("BAD")
EDGE = bitmask("EDGE")


# -- helpers ------------------------------------------------------------------------------


def tan_wcs(
    crpix: tuple[float, float],
    scale_arcsec: float = 0.185,
    rot_deg: float = 0.0,
    crval: tuple[float, float] = (150.0, 2.0),
    sip: dict[str, float] | None = None,
) -> WCS:
    """TAN (or TAN-SIP) WCS; ``crpix`` is 0-based; rotation counter-clockwise on the sky."""
    s = scale_arcsec / 3600.0
    th = math.radians(rot_deg)
    header: dict[str, object] = {
        "CTYPE1": "RA---TAN" + ("-SIP" if sip else ""),
        "CTYPE2": "DEC--TAN" + ("-SIP" if sip else ""),
        "CRPIX1": crpix[0] + 1.0,
        "CRPIX2": crpix[1] + 1.0,
        "CRVAL1": crval[0],
        "CRVAL2": crval[1],
        "CD1_1": -s * math.cos(th),
        "CD1_2": s * math.sin(th),
        "CD2_1": s * math.sin(th),
        "CD2_2": s * math.cos(th),
    }
    if sip:
        header.update({"A_ORDER": 2, "B_ORDER": 2, **sip})
    return wcs_from_header_dict(header)


SIP = {"A_2_0": 2e-6, "A_1_1": -1e-6, "A_0_2": 1.5e-6, "B_2_0": -1e-6, "B_1_1": 2e-6, "B_0_2": 1e-6}


def star_image(shape: tuple[int, int], positions: list[tuple[float, float]], sigma: float, flux: float = 1e4) -> np.ndarray:
    """Pixel-integrated Gaussian stars (exact fluxes) on a zero background."""
    img = np.zeros(shape, dtype=np.float64)
    psf = GaussianPsf(sigma, size=2 * math.ceil(7 * sigma) + 1)
    frame = Box.from_shape(shape)
    for x, y in positions:
        stamp = psf.compute_image(x, y)
        box = stamp.bbox.intersection(frame)
        sub = stamp.array[box.y0 - stamp.bbox.y0 : box.y1 - stamp.bbox.y0 + 1, box.x0 - stamp.bbox.x0 : box.x1 - stamp.bbox.x0 + 1]
        img[box.slices(frame)] += flux * sub
    return img.astype(np.float32)


def aperture(image: np.ndarray, x: float, y: float, half: int) -> tuple[float, float, float]:
    """Sum and first-moment centroid in a square box around (x, y) (array coordinates)."""
    ix, iy = int(round(x)), int(round(y))
    sub = image[iy - half : iy + half + 1, ix - half : ix + half + 1].astype(np.float64)
    yy, xx = np.mgrid[iy - half : iy + half + 1, ix - half : ix + half + 1]
    total = sub.sum()
    return total, float((sub * xx).sum() / total), float((sub * yy).sum() / total)


def transform_point(transform: PixelTransform, x: float, y: float) -> tuple[float, float]:
    dx, dy = transform.src_to_dest(np.array([x]), np.array([y]))
    return float(dx[0]), float(dy[0])


# -- kernel weights -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(f=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), n=st.sampled_from([3, 4, 5]))
def test_lanczos_weights_match_the_definition(f: float, n: int) -> None:
    w = np.empty(10)
    total = kernel_weights(f, n, w)
    if f < 1e-9:  # snapped to an exact pixel centre
        f = 0.0
    ref = np.array([lanczos(f - (k - (n - 1)), n) for k in range(2 * n)])
    np.testing.assert_allclose(w[: 2 * n], ref, rtol=0, atol=1e-13)
    assert total == pytest.approx(ref.sum(), abs=1e-12)


def test_bilinear_weights() -> None:
    w = np.empty(10)
    assert kernel_weights(0.25, 1, w) == 1.0
    np.testing.assert_array_equal(w[:2], [0.75, 0.25])


# -- flux, centroids, flat fields --------------------------------------------------------


@pytest.mark.parametrize("sip", [None, SIP], ids=["tan", "tan-sip"])
def test_flux_and_centroids_with_larger_rotated_pixels(sip: dict[str, float] | None) -> None:
    """§11.2: r = 1.08 larger pixels rotated 30 deg conserve star flux to 0.1 %, centroids to 0.01 px."""
    shape = (360, 360)
    src_wcs = tan_wcs((180.0, 180.0), sip=sip)
    dest_wcs = tan_wcs((170.3, 175.6), scale_arcsec=0.185 * 1.08, rot_deg=30.0)
    positions = [(x + 0.37 * i, y + 0.21 * j) for i, x in enumerate(range(90, 300, 55)) for j, y in enumerate(range(90, 300, 55))]
    src = MaskedImage(star_image(shape, positions, sigma=2.0), variance=np.ones(shape, np.float32))
    dest_box = Box(-20, -20, 360, 360)
    out = warp_masked_image(src, src_wcs, dest_wcs, dest_box)
    transform = PixelTransform(src_wcs, dest_wcs)
    for x, y in positions:
        flux_in, cx, cy = aperture(src.image, x, y, 14)
        px, py = transform_point(transform, cx, cy)
        flux_out, ox, oy = aperture(out.image, px - dest_box.x0, py - dest_box.y0, 14)
        assert abs(flux_out / flux_in - 1) < 1e-3
        assert abs(ox + dest_box.x0 - px) < 0.01
        assert abs(oy + dest_box.y0 - py) < 0.01


def test_flat_image_same_scale_is_one() -> None:
    src_wcs = tan_wcs((150.0, 150.0))
    dest_wcs = tan_wcs((140.25, 160.7), rot_deg=17.0)
    src = MaskedImage(np.ones((300, 300), np.float32), variance=np.ones((300, 300), np.float32))
    out = warp_masked_image(src, src_wcs, dest_wcs, Box(0, 0, 299, 299))
    good = (out.mask & NO_DATA) == 0
    assert good.sum() > 0.7 * good.size
    assert np.all(np.abs(out.image[good] - 1.0) < 1e-4)


def test_flat_image_larger_pixels_is_r_squared() -> None:
    r = 1.08
    src_wcs = tan_wcs((150.0, 150.0))
    dest_wcs = tan_wcs((139.5, 140.2), scale_arcsec=0.185 * r, rot_deg=30.0)
    src = MaskedImage(np.ones((300, 300), np.float32))
    out = warp_masked_image(src, src_wcs, dest_wcs, Box(0, 0, 279, 279))
    good = (out.mask & NO_DATA) == 0
    assert good.sum() > 0.6 * good.size
    np.testing.assert_allclose(out.image[good], r * r, rtol=1e-4)


def test_relative_area_is_the_jacobian_determinant() -> None:
    from coadd_core.warp.transform import relative_area

    src_wcs = tan_wcs((100.0, 100.0), sip=SIP)
    dest_wcs = tan_wcs((100.0, 100.0), scale_arcsec=0.185 * 1.08, rot_deg=30.0)
    transform = PixelTransform(src_wcs, dest_wcs)
    area = relative_area(transform, Box(40, 50, 60, 70))
    assert area.shape == (21, 21)
    expected = abs(np.linalg.det(transform.jacobian(50.0, 60.0)))
    assert expected == pytest.approx(1.08**2, rel=2e-3)  # SIP adds a little
    np.testing.assert_allclose(area[10, 10], expected, rtol=1e-4)


def test_interpolated_grid_matches_exact_mapping() -> None:
    src_wcs = tan_wcs((200.0, 200.0), sip=SIP)
    dest_wcs = tan_wcs((190.0, 210.0), rot_deg=12.0)
    positions = [(x, y) for x in range(60, 350, 70) for y in range(60, 350, 70)]
    src = MaskedImage(star_image((400, 400), positions, sigma=2.5))
    box = Box(0, 0, 399, 399)
    exact = warp_masked_image(src, src_wcs, dest_wcs, box, WarperConfig(interp_length=0))
    interp = warp_masked_image(src, src_wcs, dest_wcs, box, WarperConfig(interp_length=10))
    good = (exact.mask & NO_DATA) == 0
    assert np.max(np.abs(exact.image[good] - interp.image[good])) < 1e-4 * np.nanmax(exact.image)


def test_cached_kernel_is_close_to_exact() -> None:
    src_wcs = tan_wcs((100.0, 100.0))
    dest_wcs = tan_wcs((97.3, 103.9), rot_deg=5.0)
    src = MaskedImage(star_image((200, 200), [(100.3, 99.6)], sigma=2.0))
    box = Box(0, 0, 199, 199)
    exact = warp_masked_image(src, src_wcs, dest_wcs, box)
    cached = warp_masked_image(src, src_wcs, dest_wcs, box, WarperConfig(cache_size=10000))
    good = (exact.mask & NO_DATA) == 0
    diff = np.abs(exact.image[good] - cached.image[good]).max()
    assert 0 < diff < 1e-3 * np.nanmax(exact.image)


# -- variance and correlated noise --------------------------------------------------------


def _noise(shape: tuple[int, int], variance: float, seed: int) -> MaskedImage:
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, math.sqrt(variance), size=shape).astype(np.float32)
    return MaskedImage(img, variance=np.full(shape, variance, np.float32))


def test_variance_plane_is_the_per_pixel_variance_of_warped_noise() -> None:
    """Pure noise: warped pixels' measured variance equals the variance plane (2 %)."""
    src_wcs = tan_wcs((300.0, 300.0))
    dest_wcs = tan_wcs((290.37, 305.81), rot_deg=30.0)
    out = warp_masked_image(_noise((600, 600), 4.0, 1), src_wcs, dest_wcs, Box(0, 0, 599, 599))
    good = (out.mask & NO_DATA) == 0
    chi2 = out.image[good].astype(np.float64) ** 2 / out.variance[good]
    assert abs(chi2.mean() - 1.0) < 0.02
    # resampling averages noise: every plane value is below the input variance
    assert np.all(out.variance[good] < 4.0 + 1e-6)
    assert out.variance[good].mean() < 0.8 * 4.0


def test_pure_shift_variance_is_v_sum_k2_over_sum_k_squared() -> None:
    """§11.3: flat variance V, sub-pixel shift -> V sum(K^2)/(sum K)^2 (< V)."""
    src_wcs = tan_wcs((50.0, 50.0))
    dest_wcs = tan_wcs((50.3, 50.6))  # dest pixel x sees source x - 0.3
    src = MaskedImage(np.zeros((100, 100), np.float32), variance=np.full((100, 100), 2.0, np.float32))
    out = warp_masked_image(src, src_wcs, dest_wcs, Box(0, 0, 99, 99))
    sx, sy = PixelTransform(src_wcs, dest_wcs).dest_to_src(np.array([50.0]), np.array([50.0]))
    fx, fy = sx[0] - math.floor(sx[0]), sy[0] - math.floor(sy[0])
    wx, wy = np.empty(10), np.empty(10)
    kernel_weights(fx, 3, wx)
    kernel_weights(fy, 3, wy)
    ramp_correct(fx, 3, wx)  # the default exact_ramp weights
    ramp_correct(fy, 3, wy)
    wx, wy = wx[:6], wy[:6]
    expected = 2.0 * (wx**2).sum() * (wy**2).sum() / (wx.sum() * wy.sum()) ** 2
    assert expected < 2.0
    np.testing.assert_allclose(out.variance[10:90, 10:90], expected, rtol=1e-5)


def test_zero_shift_is_exact_and_edges_are_no_data() -> None:
    wcs = tan_wcs((40.0, 40.0), rot_deg=7.0)
    src = _noise((80, 90), 3.0, 2)
    src.mask[30, 40] = BAD
    out = warp_masked_image(src, wcs, wcs, src.bbox)
    inner = (slice(2, 80 - 3), slice(2, 90 - 3))  # taps -2..+3 must stay inside
    np.testing.assert_array_equal(out.image[inner], src.image[inner])
    np.testing.assert_array_equal(out.variance[inner], src.variance[inner])
    np.testing.assert_array_equal(out.mask[inner], src.mask[inner])
    edge = np.ones(out.image.shape, bool)
    edge[inner] = False
    assert np.all(np.isnan(out.image[edge]))
    assert np.all(np.isposinf(out.variance[edge]))
    assert np.all(out.mask[edge] == NO_DATA)


def test_pixels_needing_taps_outside_the_source_are_no_data() -> None:
    src_wcs = tan_wcs((50.0, 50.0))
    dest_wcs = tan_wcs((50.5, 50.25))  # dest x sees source x - 0.5, y - 0.25
    src = MaskedImage(np.ones((100, 100), np.float32), variance=np.ones((100, 100), np.float32))
    out = warp_masked_image(src, src_wcs, dest_wcs, Box(-10, -10, 109, 109))
    xs = np.arange(-10, 110)
    # valid iff 2 <= floor(x - 0.5) <= 100 - 1 - 3
    valid_x = (np.floor(xs - 0.5) >= 2) & (np.floor(xs - 0.5) <= 96)
    valid_y = (np.floor(xs - 0.25) >= 2) & (np.floor(xs - 0.25) <= 96)
    valid = valid_y[:, None] & valid_x[None, :]
    assert np.all(np.isfinite(out.image[valid])) and np.all(np.isfinite(out.variance[valid]))
    assert np.all((out.mask[valid] & NO_DATA) == 0)
    assert np.all(np.isnan(out.image[~valid]))
    assert np.all(np.isposinf(out.variance[~valid]))
    assert np.all(out.mask[~valid] == NO_DATA)


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_block_sum_variance_ratio_of_shifted_noise(n: int) -> None:
    """Correlated noise: Var(sum of n x n warped pixels) / (n^2 mean variance) = helper (4 %)."""
    src_wcs = tan_wcs((400.0, 400.0))
    dest_wcs = tan_wcs((400.3, 400.6))
    out = warp_masked_image(_noise((800, 800), 1.0, 3), src_wcs, dest_wcs, Box(0, 0, 799, 799))
    sx, sy = PixelTransform(src_wcs, dest_wcs).dest_to_src(np.array([100.0]), np.array([100.0]))
    fraction = (sx[0] - math.floor(sx[0]), sy[0] - math.floor(sy[0]))
    core = out.image[8 : 8 + 784, 8 : 8 + 784].astype(np.float64)
    sums = core.reshape(784 // n, n, 784 // n, n).sum(axis=(1, 3))
    measured = sums.var() / (n * n * out.variance[8:792, 8:792].mean())
    predicted = sum_variance_ratio(n, "lanczos3", fraction)
    assert measured == pytest.approx(predicted, rel=0.04)
    if n > 1:
        assert predicted > 1.2


def test_block_sum_ratio_of_a_general_warp_uses_fraction_average() -> None:
    src_wcs = tan_wcs((400.0, 400.0))
    dest_wcs = tan_wcs((395.1, 407.7), rot_deg=23.0)
    out = warp_masked_image(_noise((800, 800), 1.0, 4), src_wcs, dest_wcs, Box(150, 150, 649, 649))
    n = 8
    sums = out.image[:496, :496].astype(np.float64).reshape(62, n, 62, n).sum(axis=(1, 3))
    measured = sums.var() / (n * n * out.variance[:496, :496].mean())
    assert measured == pytest.approx(sum_variance_ratio(n), rel=0.06)


# -- masks --------------------------------------------------------------------------------


def _shift_warp(mask_value: int, config: WarperConfig | None = None) -> tuple[MaskedImage, np.ndarray, np.ndarray]:
    src_wcs = tan_wcs((30.0, 30.0))
    dest_wcs = tan_wcs((30.3, 30.6))
    src = MaskedImage(np.ones((60, 60), np.float32), variance=np.ones((60, 60), np.float32))
    src.mask[30, 25] = mask_value
    out = warp_masked_image(src, src_wcs, dest_wcs, src.bbox, config)
    xs = np.arange(60, dtype=float)
    sx, _ = PixelTransform(src_wcs, dest_wcs).dest_to_src(xs, np.full(60, 30.0))
    _, sy = PixelTransform(src_wcs, dest_wcs).dest_to_src(np.full(60, 30.0), xs)
    return out, np.floor(sx + 1e-9).astype(int), np.floor(sy + 1e-9).astype(int)


def test_bad_pixel_spreads_to_the_bilinear_2x2_footprint() -> None:
    out, ix, iy = _shift_warp(BAD)
    has_x = (ix <= 25) & (25 <= ix + 1)
    has_y = (iy <= 30) & (30 <= iy + 1)
    expected = has_y[:, None] & has_x[None, :]
    assert expected.sum() == 4
    np.testing.assert_array_equal((out.mask & BAD) != 0, expected)


def test_edge_spreads_over_the_full_lanczos_footprint() -> None:
    out, ix, iy = _shift_warp(EDGE)
    has_x = (ix - 2 <= 25) & (25 <= ix + 3)
    has_y = (iy - 2 <= 30) & (30 <= iy + 3)
    expected = has_y[:, None] & has_x[None, :]
    assert expected.sum() == 36
    np.testing.assert_array_equal((out.mask & EDGE) != 0, expected)
    # without growFullMask EDGE behaves like any other plane
    plain, _, _ = _shift_warp(EDGE, WarperConfig(grow_full_mask=()))
    assert ((plain.mask & EDGE) != 0).sum() == 4


def test_writing_only_valid_pixels_keeps_the_rest() -> None:
    src_wcs = tan_wcs((20.0, 20.0))
    dest_wcs = tan_wcs((60.4, 60.7))
    src = MaskedImage(np.full((40, 40), 5.0, np.float32), variance=np.ones((40, 40), np.float32))
    src.mask[10:12, :] = NO_DATA
    dest = MaskedImage(np.full((120, 120), -1.0, np.float32), np.zeros((120, 120), np.int32), np.zeros((120, 120), np.float32))
    written = warp_masked_image_into(dest, src, src_wcs, dest_wcs, write_invalid=False, scale=2.0)
    data = dest.image != -1.0
    assert written == data.sum() > 0
    np.testing.assert_allclose(dest.image[data], 10.0, rtol=1e-5)
    assert np.all((dest.mask[data] & NO_DATA) == 0)
    # variance scaled by 2^2 and reduced by the kernel average (< 4)
    assert np.all((dest.variance[data] > 1.0) & (dest.variance[data] < 4.0))


# -- chunking, threads, memory -------------------------------------------------------------


def test_results_do_not_depend_on_chunks_threads_or_sub_regions() -> None:
    src_wcs = tan_wcs((350.0, 450.0), sip=SIP)
    dest_wcs = tan_wcs((330.0, 470.0), scale_arcsec=0.2, rot_deg=3.0)
    src = _noise((900, 700), 2.0, 5)
    src.mask[::37, ::41] = EDGE
    box = Box(-30, -20, 669, 879)
    before = numba.get_num_threads()
    results = []
    try:
        for threads, rows in ((1, 10000), (2, 5), (2, 37), (1, 64), (2, 10000)):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            results.append(warp_masked_image(src, src_wcs, dest_wcs, box, WarperConfig(chunk_rows=rows)))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        assert np.array_equal(results[0].image, other.image, equal_nan=True)
        assert np.array_equal(results[0].variance, other.variance)
        assert np.array_equal(results[0].mask, other.mask)
    # a sub-region warped with the grid anchored on the whole box is the same pixels
    part = Box(100, 200, 400, 500)
    dest = MaskedImage.empty(box)
    warp_masked_image_into(dest, src, src_wcs, dest_wcs, region=part)
    rows, cols = part.slices(box)
    assert np.array_equal(dest.image[rows, cols], results[0].image[rows, cols], equal_nan=True)
    # strips 3 pixels wide take the pixel-by-pixel path instead of the vectorised runs
    strips = Box(200, 300, 259, 339)
    for x in range(strips.x0, strips.x1 + 1, 3):
        warp_masked_image_into(dest, src, src_wcs, dest_wcs, region=Box(x, strips.y0, x + 2, strips.y1))
    rows, cols = strips.slices(box)
    assert np.array_equal(dest.image[rows, cols], results[0].image[rows, cols], equal_nan=True)
    assert np.array_equal(dest.variance[rows, cols], results[0].variance[rows, cols])


def test_full_ccd_warp_memory_is_bounded_by_the_output() -> None:
    """Only the output is allocated in full: chunks keep the rest small (numpy allocations)."""
    src_wcs = tan_wcs((1024.0, 2306.0))
    dest_wcs = tan_wcs((1050.0, 2100.0), rot_deg=1.0)
    src = MaskedImage(np.ones((4612, 2048), np.float32), variance=np.ones((4612, 2048), np.float32))
    box = Box.from_size(2100, 4200)
    out_bytes = box.area * 12
    tracemalloc.start()
    try:
        out = warp_masked_image(src, src_wcs, dest_wcs, box)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ((out.mask & NO_DATA) != 0).mean() < 0.1
    assert peak - out_bytes < 16 * 2**20


# -- WarpedPsf ----------------------------------------------------------------------------


def _elliptical_psf() -> ImagePsf:
    yy, xx = np.mgrid[-17:18, -17:18].astype(float)
    return ImagePsf(np.exp(-0.5 * (xx**2 / 3.0**2 + yy**2 / 1.6**2)))


def test_warped_psf_identity_is_the_input() -> None:
    wcs = tan_wcs((100.0, 100.0), rot_deg=10.0)
    psf = _elliptical_psf()
    warped = WarpedPsf(psf, wcs, wcs)
    kernel = warped.kernel_image(37.0, 81.0)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(kernel, psf.kernel_image(), atol=1e-10)


def test_rotated_wcs_rotates_the_psf() -> None:
    psf = _elliptical_psf()
    src_wcs = tan_wcs((100.0, 100.0))
    dest_wcs = tan_wcs((90.0, 110.0), rot_deg=30.0)
    warped = WarpedPsf(psf, src_wcs, dest_wcs)
    kernel = warped.kernel_image(95.0, 105.0)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-12)
    _, _, ixx, iyy, ixy = adaptive_moments(kernel)
    _, _, sxx, syy, sxy = adaptive_moments(psf.kernel_image())
    a = np.linalg.inv(PixelTransform(src_wcs, dest_wcs).jacobian(95.0, 105.0))
    expected = a @ np.array([[sxx, sxy], [sxy, syy]]) @ a.T
    assert abs(ixy) > 0.3 * abs(ixx - iyy)  # genuinely rotated
    np.testing.assert_allclose([ixx, iyy, ixy], [expected[0, 0], expected[1, 1], expected[0, 1]], rtol=0.01, atol=0.02)


def test_warped_psf_scale_change_and_centring() -> None:
    psf = GaussianPsf(2.0)
    src_wcs = tan_wcs((100.0, 100.0))
    dest_wcs = tan_wcs((100.0, 100.0), scale_arcsec=0.185 * 1.25)
    warped = WarpedPsf(psf, src_wcs, dest_wcs)
    stamp = warped.compute_image(60.3, 70.8)
    xc, yc, ixx, iyy, _ = adaptive_moments(stamp.array)
    centre = stamp.bbox.center
    assert centre[0] + xc == pytest.approx(60.3, abs=0.01)
    assert centre[1] + yc == pytest.approx(70.8, abs=0.01)
    assert math.sqrt(ixx) == pytest.approx(2.0 / 1.25, rel=0.02)
    assert stamp.array.sum() == pytest.approx(1.0)


def test_batched_warped_psf_images_equal_the_single_ones() -> None:
    """PSF matching renders every cell's PSF in one batch (one WCS evaluation): same pixels."""
    warped = WarpedPsf(_elliptical_psf(), tan_wcs((10.0, 10.0), sip=SIP), tan_wcs((12.0, 9.0), rot_deg=4.0))
    xs, ys = np.array([20.0, 150.5, -40.0]), np.array([30.0, 7.25, 300.0])
    for batched, x, y in zip(warped.kernel_images(xs, ys), xs, ys):
        np.testing.assert_array_equal(batched, warped.kernel_image(x, y))


def test_warped_psf_round_trips_through_dicts_and_json() -> None:
    warped = WarpedPsf(_elliptical_psf(), tan_wcs((10.0, 10.0), sip=SIP), tan_wcs((12.0, 9.0), rot_deg=4.0))
    again = Psf.from_dict(json.loads(json.dumps(warped.to_dict())))
    assert isinstance(again, WarpedPsf)
    assert again == warped
    np.testing.assert_array_equal(again.kernel_image(20.0, 30.0), warped.kernel_image(20.0, 30.0))


def test_warp_exposure_attaches_a_warped_psf(tmp_path) -> None:
    from coadd_core.fits_io import read_exposure, write_exposure

    src_wcs = tan_wcs((50.0, 50.0))
    dest_wcs = tan_wcs((45.0, 55.0), rot_deg=20.0)
    exp = Exposure(_noise((100, 100), 1.0, 6), wcs=src_wcs, psf=GaussianPsf(1.5), photo_calib=PhotoCalib(2.0))
    out = warp_exposure(exp, dest_wcs, Box(0, 0, 99, 99))
    assert isinstance(out.psf, WarpedPsf) and out.photo_calib == PhotoCalib(2.0)
    path = tmp_path / "warp.fits"
    write_exposure(out, path)
    back = read_exposure(path)
    assert back.psf == out.psf


# -- direct warps and CoaddInputs ---------------------------------------------------------

from coadd_core.polygon import ValidPolygon  # noqa: E402
from coadd_core.skymap import make_skymap  # noqa: E402
from coadd_core.visit_info import VisitInfo  # noqa: E402
from coadd_core.warp.direct import MakeWarpConfig, make_direct_warp, warp_box  # noqa: E402
from coadd_core.warp.inputs import CoaddInputs, coadd_inputs_psf_at, get_coadd_inputs  # noqa: E402


def _calexp(
    detector: int,
    crpix: tuple[float, float],
    shape: tuple[int, int],
    value: float,
    calib: float,
    psf: Psf | None = None,
    rot_deg: float = 0.0,
) -> Exposure:
    mi = MaskedImage(np.full(shape, value, np.float32), variance=np.full(shape, 2.0, np.float32))
    return Exposure(
        mi,
        wcs=tan_wcs(crpix, rot_deg=rot_deg, crval=(150.0, 2.2)),
        psf=psf or GaussianPsf(1.8),
        photo_calib=PhotoCalib(calib),
        visit_info=VisitInfo(visit_id=1234, detector=detector, physical_filter="r.MP9601", band="r"),
    )


def _patch_geometry() -> tuple[WCS, Box]:
    """A small patch-like box on a TAN tract WCS with 0.185"/px north-up pixels."""
    return tan_wcs((300.0, 300.0), crval=(150.0, 2.2)), Box(0, 0, 599, 599)


def test_direct_warp_calibrates_pastes_detectors_and_records_inputs() -> None:
    tract_wcs, outer = _patch_geometry()
    # two detectors side by side (tract x grows to the east, calexp x to the west here)
    left = _calexp(3, (350.0, 300.0), (500, 250), value=10.0, calib=2.0)
    right = _calexp(4, (50.0, 300.0), (500, 250), value=10.0, calib=3.0)
    far = _calexp(5, (5000.0, 300.0), (500, 250), value=1.0, calib=1.0)
    warp = make_direct_warp([left, right, far], outer, tract_wcs, visit=1234)
    assert warp is not None and warp.bbox == warp_box(outer, MakeWarpConfig()) == outer.grown(256)
    assert warp.unit == "nJy" and warp.photo_calib == PhotoCalib(1.0)
    good = (warp.mask & NO_DATA) == 0
    values = np.unique(np.round(warp.image[good], 3))
    assert set(values.tolist()) == {20.0, 30.0}
    assert np.all(np.isnan(warp.image[~good])) and np.all(np.isposinf(warp.variance[~good]))
    # calibration scales the variance by c^2 (times the kernel's noise reduction <= 1)
    assert np.all(warp.variance[good & (np.round(warp.image, 3) == 30.0)] <= 2.0 * 9.0 + 1e-3)
    inputs = get_coadd_inputs(warp)
    assert [r.detector for r in inputs.ccds] == [3, 4]
    assert [r.id for r in inputs.ccds] == [1234 * 36 + 3, 1234 * 36 + 4]
    assert sum(r.goodpix for r in inputs.ccds) == warp.metadata["WARP_GOODPIX"] == good.sum()
    assert inputs.visits[0].visit == 1234 and inputs.visits[0].goodpix == good.sum()
    rows, cols = outer.slices(warp.bbox)
    assert warp.metadata["COVERAGE_FRACTION"] == pytest.approx(good[rows, cols].mean())
    assert warp.metadata["VISIT"] == 1234 and warp.psf is None


def test_later_detectors_overwrite_and_gaps_are_no_data() -> None:
    tract_wcs, outer = _patch_geometry()
    a = _calexp(1, (300.0, 300.0), (300, 300), value=1.0, calib=1.0)
    b = _calexp(2, (200.0, 300.0), (300, 300), value=5.0, calib=1.0)  # overlaps a
    warp = make_direct_warp([a, b], outer, tract_wcs, visit=7)
    assert warp is not None
    # a pixel both cover holds b's value
    x, y = PixelTransform(b.wcs, tract_wcs).src_to_dest(np.array([150.0]), np.array([150.0]))
    i, j = int(round(float(x[0]))) - warp.bbox.x0, int(round(float(y[0]))) - warp.bbox.y0
    assert warp.image[j, i] == pytest.approx(5.0)


def test_direct_warp_skips_and_returns_none() -> None:
    tract_wcs, outer = _patch_geometry()
    assert make_direct_warp([], outer, tract_wcs, visit=1) is None
    far = _calexp(1, (9000.0, 300.0), (100, 100), value=1.0, calib=1.0)
    assert make_direct_warp([far], outer, tract_wcs, visit=1) is None
    nocalib = _calexp(1, (300.0, 300.0), (100, 100), value=1.0, calib=1.0)
    nocalib.photo_calib = None
    assert make_direct_warp([nocalib], outer, tract_wcs, visit=1) is None
    small = _calexp(1, (300.0, 300.0), (100, 100), value=1.0, calib=1.0)
    assert make_direct_warp([small], outer, tract_wcs, visit=1) is not None
    strict = MakeWarpConfig(min_coverage_fraction=0.5)
    assert make_direct_warp([small], outer, tract_wcs, strict, visit=1) is None


def test_coadd_inputs_round_trip_through_fits(tmp_path) -> None:
    from coadd_core.fits_io import read_exposure, write_exposure

    tract_wcs, outer = _patch_geometry()
    exp = _calexp(2, (300.0, 300.0), (200, 200), value=1.0, calib=1.5, psf=_elliptical_psf())
    exp.valid_polygon = ValidPolygon.from_box(exp.bbox).shrink(3.0)
    exp.metadata["PSF_APCORR"] = 1.0015  # the light beyond the PSF model's box
    warp = make_direct_warp([exp], outer, tract_wcs, visit=99)
    path = tmp_path / "direct.fits"
    write_exposure(warp, path)
    back = read_exposure(path)
    inputs = get_coadd_inputs(back)
    assert isinstance(inputs, CoaddInputs)
    assert inputs.to_dict() == get_coadd_inputs(warp).to_dict()
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(inputs)), copy.deepcopy(inputs), warp.copy().metadata["coadd_inputs"]):
        assert isinstance(clone, CoaddInputs) and clone.to_dict() == inputs.to_dict()
    row = inputs.ccds[0]
    assert row.psf == exp.psf and row.valid_polygon == exp.valid_polygon and row.ccd == 2
    assert row.photo_calib == PhotoCalib(1.5) and row.visit_info == exp.visit_info and row.ap_corr == 1.0015
    np.testing.assert_array_equal(back.image, warp.image)


def test_coadd_inputs_psf_follows_coverage() -> None:
    tract_wcs, outer = _patch_geometry()
    a = _calexp(1, (350.0, 300.0), (500, 240), value=1.0, calib=1.0, psf=GaussianPsf(1.5), rot_deg=20.0)
    b = _calexp(2, (100.0, 300.0), (500, 240), value=1.0, calib=1.0, psf=GaussianPsf(2.5), rot_deg=20.0)
    warp = make_direct_warp([a, b], outer, tract_wcs, visit=5)
    inputs = get_coadd_inputs(warp)
    for exp, row in zip((a, b), inputs.ccds):
        x, y = PixelTransform(exp.wcs, tract_wcs).src_to_dest(np.array([120.0]), np.array([250.0]))
        kernel = coadd_inputs_psf_at(inputs, tract_wcs, float(x[0]), float(y[0]))
        expected = row.warped_psf(tract_wcs).kernel_image(float(x[0]), float(y[0]))
        np.testing.assert_allclose(kernel, expected, atol=1e-12)
        assert kernel.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no input images"):
        coadd_inputs_psf_at(inputs, tract_wcs, -200.0, -200.0)


def test_direct_warp_on_a_rings_skymap_patch() -> None:
    skymap = make_skymap("rings")
    tract = skymap.find_tract((150.1, 2.2))
    patch = tract.find_patch((150.1, 2.2))
    ra, dec = patch.inner_center_sky()
    calexp = _calexp(0, (512.0, 1024.0), (2048, 1024), value=3.0, calib=1.0)
    calexp.wcs = tan_wcs((512.0, 1024.0), rot_deg=0.3, crval=(ra, dec))
    warp = make_direct_warp([calexp], patch.outer_bbox, tract.wcs, visit=11)
    assert warp is not None and warp.bbox == patch.outer_bbox.grown(256)
    good = (warp.mask & NO_DATA) == 0
    # every calexp pixel lands once, less the Lanczos3 edge (2 + 3 px per axis)
    assert good.sum() == pytest.approx((2048 - 5) * (1024 - 5), rel=0.003)
    np.testing.assert_allclose(warp.image[good], 3.0, rtol=1e-4)
    assert warp.metadata["COVERAGE_FRACTION"] == pytest.approx(good.sum() / patch.outer_bbox.area)


# -- direct warps of a calexp: the measured items of the warping issue ---------------------


def _rings_calexp(
    image: np.ndarray,
    variance: float,
    calib: float,
    sip: dict[str, float] | None = SIP,
    scale_arcsec: float = 0.185,
) -> tuple[Exposure, "object"]:
    """A calexp (default the camera's 0.185"/px, with SIP distortion), rotated 0.7 deg against a rings tract, on a patch."""
    tract = make_skymap("rings").find_tract((150.1, 2.2))
    patch = tract.find_patch((150.1, 2.2))
    ra, dec = patch.inner_center_sky()
    h, w = image.shape
    calexp = Exposure(
        MaskedImage(image.astype(np.float32), variance=np.full(image.shape, variance, np.float32)),
        wcs=tan_wcs((w / 2.0, h / 2.0), scale_arcsec=scale_arcsec, rot_deg=0.7, crval=(ra, dec), sip=sip),
        psf=GaussianPsf(2.0),
        photo_calib=PhotoCalib(calib),
        visit_info=VisitInfo(visit_id=77, detector=5, band="r"),
    )
    return calexp, (tract, patch)


def _lanczos3_shift_error(f: float) -> float:
    """First moment of the plain normalised Lanczos3 weights at fraction ``f``, minus ``f``:
    the shift of a resampled linear ramp without the ramp correction, up to 0.020 px."""
    w = np.empty(10)
    total = kernel_weights(f, 3, w)
    return float((np.arange(-2, 4) * w[:6]).sum() / total - f)


@settings(max_examples=200, deadline=None)
@given(f=st.floats(min_value=0.0, max_value=1.0, exclude_max=True), n=st.sampled_from([3, 4, 5]))
def test_ramp_corrected_weights_reproduce_constants_and_ramps(f: float, n: int) -> None:
    """The correction keeps the sum and zeroes the first moment; it is a small change."""
    w = np.empty(10)
    total = kernel_weights(f, n, w)
    plain = w[: 2 * n].copy()
    ramp_correct(f, n, w)
    if f < 1e-9:  # snapped to an exact pixel centre: the delta, untouched
        f = 0.0
    k = np.arange(-(n - 1), n + 1)
    assert w[: 2 * n].sum() == pytest.approx(total, abs=1e-12)
    assert abs((k * w[: 2 * n]).sum() / total - f) < 1e-12
    assert np.abs(w[: 2 * n] - plain).max() < 0.02 * total


def _star_grid() -> list[tuple[float, float]]:
    return [(x + 0.31 * i, y + 0.17 * j) for i, x in enumerate(range(80, 440, 70)) for j, y in enumerate(range(80, 640, 70))]


def _warp_star_offsets(
    exact_ramp: bool, scale_arcsec: float = 0.185
) -> tuple[list[float], list[np.ndarray], list[np.ndarray]]:
    """Flux ratios (warp / calexp x calibration), centroid offsets from the WCS position, and the
    offsets plain Lanczos3 predicts there, for a grid of isolated stars, calexp -> rings patch."""
    positions = _star_grid()
    calexp, (tract, patch) = _rings_calexp(
        star_image((700, 500), positions, sigma=2.0), 1.0, calib=2.5, scale_arcsec=scale_arcsec
    )
    config = MakeWarpConfig(warper=WarperConfig(exact_ramp=exact_ramp))
    warp = make_direct_warp([calexp], patch.outer_bbox, tract.wcs, config, visit=77)
    transform = PixelTransform(calexp.wcs, tract.wcs)
    ratios, offsets, predicted = [], [], []
    for x, y in positions:
        flux_in, cx, cy = aperture(calexp.image, x, y, 14)
        px, py = transform_point(transform, cx, cy)
        flux_out, ox, oy = aperture(warp.image, px - warp.bbox.x0, py - warp.bbox.y0, 14)
        ratios.append(flux_out / (2.5 * flux_in))
        offsets.append(np.array([ox + warp.bbox.x0 - px, oy + warp.bbox.y0 - py]))
        # the phase of the output pixel nearest the star, and the shift plain Lanczos3 gives there
        sx, sy = transform.dest_to_src(np.array([round(px)]), np.array([round(py)]))
        src_error = [_lanczos3_shift_error(float(v[0] - math.floor(v[0]))) for v in (sx, sy)]
        predicted.append(-np.linalg.inv(transform.jacobian(round(px), round(py))) @ np.array(src_error))
    return ratios, offsets, predicted


def test_direct_warp_conserves_calexp_star_flux_and_puts_centroids_at_the_wcs_position() -> None:
    """Isolated stars, calexp -> patch (0.185"/px, 0.7 deg, SIP): warp flux (nJy) =
    calexp flux x calibration within 0.1 %; centroids at the WCS-predicted position within
    0.01 px (here 0.002).

    This is the hard case for Lanczos: the sub-pixel phase hardly changes across a star,
    so the plain kernel's ramp error does not average out.
    """
    ratios, offsets, _ = _warp_star_offsets(exact_ramp=True)
    assert np.abs(np.array(ratios) - 1).max() < 1e-3
    assert np.abs(offsets).max() < 0.002


def test_plain_lanczos3_moves_centroids_by_its_ramp_error() -> None:
    """``exact_ramp=False`` (LSST's normalised Lanczos3): each centroid moves by the kernel's
    ramp error at the star's phase (within 0.003 px), which reaches 0.02 px."""
    ratios, offsets, predicted = _warp_star_offsets(exact_ramp=False)
    assert np.abs(np.array(ratios) - 1).max() < 1e-3
    np.testing.assert_allclose(np.array(offsets), np.array(predicted), atol=0.003)
    assert np.abs(offsets).max() > 0.012


def test_direct_warp_conserves_star_flux_under_a_one_percent_scale_change() -> None:
    """0.187"/px calexp onto the 0.185"/px tract: the phase drifts slowly across each star.
    With the ramp correction every star keeps its flux within 0.1 % (plain Lanczos3 ripples
    by about +-0.25 %) and its centroid within 0.01 px."""
    ratios, offsets, _ = _warp_star_offsets(exact_ramp=True, scale_arcsec=0.187)
    assert np.abs(np.array(ratios) - 1).max() < 1e-3
    assert np.abs(offsets).max() < 0.01
    plain, _, _ = _warp_star_offsets(exact_ramp=False, scale_arcsec=0.187)
    assert np.ptp(plain) > 2 * np.ptp(ratios)


def test_direct_warp_of_a_flat_calexp_is_one_away_from_edges() -> None:
    """Equal pixel areas (no distortion): 1 within 1e-4 wherever the kernel has data."""
    calexp, (tract, patch) = _rings_calexp(np.ones((700, 500)), 1.0, calib=1.0, sip=None)
    warp = make_direct_warp([calexp], patch.outer_bbox, tract.wcs, visit=77)
    good = (warp.mask & NO_DATA) == 0
    assert good.sum() > 0.98 * 700 * 500
    assert np.all(np.abs(warp.image[good] - 1.0) < 1e-4)


def test_direct_warp_variance_plane_matches_the_noise_of_a_pure_noise_calexp() -> None:
    """Pure noise: the variance plane (calibration squared, kernel squared) is each pixel's
    measured variance (2 %), and block sums follow the correlated-noise factor (5 %)."""
    variance, calib = 9.0, 1.7
    calexp, (tract, patch) = _rings_calexp(_noise((900, 900), variance, 5).image, variance, calib=calib)
    warp = make_direct_warp([calexp], patch.outer_bbox, tract.wcs, visit=77)
    good = (warp.mask & NO_DATA) == 0
    chi2 = warp.image[good].astype(np.float64) ** 2 / warp.variance[good]
    assert abs(chi2.mean() - 1.0) < 0.02
    assert warp.variance[good].mean() < 0.8 * calib**2 * variance  # resampling averages the noise
    rows, cols = np.nonzero(good)
    core = (slice(rows.min() + 40, rows.min() + 40 + 480), slice(cols.min() + 40, cols.min() + 40 + 480))
    assert np.all(good[core])
    n = 8
    sums = warp.image[core].astype(np.float64).reshape(60, n, 60, n).sum(axis=(1, 3))
    measured = sums.var() / (n * n * warp.variance[core].mean())
    assert measured == pytest.approx(sum_variance_ratio(n), rel=0.05)
    assert measured > 1.2  # the correlations matter: the per-pixel plane alone would be wrong
