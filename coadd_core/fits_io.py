"""Read and write Exposures as LSST-layout multi-extension FITS (ALGORITHMS.md §1.3).

Layout::

    HDU0  no pixels: visit-info keywords, readable metadata scalars, AR_HDU and
          <NAME>_ID / ARCHIVE_ID_<NAME> pointers
    HDU1  IMAGE    float32 \\
    HDU2  MASK     int32    } EXTNAME=EXTTYPE, INHERIT=T, WCS for the array, LTV1/2,
    HDU3  VARIANCE float32 /  xy0 as alternate WCS 'A', BUNIT; MP_<NAME>=bit on MASK
    HDU4  ARCHIVE_INDEX table (id, component name, EXTNAME)
    HDU5+ ARCHIVE_DATA tables, one per component: PSF, WCS, PHOTOCALIB, VISITINFO,
          VALIDPOLYGON, METADATA - a JSON column with full-precision floats (plus an
          ARRAY column for pixelised PSFs), so every component round-trips exactly.

Sources and destinations are local paths or fsspec URLs (``s3://bucket/key``...).  A
sub-box read fetches only the bytes it needs: astropy's ``ImageHDU.section`` reads each
row segment with a seek, locally without memory mapping and remotely through an fsspec
file with a read-ahead cache, so cost grows with the box, not the file.  Writes never
expose a partial file: a local file is written beside its destination and renamed into
place; a remote one is assembled in memory and uploaded in one put.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import fsspec
import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS
from fsspec.implementations.local import LocalFileSystem

from .exposure import Exposure
from .geom import Box
from .image import MaskedImage
from .masks import STANDARD_PLANES, MaskPlanes, remap_mask, standard_planes
from .photocalib import PhotoCalib
from .polygon import ValidPolygon
from .psf import ImagePsf, Psf
from .visit_info import VisitInfo
from .wcs_utils import (
    exact_float_card,
    shifted,
    wcs_from_header,
    wcs_from_header_dict,
    wcs_header_dict,
    wcs_to_header,
)

__all__ = [
    "ExposureInfo",
    "ExposureNotFoundError",
    "ExposureReadError",
    "OutOfBoundsError",
    "read_exposure",
    "read_exposure_header",
    "read_exposure_info",
    "read_exposure_metadata",
    "write_exposure",
]

logger = logging.getLogger(__name__)

#: Read-ahead block for remote sub-box reads: big enough to cover many row segments of
#: a box per request, small compared with a plane.
REMOTE_BLOCK_SIZE = 1 << 20
#: Read-ahead block for remote header-only reads (headers and archive tables are small).
REMOTE_HEADER_BLOCK_SIZE = 1 << 16

_PLANE_NAMES = ("IMAGE", "MASK", "VARIANCE")
_ARCHIVE_HDU = 5  # 1-based number of the ARCHIVE_INDEX HDU, as LSST's AR_HDU

_STANDARD_KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$")
_RESERVED_PREFIX = re.compile(
    r"^(NAXIS\d*|(CTYPE|CRPIX|CRVAL|CDELT|CUNIT|CROTA)\d[A-Z]?|(CD|PC)\d_\d[A-Z]?|(PV|PS)\d_\d+[A-Z]?"
    r"|(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)|LTV\d|LTM\d_\d|WCSNAME\w*|WCSAXES\w*|MP_.*|ARCHIVE_ID_.*"
    r"|(PSF|WCS|PHOTOCALIB|VISITINFO|VALIDPOLYGON|VALID_POLYGON|METADATA|COADD_INPUTS|AP_CORR_MAP)_ID)$"
)
_RESERVED = frozenset(
    {
        "SIMPLE", "BITPIX", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "EXTTYPE",
        "EXTVER", "INHERIT", "BSCALE", "BZERO", "BUNIT", "BLANK", "COMMENT", "HISTORY",
        "CONTINUE", "END", "", "AR_HDU", "LONPOLE", "LATPOLE", "RADESYS", "RADECSYS",
        "EQUINOX", "CHECKSUM", "DATASUM", "TFIELDS",
    }
    | set(VisitInfo.header_keywords())
)


class ExposureReadError(OSError):
    """An exposure file is missing, unreadable, corrupt or lacks a required part."""


class ExposureNotFoundError(ExposureReadError, FileNotFoundError):
    """The exposure file does not exist."""


class OutOfBoundsError(ValueError):
    """A requested box is not inside the exposure (a caller error, not a read failure)."""


@dataclass
class ExposureInfo:
    """Everything in an exposure file except the pixels (cheap to read).

    ``mask_planes`` is the file's own ``MP_*`` dictionary; :func:`read_exposure` remaps
    it into the in-memory convention.
    """

    bbox: Box
    wcs: WCS | None = None
    psf: Psf | None = None
    photo_calib: PhotoCalib | None = None
    visit_info: VisitInfo | None = None
    valid_polygon: ValidPolygon | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    mask_planes: MaskPlanes | None = None
    unit: str | None = None


# ======================================================================================
# writing
# ======================================================================================


def _json_default(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


def _check_keys(value: Any, path: str = "metadata") -> None:
    """Reject non-string dict keys: JSON would silently turn them into strings."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key {key!r}")
            _check_keys(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_keys(item, f"{path}[{i}]")


def _to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=True, allow_nan=True)


