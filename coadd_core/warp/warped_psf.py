"""WarpedPsf: a calexp PSF seen in another pixel frame (LSST ``meas_algorithms`` ``WarpedPsf``).

A warp's pixels are the calexp's resampled through the calexp -> warp pixel mapping;
over a PSF stamp that mapping is affine to high accuracy, so the warped PSF at a warp
position is the calexp PSF image at the corresponding calexp position resampled
through the local affine approximation (Lanczos3, as LSST) and renormalised to unit
sum.  CoaddPsf and PSF matching are built from it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.wcs import WCS

from ..geom import Box
from ..psf import GaussianPsf, ImagePsf, MoffatPsf, Psf, PsfStamp
from ..wcs_utils import wcs_from_header_dict, wcs_header_dict
from .kernels import KERNEL_ORDERS, affine_resample
from .transform import PixelTransform

__all__ = ["WarpedPsf"]

#: PSF classes whose image does not depend on position (their source image is cached).
_CONSTANT_PSFS = (GaussianPsf, MoffatPsf, ImagePsf)


class WarpedPsf(Psf):
    """``psf`` (defined on ``src_wcs`` pixels) as it appears on ``dest_wcs`` pixels.

    ``average_position`` (destination pixels) is where :attr:`size`, :attr:`sigma` and
    the default :meth:`kernel_image` are evaluated; by default the destination image of
    the source pixel (0, 0).  Not thread-safe (it holds astropy WCS objects).
    """

    def __init__(
        self,
        psf: Psf,
        src_wcs: WCS,
        dest_wcs: WCS,
        kernel_name: str = "lanczos3",
        average_position: tuple[float, float] | None = None,
        exact_ramp: bool = True,
    ) -> None:
        if kernel_name not in KERNEL_ORDERS:
            raise ValueError(f"unknown warping kernel {kernel_name!r}")
        self._psf = psf
        self._src_wcs = src_wcs
        self._dest_wcs = dest_wcs
        self._kernel_name = kernel_name
        self._exact_ramp = bool(exact_ramp)
        self._transform = PixelTransform(src_wcs, dest_wcs)
        if average_position is None:
            dx, dy = self._transform.src_to_dest(np.array([0.0]), np.array([0.0]))
            average_position = (float(dx[0]), float(dy[0]))
        self._average_position = (float(average_position[0]), float(average_position[1]))
        self._constant_image: np.ndarray | None = None

    # -- accessors -----------------------------------------------------------------------
    @property
    def psf(self) -> Psf:
        """The PSF in source pixels."""
        return self._psf

    @property
    def src_wcs(self) -> WCS:
        return self._src_wcs

    @property
    def dest_wcs(self) -> WCS:
        return self._dest_wcs

    @property
    def average_position(self) -> tuple[float, float]:
        return self._average_position

    # -- geometry ------------------------------------------------------------------------
    def _source_image(self, sx: float, sy: float) -> np.ndarray:
        if isinstance(self._psf, _CONSTANT_PSFS):
            if self._constant_image is None:
                self._constant_image = np.ascontiguousarray(self._psf.kernel_image(sx, sy), dtype=np.float64)
            return self._constant_image
        return np.ascontiguousarray(self._psf.kernel_image(sx, sy), dtype=np.float64)

    def _local(self, x: float, y: float) -> tuple[np.ndarray, float, float]:
        jac, src = self._transform.local_affine(x, y)
        return jac, float(src[0]), float(src[1])

    @staticmethod
    def _dest_half_size(jac: np.ndarray, src_half: int) -> int:
        """Half-size of the destination stamp holding the mapped source stamp."""
        inv = np.linalg.inv(jac)
        r = src_half + 0.5
        corners = np.array([[r, r], [r, -r], [-r, r], [-r, -r]]).T
        extent = np.abs(inv @ corners).max()
        return max(int(math.ceil(extent - 0.5 - 1e-6)), 1)

    def _render(self, x: float, y: float, dx: float, dy: float, half: int | None = None) -> np.ndarray:
        """Warped image on a ``2 half + 1`` stamp whose centre pixel sits at offset (-dx, -dy) from the PSF centre."""
        jac, sx, sy = self._local(x, y)
        return self._render_affine(jac, sx, sy, x, y, dx, dy, half)

    def _render_affine(
        self, jac: np.ndarray, sx: float, sy: float, x: float, y: float, dx: float, dy: float, half: int | None = None
    ) -> np.ndarray:
        """:meth:`_render` given the local affine map ``(jac, (sx, sy))`` at destination (x, y)."""
        src = self._source_image(sx, sy)
        src_half = src.shape[0] // 2
        if half is None:
            half = self._dest_half_size(jac, src_half)
        size = 2 * half + 1
        out = np.empty((size, size), dtype=np.float64)
        # out[v, u] samples src at c_s + J @ ((u, v) - (half + dx, half + dy))
        centre = np.array([half + dx, half + dy])
        offset = np.array([src_half, src_half], dtype=float) - jac @ centre
        affine_resample(src, np.ascontiguousarray(jac), float(offset[0]), float(offset[1]), out, KERNEL_ORDERS[self._kernel_name], self._exact_ramp)
        total = out.sum()
        if not total > 0:
            raise ValueError(f"warped PSF at ({x}, {y}) has non-positive sum")
        return out / total

    # -- Psf interface -------------------------------------------------------------------
    def kernel_image(self, x: float | None = None, y: float | None = None) -> np.ndarray:
        """Unit-sum warped PSF at destination (x, y) centred on the central pixel."""
        if x is None or y is None:
            x, y = self._average_position
        return self._render(float(x), float(y), 0.0, 0.0)

    def kernel_images(self, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """:meth:`kernel_image` at many destination positions, the WCS evaluated once for all
        (per-position WCS calls cost more than the resampling when fitting PSF-matching cells)."""
        jacs, srcs = self._transform.local_affines(x, y)
        return [
            self._render_affine(jac, float(s[0]), float(s[1]), float(xi), float(yi), 0.0, 0.0)
            for jac, s, xi, yi in zip(jacs, srcs, np.ravel(x), np.ravel(y))
        ]

    def compute_image(self, x: float, y: float) -> PsfStamp:
        """Unit-sum warped PSF centred at destination (x, y), on a stamp around that pixel."""
        ix = math.floor(x + 0.5)
        iy = math.floor(y + 0.5)
        array = self._render(float(x), float(y), x - ix, y - iy)
        half = array.shape[0] // 2
        return PsfStamp(array, Box(ix - half, iy - half, ix + half, iy + half))

    def second_moments(self, x: float | None = None, y: float | None = None) -> tuple[float, float, float]:
        if x is None or y is None:
            x, y = self._average_position
        return super().second_moments(x, y)

    # -- serialisation ---------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {
            "psf": self._psf.to_dict(),
            "src_wcs": wcs_header_dict(self._src_wcs),
            "dest_wcs": wcs_header_dict(self._dest_wcs),
            "kernel_name": self._kernel_name,
            "exact_ramp": self._exact_ramp,
            "average_position": list(self._average_position),
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "WarpedPsf":
        inner = dict(params["psf"])
        if inner.get("type") == "ImagePsf":
            inner["array"] = np.asarray(inner["array"], dtype=np.float64)
        return cls(
            Psf.from_dict(inner),
            wcs_from_header_dict(params["src_wcs"]),
            wcs_from_header_dict(params["dest_wcs"]),
            kernel_name=str(params.get("kernel_name", "lanczos3")),
            average_position=tuple(params["average_position"]) if params.get("average_position") else None,
            exact_ramp=bool(params.get("exact_ramp", True)),
        )

    def __repr__(self) -> str:
        return f"WarpedPsf({self._psf!r})"
