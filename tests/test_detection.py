"""Detection primitive (ALGORITHMS.md §7.2) on synthetic frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from coadd_core.background import BackgroundConfig
from coadd_core.detection import (
    DetectionConfig,
    Footprints,
    detect_footprints,
    gaussian_kernel_1d,
    grow_mask,
    kernel_width,
)
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import bitmask

SIGMA_PSF = 2.0
VAR = 100.0  # per-pixel variance (noise sigma 10)


def gaussian(shape: tuple[int, int], x: float, y: float, sigma: float, flux: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return flux / (2 * math.pi * sigma**2) * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)


def blank(shape: tuple[int, int] = (120, 140), xy0: tuple[int, int] = (0, 0)) -> MaskedImage:
    return MaskedImage(
        np.zeros(shape, np.float32), variance=np.full(shape, VAR, np.float32), xy0=xy0
    )


def reference_detection(image: np.ndarray, variance: np.ndarray, sigma: float, t: float) -> np.ndarray:
    """Independent threshold mask: scipy correlation with the sampled Gaussian (and its square)."""
    width = kernel_width(sigma)
    k = gaussian_kernel_1d(sigma, width)
    sm = ndimage.correlate1d(ndimage.correlate1d(image.astype(np.float64), k, axis=1), k, axis=0)
    sv = ndimage.correlate1d(ndimage.correlate1d(variance.astype(np.float64), k * k, axis=1), k * k, axis=0)
    h = width // 2
    det = sm >= t * np.sqrt(sv)
    det[:h] = det[-h:] = False
    det[:, :h] = det[:, -h:] = False
    return det


def disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def flux_for_significance(significance: float, sigma_src: float) -> float:
    """Flux of a Gaussian source whose PSF-smoothed peak is ``significance`` sigma."""
    width = kernel_width(SIGMA_PSF)
    k = gaussian_kernel_1d(SIGMA_PSF, width)
    one = gaussian((width, width), width // 2, width // 2, sigma_src, 1.0)
    peak = float((np.outer(k, k) * one).sum())
    noise = math.sqrt(VAR) * float((k * k).sum())
    return significance * noise / peak


def test_kernel_width_is_lsst_rule() -> None:
    assert kernel_width(2.0) == 15  # int(14.5) = 14 -> 15
    assert kernel_width(1.0) == 7
    assert kernel_width(1.5) == 11  # int(11.0) = 11 -> 10 + 1
    for s in np.linspace(0.5, 6.0, 23):
        w = kernel_width(float(s))
        assert w % 2 == 1 and w == (int(s * 7 + 0.5) // 2) * 2 + 1


def test_source_at_7p5_sigma_found_with_the_right_area() -> None:
    mi = blank()
    flux = flux_for_significance(7.5, SIGMA_PSF)
    mi.image += gaussian(mi.shape, 70.3, 58.6, SIGMA_PSF, flux).astype(np.float32)
    ref = reference_detection(mi.image, mi.variance, SIGMA_PSF, 5.0)
    result = detect_footprints(mi, SIGMA_PSF)
    fps = result.positive
    assert fps is not None and len(fps) == 1 and result.negative is None
    n_grow = int(2.4 * SIGMA_PSF + 0.5)
    assert result.n_grow == n_grow == 5 and result.kernel_width == 15
    expected = ndimage.binary_dilation(ref, structure=disk(n_grow))
    np.testing.assert_array_equal(fps.mask(), expected)
    # analytic size: smoothed profile sigma_t^2 = 2 sigma^2; above 5 sigma inside r_t
    sigma_t = math.sqrt(2) * SIGMA_PSF
    r_t = sigma_t * math.sqrt(2 * math.log(7.5 / 5.0))
    assert fps.areas[0] == pytest.approx(math.pi * (r_t + n_grow) ** 2, rel=0.1)
    assert fps.peak(1) == (70, 59)
    assert fps.peaks[0]["significance"] == pytest.approx(7.5, rel=0.02)
    assert np.array_equal(mi.mask & bitmask("DETECTED") != 0, expected)
    # below threshold: nothing
    faint = blank()
    faint.image += gaussian(faint.shape, 70.3, 58.6, SIGMA_PSF, 0.6 * flux).astype(np.float32)
    assert len(detect_footprints(faint, SIGMA_PSF).positive) == 0


def test_min_pixels() -> None:
    mi = blank((40, 40))
    mi.image[10, 10] = 200.0  # one pixel at 20 sigma
    mi.image[25:27, 25:27] = 200.0  # a 2x2 block
    cfg = DetectionConfig(do_smooth=False, n_sigma_to_grow=0.0)
    assert len(detect_footprints(mi, 1.0, cfg).positive) == 2
    two = detect_footprints(mi, 1.0, cfg.model_copy(update={"min_pixels": 2})).positive
    assert len(two) == 1 and two.areas[0] == 4 and two.footprint_bbox(1) == Box(25, 25, 26, 26)
    assert len(detect_footprints(mi, 1.0, cfg.model_copy(update={"min_pixels": 4})).positive) == 1
    assert len(detect_footprints(mi, 1.0, cfg.model_copy(update={"min_pixels": 5})).positive) == 0


def test_negative_polarity() -> None:
    mi = blank()
    flux = flux_for_significance(12.0, SIGMA_PSF)
    mi.image -= gaussian(mi.shape, 40.0, 50.0, SIGMA_PSF, flux).astype(np.float32)
    mi.image += gaussian(mi.shape, 100.0, 60.0, SIGMA_PSF, flux).astype(np.float32)
    pos_only = detect_footprints(mi, SIGMA_PSF)
    assert len(pos_only.positive) == 1 and pos_only.positive.peak(1) == (100, 60)
    neg = detect_footprints(mi, SIGMA_PSF, DetectionConfig(polarity="negative"))
    assert neg.positive is None and len(neg.negative) == 1
    assert neg.negative.peak(1) == (40, 50) and neg.negative.peaks[0]["significance"] > 10
    assert mi.mask[50, 40] & bitmask("DETECTED_NEGATIVE") and not mi.mask[50, 40] & bitmask("DETECTED")
    assert not np.any(mi.mask & bitmask("DETECTED"))  # cleared and not set
    both = detect_footprints(mi, SIGMA_PSF, DetectionConfig(polarity="both"))
    assert both.n_pos == 1 and both.n_neg == 1
    assert mi.mask[60, 100] & bitmask("DETECTED") and mi.mask[50, 40] & bitmask("DETECTED_NEGATIVE")


def test_nan_is_never_detected() -> None:
    mi = blank((60, 60))
    mi.image[:] = 100.0  # 10 sigma everywhere
    mi.image[30, 30] = np.nan
    mi.variance[10, 45] = np.nan
    cfg = DetectionConfig(do_smooth=False, n_sigma_to_grow=0.0)
    fps = detect_footprints(mi, 1.0, cfg).positive
    assert not fps.mask()[30, 30] and not fps.mask()[10, 45]
    assert fps.mask().sum() == 60 * 60 - 2
    # smoothing spreads the NaN over the kernel: none of those pixels is detected either
    smooth = detect_footprints(mi, 1.0, DetectionConfig(n_sigma_to_grow=0.0)).positive
    h = kernel_width(1.0) // 2
    assert not smooth.mask()[30 - h : 31 + h, 30 - h : 31 + h].any()
    assert smooth.mask()[30, 30 + h + 1] and smooth.mask()[30 + h + 1, 30]


def test_edge_is_set_on_the_smoothing_border() -> None:
    mi = blank((80, 90), xy0=(1000, 2000))
    flux = flux_for_significance(50.0, SIGMA_PSF)
    mi.image += gaussian(mi.shape, 2.0, 3.0, SIGMA_PSF, flux).astype(np.float32)  # in the border
    mi.image += gaussian(mi.shape, 45.0, 40.0, SIGMA_PSF, flux).astype(np.float32)
    result = detect_footprints(mi, SIGMA_PSF, DetectionConfig(n_sigma_to_grow=0.0))
    h = result.kernel_width // 2
    edge = (mi.mask & bitmask("EDGE")) != 0
    expected = np.ones(mi.shape, bool)
    expected[h:-h, h:-h] = False
    np.testing.assert_array_equal(edge, expected)
    assert len(result.positive) == 1 and result.positive.peak(1) == (1045, 2040)
    assert not result.positive.mask()[:h].any()
    # without smoothing nothing is EDGE
    plain = blank((80, 90))
    detect_footprints(plain, SIGMA_PSF, DetectionConfig(do_smooth=False))
    assert not np.any(plain.mask & bitmask("EDGE"))


def test_touching_footprints_merge_on_growth() -> None:
    flux = flux_for_significance(20.0, SIGMA_PSF)
    cfg0 = DetectionConfig(n_sigma_to_grow=0.0)
    for separation, merged in ((16.0, True), (40.0, False)):
        mi = blank()
        mi.image += gaussian(mi.shape, 40.0, 60.0, SIGMA_PSF, flux).astype(np.float32)
        mi.image += gaussian(mi.shape, 40.0 + separation, 60.0, SIGMA_PSF, flux).astype(np.float32)
        ungrown = detect_footprints(mi.copy(), SIGMA_PSF, cfg0).positive
        assert len(ungrown) == 2  # separate before growing
        grown = detect_footprints(mi, SIGMA_PSF).positive
        assert len(grown) == (1 if merged else 2)
        assert len(grown.peaks) == 2
        if merged:
            assert list(grown.n_peaks) == [2]
    # merging two footprint sets
    box = Box(0, 0, 49, 29)
    a = np.zeros(box.shape, bool)
    b = np.zeros(box.shape, bool)
    a[5:10, 5:10] = True
    b[10:15, 9:12] = True  # touches a diagonally
    b[20:25, 30:40] = True
    fa, fb = Footprints.from_mask(a, box), Footprints.from_mask(b, box)
    assert (len(fa), len(fb)) == (1, 2)
    merged = fa.merge(fb)
    assert len(merged) == 2 and sorted(merged.areas) == [25 + 15, 50]
    with pytest.raises(ValueError):
        fa.merge(Footprints.from_mask(a, box.shifted(1, 0)))


def test_grow_stencils() -> None:
    m = np.zeros((31, 31), bool)
    m[15, 15] = True
    np.testing.assert_array_equal(grow_mask(m, 4), ndimage.binary_dilation(m, structure=disk(4)))
    assert grow_mask(m, 4, isotropic=False).sum() == 2 * 4 * 5 + 1  # diamond
    blob = np.zeros((60, 60), bool)
    blob[20:35, 18:40] = True
    blob[30:45, 10:20] = True
    np.testing.assert_array_equal(grow_mask(blob, 6), ndimage.binary_dilation(blob, structure=disk(6)))


def test_spans_and_boxes_in_parent_coordinates() -> None:
    box = Box(100, 200, 139, 229)
    m = np.zeros(box.shape, bool)
    m[3, 4:9] = True
    m[4, 6:7] = True
    m[4, 8:10] = True
    fps = Footprints.from_mask(m, box)
    assert fps.spans(1) == [(203, 104, 108), (204, 106, 106), (204, 108, 109)]
    assert fps.footprint_bbox(1) == Box(104, 203, 109, 204)
    assert fps.areas[0] == 8 and fps.labels.dtype == np.int32


def test_stdev_threshold_and_clear_mask() -> None:
    rng = np.random.default_rng(3)
    mi = MaskedImage(rng.normal(0, 10, (200, 200)).astype(np.float32), variance=np.full((200, 200), 1e6, np.float32))
    mi.mask[5:8, 5:8] |= bitmask("DETECTED")
    flux = flux_for_significance(15.0, SIGMA_PSF)
    mi.image += gaussian(mi.shape, 100.0, 100.0, SIGMA_PSF, flux).astype(np.float32)
    # the variance plane is wrong by 100x: 'pixel_stdev' misses the source, 'stdev' does not
    assert len(detect_footprints(mi, SIGMA_PSF).positive) == 0
    result = detect_footprints(mi, SIGMA_PSF, DetectionConfig(threshold_type="stdev"))
    k = gaussian_kernel_1d(SIGMA_PSF, kernel_width(SIGMA_PSF))
    assert result.threshold == pytest.approx(5.0 * 10.0 * float((k * k).sum()), rel=0.1)
    assert len(result.positive) == 1 and result.positive.peak(1) == (100, 100)
    assert not mi.mask[6, 6] & bitmask("DETECTED")  # cleared
    kept = mi.copy()
    kept.mask[:] = 0
    kept.mask[5:8, 5:8] |= bitmask("DETECTED")
    detect_footprints(kept, SIGMA_PSF, clear_mask=False, set_mask=False)
    assert kept.mask[6, 6] & bitmask("DETECTED") and not kept.mask[100, 100] & bitmask("DETECTED")


def test_reestimated_background_ignores_detections() -> None:
    rng = np.random.default_rng(4)
    shape = (256, 256)
    mi = MaskedImage(
        (50.0 + rng.normal(0, 10, shape)).astype(np.float32), variance=np.full(shape, VAR, np.float32)
    )
    for x, y in ((60, 60), (180, 90), (120, 200)):
        mi.image += gaussian(shape, x, y, 4.0, 3e5).astype(np.float32)
    cfg = DetectionConfig(
        threshold_value=60.0, reestimate_background=True, background=BackgroundConfig(bin_size=64)
    )
    result = detect_footprints(mi, SIGMA_PSF, cfg)
    assert result.background is not None and result.n_pos == 3
    assert result.background.mean_level == pytest.approx(50.0, abs=0.5)
    sky = ~result.positive.mask()
    assert abs(float(np.mean(mi.image[sky]))) < 0.5


def test_invalid_sigma() -> None:
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            detect_footprints(blank(), bad)


def test_temp_local_background_splits_blend_peaks() -> None:
    mi = blank((120, 160))
    flux = flux_for_significance(40.0, SIGMA_PSF)
    mi.image += gaussian(mi.shape, 60.0, 60.0, SIGMA_PSF, flux).astype(np.float32)
    mi.image += gaussian(mi.shape, 72.0, 60.0, SIGMA_PSF, flux).astype(np.float32)
    result = detect_footprints(mi, SIGMA_PSF, DetectionConfig(do_temp_local_background=True))
    assert result.n_pos == 1
    xs = sorted(int(p["x"]) for p in result.positive.peaks)
    assert xs == [60, 72]


def test_include_threshold_multiplier_keeps_seeded_footprints_down_to_the_threshold() -> None:
    """afw FootprintSet semantics: pixels down to the threshold form footprints, and only
    footprints reaching threshold x includeThresholdMultiplier are kept (hysteresis)."""
    mi = blank()
    # unsmoothed, noiseless: a 9-sigma disk with a 3-sigma rim, and a lone 4-sigma disk
    mi.image[41:80, 21:60][disk(19)] = 3.0 * math.sqrt(VAR)
    mi.image[46:75, 26:55][disk(14)] = 9.0 * math.sqrt(VAR)
    mi.image[50:61, 100:111][disk(5)] = 4.0 * math.sqrt(VAR)
    base = dict(do_smooth=False, n_sigma_to_grow=0.0)
    plain = detect_footprints(mi.copy(), SIGMA_PSF, DetectionConfig(threshold_value=7.5, **base)).positive
    hyst_result = detect_footprints(
        mi.copy(), SIGMA_PSF,
        DetectionConfig(threshold_value=2.5, include_threshold_multiplier=3.0, **base),
    )
    hyst = hyst_result.positive
    # the seeds are the cores (the 9-sigma disk); none without hysteresis
    core = np.zeros(mi.image.shape, bool)
    core[46:75, 26:55][disk(14)] = True
    assert np.array_equal(hyst_result.seeds, core)
    assert detect_footprints(mi.copy(), SIGMA_PSF, DetectionConfig(threshold_value=2.5, **base)).seeds is None
    # both polarities seed: a negative copy of the disk adds its own core
    flipped = mi.copy()
    flipped.image[:, 60:] = 0.0
    flipped.image[:, 60:120] = -mi.image[:, :60]
    both = detect_footprints(flipped, SIGMA_PSF, DetectionConfig(
        threshold_value=2.5, include_threshold_multiplier=3.0, polarity="both", **base))
    assert both.seeds.sum() == 2 * core.sum() and len(both.negative) == 1
    low = detect_footprints(mi.copy(), SIGMA_PSF, DetectionConfig(threshold_value=2.5, **base)).positive
    assert len(plain) == 1 and plain.areas[0] == disk(14).sum()
    # the seeded footprint extends over its whole rim; the unseeded 4-sigma one is dropped
    assert len(hyst) == 1 and hyst.areas[0] == disk(19).sum()
    assert len(low) == 2
