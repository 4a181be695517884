"""Statistics engine (ALGORITHMS.md §6.1, §11 item 1) against a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coadd_core.masks import bitmask, standard_planes
from coadd_core.stats import (
    IQR_TO_SIGMA,
    StatsConfig,
    meanclip,
    quantile_linear,
    sorting_network,
    stack,
)

CLIPPED = bitmask("CLIPPED")
NO_DATA = bitmask("NO_DATA")
BAD = bitmask("BAD")
SAT = bitmask("SAT")
EDGE = bitmask("EDGE")
REJECTED = bitmask("REJECTED")
SENSOR_EDGE = bitmask("SENSOR_EDGE")


# --------------------------------------------------------------------------------------
# slow reference: §6.1 written out per pixel with numpy, two-pass variances
# --------------------------------------------------------------------------------------


def _weighted_moments(x: np.ndarray, w: np.ndarray, centre: float = 0.0) -> tuple[float, float]:
    """Weighted mean (as deviations from ``centre``, exact for equal values) and the
    weighted sample variance."""
    sw = w.sum()
    mu = float(centre + (w * (x - centre)).sum() / sw)
    denom = sw * sw - (w * w).sum()
    var = float((w * (x - mu) ** 2).sum() / sw * sw * sw / denom) if denom > 0 else math.nan
    return mu, var


def reference_pixel(
    x: np.ndarray, m: np.ndarray, v: np.ndarray, w: np.ndarray, cfg: StatsConfig
) -> tuple[float, int, float, int]:
    planes = standard_planes()
    x = x.astype(np.float64)
    v = v.astype(np.float64)
    good = np.isfinite(x) & ((m & cfg.and_mask) == 0)
    n = int(good.sum())
    n_masked = len(x) - n
    if n == 0:
        value, var, out_mask, n_clip = math.nan, math.nan, NO_DATA, 0
    else:
        xs, ws, vs = x[good], w[good], v[good]
        out_mask = int(np.bitwise_or.reduce(m[good]))
        if cfg.statistic == "MEDIAN":
            value = float(np.percentile(xs, 50))
            _, sv = _weighted_moments(xs, ws)
            if cfg.calc_error_from_input_variance:
                var = math.pi / 2 * float((ws**2 * vs).sum() / ws.sum() ** 2)
            else:
                var = math.pi / 2 * sv / n
            n_clip = 0
        else:
            sel = np.ones(n, dtype=bool)
            if cfg.statistic == "MEANCLIP":
                q1, med, q3 = np.percentile(xs, [25, 50, 75])
                iqr_half = cfg.num_sigma_clip * IQR_TO_SIGMA * (q3 - q1)
                mu = sv = math.nan
                for it in range(cfg.num_iter):
                    if it == 0:
                        centre, half = med, iqr_half
                    else:
                        centre = mu
                        half = cfg.num_sigma_clip * math.sqrt(max(sv, 0.0)) if sel.sum() > 1 else iqr_half
                    sel = np.abs(xs - centre) <= half
                    if sel.sum() == 0:
                        mu = sv = math.nan
                    else:
                        mu, sv = _weighted_moments(xs[sel], ws[sel], centre)
            used = int(sel.sum())
            n_clip = n - used
            if used == 0:
                value = var = math.nan
            else:
                value, sv = _weighted_moments(xs[sel], ws[sel], centre if cfg.statistic == "MEANCLIP" else 0.0)
                sw = ws[sel].sum()
                if cfg.calc_error_from_input_variance:
                    var = float((ws[sel] ** 2 * vs[sel]).sum() / sw**2)
                else:
                    var = sv * float((ws[sel] ** 2).sum()) / sw**2
        for name, threshold in cfg.mask_propagation_thresholds.items():
            b = planes.bitmask(name)
            rej = (~good) & ((m & b) != 0)
            r = w[rej].sum()
            if r > 0 and r / (ws.sum() + r) > threshold:
                out_mask |= b
    if n_clip > 0:
        out_mask |= CLIPPED
    if n_masked > 0:
        all_or = int(np.bitwise_or.reduce(m))
        for src, dst in cfg.rejected_mask_map:
            if all_or & src:
                out_mask |= dst
    return value, out_mask, var, n_clip


def reference_stack(images, masks, variances, weights, cfg):
    n, ny, nx = images.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    out = [np.empty((ny, nx)), np.empty((ny, nx), np.int64), np.empty((ny, nx)), np.empty((ny, nx), np.int64)]
    for yy in range(ny):
        for xx in range(nx):
            r = reference_pixel(images[:, yy, xx], masks[:, yy, xx], variances[:, yy, xx], w, cfg)
            for arr, val in zip(out, r):
                arr[yy, xx] = val
    return out


def assert_matches_reference(images, masks, variances, weights, cfg):
    got = stack(images, masks, variances, weights, cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    ref = reference_stack(images, masks, variances, weights, cfg)
    np.testing.assert_allclose(got.image, ref[0], rtol=2e-5, atol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(got.mask, ref[1])
    np.testing.assert_allclose(got.variance, ref[2], rtol=2e-5, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(got.n_clipped, ref[3])


def random_cube(rng, n, ny, nx, *, bad_frac=0.1, nan_frac=0.02, outlier_frac=0.05):
    images = rng.normal(100.0, 5.0, size=(n, ny, nx)).astype(np.float32)
    outliers = rng.random((n, ny, nx)) < outlier_frac
    images[outliers] += rng.choice([-1, 1], outliers.sum()) * rng.uniform(20, 500, outliers.sum()).astype(np.float32)
    images[rng.random((n, ny, nx)) < nan_frac] = np.nan
    masks = np.zeros((n, ny, nx), dtype=np.int32)
    for b in (BAD, SAT, EDGE, bitmask("DETECTED")):
        masks[rng.random((n, ny, nx)) < bad_frac] |= b
    variances = rng.uniform(20, 30, size=(n, ny, nx)).astype(np.float32)
    return images, masks, variances


# --------------------------------------------------------------------------------------
# §11 item 1
# --------------------------------------------------------------------------------------


def test_meanclip_rejects_single_outlier():
    x = np.array([0, 0, 0, 0, 100], dtype=np.float32).reshape(5, 1, 1)
    cfg = StatsConfig(statistic="MEANCLIP", num_sigma_clip=3.0, num_iter=2)
    r = stack(x, np.zeros(x.shape, np.int32), np.ones(x.shape, np.float32), None, cfg,
              clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    assert r.image[0, 0] == 0.0
    assert r.n_clipped[0, 0] == 1
    assert r.mask[0, 0] == CLIPPED
    scalar = meanclip(x.ravel(), 3.0, 2)
    assert scalar.mean == 0.0 and scalar.n_clipped == 1 and scalar.n_used == 4


def test_mean_equal_weights_is_numpy_mean():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(7, 13, 17)).astype(np.float32)
    r = stack(images, np.zeros(images.shape, np.int32), np.ones(images.shape, np.float32),
              np.full(7, 0.3), StatsConfig(statistic="MEAN"), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    np.testing.assert_allclose(r.image, images.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7)
    assert not r.n_clipped.any()


def test_quartiles_match_numpy_percentile():
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 4, 5, 8, 11, 20):
        values = np.sort(rng.normal(size=n))
        for q in (0.25, 0.5, 0.75):
            assert quantile_linear(values, q) == pytest.approx(np.percentile(values, 100 * q), abs=1e-12)
    images = rng.normal(size=(9, 6, 5)).astype(np.float32)
    r = stack(images, np.zeros(images.shape, np.int32), np.ones(images.shape, np.float32), None,
              StatsConfig(statistic="MEDIAN"), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    np.testing.assert_allclose(r.image, np.percentile(images.astype(np.float64), 50, axis=0), rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 16, 20, 33, 64, 100])
def test_sorting_network_sorts(n):
    rng = np.random.default_rng(n)
    net = sorting_network(n)
    for _ in range(50):
        a = rng.integers(0, 5, n).astype(float)
        b = a.copy()
        for i, j in net:
            if b[i] > b[j]:
                b[i], b[j] = b[j], b[i]
        np.testing.assert_array_equal(b, np.sort(a))


# --------------------------------------------------------------------------------------
# agreement with the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["MEAN", "MEDIAN", "MEANCLIP"])
@pytest.mark.parametrize("calc_err", [True, False])
def test_matches_reference_fixed(statistic, calc_err):
    rng = np.random.default_rng(11)
    images, masks, variances = random_cube(rng, 9, 12, 15)
    weights = rng.uniform(0.2, 2.0, 9)
    cfg = StatsConfig(
        statistic=statistic,
        num_sigma_clip=2.5,
        num_iter=3,
        and_mask=BAD | SAT | EDGE,
        calc_error_from_input_variance=calc_err,
        mask_propagation_thresholds={"SAT": 0.1},
        rejected_mask_map=((BAD, REJECTED), (EDGE, SENSOR_EDGE)),
    )
    assert_matches_reference(images, masks, variances, weights, cfg)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 24),
    ny=st.integers(1, 6),
    nx=st.integers(1, 9),
    bad_frac=st.floats(0.0, 0.6),
    nan_frac=st.floats(0.0, 0.3),
    outlier_frac=st.floats(0.0, 0.4),
    k=st.floats(1.0, 4.0),
    n_iter=st.integers(1, 5),
    weighted=st.booleans(),
    calc_err=st.booleans(),
    threshold=st.floats(0.0, 1.0),
)
def test_meanclip_matches_reference_property(
    seed, n, ny, nx, bad_frac, nan_frac, outlier_frac, k, n_iter, weighted, calc_err, threshold
):
    rng = np.random.default_rng(seed)
    images, masks, variances = random_cube(rng, n, ny, nx, bad_frac=bad_frac, nan_frac=nan_frac,
                                           outlier_frac=outlier_frac)
    weights = rng.uniform(0.1, 3.0, n) if weighted else None
    cfg = StatsConfig(
        statistic="MEANCLIP",
        num_sigma_clip=k,
        num_iter=n_iter,
        and_mask=BAD | SAT,
        calc_error_from_input_variance=calc_err,
        mask_propagation_thresholds={"SAT": threshold},
        rejected_mask_map=((BAD, REJECTED), (EDGE, SENSOR_EDGE)),
    )
    assert_matches_reference(images, masks, variances, weights, cfg)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), k=st.floats(1.0, 4.0), n_iter=st.integers(1, 4))
def test_scalar_meanclip_matches_stack(seed, n, k, n_iter):
    rng = np.random.default_rng(seed)
    values = rng.standard_cauchy(n).astype(np.float32)
    weights = rng.uniform(0.5, 2.0, n)
    r = stack(values.reshape(n, 1, 1), np.zeros((n, 1, 1), np.int32), np.ones((n, 1, 1), np.float32), weights,
              StatsConfig(statistic="MEANCLIP", num_sigma_clip=k, num_iter=n_iter),
              clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    s = meanclip(values, k, n_iter, weights)
    np.testing.assert_allclose(r.image[0, 0], s.mean, rtol=1e-5, atol=1e-5)
    assert r.n_clipped[0, 0] == s.n_clipped


# --------------------------------------------------------------------------------------
# mask rules and buffers
# --------------------------------------------------------------------------------------


def _cfg(**kw):
    base = dict(statistic="MEAN", and_mask=BAD | SAT | EDGE | NO_DATA, mask_propagation_thresholds={"SAT": 0.1},
                rejected_mask_map=((BAD | SAT, REJECTED), (EDGE, SENSOR_EDGE)))
    base.update(kw)
    return StatsConfig(**base)


def test_no_good_input_gives_no_data_and_mapped_bits():
    images = np.ones((3, 1, 1), np.float32)
    masks = np.array([EDGE, BAD, NO_DATA], np.int32).reshape(3, 1, 1)
    r = stack(images, masks, np.ones_like(images), None, _cfg(), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    assert math.isnan(r.image[0, 0])
    assert r.mask[0, 0] == NO_DATA | REJECTED | SENSOR_EDGE


def test_saturation_propagates_by_weight_fraction():
    images = np.ones((10, 1, 2), np.float32)
    masks = np.zeros((10, 1, 2), np.int32)
    masks[0, 0, :] = SAT
    weights = np.ones(10)
    weights[0] = 0.1  # 0.1 / 9.1 < 0.1 in column 0
    r = stack(images, masks, np.ones_like(images), weights, _cfg(), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    assert r.mask[0, 0] == REJECTED
    weights[0] = 2.0  # 2 / 11 > 0.1
    r = stack(images, masks, np.ones_like(images), weights, _cfg(), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    assert r.mask[0, 0] == SAT | REJECTED


def test_or_mask_over_good_set_only():
    images = np.ones((3, 1, 1), np.float32)
    masks = np.array([bitmask("DETECTED"), BAD | bitmask("CR"), 0], np.int32).reshape(3, 1, 1)
    r = stack(images, masks, np.ones_like(images), None, _cfg(), clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    assert r.mask[0, 0] == bitmask("DETECTED") | REJECTED


def test_output_buffers_are_reused_and_shapes_checked():
    rng = np.random.default_rng(5)
    images, masks, variances = random_cube(rng, 5, 8, 9)
    cfg = _cfg(statistic="MEANCLIP")
    first = stack(images, masks, variances, None, cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    again = stack(images, masks, variances, None, cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA, out=first)
    assert again.image is first.image
    ref = stack(images, masks, variances, None, cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    np.testing.assert_array_equal(ref.image, again.image)
    with pytest.raises(ValueError):
        stack(images, masks[:, :4], variances, None, cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    with pytest.raises(ValueError):
        stack(images, masks, variances, np.ones(4), cfg, clipped_bit=CLIPPED, no_good_bit=NO_DATA)


def test_variance_from_inputs_mean_of_equal_warps():
    n = 6
    images = np.full((n, 4, 4), 7.0, np.float32)
    variances = np.full((n, 4, 4), 3.0, np.float32)
    r = stack(images, np.zeros(images.shape, np.int32), variances, np.ones(n), _cfg(),
              clipped_bit=CLIPPED, no_good_bit=NO_DATA)
    np.testing.assert_allclose(r.variance, 3.0 / n, rtol=1e-6)
    np.testing.assert_array_equal(r.image, 7.0)
