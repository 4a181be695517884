"""Exposure FITS files: exact round trips, LSST layout, partial reads, S3, errors."""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from coadd_core.exposure import Exposure, assert_exposures_equal
from coadd_core.fits_io import (
    ExposureNotFoundError,
    ExposureReadError,
    read_exposure,
    read_exposure_header,
    read_exposure_info,
    read_exposure_metadata,
    write_exposure,
)
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.masks import standard_planes
from coadd_core.photocalib import PhotoCalib
from coadd_core.psf import GaussianPsf, ImagePsf, MoffatPsf
from coadd_core.wcs_utils import wcs_header_dict


class CountingReader(io.RawIOBase):
    """Read-only file wrapper that counts the bytes handed out (and hides ``fileno``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.bytes_read = 0
        self.name = os.fspath(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        self.bytes_read += n or 0
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _psfs() -> list[Any]:
    return [GaussianPsf(1.7), MoffatPsf(3.3, beta=2.9), ImagePsf(MoffatPsf(4.1, beta=3.5, size=25).kernel_image())]


def _big_exposure(width: int, height: int, exposure_factory: Any) -> Exposure:
    return exposure_factory(box=Box.from_size(width, height, 17, -9), seed=3)


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("psf", _psfs(), ids=lambda p: type(p).__name__)
def test_round_trip_every_field(tmp_path: pathlib.Path, exposure_factory: Any, psf: Any) -> None:
    exp = exposure_factory(psf=psf)
    path = tmp_path / "calexp.fits"
    write_exposure(exp, path)
    back = read_exposure(path)
    assert_exposures_equal(exp, back)
    # spelled out: every component identical, floats to the last bit
    assert back.bbox == exp.bbox and back.xy0 == (1234, -56)
    assert back.image.dtype == np.float32 and back.mask.dtype == np.int32 and back.variance.dtype == np.float32
    assert back.image.tobytes() == exp.image.tobytes()
    assert back.mask.tobytes() == exp.mask.tobytes()
    assert back.variance.tobytes() == exp.variance.tobytes()
    assert back.planes.bits() == exp.planes.bits() and back.planes.bit("CUSTOM_ARTIFACT") == 21
    assert wcs_header_dict(back.wcs) == wcs_header_dict(exp.wcs)
    assert back.psf.to_dict() == exp.psf.to_dict() and type(back.psf) is type(exp.psf)
    assert back.photo_calib == exp.photo_calib
    assert back.visit_info == exp.visit_info
    assert np.array_equal(back.valid_polygon.vertices, exp.valid_polygon.vertices)
    assert back.metadata["SEEING"] == exp.metadata["SEEING"]
    assert back.metadata["nested"]["list"] == [1, 2.5, None, "x", [True, False]]
    assert np.isnan(back.metadata["nested"]["nan"])


def test_round_trip_minimal_exposure(tmp_path: pathlib.Path) -> None:
    exp = Exposure(MaskedImage(np.arange(12.0).reshape(3, 4)))
    write_exposure(exp, tmp_path / "min.fits")
    back = read_exposure(tmp_path / "min.fits")
    assert_exposures_equal(exp, back)
    assert back.wcs is None and back.psf is None and back.visit_info is None and back.metadata == {}


def test_awkward_metadata_is_lossless_and_headers_stay_valid(tmp_path: pathlib.Path) -> None:
    metadata = {
        "x" * 70: "y" * 80,  # too long for a HIERARCH card
        "LONGSTR": "q" * 300,  # CONTINUE cards
        "UNICODE": "\u00e9t\u00e9",
        "BIGINT": 2**70,
        "HIERARCH X": 1,
        "lower case": 1.5,
        "NAXIS": 3,  # structural: archive only
        "CTYPE1": "RA---TAN",  # WCS keywords never go to HDU0 (INHERIT=T readers)
        "inf": float("inf"),
        "tuple->list": [1, [2, 3]],
    }
    exp = Exposure(MaskedImage(np.ones((2, 2))), metadata=metadata)
    path = tmp_path / "meta.fits"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_exposure(exp, path)
        with fits.open(path) as hdul:
            hdul.verify("exception")
            h0 = hdul[0].header
            assert h0["LONGSTR"] == "q" * 300 and h0["lower case"] == 1.5
            assert h0["NAXIS"] == 0 and "CTYPE1" not in h0 and "BIGINT" not in h0 and "UNICODE" not in h0
    assert read_exposure_metadata(path) == metadata


def test_write_is_deterministic_and_accepts_urls(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory()
    write_exposure(exp, tmp_path / "a.fits")
    write_exposure(exp, f"file://{tmp_path / 'b.fits'}")
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "b.fits").read_bytes()
    assert_exposures_equal(read_exposure(f"file://{tmp_path / 'a.fits'}"), exp)


# -- the file as other tools see it --------------------------------------------------------


def test_layout_with_plain_astropy(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory(psf=_psfs()[2])
    x0, y0 = exp.xy0
    path = tmp_path / "layout.fits"
    write_exposure(exp, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hdul = fits.open(path)
    with hdul:
        names = [h.name for h in hdul]
        assert names[:5] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE", "ARCHIVE_INDEX"]
        assert set(names[5:]) == {"PSF", "WCS", "PHOTOCALIB", "VISITINFO", "VALIDPOLYGON", "METADATA"}
        h0 = hdul[0].header
        assert h0["NAXIS"] == 0 and hdul[0].data is None
        assert h0["AR_HDU"] == 5 and hdul[h0["AR_HDU"] - 1].header["EXTTYPE"] == "ARCHIVE_INDEX"
        for name in names[5:]:
            assert hdul[name].header["EXTTYPE"] == "ARCHIVE_DATA"
            assert h0[f"{name}_ID"] == h0[f"ARCHIVE_ID_{name}"] == hdul[name].header["AR_ID"]
        # visit info and readable metadata in HDU0
        assert h0["EXPID"] == 1234567 and h0["FILTER"] == "i.MP9702" and h0["BAND"] == "i"
        assert h0["DETNAME"] == "ccd17" and h0["DETSER"] == "8434-21-3" and h0["EXPTIME"] == 300.0000000001
        assert h0["SEEING"] == exp.metadata["SEEING"] and h0["NCOMBINE"] == 7 and h0["FLAG"] is True
        assert h0["OBSERVER"] == "somebody" and h0["a long lower-case key"] == -1.0e-300
        assert "nested" not in h0
        for name, bitpix, array in (("IMAGE", -32, exp.image), ("MASK", 32, exp.mask), ("VARIANCE", -32, exp.variance)):
            hdu = hdul[name]
            h = hdu.header
            assert h["BITPIX"] == bitpix and h["EXTNAME"] == h["EXTTYPE"] == name and h["INHERIT"] is True
            assert (h["LTV1"], h["LTV2"]) == (-x0, -y0)
            assert (h["CTYPE1A"], h["CTYPE2A"], h["CRPIX1A"], h["CRPIX2A"]) == ("LINEAR", "LINEAR", 1.0, 1.0)
            assert (h["CRVAL1A"], h["CRVAL2A"]) == (x0, y0)
            assert np.array_equal(hdu.data, array, equal_nan=True)
            # the on-disk WCS is right for the array: array pixel (i, j) = parent (i + x0, j + y0)
            disk = WCS(h)
            i, j = np.array([0.0, 50.0, 156.0]), np.array([0.0, 20.5, 92.0])
            np.testing.assert_allclose(
                disk.all_pix2world(i, j, 0), exp.wcs.all_pix2world(i + x0, j + y0, 0), rtol=0, atol=1e-12
            )
        assert hdul["IMAGE"].header["BUNIT"] == "adu" and hdul["VARIANCE"].header["BUNIT"] == "adu**2"
        assert "BUNIT" not in hdul["MASK"].header
        mask_header = hdul["MASK"].header
        mp = {k[3:]: v for k, v in mask_header.items() if k.startswith("MP_")}
        assert mp == exp.planes.bits()
        assert mp["BAD"] == 0 and mp["NO_DATA"] == 8 and mp["PARTLY_VIGNETTED"] == 20 and mp["CUSTOM_ARTIFACT"] == 21
        assert hdul["PSF"].data["ARRAY"][0].shape == (25, 25)


def test_bunit_is_nJy_for_calibrated_exposures(tmp_path: pathlib.Path) -> None:
    exp = Exposure(MaskedImage(np.ones((2, 2))), photo_calib=PhotoCalib(1.0))
    write_exposure(exp, tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits") as hdul:
        assert hdul["IMAGE"].header["BUNIT"] == "nJy" and hdul["VARIANCE"].header["BUNIT"] == "nJy**2"
    assert read_exposure_info(tmp_path / "c.fits").unit == "nJy"


def test_foreign_file_without_archive(tmp_path: pathlib.Path, sip_wcs: WCS) -> None:
    """A file another tool wrote: header WCS, LTV origin, visit keywords, no MP_* or archive."""
    from coadd_core.wcs_utils import shifted, wcs_to_header

    x0, y0 = 40, 60
    image_header = fits.Header([("EXTNAME", "IMAGE"), ("LTV1", -x0), ("LTV2", -y0)])
    image_header.extend(wcs_to_header(shifted(sip_wcs, x0, y0)).cards)
    primary = fits.PrimaryHDU()
    primary.header["EXPTIME"] = 30.0
    primary.header["FILTER"] = "r.MP9602"
    primary.header["OBSERVER"] = "X"
    hdul = fits.HDUList(
        [
            primary,
            fits.ImageHDU(np.ones((5, 6), np.float32), header=image_header),
            fits.ImageHDU(np.full((5, 6), 3, np.int16), name="MASK"),
            fits.ImageHDU(np.ones((5, 6), np.float64), name="VARIANCE"),
        ]
    )
    hdul.writeto(tmp_path / "foreign.fits")
    exp = read_exposure(tmp_path / "foreign.fits")
    assert exp.bbox == Box.from_size(6, 5, x0, y0)
    assert wcs_header_dict(exp.wcs) == wcs_header_dict(sip_wcs)
    assert exp.visit_info.exposure_time == 30.0 and exp.visit_info.physical_filter == "r.MP9602"
    assert exp.metadata == {"OBSERVER": "X"}
    assert exp.planes == standard_planes() and exp.mask.dtype == np.int32 and exp.mask[0, 0] == 3


# -- sub-box reads ---------------------------------------------------------------------------


def _sub_boxes(full: Box) -> list[Box]:
    x0, y0, x1, y1 = full.x0, full.y0, full.x1, full.y1
    return [
        Box(x0 + 10, y0 + 5, x0 + 40, y0 + 30),  # interior
        Box(x0, y0, x0 + 7, y0 + 3),  # lower-left corner
        Box(x1 - 9, y1 - 4, x1, y1),  # upper-right corner
        Box(x0, y0 + 11, x1, y0 + 12),  # full-width rows
        Box(x1, y0, x1, y1),  # last column
        Box(x0 + 3, y1, x0 + 3, y1),  # single pixel on the top edge
        full,
    ]


def test_sub_box_read_equals_slice_of_full_read(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory()
    path = tmp_path / "sub.fits"
    write_exposure(exp, path)
    full = read_exposure(path)
    for box in _sub_boxes(exp.bbox):
        part = read_exposure(path, bbox=box)
        assert part.bbox == box
        assert_exposures_equal(part, full.subset(box))


def test_sub_box_read_touches_only_a_fraction_of_the_file(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = _big_exposure(1024, 1024, exposure_factory)
    path = tmp_path / "big.fits"
    write_exposure(exp, path)
    size = path.stat().st_size
    box = Box(500, 400, 563, 463)
    with CountingReader(path) as reader:
        part = read_exposure(reader, bbox=box)
        fraction = reader.bytes_read / size
    assert_exposures_equal(part, exp.subset(box))
    assert fraction < 0.02, fraction  # 3 x 64 rows x 256 B of pixels, plus headers
    with CountingReader(path) as reader:
        info = read_exposure_info(reader)
        assert reader.bytes_read / size < 0.01
    assert info.bbox == exp.bbox and info.psf == exp.psf
    with CountingReader(path) as reader:
        read_exposure(reader)
        assert reader.bytes_read >= 3 * 1024 * 1024 * 4


def test_out_of_bounds_bbox_is_a_clear_error(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory()
    path = tmp_path / "oob.fits"
    write_exposure(exp, path)
    for box in (exp.bbox.grown(1), Box(0, 0, 10, 10), exp.bbox.shifted(1, 0), Box(1240, 0, 1239, 5)):
        with pytest.raises(ValueError) as info:
            read_exposure(path, bbox=box)
        assert not isinstance(info.value, ExposureReadError)
        message = str(info.value)
        assert str(box) in message and str(exp.bbox) in message and "oob.fits" in message


# -- mask planes ---------------------------------------------------------------------------


def test_foreign_mask_plane_assignment_is_remapped(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory(extra_plane=False)
    exp.mask[...] &= (1 << 21) - 1  # only bits the standard planes name
    path = tmp_path / "remap.fits"
    write_exposure(exp, path)
    # rewrite the MASK HDU in another convention: BAD<->SAT swapped, an extra plane at bit 30
    foreign = np.zeros(exp.mask.shape, dtype=np.int32)
    foreign[exp.mask & 1 != 0] |= 2
    foreign[exp.mask & 2 != 0] |= 1
    foreign |= exp.mask & ~np.int32(3)
    foreign[:, :10] |= 1 << 30
    with fits.open(path, mode="update") as hdul:
        hdul["MASK"].data = foreign
        h = hdul["MASK"].header
        h["MP_BAD"], h["MP_SAT"] = 1, 0
        h.append(fits.Card("HIERARCH MP_ALIEN_GLINT", 30, "a plane only this file knows"))
    back = read_exposure(path)
    assert back.planes.bit("BAD") == 0 and back.planes.bit("SAT") == 1
    assert back.planes.bit("ALIEN_GLINT") == 21
    expected = exp.mask.copy()
    expected[:, :10] |= 1 << 21
    assert np.array_equal(back.mask, expected)
    # and the sub-box path remaps the same way
    box = Box(exp.bbox.x0 + 2, exp.bbox.y0 + 2, exp.bbox.x0 + 20, exp.bbox.y0 + 9)
    assert np.array_equal(read_exposure(path, bbox=box).mask, expected[2:10, 2:21])


# -- errors and atomic writes --------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_missing_corrupt_and_incomplete_files(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    missing = tmp_path / "nope.fits"
    with pytest.raises(ExposureNotFoundError, match="nope.fits"):
        read_exposure(missing)
    with pytest.raises(FileNotFoundError):
        read_exposure_header(missing)

    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not a fits file at all" * 200)
    with pytest.raises(ExposureReadError, match="garbage.fits"):
        read_exposure(garbage)

    good = tmp_path / "good.fits"
    write_exposure(exposure_factory(), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExposureReadError, match="truncated.fits"):
        read_exposure(truncated)

    partial = tmp_path / "partial.fits"
    with fits.open(good) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["IMAGE"].copy()]).writeto(partial)
    with pytest.raises(ExposureReadError, match="partial.fits has no MASK extension"):
        read_exposure(partial)


def test_write_is_atomic(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    path = tmp_path / "sub" / "dir" / "atomic.fits"
    exp = exposure_factory()
    write_exposure(exp, path)
    before = path.read_bytes()
    bad = exp.copy()
    bad.metadata = {1: "non-string keys cannot round-trip"}
    with pytest.raises(TypeError):
        write_exposure(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["atomic.fits"]
    write_exposure(exp.subset(Box(exp.bbox.x0, exp.bbox.y0, exp.bbox.x0 + 4, exp.bbox.y0 + 4)), path)
    assert read_exposure(path).bbox.area == 25
    assert sorted(p.name for p in path.parent.iterdir()) == ["atomic.fits"]


def test_a_full_disk_is_reported_as_such_and_leaves_nothing(
    tmp_path: pathlib.Path, exposure_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """astropy's free-space check fails on an open file handle and hides the OSError it
    reports; the writer names the file and the cause, and removes its temporary."""
    import errno

    import coadd_core.fits_io as fits_io

    class FullDisk(io.FileIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fits_io.os, "fdopen", lambda fd, mode="wb", *a, **k: FullDisk(fd, "wb", closefd=True))
    path = tmp_path / "full.fits"
    with pytest.raises(OSError, match="full.fits: No space left on device") as info:
        write_exposure(exposure_factory(), path)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_cheap_readers(tmp_path: pathlib.Path, exposure_factory: Any) -> None:
    exp = exposure_factory()
    path = tmp_path / "meta.fits"
    write_exposure(exp, path)
    header = read_exposure_header(path)
    assert header["EXPID"] == 1234567 and header["AR_HDU"] == 5
    meta = read_exposure_metadata(path)
    assert meta["NCOMBINE"] == 7 and meta["nested"]["deep"] == {"k": "v"}
    info = read_exposure_info(path)
    assert info.bbox == exp.bbox and info.visit_info == exp.visit_info
    assert info.mask_planes.bits() == exp.planes.bits() and info.unit == "adu"


# -- S3 (moto server) ----------------------------------------------------------------------


@pytest.fixture
def s3_fetch_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bytes s3fs fetches for ranged reads of open files."""
    s3fs = pytest.importorskip("s3fs")
    fetched = [0]
    original = s3fs.core.S3File._fetch_range

    def counting(self: Any, start: int, end: int) -> bytes:
        data = original(self, start, end)
        fetched[0] += len(data)
        return data

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    return fetched


