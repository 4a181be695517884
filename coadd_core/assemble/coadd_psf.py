"""The coadd PSF: weighted sum of the input PSFs warped to the coadd frame (LSST
``CoaddPsf``, ALGORITHMS.md §6.6).

At a coadd position only the inputs that actually cover it contribute (the input
position must be inside the input's float box and its valid polygon), so the PSF is
right in chip gaps and at input edges.  Each input PSF is warped to the coadd frame
(:class:`WarpedPsf`: local affine approximation of the pixel mapping, Lanczos),
normalised to unit sum, and the kernels are averaged with the coadd weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from astropy.wcs import WCS

from ..geom import Box
from ..polygon import ValidPolygon
from ..psf import ImagePsf, Psf, PsfStamp
from ..warp.transform import PixelTransform
from ..warp.warped_psf import WarpedPsf
from ..wcs_utils import wcs_from_header_dict, wcs_header_dict

__all__ = ["CoaddPsf", "CoaddPsfInput", "make_coadd_psf"]

logger = logging.getLogger(__name__)

_LANCZOS_ORDER = {"lanczos3": 3, "lanczos4": 4, "lanczos5": 5}


@dataclass(frozen=True)
class CoaddPsfInput:
    """One contributing image: its PSF, pixel box, WCS and valid polygon, and coadd weight.

    ``wcs`` None means the PSF is already in the coadd pixel frame (a warp's own PSF).
    """

    psf: Psf
    weight: float
    bbox: Box
    wcs: WCS | None = None
    valid_polygon: ValidPolygon | None = None
    goodpix: int = 0
    visit: int = -1
    ccd: int = -1

    def to_dict(self) -> dict[str, Any]:
        return {
            "psf": self.psf.to_dict(),
            "weight": self.weight,
            "bbox": self.bbox.to_list(),
            "wcs": None if self.wcs is None else wcs_header_dict(self.wcs),
            "valid_polygon": None if self.valid_polygon is None else self.valid_polygon.to_dict(),
            "goodpix": self.goodpix,
            "visit": self.visit,
            "ccd": self.ccd,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CoaddPsfInput":
        return cls(
            psf=Psf.from_dict(data["psf"]),
            weight=float(data["weight"]),
            bbox=Box.from_list(data["bbox"]),
            wcs=None if data.get("wcs") is None else wcs_from_header_dict(data["wcs"]),
            valid_polygon=None if data.get("valid_polygon") is None else ValidPolygon.from_dict(data["valid_polygon"]),
            goodpix=int(data.get("goodpix", 0)),
            visit=int(data.get("visit", -1)),
            ccd=int(data.get("ccd", -1)),
        )


class CoaddPsf(Psf):
    """PSF of a coadd at any position, from its inputs (LSST ``CoaddPsf``)."""

    def __init__(
        self,
        inputs: Sequence[CoaddPsfInput],
        coadd_wcs: WCS | None,
        warping_kernel_name: str = "lanczos3",
        average_position: tuple[float, float] | None = None,
    ) -> None:
        if not inputs:
            raise ValueError("a CoaddPsf needs at least one input")
        if warping_kernel_name not in _LANCZOS_ORDER:
            raise ValueError(f"unknown warping kernel {warping_kernel_name!r}")
        if coadd_wcs is None and any(i.wcs is not None for i in inputs):
            raise ValueError("inputs with their own WCS need the coadd WCS")
        self._inputs = tuple(inputs)
        self._coadd_wcs = coadd_wcs
        self._kernel_name = warping_kernel_name
        self._transforms = [
            None if i.wcs is None else PixelTransform(i.wcs, coadd_wcs) for i in self._inputs  # type: ignore[arg-type]
        ]
        self._warped = [
            None if i.wcs is None else WarpedPsf(i.psf, i.wcs, coadd_wcs, warping_kernel_name)  # type: ignore[arg-type]
            for i in self._inputs
        ]
        self._average_position = (
            self._compute_average_position() if average_position is None else tuple(map(float, average_position))
        )

    # -- geometry ----------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[CoaddPsfInput, ...]:
        return self._inputs

    @property
    def average_position(self) -> tuple[float, float]:
        return self._average_position  # type: ignore[return-value]

    def _input_position(self, k: int, x: float, y: float) -> tuple[float, float]:
        transform = self._transforms[k]
        if transform is None:
            return x, y
        sx, sy = transform.dest_to_src(np.array([x]), np.array([y]))
        return float(sx[0]), float(sy[0])

    def _covers(self, k: int, x: float, y: float) -> bool:
        inp = self._inputs[k]
        sx, sy = self._input_position(k, x, y)
        b = inp.bbox
        if not (b.x0 - 0.5 <= sx <= b.x1 + 0.5 and b.y0 - 0.5 <= sy <= b.y1 + 0.5):
            return False
        return inp.valid_polygon is None or bool(inp.valid_polygon.contains(sx, sy))

    def contributing(self, x: float, y: float) -> list[int]:
        """Indices of the inputs covering coadd position (x, y)."""
        return [k for k in range(len(self._inputs)) if self._covers(k, x, y)]

    def _compute_average_position(self) -> tuple[float, float]:
        """Weighted (weight x goodpix) mean of the inputs' centres in coadd pixels; if no
        input covers it, drop the lowest-weight inputs until one does."""
        centres = []
        for k, inp in enumerate(self._inputs):
            cx, cy = inp.bbox.center
            transform = self._transforms[k]
            if transform is not None:
                dx, dy = transform.src_to_dest(np.array([cx]), np.array([cy]))
                cx, cy = float(dx[0]), float(dy[0])
            centres.append((cx, cy, inp.weight * max(inp.goodpix, 1)))
        order = sorted(range(len(centres)), key=lambda k: self._inputs[k].weight, reverse=True)
        for n_keep in range(len(order), 0, -1):
            keep = order[:n_keep]
            w = np.array([centres[k][2] for k in keep])
            x = float(np.dot(w, [centres[k][0] for k in keep]) / w.sum())
            y = float(np.dot(w, [centres[k][1] for k in keep]) / w.sum())
            if any(self._covers(k, x, y) for k in keep):
                return x, y
        return centres[order[0]][0], centres[order[0]][1]

    # -- images ------------------------------------------------------------------------
    def _warped_kernel(self, k: int, x: float, y: float) -> np.ndarray:
        warped = self._warped[k]
        kernel = warped.kernel_image(x, y) if warped is not None else self._inputs[k].psf.kernel_image(x, y)
        return kernel / kernel.sum()

    def kernel_image(self, x: float | None = None, y: float | None = None) -> np.ndarray:
        """Unit-sum kernel at coadd position (x, y) (default: the average position)."""
        if x is None or y is None:
            x, y = self._average_position
        ks = self.contributing(float(x), float(y))
        if not ks:
            raise ValueError(f"no input images cover coadd position ({x}, {y})")
        kernels = [(self._inputs[k].weight, self._warped_kernel(k, float(x), float(y))) for k in ks]
        size = max(kern.shape[0] for _, kern in kernels)
        total = np.zeros((size, size), dtype=np.float64)
        wsum = 0.0
        for w, kern in kernels:
            pad = (size - kern.shape[0]) // 2
            total[pad : pad + kern.shape[0], pad : pad + kern.shape[0]] += w * kern
            wsum += w
        total /= wsum
        return total / total.sum()

    def compute_image(self, x: float, y: float) -> PsfStamp:
        return ImagePsf(self.kernel_image(x, y)).compute_image(x, y)

    @property
    def sigma(self) -> float:
        ixx, iyy, ixy = self.second_moments()
        return float((ixx * iyy - ixy * ixy) ** 0.25)

    def second_moments(self, x: float | None = None, y: float | None = None) -> tuple[float, float, float]:
        return ImagePsf(self.kernel_image(x, y)).second_moments()

    # -- serialisation -----------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "inputs": [i.to_dict() for i in self._inputs],
            "coadd_wcs": None if self._coadd_wcs is None else wcs_header_dict(self._coadd_wcs),
            "warping_kernel_name": self._kernel_name,
            "average_position": list(self._average_position),
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "CoaddPsf":
        wcs = params.get("coadd_wcs")
        return cls(
            [CoaddPsfInput.from_dict(d) for d in params["inputs"]],
            None if wcs is None else wcs_from_header_dict(wcs),
            params.get("warping_kernel_name", "lanczos3"),
            tuple(params["average_position"]) if params.get("average_position") is not None else None,
        )

    def __repr__(self) -> str:
        return f"CoaddPsf({len(self._inputs)} inputs, kernel={self._kernel_name})"


def _ccd_inputs(handle: Any, weight: float) -> list[CoaddPsfInput] | None:
    """Input rows from a warp's CoaddInputs ccd table (original calexp PSFs), if present."""
    table = handle.coadd_inputs
    ccds = getattr(table, "ccds", None)
    if ccds is None:
        return None
    rows = []
    for row in ccds:
        psf = getattr(row, "psf", None)
        wcs = getattr(row, "wcs", None)
        bbox = getattr(row, "bbox", None)
        if psf is None or wcs is None or bbox is None:
            return None
        rows.append(
            CoaddPsfInput(
                psf=psf, weight=weight, bbox=bbox, wcs=wcs,
                valid_polygon=getattr(row, "valid_polygon", None),
                goodpix=int(getattr(row, "goodpix", 0) or 0),
                visit=int(getattr(row, "visit", handle.visit)),
                ccd=int(getattr(row, "ccd", getattr(row, "detector", -1))),
            )
        )
    return rows or None


def make_coadd_psf(
    handles_and_weights: Sequence[tuple[Any, float]], patch_bbox: Box, tract_wcs: WCS | None, config: Any
) -> Psf | None:
    """The coadd's PSF: for PSF-matched coadds the model PSF with the largest box; else a
    :class:`CoaddPsf` of the input calexp PSFs (or of the warps' own PSFs when the warps
    do not carry their ccd rows)."""
    if config.warp_type == "psfMatched":
        psfs = [h.psf for h, _ in handles_and_weights if h.psf is not None]
        return max(psfs, key=lambda p: p.size) if psfs else None
    inputs: list[CoaddPsfInput] = []
    for handle, weight in handles_and_weights:
        rows = _ccd_inputs(handle, weight) if handle.coadd_inputs is not None else None
        if rows is None:
            if handle.psf is None:
                continue
            rows = [CoaddPsfInput(psf=handle.psf, weight=weight, bbox=handle.bbox, visit=int(handle.visit),
                                  goodpix=handle.bbox.area)]
        inputs.extend(rows)
    if not inputs:
        logger.warning("no input PSFs: the coadd has no PSF")
        return None
    return CoaddPsf(inputs, tract_wcs, config.coadd_psf_warping_kernel_name)
