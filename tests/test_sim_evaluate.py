"""Truth scoring of coadds (coadd_core.sim.evaluate): the artifact renders add up to the
simulator's own render, and the scores equal what a hand-made case says they must be."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from astropy.wcs import WCS
from scipy import ndimage

from coadd_core.assemble import AltMask, CompareWarpConfig, WarpHandle, assemble
from coadd_core.assemble.alt_masks import empty_spans, spans_from_mask
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.photocalib import PhotoCalib
from coadd_core.psf import SIGMA_TO_FWHM, GaussianPsf, MoffatPsf
from coadd_core.sim import RenderOptions, plan_survey, render_electrons
from coadd_core.sim.evaluate import PatchTruth, _photometry, artifact_electrons, score_coadd
from coadd_core.sim.render import SOURCE_DTYPE
from coadd_core.sim.scene import mag_to_njy
from coadd_core.visit_info import VisitInfo


# -- the artifact renders -----------------------------------------------------------------
@pytest.fixture(scope="module")
def small_plan():
    return plan_survey("small")


@pytest.mark.parametrize("visit_index", [1, 2])
def test_artifact_parts_add_up_to_the_render(small_plan, visit_index: int) -> None:
    """Noise-free render minus the static scene = trails + ghost + asteroid + cosmic rays."""
    plan = small_plan
    exp = plan.science[visit_index]
    det = plan.detectors[0].name
    task = plan.ccd_task(exp, det)
    opts = RenderOptions(sky=False, flat=False, dark=False, noise=False)
    full, _, saturated = render_electrons(task, opts)
    kinds = dict(zip(np.asarray(plan.catalog["id"]).tolist(), np.asarray(plan.catalog["kind"]).tolist()))
    static = task.sources[[kinds[int(i)] != "asteroid" for i in task.sources["id"]]]
    scene, _, _ = render_electrons(dataclasses.replace(task, sources=static), dataclasses.replace(opts, artifacts=False))
    parts = artifact_electrons(plan, exp.expnum, det)
    expected_kinds = {"cosmic_ray"} | ({"trail"} if task.trails else set()) | ({"ghost"} if task.ghosts else set())
    assert expected_kinds <= set(parts)
    total = sum(parts.values())
    # bleed trails end where the charge runs out: a little more light moves their ends
    ok = ~ndimage.binary_dilation(saturated, iterations=5)
    assert np.allclose(full[ok], scene[ok] + total[ok], rtol=1e-5, atol=0.05)
    assert all(p.min() > -1e-3 * p.max() for p in parts.values())  # FFT ringing only


# -- scoring a hand-made case -------------------------------------------------------------------
NOISE = 10.0
SIGMA = 2.0
FWHM = SIGMA * SIGMA_TO_FWHM


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cd = [[-0.2 / 3600, 0.0], [0.0, 0.2 / 3600]]
    return w


def _gauss(box: Box, x: float, y: float, flux: float) -> np.ndarray:
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    return flux / (2 * math.pi * SIGMA**2) * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / SIGMA**2)


def test_scores_of_a_known_case() -> None:
    rng = np.random.default_rng(3)
    box = Box(500, 700, 699, 899)
    wcs = _wcs()
    visits = [11, 12, 13, 14]
    star = (560.3, 760.6, 2.0e4)
    star2 = (665.5, 740.2, 3.0e4)
    var_xy, var_flux = (640.2, 840.7), {11: 1.0e4, 12: 2.0e4, 13: 1.0e4, 14: 3.0e4}
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    trail = 40.0 * np.exp(-0.5 * ((xx - 620.0) / 3.0) ** 2)  # a vertical trail in visit 11
    warps: dict[int, Exposure] = {}
    for v in visits:
        image = _gauss(box, *star) + _gauss(box, *star2) + _gauss(box, *var_xy, var_flux[v]) + rng.normal(0, NOISE, box.shape)
        if v == 11:
            image += trail
        mi = MaskedImage(image.astype(np.float32), None, np.full(box.shape, NOISE**2, np.float32), xy0=box.xy0)
        warps[v] = Exposure(mi, wcs=wcs, psf=GaussianPsf(SIGMA, size=31), photo_calib=PhotoCalib(1.0),
                            visit_info=VisitInfo(visit_id=v, band="r"))
    significant = trail > NOISE  # the 1-sigma artifact pixels
    left = significant & (xx == 622)  # one column of them not clipped
    clipped = {11: significant & ~left}
    # a false clip: a disk on the static star in visit 13
    clipped[13] = (xx - star[0]) ** 2 + (yy - star[1]) ** 2 <= 9
    # two one-pixel cosmic rays in visit 12, both 8 sigma: one clipped, one left
    rays = np.zeros(box.shape, np.float32)
    rays[20, 20] = rays[180, 190] = 8 * NOISE
    clipped[12] = rays > 0
    clipped[12][20, 20] = False
    alt = {v: AltMask(clipped=spans_from_mask(clipped.get(v, np.zeros(box.shape, bool)), box),
                      no_data=empty_spans(), edge=empty_spans()) for v in visits}
    config = CompareWarpConfig()
    result = assemble([(WarpHandle.from_exposure(warps[v], visit=v), 1.0) for v in visits], box, wcs, config,
                      alt_masks=[alt[v] for v in visits], extra_bad_mask_planes=("CLIPPED",))
    sources = np.zeros(3, dtype=[("id", "i8"), ("x", "f8"), ("y", "f8"), ("kind", "U8"), ("flux", "f8"),
                                 ("bright", "?"), ("hlr_px", "f8")])
    sources[0] = (1, star[0], star[1], "star", star[2], False, 0.0)
    sources[2] = (3, star2[0], star2[1], "star", star2[2], False, 0.0)
    sources[1] = (2, var_xy[0], var_xy[1], "variable", np.mean(list(var_flux.values())), False, 0.0)
    truth = PatchTruth(box, wcs, {11: {"trail": trail.astype(np.float32)}, 12: {"cosmic_ray": rays}},
                       {v: FWHM for v in visits}, sources, {2: var_flux})
    score = score_coadd("hand-made", result.coadd, warps, alt, truth, config)

    trail_score = score.kinds["trail"]
    assert trail_score.pixels == int(significant.sum())
    assert trail_score.rejected == int((significant & ~left).sum())
    # what is left: the unclipped column, a quarter of it (MEAN of four equal weights)
    assert trail_score.leak_njy == pytest.approx(float(trail[left].sum()) / 4, rel=1e-4)
    assert trail_score.plain_mean_leak_njy == pytest.approx(float(trail[significant].sum()) / 4, rel=1e-4)
    assert trail_score.leak_sigma > 3
    assert (trail_score.objects, trail_score.objects_over) == (1, 1)
    # each ray on its own: the one left is a quarter of 8 sigma in a coadd of half the noise
    rays_score = score.kinds["cosmic_ray"]
    assert (rays_score.pixels, rays_score.rejected, rays_score.objects, rays_score.objects_over) == (2, 1, 2, 1)
    assert rays_score.worst_object_sigma == pytest.approx(4.0, rel=1e-3)
    # where it is: its centroid in patch pixels, residual and size
    assert rays_score.left == [(box.x0 + 20, box.y0 + 20, pytest.approx(4.0, rel=1e-3), 1)]
    where = f"x={box.x0 + 20}, y={box.y0 + 20}"
    assert dict(score.rows())["cosmic_rays left above 3 sigma in the coadd, each"] == f"1/2 (worst +4.00 sigma at {where})"
    assert score.static_false_clips == 1 and score.variable_false_clips == 0 and score.n_static == 2
    assert score.false_clip_pixels == int(clipped[13].sum())
    # a visit missing from part of an aperture leaves a static star's mean unchanged
    assert score.n_static_phot == 2 and abs(score.static_phot_offset) < 0.02
    # the variable's truth is the mean over the visits used: all four here
    assert score.n_variable_phot == 1 and abs(score.variable_phot_offset) < 0.02
    assert score.noise_ratio == pytest.approx(1.0, abs=0.05)
    assert dict(score.rows())["static stars with a false clip"] == "1/2"


def test_score_rejects_a_coadd_on_another_box() -> None:
    box = Box(0, 0, 9, 9)
    mi = MaskedImage(np.zeros(box.shape, np.float32), None, np.ones(box.shape, np.float32), xy0=box.xy0)
    coadd = Exposure(mi, wcs=_wcs())
    truth = PatchTruth(Box(0, 0, 19, 19), _wcs(), {}, {}, np.zeros(0, SOURCE_DTYPE))
    with pytest.raises(ValueError, match="box"):
        score_coadd("x", coadd, {}, {}, truth, CompareWarpConfig())


def test_patch_truth_warps_only_the_ray_charge_the_calexp_still_holds(small_plan) -> None:
    """Ray pixels the ISR flagged CR (repaired) or interpolated for another reason (INTRP,
    e.g. a bad column) hold none of the ray's charge: left out of the truth and of the
    ISR's flagged fraction."""
    from coadd_core.sim.evaluate import patch_truth

    plan = small_plan
    exp, det = plan.science[1], plan.detectors[0].name
    task = plan.ccd_task(exp.expnum, det)
    charge = artifact_electrons(plan, exp.expnum, det)["cosmic_ray"]
    njy_per_e = float(mag_to_njy(20.0) / exp.counts_e(20.0))
    sigma_njy = 5.0 * njy_per_e  # 1 sigma = 5 e-
    box = Box(0, 0, charge.shape[1] - 1, charge.shape[0] - 1)
    mi = MaskedImage.zeros(box)
    mi.variance[:] = sigma_njy**2
    loud = charge > 5.0
    ys, xs = np.nonzero(loud)
    cr, intrp = np.zeros_like(loud), np.zeros_like(loud)
    cr[ys[::3], xs[::3]] = True  # a third flagged CR (and repaired)
    intrp[ys[1::3], xs[1::3]] = True  # a third interpolated as a bad column
    mi.mask[cr] |= mi.planes.bitmask("CR", "INTRP")
    mi.mask[intrp] |= mi.planes.bitmask("BAD", "INTRP")
    calexp = Exposure(mi, wcs=WCS(task.wcs_cards), psf=GaussianPsf(2.0), photo_calib=PhotoCalib(1.0),
                      visit_info=VisitInfo(detector_name=det))
    # a tract grid on the CCD's own pixels, with room around it
    tract_wcs = WCS(task.wcs_cards)
    outer = Box(-50, -50, box.x1 + 50, box.y1 + 50)
    truth = patch_truth(plan, {exp.expnum: [calexp]}, outer, tract_wcs)
    assert truth.isr_cosmic_rays == (int((loud & ~intrp).sum()), int(cr.sum()))
    kept = float(charge[~(cr | intrp)].sum()) * njy_per_e
    assert float(truth.artifacts[exp.expnum]["cosmic_ray"].sum()) == pytest.approx(kept, rel=0.02)