def _is_reserved(key: str) -> bool:
    upper = key.upper()
    return upper in _RESERVED or bool(_RESERVED_PREFIX.match(upper))


def _metadata_cards(metadata: dict[str, Any]) -> list[fits.Card]:
    """Readable HDU0 cards for top-level scalar metadata that FITS can hold."""
    cards: list[fits.Card] = []
    seen: set[str] = set()
    for key, value in metadata.items():
        if not isinstance(key, str) or _is_reserved(key) or key.upper() in seen:
            continue
        if isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
            if abs(value) >= 1 << 63:
                continue
        elif isinstance(value, (float, np.floating)):
            value = float(value)
            if not math.isfinite(value):
                continue
        elif isinstance(value, str):
            if not (value.isascii() and value.isprintable()):
                continue
        else:
            continue
        if not (key.isascii() and key.isprintable()) or "=" in key or key.upper().startswith("HIERARCH"):
            continue
        try:
            if _STANDARD_KEYWORD.match(key):
                card = exact_float_card(key, value) if isinstance(value, float) else fits.Card(key, value)
            elif len(str(card := fits.Card(f"HIERARCH {key}", value))) > fits.Card.length:
                # long-string CONTINUE cards are not defined for HIERARCH keywords
                raise ValueError("HIERARCH card does not fit in 80 characters")
            str(card)  # formatting raises if the card cannot be represented
        except (ValueError, VerifyError) as exc:
            logger.debug("metadata %r kept only in the archive: %s", key, exc)
            continue
        seen.add(key.upper())
        cards.append(card)
    return cards


def _card(key: str, value: Any, comment: str = "") -> fits.Card:
    """Card for any keyword length, with the comment shortened to fit one 80-char card."""
    name = key if _STANDARD_KEYWORD.match(key) else f"HIERARCH {key}"
    card = fits.Card(name, value)
    room = 80 - len(str(card).rstrip()) - 3
    if comment and room > 0:
        card = fits.Card(name, value, comment[:room])
    return card


