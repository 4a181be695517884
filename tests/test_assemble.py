"""AssembleCoadd (ALGORITHMS.md §6, §11 items 5, 6, 7, 13): weights, mask rules,
sub-region invariance, flat memory, coadd PSF."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from astropy.wcs import WCS

from coadd_core.assemble import (
    AssembleCoaddConfig,
    CoaddPsf,
    CoaddPsfInput,
    CompareWarpConfig,
    NoWorkFound,
    SafeClipConfig,
    StaticSkyModelConfig,
    WarpHandle,
    assemble,
    compute_weights,
)
from coadd_core.exposure import Exposure
from coadd_core.fits_io import write_exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask
from coadd_core.photocalib import PhotoCalib
from coadd_core.polygon import ValidPolygon
from coadd_core.psf import GaussianPsf, ImagePsf
from coadd_core.visit_info import VisitInfo

PATCH = Box(100, 200, 179, 259)  # 80 x 60, non-zero origin


def tract_wcs(scale_arcsec: float = 0.2, rot_deg: float = 0.0, crpix=(0.0, 0.0)) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [crpix[0] + 1, crpix[1] + 1]
    s = scale_arcsec / 3600.0
    c, sn = math.cos(math.radians(rot_deg)), math.sin(math.radians(rot_deg))
    w.wcs.cd = [[-s * c, s * sn], [s * sn, s * c]]
    return w


WCS0 = tract_wcs()


def make_warp(image, variance, mask=None, *, visit=1, box=PATCH, psf=None) -> Exposure:
    image = np.broadcast_to(np.asarray(image, np.float32), box.shape).copy()
    variance = np.broadcast_to(np.asarray(variance, np.float32), box.shape).copy()
    mask = np.zeros(box.shape, np.int32) if mask is None else np.asarray(mask, np.int32)
    return Exposure(
        MaskedImage(image, mask, variance, xy0=box.xy0),
        wcs=WCS0,
        psf=psf or GaussianPsf(2.0),
        photo_calib=PhotoCalib(1.0),
        visit_info=VisitInfo(visit_id=visit, band="r"),
    )


def handles(warps):
    return [WarpHandle.from_exposure(w) for w in warps]


def noisy_warps(n, rng, *, sky=0.0, sigma=1.0, box=PATCH):
    return [
        make_warp(rng.normal(sky, sigma, box.shape), sigma**2, visit=i + 1, box=box) for i in range(n)
    ]


# --------------------------------------------------------------------------------------
# §11 item 5: mean coadd variance
# --------------------------------------------------------------------------------------


def test_mean_coadd_of_equal_warps_has_variance_over_n():
    rng = np.random.default_rng(1)
    n, v = 5, 4.0
    warps = noisy_warps(n, rng, sigma=2.0)
    cfg = AssembleCoaddConfig(statistic="MEAN")
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    np.testing.assert_allclose(res.coadd.variance, v / n, rtol=1e-5)
    expect = np.mean([w.image.astype(np.float64) for w in warps], axis=0)
    np.testing.assert_allclose(res.coadd.image, expect, rtol=1e-5, atol=1e-5)
    assert res.coadd.unit == "nJy" and res.coadd.bbox == PATCH
    # a mean of one warp's noise has variance V/N empirically too
    assert np.var(res.coadd.image) == pytest.approx(v / n, rel=0.15)


def test_inverse_variance_weights_give_inverse_sum_variance():
    rng = np.random.default_rng(2)
    variances = [1.0, 2.0, 4.0, 8.0]
    warps = [make_warp(rng.normal(0, math.sqrt(v), PATCH.shape), v, visit=i) for i, v in enumerate(variances)]
    cfg = AssembleCoaddConfig(statistic="MEAN")
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    np.testing.assert_allclose(res.coadd.variance, 1.0 / sum(1 / v for v in variances), rtol=1e-5)


@pytest.mark.parametrize("statistic", ["MEAN", "MEANCLIP", "MEDIAN"])
def test_identical_warps_give_the_warp(statistic):
    rng = np.random.default_rng(3)
    img = rng.normal(10, 1, PATCH.shape)
    warps = [make_warp(img, 1.0, visit=i) for i in range(4)]
    cfg = AssembleCoaddConfig(statistic=statistic)
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    np.testing.assert_allclose(res.coadd.image, img.astype(np.float32), rtol=1e-6)


# --------------------------------------------------------------------------------------
# §11 item 6: weights
# --------------------------------------------------------------------------------------


def test_four_times_variance_gets_quarter_weight():
    rng = np.random.default_rng(4)
    warps = [make_warp(rng.normal(0, 1, PATCH.shape), 1.0, visit=1),
             make_warp(rng.normal(0, 2, PATCH.shape), 4.0, visit=2)]
    weights = compute_weights(handles(warps), AssembleCoaddConfig())
    assert weights[1][1] / weights[0][1] == pytest.approx(0.25, rel=1e-6)


def test_weights_ignore_bad_pixels_and_outliers():
    var = np.full(PATCH.shape, 2.0, np.float32)
    mask = np.zeros(PATCH.shape, np.int32)
    var[:5] = 1000.0
    mask[:5] = bitmask("SAT")
    var[10, 10] = 1e6  # clipped
    w = compute_weights(handles([make_warp(0.0, var, mask)]), AssembleCoaddConfig())
    assert w[0][1] == pytest.approx(0.5, rel=1e-6)


def test_weights_errors_and_skips():
    rng = np.random.default_rng(5)
    good = make_warp(rng.normal(0, 1, PATCH.shape), 1.0, visit=1)
    all_nan = make_warp(np.nan, 1.0, visit=2)
    zero_var = make_warp(0.0, 0.0, visit=3)
    res = compute_weights(handles([good, all_nan, zero_var]), AssembleCoaddConfig())
    assert [h.visit for h, _ in res] == [1]
    with pytest.raises(NoWorkFound):
        compute_weights(handles([all_nan]), AssembleCoaddConfig())
    adu = make_warp(0.0, 1.0, visit=4)
    adu.photo_calib = PhotoCalib(2.0)
    with pytest.raises(ValueError, match="nJy"):
        compute_weights([WarpHandle.from_exposure(adu)], AssembleCoaddConfig())
    with pytest.raises(NoWorkFound):
        assemble([], PATCH, WCS0, AssembleCoaddConfig())


# --------------------------------------------------------------------------------------
# §11 item 7: mask logic
# --------------------------------------------------------------------------------------


def test_mask_rules_sat_edge_no_data():
    n = 5
    rng = np.random.default_rng(6)
    warps = noisy_warps(n, rng, sky=50.0)
    sat, edge, nd, det = bitmask("SAT"), bitmask("EDGE"), bitmask("NO_DATA"), bitmask("DETECTED")
    warps[0].mask[5, 5] = sat           # 1 of 5 equal weights rejected: 0.2 > 0.1
    warps[1].mask[7, 7] = edge
    for w in warps:                      # nothing good at (20, 30)
        w.mask[20, 30] = nd
        w.image[20, 30] = np.nan
    warps[2].mask[9, 9] = det
    cfg = AssembleCoaddConfig(statistic="MEANCLIP")
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    m = res.coadd.mask
    names = lambda v: set(res.coadd.planes.names_from_bits(int(v)))  # noqa: E731
    assert {"SAT", "REJECTED", "INEXACT_PSF"} <= names(m[5, 5])
    assert {"SENSOR_EDGE", "INEXACT_PSF"} <= names(m[7, 7]) and "REJECTED" not in names(m[7, 7])
    assert {"NO_DATA", "INTRP"} <= names(m[20, 30])
    assert "DETECTED" in names(m[9, 9])
    assert np.isfinite(res.coadd.image[20, 30])
    v = res.coadd.variance
    assert not np.any(np.isnan(v)) and not np.any(v <= 0)
    assert not names(m[30, 40]) & {"SAT", "REJECTED", "SENSOR_EDGE", "NO_DATA", "INTRP"}


def test_low_weight_saturation_not_propagated():
    rng = np.random.default_rng(7)
    warps = noisy_warps(12, rng)
    warps[0].mask[3, 3] = bitmask("SAT")  # 1/12 < 0.1
    cfg = AssembleCoaddConfig()
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    names = set(res.coadd.planes.names_from_bits(int(res.coadd.mask[3, 3])))
    assert "REJECTED" in names and "SAT" not in names


def test_removed_planes_and_n_image():
    rng = np.random.default_rng(8)
    warps = noisy_warps(3, rng)
    warps[0].mask[4, 4] = bitmask("NOT_DEBLENDED")
    warps[1].mask[6, :] = bitmask("BAD")
    cfg = AssembleCoaddConfig(do_n_image=True)
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    assert res.coadd.mask[4, 4] == 0
    assert res.n_image.dtype == np.uint16
    assert (res.n_image[6] == 2).all() and (res.n_image[7] == 3).all()


def test_meanclip_rejects_cosmic_ray():
    rng = np.random.default_rng(9)
    warps = noisy_warps(6, rng, sky=100.0)
    warps[2].image[10, 10] += 500.0
    cfg = AssembleCoaddConfig()
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    others = np.mean([w.image[10, 10] for i, w in enumerate(warps) if i != 2])
    assert res.coadd.image[10, 10] == pytest.approx(others, abs=1e-3)
    assert "CLIPPED" in res.coadd.planes.names_from_bits(int(res.coadd.mask[10, 10]))


# --------------------------------------------------------------------------------------
# sub-regions and memory
# --------------------------------------------------------------------------------------


def test_subregion_size_does_not_change_the_result():
    rng = np.random.default_rng(10)
    warps = noisy_warps(7, rng, sky=20.0)
    for w in warps:
        w.image[rng.random(PATCH.shape) < 0.01] += 300
        w.mask[rng.random(PATCH.shape) < 0.02] = bitmask("BAD")
    results = []
    for size, budget in (((2000, 2000), 64 * 2**20), ((17, 9), 64 * 2**20), ((80, 60), 7 * 12 * 80 * 3),
                         ((80, 7), 64 * 2**20)):
        cfg = AssembleCoaddConfig(subregion_size=size, max_stack_bytes=budget, do_n_image=True)
        results.append(assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg))
    for r in results[1:]:
        np.testing.assert_array_equal(r.coadd.image, results[0].coadd.image)
        np.testing.assert_array_equal(r.coadd.mask, results[0].coadd.mask)
        np.testing.assert_array_equal(r.coadd.variance, results[0].coadd.variance)
        np.testing.assert_array_equal(r.n_image, results[0].n_image)


def test_partial_warp_outside_is_no_data():
    rng = np.random.default_rng(11)
    half = Box(PATCH.x0, PATCH.y0, PATCH.x0 + 39, PATCH.y1)
    warps = noisy_warps(3, rng) + [make_warp(rng.normal(0, 1, half.shape), 1.0, visit=9, box=half)]
    cfg = AssembleCoaddConfig(statistic="MEAN", do_n_image=True)
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    assert (res.n_image[:, :40] == 4).all() and (res.n_image[:, 40:] == 3).all()


def _peak_bytes(warps, box, cfg):
    """Peak of new allocations while assembling; reads return fresh copies, as from disk."""
    hs = [WarpHandle(visit=i, bbox=w.bbox, read=lambda b, w=w: w.subset(b).copy(), psf=w.psf)
          for i, w in enumerate(warps)]
    tracemalloc.start()
    try:
        assemble([(h, 1.0) for h in hs], box, WCS0, cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_peak_memory_flat_in_number_of_warps(tmp_path):
    box = Box(0, 0, 299, 299)
    rng = np.random.default_rng(12)
    warps = [make_warp(rng.normal(0, 1, box.shape), 1.0, visit=i, box=box) for i in range(40)]
    cfg = AssembleCoaddConfig(subregion_size=(300, 100), max_stack_bytes=300 * 100 * 12 * 4)
    peak10 = _peak_bytes(warps[:10], box, cfg)
    peak40 = _peak_bytes(warps, box, cfg)
    coadd_bytes = box.area * 12
    assert peak40 < 1.25 * peak10, (peak10, peak40)
    assert peak40 < coadd_bytes + 2 * cfg.max_stack_bytes + 2 * 2**20, peak40
    # the same budget with a larger stack would have needed 4x the memory
    assert 40 * box.area * 12 > 3 * peak40
    # and a file-backed handle reads exactly the requested section
    path = tmp_path / "warp.fits"
    write_exposure(warps[0], path)
    handle = WarpHandle.from_file(path)
    section = handle.read(Box(10, 20, 299, 59))
    np.testing.assert_array_equal(section.image, warps[0].image[20:60, 10:])
    assert handle.visit == 0 and handle.unit == "nJy" and handle.psf == warps[0].psf


# --------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    a = AssembleCoaddConfig()
    assert (a.statistic, a.sigma_clip, a.clip_iter, a.subregion_size) == ("MEANCLIP", 3.0, 2, (2000, 2000))
    assert a.bad_mask_planes == ("NO_DATA", "BAD", "SAT", "EDGE")
    assert a.mask_propagation_thresholds == {"SAT": 0.1}
    s = StaticSkyModelConfig()
    assert (s.warp_type, s.statistic, s.sigma_clip, s.clip_iter, s.bad_mask_planes, s.do_write) == (
        "psfMatched", "MEANCLIP", 2.5, 3, ("NO_DATA",), False)
    with pytest.raises(ValueError):
        StaticSkyModelConfig(do_n_image=True)
    c = CompareWarpConfig()
    assert c.statistic == "MEAN" and c.bad_mask_planes == ("NO_DATA", "BAD", "SAT")
    assert c.remove_mask_planes == ("NOT_DEBLENDED", "EDGE")
    # LSST's 7.5-sigma seeds; footprints extend to 2.5 sigma (project default, README)
    assert (c.detect.threshold_value * c.detect.include_threshold_multiplier, c.detect.polarity,
            c.detect.min_pixels, c.detect.n_sigma_to_grow, c.detect.do_smooth) == (7.5, "both", 4, 0.4, False)
    assert c.detect.threshold_value == 2.5 and c.local_epoch_rule
    assert (c.detect_template.threshold_value, c.detect_template.n_sigma_to_grow,
            c.detect_template.do_temp_local_background) == (300.0, 2.4, True)
    assert (c.max_num_epochs, c.max_fraction_epochs_low, c.max_fraction_epochs_high, c.spatial_threshold) == (
        2, 0.4, 0.03, 0.5)
    with pytest.raises(ValueError):
        CompareWarpConfig(assemble_static_sky_model=StaticSkyModelConfig(do_write=True, warp_type="direct"))
    sc = SafeClipConfig()
    assert (sc.sigma_clip, sc.clip_iter, sc.min_big_overlap) == (1.5, 3, 100)
    with pytest.raises(ValueError):
        SafeClipConfig(statistic="MEANCLIP")
    # LSST options this pipeline cannot honour are refused when the config is made
    with pytest.raises(ValueError, match="bright-object catalog"):
        AssembleCoaddConfig(do_mask_bright_objects=True)
    with pytest.raises(ValueError, match="doFilterMorphological"):
        CompareWarpConfig(do_filter_morphological=True)
    with pytest.raises(ValueError, match="doWriteArtifactMasks"):
        CompareWarpConfig(do_write_artifact_masks=True)


# --------------------------------------------------------------------------------------
# §11 item 13: CoaddPsf
# --------------------------------------------------------------------------------------


def test_coadd_psf_single_input_equals_warped_input():
    coadd_wcs = tract_wcs(0.2)
    calexp_wcs = tract_wcs(0.25, rot_deg=0.0, crpix=(10.0, -5.0))
    psf = GaussianPsf(2.0, size=41)
    cp = CoaddPsf([CoaddPsfInput(psf, 1.0, Box(-200, -200, 200, 200), calexp_wcs)], coadd_wcs)
    k = cp.kernel_image(0.0, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    # input pixels are 1.25x larger: the warped kernel is the input kernel scaled by 1.25,
    # so its (unweighted) second moments are 1.25^2 times the input's
    def unweighted_xx(img: np.ndarray) -> float:
        h = img.shape[0] // 2
        x = np.arange(-h, h + 1)
        return float((img.sum(axis=0) * x * x).sum() / img.sum())

    assert unweighted_xx(k) == pytest.approx(1.25**2 * unweighted_xx(psf.kernel_image()), rel=1e-3)
    assert ImagePsf(k).sigma == pytest.approx(1.25 * ImagePsf(psf.kernel_image()).sigma, rel=5e-3)
    ixx, iyy, ixy = ImagePsf(k).second_moments()
    assert ixx == pytest.approx(iyy, rel=1e-3) and abs(ixy) < 1e-3 * ixx
    again = CoaddPsf.from_dict(cp.to_dict())
    np.testing.assert_allclose(again.kernel_image(3.0, 4.0), cp.kernel_image(3.0, 4.0), rtol=1e-12)


def test_coadd_psf_chip_gap_uses_only_the_covering_input():
    coadd_wcs = tract_wcs(0.2)
    narrow, wide = GaussianPsf(1.5, size=31), GaussianPsf(3.0, size=31)
    left = CoaddPsfInput(narrow, 1.0, Box(-100, -100, -11, 100), coadd_wcs,
                         valid_polygon=ValidPolygon.from_box(Box(-100, -100, -11, 100)))
    right = CoaddPsfInput(wide, 3.0, Box(10, -100, 100, 100), coadd_wcs)
    cp = CoaddPsf([left, right], coadd_wcs)
    assert cp.contributing(-50, 0) == [0]
    assert cp.contributing(50, 0) == [1]
    assert cp.contributing(0, 0) == []
    np.testing.assert_allclose(cp.kernel_image(-50.0, 0.0), narrow.kernel_image(), atol=1e-6)
    np.testing.assert_allclose(cp.kernel_image(50.0, 0.0), wide.kernel_image(), atol=1e-6)
    with pytest.raises(ValueError, match="no input"):
        cp.kernel_image(0.0, 0.0)
    both = CoaddPsf([left, CoaddPsfInput(wide, 3.0, Box(-100, -100, 100, 100), coadd_wcs)], coadd_wcs)
    mix = both.kernel_image(-50.0, 0.0)
    np.testing.assert_allclose(mix, 0.25 * narrow.kernel_image() + 0.75 * wide.kernel_image(), atol=1e-6)
    assert mix.sum() == pytest.approx(1.0)


def test_assembled_coadd_psf_from_warps():
    rng = np.random.default_rng(13)
    warps = noisy_warps(3, rng)
    cfg = AssembleCoaddConfig()
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    assert isinstance(res.coadd.psf, CoaddPsf)
    assert res.coadd.psf.sigma == pytest.approx(2.0, rel=0.02)
    psf_matched = assemble(compute_weights(handles(warps), StaticSkyModelConfig()), PATCH, WCS0,
                           StaticSkyModelConfig())
    assert isinstance(psf_matched.coadd.psf, GaussianPsf)


# --------------------------------------------------------------------------------------
# CoaddInputs
# --------------------------------------------------------------------------------------


def _inputs_for(visit: int, sigma_left: float, sigma_right: float, ap_corr: float = 1.0):
    from coadd_core.warp.inputs import CcdRow, CoaddInputs, VisitRow

    calexp_wcs = tract_wcs(0.2)
    left = Box(PATCH.x0 - 50, PATCH.y0 - 50, PATCH.x0 + 39, PATCH.y1 + 50)
    right = Box(PATCH.x0 + 40, PATCH.y0 - 50, PATCH.x1 + 50, PATCH.y1 + 50)
    ccds = [
        CcdRow(id=visit * 100 + 2, visit=visit, detector=2, goodpix=100, weight=1.0, bbox=right, wcs=calexp_wcs,
               psf=GaussianPsf(sigma_right, size=25), ap_corr=ap_corr),
        CcdRow(id=visit * 100 + 1, visit=visit, detector=1, goodpix=100, weight=1.0, bbox=left, wcs=calexp_wcs,
               psf=GaussianPsf(sigma_left, size=25), ap_corr=ap_corr),
    ]
    return CoaddInputs([VisitRow(visit=visit, goodpix=200, weight=1.0, bbox=PATCH)], ccds)


def test_coadd_records_inputs_and_builds_psf_from_ccd_rows():
    from coadd_core.warp.inputs import get_coadd_inputs

    rng = np.random.default_rng(14)
    warps = []
    for visit, var, ap_corr in ((7, 1.0, 1.002), (3, 4.0, 1.010)):
        w = make_warp(rng.normal(0, math.sqrt(var), PATCH.shape), var, visit=visit)
        w.metadata["coadd_inputs"] = _inputs_for(visit, 1.5, 3.0, ap_corr)
        warps.append(w)
    cfg = AssembleCoaddConfig()
    res = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg)
    inputs = get_coadd_inputs(res.coadd)
    assert [v.visit for v in inputs.visits] == [3, 7]
    assert [c.id for c in inputs.ccds] == [301, 302, 701, 702]
    assert [c.weight for c in inputs.ccds] == pytest.approx([0.25, 0.25, 1.0, 1.0], rel=1e-6)
    # the light beyond the PSF's box, weighted as the coadd PSF weights the inputs
    assert [c.ap_corr for c in inputs.ccds] == [1.010, 1.010, 1.002, 1.002]
    assert res.coadd.metadata["PSF_APCORR"] == pytest.approx((2 * 1.0 * 1.002 + 2 * 0.25 * 1.010) / 2.5, rel=1e-9)
    psf = res.coadd.psf
    assert isinstance(psf, CoaddPsf) and len(psf.inputs) == 4
    k_left = psf.kernel_image(PATCH.x0 + 10.0, PATCH.y0 + 30.0)
    k_right = psf.kernel_image(PATCH.x0 + 70.0, PATCH.y0 + 30.0)
    assert ImagePsf(k_left).sigma == pytest.approx(ImagePsf(GaussianPsf(1.5, size=25).kernel_image()).sigma, rel=0.01)
    assert ImagePsf(k_right).sigma == pytest.approx(ImagePsf(GaussianPsf(3.0, size=25).kernel_image()).sigma, rel=0.01)


def test_compare_warp_uses_psf_matched_polygons():
    from dataclasses import replace as dc_replace

    from coadd_core.assemble.compare_warp import with_psf_matched_polygons

    direct = WarpHandle.from_exposure(make_warp(0.0, 1.0, visit=5))
    direct = dc_replace(direct, coadd_inputs=_inputs_for(5, 1.5, 3.0))
    shrunk = ValidPolygon.from_box(Box(PATCH.x0 + 45, PATCH.y0, PATCH.x1, PATCH.y1))
    matched_rows = [row.with_valid_polygon(shrunk) if row.detector == 2 else row
                    for row in _inputs_for(5, 2.5, 2.5).ccds]
    matched = dc_replace(direct, coadd_inputs=_inputs_for(5, 2.5, 2.5).with_ccds(matched_rows))
    out = with_psf_matched_polygons(direct, matched)
    polys = {row.detector: row.valid_polygon for row in out.coadd_inputs.ccds}
    assert polys[2] == shrunk and polys[1] is None
    assert {row.detector: row.psf.sigma for row in out.coadd_inputs.ccds} == {1: 1.5, 2: 3.0}
    extra = _inputs_for(6, 2.5, 2.5).ccds[0]
    bad = dc_replace(matched, coadd_inputs=matched.coadd_inputs.with_ccds(list(matched_rows) + [extra]))
    with pytest.raises(ValueError, match="not in the direct warp"):
        with_psf_matched_polygons(direct, bad)


def test_coadd_fits_round_trip_keeps_psf_and_inputs(tmp_path):
    from coadd_core.fits_io import read_exposure
    from coadd_core.warp.inputs import get_coadd_inputs

    rng = np.random.default_rng(15)
    warps = []
    for visit in (4, 9):
        w = make_warp(rng.normal(0, 1, PATCH.shape), 1.0, visit=visit)
        w.metadata["coadd_inputs"] = _inputs_for(visit, 1.5, 3.0)
        warps.append(w)
    cfg = AssembleCoaddConfig()
    coadd = assemble(compute_weights(handles(warps), cfg), PATCH, WCS0, cfg).coadd
    write_exposure(coadd, tmp_path / "coadd.fits")
    back = read_exposure(tmp_path / "coadd.fits")
    np.testing.assert_array_equal(back.image, coadd.image)
    assert isinstance(back.psf, CoaddPsf)
    x, y = PATCH.x0 + 60.0, PATCH.y0 + 20.0
    np.testing.assert_array_equal(back.psf.kernel_image(x, y), coadd.psf.kernel_image(x, y))
    assert [c.id for c in get_coadd_inputs(back).ccds] == [401, 402, 901, 902]
    assert back.unit == "nJy" and back.metadata["COADD_VISITS"] == [4, 9]


def test_file_handle_reads_sections_like_read_exposure_and_pickles(tmp_path):
    import pickle

    from coadd_core.exposure import assert_exposures_equal
    from coadd_core.fits_io import read_exposure

    rng = np.random.default_rng(16)
    warp = make_warp(rng.normal(0, 1, PATCH.shape), 1.0, visit=3)
    warp.mask[5:9, 7:30] = bitmask("SAT")
    path = tmp_path / "w.fits"
    write_exposure(warp, path)
    handle = WarpHandle.from_file(path)
    for box in (Box(PATCH.x0, PATCH.y0 + 3, PATCH.x1, PATCH.y0 + 20), Box(PATCH.x0 + 5, PATCH.y0, PATCH.x0 + 9, PATCH.y1)):
        assert_exposures_equal(handle.read(box), read_exposure(path, bbox=box))
    again = pickle.loads(pickle.dumps(handle))  # the open file is dropped and reopened
    box = Box(PATCH.x0, PATCH.y0, PATCH.x1, PATCH.y0 + 4)
    a, b = again.read(box), read_exposure(path, bbox=box)
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(a, plane), getattr(b, plane))
    with pytest.raises(ValueError):
        handle.read(PATCH.grown(1))
