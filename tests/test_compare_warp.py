"""CompareWarp (ALGORITHMS.md §7; §11 items 8, 9, 10) on synthetic warps with known truth:
static and variable stars, a satellite trail, a ghost blob and an asteroid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from astropy.wcs import WCS

from coadd_core.assemble import CompareWarpConfig, WarpHandle
from coadd_core.assemble.alt_masks import spans_to_mask
from coadd_core.assemble.compare_warp import (
    EpochSourceFluxes,
    psf_weighted_fluxes,
    ArtifactCandidates,
    build_template,
    compare_warp_assemble,
    effective_max_epochs,
    filter_artifacts,
    find_artifacts,
    sharper_than_psf,
)
from coadd_core.assemble.scale_variance import measure_variance_scale
from coadd_core.assemble.template_sources import TemplateSources
from coadd_core.detection import PEAK_DTYPE, DetectionConfig, Footprints, detect_footprints
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask
from coadd_core.photocalib import PhotoCalib
from coadd_core.psf import SIGMA_TO_FWHM, GaussianPsf
from coadd_core.visit_info import VisitInfo

NOISE = 10.0
MODEL_SIGMA = 2.5


def tract_wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cd = [[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]]
    return w


WCS0 = tract_wcs()


def render_points(box: Box, sources, sigma: float) -> np.ndarray:
    """Pixel-integrated Gaussian point sources ``(x, y, flux)``."""
    img = np.zeros(box.shape, np.float64)
    psf = GaussianPsf(sigma, size=2 * int(math.ceil(6 * sigma)) + 1)
    for x, y, flux in sources:
        stamp = psf.compute_image(x, y)
        inter = stamp.bbox.intersection(box)
        if inter.is_empty():
            continue
        img[inter.slices(box)] += flux * stamp.array[inter.slices(stamp.bbox)]
    return img


def render_trail(box: Box, p0, p1, flux_per_px: float, sigma: float) -> np.ndarray:
    """A straight trail through p0 and p1 (crossing the box) with a Gaussian profile."""
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1].astype(float)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    norm = math.hypot(dx, dy)
    d = ((xx - p0[0]) * dy - (yy - p0[1]) * dx) / norm
    return flux_per_px / (math.sqrt(2 * math.pi) * sigma) * np.exp(-0.5 * d * d / sigma**2)


def render_blob(box: Box, x, y, peak, sigma) -> np.ndarray:
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1].astype(float)
    return peak * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)


def make_exposure(box, image, variance, visit, psf, mask=None) -> Exposure:
    return Exposure(
        MaskedImage(image.astype(np.float32), None if mask is None else mask.astype(np.int32),
                    np.full(box.shape, variance, np.float32), xy0=box.xy0),
        wcs=WCS0, psf=psf, photo_calib=PhotoCalib(1.0), visit_info=VisitInfo(visit_id=visit, band="r"),
    )


@dataclass
class Scene:
    box: Box
    direct: list[Exposure]
    psf_matched: list[Exposure]
    static: list[tuple[float, float, float]]
    variables: list[tuple[float, float, list[float]]]
    artifact_pixels: list[np.ndarray]  # per epoch: pixels where an artifact is > 10 sigma
    direct_sigmas: list[float] = field(default_factory=list)

    def handles(self):
        return ([WarpHandle.from_exposure(e) for e in self.direct],
                [WarpHandle.from_exposure(e) for e in self.psf_matched])

    @property
    def visits(self):
        return [e.visit_info.visit_id for e in self.direct]

    def star_zone(self, which="all", radius_fwhm=2.0) -> np.ndarray:
        """Pixels within ``radius_fwhm`` model-PSF FWHM of the stars' centres."""
        yy, xx = np.mgrid[self.box.y0 : self.box.y1 + 1, self.box.x0 : self.box.x1 + 1]
        r = radius_fwhm * SIGMA_TO_FWHM * MODEL_SIGMA
        zone = np.zeros(self.box.shape, bool)
        stars = []
        if which in ("all", "static"):
            stars += [(x, y) for x, y, _ in self.static]
        if which in ("all", "variable"):
            stars += [(x, y) for x, y, _ in self.variables]
        for x, y in stars:
            zone |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        return zone


