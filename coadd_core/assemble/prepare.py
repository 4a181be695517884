"""Warp handles and coadd weights (LSST ``AssembleCoaddTask.prepareInputs``, §6.3).

A :class:`WarpHandle` stands for one warp without holding its pixels: assembly asks it
for the section of each sub-region only, so memory does not grow with the number of
warps.  Handles wrap an in-memory :class:`Exposure` or an exposure file (whose sections
are read with ``read_exposure(path, bbox=...)``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..exposure import Exposure
from ..fits_io import ExposureInfo, ExposureReadError, OutOfBoundsError, read_exposure_info
from ..fits_io import _hdu, _open_fits, _read_plane  # section reads without re-parsing components
from ..image import MaskedImage
from ..masks import remap_mask, standard_planes
from ..geom import Box
from ..psf import Psf
from ..stats import meanclip
from ..warp.inputs import CoaddInputs

__all__ = ["NoWorkFound", "WarpHandle", "compute_weights", "mean_variance"]

logger = logging.getLogger(__name__)


class NoWorkFound(RuntimeError):
    """Nothing to coadd: no warps, or none with usable pixels (LSST ``NoWorkFound``)."""


@dataclass(frozen=True)
class WarpHandle:
    """One warp, read lazily by sub-box.

    ``read(box)`` must return an :class:`Exposure` covering exactly ``box`` (a sub-box of
    ``bbox``) and read no more than that.  ``coadd_inputs`` is the warp's input table
    (its CoaddInputs, one visit row and its ccd rows) when known; ``mean_variance`` the
    clipped mean of its variance plane if already measured.
    """

    visit: int
    bbox: Box
    read: Callable[[Box], Exposure] = field(repr=False)
    psf: Psf | None = field(default=None, repr=False)
    coadd_inputs: CoaddInputs | None = field(default=None, repr=False)
    mean_variance: float | None = None
    unit: str | None = "nJy"
    band: str | None = None

    @classmethod
    def from_exposure(cls, exposure: Exposure, visit: int | None = None, **kwargs: Any) -> "WarpHandle":
        """Handle on an in-memory warp (sections are views)."""
        if visit is None:
            visit = _visit_of(exposure.visit_info, exposure.metadata)
        return cls(
            visit=int(visit),
            bbox=exposure.bbox,
            read=exposure.subset,
            psf=exposure.psf,
            coadd_inputs=kwargs.pop("coadd_inputs", CoaddInputs.from_metadata(exposure.metadata)),
            unit=kwargs.pop("unit", exposure.unit),
            band=kwargs.pop("band", exposure.band),
            **kwargs,
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], visit: int | None = None, **kwargs: Any) -> "WarpHandle":
        """Handle on a stored warp: only the header is read now, pixels per section later."""
        target = os.fspath(path)
        storage_options = kwargs.pop("storage_options", None)
        info = read_exposure_info(target, storage_options=storage_options)
        if visit is None:
            visit = _visit_of(info.visit_info, info.metadata)
        return cls(
            visit=int(visit),
            bbox=info.bbox,
            read=SectionReader(target, info, storage_options),
            psf=info.psf,
            coadd_inputs=kwargs.pop("coadd_inputs", CoaddInputs.from_metadata(info.metadata)),
            unit=kwargs.pop("unit", info.unit),
            band=kwargs.pop("band", None if info.visit_info is None else info.visit_info.band),
            **kwargs,
        )


class SectionReader:
    """Reads sub-boxes of a stored exposure (same result as ``read_exposure(path,
    bbox=box)``): the file is opened once and kept open, each call reads only the pixel
    sections, and the components (PSF, WCS, ...) come from the header read once.

    Opening and parsing the headers costs ~10 ms, reading a strip section ~0.2 ms, and
    assembly reads every warp once per sub-region.  Pickling drops the open file.
    """

    def __init__(self, path: str, info: ExposureInfo, storage_options: dict[str, Any] | None = None) -> None:
        self.path = path
        self.info = info
        self.storage_options = storage_options
        self._stack: contextlib.ExitStack | None = None
        self._hdus: tuple[Any, Any, Any] | None = None

    def _open(self) -> tuple[Any, Any, Any]:
        if self._hdus is None:
            stack = contextlib.ExitStack()
            hdulist, name = stack.enter_context(_open_fits(self.path, self.storage_options, mode="section"))
            self._hdus = (_hdu(hdulist, "IMAGE", name), _hdu(hdulist, "MASK", name), _hdu(hdulist, "VARIANCE", name))
            self._stack = stack
        return self._hdus

    def close(self) -> None:
        """Close the file (it is reopened by the next read)."""
        if self._stack is not None:
            self._stack.close()
        self._stack = None
        self._hdus = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "info": self.info, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["info"], state["storage_options"])  # type: ignore[misc]

    def __call__(self, box: Box) -> Exposure:
        info = self.info
        if box.is_empty() or not info.bbox.contains(box):
            raise OutOfBoundsError(f"{self.path}: requested {box} is not inside the exposure's {info.bbox}")
        rows, cols = box.slices(info.bbox)
        image_hdu, mask_hdu, variance_hdu = self._open()
        try:
            image = _read_plane(image_hdu, rows, cols, np.float32, False)
            mask = _read_plane(mask_hdu, rows, cols, np.int32, False)
            variance = _read_plane(variance_hdu, rows, cols, np.float32, False)
        except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
            self.close()
            raise ExposureReadError(f"cannot read {box} of {self.path}: {exc}") from exc
        planes = standard_planes()
        if info.mask_planes is not None:
            mask, planes = remap_mask(mask, info.mask_planes, planes)
        return Exposure(
            MaskedImage(image, mask, variance, xy0=box.xy0, planes=planes),
            wcs=info.wcs,
            psf=info.psf,
            photo_calib=info.photo_calib,
            visit_info=info.visit_info,
            valid_polygon=info.valid_polygon,
            metadata=info.metadata,
        )


def _visit_of(visit_info: Any, metadata: dict[str, Any]) -> int:
    for value in (
        None if visit_info is None else visit_info.visit_id,
        metadata.get("VISIT"),
        None if visit_info is None else visit_info.exposure_id,
    ):
        if value is not None:
            return int(value)
    raise ValueError("the warp has no visit id: pass visit=")


def mean_variance(exposure: Exposure, config: Any) -> float:
    """3-sigma-style clipped mean of the variance plane over pixels free of bad planes.

    Uses ``config.sigma_clip`` and ``config.clip_iter`` (LSST prepareInputs).
    """
    planes = exposure.planes
    and_mask = planes.bitmask(*[p for p in config.bad_mask_planes if p in planes])
    return meanclip(
        exposure.variance, config.sigma_clip, config.clip_iter, mask=exposure.mask, and_mask=and_mask
    ).mean


def compute_weights(
    handles: Sequence[WarpHandle], config: Any, *, patch_bbox: Box | None = None
) -> list[tuple[WarpHandle, float]]:
    """``(handle, 1 / mean variance)`` for every usable warp, in input order (§6.3).

    A warp whose image is all NaN is skipped silently; one whose mean variance is not
    finite and positive is skipped with a warning; a warp not in nJy is an error.
    """
    out: list[tuple[WarpHandle, float]] = []
    for handle in handles:
        if handle.unit != "nJy":
            raise ValueError(f"warp of visit {handle.visit} has unit {handle.unit!r}, expected 'nJy'")
        box = handle.bbox if patch_bbox is None else handle.bbox.intersection(patch_bbox)
        if box.is_empty():
            logger.debug("warp of visit %d does not overlap the patch", handle.visit)
            continue
        mean_var = handle.mean_variance
        if mean_var is None:
            exposure = handle.read(box)
            if not np.isfinite(exposure.image).any():
                logger.debug("warp of visit %d is all NaN; skipped", handle.visit)
                continue
            mean_var = mean_variance(exposure, config)
            del exposure
        if not (math.isfinite(mean_var) and mean_var > 0):
            logger.warning("warp of visit %d: mean variance %r; skipped", handle.visit, mean_var)
            continue
        out.append((handle, 1.0 / mean_var))
        logger.debug("visit %d: weight %.4g", handle.visit, 1.0 / mean_var)
    if not out:
        raise NoWorkFound("no usable warps to coadd")
    return out

