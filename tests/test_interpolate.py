"""interpolate_over: row interpolation over masked pixels (ALGORITHMS.md §2.4)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coadd_core.calib._stats import clipped_mean
from coadd_core.image import MaskedImage
from coadd_core.interpolate import EDGE_RAMP_PIXELS, interpolate_over
from coadd_core.masks import bitmask

BAD = bitmask("BAD")
SAT = bitmask("SAT")
INTRP = bitmask("INTRP")


def _row_image(values: list[float], masked: list[int]) -> MaskedImage:
    image = np.array([values], dtype=np.float32)
    mask = np.zeros_like(image, dtype=np.int32)
    mask[0, masked] = BAD
    return MaskedImage(image, mask, image * 2.0)


def test_interior_run_is_linear_between_the_means_of_two_good_pixels_each_side() -> None:
    # left good pixels 1, 3 (positions 0, 1: mean 2 at 0.5); right 10, 20 (positions 5, 6: mean 15 at 5.5)
    mi = _row_image([1, 3, 99, 99, 99, 10, 20], [2, 3, 4])
    n = interpolate_over(mi, BAD, fallback=-1.0)
    assert n == 3
    expected = 2.0 + (15.0 - 2.0) * (np.array([2, 3, 4]) - 0.5) / 5.0
    np.testing.assert_allclose(mi.image[0, 2:5], expected, rtol=1e-6)
    # the variance plane gets the same treatment
    np.testing.assert_allclose(mi.variance[0, 2:5], 2.0 * expected, rtol=1e-6)
    assert np.all(mi.mask[0, 2:5] == BAD | INTRP)
    assert np.all(mi.mask[0, [0, 1, 5, 6]] == 0)
    # good pixels untouched
    np.testing.assert_array_equal(mi.image[0, [0, 1, 5, 6]], [1, 3, 10, 20])


def test_only_contiguous_good_pixels_are_averaged() -> None:
    # left side: pixel 2 good but pixel 1 masked -> only pixel 2 (value 4) is used
    mi = _row_image([100, 0, 4, 0, 0, 8, 8], [1, 3, 4])
    interpolate_over(mi, BAD, fallback=0.0)
    # run 3-4 between 4 (x=2) and mean 8 (x=5.5)
    np.testing.assert_allclose(mi.image[0, 3:5], 4 + 4 * (np.array([3, 4]) - 2) / 3.5, rtol=1e-6)
    # run 1 between 100 (x=0) and 4 (x=2)
    np.testing.assert_allclose(mi.image[0, 1], 52.0, rtol=1e-6)


def test_edge_runs_use_the_fallback_beyond_six_pixels() -> None:
    nx = 20
    values = [0.0] * nx
    values[12], values[13] = 10.0, 20.0
    masked = list(range(0, 12))  # touches the left edge; good data starts at 12
    mi = _row_image(values, masked)
    fallback = 100.0
    interpolate_over(mi, BAD, fallback=fallback, variance_fallback=7.0)
    row = mi.image[0]
    b = 11
    anchor = b - EDGE_RAMP_PIXELS  # last pixel set to the fallback
    np.testing.assert_array_equal(row[: anchor + 1], fallback)
    xr, vr = 12.5, 15.0
    ramp = fallback + (vr - fallback) * (np.arange(anchor + 1, b + 1) - anchor) / (xr - anchor)
    np.testing.assert_allclose(row[anchor + 1 : b + 1], ramp, rtol=1e-6)
    assert np.all(mi.variance[0, : anchor + 1] == 7.0)
    # the right edge mirrors it
    mi = _row_image(values[::-1], [nx - 1 - i for i in masked])
    interpolate_over(mi, BAD, fallback=fallback)
    np.testing.assert_allclose(mi.image[0, ::-1], row, rtol=1e-6)


def test_whole_row_and_default_fallback_is_the_clipped_mean() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(50.0, 2.0, (40, 30)).astype(np.float32)
    image[5, 3] = 1e6  # clipped away by the 3-sigma mean
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[10, :] = SAT
    variance = np.full(image.shape, 4.0, dtype=np.float32)
    mi = MaskedImage(image.copy(), mask, variance)
    n = interpolate_over(mi, SAT | BAD)
    assert n == 30
    good = image[mask == 0]
    expected = clipped_mean(good, 3.0, 3)[0]
    assert abs(expected - 50.0) < 0.5
    np.testing.assert_allclose(mi.image[10], expected, rtol=1e-6)
    np.testing.assert_allclose(mi.variance[10], 4.0, rtol=1e-6)
    assert np.all(mi.mask[10] == SAT | INTRP)


def test_set_intrp_false_and_no_bits() -> None:
    mi = _row_image([1, 2, 3, 4, 5], [2])
    assert interpolate_over(mi, 0) == 0
    assert mi.image[0, 2] == 3
    mi.image[0, 2] = -50
    assert interpolate_over(mi, BAD, set_intrp=False) == 1
    assert mi.image[0, 2] == pytest.approx(3.0)
    assert mi.mask[0, 2] == BAD


def test_sub_image_view_is_interpolated_in_place() -> None:
    from coadd_core.geom import Box

    image = np.tile(np.arange(12, dtype=np.float32), (6, 1))
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[2, 6] = BAD
    parent = MaskedImage(image, mask, np.ones_like(image), xy0=(100, 200))
    view = parent.subset(Box(102, 201, 110, 204))
    image[2, 6] = 0.0
    assert interpolate_over(view, BAD, fallback=0.0) == 1
    assert parent.image[2, 6] == pytest.approx(6.0)
    assert parent.mask[2, 6] & INTRP


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=8, max_size=40),
    st.data(),
)
def test_interior_values_stay_between_the_side_means(values: list[float], data: st.DataObject) -> None:
    n = len(values)
    a = data.draw(st.integers(2, n - 3))
    b = data.draw(st.integers(a, n - 3))
    mi = _row_image(values, list(range(a, b + 1)))
    interpolate_over(mi, BAD, fallback=0.0)
    left = np.mean(np.array(values[max(a - 2, 0) : a], dtype=np.float32))
    right = np.mean(np.array(values[b + 1 : b + 3], dtype=np.float32))
    lo, hi = min(left, right), max(left, right)
    run = mi.image[0, a : b + 1]
    tol = 1e-3 * max(1.0, abs(lo), abs(hi))
    assert np.all(run >= lo - tol) and np.all(run <= hi + tol)


def test_full_ccd_is_fast() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 30.0, (4612, 2048)).astype(np.float32)
    mask = np.zeros(image.shape, dtype=np.int32)
    mask[:, 57] = BAD
    mask[1000:1200, 300:305] = SAT
    mi = MaskedImage(image, mask, np.ones_like(image))
    interpolate_over(mi.copy(), BAD | SAT)  # compile / load the kernel
    start = time.perf_counter()
    n = interpolate_over(mi, BAD | SAT)
    elapsed = time.perf_counter() - start
    assert n == 4612 + 1000
    # a vectorised pass over 9.4 Mpx; generous for a loaded machine
    assert elapsed < 0.5, elapsed


@pytest.mark.parametrize("module", ["coadd_core.interpolate", "coadd_core.calib", "coadd_core.isr"])
def test_imports_on_their_own(module: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
