"""Raw ingest: records, regions, calibration raws by OBSTYPE, bad files, re-ingest, concurrency."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from lsst import sphgeom

from coadd_core.sim import simulate
from registry.butler import Butler
from registry.ingest import IngestError, read_raw_file_metadata, register_raw_file
from registry.skymaps import register_skymap


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return simulate("tiny", tmp_path_factory.mktemp("sim"), progress=False)


@pytest.fixture
def butler(tmp_path: Path) -> Butler:
    return Butler.create(tmp_path / "repo")


def _ingest_all(butler: Butler, files, transfer: str = "copy") -> list[str]:
    statuses = []
    for f in files:
        status, _ = register_raw_file(butler, read_raw_file_metadata(str(f)), transfer=transfer)
        statuses.append(status)
    return statuses


def test_ingest_records_and_datasets(tiny, butler: Butler) -> None:
    files = tiny.all_raw_files
    assert _ingest_all(butler, files) == ["ingested"] * len(files)
    n_ccd = len(tiny.summary["detectors"])
    refs = butler.query_datasets("raw", "MegaPrime/raw/all")
    assert len(refs) == len(files) * n_ccd
    science = butler.query_datasets("raw", "MegaPrime/raw/all", "exposure.observation_type = 'science'")
    assert len(science) == tiny.summary["n_science"] * n_ccd
    assert {r.data_id["band"] for r in science} == {"r"}
    for kind in ("bias", "dark", "flat"):
        found = butler.registry.query_data_ids("exposure", f"exposure.observation_type = '{kind}'")
        assert len(found) == tiny.summary[f"n_{kind}"]
    # One file per exposure: the CCDs of an exposure share it.
    by_exposure: dict[int, set[str]] = {}
    for ref in refs:
        by_exposure.setdefault(ref.data_id["exposure"], set()).add(ref.uri)
    assert all(len(uris) == 1 for uris in by_exposure.values())
    header, data = butler.get(science[0])
    assert header["EXTNAME"] == f"ccd{science[0].data_id['detector']:02d}"
    assert data.dtype == np.uint16


def test_regions_hold_the_stars_the_ccd_saw(tiny, butler: Butler) -> None:
    _ingest_all(butler, tiny.raw_files)
    catalog = Table.read(tiny.truth_paths["catalog"])
    stars = catalog[catalog["type"] == "star"] if "type" in catalog.colnames else catalog
    with fits.open(tiny.raw_files[0]) as hdus:
        expnum = hdus[0].header["EXPNUM"]
        for hdu in hdus[1:]:
            from astropy.wcs import WCS

            det = int(hdu.header["EXTNAME"][3:])
            region = butler.registry.region_of("visit_detector_region", {"instrument": "MegaPrime", "visit": expnum, "detector": det})
            wcs = WCS(hdu.header)
            x, y = wcs.all_world2pix(stars["ra"], stars["dec"], 0)
            on_ccd = (x > 40) & (x < hdu.header["NAXIS1"] - 40) & (y > 10) & (y < hdu.header["NAXIS2"] - 40)
            assert on_ccd.any()
            for ra, dec in zip(stars["ra"][on_ccd], stars["dec"][on_ccd]):
                assert region.contains(sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(float(ra), float(dec))))


def test_reingest_is_a_noop(tiny, butler: Butler) -> None:
    files = tiny.raw_files[:2]
    _ingest_all(butler, files)
    before = butler.query_datasets("raw", "MegaPrime/raw/all")
    assert _ingest_all(butler, files) == ["already", "already"]
    assert butler.query_datasets("raw", "MegaPrime/raw/all") == before


def _broken_copies(tiny, tmp_path: Path) -> dict[str, Path]:
    good = Path(tiny.raw_files[0])
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(good.read_bytes()[:-10_000])
    notfits = tmp_path / "notfits.fits"
    notfits.write_text("this is not a FITS file\n" * 200)
    missing_kw = tmp_path / "nofilter.fits"
    with fits.open(good) as hdus:
        for hdu in hdus[1:]:
            del hdu.header["FILTER"]
        hdus.writeto(missing_kw)
    corrupt = tmp_path / "corrupt.fits"
    data = bytearray(good.read_bytes())
    data[2880 + 10 : 2880 + 400] = b"\x00" * 390  # clobber the first extension header
    corrupt.write_bytes(bytes(data))
    return {"truncated": truncated, "notfits": notfits, "nofilter": missing_kw, "corrupt": corrupt}


def test_bad_files_get_one_clear_error_each(tiny, tmp_path: Path) -> None:
    for kind, path in _broken_copies(tiny, tmp_path).items():
        with pytest.raises(IngestError) as err:
            read_raw_file_metadata(str(path))
        message = str(err.value)
        assert str(path) in message, kind
        assert "\n" not in message
    with pytest.raises(IngestError, match="no such file"):
        read_raw_file_metadata(str(tmp_path / "absent.fits"))


def test_ingest_flow_reports_bad_files_and_goes_on(tiny, tmp_path: Path, prefect_harness) -> None:
    from flows.ingest import ingest_raws

    repo = tmp_path / "repo"
    Butler.create(repo).close()
    bad = _broken_copies(tiny, tmp_path)
    inputs = [str(p) for p in tiny.raw_files] + [str(p) for p in bad.values()]
    result = ingest_raws(repo=str(repo), files=inputs, transfer="symlink")
    assert len(result["ingested"]) == len(tiny.raw_files)
    assert {Path(f).name for f, _ in result["failed"]} == {p.name for p in bad.values()}
    again = ingest_raws(repo=str(repo), files=[str(p) for p in tiny.raw_files])
    assert len(again["already"]) == len(tiny.raw_files) and not again["ingested"]
    with Butler.open(repo) as butler:
        assert len(butler.query_datasets("raw", "MegaPrime/raw/all")) == len(tiny.raw_files) * 2


def test_skymap_registration_and_overlaps(tiny, butler: Butler) -> None:
    from coadd_core.skymap import make_skymap

    _ingest_all(butler, tiny.raw_files)
    skymap = make_skymap("rings")
    from registry.skymaps import tracts_overlapping_visits

    tracts = tracts_overlapping_visits(butler, skymap)
    counts = register_skymap(butler, "rings", skymap, tract_ids=tracts)
    assert counts["tracts"] == len(tracts) and counts["patches"] == sum(len(skymap[t]) for t in tracts)
    assert butler.get("skyMap", {"skymap": "rings"}, "skymaps") == skymap
    visit = tiny.exposures[-1]["expnum"]
    patches = butler.registry.patches_overlapping_element("MegaPrime", visit, 13)
    assert patches
    region = butler.registry.region_of("visit_detector_region", {"instrument": "MegaPrime", "visit": visit, "detector": 13})
    # exact answer: every returned patch overlaps, and every registered patch that overlaps is returned
    brute = [
        (t, p.sequential_index)
        for t in tracts
        for p in skymap[t]
        if not (p.outer_sky_polygon.relate(region) & sphgeom.DISJOINT)
    ]
    assert sorted((d["tract"], d["patch"]) for d in patches) == sorted(brute)
    back = butler.registry.visit_detectors_overlapping_patch("rings", patches[0]["tract"], patches[0]["patch"])
    assert any(d["visit"] == visit and d["detector"] == 13 for d in back)


def _worker(args) -> int:
    repo, files, worker = args
    from coadd_core.exposure import Exposure
    from coadd_core.image import MaskedImage
    from coadd_core.geom import Box
    from registry.butler import Butler as B
    from registry.ingest import read_raw_file_metadata as read, register_raw_file as reg

    with B.open(repo) as b:
        for f in files:
            reg(b, read(f), transfer="symlink")
        for det in (13, 22):
            mi = MaskedImage.zeros(Box.from_size(8, 8))
            b.put(Exposure(mi), "bias", {"instrument": "MegaPrime", "detector": det}, f"calib/worker{worker}")
    return worker


def test_eight_processes_ingest_and_put_concurrently(tiny, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Butler.create(repo).close()
    files = [str(p) for p in tiny.all_raw_files]
    # Every worker ingests every file (overlapping scheduled and ad-hoc runs) and puts its own biases.
    jobs = [(str(repo), files[i % len(files):] + files[: i % len(files)], i) for i in range(8)]
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        assert sorted(pool.map(_worker, jobs)) == list(range(8))
    with Butler.open(repo) as butler:
        raws = butler.query_datasets("raw", "MegaPrime/raw/all")
        assert len(raws) == len(files) * 2
        assert len({(r.data_id["exposure"], r.data_id["detector"]) for r in raws}) == len(raws)
        for i in range(8):
            assert len(butler.query_datasets("bias", f"calib/worker{i}")) == 2


def test_rice_compressed_raws_ingest_and_read(tiny, butler: Butler, tmp_path: Path) -> None:
    source = Path(tiny.raw_files[1])
    packed = tmp_path / (source.name.replace(".fits", ".fits.fz"))
    with fits.open(source) as hdus:
        out = [fits.PrimaryHDU(header=hdus[0].header)]
        out += [fits.CompImageHDU(data=h.data, header=h.header, compression_type="RICE_1") for h in hdus[1:]]
        fits.HDUList(out).writeto(packed)
        originals = {h.header["EXTNAME"]: h.data.copy() for h in hdus[1:]}
    assert _ingest_all(butler, [packed]) == ["ingested"]
    refs = butler.query_datasets("raw", "MegaPrime/raw/all")
    assert refs and all(r.uri.endswith(".fits.fz") for r in refs)
    for ref in refs:
        header, data = butler.get(ref)
        np.testing.assert_array_equal(data, originals[header["EXTNAME"]])