def build_scene(seed: int = 1, n_epochs: int = 6, size: int = 256, with_artifacts: bool = True,
                detect_warps: bool = False) -> Scene:
    rng = np.random.default_rng(seed)
    box = Box(1000, 2000, 1000 + size - 1, 2000 + size - 1)
    x0, y0 = box.x0, box.y0
    static = [(x0 + 40.3, y0 + 40.7, 5e4), (x0 + 120.2, y0 + 30.1, 2e5), (x0 + 200.6, y0 + 60.4, 3e4),
              (x0 + 60.1, y0 + 200.2, 8e4), (x0 + 215.4, y0 + 215.5, 1.2e5), (x0 + 30.8, y0 + 130.3, 4e4)]
    variables = [
        (x0 + 182.5, y0 + 222.3, [6e4, 2.9e4, 5.5e4, 3.0e4, 6e4, 3.5e4][:n_epochs]),
        (x0 + 210.2, y0 + 130.8, [2.0e4, 4.2e4, 2.1e4, 4.0e4, 2.0e4, 4.1e4][:n_epochs]),
        (x0 + 95.7, y0 + 140.1, [1.5e4, 1.5e4, 1.5e4, 3.1e4, 1.5e4, 1.5e4][:n_epochs]),
        # faint, detected in its one bright epoch only (0.8 mag brighter)
        (x0 + 60.4, y0 + 70.2, [650.0, 310.0, 310.0, 310.0, 310.0, 310.0][:n_epochs]),
    ]
    sigmas = [1.6, 1.8, 2.0, 1.7, 1.9, 2.1, 1.75, 1.85, 1.95, 2.05][:n_epochs]
    direct, matched, artifact_pixels = [], [], []
    for e in range(n_epochs):
        sources = static + [(x, y, f[e]) for x, y, f in variables]
        art_direct = np.zeros(box.shape)
        art_matched = np.zeros(box.shape)
        if with_artifacts:
            if e == 1:  # satellite trail, clear of the stars
                p0, p1 = (x0 + 0.0, y0 + 95.0), (x0 + size, y0 + 105.0)
                art_direct += render_trail(box, p0, p1, 1500.0, sigmas[e])
                art_matched += render_trail(box, p0, p1, 1500.0, MODEL_SIGMA)
            if e == 3:  # ghost blob
                art_direct += render_blob(box, x0 + 170, y0 + 165, 200.0, 9.0)
                art_matched += render_blob(box, x0 + 170, y0 + 165, 200.0, math.hypot(9.0, MODEL_SIGMA))
            if e in (0, 2, 4):  # asteroid moving across epochs
                pos = [(x0 + 150.0 + 12 * e, y0 + 245.0 - 2 * e, 3e4)]
                art_direct += render_points(box, pos, sigmas[e])
                art_matched += render_points(box, pos, MODEL_SIGMA)
        d_img = render_points(box, sources, sigmas[e]) + art_direct + rng.normal(0, NOISE, box.shape)
        m_img = render_points(box, sources, MODEL_SIGMA) + art_matched + rng.normal(0, NOISE, box.shape)
        mask = None
        if detect_warps:
            mi = MaskedImage(d_img.astype(np.float32), None, np.full(box.shape, NOISE**2, np.float32), xy0=box.xy0)
            detect_footprints(mi, sigmas[e], DetectionConfig(threshold_value=5.0))
            mask = mi.mask & ~np.int32(bitmask("EDGE"))  # a warp's EDGE comes from its CCD edges only
        direct.append(make_exposure(box, d_img, NOISE**2, 100 + e, GaussianPsf(sigmas[e]), mask))
        matched.append(make_exposure(box, m_img, NOISE**2, 100 + e, GaussianPsf(MODEL_SIGMA)))
        diff_sigma = NOISE * math.sqrt(1 + 1.0 / n_epochs)
        artifact_pixels.append(art_matched > 10 * diff_sigma)
    return Scene(box, direct, matched, static, variables, artifact_pixels, sigmas)


def aperture_flux(image: np.ndarray, box: Box, x: float, y: float, r: float = 12.0) -> float:
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    return float(image[(xx - x) ** 2 + (yy - y) ** 2 <= r * r].sum())


def clipped_masks(scene: Scene, alt_masks) -> list[np.ndarray]:
    out = []
    for v in scene.visits:
        alt = alt_masks.get(v)
        out.append(np.zeros(scene.box.shape, bool) if alt is None else spans_to_mask(alt.clipped, scene.box))
    return out


def artifact_metrics(scene: Scene, coadd: Exposure, clipped: list[np.ndarray]) -> dict[str, float]:
    """Fraction of artifact pixels clipped in their warp, fraction of them whose coadd
    residual exceeds 3 sigma, and star-zone pixels clipped (static / variable)."""
    art = np.zeros(scene.box.shape, bool)
    n_art = n_clip = 0
    for e, pix in enumerate(scene.artifact_pixels):
        n_art += pix.sum()
        n_clip += (pix & clipped[e]).sum()
        art |= pix
    resid = np.abs(coadd.image[art]) / np.sqrt(coadd.variance[art])
    any_clipped = np.any(clipped, axis=0)
    return {
        "artifact_clipped_fraction": n_clip / max(n_art, 1),
        "artifact_residual_over_3sigma": float((resid > 3).mean()) if art.any() else 0.0,
        "static_star_pixels_clipped": int((any_clipped & scene.star_zone("static")).sum()),
        "variable_star_pixels_clipped": int(sum((c & scene.star_zone("variable")).sum() for c in clipped)),
    }


@pytest.fixture(scope="module")
def scene() -> Scene:
    return build_scene()