@pytest.mark.s3
def test_s3_round_trip_every_field(s3_server: Any, exposure_factory: Any) -> None:
    opts = s3_server.storage_options
    for psf in _psfs():
        exp = exposure_factory(psf=psf)
        url = s3_server.unique_url()
        write_exposure(exp, url, storage_options=opts)
        assert_exposures_equal(read_exposure(url, storage_options=opts), exp)
        assert read_exposure_header(url, storage_options=opts)["EXPID"] == 1234567
        assert read_exposure_metadata(url, storage_options=opts)["FLAG"] is True


@pytest.mark.s3
def test_s3_sub_box_reads_fetch_a_fraction(
    s3_server: Any, exposure_factory: Any, s3_fetch_counter: list[int]
) -> None:
    opts = s3_server.storage_options
    exp = _big_exposure(2048, 1536, exposure_factory)
    url = s3_server.unique_url()
    write_exposure(exp, url, storage_options=opts)
    import fsspec

    size = fsspec.filesystem("s3", **opts).size(url)
    for box in _sub_boxes(exp.bbox)[:6]:
        s3_fetch_counter[0] = 0
        part = read_exposure(url, bbox=box, storage_options=opts)
        assert_exposures_equal(part, exp.subset(box))
        if box.height <= 64:
            assert s3_fetch_counter[0] < 0.3 * size, (box, s3_fetch_counter[0] / size)
    s3_fetch_counter[0] = 0
    info = read_exposure_info(url, storage_options=opts)
    assert info.bbox == exp.bbox and s3_fetch_counter[0] < 0.02 * size
    with pytest.raises(ValueError, match="not inside"):
        read_exposure(url, bbox=exp.bbox.grown(2), storage_options=opts)


@pytest.mark.s3
def test_s3_errors_and_single_object(s3_server: Any, exposure_factory: Any) -> None:
    import fsspec

    opts = s3_server.storage_options
    with pytest.raises(ExposureNotFoundError, match="missing.fits"):
        read_exposure(s3_server.url("no/such/missing.fits"), storage_options=opts)
    with pytest.raises(ExposureNotFoundError):
        read_exposure(s3_server.url("no/such/missing.fits"), bbox=Box(0, 0, 1, 1), storage_options=opts)
    prefix = s3_server.url("atomic-check")
    write_exposure(exposure_factory(), f"{prefix}/one.fits", storage_options=opts)
    fs = fsspec.filesystem("s3", **opts)
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(prefix, refresh=True)] == ["one.fits"]
    corrupt = f"{prefix}/corrupt.fits"
    fs.pipe_file(corrupt, b"SIMPLE  = junk" * 300)
    with pytest.raises(ExposureReadError, match="corrupt.fits"):
        read_exposure(corrupt, storage_options=opts)