def test_aperture_photometry_allows_for_the_wings_in_the_sky_annulus() -> None:
    """The sky annulus lies on a Moffat star's wings: its median takes some of the
    star's light as sky from every aperture pixel, which the PSF measured the same way
    gives back.  A noiseless star of beta 2.5 is recovered to 0.1 %; the plain aperture
    correction left it 0.9 % short."""
    box = Box(0, 0, 199, 199)
    psf = MoffatPsf(5.0, 2.5, size=81)
    flux, x, y = 1.0e5, 100.3, 99.6
    stamp = psf.compute_image(x, y)
    image = np.zeros(box.shape, np.float32)
    image[stamp.bbox.slices(box)] = (flux * stamp.array / stamp.array.sum()).astype(np.float32)
    mi = MaskedImage(image, None, np.ones(box.shape, np.float32))
    coadd = Exposure(mi, wcs=_wcs(), psf=psf, photo_calib=PhotoCalib(1.0))
    sources = np.zeros(1, dtype=[("id", "i8"), ("x", "f8"), ("y", "f8"), ("kind", "U8"), ("flux", "f8"),
                                 ("bright", "?"), ("hlr_px", "f8")])
    sources[0] = (1, x, y, "star", flux, False, 0.0)
    truth = PatchTruth(box, coadd.wcs, {}, {1: 5.0}, sources, {})
    ones = {1: np.ones(box.shape, bool)}
    offset, n, _, _, _ = _photometry(coadd, truth, [1], [1.0], ones, {1: np.zeros(box.shape, bool)})
    assert n == 1 and abs(offset) < 1e-3, offset
