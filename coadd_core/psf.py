"""Point-spread-function models (LSST ``afw.detection.Psf`` and friends).

Every model is *pixel-integrated*: a pixel holds the integral of the continuous profile
over its area, which is what a detector records; point-sampling would bias the flux of
undersampled PSFs.  Two images are offered, as in LSST:

* :meth:`Psf.kernel_image` - an odd square array of unit sum centred on its central
  pixel, used as a convolution kernel (warping, PSF matching, detection);
* :meth:`Psf.compute_image` - the PSF centred at a sub-pixel position, with the stamp's
  box in parent coordinates, used for photometry and simulation.

PSFs are plain values: ``to_dict`` / :meth:`Psf.from_dict` round-trip them losslessly
(JSON-compatible) so they can cross process boundaries and be stored in files.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.special import erf

from .geom import Box

__all__ = [
    "SIGMA_TO_FWHM",
    "GaussianPsf",
    "ImagePsf",
    "MoffatPsf",
    "Psf",
    "PsfStamp",
    "adaptive_moments",
    "neighbour_ratios",
]

#: FWHM / sigma of a Gaussian.
SIGMA_TO_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


class PsfStamp(NamedTuple):
    """A PSF image and its box in parent coordinates."""

    array: np.ndarray
    bbox: Box


def neighbour_ratios(kernel: np.ndarray) -> tuple[float, float, float]:
    """A centred PSF kernel's (horizontal, vertical, diagonal) neighbour-pair means over
    its peak: how much sharper than the PSF a pixel may not be (cosmic-ray condition 3)."""
    c = kernel.shape[0] // 2
    peak = float(kernel[c, c])
    if not peak > 0:
        raise ValueError("PSF kernel has no positive centre")
    return (
        0.5 * float(kernel[c, c - 1] + kernel[c, c + 1]) / peak,
        0.5 * float(kernel[c - 1, c] + kernel[c + 1, c]) / peak,
        0.25 * float(kernel[c - 1, c - 1] + kernel[c - 1, c + 1] + kernel[c + 1, c - 1] + kernel[c + 1, c + 1]) / peak,
    )


def _stamp_box(x: float, y: float, size: int) -> tuple[Box, float, float]:
    """Box of a ``size`` stamp centred on the pixel nearest (x, y), and the residual offset."""
    ix = math.floor(x + 0.5)
    iy = math.floor(y + 0.5)
    half = size // 2
    return Box(ix - half, iy - half, ix + half, iy + half), x - ix, y - iy


def _check_size(size: int) -> int:
    if int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"PSF stamp size must be a positive odd integer, got {size!r}")
    return int(size)


def adaptive_moments(
    image: np.ndarray, max_iter: int = 200, tol: float = 1e-10
) -> tuple[float, float, float, float, float]:
    """Gaussian-weighted adaptive moments ``(xc, yc, ixx, iyy, ixy)`` of a stamp.

    The weight is iterated to match the object's own second moments (the SDSS/HSM
    scheme LSST uses for ``computeShape``), so for a Gaussian the result is its
    covariance.  Positions are array coordinates relative to the stamp's centre pixel.
    """
    data = np.asarray(image, dtype=float)
    ny, nx = data.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    xx -= nx // 2
    yy -= ny // 2
    total = data.sum()
    if not total > 0:
        raise ValueError("cannot measure moments of an image with non-positive sum")
    xc = float((data * xx).sum() / total)
    yc = float((data * yy).sum() / total)
    ixx = iyy = max(float(min(nx, ny)) / 8.0, 0.5) ** 2
    ixy = 0.0
    for _ in range(max_iter):
        det = ixx * iyy - ixy * ixy
        if not det > 0:
            raise ValueError("adaptive moments diverged")
        dx = xx - xc
        dy = yy - yc
        expo = (iyy * dx * dx - 2.0 * ixy * dx * dy + ixx * dy * dy) / (2.0 * det)
        w = data * np.exp(-expo)
        sw = w.sum()
        if not sw > 0:
            raise ValueError("adaptive moments diverged")
        new_xc = xc + float((w * dx).sum() / sw)
        new_yc = yc + float((w * dy).sum() / sw)
        new_ixx = 2.0 * float((w * dx * dx).sum() / sw)
        new_iyy = 2.0 * float((w * dy * dy).sum() / sw)
        new_ixy = 2.0 * float((w * dx * dy).sum() / sw)
        change = max(
            abs(new_ixx - ixx), abs(new_iyy - iyy), abs(new_ixy - ixy),
            abs(new_xc - xc), abs(new_yc - yc),
        )
        xc, yc, ixx, iyy, ixy = new_xc, new_yc, new_ixx, new_iyy, new_ixy
        if change < tol * max(ixx, iyy, 1.0):
            break
    return xc, yc, ixx, iyy, ixy


class Psf(ABC):
    """Base class: subclasses register themselves by class name for :meth:`from_dict`."""

    _registry: ClassVar[dict[str, type["Psf"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            Psf._registry[cls.__name__] = cls

    # -- images ------------------------------------------------------------------------
    @abstractmethod
    def kernel_image(self, x: float = 0.0, y: float = 0.0) -> np.ndarray:
        """Odd square float64 array, unit sum, PSF centred on the central pixel."""

    @abstractmethod
    def compute_image(self, x: float, y: float) -> PsfStamp:
        """Unit-sum PSF centred at parent position (x, y) on a stamp around that pixel."""

    @property
    def size(self) -> int:
        """Side of the kernel image in pixels."""
        return int(self.kernel_image().shape[0])

    # -- shape -------------------------------------------------------------------------
    def second_moments(self, x: float = 0.0, y: float = 0.0) -> tuple[float, float, float]:
        """``(ixx, iyy, ixy)`` in pixels^2: adaptive moments of the kernel image."""
        _, _, ixx, iyy, ixy = adaptive_moments(self.kernel_image(x, y))
        return ixx, iyy, ixy

    @property
    def sigma(self) -> float:
        """Determinant radius ``(ixx iyy - ixy^2)^(1/4)`` of :meth:`second_moments`."""
        ixx, iyy, ixy = self.second_moments()
        return float((ixx * iyy - ixy * ixy) ** 0.25)

    @property
    def fwhm(self) -> float:
        """FWHM in pixels; by default ``SIGMA_TO_FWHM * sigma`` as LSST reports it."""
        return SIGMA_TO_FWHM * self.sigma

    # -- serialisation -----------------------------------------------------------------
    @abstractmethod
    def _params(self) -> dict[str, Any]:
        """JSON-compatible constructor parameters."""

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "Psf":
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **self._params()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Psf":
        """Rebuild any registered PSF from :meth:`to_dict` output."""
        params = dict(data)
        type_name = params.pop("type", None)
        cls = Psf._registry.get(type_name)  # type: ignore[arg-type]
        if cls is None and type_name in _LAZY_TYPES:
            # PSFs defined by later stages register on import; a reader may not have
            # imported them yet (a coadd read back in a fresh process).
            import importlib

            importlib.import_module(_LAZY_TYPES[type_name])
            cls = Psf._registry.get(type_name)
        if cls is None:
            raise ValueError(
                f"unknown PSF type {type_name!r}; known: {', '.join(sorted(Psf._registry))}"
            )
        return cls._from_params(params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Psf):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


#: PSF types registered by modules that ``coadd_core.psf`` itself does not import.
_LAZY_TYPES = {
    "WarpedPsf": "coadd_core.warp",
    "CoaddPsf": "coadd_core.assemble",
}


class _AnalyticPsf(Psf):
    """A circular profile rendered by integrating it over each pixel."""

    def __init__(self, size: int) -> None:
        self._size = _check_size(size)

    @property
    def size(self) -> int:
        return self._size

    @abstractmethod
    def _render(self, dx: float, dy: float) -> np.ndarray:
        """Pixel-integrated profile centred at (dx, dy) from the centre pixel, any norm."""

    def kernel_image(self, x: float = 0.0, y: float = 0.0) -> np.ndarray:
        array = self._render(0.0, 0.0)
        return array / array.sum()

    def compute_image(self, x: float, y: float) -> PsfStamp:
        box, dx, dy = _stamp_box(x, y, self._size)
        array = self._render(dx, dy)
        return PsfStamp(array / array.sum(), box)


class GaussianPsf(_AnalyticPsf):
    """Circular Gaussian of standard deviation ``sigma`` pixels (LSST ``GaussianPsf``).

    Pixel integrals are exact (differences of ``erf``); the default stamp spans +-5 sigma.
    """

    def __init__(self, sigma: float, size: int | None = None) -> None:
        if not sigma > 0:
            raise ValueError(f"Gaussian sigma must be positive, got {sigma!r}")
        self._sigma = float(sigma)
        super().__init__(2 * math.ceil(5.0 * self._sigma) + 1 if size is None else size)

    def _render(self, dx: float, dy: float) -> np.ndarray:
        half = self._size // 2
        edges = np.arange(-half, half + 2, dtype=float) - 0.5
        scale = 1.0 / (math.sqrt(2.0) * self._sigma)
        px = 0.5 * np.diff(erf((edges - dx) * scale))
        py = 0.5 * np.diff(erf((edges - dy) * scale))
        return np.outer(py, px)

    @property
    def sigma(self) -> float:
        return self._sigma

    @property
    def fwhm(self) -> float:
        return SIGMA_TO_FWHM * self._sigma

    def second_moments(self, x: float = 0.0, y: float = 0.0) -> tuple[float, float, float]:
        """Analytic moments of the continuous profile, as LSST's GaussianPsf reports."""
        return self._sigma**2, self._sigma**2, 0.0

    def _params(self) -> dict[str, Any]:
        return {"sigma": self._sigma, "size": self._size}

    def __repr__(self) -> str:
        return f"GaussianPsf(sigma={self._sigma!r}, size={self._size})"


