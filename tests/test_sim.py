"""The survey simulator on the ``tiny`` preset: real-format raw files that match the truth."""

from __future__ import annotations

import csv
import dataclasses
import filecmp
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from astro_metadata_translator import ObservationInfo
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning

from coadd_core.camera import Detector, load_camera
from coadd_core.sim import PRESETS, RenderOptions, SimulationResult, get_preset, plan_survey, simulate
from coadd_core.sim.calibs import response_map
from coadd_core.sim.geometry import gnomonic, inverse_gnomonic
from coadd_core.sim.render import bleed_saturation, render_electrons
from coadd_core.sim.artifacts import draw_trail


# -- fixtures and helpers ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimulationResult:
    return simulate("tiny", tmp_path_factory.mktemp("tiny"), progress=False)


@pytest.fixture(scope="module")
def truth(sim: SimulationResult) -> dict[str, Table]:
    return {k: Table.read(p) for k, p in sim.truth_paths.items() if p.suffix == ".ecsv"}


@pytest.fixture(scope="module")
def plan():
    return plan_survey("tiny")


def header_wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        # MegaPrime writes DATE-OBS without the time (it is in UTC-OBS); wcslib notes it
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def science_file(sim: SimulationResult, expnum: int) -> Path:
    return sim.out_dir / "raw" / f"{expnum}o.fits"


def overscan_corrected(data: np.ndarray, det: Detector) -> np.ndarray:
    """Raw frame (float) with each amp's per-row serial-overscan median subtracted."""
    out = data.astype(np.float64)
    for amp in det.amplifiers:
        rows = slice(0, det.raw_height)
        level = np.median(out[rows, amp.raw_serial_overscan_bbox.x0 : amp.raw_serial_overscan_bbox.x1 + 1], axis=1)
        cols = amp.raw_bbox.union(amp.raw_serial_overscan_bbox)
        out[rows, cols.x0 : cols.x1 + 1] -= level[:, None]
    return out


def electrons(data: np.ndarray, det: Detector) -> np.ndarray:
    """Raw frame in electrons: overscan subtracted, times each amp's gain."""
    out = overscan_corrected(data, det)
    for amp in det.amplifiers:
        cols = amp.raw_bbox.union(amp.raw_serial_overscan_bbox)
        out[:, cols.x0 : cols.x1 + 1] *= amp.gain
    return out


def raw_star_positions(wcs: WCS, catalog: Table) -> tuple[np.ndarray, np.ndarray]:
    x, y = wcs.wcs_world2pix(np.asarray(catalog["ra"]), np.asarray(catalog["dec"]), 0)
    return np.asarray(x), np.asarray(y)


