"""Raw ingest: read raw MEF headers, make dimension records and ``raw`` datasets.

Metadata come from ``astro_metadata_translator`` (its MegaPrime translator), one
``ObservationInfo`` per CCD extension; each exposure-detector's sky region comes from
that extension's own WCS. Reading is separated from registering so the reads can run in
worker processes while one process (the flow) registers everything: workers return
small, picklable :class:`RawFileMetadata` values.

One raw file holds every CCD of an exposure, so the ``raw`` datasets of one exposure
(one per detector) share one file; the file is removed only when none is left.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from registry.dimensions import (
    BandRecord,
    DetectorRecord,
    ExposureRecord,
    InstrumentRecord,
    PhysicalFilterRecord,
    VisitDetectorRegionRecord,
    VisitRecord,
    tai_ns,
)
from registry.refs import DatasetRef

log = logging.getLogger(__name__)

RAW_RUN_TEMPLATE = "{instrument}/raw/all"
#: Padding of exposure-detector regions, in pixels: the raw header WCS is a pointing
#: model, good to a few arcsec; 50 px (9") keeps overlap queries conservative.
REGION_PADDING_PX = 50
_INSTRUMENT_LIMITS = {"MegaPrime": {"detector_max": 36, "exposure_max": 10**8, "visit_max": 10**8}}


class IngestError(ValueError):
    """A file could not be ingested; the message names the file and the cause."""


@dataclass(frozen=True)
class RawDetectorMetadata:
    """What ingest needs from one CCD extension: identity, filter, times, sky region."""

    instrument: str
    exposure: int
    detector: int
    detector_name: str
    detector_serial: str | None
    physical_filter: str
    band: str
    observation_type: str
    obs_id: str
    exposure_time: float
    dark_time: float
    timespan_begin: int
    timespan_end: int
    day_obs: int
    tracking_ra: float | None
    tracking_dec: float | None
    airmass: float | None
    #: sphgeom ``ConvexPolygon.encode()`` bytes (picklable) of the padded CCD footprint
    region: bytes | None = field(default=None, repr=False)

    @property
    def data_id(self) -> dict[str, Any]:
        return {"instrument": self.instrument, "exposure": self.exposure, "detector": self.detector}

    @property
    def is_science(self) -> bool:
        return self.observation_type == "science"


@dataclass(frozen=True)
class RawFileMetadata:
    """All CCDs of one raw file."""

    uri: str
    detectors: tuple[RawDetectorMetadata, ...]

    @property
    def exposure(self) -> int:
        return self.detectors[0].exposure

    @property
    def instrument(self) -> str:
        return self.detectors[0].instrument


def _band_of(physical_filter: str) -> str:
    """MegaPrime: the band is the letter before the dot (``r.MP9602`` -> ``r``)."""
    return physical_filter.split(".", 1)[0] if physical_filter else physical_filter


def _region_from_header(header: fits.Header, padding_px: int) -> bytes | None:
    """Sky polygon of the CCD's imaging pixels from the extension's own WCS, padded."""
    import warnings

    from lsst import sphgeom

    from coadd_core.camera import load_camera

    camera = load_camera("MegaPrime")
    det = camera.detector_from_header(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header)
    if not wcs.has_celestial:
        return None
    data = det.data_section()
    xa, xb = data.x0 - 0.5 - padding_px, data.x1 + 0.5 + padding_px
    ya, yb = data.y0 - 0.5 - padding_px, data.y1 + 0.5 + padding_px
    # Densify the edges slightly so the polygon hugs a gnomonic footprint.
    t = np.linspace(0.0, 1.0, 5)[:-1]
    xs = np.concatenate([xa + (xb - xa) * t, np.full(4, xb), xb - (xb - xa) * t, np.full(4, xa)])
    ys = np.concatenate([np.full(4, ya), ya + (yb - ya) * t, np.full(4, yb), yb - (yb - ya) * t])
    ra, dec = wcs.celestial.all_pix2world(xs, ys, 0)
    vectors = [sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(float(r), float(d))) for r, d in zip(ra, dec)]
    return sphgeom.ConvexPolygon.convexHull(vectors).encode()


def _detector_metadata(header: fits.Header, uri: str, padding_px: int) -> RawDetectorMetadata:
    import warnings

    from astro_metadata_translator import ObservationInfo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = ObservationInfo(header, filename=uri, pedantic=False)
    required = {
        "instrument": info.instrument,
        "exposure_id": info.exposure_id,
        "detector_num": info.detector_num,
        "physical_filter": info.physical_filter,
        "datetime_begin": info.datetime_begin,
        "observation_type": info.observation_type,
    }
    missing = [name for name, value in required.items() if value is None]
    if missing:
        raise IngestError(f"{uri} [{header.get('EXTNAME', '?')}]: cannot determine {', '.join(missing)}")
    begin = info.datetime_begin
    end = info.datetime_end if info.datetime_end is not None else begin
    exposure_time = float(info.exposure_time.to_value("s")) if info.exposure_time is not None else 0.0
    dark_time = float(info.dark_time.to_value("s")) if info.dark_time is not None else exposure_time
    radec = info.tracking_radec
    region = None
    if info.observation_type == "science":
        try:
            region = _region_from_header(header, padding_px)
        except Exception as exc:  # noqa: BLE001 - reported with the file name below
            raise IngestError(f"{uri} [{header.get('EXTNAME', '?')}]: no usable WCS ({exc})") from exc
    day_obs = int(info.observing_day) if info.observing_day else int(begin.strftime("%Y%m%d"))
    return RawDetectorMetadata(
        instrument=str(info.instrument),
        exposure=int(info.exposure_id),
        detector=int(info.detector_num),
        detector_name=str(info.detector_name),
        detector_serial=None if info.detector_serial is None else str(info.detector_serial),
        physical_filter=str(info.physical_filter),
        band=_band_of(str(info.physical_filter)),
        observation_type=str(info.observation_type),
        obs_id=str(info.observation_id),
        exposure_time=exposure_time,
        dark_time=dark_time,
        timespan_begin=tai_ns(begin),
        timespan_end=tai_ns(end),
        day_obs=day_obs,
        tracking_ra=None if radec is None else float(radec.ra.deg),
        tracking_dec=None if radec is None else float(radec.dec.deg),
        airmass=None if info.boresight_airmass is None else float(info.boresight_airmass),
        region=region,
    )


def read_raw_file_metadata(
    uri: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    padding_px: int = REGION_PADDING_PX,
) -> RawFileMetadata:
    """Read every CCD header of a raw MEF (headers only, no pixels).

    Raises :class:`IngestError` naming the file for anything that makes it unusable:
    missing, not FITS, truncated, no CCD extensions, missing keywords.
    """
    from fsspec.core import url_to_fs

    import warnings

    try:
        fs, path = url_to_fs(uri, **dict(storage_options or {}))
        size = int(fs.size(path))
        with warnings.catch_warnings(), fs.open(path, "rb") as stream:
            # Truncation and the like are reported below, once, naming the file.
            warnings.simplefilter("ignore")
            with fits.open(stream, memmap=False, lazy_load_hdus=True) as hdus:
                headers = []
                expected_end = 0
                index = 0
                while True:
                    try:
                        hdu = hdus[index]
                    except IndexError:
                        break
                    info = hdus.fileinfo(index)
                    expected_end = max(expected_end, int(info["datLoc"]) + int(info["datSpan"]))
                    if index > 0:
                        headers.append(hdu.header.copy())
                    index += 1
    except FileNotFoundError:
        raise IngestError(f"{uri}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds for broken files
        raise IngestError(f"{uri}: not a readable FITS file ({exc.__class__.__name__}: {exc})") from exc
    if not headers:
        raise IngestError(f"{uri}: no image extensions (expected one per CCD)")
    if size < expected_end:
        raise IngestError(f"{uri}: truncated ({size} bytes, its headers describe {expected_end})")
    try:
        detectors = tuple(_detector_metadata(h, uri, padding_px) for h in headers)
    except IngestError:
        raise
    except Exception as exc:  # noqa: BLE001 - translator errors name keywords, keep them
        raise IngestError(f"{uri}: cannot read the observation metadata ({exc})") from exc
    exposures = {d.exposure for d in detectors}
    if len(exposures) != 1:
        raise IngestError(f"{uri}: extensions disagree on the exposure number ({sorted(exposures)})")
    return RawFileMetadata(uri=uri, detectors=detectors)


def dimension_records(files: Iterable[RawFileMetadata]) -> dict[str, list[Any]]:
    """Dimension records for these files, in the order they must be inserted."""
    from lsst import sphgeom

    out: dict[str, dict[tuple, Any]] = {
        k: {}
        for k in ("instrument", "band", "physical_filter", "detector", "exposure", "visit", "visit_detector_region")
    }
    visit_regions: dict[tuple[str, int], list[Any]] = {}
    for meta in files:
        for d in meta.detectors:
            limits = _INSTRUMENT_LIMITS.get(d.instrument, {})
            out["instrument"][(d.instrument,)] = InstrumentRecord(
                name=d.instrument, class_name=f"{d.instrument}Translator", **limits
            )
            out["band"][(d.band,)] = BandRecord(name=d.band)
            out["physical_filter"][(d.instrument, d.physical_filter)] = PhysicalFilterRecord(
                instrument=d.instrument, name=d.physical_filter, band=d.band
            )
            out["detector"][(d.instrument, d.detector)] = DetectorRecord(
                instrument=d.instrument, id=d.detector, full_name=d.detector_name, serial=d.detector_serial,
                purpose="SCIENCE",
            )
            out["exposure"][(d.instrument, d.exposure)] = ExposureRecord(
                instrument=d.instrument,
                id=d.exposure,
                physical_filter=d.physical_filter,
                band=d.band,
                day_obs=d.day_obs,
                obs_id=d.obs_id,
                observation_type=d.observation_type,
                exposure_time=d.exposure_time,
                dark_time=d.dark_time,
                timespan_begin=d.timespan_begin,
                timespan_end=d.timespan_end,
                tracking_ra=d.tracking_ra,
                tracking_dec=d.tracking_dec,
                sky_angle=0.0,
                airmass=d.airmass,
            )
            if d.is_science and d.region is not None:
                region = sphgeom.Region.decode(d.region)
                out["visit_detector_region"][(d.instrument, d.exposure, d.detector)] = VisitDetectorRegionRecord(
                    instrument=d.instrument, visit=d.exposure, detector=d.detector, region=region
                )
                visit_regions.setdefault((d.instrument, d.exposure), []).append(region)
                out["visit"][(d.instrument, d.exposure)] = d
    # A visit's region is the hull of its detectors' regions (MegaPrime: visit = exposure).
    for key, d in list(out["visit"].items()):
        vertices = [v for r in visit_regions[key] for v in r.getVertices()]
        out["visit"][key] = VisitRecord(
            instrument=d.instrument,
            id=d.exposure,
            physical_filter=d.physical_filter,
            band=d.band,
            day_obs=d.day_obs,
            timespan_begin=d.timespan_begin,
            timespan_end=d.timespan_end,
            region=sphgeom.ConvexPolygon.convexHull(vertices),
        )
    return {k: list(v.values()) for k, v in out.items()}


def raw_refs(meta: RawFileMetadata, raw_type: Any, run: str) -> list[DatasetRef]:
    """Deterministic (type + run) ``raw`` refs of a file, so re-ingest finds them."""
    return [DatasetRef.new(raw_type, d.data_id, run, id_mode="type_run") for d in meta.detectors]


@dataclass
class IngestReport:
    """What an ingest did: refs registered, files already there, files that failed."""

    ingested: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    datasets: int = 0

    def summary(self) -> str:
        parts = [f"{len(self.ingested)} file(s) ingested ({self.datasets} raw datasets)"]
        if self.already:
            parts.append(f"{len(self.already)} already ingested (no-op)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        return ", ".join(parts)


def register_raw_file(
    butler: Any,
    meta: RawFileMetadata,
    *,
    run: str | None = None,
    transfer: str = "copy",
) -> tuple[str, int]:
    """Register one file's records and datasets; returns (status, number of datasets).

    ``status`` is ``'ingested'`` or ``'already'`` (every raw of the file is already in
    ``run``: nothing is done). The file is transferred only after its dimension records
    are in, and its datasets are inserted in one transaction; if that fails the
    transferred copy is removed again.
    """
    run = run or RAW_RUN_TEMPLATE.format(instrument=meta.instrument)
    registry = butler.registry
    raw_type = registry.get_dataset_type("raw")
    refs = raw_refs(meta, raw_type, run)
    registry.register_run(run)
    existing = [registry.get_dataset(ref.id) for ref in refs]
    if all(e is not None for e in existing):
        return "already", 0
    records = dimension_records([meta])
    for element in ("instrument", "band", "physical_filter", "detector", "exposure", "visit", "visit_detector_region"):
        if records[element]:
            registry.insert_dimension_records(element, records[element], on_conflict="ignore")
    relative = butler.datastore.relative_path("raw", run, {"instrument": meta.instrument, "exposure": meta.exposure}, _extension(meta.uri))
    stored = butler.datastore.transfer(meta.uri, relative, transfer, overwrite=True)
    todo = [ref.with_file(stored.uri, stored.size, stored.checksum) for ref, e in zip(refs, existing) if e is None]
    try:
        # Another process may be ingesting the same file right now: identical
        # deterministic refs, so theirs count as ours.
        registry.insert_datasets(todo, on_conflict="ignore")
    except BaseException:
        if transfer != "direct" and registry.count_datasets_with_uri(stored.uri) == 0:
            butler.datastore.remove(stored.uri)
        raise
    return "ingested", len(todo)


def _extension(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    for ext in (".fits.fz", ".fits.gz", ".fits", ".fz"):
        if name.endswith(ext):
            return ext
    return ".fits"
