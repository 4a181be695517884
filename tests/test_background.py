"""Background grid, statistics and models against known skies (ALGORITHMS.md §3)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from coadd_core.background import (
    BackgroundConfig,
    BackgroundModel,
    TooManyMaskedPixelsError,
    cell_edges,
    fit_background,
    subtract_background,
)
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask
from coadd_core.stats import meanclip

SIGMA = 20.0


def polynomial_sky(shape: tuple[int, int], xy0: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A smooth cubic sky (well inside what an order-6 Chebyshev represents)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / w, y / h
    return 1500.0 + 40.0 * u - 25.0 * v**2 + 30.0 * u * v - 12.0 * u**3 + 8.0 * v**3


def noisy(shape: tuple[int, int], seed: int = 1, xy0: tuple[int, int] = (0, 0)) -> tuple[MaskedImage, np.ndarray]:
    sky = polynomial_sky(shape)
    rng = np.random.default_rng(seed)
    image = (sky + rng.normal(0.0, SIGMA, shape)).astype(np.float32)
    mi = MaskedImage(image, variance=np.full(shape, SIGMA**2, np.float32), xy0=xy0)
    return mi, sky


def test_polynomial_sky_recovered_below_a_tenth_of_the_noise() -> None:
    mi, sky = noisy((1536, 1024), xy0=(100, 200))
    model = fit_background(mi)
    assert model.shape == (12, 8) and model.order == 6 and model.use_approx
    residual = model.evaluate() - sky
    assert np.max(np.abs(residual)) < 0.1 * SIGMA
    # a sub-box evaluates to the same pixels (parent coordinates)
    sub = Box(300, 500, 420, 700)
    rows, cols = sub.slices(mi.bbox)
    np.testing.assert_allclose(model.evaluate(sub), model.evaluate()[rows, cols], rtol=0, atol=1e-3)
    with pytest.raises(ValueError):
        model.evaluate(Box(0, 0, 10, 10))


def test_akima_interpolation_recovers_the_sky() -> None:
    mi, sky = noisy((1536, 1024), seed=2)
    model = fit_background(mi, BackgroundConfig(use_approx=False))
    assert model.coefficients is None and model.algorithm == "AKIMA_SPLINE"
    residual = model.evaluate() - sky
    # interpolation between cell centres (no smoothing) is good to a fraction of sigma
    assert np.max(np.abs(residual)) < 0.15 * SIGMA
    # at the cell centres it reproduces the cell values exactly
    xc = np.round(model.x_centers - 0.5).astype(int)
    yc = np.round(model.y_centers - 0.5).astype(int)
    grid = model.evaluate()
    np.testing.assert_allclose(
        0.25 * (grid[np.ix_(yc, xc)] + grid[np.ix_(yc + 1, xc)] + grid[np.ix_(yc, xc + 1)] + grid[np.ix_(yc + 1, xc + 1)]),
        model.values,
        atol=0.05,
    )


def test_grid_follows_the_lsst_integer_rule() -> None:
    for width, bin_size in ((2048, 128), (4612, 128), (300, 128), (1000, 64), (129, 128), (5, 128)):
        edges = cell_edges(width, bin_size)
        n = math.ceil(width / bin_size)
        assert len(edges) == n + 1 and edges[0] == 0 and edges[-1] == width
        for i in range(n):
            assert edges[i + 1] == min(((i + 1) * width + n // 2) // n, width)
    assert list(np.diff(cell_edges(2048, 128))) == [128] * 16
    ends = cell_edges(4612, 128)
    assert len(ends) == 38 and ends[1] == (4612 + 18) // 37 and set(np.diff(ends)) <= {124, 125}
    assert list(cell_edges(300, 128)) == [0, 100, 200, 300]
    mi, _ = noisy((300, 300), xy0=(10, 20))
    model = fit_background(mi, BackgroundConfig(use_approx=False))
    # centre = orig + size/2 - 0.5 in parent coordinates
    np.testing.assert_allclose(model.x_centers, [10 + 49.5, 10 + 149.5, 10 + 249.5])
    np.testing.assert_allclose(model.y_centers, [20 + 49.5, 20 + 149.5, 20 + 249.5])


def test_cell_values_are_lsst_meanclip() -> None:
    mi, _ = noisy((700, 500), seed=3)
    rng = np.random.default_rng(4)
    # outliers that the clip must reject
    ys, xs = rng.integers(0, 700, 400), rng.integers(0, 500, 400)
    mi.image[ys, xs] += 5000.0
    model = fit_background(mi, BackgroundConfig(bin_size=128))
    xe, ye = model.x_edges, model.y_edges
    for j in range(len(ye) - 1):
        for i in range(len(xe) - 1):
            cell = mi.image[ye[j] : ye[j + 1], xe[i] : xe[i + 1]]
            ref = meanclip(cell, 3.0, 3)
            assert model.values[j, i] == pytest.approx(ref.mean, rel=1e-12, abs=1e-9)
            assert model.errors[j, i] == pytest.approx(math.sqrt(ref.variance / ref.n_used), rel=1e-9)
            assert model.n_pixels[j, i] == cell.size
    median = fit_background(mi, BackgroundConfig(statistic="MEDIAN", use_approx=False))
    cell = mi.image[ye[1] : ye[2], xe[2] : xe[3]].astype(np.float64)
    assert median.values[1, 2] == pytest.approx(np.median(cell), abs=1e-9)


def test_masked_pixels_are_ignored() -> None:
    mi, sky = noisy((1024, 1024), seed=5)
    # a large bright blob (a galaxy halo / ghost) and a block of garbage
    mi.image[300:520, 200:460] += 400.0
    mi.image[800:900, 700:1000] = -30000.0
    clean = mi.copy()
    clean.mask[300:520, 200:460] |= bitmask("DETECTED")
    clean.mask[800:900, 700:1000] |= bitmask("BAD")
    good = fit_background(clean)
    assert np.max(np.abs(good.evaluate() - sky)) < 0.1 * SIGMA
    # the same pixels unmasked spoil the model (the test can fail)
    spoiled = fit_background(mi)
    assert np.max(np.abs(spoiled.evaluate() - sky)) > 1.0 * SIGMA
    # planes not in the ignore list do not exclude pixels
    sat = mi.copy()
    sat.mask[300:520, 200:460] |= bitmask("SAT")
    assert np.max(np.abs(fit_background(sat).evaluate() - sky)) > 1.0 * SIGMA


def test_unmasked_nan_drops_its_cell(caplog: pytest.LogCaptureFixture) -> None:
    mi, sky = noisy((512, 512), seed=6)
    mi.image[10, 10] = np.nan
    with caplog.at_level(logging.WARNING, logger="coadd_core.background"):
        model = fit_background(mi, BackgroundConfig(use_approx=False))
    assert np.isnan(model.values[0, 0]) and np.isfinite(model.values).sum() == 15
    assert "NaN" in caplog.text
    assert np.all(np.isfinite(model.evaluate()))
    mi.mask[10, 10] = bitmask("BAD")
    assert np.isfinite(fit_background(mi).values).all()


def test_all_masked_raises() -> None:
    mi, _ = noisy((256, 256))
    mi.mask[:] = bitmask("NO_DATA")
    with pytest.raises(TooManyMaskedPixelsError):
        fit_background(mi)
    mi.mask[:] = 0
    mi.image[:] = np.nan
    with pytest.raises(TooManyMaskedPixelsError):
        fit_background(mi)
    # one cell with usable pixels is enough for an interpolated (constant) model
    mi.image[:] = 3.0
    mi.mask[:] = bitmask("NO_DATA")
    mi.mask[10:40, 10:40] = 0
    model = fit_background(mi, BackgroundConfig(use_approx=False))
    assert np.isfinite(model.values).sum() == 1
    assert np.all(model.evaluate() == np.float32(3.0))


def test_undersampled_grid_reduces_the_order() -> None:
    mi, sky = noisy((512, 256), seed=7)
    model = fit_background(mi)
    assert model.shape == (4, 2) and model.order == 1
    akima = fit_background(mi, BackgroundConfig(use_approx=False))
    assert np.all(np.isfinite(akima.evaluate()))
    with pytest.raises(ValueError):
        fit_background(mi, BackgroundConfig(undersample_style="THROW_EXCEPTION"))
    with pytest.raises(ValueError):
        BackgroundConfig(approx_order_y=3).order()


@pytest.mark.parametrize("use_approx", [True, False])
def test_dict_round_trip(use_approx: bool) -> None:
    mi, _ = noisy((700, 400), seed=8)
    mi.mask[0:150, 0:150] = bitmask("NO_DATA")  # an empty cell: NaN in the grid
    model = fit_background(mi, BackgroundConfig(use_approx=use_approx, bin_size=100))
    assert np.isnan(model.values[0, 0])
    text = json.dumps(model.to_dict(), allow_nan=False)
    back = BackgroundModel.from_dict(json.loads(text))
    assert back == model
    assert back.bbox == model.bbox
    np.testing.assert_array_equal(back.evaluate(), model.evaluate())
    np.testing.assert_array_equal(back.n_pixels, model.n_pixels)


def test_subtract_in_place() -> None:
    mi, sky = noisy((600, 600), seed=9)
    before = mi.image.copy()
    variance = mi.variance.copy()
    model = subtract_background(mi)
    np.testing.assert_allclose(mi.image, before - model.evaluate(), atol=1e-3)
    np.testing.assert_array_equal(mi.variance, variance)
    assert abs(float(np.mean(mi.image))) < 0.05 * SIGMA
    assert model.mean_level == pytest.approx(float(np.mean(sky)), abs=1.0)