def _plane_header(name: str, exposure: Exposure, disk_wcs: fits.Header | None, unit: str) -> fits.Header:
    x0, y0 = exposure.xy0
    header = fits.Header()
    header["EXTTYPE"] = (name, "extension type")
    header["EXTNAME"] = (name, "extension name")
    header["INHERIT"] = (True, "inherit the primary header")
    if disk_wcs is not None:
        header.extend(disk_wcs.cards)
    header["LTV1"] = (-x0, "array x = parent x + LTV1")
    header["LTV2"] = (-y0, "array y = parent y + LTV2")
    header["WCSNAMEA"] = ("PHYSICAL", "parent pixel coordinates")
    header["CTYPE1A"] = ("LINEAR", "parent pixel x")
    header["CTYPE2A"] = ("LINEAR", "parent pixel y")
    header["CRPIX1A"] = (1.0, "first array pixel")
    header["CRPIX2A"] = (1.0, "first array pixel")
    header["CRVAL1A"] = (x0, "x0: parent x of the first pixel")
    header["CRVAL2A"] = (y0, "y0: parent y of the first pixel")
    header["CUNIT1A"] = ("PIXEL", "")
    header["CUNIT2A"] = ("PIXEL", "")
    if name == "IMAGE":
        header["BUNIT"] = (unit, "pixel unit")
    elif name == "VARIANCE":
        header["BUNIT"] = (f"{unit}**2", "pixel unit")
    else:
        for plane, info in sorted(exposure.planes.items(), key=lambda item: item[1].bit):
            header.append(_card(f"MP_{plane}", info.bit, info.description))
    return header


def _archive_table(
    name: str, archive_id: int, payload: Any, array: np.ndarray | None = None
) -> fits.BinTableHDU:
    text = _to_json(payload)
    columns = [fits.Column(name="JSON", format=f"{max(len(text), 1)}A", array=np.array([text]))]
    if array is not None:
        columns.append(
            fits.Column(
                name="ARRAY",
                format=f"{array.size}D",
                dim=f"({array.shape[1]},{array.shape[0]})",
                array=array[np.newaxis].astype(np.float64),
            )
        )
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["EXTTYPE"] = ("ARCHIVE_DATA", "archived exposure component")
    hdu.header["EXTNAME"] = (name, "component")
    hdu.header["AR_ID"] = (archive_id, "id in the ARCHIVE_INDEX table")
    return hdu


def _components(exposure: Exposure) -> list[tuple[str, Any, np.ndarray | None]]:
    out: list[tuple[str, Any, np.ndarray | None]] = []
    if exposure.psf is not None:
        payload = exposure.psf.to_dict()
        array = None
        if isinstance(exposure.psf, ImagePsf):
            payload.pop("array")
            array = exposure.psf.array
        out.append(("PSF", payload, array))
    if exposure.wcs is not None:
        out.append(("WCS", wcs_header_dict(exposure.wcs), None))
    if exposure.photo_calib is not None:
        out.append(("PHOTOCALIB", exposure.photo_calib.to_dict(), None))
    if exposure.visit_info is not None:
        out.append(("VISITINFO", exposure.visit_info.to_dict(), None))
    if exposure.valid_polygon is not None:
        out.append(("VALIDPOLYGON", exposure.valid_polygon.to_dict(), None))
    _check_keys(exposure.metadata)
    out.append(("METADATA", exposure.metadata, None))
    return out


