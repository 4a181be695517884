"""PSF-matched warps: a direct warp convolved to a common model PSF (§5.3).

LSST ``MakePsfMatchedWarpTask`` with ``ModelPsfMatchTask``.  For every calexp behind
the direct warp, a matching kernel ``K`` with ``WarpedPsf (*) K = model`` is fitted on an
Alard-Lupton basis (Gaussians x polynomials) from the PSF *models* at the centre of
every 128 x 128 cell, the kernel's sum being held at exactly 1 (the first basis
function carries the sum, the others have zero sum), with a Chebyshev spatial
variation; the calexp's part of the warp is convolved with it (image with K, variance
with K^2, masks OR-ed over the kernel footprint) and pasted into the output.

Project choices (ALGORITHMS.md "[project default]"):

* the fit compares ``S (*) K`` with the model over the whole PSF stamp (the PSF stamp
  zero-padded by the kernel half-width, solved in Fourier space), not only over the
  stamp interior LSST uses;
* the model image is zero-padded to the PSF stamp size instead of re-rendered larger,
  so every warp is matched to exactly the model PSF it carries;
* two terms join the least squares (see :class:`_Fitter`): a ridge on ``sum K^2``
  (``regularization``), without which a PSF close to the model gets an oscillating
  kernel that multiplies the image noise variance by up to ~50, and a penalty on the
  difference between the model-weighted second moments of ``S (*) K`` and of the model
  (``moment_weight``), without which the 21 px Alard-Lupton fit is 0.5-1.5 % narrower
  than the model, the more so the closer the seeing is to the model (a 31 px kernel
  gets within ~0.6 % but would not follow LSST's kernelSize 21, its 11 px polygon
  shrink, nor its cost);
* the spatially varying kernel is applied as constant over ``convolution_tile`` pixel
  tiles (evaluated at their centres).

A visit PSF *broader* than the model cannot be matched (it would need deconvolution):
as LSST, the fit still runs and degrades; it is reported by a warning and the metadata
``PSF_BROADER_THAN_MODEL``, ``PSF_INPUT_FWHM_MAX``, ``PSF_MODEL_FWHM`` (adaptive-moment
FWHMs in warp pixels), ``PSF_MATCH_RESIDUAL_MAX`` (worst relative rms residual of the
fit over the cells) and ``PSF_MATCH_MOMENT_ERROR_MAX`` (worst fractional error of the
fitted model-weighted second moments).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.signal
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..photocalib import PhotoCalib
from ..polygon import ValidPolygon
from ..psf import SIGMA_TO_FWHM, ImagePsf, Psf, adaptive_moments
from .convolve import convolve_tiles, dilate_mask, polygon_mask
from .inputs import COADD_INPUTS_KEY, CcdRow, CoaddInputs
from .kernels import num_threads
from .transform import PixelTransform, clip_polygon_to_rectangle, map_outline, polygon_area
from .warped_psf import WarpedPsf

try:  # only a speed-up; installed with the LSST packages
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "ModelPsfConfig",
    "PsfMatchConfig",
    "alard_lupton_basis",
    "make_model_psf",
    "make_psf_matched_warp",
    "shrink_valid_polygon",
]

logger = logging.getLogger(__name__)

#: PSF stamps transformed and reduced together when fitting (bounds the batch memory).
_CELL_BATCH = 256


class ModelPsfConfig(BaseModel):
    """The target PSF of PSF-matched warps (LSST ``GaussianPsfFactory``, warp settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_fwhm: float = Field(7.7, gt=0, description="Core FWHM (px); LSST defaultFwhm (7.7 for warps, factory 3.0).")
    size_factor: float = Field(3.0, gt=0, description="Stamp size / FWHM; LSST sizeFactor.")
    min_size: int = Field(5, ge=1, description="Smallest stamp side; LSST minSize.")
    max_size: int | None = Field(None, description="Largest stamp side (None = no limit); LSST maxSize.")
    size: int | None = Field(None, description="Fixed stamp side overriding the factor; LSST size.")
    add_wing: bool = Field(True, description="Add a broader second Gaussian; LSST addWing.")
    wing_fwhm_factor: float = Field(2.5, gt=0, description="Wing FWHM / core FWHM; LSST wingFwhmFactor.")
    wing_amplitude: float = Field(0.1, ge=0, description="Wing peak / core peak; LSST wingAmplitude.")


class PsfMatchConfig(BaseModel):
    """Matching of a direct warp to the model PSF (LSST ``ModelPsfMatchConfig``, warp settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_psf: ModelPsfConfig = Field(
        default_factory=ModelPsfConfig, description="Target PSF; LSST modelPsf (GaussianPsfFactory)."
    )
    kernel_size: int = Field(21, ge=3, description="Matching kernel side (odd, px); LSST kernelSize.")
    alard_sig_gauss: tuple[float, ...] = Field(
        (1.0, 2.0, 4.5), description="Basis Gaussian sigmas (px); LSST alardSigGauss (set for warps)."
    )
    alard_deg_gauss: tuple[int, ...] = Field(
        (4, 2, 2), description="Polynomial degree per basis Gaussian; LSST alardDegGauss."
    )
    spatial_kernel_order: int = Field(2, ge=0, description="Chebyshev order of the kernel variation; LSST spatialKernelOrder.")
    spatial_model: Literal["chebyshev", "per_cell"] = Field(
        "chebyshev", description="Chebyshev fit over the cells, or each cell's own kernel; LSST spatialModelType."
    )
    size_cell_x: int = Field(128, ge=8, description="Cell width (px), one PSF candidate each; LSST sizeCellX.")
    size_cell_y: int = Field(128, ge=8, description="Cell height (px); LSST sizeCellY.")
    do_auto_pad_psf: bool = Field(True, description="Pad PSF stamps to auto_pad_psf_to x kernel; LSST doAutoPadPsf.")
    auto_pad_psf_to: float = Field(1.4, gt=1.0, description="Minimum PSF stamp / kernel size; LSST autoPadPsfTo.")
    regularization: float = Field(
        1e-3,
        ge=0.0,
        description=(
            "Ridge weight eta: the fit minimises |S (*) K - M|^2 / |M|^2 + eta sum K^2 (sum K^2 is the kernel's "
            "noise-variance gain); bounds the kernel where the science PSF has no power. No LSST equivalent "
            "(LSST regularises only delta-function bases)."
        ),
    )
    moment_weight: float = Field(
        100.0,
        ge=0.0,
        description=(
            "Weight mu of the squared fractional errors of the model-weighted second moments of S (*) K in the "
            "fit (100: a 0.1 % moment error costs as much as a 1 % rms PSF residual; 0: plain least squares, as "
            "LSST); gives matched stars the model's adaptive moments. No LSST equivalent."
        ),
    )
    convolution_tile: int = Field(
        64, ge=8, description="Pixels over which the kernel is held constant when convolving; LSST interpolates per pixel."
    )
    chunk_rows: int = Field(
        512, ge=1, description="Output rows convolved per chunk (bounds memory); no LSST equivalent."
    )

    @model_validator(mode="after")
    def _check(self) -> "PsfMatchConfig":
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if len(self.alard_sig_gauss) != len(self.alard_deg_gauss) or not self.alard_sig_gauss:
            raise ValueError("alard_sig_gauss and alard_deg_gauss must have the same, non-zero length")
        return self


# -- model PSF and basis ---------------------------------------------------------------------


def model_psf_size(config: ModelPsfConfig) -> int:
    """LSST's rule: ``(int(size_factor * fwhm) // 2) * 2 + 1`` clipped to [min_size, max_size]."""
    if config.size is not None:
        size = config.size
    else:
        size = (int(config.size_factor * config.default_fwhm) // 2) * 2 + 1
        size = max(size, config.min_size)
        if config.max_size is not None:
            size = min(size, config.max_size)
    if size % 2 == 0:
        size += 1
    return size


def make_model_psf(config: ModelPsfConfig | None = None) -> ImagePsf:
    """The model PSF: ``exp(-r^2/2 s1^2) + b exp(-r^2/2 s2^2)`` sampled at pixel centres, unit sum.

    ``s1 = fwhm / 2.3548``, ``s2 = wing_fwhm_factor s1``, ``b = wing_amplitude`` (no
    wing if ``add_wing`` is False); 23 x 23 px for the defaults (LSST DoubleGaussianPsf).
    """
    cfg = config or ModelPsfConfig()
    size = model_psf_size(cfg)
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    r2 = xx * xx + yy * yy
    s1 = cfg.default_fwhm / SIGMA_TO_FWHM
    image = np.exp(-r2 / (2 * s1 * s1))
    if cfg.add_wing:
        s2 = cfg.wing_fwhm_factor * s1
        image = image + cfg.wing_amplitude * np.exp(-r2 / (2 * s2 * s2))
    return ImagePsf(image)


def alard_lupton_basis(config: PsfMatchConfig) -> np.ndarray:
    """``(n, k, k)`` basis: Gaussians x ``x^i y^j`` (``i + j <= degree``), renormalised as LSST.

    The first function has unit sum and every other one zero sum (the first times its
    sum is subtracted), so a kernel ``B0 + sum a_b B_b`` always sums to 1; each
    zero-sum function is scaled to unit rms for conditioning.
    """
    half = config.kernel_size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    functions = []
    for sigma, degree in zip(config.alard_sig_gauss, config.alard_deg_gauss):
        g = np.exp(-(xx * xx + yy * yy) / (2.0 * sigma * sigma))
        for j in range(degree + 1):
            for i in range(degree + 1 - j):
                functions.append(g * xx**i * yy**j)
    basis = np.array(functions)
    basis[0] /= basis[0].sum()
    for b in range(1, len(basis)):
        basis[b] -= basis[b].sum() * basis[0]
        basis[b] /= math.sqrt(float((basis[b] ** 2).sum()))
    return basis


def _chebyshev_terms_many(x: np.ndarray, y: np.ndarray, box: Box, order: int) -> np.ndarray:
    """``(n, n_terms)`` rows of :func:`_chebyshev_terms` for many positions."""
    xa, xb = box.x0 - 0.5, box.x1 + 0.5
    ya, yb = box.y0 - 0.5, box.y1 + 0.5
    tu = np.polynomial.chebyshev.chebvander((2 * x - (xa + xb)) / (xb - xa), order)
    tv = np.polynomial.chebyshev.chebvander((2 * y - (ya + yb)) / (yb - ya), order)
    return np.stack([tu[:, p] * tv[:, q] for q in range(order + 1) for p in range(order + 1 - q)], axis=1)


def _chebyshev_terms(x: float, y: float, box: Box, order: int) -> np.ndarray:
    """``T_p(x~) T_q(y~)`` for ``p + q <= order`` on coordinates scaled to [-1, 1] over ``box``."""
    xa, xb = box.x0 - 0.5, box.x1 + 0.5
    ya, yb = box.y0 - 0.5, box.y1 + 0.5
    u = (2 * x - (xa + xb)) / (xb - xa)
    v = (2 * y - (ya + yb)) / (yb - ya)
    tu = np.polynomial.chebyshev.chebvander(np.array([u]), order)[0]
    tv = np.polynomial.chebyshev.chebvander(np.array([v]), order)[0]
    return np.array([tu[p] * tv[q] for q in range(order + 1) for p in range(order + 1 - q)])


# -- kernel fit ---------------------------------------------------------------------------------


def _centred(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` centred in a ``size`` x ``size`` zero array (or its centre if larger)."""
    out = np.zeros((size, size))
    n = image.shape[0]
    if n <= size:
        p = (size - n) // 2
        out[p : p + n, p : p + n] = image
    else:
        p = (n - size) // 2
        out[:] = image[p : p + size, p : p + size]
    return out


def _moment_rows(model: np.ndarray, size: int) -> np.ndarray:
    """``(3, size, size)`` images whose dot products with a unit-sum PSF image are the fractional
    errors of its xx, yy and xy second moments, weighted by the model's adaptive-moment Gaussian,
    relative to the model's (zero for the model itself).

    Why this weight: the adaptive moments of an image are the fixed point of "weight with the
    Gaussian of the current moments, measure", so an image whose moments under the *model's*
    Gaussian equal the model's has the model's adaptive moments.  Each row is
    ``g_w (W q) - g_q W`` (``W`` the weight, ``q`` = x^2, y^2, xy, ``g`` their model sums), linear
    in the image and zero for any image with the model's weighted moment ratios.
    """
    _, _, ixx, iyy, ixy = adaptive_moments(model)
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    det = ixx * iyy - ixy * ixy
    weight = np.exp(-(iyy * xx * xx - 2.0 * ixy * xx * yy + ixx * yy * yy) / (2.0 * det))
    quads = np.stack([weight * xx * xx, weight * yy * yy, weight * xx * yy])
    m = _centred(model, size)
    g_q = np.einsum("kij,ij->k", quads, m)
    g_w = float((weight * m).sum())
    scale = 0.5 * (g_q[0] + g_q[1]) * g_w
    return (g_w * quads - g_q[:, None, None] * weight[None]) / scale


@dataclass(eq=False)
class _Fitter:
    """Normal equations of the matching-kernel fit per PSF stamp ``S``, kernel ``K = B0 + sum a_b B_b``.

    The objective per cell is ``|S (*) K - M|^2 / |M|^2 + eta sum K^2 + mu |moment errors|^2``:

    * the pixel term over the whole (zero-padded) plane, by Parseval a weighted sum over the
      half-plane of real FFT coefficients, so its normal matrix is
      ``Re sum_f w |S_f|^2 conj(B_bf) B_cf``: one real matrix product per batch of stamps;
    * the ridge term ``eta sum K^2`` (the kernel's noise-variance gain): without it the
      kernel is free at frequencies where ``S`` has no power, and for a science PSF close to
      the model the fit drives it to large oscillating values (noise gains of 10-60 at
      FWHM 6 px), invisible in the PSF residual but not in the image noise;
    * the moment term (:func:`_moment_rows`): the Alard-Lupton basis (Gaussians of sigma
      <= 4.5 px in 21 px) cannot follow the model's truncated broad wing, and the
      least-squares compromise is 0.5-1.5 % narrower in second moments, more so the better
      the seeing matches the model; the term moves that error into the pixel residual
      (whose rms barely changes) so that all warps get the model's moments.
    """

    stamp: int  # side of the PSF stamps compared
    nfft: int
    fb0: np.ndarray  # transform of B0 (centred at the origin)
    fb: np.ndarray  # (n_free, F) transforms of the free basis functions
    fb_re: np.ndarray
    fb_im: np.ndarray
    fm: np.ndarray  # transform of the model
    weight: np.ndarray  # Hermitian weights of the rfft half-plane (F,)
    m2: float  # sum of the model squared, in the units of the Fourier sums
    gram: np.ndarray  # (n_free, n_free) real-space B_b . B_c
    gram0: np.ndarray  # (n_free,) B_b . B0
    moment_maps: np.ndarray  # (3 * n_basis, stamp * stamp): moment row k of S (*) B_b is this row . S

    @classmethod
    def create(cls, basis: np.ndarray, model: np.ndarray, psf_size: int, config: PsfMatchConfig) -> "_Fitter":
        ksize = basis.shape[1]
        stamp = max(psf_size, model.shape[0])
        if config.do_auto_pad_psf:
            stamp = max(stamp, _next_odd(ksize * config.auto_pad_psf_to))
        if ksize > stamp - 1:
            raise ValueError(f"kernel size {ksize} exceeds the PSF stamp size {stamp} - 1")
        nfft = scipy.fft.next_fast_len(stamp + ksize - 1, real=True)
        half = ksize // 2
        wrapped = np.zeros((len(basis), nfft, nfft))
        wrapped[:, :ksize, :ksize] = basis
        wrapped = np.roll(wrapped, (-half, -half), axis=(1, 2))
        fb_all = scipy.fft.rfft2(wrapped).reshape(len(basis), -1)
        fm = scipy.fft.rfft2(_centred(model, stamp), s=(nfft, nfft)).ravel()
        column_weight = np.full(nfft // 2 + 1, 2.0)
        column_weight[0] = 1.0
        if nfft % 2 == 0:
            column_weight[-1] = 1.0
        weight = np.broadcast_to(column_weight, (nfft, nfft // 2 + 1)).ravel().copy()
        fb = np.ascontiguousarray(fb_all[1:])
        m2 = float(np.sum(weight * (fm.real**2 + fm.imag**2)))
        flat = basis.reshape(len(basis), -1)
        # moment row . (S (*) B) = sum_p S(p) sum_q row(p + q) B(q): a correlation over the stamp
        rows = _moment_rows(model, stamp + ksize - 1)
        maps = np.stack([scipy.signal.correlate(r, b, mode="valid") for r in rows for b in basis])
        return cls(
            stamp, nfft, fb_all[0], fb, np.ascontiguousarray(fb.real), np.ascontiguousarray(fb.imag), fm, weight,
            m2, flat[1:] @ flat[1:].T, flat[1:] @ flat[0], maps.reshape(len(maps), -1),
        )

    @cached_property
    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index pairs ``b <= c`` of the free functions and ``Re(conj(B_b) B_c)`` per frequency."""
        i, j = np.triu_indices(len(self.fb))
        return i, j, np.real(np.conj(self.fb[i]) * self.fb[j])

    def batch(self, psf_images: list[np.ndarray]) -> "_Batch":
        """Transforms and per-stamp terms of a batch of PSF stamps."""
        stamps = np.stack([_centred(im, self.stamp) for im in psf_images])
        fs = scipy.fft.rfft2(stamps, s=(self.nfft, self.nfft)).reshape(len(psf_images), -1)
        power = self.weight * (fs.real**2 + fs.imag**2) / self.m2
        d = self.fm[None, :] - fs * self.fb0[None, :]
        cross = self.weight * np.conj(fs) * d / self.m2
        d2 = np.sum(self.weight * (d.real**2 + d.imag**2), axis=1) / self.m2
        moments = (stamps.reshape(len(stamps), -1) @ self.moment_maps.T).reshape(len(stamps), 3, len(self.fb) + 1)
        return _Batch(fs, power, cross, d2, moments[:, :, 1:], moments[:, :, 0])

    def normals(self, power: np.ndarray) -> np.ndarray:
        """``(m, n_free, n_free)`` pixel-term normal matrices ``sum_f P_f Re(conj(B_b) B_c)`` of power rows ``P``."""
        i, j, pairs = self._pairs
        packed = power @ pairs.T
        out = np.empty((len(power), len(self.fb), len(self.fb)))
        out[:, i, j] = packed
        out[:, j, i] = packed
        return out

    def rhs(self, cross: np.ndarray) -> np.ndarray:
        """``(m, n_free)`` pixel-term right-hand sides ``Re sum_f conj(B_bf) h_f`` of rows ``h``."""
        return cross.real @ self.fb_re.T + cross.imag @ self.fb_im.T

    def pixel_chi2(self, batch: "_Batch", coeffs: np.ndarray) -> np.ndarray:
        """``|S (*) K - M|^2 / |M|^2`` per stamp for kernel coefficients ``coeffs`` (n, n_free)."""
        fk = self.fb0[None, :] + coeffs @ self.fb
        res = batch.fs * fk - self.fm[None, :]
        return np.sum(self.weight * (res.real**2 + res.imag**2), axis=1) / self.m2


@dataclass(eq=False)
class _Batch:
    """A batch of PSF stamps as the fit needs them (pixel terms divided by ``|M|^2``)."""

    fs: np.ndarray  # (n, F) transforms of the stamps
    power: np.ndarray  # (n, F) w |S_f|^2
    cross: np.ndarray  # (n, F) w conj(S_f) (M_f - S_f B0_f)
    d2: np.ndarray  # (n,) pixel term of the kernel B0
    mom_u: np.ndarray  # (n, 3, n_free): fractional moment errors are mom_u @ a + mom_v
    mom_v: np.ndarray  # (n, 3)


def _next_odd(value: float) -> int:
    n = int(math.ceil(value))
    return n if n % 2 == 1 else n + 1


def _cell_centres(box: Box, config: PsfMatchConfig) -> list[tuple[float, float]]:
    return [sub.center for sub in box.subregions(config.size_cell_x, config.size_cell_y)]


@dataclass
class MatchingKernel:
    """Fitted spatially varying kernel over a box: coefficients of the free basis functions."""

    basis: np.ndarray
    box: Box
    order: int
    coefficients: np.ndarray  # chebyshev: (n_free, n_terms); per_cell: (n_cells, n_free)
    cells: list[tuple[float, float]]
    spatial_model: str
    residual_max: float  # worst relative rms PSF residual over the cells
    moment_error_max: float = 0.0  # worst fractional model-weighted second-moment error over the cells

    def image(self, x: float, y: float) -> np.ndarray:
        """Kernel at (x, y): ``B0 + sum a_b B_b``, renormalised to sum exactly 1."""
        return self.images(np.array([x]), np.array([y]))[0]

    def images(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``(n, k, k)`` kernels at many positions."""
        if self.spatial_model == "per_cell":
            cx = np.array([c[0] for c in self.cells])
            cy = np.array([c[1] for c in self.cells])
            nearest = np.argmin((cx[None, :] - x[:, None]) ** 2 + (cy[None, :] - y[:, None]) ** 2, axis=1)
            coeffs = self.coefficients[nearest]
        else:
            coeffs = _chebyshev_terms_many(x, y, self.box, self.order) @ self.coefficients.T
        k = self.basis.shape[1]
        flat = self.basis[0].ravel()[None, :] + coeffs @ self.basis[1:].reshape(len(self.basis) - 1, -1)
        flat /= flat.sum(axis=1, keepdims=True)
        return flat.reshape(-1, k, k)


def _psf_images(psf: Psf, cells: list[tuple[float, float]]) -> list[np.ndarray]:
    """The PSF's kernel images at the cell centres (batched when the PSF can)."""
    if isinstance(psf, WarpedPsf):
        return psf.kernel_images(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]))
    return [psf.kernel_image(x, y) for x, y in cells]


def _solve_spd(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Cholesky solve of a (ridge-)positive-definite system; least squares if it is singular."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(matrix), rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(matrix, rhs, rcond=1e-12)[0]


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """The fit's matrices are small (<= 256 x 2k): one BLAS thread is faster, and much faster on a
    busy machine, where every multi-threaded call waits for a second core (a full CCD's fit:
    1.1 s with two OpenBLAS threads at load average 4, 0.3 s with one)."""
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def fit_matching_kernel(
    warped_psf: Psf, model: np.ndarray, box: Box, config: PsfMatchConfig
) -> MatchingKernel:
    """Matching kernel ``warped_psf (*) K = model`` over ``box``; see :func:`_fit_matching_kernel`."""
    with _one_blas_thread():
        return _fit_matching_kernel(warped_psf, model, box, config)


def _fit_matching_kernel(
    warped_psf: Psf, model: np.ndarray, box: Box, config: PsfMatchConfig
) -> MatchingKernel:
    """Matching kernel ``warped_psf (*) K = model`` over ``box`` (cells of ``config``); see :class:`_Fitter`.

    With the Chebyshev model the pixel term is summed over the cells *before* the
    matrix products (``sum_c t_cm t_cl P_c`` per pair of spatial terms), so the cost
    does not grow with the number of cells times the basis pairs.
    """
    basis = alard_lupton_basis(config)
    cells = _cell_centres(box, config)
    if not cells:
        raise ValueError(f"no cells in {box}")
    images = _psf_images(warped_psf, cells)
    fitter = _Fitter.create(basis, model, max(im.shape[0] for im in images), config)
    n_free = len(basis) - 1
    starts = range(0, len(images), _CELL_BATCH)
    batches = [fitter.batch(images[i : i + _CELL_BATCH]) for i in starts]
    mom_u = np.concatenate([b.mom_u for b in batches])
    mom_v = np.concatenate([b.mom_v for b in batches])
    eta, mu = config.regularization, config.moment_weight

    def worst(coeffs: np.ndarray) -> tuple[float, float]:
        """Largest relative rms residual ``|S (*) K - M| / |M|`` and fractional moment error over the cells."""
        chi2 = np.concatenate([fitter.pixel_chi2(b, coeffs[i : i + _CELL_BATCH]) for b, i in zip(batches, starts)])
        moment = np.abs(np.einsum("nka,na->nk", mom_u, coeffs) + mom_v)
        return float(np.sqrt(np.maximum(chi2, 0.0)).max()), float(moment.max())

    if config.spatial_model == "per_cell":
        big_a = np.concatenate([fitter.normals(b.power) for b in batches])
        big_a += eta * fitter.gram + mu * np.einsum("nka,nkb->nab", mom_u, mom_u)
        big_b = np.concatenate([fitter.rhs(b.cross) for b in batches])
        big_b -= eta * fitter.gram0 + mu * np.einsum("nka,nk->na", mom_u, mom_v)
        per_cell = np.stack([_solve_spd(a, b) for a, b in zip(big_a, big_b)])
        return MatchingKernel(basis, box, 0, per_cell, cells, "per_cell", *worst(per_cell))
    # the largest Chebyshev order the number of cells supports
    order = config.spatial_kernel_order
    while order > 0 and (order + 1) * (order + 2) // 2 > len(cells):
        order -= 1
    # a term of order p in x needs p + 1 distinct cell columns (likewise rows): with two
    # columns of cells (a narrow CCD, a sliver at a patch edge) T2(x) is unconstrained and
    # the kernel runs wild between the cells and the box edges
    distinct = min(len({c[0] for c in cells}), len({c[1] for c in cells}))
    order = min(order, distinct - 1)
    terms = _chebyshev_terms_many(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]), box, order)
    nt = terms.shape[1]
    # parameter (b, m) = a_b's spatial term m: normal matrix sum_c kron(A_c, t_c t_c^T)
    tm, tl = np.triu_indices(nt)
    big_n = np.zeros((n_free, nt, n_free, nt))
    big_r = np.zeros((n_free, nt))
    for b, i in zip(batches, starts):
        t = terms[i : i + _CELL_BATCH]
        summed = fitter.normals((t[:, tm] * t[:, tl]).T @ b.power)
        big_n[:, tm, :, tl] += summed
        big_n[:, tl, :, tm] += np.where((tm != tl)[:, None, None], summed, 0.0)
        big_r += fitter.rhs(t.T @ b.cross).T
    uu = np.einsum("nka,nkb->nab", mom_u, mom_u)
    big_n += mu * np.einsum("nab,nm,nl->ambl", uu, terms, terms, optimize=True)
    big_n += eta * np.einsum("ab,ml->ambl", fitter.gram, terms.T @ terms)
    big_r -= mu * np.einsum("nka,nk,nm->am", mom_u, mom_v, terms, optimize=True)
    big_r -= eta * np.outer(fitter.gram0, terms.sum(axis=0))
    solution = _solve_spd(big_n.reshape(n_free * nt, n_free * nt), big_r.reshape(-1)).reshape(n_free, nt)
    return MatchingKernel(basis, box, order, solution, cells, "chebyshev", *worst(terms @ solution.T))


# -- convolution -------------------------------------------------------------------------------


def tile_kernels(kernel: MatchingKernel, box: Box, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """Flipped float32 kernels at the centres of the ``tile`` x ``tile`` blocks of ``box``,
    and the union of their non-zero taps."""
    ksize = kernel.basis.shape[1]
    nty = (box.height + tile - 1) // tile
    ntx = (box.width + tile - 1) // tile
    x0 = box.x0 + np.arange(ntx) * tile
    x1 = np.minimum(x0 + tile - 1, box.x1)
    y0 = box.y0 + np.arange(nty) * tile
    y1 = np.minimum(y0 + tile - 1, box.y1)
    cx, cy = np.meshgrid((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    images = kernel.images(cx.ravel(), cy.ravel())
    support = np.any(images != 0, axis=0)
    kernels = np.ascontiguousarray(images[:, ::-1, ::-1].reshape(nty, ntx, ksize, ksize), dtype=np.float32)
    return kernels, support


def _match_region(
    direct: MaskedImage,
    polygon: np.ndarray,
    cut_box: Box,
    target: Box,
    kernels: np.ndarray,
    support: np.ndarray,
    config: PsfMatchConfig,
    out: MaskedImage,
    chunk_rows: int,
) -> int:
    """Convolve the part of ``direct`` inside ``polygon`` (within ``cut_box``) and paste the
    pixels of ``target`` that have data into ``out``; works in row chunks.

    Pixels outside the polygon, or NO_DATA in the direct warp, enter as NO_DATA (their
    values are zeroed so that only the mask propagates them); within half a kernel of the
    cut box edge the result is NO_DATA, as LSST's convolution border.  Returns the number
    of pixels copied.
    """
    ksize = kernels.shape[2]
    half = ksize // 2
    no_data = out.planes.bitmask("NO_DATA")
    rows = np.flatnonzero(support.any(axis=1))
    cols = np.flatnonzero(support.any(axis=0))
    # a convolution output at y sees inputs y - t for the taps t of non-zero weight
    dy_lo, dy_hi = int(half - rows[-1]), int(half - rows[0])
    dx_lo, dx_hi = int(half - cols[-1]), int(half - cols[0])
    interior = cut_box.grown(-half)
    nblocks = max(1, num_threads())
    copied = 0
    for ya in range(target.y0, target.y1 + 1, chunk_rows):
        yb = min(ya + chunk_rows - 1, target.y1)
        in_box = Box(target.x0 - half, ya - half, target.x1 + half, yb + half).intersection(cut_box)
        src = direct.subset(in_box)
        inside = polygon_mask(polygon, in_box.x0, in_box.y0, in_box.height, in_box.width)
        mask = np.where(inside, src.mask, src.mask | no_data).astype(np.int32)
        usable = (mask & no_data) == 0
        img = np.where(usable, src.image, np.float32(0.0)).astype(np.float32)
        var = np.where(usable, src.variance, np.float32(0.0)).astype(np.float32)
        conv_img = np.empty(in_box.shape, dtype=np.float32)
        conv_var = np.empty(in_box.shape, dtype=np.float32)
        convolve_tiles(
            img, var, kernels, config.convolution_tile,
            in_box.y0 - cut_box.y0, in_box.x0 - cut_box.x0, conv_img, conv_var, nblocks,
        )
        conv_mask = dilate_mask(mask, dy_lo, dy_hi, dx_lo, dx_hi, np.int32(no_data), nblocks)
        chunk = Box(target.x0, ya, target.x1, yb)
        rs, cs = chunk.slices(in_box)
        m = conv_mask[rs, cs]
        good = ((m & no_data) == 0) & inside[rs, cs]
        # the convolution border of the cut box
        yy = np.arange(chunk.y0, chunk.y1 + 1)[:, None]
        xx = np.arange(chunk.x0, chunk.x1 + 1)[None, :]
        good &= (yy >= interior.y0) & (yy <= interior.y1) & (xx >= interior.x0) & (xx <= interior.x1)
        dst = out.subset(chunk)
        dst.image[good] = conv_img[rs, cs][good]
        dst.variance[good] = conv_var[rs, cs][good]
        dst.mask[good] = m[good]
        copied += int(good.sum())
    return copied


# -- valid polygons ----------------------------------------------------------------------------


def _row_polygon(row: CcdRow) -> ValidPolygon:
    return row.valid_polygon if row.valid_polygon is not None else ValidPolygon.from_box(row.bbox)


def shrink_valid_polygon(row: CcdRow, kernel_size: int) -> ValidPolygon:
    """LSST's shrink: the polygon's box grown by ``(-kernel_size) // 2`` intersected with the polygon."""
    poly = _row_polygon(row)
    grow = (-kernel_size) // 2
    v = poly.vertices
    x0, y0 = v.min(axis=0) - grow
    x1, y1 = v.max(axis=0) + grow
    clipped = clip_polygon_to_rectangle(v, x0, y0, x1, y1)
    if len(clipped) < 3 or polygon_area(clipped) == 0:
        raise ValueError(f"valid polygon of visit {row.visit} detector {row.detector} vanishes when shrunk")
    return ValidPolygon(clipped)


# -- the warp ------------------------------------------------------------------------------------


def _psf_sigma(psf: Psf, x: float, y: float) -> float:
    _, _, ixx, iyy, ixy = adaptive_moments(psf.kernel_image(x, y))
    return float((ixx * iyy - ixy * ixy) ** 0.25)


def make_psf_matched_warp(
    direct_warp: Exposure,
    config: PsfMatchConfig | None = None,
    *,
    patch_outer_bbox: Box | None = None,
) -> Exposure | None:
    """The direct warp PSF-matched to the model PSF, on the patch outer box (§5.3).

    ``patch_outer_bbox`` defaults to the ``PATCH_OUTER_BBOX`` metadata of the direct warp.
    Pixels no calexp fills after matching are NaN / NO_DATA / +inf.  The result carries
    the model PSF, calibration 1 (nJy), and the ``coadd_inputs`` table with every ccd
    valid polygon shrunk by half the kernel (LSST).  Returns None if no pixel is
    copied.  See the module docstring for what is reported when a visit PSF is broader
    than the model.
    """
    cfg = config or PsfMatchConfig()
    if direct_warp.wcs is None:
        raise ValueError("the direct warp has no WCS")
    inputs = CoaddInputs.from_metadata(direct_warp.metadata)
    if inputs is None or not inputs.ccds:
        raise ValueError("the direct warp has no coadd_inputs ccd rows")
    if patch_outer_bbox is None:
        stored = direct_warp.metadata.get("PATCH_OUTER_BBOX")
        patch_outer_bbox = direct_warp.bbox if stored is None else Box.from_list(stored)
    out_box = patch_outer_bbox.intersection(direct_warp.bbox)
    model_psf = make_model_psf(cfg.model_psf)
    model = model_psf.kernel_image()
    _, _, mxx, myy, mxy = adaptive_moments(model)
    model_sigma = float((mxx * myy - mxy * mxy) ** 0.25)
    planes = direct_warp.planes
    no_data = planes.bitmask("NO_DATA")
    out = MaskedImage(
        np.full(out_box.shape, np.nan, dtype=np.float32),
        np.full(out_box.shape, no_data, dtype=np.int32),
        np.full(out_box.shape, np.inf, dtype=np.float32),
        xy0=out_box.xy0,
        planes=planes.copy(),
    )
    warp_box = direct_warp.bbox
    copied = 0
    broader: list[int] = []
    input_sigma_max = 0.0
    residual_max = 0.0
    moment_error_max = 0.0
    for row in inputs.ccds:
        if row.psf is None:
            logger.warning("visit %d detector %d has no PSF; not matched", row.visit, row.detector)
            continue
        transform = PixelTransform(row.wcs, direct_warp.wcs)
        outline = map_outline(_row_polygon(row).vertices, transform)
        fb = warp_box.corners(float_box=True)
        clipped = clip_polygon_to_rectangle(outline, fb[0, 0], fb[0, 1], fb[2, 0], fb[2, 1])
        if polygon_area(clipped) == 0:
            continue
        polygon = ValidPolygon(clipped)
        cut_box = polygon.bbox().intersection(warp_box)
        target = cut_box.grown(-(cfg.kernel_size // 2)).intersection(out_box)
        if cut_box.is_empty() or target.is_empty():
            continue
        warped_psf = row.warped_psf(direct_warp.wcs)
        cx, cy = cut_box.center
        sigma = _psf_sigma(warped_psf, cx, cy)
        input_sigma_max = max(input_sigma_max, sigma)
        if sigma > model_sigma:
            broader.append(row.detector)
            logger.warning(
                "visit %d detector %d: PSF FWHM %.2f px is broader than the model's %.2f px; "
                "matching would need deconvolution and degrades",
                row.visit, row.detector, SIGMA_TO_FWHM * sigma, SIGMA_TO_FWHM * model_sigma,
            )
        kernel = fit_matching_kernel(warped_psf, model, cut_box, cfg)
        residual_max = max(residual_max, kernel.residual_max)
        moment_error_max = max(moment_error_max, kernel.moment_error_max)
        kernels, support = tile_kernels(kernel, cut_box, cfg.convolution_tile)
        copied += _match_region(
            direct_warp.masked_image, polygon.vertices, cut_box, target, kernels, support, cfg, out,
            cfg.chunk_rows,
        )
    if copied == 0:
        logger.info("visit %s: no pixel survives PSF matching", direct_warp.metadata.get("VISIT"))
        return None
    shrunk = [row.with_valid_polygon(shrink_valid_polygon(row, cfg.kernel_size)) for row in inputs.ccds]
    metadata = {
        key: value
        for key, value in direct_warp.metadata.items()
        if key not in (COADD_INPUTS_KEY, "COVERAGE_FRACTION", "WARP_GOODPIX")
    }
    covered = int(np.count_nonzero((out.mask & no_data) == 0))
    metadata.update(
        {
            "WARP_TYPE": "psfMatched",
            "WARP_GOODPIX": covered,
            "COVERAGE_FRACTION": covered / out_box.area,
            "PSF_MODEL_FWHM": SIGMA_TO_FWHM * model_sigma,
            "PSF_INPUT_FWHM_MAX": SIGMA_TO_FWHM * input_sigma_max,
            "PSF_BROADER_THAN_MODEL": bool(broader),
            "PSF_BROADER_CCDS": broader,
            "PSF_MATCH_RESIDUAL_MAX": residual_max,
            "PSF_MATCH_MOMENT_ERROR_MAX": moment_error_max,
            COADD_INPUTS_KEY: inputs.with_ccds(shrunk),
        }
    )
    return Exposure(
        out,
        wcs=direct_warp.wcs,
        psf=model_psf,
        photo_calib=PhotoCalib(1.0),
        visit_info=direct_warp.visit_info,
        metadata=metadata,
    )
