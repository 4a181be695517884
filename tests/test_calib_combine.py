"""Master calibration combination (ALGORITHMS.md §2.5, MEANCLIP of §6.1)."""

from __future__ import annotations

import numpy as np
import pytest

from coadd_core.calib import (
    CalibCombineConfig,
    combine_bias,
    combine_dark,
    combine_flat,
    find_cosmic_rays,
    solve_flat_scales,
)
from coadd_core.calib._stats import clipped_mean, quantiles
from coadd_core.exposure import Exposure
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask
from coadd_core.visit_info import VisitInfo

BAD = bitmask("BAD")
SAT = bitmask("SAT")
CR = bitmask("CR")


def _exposure(image: np.ndarray, variance: float | np.ndarray = 1.0, *, dark_time: float | None = None,
              mask: np.ndarray | None = None, expid: int = 1) -> Exposure:
    image = np.asarray(image, dtype=np.float32)
    var = np.broadcast_to(np.asarray(variance, dtype=np.float32), image.shape).copy()
    mi = MaskedImage(image, None if mask is None else mask.copy(), var)
    return Exposure(mi, visit_info=VisitInfo(exposure_id=expid, dark_time=dark_time, observation_type="test"))


# -- the statistic -----------------------------------------------------------------------
def test_meanclip_reference_values() -> None:
    # §11 item 1: MEANCLIP of {0,0,0,0,100} (k=3, 2 iterations) is 0 with one value clipped
    mean, var, kept = clipped_mean(np.array([0.0, 0, 0, 0, 100]), 3.0, 2)
    assert mean == 0.0 and kept == 4
    frames = [np.full((2, 3), v, dtype=np.float32) for v in (0, 0, 0, 0, 100)]
    master = combine_bias([_exposure(f, 1.0) for f in frames], CalibCombineConfig(n_iter=2))
    assert np.all(master.image == 0.0) and not np.any(master.mask)


def test_quantiles_match_numpy_linear() -> None:
    rng = np.random.default_rng(1)
    for values in (rng.normal(size=100_000).astype(np.float32), rng.integers(0, 7, 50_001).astype(np.float32),
                   np.array([3.0, 1.0]), np.array([5.0])):
        np.testing.assert_allclose(quantiles(values, (0.25, 0.5, 0.75)), np.percentile(values, [25, 50, 75]), atol=1e-6)
    assert np.isnan(quantiles(np.array([]), (0.5,))[0])


# -- bias ---------------------------------------------------------------------------------
def test_meanclip_of_five_frames_rejects_a_cosmic_ray() -> None:
    rng = np.random.default_rng(7)
    truth = rng.normal(0.0, 2.0, (30, 40)).astype(np.float32)
    frames = [truth + rng.normal(0.0, 1.0, truth.shape).astype(np.float32) for _ in range(5)]
    frames[2][10:12, 20:23] += 5000.0
    master = combine_bias([_exposure(f, 1.0, expid=i) for i, f in enumerate(frames)])
    others = np.mean([f[10:12, 20:23] for k, f in enumerate(frames) if k != 2], axis=0)
    np.testing.assert_allclose(master.image[10:12, 20:23], others, atol=1e-4)
    # every pixel is the 1-D MEANCLIP of its five values (stack kernel = reference)
    stack = np.stack(frames)
    for j, i in [(0, 0), (10, 21), (29, 39), (15, 7)]:
        assert master.image[j, i] == pytest.approx(clipped_mean(stack[:, j, i].astype(np.float64), 3.0, 3)[0], abs=1e-4)
    assert np.std(master.image - truth) < 0.6
    assert not np.any(master.mask & BAD)
    # 5 inputs: error from the scatter of the kept values
    assert master.metadata["CALIB_ERROR_FROM"] == "scatter"
    assert master.metadata["OBSTYPE"] == "bias"
    assert master.visit_info is not None and master.visit_info.observation_type == "bias"


def test_few_inputs_take_the_error_from_input_variance() -> None:
    frames = [np.full((4, 5), v, dtype=np.float32) for v in (1.0, 2.0, 3.0)]
    master = combine_bias([_exposure(f, 9.0) for f in frames])
    np.testing.assert_allclose(master.image, 2.0)
    np.testing.assert_allclose(master.variance, 9.0 * 3 / 9)
    assert master.metadata["CALIB_ERROR_FROM"] == "input variance"


def test_no_good_input_becomes_bad_and_is_filled() -> None:
    frames = [np.full((6, 8), 5.0, dtype=np.float32) for _ in range(3)]
    masks = [np.zeros((6, 8), np.int32) for _ in range(3)]
    for m in masks:
        m[3, 4] = bitmask("DETECTED")  # ignored plane in every input
    masks[0][1, 1] = BAD  # BAD is not ignored: it propagates
    master = combine_bias([_exposure(f, 1.0, mask=m) for f, m in zip(frames, masks)])
    assert master.mask[3, 4] == BAD
    assert np.isfinite(master.image[3, 4]) and master.image[3, 4] == pytest.approx(5.0)
    assert master.mask[1, 1] == BAD
    # every plane but BAD is cleared
    assert set(np.unique(master.mask)) <= {0, BAD}