class MoffatPsf(_AnalyticPsf):
    """Circular Moffat profile ``(1 + r^2/alpha^2)^-beta`` with the given FWHM.

    Its power-law wings describe seeing-limited stars better than a Gaussian.  Pixels are
    integrated with Gauss-Legendre quadrature; the default stamp spans +-4 FWHM.
    ``sigma``/``fwhm`` of the *image* come from adaptive moments; ``fwhm`` returns the
    parameter.
    """

    def __init__(self, fwhm: float, beta: float = 4.765, size: int | None = None) -> None:
        if not fwhm > 0:
            raise ValueError(f"Moffat FWHM must be positive, got {fwhm!r}")
        if not beta > 1:
            raise ValueError(f"Moffat beta must exceed 1 (finite flux), got {beta!r}")
        self._fwhm = float(fwhm)
        self._beta = float(beta)
        self._alpha = self._fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / self._beta) - 1.0))
        super().__init__(2 * math.ceil(4.0 * self._fwhm) + 1 if size is None else size)

    @property
    def beta(self) -> float:
        return self._beta

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def fwhm(self) -> float:
        return self._fwhm

    def _render(self, dx: float, dy: float) -> np.ndarray:
        # Enough nodes that the quadrature error is far below float32 pixel precision even
        # when the core spans about one pixel.
        order = 8 if self._alpha >= 1.5 else 16
        nodes, weights = np.polynomial.legendre.leggauss(order)
        nodes = 0.5 * nodes
        weights = 0.5 * weights
        half = self._size // 2
        centres = np.arange(-half, half + 1, dtype=float)
        # sample positions per pixel along each axis: (pixel, node)
        sx = centres[:, None] + nodes[None, :] - dx
        sy = centres[:, None] + nodes[None, :] - dy
        r2 = sy[:, None, :, None] ** 2 + sx[None, :, None, :] ** 2
        profile = (1.0 + r2 / self._alpha**2) ** (-self._beta)
        return np.einsum("abij,i,j->ab", profile, weights, weights)

    def _params(self) -> dict[str, Any]:
        return {"fwhm": self._fwhm, "beta": self._beta, "size": self._size}

    def __repr__(self) -> str:
        return f"MoffatPsf(fwhm={self._fwhm!r}, beta={self._beta!r}, size={self._size})"