def exposure_to_hdulist(exposure: Exposure) -> fits.HDUList:
    """The in-memory FITS representation written by :func:`write_exposure`."""
    components = _components(exposure)
    primary = fits.PrimaryHDU()
    header = primary.header
    if exposure.visit_info is not None:
        exposure.visit_info.to_header(header)
    header.extend(_metadata_cards(exposure.metadata))
    header["AR_HDU"] = (_ARCHIVE_HDU, "1-based HDU of the archive index")
    for archive_id, (name, _, _) in enumerate(components, start=1):
        header.append(_card(f"{name}_ID", archive_id, f"archive id of {name}"))
        header.append(_card(f"ARCHIVE_ID_{name}", archive_id, f"archive id of {name}"))

    disk_wcs = None
    if exposure.wcs is not None:
        disk_wcs = wcs_to_header(shifted(exposure.wcs, *exposure.xy0))
    unit = exposure.unit
    mi = exposure.masked_image
    hdus: list[fits.hdu.base.ExtensionHDU] = [
        fits.ImageHDU(np.ascontiguousarray(array), header=_plane_header(name, exposure, disk_wcs, unit))
        for name, array in zip(_PLANE_NAMES, (mi.image, mi.mask, mi.variance))
    ]
    index = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="ID", format="J", array=np.arange(1, len(components) + 1, dtype=np.int32)),
            fits.Column(name="NAME", format="16A", array=np.array([c[0] for c in components])),
            fits.Column(name="EXTNAME", format="16A", array=np.array([c[0] for c in components])),
        ]
    )
    index.header["EXTTYPE"] = ("ARCHIVE_INDEX", "index of archived components")
    index.header["EXTNAME"] = ("ARCHIVE_INDEX", "")
    hdus.append(index)
    for archive_id, (name, payload, array) in enumerate(components, start=1):
        hdus.append(_archive_table(name, archive_id, payload, array))
    return fits.HDUList([primary, *hdus])


def _resolve(
    target: str | os.PathLike[str], storage_options: dict[str, Any] | None
) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(os.fspath(target), **(storage_options or {}))
    return fs, path


def write_exposure(
    exposure: Exposure, dest: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
) -> None:
    """Write ``exposure`` to a local path or fsspec URL, atomically (see module docstring)."""
    hdulist = exposure_to_hdulist(exposure)
    fs, path = _resolve(dest, storage_options)
    if isinstance(fs, LocalFileSystem):
        _write_local_atomic(hdulist, path)
    else:
        buffer = io.BytesIO()
        hdulist.writeto(buffer)
        fs.pipe_file(path, buffer.getvalue())
    logger.debug("wrote exposure %s to %s", exposure.bbox, dest)