@pytest.fixture(scope="module")
def compare_warp_result(scene):
    direct, matched = scene.handles()
    return compare_warp_assemble(direct, matched, scene.box, WCS0, CompareWarpConfig(do_n_image=True))


# --------------------------------------------------------------------------------------
# the synthetic survey
# --------------------------------------------------------------------------------------


def test_artifacts_clipped_and_absent_from_coadd(scene, compare_warp_result):
    res = compare_warp_result
    metrics = artifact_metrics(scene, res.coadd, clipped_masks(scene, res.alt_masks))
    assert metrics["artifact_clipped_fraction"] >= 0.99, metrics
    assert metrics["artifact_residual_over_3sigma"] <= 0.01, metrics
    names = res.coadd.planes.names_from_bits
    trail_pixel = np.argwhere(scene.artifact_pixels[1])[0]
    assert {"CLIPPED", "INEXACT_PSF"} <= set(names(int(res.coadd.mask[tuple(trail_pixel)])))


def test_no_star_is_clipped(scene, compare_warp_result):
    metrics = artifact_metrics(scene, compare_warp_result.coadd, clipped_masks(scene, compare_warp_result.alt_masks))
    assert metrics["static_star_pixels_clipped"] == 0, metrics
    assert metrics["variable_star_pixels_clipped"] == 0, metrics
    zone = scene.star_zone()
    assert not np.any(compare_warp_result.coadd.mask[zone] & np.int32(bitmask("CLIPPED")))


def test_static_star_photometry(scene, compare_warp_result):
    coadd = compare_warp_result.coadd
    for x, y, flux in scene.static:
        assert aperture_flux(coadd.image, scene.box, x, y) == pytest.approx(flux, rel=0.01)


def test_variable_star_flux_is_the_mean(scene, compare_warp_result):
    coadd = compare_warp_result.coadd
    bright = [v for v in scene.variables if np.mean(v[2]) > 1e4]  # 2% needs S/N > 100
    assert len(bright) == 3
    for x, y, fluxes in bright:
        assert aperture_flux(coadd.image, scene.box, x, y) == pytest.approx(np.mean(fluxes), rel=0.02)


def test_result_products(scene, compare_warp_result):
    res = compare_warp_result
    assert res.template.bbox == scene.box and res.coadd.bbox == scene.box
    assert res.epoch_count.shape == scene.box.shape and res.epoch_count.max() >= 1
    assert res.n_image is not None and res.n_image.max() == len(scene.direct)
    assert set(res.alt_masks) == set(scene.visits)
    assert res.coadd.psf is not None and res.coadd.psf.sigma == pytest.approx(1.85, abs=0.15)
    v = res.coadd.variance
    assert np.all(v > 0) and not np.any(np.isnan(v))


# --------------------------------------------------------------------------------------
# §11 items 8, 9, 10 on small focused data
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, expect", [(2, 0), (3, 1), (5, 2), (10, 2), (50, 3), (100, 5)])
def test_effective_max_epochs_table(n, expect):
    assert effective_max_epochs(n, CompareWarpConfig()) == expect


SMALL = Box(0, 0, 119, 119)


def small_warps(n, rng, extra=None, sigma=MODEL_SIGMA, static=((30.2, 30.7, 4e4),)):
    """``n`` epochs of PSF-matched-like warps; ``extra(e)`` adds epoch-specific sources."""
    warps = []
    for e in range(n):
        sources = list(static) + (extra(e) if extra else [])
        img = render_points(SMALL, sources, sigma) + rng.normal(0, NOISE, SMALL.shape)
        warps.append(make_exposure(SMALL, img, NOISE**2, e + 1, GaussianPsf(sigma)))
    return warps


def run_small(warps):
    hs = [WarpHandle.from_exposure(w) for w in warps]
    return compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig())


TRANSIENT = (80.3, 85.6, 8e3)


@pytest.mark.parametrize("n", [3, 5])
def test_single_epoch_transient_is_clipped(n):
    rng = np.random.default_rng(20 + n)
    warps = small_warps(n, rng, extra=lambda e: [TRANSIENT] if e == 1 else [])
    res = run_small(warps)
    clipped = spans_to_mask(res.alt_masks[2].clipped, SMALL)
    x, y = int(round(TRANSIENT[0])), int(round(TRANSIENT[1]))
    assert clipped[y, x] and clipped[y - 2 : y + 3, x - 2 : x + 3].all()
    for v in res.alt_masks:
        if v != 2:
            assert len(res.alt_masks[v].clipped) == 0
    others = np.mean([w.image[y, x] for i, w in enumerate(warps) if i != 1])
    assert res.coadd.image[y, x] == pytest.approx(others, abs=1e-3)
    names = set(res.coadd.planes.names_from_bits(int(res.coadd.mask[y, x])))
    assert {"CLIPPED", "INEXACT_PSF"} <= names


