"""ISR of MegaPrime raw CCDs (ALGORITHMS.md §2, §11 item 16), on synthetic frames and the simulator."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from pydantic import ValidationError

from coadd_core.calib import combine_bias, combine_dark, combine_flat
from coadd_core.camera import Detector
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.isr import (
    IsrConfig,
    OverscanConfig,
    cfht_isr_config,
    fit_overscan,
    isr_config_for,
    run_isr,
)
from coadd_core.isr.cfht import saturation_from_histogram
from coadd_core.isr.masking import grow_mask, widen_saturation_trails
from coadd_core.isr.raw import assembled_wcs
from coadd_core.masks import bitmask
from coadd_core.sim import RenderOptions, plan_survey, render_electrons, simulate
from coadd_core.sim.calibs import response_map
from coadd_core.sim.rawfile import extension_header

BAD, SAT, INTRP = bitmask("BAD"), bitmask("SAT"), bitmask("INTRP")
UNMASKEDNAN = bitmask("UNMASKEDNAN")

# science ISR with no calibration steps: LSST defaults otherwise
NO_CALIBS = IsrConfig(do_bias=False, do_dark=False, do_flat=False, do_fringe=False)


# -- synthetic frames with real headers ---------------------------------------------------
@pytest.fixture(scope="module")
def plan() -> Any:
    return plan_survey("tiny")


def _header(plan: Any, detector: Detector | None = None, **cards: Any) -> fits.Header:
    exp = plan.science[0]
    det = detector or plan.detectors[0]
    view = plan.view(exp, det)
    wcs = det.raw_wcs_cards(exp.ra_deg, exp.dec_deg, exp.rotation_deg, plan.pixel_scale)
    header = extension_header(exp, plan.camera, det, wcs if detector is not None else view.wcs_cards, 2, "X", "Y")
    for key, value in cards.items():
        header[key] = value
    return header


def _frame(det: Detector, level: float, overscan: float) -> np.ndarray:
    raw = np.full((det.raw_height, det.raw_width), overscan, dtype=np.uint16)
    for amp in det.amplifiers:
        raw[amp.raw_data_bbox.slices(Box.from_size(det.raw_width, det.raw_height))] = level
    return raw


def _data_slice(det: Detector, amp_index: int) -> tuple[slice, slice]:
    return det.amplifiers[amp_index].raw_data_bbox.slices(Box.from_size(det.raw_width, det.raw_height))


# -- §11 item 16 --------------------------------------------------------------------------
def test_uniform_level_saturated_pixel_and_defect_column(plan: Any) -> None:
    det = plan.detectors[0]
    header = _header(plan, SATURATE=60000)
    level, over = 5000, 1200
    raw = _frame(det, level, over)
    # one saturated pixel in amp B (raw x = assembled x + 32)
    sx, sy = 200, 300
    raw[sy, sx + 32] = 65000
    defect = Box(40, 0, 40, det.bbox.y1)
    result = run_isr(raw, header, defects=[defect], config=NO_CALIBS)
    e = result.exposure
    assert e.bbox == det.bbox
    np.testing.assert_array_equal(e.image, np.float32(level - over))
    for amp in det.amplifiers:
        g, rn = header[f"GAIN{amp.name}"], header[f"RDNOISE{amp.name}"]
        expected = np.float32((level - over) / g + (rn / g) ** 2)
        var = e.variance[amp.bbox.slices(e.bbox)]
        np.testing.assert_allclose(var, expected, rtol=1e-6)
        assert result.metadata["amps"][amp.name]["overscan_median"] == over
    assert e.mask[sy, sx] & SAT and e.mask[sy, sx] & INTRP
    # grown by 1 (Manhattan) before interpolation
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        assert e.mask[sy + dy, sx + dx] & SAT and e.mask[sy + dy, sx + dx] & INTRP
    assert not e.mask[sy + 1, sx + 1] & SAT
    col = e.mask[:, 40]
    assert np.all(col & BAD) and np.all(col & INTRP)
    assert not np.any(e.mask[:, 39] & (BAD | INTRP))
    assert result.metadata["n_sat"] == 5


def test_full_size_megaprime_frame_geometry_from_the_header(plan: Any) -> None:
    det = plan.camera["ccd13"]
    header = _header(plan, det)
    raw = _frame(det, 3000, 1000)
    e = run_isr(raw, header, config=NO_CALIBS.model_copy(update={"do_standard_statistics": False})).exposure
    assert raw.shape == (4644, 2112)
    assert e.image.shape == (4612, 2048)
    good = (e.mask & BAD) == 0
    assert np.all(e.image[good] == 2000)
    assert e.wcs is not None
    assert e.wcs.wcs.crpix[0] == pytest.approx(header["CRPIX1"] - 32)


# -- overscan -----------------------------------------------------------------------------
def _ramp_frame(det: Detector, sky: float = 500.0) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(det.raw_height, dtype=np.float64)
    ramp = 1100.0 + 25.0 * np.exp(-rows / 20.0) + 3.0 * rows / rows[-1]
    raw = np.rint(np.repeat(ramp[:, None], det.raw_width, axis=1)).astype(np.uint16)
    for i in range(2):
        raw[_data_slice(det, i)] += np.uint16(sky)
    return raw, ramp


def test_median_per_row_removes_a_row_ramp(plan: Any) -> None:
    det = plan.detectors[0]
    raw, _ = _ramp_frame(det)
    cfg = NO_CALIBS.model_copy(update={"overscan": OverscanConfig(fit_type="MEDIAN_PER_ROW")})
    e = run_isr(raw, _header(plan), config=cfg).exposure
    good = e.mask == 0
    assert np.max(np.abs(e.image[good] - 500.0)) < 0.1
    # a constant MEDIAN leaves the ramp in
    e2 = run_isr(raw, _header(plan), config=NO_CALIBS).exposure
    assert np.max(np.abs(e2.image[(e2.mask == 0)] - 500.0)) > 10


def test_poly_order_one_fits_a_linear_ramp() -> None:
    rows = np.arange(400, dtype=np.float64)
    truth = 1000.0 + 0.05 * rows
    overscan = np.repeat(truth[:, None], 32, axis=1)
    result, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="POLY", order=1))
    np.testing.assert_allclose(result.model, truth, atol=1e-8)
    for fit_type in ("CHEB", "LEG"):
        quad = 1000.0 + 1e-4 * (rows - 200.0) ** 2
        res, _ = fit_overscan(np.repeat(quad[:, None], 32, axis=1), None, OverscanConfig(fit_type=fit_type, order=2))
        np.testing.assert_allclose(res.model, quad, atol=1e-6)
    res0, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="POLY", order=0))
    assert np.ptp(res0.model) < 1e-9  # order 0 cannot follow the ramp


def test_spline_and_constant_fit_types() -> None:
    rows = np.arange(600, dtype=np.float64)
    smooth = 900.0 + 10.0 * np.sin(rows / 150.0)
    overscan = np.repeat(smooth[:, None], 16, axis=1)
    for fit_type in ("NATURAL_SPLINE", "CUBIC_SPLINE", "AKIMA_SPLINE"):
        res, _ = fit_overscan(overscan, None, OverscanConfig(fit_type=fit_type, order=30))
        assert np.max(np.abs(res.model - smooth)[20:-20]) < 0.05, fit_type
    few, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="AKIMA_SPLINE", order=3))
    assert np.ptp(few.model) == 0.0  # < 5 bins -> constant
    flat = np.full((100, 32), 700.0)
    flat[0, 0] = 705.0
    assert fit_overscan(flat, None, OverscanConfig(fit_type="MEDIAN"))[0].model == 700.0
    assert fit_overscan(flat, None, OverscanConfig(fit_type="MEAN"))[0].model == pytest.approx(700.0 + 5 / 3200)
    assert fit_overscan(flat, None, OverscanConfig(fit_type="MEANCLIP"))[0].model == pytest.approx(700.0)
    mean_rows, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="MEAN_PER_ROW"))
    np.testing.assert_allclose(mean_rows.model, smooth, atol=1e-9)


def test_outliers_and_deviant_rows_are_rejected() -> None:
    rng = np.random.default_rng(4)
    n = 300
    truth = 1000.0 + 5.0 * np.arange(n) / n
    overscan = truth[:, None] + rng.normal(0.0, 0.2, (n, 32))
    overscan[50, :5] += 400.0  # a bleed entering a few columns: row outliers
    overscan[120, :] += 3000.0  # a whole row far off: beyond maxDeviation
    masked = np.zeros(overscan.shape, dtype=bool)
    masked[200, :] = True  # a fully saturated row: filled from its neighbours
    cfg = OverscanConfig(fit_type="MEDIAN_PER_ROW", overscan_is_int=False)
    res, deviant = fit_overscan(overscan, masked, cfg)
    assert deviant[120].all() and not deviant[50].any()
    err = np.abs(res.model - truth)
    assert err[50] < 0.2 and err[120] < 0.2 and err[200] < 0.2
    assert np.max(err) < 0.25
    assert res.n_masked >= 64
    # with POLY the collapsed row means also ignore the rejected pixels
    res_p, _ = fit_overscan(overscan, masked, cfg.model_copy(update={"fit_type": "POLY"}))
    assert np.max(np.abs(res_p.model - truth)) < 0.05
    # without the 3-sigma row rejection the bleed row is biased
    res_raw, _ = fit_overscan(overscan, masked, cfg.model_copy(update={"fit_type": "MEAN_PER_ROW", "num_sigma_clip": 1e12}))
    assert abs(res_raw.model[50] - truth[50]) > 10


def test_overscan_is_int_truncates_before_the_row_median() -> None:
    overscan = np.full((10, 4), 100.7)
    as_int, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="MEDIAN_PER_ROW", overscan_is_int=True))
    as_float, _ = fit_overscan(overscan, None, OverscanConfig(fit_type="MEDIAN_PER_ROW", overscan_is_int=False))
    assert np.all(as_int.model == 100.0) and np.allclose(as_float.model, 100.7)


# -- masking steps and CFHT specifics -----------------------------------------------------
def test_widen_saturation_trails_and_grow() -> None:
    mask = np.zeros((4, 60), dtype=np.int32)
    mask[0, 10:15] = SAT  # L=5 -> +0
    mask[1, 10:16] = SAT  # L=6 -> +1
    mask[2, 10:18] = SAT  # L=8 -> +3
    mask[3, 2:14] = SAT  # L=12 -> +4, clipped at the row start
    widen_saturation_trails(mask, SAT)
    widths = [int(np.count_nonzero(mask[j] & SAT)) for j in range(4)]
    assert widths == [5, 8, 14, 12 + 2 + 4]
    m = np.zeros((5, 5), dtype=np.int32)
    m[2, 2] = SAT
    assert grow_mask(m, SAT, 1) == 4
    assert np.count_nonzero(m) == 5 and not m[1, 1]


def test_cfht_saturation_from_the_histogram() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(1000, 2000, (200, 100)).astype(np.uint16)
    assert saturation_from_histogram(raw, {"SATURATE": 65535}) == 65535.0
    raw[:20, :10] = 64000  # the pile-up of saturated pixels
    raw[50, :30] = rng.integers(60001, 63000, 30)
    level = saturation_from_histogram(raw, {"SATURATE": 65535})
    width = (64000 + 1 - 60000) / 100
    assert 0.95 * (64000 - width) - 1 <= level <= 0.95 * 64000
    assert level == int(level)


def test_bad_amp_negative_variance_and_nan_masking(plan: Any) -> None:
    det = plan.detectors[0]
    header = _header(plan)
    raw = _frame(det, 3000, 1000)
    raw[_data_slice(det, 1)][10, 5:8] = 900  # below the overscan level: variance <= 0
    whole_amp = det.amplifiers[0].bbox
    bias_img = np.zeros(det.bbox.shape, dtype=np.float32)
    bias_img[20, 150] = np.nan
    bias = Exposure(MaskedImage(bias_img, None, np.zeros_like(bias_img)))
    cfg = NO_CALIBS.model_copy(update={"do_bias": True})
    r = run_isr(raw, header, bias=bias, defects=[whole_amp], config=cfg)
    e = r.exposure
    a = whole_amp.slices(e.bbox)
    assert np.all(e.mask[a] & BAD)
    assert "overscan_mean" not in r.metadata["amps"]["A"] and r.metadata["amps"]["A"]["bad_amp"]
    # amp A skipped the overscan: raw level kept, then interpolated over (BAD); amp B corrected
    assert e.mask[10, 128 + 5] & BAD and r.metadata["n_negative_variance"] == 3
    assert e.mask[20, 150] & UNMASKEDNAN and e.mask[20, 150] & INTRP
    assert np.isfinite(e.image).all() and np.isfinite(e.variance).all()
    assert e.image[20, 150] == pytest.approx(2000.0)


def test_missing_or_mismatched_calibrations_raise(plan: Any) -> None:
    det = plan.detectors[0]
    header = _header(plan)
    raw = _frame(det, 3000, 1000)
    cfg = IsrConfig(do_fringe=False)
    with pytest.raises(RuntimeError, match="no master bias"):
        run_isr(raw, header, config=cfg)
    ok = Exposure(MaskedImage.zeros(det.bbox))
    small = Exposure(MaskedImage.zeros(Box(0, 0, 10, 10)))
    with pytest.raises(RuntimeError, match="master dark covers"):
        run_isr(raw, header, bias=ok, dark=small, flat=ok, config=cfg)
    with pytest.raises(RuntimeError, match="no master flat"):
        run_isr(raw, header, bias=ok, dark=ok, config=cfg)
    del header["DARKTIME"]
    flat = Exposure(MaskedImage(np.ones(det.bbox.shape, np.float32)))
    with pytest.raises(RuntimeError, match="dark time"):
        run_isr(raw, header, bias=ok, dark=ok, flat=flat, config=cfg)
    with pytest.raises(ValueError, match="differs from the header"):
        run_isr(raw[:-1], header, config=NO_CALIBS)
    # the default config turns bias/flat on exactly when their masters are given
    assert run_isr(raw, _header(plan)).metadata["steps"].count("bias") == 0
    r = run_isr(raw, _header(plan), bias=ok, flat=flat)
    assert "bias" in r.metadata["steps"] and "flat" in r.metadata["steps"] and "dark" not in r.metadata["steps"]


def test_visit_info_wcs_photocalib_and_metadata(plan: Any) -> None:
    det = plan.detectors[0]
    header = _header(plan)
    e = run_isr(_frame(det, 3000, 1000), header, config=NO_CALIBS).exposure
    vi = e.visit_info
    assert vi is not None
    assert (vi.exposure_id, vi.detector, vi.detector_name) == (header["EXPNUM"], 13, "ccd13")
    assert vi.physical_filter == header["FILTER"] and vi.band == header["FILTER"][0]
    assert vi.exposure_time == header["EXPTIME"] and vi.dark_time == header["DARKTIME"]
    raw_wcs = assembled_wcs(header, det)
    assert raw_wcs is not None and e.wcs is not None
    from astropy.wcs import WCS

    w_raw = WCS(header, fix=False)
    ra_a, dec_a = e.wcs.pixel_to_world_values(100.0, 200.0)
    ra_r, dec_r = w_raw.pixel_to_world_values(132.0, 200.0)
    assert ra_a == pytest.approx(ra_r, abs=1e-10) and dec_a == pytest.approx(dec_r, abs=1e-10)
    assert e.photo_calib is not None
    assert e.photo_calib.zero_point == pytest.approx(28.0 + 2.5 * math.log10(header["EXPTIME"]))
    for key in ("DATASEC", "BIASSEC", "TRIMSEC", "GAIN", "CRPIX1"):
        assert key not in e.metadata
    assert e.metadata["ISR_OVERSCAN_MEDIAN_A"] == 1000.0
    assert e.metadata["isr"]["amps"]["B"]["median"] == pytest.approx(2000.0)


def test_unassembled_output_keeps_the_raw_frame(plan: Any) -> None:
    det = plan.detectors[0]
    raw = _frame(det, 3000, 1000)
    cfg = NO_CALIBS.model_copy(update={"do_assemble_ccd": False})
    e = run_isr(raw, _header(plan), config=cfg).exposure
    assert e.image.shape == raw.shape
    amp = det.amplifiers[0]
    assert np.all(e.image[amp.raw_data_bbox.slices(e.bbox)] == 2000)
    assert np.all(e.image[amp.raw_serial_overscan_bbox.slices(e.bbox)][: amp.raw_data_bbox.height] == 0)


def test_configs_carry_lsst_and_project_defaults() -> None:
    c = IsrConfig()
    assert (c.do_bias, c.do_dark, c.do_flat, c.do_suspect, c.do_interpolate) == (True, True, True, False, True)
    assert c.grow_saturation_footprint_size == 1 and c.num_edge_suspect == 0 and math.isnan(c.saturation)
    assert c.flat_scaling_type == "USER" and c.flat_user_scale == 1.0
    assert c.overscan.fit_type == "MEDIAN" and c.overscan.max_deviation == 1000.0 and c.overscan.overscan_is_int
    assert c.interpolation_planes() == ("SAT", "BAD", "UNMASKEDNAN")
    with pytest.raises(ValidationError):
        c.do_bias = False  # type: ignore[misc]
    with pytest.raises(ValidationError):
        OverscanConfig(do_parallel_overscan=True)
    with pytest.raises(ValidationError):
        OverscanConfig(fit_type="SPLINE")  # type: ignore[arg-type]
    m = cfht_isr_config()
    assert (m.do_dark, m.do_fringe, m.do_suspect, m.saturation_from_histogram) == (False, False, False, True)
    assert m.overscan.fit_type == "MEDIAN" and not m.overscan.overscan_is_int
    assert cfht_isr_config(have_bias=False).do_bias is False
    b, d, f = isr_config_for("bias"), isr_config_for("dark"), isr_config_for("flat")
    assert (b.do_bias, b.do_dark, b.do_flat, b.do_interpolate, b.do_saturation) == (False, False, False, False, True)
    assert (d.do_bias, d.do_dark, d.do_flat) == (True, False, False)
    assert (f.do_bias, f.do_dark, f.do_flat) == (True, True, False)
    with pytest.raises(ValueError):
        isr_config_for("fringe")  # type: ignore[arg-type]


# -- against the simulator's truth --------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return simulate("tiny", tmp_path_factory.mktemp("isr_tiny"), progress=False)


def _read(path: Path, ext: str) -> tuple[np.ndarray, fits.Header]:
    with fits.open(path) as hdul:
        return hdul[ext].data.copy(), hdul[ext].header.copy()


@pytest.fixture(scope="module")
def masters(sim: Any) -> dict[str, dict[str, Exposure]]:
    out: dict[str, dict[str, Exposure]] = {}
    for ext in sim.summary["detectors"]:
        bias = combine_bias(
            [run_isr(*_read(p, ext), config=isr_config_for("bias")).exposure for p in sim.calib_files["bias"]]
        )
        dark = combine_dark(
            [run_isr(*_read(p, ext), bias=bias, config=isr_config_for("dark")).exposure for p in sim.calib_files["dark"]]
        )
        flat = combine_flat(
            [
                run_isr(*_read(p, ext), bias=bias, dark=dark, config=isr_config_for("flat")).exposure
                for p in sim.calib_files["flat"]
            ]
        )
        out[ext] = {"bias": bias, "dark": dark, "flat": flat}
    return out


@pytest.mark.parametrize("ext", ["ccd13", "ccd22"])
def test_isr_matches_the_noise_free_truth(sim: Any, masters: Any, ext: str) -> None:
    path = sim.raw_files[0]
    raw, header = _read(path, ext)
    m = masters[ext]
    result = run_isr(raw, header, bias=m["bias"], dark=m["dark"], flat=m["flat"], config=isr_config_for("science", do_dark=True))
    e = result.exposure
    plan = plan_survey("tiny")
    task = plan.ccd_task(header["EXPNUM"], ext)
    # noise-free light at unit flat (with the same artifacts and cosmic rays), in electrons
    light, _, _ = render_electrons(task, RenderOptions(noise=False, flat=False, dark=False))
    det = task.detector
    gain = np.empty(det.bbox.width)
    for amp in det.amplifiers:
        gain[amp.bbox.x0 : amp.bbox.x1 + 1] = amp.gain
    resp = response_map(det, task.exposure.band, task.effects, task.seed)
    flat_good = (m["flat"].mask & BAD) == 0
    # the master flat (in ADU, mean 1) divides out response and gain up to one constant
    scale = float(np.mean((resp / gain[None, :])[flat_good]))
    model = light * scale
    bad = e.planes.bitmask("BAD", "SAT", "INTRP", "UNMASKEDNAN")
    sky = task.sky_e * scale
    source_free = ((e.mask & bad) == 0) & (np.abs(model - sky) < 1e-3 * sky)
    assert source_free.sum() > 0.5 * model.size
    chi2 = (e.image - model) ** 2 / e.variance
    assert abs(float(np.mean(chi2[source_free])) - 1.0) < 0.05
    # bleed trails of the saturated stars are SAT (and interpolated)
    _, _, saturated = render_electrons(task)
    assert saturated.sum() > 50
    assert np.all(e.mask[saturated] & SAT) and np.all(e.mask[saturated] & INTRP)
    # truth defect boxes are BAD and INTRP
    defects = Table.read(sim.truth_paths["defects"])
    rows = defects[defects["detector"] == ext]
    assert len(rows) > 0
    for row in rows:
        box = Box.from_size(int(row["width"]), int(row["height"]), int(row["x0"]), int(row["y0"]))
        sl = box.slices(e.bbox)
        assert np.all(e.mask[sl] & BAD) and np.all(e.mask[sl] & INTRP)


@pytest.mark.parametrize("fit_type", ["MEDIAN", "MEDIAN_PER_ROW"])
def test_overscan_level_matches_the_truth_readout(sim: Any, fit_type: str) -> None:
    readout = Table.read(sim.truth_paths["readout"])
    amps = Table.read(sim.truth_paths["amplifiers"])
    path = sim.raw_files[1]
    for ext in sim.summary["detectors"]:
        raw, header = _read(path, ext)
        cfg = NO_CALIBS.model_copy(update={"overscan": OverscanConfig(fit_type=fit_type, overscan_is_int=False)})
        result = run_isr(raw, header, config=cfg)
        n_raw = raw.shape[0]
        for amp in ("A", "B"):
            level = readout[(readout["expnum"] == header["EXPNUM"]) & (readout["detector"] == ext) & (readout["amp"] == amp)]
            a = amps[(amps["detector"] == ext) & (amps["amp"] == amp)][0]
            rows = np.arange(result.exposure.bbox.height)
            truth = (
                float(level["bias_level"][0])
                + a["ramp_amplitude_adu"] * np.exp(-rows / a["ramp_rows"])
                + a["slope_adu"] * rows / (n_raw - 1)
            )
            fit = result.overscans[amp]
            if fit_type == "MEDIAN":
                assert abs(fit.median - float(np.median(truth))) < 1.0
            else:
                assert abs(float(np.mean(fit.model - truth))) < 1.0
                assert float(np.sqrt(np.mean((fit.model - truth) ** 2))) < 1.5


def test_agrees_with_ccdproc(sim: Any, masters: Any) -> None:
    import astropy.units as u
    import ccdproc
    from astropy.nddata import CCDData

    ext = "ccd13"
    raw, header = _read(sim.raw_files[2], ext)
    m = masters[ext]
    det = plan_survey("tiny").detector(ext)
    # per-row medians of all overscan pixels (no 3-sigma row rejection) match ccdproc exactly
    cfg = IsrConfig(
        do_fringe=False,
        overscan=OverscanConfig(fit_type="MEDIAN_PER_ROW", overscan_is_int=False, num_sigma_clip=1e30),
    )
    ours = run_isr(raw, header, bias=m["bias"], dark=m["dark"], flat=m["flat"], config=cfg).exposure
    rbox = Box.from_size(det.raw_width, det.raw_height)
    pieces = []
    for amp in det.amplifiers:
        rows = slice(amp.raw_data_bbox.y0, amp.raw_data_bbox.y1 + 1)
        section = CCDData(raw[rows].astype(np.float64), unit="adu")
        os_cols = amp.raw_serial_overscan_bbox.slices(rbox)[1]
        corrected = ccdproc.subtract_overscan(section, overscan=section[:, os_cols], overscan_axis=1, median=True, model=None)
        data_cols = amp.raw_data_bbox.slices(rbox)[1]
        pieces.append(ccdproc.trim_image(corrected[:, data_cols]))
    ccd = CCDData(np.hstack([p.data for p in pieces]), unit="adu")
    ccd = ccdproc.subtract_bias(ccd, CCDData(m["bias"].image.astype(np.float64), unit="adu"))
    ccd = ccdproc.subtract_dark(
        ccd,
        CCDData(m["dark"].image.astype(np.float64), unit="adu"),
        dark_exposure=1.0 * u.s,
        data_exposure=float(header["DARKTIME"]) * u.s,
        scale=True,
    )
    ccd = ccdproc.flat_correct(ccd, CCDData(m["flat"].image.astype(np.float64), unit="adu"), norm_value=1.0)
    good = ours.mask == 0
    assert good.mean() > 0.9
    rel = np.abs(ours.image[good] - ccd.data[good]) / np.maximum(np.abs(ccd.data[good]), 1.0)
    assert float(rel.max()) < 1e-5


def test_edge_planes_and_flat_scaling(plan: Any) -> None:
    det = plan.detectors[0]
    raw = _frame(det, 3000, 1000)
    flat_img = np.full(det.bbox.shape, 2.0, dtype=np.float32)
    flat = Exposure(MaskedImage(flat_img, None, np.zeros_like(flat_img)))
    base = NO_CALIBS.model_copy(update={"do_flat": True, "num_edge_suspect": 2, "edge_mask_width": 3})
    e = run_isr(raw, _header(plan), flat=flat, defects=[], config=base).exposure
    suspect, edge = bitmask("SUSPECT"), bitmask("EDGE")
    assert np.all(e.mask[:2, :] & suspect) and not e.mask[2, 10] & suspect
    assert np.all(e.mask[:, -3:] & edge) and not e.mask[10, -4] & edge
    np.testing.assert_allclose(e.image[10:-10, 10:-10], 1000.0)  # USER scale 1: image / flat
    for kind in ("MEAN", "MEDIAN"):
        cfg = base.model_copy(update={"flat_scaling_type": kind})
        e2 = run_isr(raw, _header(plan), flat=flat, defects=[], config=cfg).exposure
        np.testing.assert_allclose(e2.image[10:-10, 10:-10], 500.0)
