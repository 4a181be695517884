"""PSF models: normalisation, centring, pixel integration, FWHM, sub-pixel placement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate

from coadd_core.psf import (
    SIGMA_TO_FWHM,
    GaussianPsf,
    ImagePsf,
    MoffatPsf,
    Psf,
    adaptive_moments,
)


def _psfs() -> list[Psf]:
    return [
        GaussianPsf(2.0),
        GaussianPsf(1.3, size=15),
        MoffatPsf(5.0, beta=3.0),
        MoffatPsf(3.0),
        ImagePsf(GaussianPsf(2.5).kernel_image()),
        ImagePsf(MoffatPsf(4.0, beta=2.5, size=33).kernel_image()),
    ]


def _centroid(array: np.ndarray, x0: int = 0, y0: int = 0) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : array.shape[0], 0 : array.shape[1]]
    total = array.sum()
    return float((array * (xx + x0)).sum() / total), float((array * (yy + y0)).sum() / total)


def _half_max_fwhm(array: np.ndarray) -> float:
    """Diameter where the azimuthal profile of a centred stamp falls to half its peak."""
    c = array.shape[0] // 2
    yy, xx = np.mgrid[0 : array.shape[0], 0 : array.shape[1]] - c
    r = np.round(np.hypot(xx, yy), 9).ravel()
    radii = np.unique(r)
    profile = np.array([array.ravel()[r == v].mean() for v in radii])
    i = int(np.argmax(profile < profile[0] / 2))
    return 2.0 * float(np.interp(profile[0] / 2, profile[i - 1 : i + 1][::-1], radii[i - 1 : i + 1][::-1]))


@pytest.mark.parametrize("psf", _psfs(), ids=repr)
def test_kernel_image_unit_sum_odd_square_centred(psf: Psf) -> None:
    k = psf.kernel_image(123.0, 456.0)
    assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.shape[0] == psf.size
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    c = k.shape[0] // 2
    cx, cy = _centroid(k, -c, -c)
    assert abs(cx) < 1e-9 and abs(cy) < 1e-9
    assert np.unravel_index(np.argmax(k), k.shape) == (c, c)


@pytest.mark.parametrize("psf", _psfs(), ids=repr)
@pytest.mark.parametrize("pos", [(10.3, -5.7), (0.5, 0.49), (1000.0, 2000.25), (-3.45, 7.05)])
def test_compute_image_sub_pixel_centroid(psf: Psf, pos: tuple[float, float]) -> None:
    stamp = psf.compute_image(*pos)
    assert stamp.array.shape == stamp.bbox.shape
    assert stamp.array.sum() == pytest.approx(1.0, abs=1e-12)
    assert stamp.bbox.contains_point(*pos)
    assert stamp.bbox.center == (math.floor(pos[0] + 0.5), math.floor(pos[1] + 0.5))
    cx, cy = _centroid(stamp.array, stamp.bbox.x0, stamp.bbox.y0)
    assert cx == pytest.approx(pos[0], abs=0.01)
    assert cy == pytest.approx(pos[1], abs=0.01)


def test_compute_image_at_pixel_centre_equals_kernel_image() -> None:
    for psf in _psfs():
        stamp = psf.compute_image(7.0, -3.0)
        np.testing.assert_allclose(stamp.array, psf.kernel_image(), rtol=0, atol=1e-15)


def test_gaussian_is_pixel_integrated() -> None:
    sigma = 0.9
    psf = GaussianPsf(sigma, size=11)
    k = psf.kernel_image()

    def pixel(i: int, j: int) -> float:
        g = lambda y, x: math.exp(-(x * x + y * y) / (2 * sigma**2))  # noqa: E731
        return integrate.dblquad(g, i - 0.5, i + 0.5, j - 0.5, j + 0.5, epsabs=1e-13)[0]

    # ratios to the centre pixel avoid depending on the truncation normalisation
    for i, j in [(1, 0), (1, 1), (2, 1), (3, 0)]:
        assert k[5 + j, 5 + i] / k[5, 5] == pytest.approx(pixel(i, j) / pixel(0, 0), rel=1e-9)
    point_sampled = math.exp(-1 / (2 * sigma**2))
    assert abs(k[5, 6] / k[5, 5] - point_sampled) > 0.01


def test_moffat_is_pixel_integrated() -> None:
    psf = MoffatPsf(2.0, beta=3.0, size=11)
    k = psf.kernel_image()
    alpha = psf.alpha

    def pixel(i: int, j: int) -> float:
        f = lambda y, x: (1 + (x * x + y * y) / alpha**2) ** -3.0  # noqa: E731
        return integrate.dblquad(f, i - 0.5, i + 0.5, j - 0.5, j + 0.5, epsabs=1e-13)[0]

    for i, j in [(1, 0), (1, 1), (2, 0), (4, 3)]:
        assert k[5 + j, 5 + i] / k[5, 5] == pytest.approx(pixel(i, j) / pixel(0, 0), rel=1e-7)


def test_gaussian_fwhm_matches_parameter() -> None:
    for sigma in (1.5, 2.0, 3.0):
        psf = GaussianPsf(sigma)
        assert psf.fwhm == pytest.approx(SIGMA_TO_FWHM * sigma)
        k = psf.kernel_image()
        c = k.shape[0] // 2
        yy, xx = np.mgrid[0 : k.shape[0], 0 : k.shape[1]] - c
        # the pixel box adds exactly 1/12 px^2 to the unweighted variance
        var = float((k * xx * xx).sum()) - 1.0 / 12.0
        assert SIGMA_TO_FWHM * math.sqrt(var) == pytest.approx(psf.fwhm, rel=0.01)
    wide = GaussianPsf(4.5)
    assert _half_max_fwhm(wide.kernel_image()) == pytest.approx(wide.fwhm, rel=0.01)


@pytest.mark.parametrize("beta", [2.5, 4.765])
def test_moffat_fwhm_matches_parameter(beta: float) -> None:
    psf = MoffatPsf(10.0, beta=beta)
    assert psf.fwhm == 10.0
    assert _half_max_fwhm(psf.kernel_image()) == pytest.approx(10.0, rel=0.01)


def test_second_moments_and_sigma() -> None:
    g = GaussianPsf(2.2)
    assert g.second_moments() == (2.2**2, 2.2**2, 0.0)
    assert g.sigma == 2.2
    # adaptive moments of the pixel image: the sigma plus the pixel's 1/12 px^2
    img = ImagePsf.from_psf(g)
    assert img.sigma == pytest.approx(math.sqrt(2.2**2 + 1 / 12), rel=2e-3)
    assert img.fwhm == pytest.approx(SIGMA_TO_FWHM * img.sigma)
    ixx, iyy, ixy = MoffatPsf(4.0).second_moments()
    assert ixx == pytest.approx(iyy, rel=1e-9) and abs(ixy) < 1e-9


def test_adaptive_moments_of_elliptical_gaussian() -> None:
    yy, xx = np.mgrid[-20:21, -20:21].astype(float)
    cov = np.array([[6.0, 1.5], [1.5, 3.0]])
    inv = np.linalg.inv(cov)
    xs, ys = xx - 0.3, yy + 0.2
    img = np.exp(-0.5 * (inv[0, 0] * xs**2 + 2 * inv[0, 1] * xs * ys + inv[1, 1] * ys**2))
    xc, yc, ixx, iyy, ixy = adaptive_moments(img)
    assert (xc, yc) == pytest.approx((0.3, -0.2), abs=1e-6)
    assert (ixx, iyy, ixy) == pytest.approx((6.0, 3.0, 1.5), rel=1e-5)


@pytest.mark.parametrize("psf", _psfs(), ids=repr)
def test_dict_round_trip_is_lossless_through_json(psf: Psf) -> None:
    data = json.loads(json.dumps(psf.to_dict()))
    back = Psf.from_dict(data)
    assert type(back) is type(psf)
    assert back == psf
    assert np.array_equal(back.kernel_image(), psf.kernel_image())
    stamp_a, stamp_b = psf.compute_image(3.3, 4.4), back.compute_image(3.3, 4.4)
    assert stamp_a.bbox == stamp_b.bbox and np.array_equal(stamp_a.array, stamp_b.array)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        GaussianPsf(2.0, size=10)
    with pytest.raises(ValueError):
        GaussianPsf(0.0)
    with pytest.raises(ValueError, match="beta"):
        MoffatPsf(3.0, beta=1.0)
    with pytest.raises(ValueError, match="odd square"):
        ImagePsf(np.ones((4, 4)))
    with pytest.raises(ValueError, match="unknown PSF type"):
        Psf.from_dict({"type": "NoSuchPsf"})


def test_psf_types_of_later_stages_load_on_demand() -> None:
    """A coadd's PSF read back in a fresh process rebuilds without importing its module first."""
    import subprocess
    import sys

    code = (
        "import coadd_core.psf as p\n"
        "try:\n"
        "    p.Psf.from_dict({'type': 'CoaddPsf'})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, 'unknown PSF type' in str(e))\n"
        "print('CoaddPsf' in p.Psf._registry)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "True" and "True" not in out[:-1]