def test_two_epochs_nothing_clipped():
    rng = np.random.default_rng(30)
    res = run_small(small_warps(2, rng, extra=lambda e: [TRANSIENT] if e == 1 else []))
    assert all(len(a.clipped) == 0 for a in res.alt_masks.values())
    assert not np.any(res.coadd.mask & np.int32(bitmask("CLIPPED")))


def test_source_deviating_in_every_epoch_is_kept():
    rng = np.random.default_rng(31)
    flux = lambda e: 2e4 if e % 2 == 0 else 2e3  # noqa: E731
    warps = small_warps(6, rng, extra=lambda e: [(80.3, 85.6, flux(e))])
    cfg = CompareWarpConfig(do_preserve_contained_by_source=False)
    hs = [WarpHandle.from_exposure(w) for w in warps]
    res = compare_warp_assemble(hs, hs, SMALL, WCS0, cfg)
    assert res.epoch_count[85, 80] == 6
    assert all(len(a.clipped) == 0 for a in res.alt_masks.values())
    assert aperture_flux(res.coadd.image, SMALL, 80.3, 85.6) == pytest.approx(np.mean([flux(e) for e in range(6)]),
                                                                             rel=0.03)


def test_bright_static_star_residual_in_one_epoch_is_preserved():
    rng = np.random.default_rng(32)
    star = (60.4, 60.2, 3e5)
    warps = small_warps(5, rng, static=(), extra=lambda e: [(star[0], star[1], star[2] * (1.15 if e == 2 else 1.0))])
    hs = [WarpHandle.from_exposure(w) for w in warps]
    preserved = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig())
    assert all(len(a.clipped) == 0 for a in preserved.alt_masks.values())
    # without the template-footprint rescue the variable-source rule keeps it too; with neither it is clipped
    variable_only = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(do_preserve_contained_by_source=False))
    assert all(len(a.clipped) == 0 for a in variable_only.alt_masks.values())
    clipped = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(
        do_preserve_contained_by_source=False, do_preserve_variable_sources=False))
    assert len(clipped.alt_masks[3].clipped) > 0


def test_faint_variable_seen_at_its_maximum_is_kept_and_a_transient_beside_it_clipped():
    """A star near the single-epoch detection limit (flux 400: 4.5 sigma PSF-weighted per
    epoch, 11 sigma in the six-epoch template) that brightens twentyfold in one epoch
    deviates in that epoch only, like an artifact: LSST's rule clips it; ours keeps it,
    because the template holds the star without that epoch.  A transient of the same
    flux on empty sky, and one on the star's flank 2 PSF sigma off its centre, are
    clipped."""
    rng = np.random.default_rng(43)
    star = (60.3, 40.6)
    flank = (30.2 + 2 * MODEL_SIGMA, 90.4)
    def extra(e):  # noqa: E306
        bright = e == 2
        return [(*star, 8e3 if bright else 400.0), (30.2, 90.4, 400.0)] + (
            [TRANSIENT, (*flank, 8e3)] if bright else [])
    warps = small_warps(6, rng, extra=extra)
    hs = [WarpHandle.from_exposure(w) for w in warps]
    ours = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig())
    lsst = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(do_preserve_variable_sources=False))
    mine, theirs = (spans_to_mask(r.alt_masks[3].clipped, SMALL) for r in (ours, lsst))
    at = lambda xy: (int(round(xy[1])), int(round(xy[0])))  # noqa: E731
    assert theirs[at(star)] and not mine[at(star)]
    assert mine[at(TRANSIENT)] and theirs[at(TRANSIENT)]
    assert mine[at(flank)]
    assert all(len(ours.alt_masks[v].clipped) == 0 for v in (1, 2, 4, 5, 6))


def render_moffat(box: Box, x: float, y: float, flux: float, fwhm: float, beta: float = 2.5) -> np.ndarray:
    """A round Moffat profile (pixel centres): a bright star with a heavy wing."""
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1].astype(float)
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    return flux * (beta - 1.0) / (math.pi * alpha**2) * (1.0 + ((xx - x) ** 2 + (yy - y) ** 2) / alpha**2) ** -beta