def _fourier_shift(data: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Band-limited (sinc) shift of ``data`` by (dx, dy) pixels, same shape.

    The array is zero-padded to an odd size (no Nyquist term, so the result is real and
    the shift exact for a band-limited image) large enough that nothing wraps around.
    A phase ramp leaves the zero frequency alone, so the sum is conserved, and unlike a
    truncated interpolation kernel it moves the centroid by exactly (dx, dy).
    """
    ny, nx = data.shape
    pad = max(ny, nx) // 2 + 1
    padded = np.pad(data, pad)
    if padded.shape[0] % 2 == 0:
        padded = np.pad(padded, ((0, 1), (0, 0)))
    if padded.shape[1] % 2 == 0:
        padded = np.pad(padded, ((0, 0), (0, 1)))
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    spectrum = np.fft.rfft2(padded) * np.exp(-2j * np.pi * (fx * dx + fy * dy))
    shifted = np.fft.irfft2(spectrum, s=padded.shape)
    return shifted[pad : pad + ny, pad : pad + nx]


class ImagePsf(Psf):
    """Spatially constant pixelised PSF (LSST ``KernelPsf`` of a fixed kernel).

    ``array`` must be odd and square with the PSF centred on its central pixel; it is
    normalised to unit sum unless ``normalize=False``.  Sub-pixel positions are produced
    by a Fourier (sinc) shift, which conserves the sum and moves the centroid exactly;
    a truncated Lanczos kernel (LSST's choice) biases the centroid by ~0.01 px.
    """

    def __init__(self, array: np.ndarray, normalize: bool = True) -> None:
        data = np.array(array, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] != data.shape[1] or data.shape[0] % 2 == 0:
            raise ValueError(f"ImagePsf needs an odd square array, got shape {data.shape}")
        if not np.all(np.isfinite(data)):
            raise ValueError("ImagePsf array contains non-finite values")
        if normalize:
            total = data.sum()
            if not total > 0:
                raise ValueError("ImagePsf array must have a positive sum")
            data /= total
        data.setflags(write=False)
        self._array = data

    @classmethod
    def from_psf(cls, psf: Psf, x: float = 0.0, y: float = 0.0) -> "ImagePsf":
        """Freeze another PSF's kernel image at (x, y)."""
        return cls(psf.kernel_image(x, y))

    @property
    def array(self) -> np.ndarray:
        """The stored (read-only) kernel."""
        return self._array

    @property
    def size(self) -> int:
        return int(self._array.shape[0])

    def kernel_image(self, x: float = 0.0, y: float = 0.0) -> np.ndarray:
        return self._array.copy()

    def compute_image(self, x: float, y: float) -> PsfStamp:
        box, dx, dy = _stamp_box(x, y, self.size)
        if dx == 0.0 and dy == 0.0:
            return PsfStamp(self._array.copy(), box)
        data = _fourier_shift(self._array, dx, dy)
        return PsfStamp(data / data.sum(), box)

    def _params(self) -> dict[str, Any]:
        return {"array": self._array.tolist()}

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> "ImagePsf":
        return cls(np.asarray(params["array"], dtype=np.float64), normalize=False)

    def __repr__(self) -> str:
        return f"ImagePsf(size={self.size}, fwhm={self.fwhm:.3f})"