def _write_local_atomic(hdulist: fits.HDUList, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                hdulist.writeto(handle)
            except AttributeError as exc:
                # astropy's free-space check fails on an open handle (no file name) and
                # hides the OSError it was reporting, e.g. a full disk
                if isinstance(exc.__context__, OSError):
                    raise OSError(exc.__context__.errno, f"{path}: {exc.__context__.strerror}") from exc.__context__
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ======================================================================================
# reading
# ======================================================================================


def _describe(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return str(getattr(src, "path", None) or getattr(src, "name", None) or repr(src))


@contextlib.contextmanager
def _open_fits(
    src: str | os.PathLike[str] | BinaryIO,
    storage_options: dict[str, Any] | None,
    *,
    mode: str,
) -> Iterator[tuple[fits.HDUList, str]]:
    """Open ``src`` lazily.

    ``mode`` sizes remote fetches: ``"whole"`` downloads the file in one request,
    ``"section"`` reads ahead :data:`REMOTE_BLOCK_SIZE`, ``"header"`` only
    :data:`REMOTE_HEADER_BLOCK_SIZE` per request.
    """
    name = _describe(src)
    with contextlib.ExitStack() as stack:
        try:
            if hasattr(src, "read"):
                handle: Any = src
            else:
                fs, path = _resolve(src, storage_options)  # type: ignore[arg-type]
                if isinstance(fs, LocalFileSystem):
                    if not os.path.exists(path):
                        raise ExposureNotFoundError(f"exposure file not found: {name}")
                    handle = path
                elif mode == "whole":
                    handle = io.BytesIO(fs.cat_file(path))
                else:
                    block = REMOTE_BLOCK_SIZE if mode == "section" else REMOTE_HEADER_BLOCK_SIZE
                    handle = stack.enter_context(
                        fs.open(path, "rb", block_size=block, cache_type="readahead")
                    )
            hdulist = stack.enter_context(fits.open(handle, memmap=False, lazy_load_hdus=True))
        except ExposureReadError:
            raise
        except FileNotFoundError as exc:
            raise ExposureNotFoundError(f"exposure file not found: {name}") from exc
        except (OSError, ValueError, TypeError, EOFError) as exc:
            raise ExposureReadError(f"cannot open exposure {name}: {exc}") from exc
        try:
            yield hdulist, name
        except (ExposureReadError, OutOfBoundsError):
            raise
        except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
            raise ExposureReadError(f"cannot read exposure {name}: {exc}") from exc


def _hdu(hdulist: fits.HDUList, extname: str, name: str) -> Any:
    try:
        return hdulist[extname]
    except KeyError:
        raise ExposureReadError(f"{name} has no {extname} extension") from None


def _file_bbox(header: fits.Header, name: str) -> Box:
    try:
        nx, ny = int(header["NAXIS1"]), int(header["NAXIS2"])
    except KeyError:
        raise ExposureReadError(f"{name}: IMAGE extension holds no 2-D image") from None
    if header.get("CTYPE1A") == "LINEAR" and "CRVAL1A" in header and "CRVAL2A" in header:
        x0 = header["CRVAL1A"] - (header.get("CRPIX1A", 1.0) - 1.0)
        y0 = header["CRVAL2A"] - (header.get("CRPIX2A", 1.0) - 1.0)
    else:
        x0, y0 = -header.get("LTV1", 0), -header.get("LTV2", 0)
    return Box.from_size(nx, ny, int(round(x0)), int(round(y0)))


def _mask_planes_from_header(header: fits.Header) -> MaskPlanes | None:
    standard = dict(STANDARD_PLANES)
    planes = []
    for card in header.cards:
        if card.keyword.startswith("MP_"):
            plane = card.keyword[3:]
            planes.append((plane, int(card.value), standard.get(plane) or card.comment))
    return MaskPlanes(planes) if planes else None


def _archive_hdus(hdulist: fits.HDUList, name: str) -> dict[str, Any] | None:
    """EXTNAME -> archive table HDU for our files; None for files without an archive."""
    try:
        index = hdulist["ARCHIVE_INDEX"]
    except KeyError:
        return None
    out = {}
    for extname in index.data["EXTNAME"]:
        out[str(extname).strip()] = _hdu(hdulist, str(extname).strip(), name)
    return out


def _archive_json(hdu: Any, name: str) -> Any:
    try:
        return json.loads(str(hdu.data["JSON"][0]))
    except (KeyError, IndexError, json.JSONDecodeError) as exc:
        raise ExposureReadError(f"{name}: corrupt archive table {hdu.name}: {exc}") from exc


def _metadata_from_primary(header: fits.Header) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for card in header.cards:
        if _is_reserved(card.keyword) or isinstance(card.value, fits.card.Undefined):
            continue
        meta[card.keyword] = card.value
    return meta


def _read_info(hdulist: fits.HDUList, name: str) -> ExposureInfo:
    primary = hdulist[0].header
    image_header = _hdu(hdulist, "IMAGE", name).header
    mask_header = _hdu(hdulist, "MASK", name).header
    _hdu(hdulist, "VARIANCE", name)
    bbox = _file_bbox(image_header, name)
    info = ExposureInfo(
        bbox=bbox,
        mask_planes=_mask_planes_from_header(mask_header),
        unit=image_header.get("BUNIT"),
    )
    archive = _archive_hdus(hdulist, name)
    if archive is None:
        disk_wcs = wcs_from_header(image_header)
        info.wcs = None if disk_wcs is None else shifted(disk_wcs, -bbox.x0, -bbox.y0)
        visit_info = VisitInfo.from_header(primary)
        info.visit_info = None if visit_info == VisitInfo() else visit_info
        info.metadata = _metadata_from_primary(primary)
        return info
    if "PSF" in archive:
        hdu = archive["PSF"]
        payload = _archive_json(hdu, name)
        if "ARRAY" in hdu.columns.names:
            payload["array"] = np.array(hdu.data["ARRAY"][0], dtype=np.float64)
        info.psf = Psf.from_dict(payload)
    if "WCS" in archive:
        info.wcs = wcs_from_header_dict(_archive_json(archive["WCS"], name))
    else:
        disk_wcs = wcs_from_header(image_header)
        info.wcs = None if disk_wcs is None else shifted(disk_wcs, -bbox.x0, -bbox.y0)
    if "PHOTOCALIB" in archive:
        info.photo_calib = PhotoCalib.from_dict(_archive_json(archive["PHOTOCALIB"], name))
    if "VISITINFO" in archive:
        info.visit_info = VisitInfo.from_dict(_archive_json(archive["VISITINFO"], name))
    if "VALIDPOLYGON" in archive:
        info.valid_polygon = ValidPolygon.from_dict(_archive_json(archive["VALIDPOLYGON"], name))
    if "METADATA" in archive:
        info.metadata = _archive_json(archive["METADATA"], name)
    return info


def _read_plane(hdu: Any, rows: slice, cols: slice, dtype: type, whole: bool) -> np.ndarray:
    data = hdu.data if whole else hdu.section[rows, cols]
    return np.ascontiguousarray(data, dtype=np.dtype(dtype).newbyteorder("="))


def read_exposure(
    src: str | os.PathLike[str] | BinaryIO,
    *,
    bbox: Box | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Exposure:
    """Read an exposure, or only the pixels of ``bbox`` (parent coordinates).

    ``src`` is a local path, an fsspec URL, or an open binary file.  Raises
    :class:`ExposureReadError` (:class:`ExposureNotFoundError` if missing) for unreadable
    files, and ``ValueError`` if ``bbox`` is not inside the exposure.
    """
    with _open_fits(src, storage_options, mode="whole" if bbox is None else "section") as (hdulist, name):
        info = _read_info(hdulist, name)
        read_box = info.bbox if bbox is None else bbox
        if read_box.is_empty() or not info.bbox.contains(read_box):
            raise OutOfBoundsError(f"{name}: requested {read_box} is not inside the exposure's {info.bbox}")
        whole = read_box == info.bbox
        rows, cols = read_box.slices(info.bbox)
        image = _read_plane(_hdu(hdulist, "IMAGE", name), rows, cols, np.float32, whole)
        mask = _read_plane(_hdu(hdulist, "MASK", name), rows, cols, np.int32, whole)
        variance = _read_plane(_hdu(hdulist, "VARIANCE", name), rows, cols, np.float32, whole)
    planes = standard_planes()
    if info.mask_planes is not None:
        mask, planes = remap_mask(mask, info.mask_planes, planes)
    masked_image = MaskedImage(image, mask, variance, xy0=read_box.xy0, planes=planes)
    return Exposure(
        masked_image,
        wcs=info.wcs,
        psf=info.psf,
        photo_calib=info.photo_calib,
        visit_info=info.visit_info,
        valid_polygon=info.valid_polygon,
        metadata=info.metadata,
    )


def read_exposure_info(
    src: str | os.PathLike[str] | BinaryIO, *, storage_options: dict[str, Any] | None = None
) -> ExposureInfo:
    """Box, WCS, PSF, calibration, visit info, polygon, metadata and mask planes; no pixels."""
    with _open_fits(src, storage_options, mode="header") as (hdulist, name):
        return _read_info(hdulist, name)


def read_exposure_metadata(
    src: str | os.PathLike[str] | BinaryIO, *, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The free-form metadata dictionary (lossless archive copy when present)."""
    return read_exposure_info(src, storage_options=storage_options).metadata


def read_exposure_header(
    src: str | os.PathLike[str] | BinaryIO, *, storage_options: dict[str, Any] | None = None
) -> fits.Header:
    """A copy of the primary (HDU0) header."""
    with _open_fits(src, storage_options, mode="header") as (hdulist, _):
        return hdulist[0].header.copy()