def test_faint_variable_on_a_bright_stars_wing_is_kept_and_a_transient_across_it_clipped():
    """A faint variable 7 PSF sigma from a bright star with a heavy wing, brightening
    twentyfold in one epoch: the wing bends the template so that a difference of
    Gaussians has no peak at the variable and the wing's light would pass for the
    variable's, so it was clipped.  With the star's azimuthal profile taken out first it
    is kept; a transient as bright at the same distance across the star is clipped."""
    rng = np.random.default_rng(44)
    star = (40.3, 60.6)
    r = 7 * MODEL_SIGMA
    variable, transient = (star[0] + r, star[1] + 0.4), (star[0] - r * 0.6, star[1] - r * 0.8)
    halo = render_moffat(SMALL, *star, 3e6, SIGMA_TO_FWHM * MODEL_SIGMA).astype(np.float32)
    def extra(e):  # noqa: E306
        return [(*variable, 8e3 if e == 2 else 400.0)] + ([(*transient, 8e3)] if e == 2 else [])
    warps = small_warps(6, rng, extra=extra)
    for w in warps:
        w.image[...] += halo
    hs = [WarpHandle.from_exposure(w) for w in warps]
    # the star's template footprint would cover both (LSST's rescue): the variable rule
    # alone; and its wing fills this small image, which the empirical variance rescaling
    # would take for noise
    ours = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(
        do_preserve_contained_by_source=False, do_scale_warp_variance=False))
    no_profiles = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(
        do_preserve_contained_by_source=False, do_scale_warp_variance=False, variable_halo_min_snr=1e12))
    mine, before = (spans_to_mask(res.alt_masks[3].clipped, SMALL) for res in (ours, no_profiles))
    at = lambda xy: (int(round(xy[1])), int(round(xy[0])))  # noqa: E731
    assert before[at(variable)] and not mine[at(variable)]
    assert mine[at(transient)] and before[at(transient)]
    assert all(len(ours.alt_masks[v].clipped) == 0 for v in (1, 2, 4, 5, 6))


def test_round_profiles_are_subtracted_and_elongated_sources_left_alone():
    """A faint star on a bright round star's wing keeps its own PSF-weighted flux (within
    5 %) once the bright star's azimuthal profile is taken out, where the wing alone
    would add several times its flux; an elongated bright source (a galaxy) is left as is."""
    from coadd_core.assemble.template_sources import subtract_round_profiles

    box = Box(0, 0, 159, 159)
    star, faint = (70.4, 80.3), (70.4 + 7 * MODEL_SIGMA, 80.3 - 2.0)
    wing = render_moffat(box, *star, 3e6, SIGMA_TO_FWHM * MODEL_SIGMA)
    image = (wing + render_points(box, [(*faint, 2000.0)], MODEL_SIGMA)).astype(np.float32)
    good = np.ones(box.shape, bool)
    at = np.array([[round(faint[0]), round(faint[1])]])
    alone = psf_weighted_fluxes(render_points(box, [(*faint, 2000.0)], MODEL_SIGMA), at, box, MODEL_SIGMA)[0]
    assert psf_weighted_fluxes(wing, at, box, MODEL_SIGMA)[0] > 3 * alone
    zone = subtract_round_profiles(image, good, 1.0, np.array([[80, 70]]), MODEL_SIGMA, CompareWarpConfig())
    assert zone[at[0, 1], at[0, 0]] and not zone[80, 70]  # the core is not the zone
    assert psf_weighted_fluxes(image, at, box, MODEL_SIGMA)[0] == pytest.approx(alone, rel=0.05)
    yy, xx = np.mgrid[0:160, 0:160]
    galaxy = (3e4 * np.exp(-0.5 * (((xx - 80) / 6.0) ** 2 + ((yy - 80) / 3.0) ** 2))).astype(np.float32)
    before = galaxy.copy()
    zone = subtract_round_profiles(galaxy, good, 1.0, np.array([[80, 80]]), MODEL_SIGMA, CompareWarpConfig())
    assert not zone.any() and np.array_equal(galaxy, before)


def test_sharp_ray_left_by_the_isr_is_clipped_and_a_star_seen_sharper_is_not():
    """A two-pixel ray (600 per pixel, 60 sigma) in one direct warp: its PSF-matched
    version spreads to 3 sigma per pixel, below the 7.5-sigma seeds, so only the sharp
    pass on the direct warp finds it.  A star seen with half the template's PSF width in
    one epoch deviates there by 25 sigma, but its template flux explains that, so it is
    kept even without LSST's containment rescue and the variable rule."""
    rng = np.random.default_rng(45)
    ray = [(70, 30), (71, 30)]
    star, sharp_sigma = (40.3, 90.6, 3000.0), 1.2
    matched = small_warps(6, rng, extra=lambda e: [star])
    direct = []
    for e, w in enumerate(matched):
        image = w.image.astype(np.float64) - render_points(SMALL, [star], MODEL_SIGMA)
        image += render_points(SMALL, [star], sharp_sigma if e == 2 else MODEL_SIGMA)
        if e == 4:
            for x, y in ray:
                image[y, x] += 600.0
                w.image[...] += (600.0 * render_points(SMALL, [(x, y, 1.0)], MODEL_SIGMA)).astype(np.float32)
        direct.append(make_exposure(SMALL, image, NOISE**2, e + 1, GaussianPsf(sharp_sigma if e == 2 else MODEL_SIGMA)))
    d_h, m_h = [WarpHandle.from_exposure(w) for w in direct], [WarpHandle.from_exposure(w) for w in matched]
    on = compare_warp_assemble(d_h, m_h, SMALL, WCS0, CompareWarpConfig(
        do_preserve_contained_by_source=False, do_preserve_variable_sources=False))
    off = compare_warp_assemble(d_h, m_h, SMALL, WCS0, CompareWarpConfig(do_clip_sharp_artifacts=False))
    clipped_on, clipped_off = (spans_to_mask(r.alt_masks[5].clipped, SMALL) for r in (on, off))
    assert all(clipped_on[y, x] for x, y in ray) and not any(clipped_off[y, x] for x, y in ray)
    assert all(len(on.alt_masks[v].clipped) == 0 for v in (1, 2, 3, 4, 6))  # the star is kept
    assert on.coadd.image[30, 70] < 5 * NOISE / math.sqrt(5) < off.coadd.image[30, 70]


