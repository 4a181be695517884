"""The demo flow runs end to end on the tiny preset under a real local Prefect server."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits


def test_demo_pipeline_tiny(prefect_harness: None, tmp_path: Path) -> None:
    from flows.demo import demo_pipeline

    out = tmp_path / "demo"
    report = demo_pipeline(out_dir=str(out), preset="tiny", seed=7, workers=1)
    assert str(out.resolve()) in report
    science = sorted((out / "raw").glob("*o.fits"))
    pictures = sorted((out / "pictures").glob("*.png"))
    assert len(science) == 4
    assert [p.stem for p in pictures] == [p.name.split(".")[0] for p in science]
    for png in pictures:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with fits.open(science[0]) as hdus:
        assert hdus[1].header["EXTNAME"].startswith("ccd")
    from registry.butler import Butler

    with Butler.open(out / "repo") as butler:
        raws = butler.query_datasets("raw", "MegaPrime/raw/all", "exposure.observation_type = 'science'")
        assert len(raws) == 4 * 2
        assert butler.registry.query_data_ids("tract") == [{"skymap": "rings", "tract": 9813}]
        patches = butler.registry.patches_overlapping_element("MegaPrime", raws[0].data_id["exposure"], raws[0].data_id["detector"])
        assert patches
        assert len(butler.query_datasets("calexp", "demo/isr")) == 8
        assert len(butler.query_datasets("flat", "MegaPrime/calib", find_first=False)) == 2
        assert butler.query_datasets("deepCoadd_directWarp", "demo/warp")
        coadds = butler.query_datasets("deepCoadd", "demo/coadd")
        # the deepest patch always has a coadd; a patch reached only by CCD slivers may have
        # no usable warps, which is reported as no work, not a failure
        assert coadds and len(butler.query_datasets("deepCoadd_nImage", "demo/coadd")) == len(coadds)
    assert "6. coadd" in report and (out / "repo" / "qa" / "demo" / "coadd").is_dir()
    assert "raw datasets" in report and "sky map 'rings'" in report
    # Running the demo again reuses what is there.
    again = demo_pipeline(out_dir=str(out), preset="tiny", seed=7, workers=1)
    assert "already ingested" in again and "0 calexp(s) made, 8 already there" in again