def segment_distance(x: np.ndarray, y: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Distance of points from the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def aperture_flux(img: np.ndarray, det: Detector, x: float, y: float, radius: float, outer: float) -> float | None:
    """Sky-subtracted flux within ``radius`` of a raw position, sky from the imaging pixels
    between ``radius + 2`` and ``outer``; None when the aperture leaves the imaging area."""
    data = det.data_section()
    if not (data.x0 + radius <= x <= data.x1 - radius and data.y0 + radius <= y <= data.y1 - radius):
        return None
    n = int(math.ceil(outer))
    xa, xb = max(int(x) - n, data.x0), min(int(x) + n + 1, data.x1 + 1)
    ya, yb = max(int(y) - n, data.y0), min(int(y) + n + 1, data.y1 + 1)
    win = img[ya:yb, xa:xb]
    wy, wx = np.mgrid[ya:yb, xa:xb]
    rr = np.hypot(wx - x, wy - y)
    sky = np.median(win[(rr > radius + 2) & (rr <= outer)])
    return float((win[rr <= radius] - sky).sum())


_ALL_SOURCES: dict[tuple[int, int, str], np.ndarray] = {}


class RawCcd:
    """One CCD of one science file, in electrons, with what the truth says lies on it."""

    def __init__(self, hdu: fits.ImageHDU, expnum: int, truth: dict[str, Table], plan) -> None:
        self.name = hdu.name
        self.expnum = expnum
        self.det = plan.detector(hdu.name)
        self.wcs = header_wcs(hdu.header)
        self.raw = hdu.data
        self.e = electrons(hdu.data, self.det)
        self.truth = truth
        self.offset = self.det.amplifiers[0].raw_x_offset
        self.saturation = hdu.header["SATURATE"]

    def without_others(self, plan, source_id: int) -> np.ndarray:
        """Electrons with every other catalog source removed (their noise-free render)."""
        task = plan.ccd_task(self.expnum, self.name)
        options = RenderOptions(noise=False, sky=False, artifacts=False, dark=False)
        key = (plan.seed, self.expnum, self.name)
        if key not in _ALL_SOURCES:
            _ALL_SOURCES[key] = render_electrons(task, options)[0]
        everything = _ALL_SOURCES[key]
        keep = task.sources["id"] == source_id
        alone, _, _ = render_electrons(dataclasses.replace(task, sources=task.sources[keep]), options)
        out = self.e.copy()
        for amp in self.det.amplifiers:
            out[amp.raw_data_bbox.slices(self.det.raw_bbox)] -= (everything - alone)[amp.bbox.slices(self.det.bbox)]
        return out

    def project(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.wcs.wcs_world2pix(np.atleast_1d(ra), np.atleast_1d(dec), 0)
        return np.asarray(x), np.asarray(y)

    def clear(
        self, x: np.ndarray, y: np.ndarray, radius: float, exclude_id: int | None = None, neighbours: bool = True
    ) -> np.ndarray:
        """Raw positions whose ``radius`` neighbourhood holds only sky: no edge, defect,
        saturated star, trail, ghost, cosmic ray or (with ``neighbours``) other source."""
        x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
        data = self.det.data_section()
        ok = (x > data.x0 + radius) & (x < data.x1 - radius) & (y > data.y0 + radius) & (y < data.y1 - radius)
        for d in self.det.defects:
            ok &= ~((np.abs(x - self.offset - 0.5 * (d.x0 + d.x1)) < radius + d.width) & (y > d.y0 - radius))
        cat = self.truth["catalog"]
        others = cat[cat["id"] != exclude_id] if exclude_id is not None else cat
        cx, cy = self.project(others["ra"], others["dec"])
        for px, py, is_bright in zip(cx, cy, np.asarray(others["bright"])):
            if is_bright:  # halo, and the bleed trail along the columns
                ok &= (np.hypot(x - px, y - py) > radius + 40) & ~(
                    (np.abs(x - px) < radius + 12) & (np.abs(y - py) < radius + 120)
                )
            elif neighbours:
                ok &= np.hypot(x - px, y - py) > radius
        rays = self.truth["cosmic_rays"]
        for r in rays[(rays["expnum"] == self.expnum) & (rays["detector"] == self.name)]:
            ok &= segment_distance(x, y, r["x0_raw"], r["y0_raw"], r["x1_raw"], r["y1_raw"]) > radius + 3
        for t in self.truth["trails"][self.truth["trails"]["expnum"] == self.expnum]:
            (x1, x2), (y1, y2) = self.project([t["ra1"], t["ra2"]], [t["dec1"], t["dec2"]])
            dist = np.abs((x2 - x1) * (y1 - y) - (x1 - x) * (y2 - y1)) / math.hypot(x2 - x1, y2 - y1)
            ok &= dist > radius + 2.5 * t["width_fwhm_arcsec"] / 0.185
        for g in self.truth["ghosts"][self.truth["ghosts"]["expnum"] == self.expnum]:
            gx, gy = self.project(g["ra"], g["dec"])
            ok &= np.hypot(x - gx[0], y - gy[0]) > radius + 1.3 * g["radius_arcsec"] / 0.185
        for k in np.flatnonzero(ok):  # stars saturated in good seeing are no use either
            ix, iy = int(round(x[k])), int(round(y[k]))
            r = int(radius)
            ok[k] = not np.any(self.raw[iy - r : iy + r + 1, ix - r : ix + r + 1] >= self.saturation)
        return ok


def science_ccds(sim: SimulationResult, truth: dict[str, Table], plan):
    for path in sim.raw_files:
        with fits.open(path) as hdul:
            expnum = hdul[0].header["EXPNUM"]
            for hdu in hdul[1:]:
                yield RawCcd(hdu, expnum, truth, plan)


# -- configuration -----------------------------------------------------------------------
def test_presets() -> None:
    assert set(PRESETS) == {"tiny", "small", "demo", "full"}
    with pytest.raises(ValueError):
        get_preset("huge")
    tiny = get_preset("tiny")
    assert len(tiny.detectors) == 2 and tiny.observing.n_visits == 4
    demo = get_preset("demo")
    assert [d.name for d in demo.detectors] == ["ccd12", "ccd13", "ccd21", "ccd22"]
    assert demo.observing.n_visits == 8 and 30 <= demo.observing.rotation_deg <= 90
    assert demo.calibrations.n_bias == demo.calibrations.n_dark == demo.calibrations.n_flat == 3
    assert len(get_preset("full").detectors) == 36
    with pytest.raises(ValueError):
        tiny.model_validate({**tiny.model_dump(), "detectors": []})
    with pytest.raises(ValueError):
        tiny.model_validate({**tiny.model_dump(), "artifacts": {"trail_visits": [9]}})


def test_demo_plan_covers_the_central_ccds() -> None:
    plan = plan_survey("demo")
    assert all(d.bbox.shape == (4612, 2048) for d in plan.detectors)
    science = plan.science
    assert len(science) == 8 and sum(e.rotation_deg != 0 for e in science) == 1
    assert [e.kind for e in plan.exposures].count("flat") == 3
    # every special object is seen by the rotated visit too
    kinds = np.asarray(plan.catalog["kind"])
    assert {"star", "galaxy", "variable", "asteroid"} <= set(kinds)
    rotated = next(e for e in science if e.rotation_deg)
    special = plan.catalog[(kinds == "variable") | np.asarray(plan.catalog["bright"])]
    seen = np.zeros(len(special), bool)
    for det in plan.detectors:
        view = plan.view(rotated, det)
        x, y = view.sky_to_pixel(special["ra"], special["dec"])
        seen |= view.contains(x, y)
    assert seen.mean() >= 0.5


# -- files and headers ---------------------------------------------------------------------
def test_layout_and_summary(sim: SimulationResult) -> None:
    raw = sorted(p.name for p in (sim.out_dir / "raw").iterdir())
    assert len(raw) == 8 and all(p.endswith(".fits") for p in raw)
    assert [p.name[-6] for p in sim.raw_files] == ["o"] * 4
    assert {k: [p.name[-6] for p in v] for k, v in sim.calib_files.items()} == {
        "bias": ["b", "b"], "dark": ["d"], "flat": ["f"]
    }
    assert sim.refcat_path == sim.out_dir / "refcat" / "refcat_sim_ps1.csv"
    for key in ("catalog", "visits", "epochs", "trails", "ghosts", "cosmic_rays", "defects", "simulation"):
        assert sim.truth_paths[key].exists()
    s = sim.summary
    assert (s["n_science"], s["n_bias"], s["n_dark"], s["n_flat"]) == (4, 2, 1, 1)
    for key in ("n_stars", "n_galaxies", "n_variables", "n_asteroids", "n_trails", "n_ghosts", "n_cosmic_rays", "n_saturating_stars"):
        assert s[key] > 0, key


def test_mef_structure(sim: SimulationResult) -> None:
    for path in sim.all_raw_files:
        with fits.open(path) as hdul:
            assert hdul[0].data is None and hdul[0].header["NEXTEND"] == 2
            assert [h.name for h in hdul[1:]] == ["ccd13", "ccd22"]
            for hdu in hdul[1:]:
                h = hdu.header
                assert h["INHERIT"] is False and h["BITPIX"] == 16
                assert h["BZERO"] == 32768 and h["BSCALE"] == 1
                assert hdu.data.dtype == np.uint16 and hdu.data.shape == (544, 320)
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            stored = hdul[1].data
            assert stored.dtype.kind == "i" and stored.dtype.itemsize == 2
        with fits.open(path) as hdul:
            assert np.array_equal(hdul[1].data.astype(np.int32) - 32768, stored.astype(np.int32))


def test_observation_info_on_every_extension(sim: SimulationResult, truth: dict[str, Table]) -> None:
    exposures = {int(r["expnum"]): r for r in truth["exposures"]}
    expected_type = {"science": "science", "bias": "bias", "dark": "dark", "flat": "flat"}
    for path in sim.all_raw_files:
        with fits.open(path) as hdul:
            primary = ObservationInfo(hdul[0].header)
            for hdu in hdul[1:]:
                info = ObservationInfo(hdu.header, pedantic=True)
                row = exposures[info.exposure_id]
                assert primary.exposure_id == info.exposure_id == int(path.name[:-6])
                assert info.visit_id == info.exposure_id
                assert info.instrument == "MegaPrime"
                assert info.detector_name == hdu.name
                assert info.detector_num == int(hdu.name[3:])
                assert info.detector_exposure_id == info.exposure_id * 36 + info.detector_num
                assert info.physical_filter == row["physical_filter"]
                assert info.physical_filter.split(".")[0] == row["band"]
                assert info.observation_type == expected_type[row["kind"]]
                assert info.exposure_time.to_value("s") == pytest.approx(row["exposure_time"])
                assert info.dark_time.to_value("s") == pytest.approx(row["dark_time"])
                begin = Time(row["mjd_start"], format="mjd", scale="utc")
                assert abs((info.datetime_begin - begin).to_value("s")) < 1e-3
                assert abs((info.datetime_end - info.datetime_begin).to_value("s") - row["exposure_time"]) < 1e-3
                assert info.tracking_radec.ra.deg == pytest.approx(row["ra_deg"], abs=1e-6)
                assert info.boresight_airmass == pytest.approx(row["airmass"])
                assert info.detector_serial == hdu.header["CCDNAME"]


def test_header_sections_describe_the_detector(sim: SimulationResult, plan) -> None:
    camera = load_camera("MegaPrime")
    with fits.open(sim.raw_files[0]) as hdul:
        for hdu in hdul[1:]:
            h = hdu.header
            det = camera.detector_from_header(h)
            expected = plan.detector(hdu.name)
            assert det.amplifiers == expected.amplifiers
            assert det.defects == expected.defects and det.rotation_deg == expected.rotation_deg
            assert det.center_mm == pytest.approx(expected.center_mm, abs=1e-9)
            a, b = det.amplifiers
            assert h["DATASEC"] == "[33:288,1:512]" and h["BIASSEC"] == "[0:0,0:0]"
            assert a.raw_data_bbox.to_fits_section() == h["DSECA"] == h["TSECA"] == "[33:160,1:512]"
            assert b.raw_data_bbox.to_fits_section() == h["DSECB"] == "[161:288,1:512]"
            assert a.raw_serial_overscan_bbox.to_fits_section() == h["BSECA"] == "[1:32,1:544]"
            assert b.raw_serial_overscan_bbox.to_fits_section() == h["BSECB"] == "[289:320,1:544]"
            assert a.bbox.to_fits_section() == h["CSECA"] and b.bbox.to_fits_section() == h["CSECB"]
            assert (a.gain, b.gain) == (h["GAINA"], h["GAINB"])
            assert a.saturation == h["SATURATE"]
            # the rotated half has the flipped CD signs
            sign = 1.0 if det.rotation_deg == 180 else -1.0
            assert h["CD1_1"] == pytest.approx(sign * 0.185 / 3600) and h["CD2_2"] == pytest.approx(-sign * 0.185 / 3600)


# -- rendering against the truth -------------------------------------------------------------
def test_noise_free_isolated_star_holds_catalog_flux(plan, truth: dict[str, Table]) -> None:
    exp = plan.science[0]
    visit = truth["visits"][truth["visits"]["expnum"] == exp.expnum][0]
    catalog = truth["catalog"]
    stars = {int(r["id"]): r for r in catalog if r["kind"] == "star" and not r["bright"]}
    checked = 0
    for det in plan.detectors:
        task = plan.ccd_task(exp, det)
        h, w = det.bbox.shape
        for k, src in enumerate(task.sources):
            row = stars.get(int(src["id"]))
            r = int(src["radius"])
            if row is None or not (r < src["x"] < w - 1 - r and r < src["y"] < h - 1 - r):
                continue
            if any(abs(src["x"] - (d.x0 + d.x1) / 2) < r + 2 for d in det.defects):
                continue
            expected = 10 ** (0.4 * (visit["zero_point"] - row["r_mag"])) * visit["exposure_time"]
            assert src["counts"] == pytest.approx(expected, rel=1e-9)
            alone = dataclasses.replace(task, sources=task.sources[k : k + 1])
            ix, iy = int(round(src["x"])), int(round(src["y"]))
            box = (slice(iy - r, iy + r + 1), slice(ix - r, ix + r + 1))
            off = RenderOptions(noise=False, sky=False, artifacts=False, dark=False, flat=False)
            plain, _, _ = render_electrons(alone, off)
            assert plain[box].sum() == pytest.approx(expected, rel=5e-3)
            assert plain.sum() == pytest.approx(expected, rel=5e-3)
            image, _, _ = render_electrons(alone, dataclasses.replace(off, flat=True))
            flat = response_map(det, exp.band, plan.config.effects, plan.seed)
            # the flat scales the star by its PSF-weighted response (1 % pixel noise averages out)
            weighted = float((plain[box] * flat[box]).sum() / plain[box].sum())
            assert image[box].sum() == pytest.approx(expected * weighted, rel=5e-3)
            assert weighted == pytest.approx(float(np.median(flat[box])), rel=0.01)
            checked += 1
            break
    assert checked == len(plan.detectors)


def test_header_wcs_maps_truth_stars_to_their_peak(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    catalog = truth["catalog"]
    stars = catalog[(catalog["kind"] == "star") & ~catalog["bright"] & (catalog["r_mag"] < 20.5)]
    checked = 0
    for ccd in science_ccds(sim, truth, plan):
        for row in stars:
            x, y = ccd.project(row["ra"], row["dec"])
            # raw x = assembled x + 32: the header WCS refers to the untrimmed frame
            if not ccd.clear(x, y, 12, exclude_id=row["id"], neighbours=False)[0]:
                continue
            sx, sy = float(x[0]), float(y[0])
            ix, iy = int(round(sx)), int(round(sy))
            img = ccd.without_others(plan, int(row["id"]))
            win = img[iy - 4 : iy + 5, ix - 4 : ix + 5]
            # peak of the 3x3-smoothed star, so noise cannot move it on a broad PSF
            smooth = sum(win[1 + dy : 8 + dy, 1 + dx : 8 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            py, px = np.unravel_index(np.argmax(smooth), smooth.shape)
            assert abs(ix - 3 + px - sx) <= 1.0 and abs(iy - 3 + py - sy) <= 1.0
            signal = np.clip(win - np.median(img[iy - 12 : iy + 13, ix - 12 : ix + 13]), 0, None)
            wy, wx = np.mgrid[-4:5, -4:5]
            cx = ix + (signal * wx).sum() / signal.sum()
            cy = iy + (signal * wy).sum() / signal.sum()
            assert math.hypot(cx - sx, cy - sy) < 0.5
            checked += 1
    assert checked >= 3


def test_trails_follow_the_truth_great_circle(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    for trail in truth["trails"]:
        crossed = trail["detectors"].split(",")
        assert crossed and crossed != [""]
        # the great-circle midpoint projects onto the straight pixel line (TAN property)
        v1 = _unit(trail["ra1"], trail["dec1"])
        v2 = _unit(trail["ra2"], trail["dec2"])
        mid = (v1 + v2) / np.linalg.norm(v1 + v2)
        mid_ra, mid_dec = math.degrees(math.atan2(mid[1], mid[0])) % 360, math.degrees(math.asin(mid[2]))
        sigma = trail["width_fwhm_arcsec"] / 2.3548 / 0.185
        step = int(math.ceil(6 * sigma + 3))
        on, off, far = [], [], []
        with fits.open(science_file(sim, trail["expnum"])) as hdul:
            for name in crossed:
                ccd = RawCcd(hdul[name], int(trail["expnum"]), truth, plan)
                (x1, x2), (y1, y2) = ccd.project([trail["ra1"], trail["ra2"]], [trail["dec1"], trail["dec2"]])
                mx, my = ccd.project(mid_ra, mid_dec)
                dist = abs((x2 - x1) * (y1 - my[0]) - (x1 - mx[0]) * (y2 - y1)) / math.hypot(x2 - x1, y2 - y1)
                assert dist < 1e-3
                assert abs(y2 - y1) > abs(x2 - x1)
                cat = truth["catalog"]
                sx, sy = ccd.project(cat["ra"], cat["dec"])
                for yy in range(2, 510):
                    xl = x1 + (yy - y1) * (x2 - x1) / (y2 - y1)
                    for side in (1, -1):
                        xs = [xl, xl + side * step, xl + side * 2 * step]
                        if not (34 <= min(xs) and max(xs) <= 285):
                            continue
                        cols = [int(round(v)) for v in xs]
                        near_defect = any(
                            abs(c - 32 - 0.5 * (d.x0 + d.x1)) < 3 and yy >= d.y0 for c in cols for d in ccd.det.defects
                        )
                        near_source = np.any(np.hypot(sx - xs[1], sy - yy) < 25) or np.any(np.hypot(sx - xs[2], sy - yy) < 25)
                        if not (near_defect or near_source):
                            on.append(ccd.e[yy, cols[0]])
                            off.append(ccd.e[yy, cols[1]])
                            far.append(ccd.e[yy, cols[2]])
                        break
        assert len(on) > 60
        excess = np.median(np.array(on) - np.array(off))
        assert excess > 0.5 * trail["peak_e"]
        assert abs(np.median(np.array(off) - np.array(far))) < 0.03 * trail["peak_e"]


def _unit(ra: float, dec: float) -> np.ndarray:
    a, d = math.radians(ra), math.radians(dec)
    return np.array([math.cos(d) * math.cos(a), math.cos(d) * math.sin(a), math.sin(d)])


def test_ghost_is_centred_where_the_truth_says(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    ghost = truth["ghosts"][0]
    assert ghost["detector"]
    with fits.open(science_file(sim, ghost["expnum"])) as hdul:
        ccd = RawCcd(hdul[ghost["detector"]], int(ghost["expnum"]), truth, plan)
    gx, gy = ccd.project(ghost["ra"], ghost["dec"])
    assert gx[0] - 32 == pytest.approx(ghost["x"], abs=1e-6) and gy[0] == pytest.approx(ghost["y"], abs=1e-6)
    img = ccd.e[:512, 32:288]
    yy, xx = np.mgrid[0:512, 0:256]
    r = np.hypot(xx - ghost["x"], yy - ghost["y"]) * 0.185
    outer, inner = ghost["radius_arcsec"], ghost["inner_radius_arcsec"]
    ring = np.median(img[(r > inner * 1.4) & (r < outer * 0.85)])
    hole = np.median(img[r < inner * 0.6])
    outside = np.median(img[(r > outer * 1.4) & (r < outer * 2.5)])
    assert ring - outside > 0.6 * ghost["peak_e"]
    assert hole - outside < 0.4 * ghost["peak_e"]


def test_asteroid_moves_as_the_truth_says(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    epochs = truth["epochs"][truth["epochs"]["kind"] == "asteroid"]
    assert len(epochs) == 4
    row = truth["catalog"][truth["catalog"]["kind"] == "asteroid"][0]
    measured = []
    for ep in epochs:
        assert ep["detector"], "asteroid off the CCDs"
        with fits.open(science_file(sim, ep["expnum"])) as hdul:
            hdu = hdul[ep["detector"]]
            wcs = header_wcs(hdu.header)
            x, y = wcs.wcs_world2pix([ep["ra"]], [ep["dec"]], 0)
            assert x[0] == pytest.approx(ep["x_raw"], abs=1e-6) and y[0] == pytest.approx(ep["y_raw"], abs=1e-6)
            ccd = RawCcd(hdu, int(ep["expnum"]), truth, plan)
            data = ccd.without_others(plan, int(row["id"]))
        ix, iy = int(round(x[0])), int(round(y[0]))
        win = data[iy - 9 : iy + 10, ix - 9 : ix + 10]
        border = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
        signal = np.clip(win - np.median(border), 0, None)
        wy, wx = np.mgrid[-9:10, -9:10]
        cx = ix + (signal * wx).sum() / signal.sum()
        cy = iy + (signal * wy).sum() / signal.sum()
        if ccd.clear(x, y, 10, neighbours=False)[0]:  # no cosmic ray on it
            assert math.hypot(cx - x[0], cy - y[0]) < 1.0
        ra, dec = wcs.wcs_pix2world([cx], [cy], 0)
        measured.append((ra[0], dec[0], ep["mjd_mid"]))
    # truth positions follow the recorded rate, and so do the measured ones
    (ra0, dec0, t0), (ra1, dec1, t1) = measured[0], measured[-1]
    sep = math.hypot((ra1 - ra0) * math.cos(math.radians(dec0)), dec1 - dec0) * 3600
    expected = row["ast_rate_arcsec_per_hour"] * (t1 - t0) * 24
    assert expected > 3.0
    assert sep == pytest.approx(expected, abs=0.5)
    truth_sep = math.hypot((epochs["ra"][-1] - epochs["ra"][0]) * math.cos(math.radians(dec0)), epochs["dec"][-1] - epochs["dec"][0])
    assert truth_sep * 3600 == pytest.approx(expected, rel=1e-6)


def test_variable_stars_change_flux_every_visit(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    epochs = truth["epochs"][truth["epochs"]["kind"] == "variable"]
    rays = truth["cosmic_rays"]
    for vid in set(epochs["id"]):
        ep = epochs[epochs["id"] == vid]
        assert len(ep) == 4 and np.all(np.abs(np.diff(ep["mag"])) > 0.02)
        ratios = []
        for e in ep:
            fwhm = plan.exposure(int(e["expnum"])).conditions.seeing_fwhm_arcsec / 0.185
            rad = 2.0 * fwhm  # the same fraction of a Moffat of any width
            n = int(rad * 2) + 4
            hits = rays[(rays["expnum"] == e["expnum"]) & (rays["detector"] == e["detector"])]
            near = [segment_distance(e["x_raw"], e["y_raw"], *r) < n + 3 for r in hits["x0_raw", "y0_raw", "x1_raw", "y1_raw"]]
            if any(near):
                continue  # a cosmic ray in the aperture or the sky annulus
            det = plan.detector(e["detector"])
            with fits.open(science_file(sim, e["expnum"])) as hdul:
                img = RawCcd(hdul[e["detector"]], int(e["expnum"]), truth, plan).without_others(plan, int(vid))
            flux = aperture_flux(img, det, e["x_raw"], e["y_raw"], rad, n)
            if flux is not None:
                # a Moffat keeps 1 - (1 + (2 FWHM / alpha)^2)^(1 - beta) inside 2 FWHM
                beta = plan.config.observing.moffat_beta
                inside = 1 - (1 + (4 * math.sqrt(2 ** (1 / beta) - 1)) ** 2) ** (1 - beta)
                response = response_map(det, "r", plan.config.effects, plan.seed)
                flat = np.median(response[int(e["y"]) - 3 : int(e["y"]) + 4, int(e["x"]) - 3 : int(e["x"]) + 4])
                ratios.append(flux / (e["counts_e"] * inside * flat))
        # measured / truth is the same in every visit (the flat and aperture losses cancel)
        assert len(ratios) >= 2
        assert ratios == pytest.approx(np.ones(len(ratios)), rel=0.04)


def test_bias_level_and_ramp_in_the_overscan(sim: SimulationResult, truth: dict[str, Table]) -> None:
    amps = {(r["detector"], r["amp"]): r for r in truth["amplifiers"]}
    levels = {(int(r["expnum"]), r["detector"], r["amp"]): r["bias_level"] for r in truth["readout"]}
    camera = load_camera("MegaPrime")
    for path in (sim.calib_files["bias"][0], sim.raw_files[1]):
        with fits.open(path) as hdul:
            expnum = hdul[0].header["EXPNUM"]
            for hdu in hdul[1:]:
                det = camera.detector_from_header(hdu.header)
                for amp in det.amplifiers:
                    box = amp.raw_serial_overscan_bbox
                    over = hdu.data[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1].astype(float)
                    rows = np.arange(box.y0, box.y1 + 1)
                    a = amps[(hdu.name, amp.name)]
                    model = (
                        levels[(expnum, hdu.name, amp.name)]
                        + a["ramp_amplitude_adu"] * np.exp(-rows / a["ramp_rows"])
                        + a["slope_adu"] * rows / (det.raw_height - 1)
                    )
                    per_row = over.mean(axis=1)
                    resid = per_row - model
                    noise = amp.read_noise / amp.gain / math.sqrt(box.width)
                    assert abs(np.mean(resid)) < 0.3
                    assert np.std(resid) < 1.5 * noise + 0.1
                    # the ramp: the first rows sit above the later ones as the model says
                    early, late = slice(0, 4), slice(200, 300)
                    measured_ramp = per_row[early].mean() - per_row[late].mean()
                    assert measured_ramp == pytest.approx(model[early].mean() - model[late].mean(), abs=1.5)
                    assert measured_ramp > 3.0


def test_saturated_stars_bleed_at_the_saturation_level(sim: SimulationResult, truth: dict[str, Table]) -> None:
    bright = truth["catalog"][truth["catalog"]["bright"]]
    found = 0
    for path in sim.raw_files:
        with fits.open(path) as hdul:
            for hdu in hdul[1:]:
                sat_level = hdu.header["SATURATE"]
                data = hdu.data
                assert data[:512, 32:288].max() <= sat_level
                x, y = raw_star_positions(header_wcs(hdu.header), bright)
                for sx, sy in zip(x, y):
                    if not (40 <= sx <= 280 and 20 <= sy <= 490):
                        continue
                    ix, iy = int(round(sx)), int(round(sy))
                    sat = data[:512, ix - 15 : ix + 16] == sat_level
                    ys, xs = np.nonzero(sat)
                    assert sat[iy, 15], "star core not saturated"
                    height = ys.max() - ys.min() + 1
                    width = xs.max() - xs.min() + 1
                    assert height > 2.5 * width
                    assert ys.min() < iy - 10 and ys.max() > iy + 10
                    found += 1
    assert found >= 3


def test_bleeding_conserves_charge() -> None:
    col = np.zeros((200, 3), dtype=np.float32)
    col[100, 1] = 1.0e6
    col[104, 1] = 3.0e5
    col[50, 2] = 2.0e5
    fw = np.array([1e5, 1e5, 1e5])
    before = col.sum(axis=0)
    mask = bleed_saturation(col, fw)
    assert np.allclose(col.sum(axis=0), before, rtol=1e-6)
    assert col.max() <= 1e5 * (1 + 1e-6)
    run = np.flatnonzero(mask[:, 1])
    assert run.size == 12 and np.all(np.diff(run) == 1) and run[0] < 100 < run[-1]
    assert mask[:, 2].sum() == 1 and not mask[:, 0].any()


def test_bad_columns_where_the_defects_say(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    defects = truth["defects"]
    assert set(defects["kind"]) <= {"dead", "hot"}
    exp = plan.science[0]
    with fits.open(science_file(sim, exp.expnum)) as hdul:
        for d in defects:
            det = plan.detector(d["detector"])
            img = electrons(hdul[d["detector"]].data, det)[:512, 32:288]
            rows = slice(d["y0"], d["y0"] + d["height"])
            inside = np.median(img[rows, d["x0"] : d["x0"] + d["width"]])
            left = img[rows, max(d["x0"] - 3, 0) : d["x0"] - 1]
            right = img[rows, d["x0"] + d["width"] + 1 : d["x0"] + d["width"] + 3]
            neighbours = np.median(np.concatenate([left.ravel(), right.ravel()]))
            if d["kind"] == "dead":
                assert inside < 0.2 * neighbours
            else:
                hot = plan.config.effects.hot_column_rate * exp.dark_time
                assert inside - neighbours > 0.7 * hot
            # and nowhere else: the rows of that column below the box look like their neighbours
            if d["y0"] > 20:
                rows = slice(0, d["y0"] - 5)
                below = np.median(img[rows, d["x0"]])
                side = np.median(np.concatenate([img[rows, d["x0"] - 3 : d["x0"] - 1].ravel(), img[rows, d["x0"] + d["width"] + 1 : d["x0"] + d["width"] + 3].ravel()]))
                assert abs(below - side) < 0.1 * side


def test_cosmic_rays_land_where_the_truth_says(sim: SimulationResult, truth: dict[str, Table]) -> None:
    rays = truth["cosmic_rays"]
    kinds = {int(r["expnum"]): r["kind"] for r in truth["exposures"]}
    assert not any(kinds[int(e)] == "bias" for e in rays["expnum"])
    assert any(kinds[int(e)] == "dark" for e in rays["expnum"])
    ok = total = 0
    for path in sim.raw_files:
        with fits.open(path) as hdul:
            expnum = hdul[0].header["EXPNUM"]
            for hdu in hdul[1:]:
                sel = rays[(rays["expnum"] == expnum) & (rays["detector"] == hdu.name)]
                assert len(sel) >= 4
                data = hdu.data.astype(float)
                wcs = header_wcs(hdu.header)
                for r in sel:
                    assert r["x0_raw"] - r["x0"] == pytest.approx(32.0)
                    mx = 0.5 * (r["x0_raw"] + r["x1_raw"])
                    my = 0.5 * (r["y0_raw"] + r["y1_raw"])
                    px, py = wcs.wcs_world2pix([r["ra"]], [r["dec"]], 0)
                    assert px[0] == pytest.approx(mx, abs=1e-4) and py[0] == pytest.approx(my, abs=1e-4)
                    ix, iy = int(np.floor(mx + 0.5)), int(np.floor(my + 0.5))
                    if not (35 <= ix <= 284 and 3 <= iy <= 508):
                        continue
                    local = np.median(data[iy - 3 : iy + 4, ix - 3 : ix + 4])
                    total += 1
                    ok += data[iy, ix] - local > 100
    assert total > 10 and ok / total > 0.85


def test_calibration_frames(sim: SimulationResult, plan) -> None:
    flat_exp = next(e for e in plan.exposures if e.kind == "flat")
    with fits.open(sim.calib_files["flat"][0]) as flat, fits.open(sim.calib_files["bias"][0]) as bias:
        for name in ("ccd13", "ccd22"):
            det = plan.detector(name)
            b = overscan_corrected(bias[name].data, det)[:512, 32:288]
            assert abs(np.mean(b)) < 1.0
            f = overscan_corrected(flat[name].data, det)[:512, 32:288]
            response = response_map(det, flat_exp.band, plan.config.effects, plan.seed)
            gain_a, gain_b = (a.gain for a in det.amplifiers)
            expected = flat_exp.flat_level_e * np.median(response[:, :128]) / gain_a
            assert np.median(f[:, :128]) == pytest.approx(expected, rel=0.01)
            assert 15000 < np.median(f) < 25000


# -- reproducibility ----------------------------------------------------------------------------
def _all_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_same_bytes_other_seed_differs(sim: SimulationResult, tmp_path: Path) -> None:
    again = simulate("tiny", tmp_path / "again", progress=False)
    files = _all_files(sim.out_dir)
    assert files == _all_files(again.out_dir)
    for rel in files:
        assert filecmp.cmp(sim.out_dir / rel, again.out_dir / rel, shallow=False), rel
    other = simulate("tiny", tmp_path / "other", seed=sim.seed + 1, progress=False)
    for a, b in zip(sim.all_raw_files, other.all_raw_files):
        assert a.name == b.name
        assert not filecmp.cmp(a, b, shallow=False)
    assert not filecmp.cmp(sim.truth_paths["catalog"], other.truth_paths["catalog"], shallow=False)


def test_process_pool_gives_identical_files(sim: SimulationResult, tmp_path: Path) -> None:
    pooled = simulate("tiny", tmp_path / "pooled", progress=False, workers=2)
    for a, b in zip(sim.all_raw_files, pooled.all_raw_files):
        assert filecmp.cmp(a, b, shallow=False), a.name


# -- refcat and conditions ------------------------------------------------------------------------
def test_refcat_columns_and_errors(sim: SimulationResult, truth: dict[str, Table]) -> None:
    with open(sim.refcat_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    columns = set(rows[0])
    assert {"ra", "dec"} <= columns
    for band in ("g", "r", "i", "z"):
        assert {f"{band}_mag", f"{band}_mag_err"} <= columns
    catalog = {int(r["id"]): r for r in truth["catalog"]}
    for row in rows:
        t = catalog[int(row["id"])]
        assert t["kind"] == "star"
        assert float(row["ra"]) == pytest.approx(t["ra"], abs=1e-8)
        for band in ("g", "r", "i", "z"):
            err = float(row[f"{band}_mag_err"])
            assert 0.004 < err < 0.5
            assert abs(float(row[f"{band}_mag"]) - t[f"{band}_mag"]) < 5 * err


def test_seeing_differs_between_visits_as_recorded(sim: SimulationResult, truth: dict[str, Table], plan) -> None:
    visits = truth["visits"]
    best = visits[np.argmin(visits["seeing_fwhm_arcsec"])]
    worst = visits[np.argmax(visits["seeing_fwhm_arcsec"])]
    assert worst["seeing_fwhm_arcsec"] / best["seeing_fwhm_arcsec"] > 1.5
    catalog = truth["catalog"]
    point = (catalog["kind"] == "star") | (catalog["kind"] == "variable")
    stars = catalog[point & ~catalog["bright"] & (catalog["r_mag"] < 21.0)]
    beta = float(best["moffat_beta"])
    measured = {}
    for visit in (best, worst):
        widths = []
        with fits.open(science_file(sim, visit["expnum"])) as hdul:
            for hdu in hdul[1:]:
                ccd = RawCcd(hdu, int(visit["expnum"]), truth, plan)
                for row in stars:
                    x, y = ccd.project(row["ra"], row["dec"])
                    if not ccd.clear(x, y, 16, exclude_id=row["id"], neighbours=False)[0]:
                        continue
                    ix, iy = int(round(x[0])), int(round(y[0]))
                    win = ccd.without_others(plan, int(row["id"]))[iy - 15 : iy + 16, ix - 15 : ix + 16]
                    border = np.concatenate([win[0], win[-1], win[:, 0], win[:, -1]])
                    signal = win - np.median(border)
                    # effective area F^2 / sum(I^2) of a Moffat is pi alpha^2 (2b-1)/(b-1)^2
                    s2 = np.sum(signal**2) - signal.size * np.var(border)
                    if s2 <= 0 or signal.sum() <= 0:
                        continue
                    n_eff = signal.sum() ** 2 / s2
                    alpha = math.sqrt(n_eff * (beta - 1) ** 2 / (math.pi * (2 * beta - 1)))
                    widths.append(2 * alpha * math.sqrt(2 ** (1 / beta) - 1))
        assert len(widths) >= 2
        measured[visit["visit"]] = float(np.median(widths))
    fwhm_best, fwhm_worst = best["seeing_fwhm_px"], worst["seeing_fwhm_px"]
    assert measured[best["visit"]] == pytest.approx(fwhm_best, rel=0.1)
    assert measured[worst["visit"]] == pytest.approx(fwhm_worst, rel=0.1)
    assert measured[worst["visit"]] / measured[best["visit"]] == pytest.approx(fwhm_worst / fwhm_best, rel=0.1)


def test_visit_truth_is_consistent(truth: dict[str, Table], plan) -> None:
    visits = truth["visits"]
    assert len(set(visits["seeing_fwhm_arcsec"])) == len(visits)
    assert np.allclose(visits["seeing_fwhm_px"], visits["seeing_fwhm_arcsec"] / 0.185)
    rotated = visits[visits["rotation_deg"] != 0]
    assert len(rotated) == 1 and 30 <= rotated["rotation_deg"][0] <= 90
    zp = visits["zero_point_nominal"] - visits["extinction"] * (visits["airmass"] - 1) + 2.5 * np.log10(visits["transparency"])
    assert np.allclose(visits["zero_point"], zp)
    assert visits["has_trail"].sum() == 2 and visits["has_ghost"].sum() == 1
    assert np.all(visits["sky_e_per_px"] > 500)


# -- small pieces -----------------------------------------------------------------------------
def test_gnomonic_round_trip() -> None:
    rng = np.random.default_rng(5)
    ra = 150.0 + rng.uniform(-1, 1, 100)
    dec = 2.0 + rng.uniform(-1, 1, 100)
    xi, eta = gnomonic(ra, dec, 150.0, 2.0)
    ra2, dec2 = inverse_gnomonic(xi, eta, 150.0, 2.0)
    assert np.allclose(ra, ra2, atol=1e-10) and np.allclose(dec, dec2, atol=1e-10)


def test_trail_profile_is_symmetric_and_bounded() -> None:
    img = np.zeros((100, 80), dtype=np.float32)
    draw_trail(img, 40.0, -10.0, 40.0, 110.0, 2.0, 100.0)
    assert img[50, 40] == pytest.approx(100.0)
    assert np.allclose(img[:, 38], img[:, 42]) and img[:, 60].max() == 0.0
    assert img.sum(axis=1) == pytest.approx(np.full(100, 100.0 * math.sqrt(2 * math.pi) * 2.0), rel=1e-3)


def test_variable_flares_brighten_one_visit_and_leave_the_rest_of_the_catalog() -> None:
    from coadd_core.sim.scene import variable_mag

    base = get_preset("small")
    flaring = base.model_copy(update={"scene": base.scene.model_copy(update={"variable_flare_mag": (1.0, 1.0)})})
    quiet, loud = plan_survey(base), plan_survey(flaring)
    # the flares come from a child random stream: every other column is unchanged
    for name in quiet.catalog.colnames:
        a, b = np.asarray(quiet.catalog[name]), np.asarray(loud.catalog[name])
        if name.startswith("var_flare"):
            a, b = a[np.asarray(quiet.catalog["var_amplitude_mag"]) == 0], b[np.asarray(loud.catalog["var_amplitude_mag"]) == 0]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    sc = base.scene
    variable = (loud.catalog["kind"] == "variable") & (loud.catalog["var_amplitude_mag"] > 0)
    rows = loud.catalog[variable]
    assert len(rows) == (sc.variables_per_ccd + sc.faint_variables_per_ccd) * len(base.detectors)
    for row, plain in zip(rows, quiet.catalog[variable]):
        diffs = np.array([float(variable_mag(row, "r", e.mjd_mid) - variable_mag(plain, "r", e.mjd_mid)) for e in loud.science])
        assert np.sum(diffs == -1.0) == 1 and np.sum(diffs == 0.0) == len(diffs) - 1


def test_flare_stars_are_constant_below_the_limit_but_for_one_visit_and_leave_the_rest() -> None:
    from coadd_core.sim.scene import variable_mag

    small = get_preset("small")
    base = small.model_copy(update={"scene": small.scene.model_copy(update={"flare_stars_per_ccd": 0})})
    quiet, flaring = plan_survey(base), plan_survey(small)
    kind_q, kind_f = np.asarray(quiet.catalog["kind"]), np.asarray(flaring.catalog["kind"])
    n_fixed = int(np.sum(kind_q != "asteroid"))
    # drawn from their own stream after every other source: the rest is unchanged
    assert [(e.ra_deg, e.dec_deg) for e in quiet.science] == [(e.ra_deg, e.dec_deg) for e in flaring.science]
    assert quiet.trails == flaring.trails
    for name in quiet.catalog.colnames:
        if name == "id" or name.startswith("var_flare"):
            continue
        a, b = np.asarray(quiet.catalog[name])[:n_fixed], np.asarray(flaring.catalog[name])[:n_fixed]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    for name in ("ra", "dec", "r_mag"):
        assert np.array_equal(np.asarray(quiet.catalog[name])[kind_q == "asteroid"],
                              np.asarray(flaring.catalog[name])[kind_f == "asteroid"])
    n = small.scene.flare_stars_per_ccd * len(small.detectors)
    rows = flaring.catalog[n_fixed : n_fixed + n]
    assert set(np.asarray(rows["kind"])) == {"variable"} and np.all(rows["near_limit"])
    lo, hi = small.scene.flare_star_mag
    flo, fhi = small.scene.flare_star_flare_mag
    for row in rows:
        assert lo <= row["r_mag"] <= hi
        mags = np.array([float(variable_mag(row, "r", e.mjd_mid)) for e in flaring.science])
        flare = mags != row["r_mag"]
        assert flare.sum() == 1 and flo <= row["r_mag"] - mags[flare][0] <= fhi


def test_faint_variables_are_added_near_the_detection_limit_and_leave_the_other_sources() -> None:
    from coadd_core.sim.scene import variable_mag

    small = get_preset("small")
    base = small.model_copy(update={"scene": small.scene.model_copy(update={"faint_variables_per_ccd": 0, "flare_stars_per_ccd": 0})})
    scene = base.scene.model_copy(update={"faint_variables_per_ccd": 3})
    quiet, faint = plan_survey(base), plan_survey(base.model_copy(update={"scene": scene}))
    kind_q, kind_f = np.asarray(quiet.catalog["kind"]), np.asarray(faint.catalog["kind"])
    n_fixed = int(np.sum(kind_q != "asteroid"))
    # the rest of the survey is drawn as without them: same pointings, trails, asteroids
    assert [(e.ra_deg, e.dec_deg) for e in quiet.science] == [(e.ra_deg, e.dec_deg) for e in faint.science]
    assert quiet.trails == faint.trails
    for name in ("ra", "dec", "r_mag"):
        assert np.array_equal(np.asarray(quiet.catalog[name])[kind_q == "asteroid"],
                              np.asarray(faint.catalog[name])[kind_f == "asteroid"])
    # they come from a child random stream, after the other sources: those are unchanged
    assert int(np.sum(kind_f != "asteroid")) == n_fixed + 3 * len(base.detectors)
    for name in quiet.catalog.colnames:
        if name == "id":
            continue
        a, b = np.asarray(quiet.catalog[name])[:n_fixed], np.asarray(faint.catalog[name])[:n_fixed]
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    rows = faint.catalog[n_fixed : n_fixed + 3 * len(base.detectors)]
    assert set(np.asarray(rows["kind"])) == {"variable"}
    lo, hi = scene.faint_variable_mag
    assert np.all((rows["r_mag"] >= lo) & (rows["r_mag"] <= hi))
    for row in rows:
        assert scene.faint_variable_amplitude_mag[0] <= row["var_amplitude_mag"] <= scene.faint_variable_amplitude_mag[1]
        mags = np.array([float(variable_mag(row, "r", e.mjd_mid)) for e in faint.science])
        assert np.all(np.abs(np.diff(mags)) > 0.05) and np.all(np.abs(mags - row["r_mag"]) <= row["var_amplitude_mag"] + 1e-9)