def test_ray_on_a_galaxy_is_clipped_against_the_sharper_epochs_and_a_variable_is_not():
    """A two-pixel ray (200 per pixel, 20 sigma) 3 px from the centre of a bright galaxy,
    in an epoch of middling seeing.  The galaxy's template flux explains far more than
    the ray (its PSF-mismatch bound is ~3000), and the ray lies inside the galaxy's
    300-sigma template footprint, so neither the template-flux bound nor LSST's rules
    clip it.  The sharper epochs show the galaxy's core at least as bright but not the
    ray, which is also sharper than the epoch's PSF: it is clipped, alone.  A star
    twice as bright in the same epoch deviates by as much, but with the PSF's shape:
    kept."""
    rng = np.random.default_rng(46)
    sigmas = (1.4, 1.6, 1.8, 2.0, 2.2, 2.4)
    galaxy, galaxy_sigma = (60.3, 60.6, 8e3), 2.0
    variable = (90.4, 30.3, 4e3)
    ray, ray_epoch = [(63, 61), (64, 61)], 4
    matched, direct = [], []
    for e, s in enumerate(sigmas):
        bright = [(variable[0], variable[1], variable[2] * (2.0 if e == ray_epoch else 1.0))]
        noise = rng.normal(0, NOISE, SMALL.shape)
        m_img = render_points(SMALL, [galaxy], math.hypot(galaxy_sigma, MODEL_SIGMA))
        m_img += render_points(SMALL, bright, MODEL_SIGMA) + noise
        d_img = render_points(SMALL, [galaxy], math.hypot(galaxy_sigma, s))
        d_img += render_points(SMALL, bright, s) + noise
        if e == ray_epoch:
            for x, y in ray:
                d_img[y, x] += 200.0
                m_img += 200.0 * render_points(SMALL, [(x, y, 1.0)], MODEL_SIGMA)
        matched.append(make_exposure(SMALL, m_img, NOISE**2, e + 1, GaussianPsf(MODEL_SIGMA)))
        direct.append(make_exposure(SMALL, d_img, NOISE**2, e + 1, GaussianPsf(s)))
    d_h, m_h = [WarpHandle.from_exposure(w) for w in direct], [WarpHandle.from_exposure(w) for w in matched]
    on = compare_warp_assemble(d_h, m_h, SMALL, WCS0, CompareWarpConfig())
    off = compare_warp_assemble(d_h, m_h, SMALL, WCS0, CompareWarpConfig(sharp_compare_sharper_epochs=False))
    clipped_on, clipped_off = (spans_to_mask(r.alt_masks[ray_epoch + 1].clipped, SMALL) for r in (on, off))
    assert all(clipped_on[y, x] for x, y in ray) and not any(clipped_off[y, x] for x, y in ray)
    # only the ray and its 2-px grown edge: not the galaxy's core, not the variable
    assert clipped_on.sum() <= (2 + 4) * (1 + 4)
    assert not clipped_on[60, 60] and not clipped_on[30, 90]
    assert all(len(on.alt_masks[v].clipped) == 0 for v in on.alt_masks if v != ray_epoch + 1)
    # the coadd there is the other epochs' mean; the plain comparison keeps the ray's share
    x, y = ray[0]
    others = np.mean([w.image[y, x] for i, w in enumerate(direct) if i != ray_epoch])
    assert on.coadd.image[y, x] == pytest.approx(others, abs=1e-3)
    assert off.coadd.image[y, x] - others > 200.0 / len(sigmas) - 2 * NOISE


def test_sharper_than_psf_tells_a_ray_from_a_change_of_brightness():
    """On a warp of PSF sigma 2: a star brightened by 20 sigma at its peak has the PSF's
    shape (not sharper); a 2-pixel ray of the same peak is.  The sharper epochs' own
    deviation (here a galaxy's core, 4 px away) is taken out first."""
    box = Box(0, 0, 39, 39)
    rng = np.random.default_rng(47)
    psf = GaussianPsf(2.0, size=15)
    k = psf.kernel_image()
    c = k.shape[0] // 2
    ratios = (k[c, c + 1] / k[c, c], k[c + 1, c] / k[c, c], k[c + 1, c + 1] / k[c, c])
    sharper = np.full(box.shape, np.nan, np.float32)
    sharper[:, :] = render_blob(box, 24, 20, 300.0, 2.0)
    results = []
    for kind in ("star", "ray"):
        image = rng.normal(0, NOISE, box.shape) + sharper
        if kind == "star":
            image += render_blob(box, 20, 20, 200.0, 2.0)
        else:
            image[20, 19:21] += 200.0
        diff = MaskedImage.empty(box)
        diff.image[...] = image
        diff.variance[...] = NOISE**2 / 2  # two epochs' worth is twice this
        cands = ArtifactCandidates(np.array([[y, 17, 22] for y in range(18, 23)], np.int32), np.zeros(5, np.int32), 1)
        results.append(bool(sharper_than_psf(cands, diff, sharper, ratios, 2.5)[0]))
    assert results == [False, True]


