"""Formatters: Python objects <-> bytes on disk, one per storage class.

The datastore moves files; the registry records them; a formatter is the only piece
that knows a file's format. Each formatter writes to a local (temporary) path and reads
from a local path or an fsspec URL, so the same code serves local disks and S3.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

import fsspec
import numpy as np
from astropy.io import fits

from coadd_core.geom import Box


class FormatterError(ValueError):
    """An object does not fit a storage class, or a read parameter is not supported."""


class Formatter(ABC):
    """Writes one storage class to a file and reads it back."""

    storage_class: ClassVar[str]
    extension: ClassVar[str]
    #: read parameters this formatter understands (e.g. ``bbox`` for sub-images)
    parameters: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def write(self, obj: Any, path: str) -> None:
        """Write ``obj`` to the local file ``path``."""

    @abstractmethod
    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        """Read the object at ``uri`` (a local path or an fsspec URL)."""

    def check_parameters(self, parameters: Mapping[str, Any]) -> None:
        unknown = set(parameters) - self.parameters
        if unknown:
            raise FormatterError(
                f"storage class {self.storage_class} does not take read parameter(s) {sorted(unknown)}"
            )


class ExposureFormatter(Formatter):
    """LSST-layout multi-extension FITS exposures; ``bbox`` reads only that section."""

    storage_class = "Exposure"
    extension = ".fits"
    parameters = frozenset({"bbox"})

    def write(self, obj: Any, path: str) -> None:
        from coadd_core.exposure import Exposure
        from coadd_core.fits_io import write_exposure

        if not isinstance(obj, Exposure):
            raise FormatterError(f"expected an Exposure, got {type(obj).__name__}")
        write_exposure(obj, path)

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        from coadd_core.fits_io import read_exposure

        self.check_parameters(parameters)
        bbox = parameters.get("bbox")
        if bbox is not None and not isinstance(bbox, Box):
            raise FormatterError(f"bbox must be a Box, got {type(bbox).__name__}")
        return read_exposure(uri, bbox=bbox, storage_options=dict(storage_options or {}))


class ImageFormatter(Formatter):
    """A plain 2-d array (e.g. ``deepCoadd_nImage``) as a single-HDU FITS image with its xy0."""

    storage_class = "Image"
    extension = ".fits"
    parameters = frozenset({"bbox"})

    def write(self, obj: Any, path: str) -> None:
        array, xy0 = (obj if isinstance(obj, tuple) else (obj, (0, 0)))
        array = np.asarray(array)
        if array.ndim != 2:
            raise FormatterError(f"expected a 2-d array, got shape {array.shape}")
        header = fits.Header()
        header["LTV1"] = -int(xy0[0])
        header["LTV2"] = -int(xy0[1])
        header["CRVAL1A"], header["CRVAL2A"] = int(xy0[0]), int(xy0[1])
        header["CRPIX1A"], header["CRPIX2A"] = 1, 1
        header["CTYPE1A"], header["CTYPE2A"] = "LINEAR", "LINEAR"
        fits.PrimaryHDU(array, header=header).writeto(path, overwrite=True)

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        self.check_parameters(parameters)
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as stream:
            with fits.open(stream, memmap=False) as hdus:
                header = hdus[0].header
                xy0 = (-int(header.get("LTV1", 0)), -int(header.get("LTV2", 0)))
                bbox = parameters.get("bbox")
                if bbox is None:
                    return np.asarray(hdus[0].data).copy(), xy0
                full = Box.from_shape(hdus[0].shape, xy0)
                if not full.contains(bbox):
                    raise FormatterError(f"{uri}: {bbox} is not inside {full}")
                rows, cols = bbox.slices(full)
                return np.asarray(hdus[0].section[rows, cols]).copy(), bbox.xy0


class JsonFormatter(Formatter):
    """JSON-compatible structures (sky map definitions, summaries, configs)."""

    storage_class = "StructuredData"
    extension = ".json"

    def write(self, obj: Any, path: str) -> None:
        if hasattr(obj, "to_dict"):
            obj = obj.to_dict()
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(obj, stream, indent=1, sort_keys=True, allow_nan=True)

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        self.check_parameters(parameters)
        with fsspec.open(uri, "r", encoding="utf-8", **dict(storage_options or {})) as stream:
            return json.load(stream)


class SkyMapFormatter(JsonFormatter):
    """A sky map stored as its definition; reading rebuilds the sky map object."""

    storage_class = "SkyMap"

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        from coadd_core.skymap import skymap_from_dict

        return skymap_from_dict(super().read(uri, storage_options=storage_options, **parameters))


class TableFormatter(Formatter):
    """astropy Tables (reference catalogs, source lists) as FITS binary tables."""

    storage_class = "Table"
    extension = ".fits"

    def write(self, obj: Any, path: str) -> None:
        from astropy.table import Table

        if not isinstance(obj, Table):
            obj = Table(obj)
        obj.write(path, format="fits", overwrite=True)

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        from astropy.table import Table

        self.check_parameters(parameters)
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as stream:
            return Table.read(stream, format="fits")


class RawFormatter(Formatter):
    """A raw MegaPrime MEF; a dataset is one detector's HDU of it (``hdu`` parameter).

    Raw files are ingested, never written by the pipeline: ``write`` refuses.
    """

    storage_class = "RawImage"
    extension = ".fits"
    parameters = frozenset({"detector_name"})

    def write(self, obj: Any, path: str) -> None:
        raise FormatterError("raw files are ingested, not written")

    def read(self, uri: str, *, storage_options: Mapping[str, Any] | None = None, **parameters: Any) -> Any:
        """Return ``(header, data)`` of the detector's HDU (data as stored, uint16)."""
        self.check_parameters(parameters)
        name = parameters.get("detector_name")
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as stream:
            with fits.open(stream, memmap=False, lazy_load_hdus=True) as hdus:
                for hdu in hdus[1:]:
                    extname = str(hdu.header.get("EXTNAME", "")).strip()
                    if name is None or extname == name:
                        return hdu.header.copy(), np.asarray(hdu.data).copy()
        raise FormatterError(f"{uri}: no extension named {name!r}")


_FORMATTERS: dict[str, Formatter] = {
    f.storage_class: f
    for f in (
        ExposureFormatter(),
        ImageFormatter(),
        JsonFormatter(),
        SkyMapFormatter(),
        TableFormatter(),
        RawFormatter(),
    )
}


def formatter_for(storage_class: str) -> Formatter:
    try:
        return _FORMATTERS[storage_class]
    except KeyError:
        raise FormatterError(
            f"no formatter for storage class {storage_class!r}; known: {sorted(_FORMATTERS)}"
        ) from None


def register_formatter(formatter: Formatter) -> None:
    """Add a formatter for a new storage class (later stages add their own)."""
    _FORMATTERS[formatter.storage_class] = formatter