def test_unequal_inputs_and_empty_list_raise() -> None:
    with pytest.raises(RuntimeError, match="differ in size"):
        combine_bias([_exposure(np.zeros((4, 4))), _exposure(np.zeros((4, 5)))])
    with pytest.raises(RuntimeError):
        combine_bias([])


def test_row_blocks_give_the_same_master() -> None:
    rng = np.random.default_rng(2)
    inputs = [_exposure(rng.normal(10, 1, (53, 17)), 1.0) for _ in range(6)]
    a = combine_bias(inputs, CalibCombineConfig(subregion_rows=7))
    b = combine_bias(inputs, CalibCombineConfig(subregion_rows=1000))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.variance, b.variance)


# -- dark ---------------------------------------------------------------------------------
def test_dark_is_per_second_and_cosmic_rays_are_masked() -> None:
    rng = np.random.default_rng(11)
    rate = np.full((120, 50), 0.02, dtype=np.float32)
    rate[:, 17] = 1.5  # a hot column: kept by the master
    inputs = []
    for k, t in enumerate((100.0, 200.0, 300.0)):
        img = rate * t + rng.normal(0, 3.0, rate.shape).astype(np.float32)
        inputs.append(_exposure(img, 9.0, dark_time=t, expid=k))
    inputs[1].image[60, 30] += 800.0  # a cosmic ray in one input
    master = combine_dark(inputs)
    assert master.visit_info is not None and master.visit_info.dark_time == 1.0
    np.testing.assert_allclose(np.median(master.image[:, 17]), 1.5, atol=0.01)
    np.testing.assert_allclose(np.median(master.image[:, 30]), 0.02, atol=0.01)
    assert abs(master.image[60, 30] - 0.02) < 0.1
    assert master.metadata["CALIB_N_COSMIC_RAY_PIXELS"] >= 1
    # the hot column is not taken for a cosmic ray
    assert master.metadata["CALIB_N_COSMIC_RAY_PIXELS"] < 20


def test_single_dark_cosmic_ray_becomes_bad() -> None:
    rng = np.random.default_rng(5)
    img = rng.normal(0, 3.0, (100, 40)).astype(np.float32)
    img[40:43, 10] += 900.0
    img[:, 25] += 400.0  # hot column
    e = _exposure(img, 9.0, dark_time=300.0)
    hits = find_cosmic_rays(e.masked_image, grow=0)
    assert hits[40:43, 10].all()
    assert not hits[:, 25].any()
    master = combine_dark([e])
    assert np.all(master.mask[40:43, 10] & BAD)
    assert np.isfinite(master.image).all()


def test_dark_without_dark_time_raises() -> None:
    with pytest.raises(RuntimeError, match="dark time"):
        combine_dark([_exposure(np.zeros((4, 4)))])


# -- flat ---------------------------------------------------------------------------------
def test_flat_list_is_normalised_to_mean_one() -> None:
    rng = np.random.default_rng(9)
    response = (1.0 + 0.1 * np.linspace(-1, 1, 64))[None, :] * np.ones((32, 1))
    inputs = []
    for level in (1000.0, 3000.0, 2000.0):
        img = response * level
        inputs.append(_exposure(img + rng.normal(0, 0.001 * level, img.shape), (0.001 * level) ** 2))
    master = combine_flat(inputs)
    assert master.image.mean() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(master.image, response / response.mean(), rtol=4e-3)
    assert master.metadata["OBSTYPE"] == "flat"


def test_flat_scale_solve_recovers_exposure_levels_and_detector_response() -> None:
    g_true = np.array([0.8, 1.0, 1.3])
    e_true = np.array([1000.0, 2500.0, 4000.0, 1500.0])
    b = g_true[:, None] * e_true[None, :]
    counts = np.full(b.shape, 100.0)
    e, g = solve_flat_scales(b, counts, 10)
    np.testing.assert_allclose(g * e[0], g_true * e_true[0], rtol=1e-6)
    np.testing.assert_allclose(np.outer(g, e), b, rtol=1e-6)
    assert np.average(g, weights=counts.sum(axis=1)) == pytest.approx(1.0)


def test_flat_mapping_keeps_relative_detector_response() -> None:
    levels = (1000.0, 2000.0, 1500.0)
    shape = (16, 24)
    inputs = {
        "ccd00": [_exposure(np.full(shape, 0.9 * v), 1.0, expid=k) for k, v in enumerate(levels)],
        "ccd01": [_exposure(np.full(shape, 1.1 * v), 1.0, expid=k) for k, v in enumerate(levels)],
    }
    masters = combine_flat(inputs)
    assert set(masters) == {"ccd00", "ccd01"}
    np.testing.assert_allclose(masters["ccd00"].image, 0.9, rtol=1e-5)
    np.testing.assert_allclose(masters["ccd01"].image, 1.1, rtol=1e-5)
    with pytest.raises(RuntimeError, match="same flat exposures"):
        combine_flat({"a": inputs["ccd00"], "b": inputs["ccd01"][:2]})