def test_filter_artifacts_spatial_rule():
    cfg = CompareWarpConfig()
    box = Box(0, 0, 9, 9)
    spans = np.array([[2, 0, 9], [3, 0, 9]], np.int32)  # one footprint of 20 pixels
    cands = ArtifactCandidates(spans, np.zeros(2, np.int32), 1)
    n_image = np.full(box.shape, 10, np.int32)
    epoch = np.zeros(box.shape, np.int32)
    epoch[2, :] = 1
    epoch[3, :] = 5  # persistent in half the footprint: frac 0.5 is not > 0.5
    assert filter_artifacts(cands, epoch, n_image, box, cfg).n == 0
    epoch[3, 0] = 2  # 11 of 20 transient pixels
    assert filter_artifacts(cands, epoch, n_image, box, cfg).n == 1


def test_missing_psf_matched_warp_gives_no_data():
    rng = np.random.default_rng(33)
    warps = small_warps(4, rng)
    hs = [WarpHandle.from_exposure(w) for w in warps]
    template = build_template(hs, SMALL, WCS0)
    found = find_artifacts(template, [hs[0], None, hs[2], hs[3]], CompareWarpConfig())
    alt = found.alt_masks[1]
    assert spans_to_mask(alt.no_data, SMALL).all() and len(alt.clipped) == 0
    assert found.n_image.max() == 3


def test_template_is_psf_matched_clipped_mean():
    rng = np.random.default_rng(34)
    warps = small_warps(5, rng, extra=lambda e: [TRANSIENT] if e == 0 else [])
    hs = [WarpHandle.from_exposure(w) for w in warps]
    template = build_template(hs, SMALL, WCS0)
    assert isinstance(template.psf, GaussianPsf) and template.psf.sigma == MODEL_SIGMA
    x, y = int(round(TRANSIENT[0])), int(round(TRANSIENT[1]))
    assert abs(template.image[y, x]) < 5 * NOISE  # the transient is clipped from the template
    with pytest.raises(RuntimeError):
        build_template([], SMALL, WCS0)


def test_variance_scale_measures_noise():
    rng = np.random.default_rng(35)
    img = rng.normal(0, 2 * NOISE, SMALL.shape)
    mi = MaskedImage(img.astype(np.float32), None, np.full(SMALL.shape, NOISE**2, np.float32))
    assert measure_variance_scale(mi) == pytest.approx(4.0, rel=0.1)


def test_filter_artifacts_local_epoch_rule_decides_where_the_stack_is_deep():
    """A 1-of-N footprint crossing from 2-deep into 4-deep coverage: LSST's rule (one
    effective maximum from the mean depth, 0 here) keeps everything; the local rule judges
    the deep pixels and clips the footprint.  Footprints only 2 deep stay unclipped."""
    box = Box(0, 0, 19, 9)
    spans = np.array([[4, 0, 19], [5, 0, 19]], np.int32)
    cands = ArtifactCandidates(spans, np.zeros(2, np.int32), 1)
    n_image = np.full(box.shape, 2, np.int32)
    n_image[:, 17:] = 4  # 6 of the 40 pixels are 4 deep
    epoch = np.zeros(box.shape, np.int32)
    epoch[4:6, :] = 1
    lsst = CompareWarpConfig(local_epoch_rule=False)
    assert effective_max_epochs(float(n_image[4:6].mean()), lsst) == 0  # mean depth 2.3
    assert filter_artifacts(cands, epoch, n_image, box, lsst).n == 0
    assert filter_artifacts(cands, epoch, n_image, box, CompareWarpConfig()).n == 1
    shallow = np.full(box.shape, 2, np.int32)
    assert filter_artifacts(cands, epoch, shallow, box, CompareWarpConfig()).n == 0


