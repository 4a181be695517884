"""The MegaPrime camera definition and its header-driven geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from coadd_core.camera import Camera, Detector, load_camera, standard_amp_sections
from coadd_core.geom import Box


@pytest.fixture(scope="module")
def camera() -> Camera:
    return load_camera("MegaPrime")


def test_detectors_and_layout(camera: Camera) -> None:
    assert len(camera) == 36
    assert camera.detector_names == tuple(f"ccd{i:02d}" for i in range(36))
    assert len({d.serial for d in camera}) == 36
    assert camera.pixel_size_mm == pytest.approx(0.0135)
    assert camera.plate_scale_arcsec_per_mm == pytest.approx(13.7037, rel=1e-4)
    for det in camera:
        assert det.rotation_deg == (180.0 if det.id < 18 else 0.0)
        assert (det.raw_width, det.raw_height) == (2112, 4644)
        assert det.bbox == Box(0, 0, 2047, 4611)
        for amp in det.amplifiers:
            assert 1.45 <= amp.gain <= 1.8
            assert 2.0 <= amp.read_noise <= 8.0
            assert amp.max_linear < amp.saturation <= 65535
        for d in det.defects:
            assert det.bbox.contains(d)
    # 4 rows of 9, ccd00 at the top left (North-East), chips never overlap
    xs = np.array([d.focal_plane_x_mm for d in camera]).reshape(4, 9)
    ys = np.array([d.focal_plane_y_mm for d in camera]).reshape(4, 9)
    assert np.all(np.diff(xs, axis=1) > 2048 * 0.0135)
    assert np.all(np.diff(ys, axis=0) < -4612 * 0.0135)
    assert np.allclose(ys[:, 0], [99.441, 31.4955, -31.4955, -99.441])
    assert xs[0, 4] == 0.0


def test_amplifier_sections_match_raw_format(camera: Camera) -> None:
    det = camera["ccd05"]
    a, b = det.amplifiers
    assert a.raw_bbox.to_fits_section() == "[1:1056,1:4612]"
    assert a.raw_data_bbox.to_fits_section() == "[33:1056,1:4612]"
    assert a.raw_serial_overscan_bbox.to_fits_section() == "[1:32,1:4644]"
    assert a.bbox.to_fits_section() == "[1:1024,1:4612]"
    assert b.raw_bbox.to_fits_section() == "[1057:2112,1:4612]"
    assert b.raw_data_bbox.to_fits_section() == "[1057:2080,1:4612]"
    assert b.raw_serial_overscan_bbox.to_fits_section() == "[2081:2112,1:4644]"
    assert b.bbox.to_fits_section() == "[1025:2048,1:4612]"
    assert a.raw_parallel_overscan_bbox == Box(32, 4612, 1055, 4643)
    assert a.raw_serial_prescan_bbox.is_empty()
    assert det.data_section().to_fits_section() == "[33:2080,1:4612]"
    sections = standard_amp_sections(1024, 4612)
    assert sections["B"]["DSEC"] == b.raw_data_bbox and sections["A"]["BSEC"] == a.raw_serial_overscan_bbox


def test_focal_plane_round_trip_and_orientation(camera: Camera) -> None:
    rng = np.random.default_rng(3)
    for name in ("ccd04", "ccd31"):
        det = camera[name]
        x, y = rng.uniform(0, 2047, 50), rng.uniform(0, 4611, 50)
        fx, fy = det.pixel_to_focal_plane(x, y)
        x2, y2 = det.focal_plane_to_pixel(fx, fy)
        assert np.allclose(x, x2) and np.allclose(y, y2)
    top, bottom = camera["ccd13"], camera["ccd22"]
    # ccd22 is unrotated: pixel +y goes North; ccd13 is rotated: its pixel (0, 0) is in
    # its top-right corner, next to nothing but the gap above the boresight rows.
    fx0, fy0 = bottom.pixel_to_focal_plane(0, 0)
    fx1, fy1 = bottom.pixel_to_focal_plane(0, 100)
    assert fy1 > fy0 and fx1 == pytest.approx(fx0)
    tx0, ty0 = top.pixel_to_focal_plane(0, 0)
    assert tx0 > top.focal_plane_x_mm and ty0 > top.focal_plane_y_mm
    # the central gap between ccd13 and ccd22 is 54 px
    _, top_low = top.pixel_to_focal_plane(1000, 4611)
    _, bottom_high = bottom.pixel_to_focal_plane(1000, 4611)
    assert (top_low - bottom_high) / 0.0135 == pytest.approx(55.0)  # pixel centres: gap + 1


def test_assembled_raw_offsets(camera: Camera) -> None:
    det = camera["ccd20"]
    rx, ry = det.assembled_to_raw([0, 1023, 1024, 2047], [0, 5, 6, 4611])
    assert list(rx) == [32, 1055, 1056, 2079] and list(ry) == [0, 5, 6, 4611]
    ax, ay = det.raw_to_assembled(rx, ry)
    assert list(ax) == [0, 1023, 1024, 2047]
    with pytest.raises(ValueError):
        det.assembled_to_raw([2048.0], [0.0])


def _tiny_header(det: Detector, camera: Camera) -> fits.Header:
    header = fits.Header()
    header["EXTNAME"] = det.name
    header["NAXIS1"] = det.raw_width
    header["NAXIS2"] = det.raw_height
    for key, value in det.header_cards().items():
        header[key] = value
    header["DETSIZE"] = camera.detsize_section()
    header["DETSEC"] = camera.detsec(det)
    return header


def test_detector_from_header_prefers_header_keywords(camera: Camera) -> None:
    small = camera["ccd13"].with_layout(128, 512, focal_plane_mm=(0.0, 268 * 0.0135))
    header = _tiny_header(small, camera)
    header["GAINA"] = 1.61
    header["GAINB"] = 1.72
    header["RDNOISEA"] = 65535
    header["RDNOISEB"] = 4.4
    header["RDNOISE"] = 5.0
    header["SATURATE"] = 60000
    header["MAXLINA"] = 58000
    header["DARKCUR"] = 2.5
    det = camera.detector_from_header(header)
    a, b = det.amplifiers
    assert det.bbox == Box(0, 0, 255, 511)
    assert (det.raw_width, det.raw_height) == (320, 544)
    assert a.raw_data_bbox == Box.from_fits_section("[33:160,1:512]")
    assert b.raw_data_bbox == Box.from_fits_section("[161:288,1:512]")
    assert a.raw_serial_overscan_bbox == Box.from_fits_section("[1:32,1:544]")
    assert b.raw_serial_overscan_bbox == Box.from_fits_section("[289:320,1:544]")
    assert b.bbox == Box.from_fits_section("[129:256,1:512]")
    assert a.raw_parallel_overscan_bbox == Box(32, 512, 159, 543)
    assert (a.gain, b.gain) == (1.61, 1.72)
    assert (a.read_noise, b.read_noise) == (5.0, 4.4)
    assert a.saturation == b.saturation == 60000.0
    assert a.max_linear == 58000.0 and b.max_linear == camera["ccd13"].amplifiers[1].max_linear
    assert det.dark_current == 2.5
    assert det.rotation_deg == 180.0
    assert det.center_mm == pytest.approx((0.0, 268 * 0.0135))
    assert det.defects == small.defects and len(det.defects) == 2
    # full-size, unrotated detector: DETSEC reproduces the YAML placement exactly
    full = camera["ccd30"]
    again = camera.detector_from_header(_tiny_header(full, camera))
    assert again == full


def test_detector_from_header_lookup(camera: Camera) -> None:
    with pytest.raises(ValueError):
        camera.detector_from_header({"EXTNAME": "PRIMARY"})
    with pytest.raises(ValueError):
        camera.detector_from_header({"EXTNAME": "ccd37"})
    det = camera.detector_from_header({"EXTNAME": "COMPRESSED_IMAGE", "EXTVER": 7})
    assert det.name == "ccd07" and det == camera["ccd07"]


@pytest.mark.parametrize("rotation", [0.0, 60.0])
def test_raw_wcs_cards(camera: Camera, rotation: float) -> None:
    scale = camera.pixel_scale_arcsec / 3600.0
    for name in ("ccd13", "ccd22"):
        det = camera[name]
        header = fits.Header(det.raw_wcs_cards(150.0, 2.2, rotation, camera.pixel_scale_arcsec))
        wcs = WCS(header)
        cd = wcs.wcs.cd
        assert abs(np.linalg.det(cd)) == pytest.approx(scale**2)
        if rotation == 0.0:
            sign = 1.0 if det.rotation_deg == 180.0 else -1.0
            assert cd[0, 0] == pytest.approx(sign * scale) and cd[1, 1] == pytest.approx(-sign * scale)
        # the boresight (raw frame, 0-based) maps to the pointing
        bx, by = det.boresight_pixel()
        ra, dec = wcs.pixel_to_world_values(bx + 32, by)
        assert ra == pytest.approx(150.0) and dec == pytest.approx(2.2)
        # a focal-plane point 10 mm North of the boresight is 137" away at the expected PA
        px, py = det.focal_plane_to_pixel(0.0, 10.0)
        ra2, dec2 = wcs.pixel_to_world_values(px + 32, py)
        dra = (ra2 - 150.0) * math.cos(math.radians(2.2)) * 3600
        ddec = (dec2 - 2.2) * 3600
        assert math.hypot(dra, ddec) == pytest.approx(137.037, rel=1e-3)
        assert math.degrees(math.atan2(dra, ddec)) == pytest.approx(rotation, abs=1e-3)


def test_unknown_camera() -> None:
    with pytest.raises(ValueError):
        load_camera("NoSuchCam")