def test_hysteresis_footprint_of_a_bright_star_residual_keeps_the_containment_rescue():
    """Detection seeds at 7.5 sigma and extends to 2.5 sigma; the containment test uses the
    seed pixels, so a one-epoch residual of a bright star stays preserved even though its
    footprint reaches beyond the star's template footprint, while a faint transient's
    footprint (all of it) is clipped down to its faint rim."""
    box = Box(0, 0, 19, 19)
    # template footprint: a 9 x 9 square around (10, 10)
    labels = np.zeros(box.shape, np.int32)
    labels[6:15, 6:15] = 1
    tfp = Footprints.from_mask(labels > 0, box, np.zeros(0, dtype=PEAK_DTYPE))
    spans = np.array([[y, 4, 16] for y in range(4, 17)], np.int32)  # 13 x 13: beyond the template footprint
    cands = ArtifactCandidates(spans, np.zeros(len(spans), np.int32), 1)
    epoch = np.zeros(box.shape, np.int32)
    epoch[4:17, 4:16 + 1] = 1
    n_image = np.full(box.shape, 6, np.int32)
    cfg = CompareWarpConfig()
    _, y, x = cands.pixels()
    core = (np.abs(y - 10) <= 2) & (np.abs(x - 10) <= 2)
    assert filter_artifacts(cands, epoch, n_image, box, cfg, tfp).n == 1  # whole footprint: not contained
    assert filter_artifacts(cands, epoch, n_image, box, cfg, tfp, core).n == 0  # core contained: rescued
    outside = (np.abs(y - 5) <= 1) & (np.abs(x - 5) <= 1)
    assert filter_artifacts(cands, epoch, n_image, box, cfg, tfp, outside).n == 1


def test_faint_rim_of_a_one_epoch_ghost_is_clipped_with_its_core():
    """A soft-edged ghost in one of five epochs: LSST's 7.5-sigma footprints leave most of
    its rim (pixels between 3.5 and 7.5 sigma) in the coadd; footprints grown down to 2.5 sigma
    from the same seeds clip it, and nothing else is clipped."""
    from scipy import ndimage

    rng = np.random.default_rng(41)
    yy, xx = np.mgrid[0:120, 0:120]
    disk = (np.hypot(xx - 62.3, yy - 58.7) <= 25).astype(float)
    ghost = 12.0 * NOISE * ndimage.gaussian_filter(disk, 4.0)  # 12 sigma inside, soft rim
    warps = small_warps(5, rng)
    warps[2].image[...] += ghost.astype(np.float32)
    hs = [WarpHandle.from_exposure(w) for w in warps]
    lsst_detect = CompareWarpConfig().detect.model_copy(update={"threshold_value": 7.5, "include_threshold_multiplier": 1.0})
    # (the ghost covers a seventh of this small image: the empirical variance rescaling
    # would take it for noise, so it is off for both)
    ours = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(do_scale_warp_variance=False))
    lsst = compare_warp_assemble(hs, hs, SMALL, WCS0, CompareWarpConfig(detect=lsst_detect, do_scale_warp_variance=False, do_clip_sharp_artifacts=False))
    rim = (ghost > 3.5 * NOISE) & (ghost < 7.5 * NOISE)
    clipped = {name: spans_to_mask(r.alt_masks[3].clipped, SMALL) for name, r in (("ours", ours), ("lsst", lsst))}
    assert clipped["lsst"][ghost > 9 * NOISE].all() and clipped["ours"][ghost > 9 * NOISE].all()
    assert clipped["lsst"][rim].mean() < 0.3  # measured 0.14
    assert clipped["ours"][rim].mean() > 0.99
    for v in (1, 2, 4, 5):
        assert len(ours.alt_masks[v].clipped) == 0
    # the ghost flux left in the coadd: the rim's, down by the clipping
    left = {name: float((r.coadd.image - sum(w.image for i, w in enumerate(warps) if i != 2) / 4)[rim].sum())
            for name, r in (("ours", ours), ("lsst", lsst))}
    assert abs(left["ours"]) < 0.2 * left["lsst"]


def test_psf_weighted_flux_and_the_other_epochs_snr():
    """The PSF-weighted flux of a noiseless point source of the PSF's width is its flux
    (to 1 %: the source is pixel-integrated, the weights sampled);
    the leave-one-out S/N uses the other epochs' fluxes with inverse-variance weights."""
    box = Box(10, 20, 89, 99)
    image = render_points(box, [(40.0, 50.0, 1000.0)], MODEL_SIGMA)
    peaks = np.array([[40, 50], [12, 22]])  # the second one's stamp leaves the image
    flux = psf_weighted_fluxes(image, peaks, box, MODEL_SIGMA)
    assert flux[0] == pytest.approx(1000.0, rel=0.01) and np.isnan(flux[1])
    template = MaskedImage(np.zeros(box.shape, np.float32), None, np.ones(box.shape, np.float32), xy0=box.xy0)
    fluxes = EpochSourceFluxes(template, TemplateSources(peaks[:1], flux[:1]), 3, MODEL_SIGMA)
    fluxes.flux[:, 0] = [900.0, 100.0, 300.0]
    fluxes.variance[:, 0] = [1.0e4, 1.0e4, 3.0e4]
    # without epoch 0: (100/1e4 + 300/3e4) / (1/1e4 + 1/3e4) = 150, sigma 1/sqrt(4/3e4)
    assert fluxes.others_snr(0, np.array([0]))[0] == pytest.approx(150.0 * math.sqrt(4 / 3.0e4))
