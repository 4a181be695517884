"""CompareWarp coadds: artifacts found by comparing PSF-matched warps with a static-sky
template, then left out of a plain mean (LSST ``CompareWarpAssembleCoaddTask``, §7).

Sharp deviations of the direct warps that the template's flux cannot explain (rays the
ISR left, its repair residuals) are candidates too: the PSF-matched warps show them at a
fifth of their significance.  Where the template's flux does explain a deviation (a ray
on a galaxy), its pixels are also judged against the sharper direct warps, which show a
source's core at least as bright but not a ray; a candidate sharper than its warp's PSF
is then neither a variable nor rescued by containment.

The pieces compose explicitly::

    template = build_template(psf_matched, patch_bbox, wcs, config.assemble_static_sky_model)
    found = find_artifacts(template, psf_matched, config, direct)  # candidates, epoch count
    coadd = assemble(weights, patch_bbox, wcs, config, alt_masks=found.alt_masks, ...)

Candidates are kept per warp as span lists with footprint ids (a few kB per warp), so a
patch's worth of warps is processed one warp at a time.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numba
import numpy as np
from astropy.wcs import WCS
from scipy import ndimage
from scipy.spatial import cKDTree

from ..background import TooManyMaskedPixelsError
from ..detection import DetectionConfig, Footprints, detect_footprints
from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..masks import MaskPlanes, remap_mask, standard_planes
from ..psf import neighbour_ratios
from ..warp.inputs import coadd_inputs_psf_at
from .alt_masks import AltMask, empty_spans, spans_from_mask
from .assemble import AssembleResult, assemble
from .config import CompareWarpConfig, StaticSkyModelConfig
from .prepare import NoWorkFound, WarpHandle, compute_weights
from .scale_variance import measure_variance_scale
from .template_sources import TemplateSources, psf_weighted_fluxes, psf_weights, template_sources

__all__ = [
    "ArtifactCandidates",
    "CompareWarpResult",
    "EpochSourceFluxes",
    "FindArtifactsResult",
    "build_template",
    "compare_warp_assemble",
    "detect_template_footprints",
    "difference_into",
    "effective_max_epochs",
    "filter_artifacts",
    "find_artifacts",
    "match_variable_sources",
    "psf_weighted_fluxes",
    "prefilter_artifacts",
    "restrict_candidates",
    "sharper_than_psf",
    "unexplained_pixels",
    "template_sources",
    "with_psf_matched_polygons",
]

logger = logging.getLogger(__name__)


@dataclass
class ArtifactCandidates:
    """Footprints detected on one warp difference: spans ``(y, x0, x1)`` and their
    footprint index (0..n-1)."""

    spans: np.ndarray
    ids: np.ndarray
    n: int

    @classmethod
    def empty(cls) -> "ArtifactCandidates":
        return cls(empty_spans(), np.zeros(0, dtype=np.int32), 0)

    def pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every candidate pixel as ``(footprint index, y, x)`` arrays."""
        if not len(self.spans):
            z = np.zeros(0, dtype=np.int64)
            return z, z, z
        lengths = (self.spans[:, 2] - self.spans[:, 1] + 1).astype(np.int64)
        fid = np.repeat(self.ids.astype(np.int64), lengths)
        y = np.repeat(self.spans[:, 0].astype(np.int64), lengths)
        starts = np.repeat(self.spans[:, 1].astype(np.int64), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return fid, y, starts + offsets

    def extended(self, other: "ArtifactCandidates") -> "ArtifactCandidates":
        """These footprints followed by ``other``'s (renumbered after them)."""
        return ArtifactCandidates(
            np.concatenate([self.spans, other.spans]), np.concatenate([self.ids, other.ids + self.n]), self.n + other.n
        )

    def select(self, keep: np.ndarray) -> "ArtifactCandidates":
        """Only the footprints whose index has ``keep`` true, renumbered."""
        new_index = np.cumsum(keep) - 1
        rows = keep[self.ids]
        return ArtifactCandidates(self.spans[rows], new_index[self.ids[rows]].astype(np.int32), int(keep.sum()))


@numba.njit(nogil=True, cache=True)
def _label_runs(labels: np.ndarray, y0: int, x0: int) -> tuple[np.ndarray, np.ndarray]:
    ny, nx = labels.shape
    count = 0
    for y in range(ny):
        prev = 0
        for x in range(nx):
            lab = labels[y, x]
            if lab != 0 and lab != prev:
                count += 1
            prev = lab
    spans = np.empty((count, 3), dtype=np.int32)
    ids = np.empty(count, dtype=np.int32)
    k = -1
    for y in range(ny):
        prev = 0
        for x in range(nx):
            lab = labels[y, x]
            if lab != 0 and lab != prev:
                k += 1
                spans[k, 0] = y + y0
                spans[k, 1] = x + x0
                ids[k] = lab - 1
            if lab != 0:
                spans[k, 2] = x + x0
            prev = lab
    return spans, ids


def candidates_from_footprints(fp: Footprints) -> ArtifactCandidates:
    spans, ids = _label_runs(fp.labels, fp.bbox.y0, fp.bbox.x0)
    return ArtifactCandidates(spans, ids, len(fp))


@dataclass
class FindArtifactsResult:
    """Per-warp alternative masks (in input order), the epoch-count and input-count
    images, and the surviving artifact candidates per warp."""

    alt_masks: list[AltMask]
    epoch_count: np.ndarray
    n_image: np.ndarray
    candidates: list[ArtifactCandidates | None] = field(default_factory=list)
    template_footprints: Footprints | None = None
    visits: list[int | None] = field(default_factory=list)

    @property
    def alt_masks_by_visit(self) -> dict[int, AltMask]:
        """Alternative masks keyed by visit (warps given as None have no visit)."""
        return {v: a for v, a in zip(self.visits, self.alt_masks) if v is not None}


@dataclass
class CompareWarpResult:
    coadd: Exposure
    n_image: np.ndarray | None
    template: Exposure
    alt_masks: dict[int, AltMask]
    epoch_count: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------


def build_template(
    psf_matched_handles: Sequence[WarpHandle | None],
    patch_bbox: Box,
    tract_wcs: WCS | None,
    config: StaticSkyModelConfig = StaticSkyModelConfig(),
) -> Exposure:
    """The static-sky model: a clipped-mean coadd of the PSF-matched warps (LSST
    ``assembleStaticSkyModel``, i.e. ``templateCoadd``)."""
    present = [h for h in psf_matched_handles if h is not None]
    try:
        weights = compute_weights(present, config, patch_bbox=patch_bbox)
        result = assemble(weights, patch_bbox, tract_wcs, config)
    except NoWorkFound as exc:
        raise RuntimeError(f"could not build the template coadd: {exc}") from exc
    return result.coadd


def detect_template_footprints(template: Exposure, config: CompareWarpConfig) -> Footprints:
    """Positive footprints of bright sources on a copy of the template (``detectTemplate``),
    retrying with higher thresholds when the background cannot be measured."""
    mi = template.masked_image.copy()
    mi.mask[...] = 0
    sigma = _psf_sigma(template.psf)
    det = config.detect_template
    last_error: Exception | None = None
    factor = 1.0
    for attempt in range(config.max_detect_template_iter):
        try:
            result = detect_footprints(mi, sigma, det.model_copy(update={
                "include_threshold_multiplier": det.include_threshold_multiplier * factor}))
        except TooManyMaskedPixelsError as exc:
            last_error = exc
            mi = template.masked_image.copy()
            mi.mask[...] = 0
            if attempt + 1 > 5:
                factor *= config.detect_template_multiplier
            logger.warning("template detection attempt %d failed: %s", attempt + 1, exc)
            continue
        assert result.positive is not None
        return result.positive
    raise RuntimeError(f"template detection failed {config.max_detect_template_iter} times") from last_error


@dataclass(frozen=True)
class _WarpCore:
    """A direct warp's PSF core: the sigma of the Gaussian of the same peak, and the
    neighbour-to-peak ratios (horizontal, vertical, diagonal).  Unknown: sigma inf (done
    last) and ratios 0, so that nothing is judged sharper than it."""

    sigma: float = math.inf
    ratios: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _warp_core(handle: WarpHandle | None, wcs: WCS | None) -> _WarpCore:
    """The PSF core of a direct warp, from its own PSF or its inputs' at its box's centre
    (or the first of a few points inside that an input covers)."""
    if handle is None:
        return _WarpCore()
    kernel = None
    if handle.psf is not None:
        kernel = handle.psf.kernel_image()
    elif handle.coadd_inputs is not None and wcs is not None:
        b = handle.bbox
        for fx, fy in ((0.5, 0.5), (0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25)):
            try:
                kernel = coadd_inputs_psf_at(handle.coadd_inputs, wcs, b.x0 + fx * (b.x1 - b.x0), b.y0 + fy * (b.y1 - b.y0))
                break
            except ValueError:
                continue
    if kernel is None or not kernel.sum() > 0:
        return _WarpCore()
    k = np.asarray(kernel, dtype=np.float64) / float(kernel.sum())
    try:
        ratios = neighbour_ratios(k)
    except ValueError:
        return _WarpCore()
    c = k.shape[0] // 2
    return _WarpCore(math.sqrt(1.0 / (2.0 * math.pi * float(k[c, c]))), ratios)


def _psf_sigma(psf: Any) -> float:
    if psf is None:
        raise ValueError("the template has no PSF, so its detection scale is unknown")
    sigma = float(psf.sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"PSF determinant radius is {sigma!r}")
    return sigma


# --------------------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------------------


def _effective_max_epochs(n_epochs: np.ndarray, config: CompareWarpConfig) -> np.ndarray:
    """:func:`effective_max_epochs` of every element of ``n_epochs``."""
    return np.minimum(
        config.max_fraction_epochs_low * n_epochs, config.max_num_epochs + config.max_fraction_epochs_high * n_epochs
    ).astype(np.int64)


def effective_max_epochs(n_epochs: float, config: CompareWarpConfig) -> int:
    """``int(min(maxFractionEpochsLow N, maxNumEpochs + maxFractionEpochsHigh N))``."""
    return int(_effective_max_epochs(np.asarray(float(n_epochs)), config))


def prefilter_artifacts(
    candidates: ArtifactCandidates, mask: np.ndarray, bbox: Box, planes: MaskPlanes, config: CompareWarpConfig
) -> ArtifactCandidates:
    """Drop candidates with no more than ``prefilterArtifactsRatio`` of their pixels free of
    the prefilter planes (they are excluded anyway)."""
    if candidates.n == 0:
        return candidates
    bad = np.int32(planes.bitmask(*[p for p in config.prefilter_artifacts_mask_planes if p in planes]))
    fid, y, x = candidates.pixels()
    good = (mask[y - bbox.y0, x - bbox.x0] & bad) == 0
    n_pix = np.bincount(fid, minlength=candidates.n)
    n_good = np.bincount(fid, weights=good, minlength=candidates.n)
    return candidates.select(n_good / np.maximum(n_pix, 1) > config.prefilter_artifacts_ratio)


def _seed_pixels(fid: np.ndarray, n: int, core: np.ndarray | None) -> np.ndarray:
    """Which candidate pixels stand for their footprint: the ``core`` (seed) pixels, or
    all of a footprint that has none (or when there is no ``core``)."""
    if core is None:
        return np.ones(len(fid), dtype=bool)
    has_core = np.bincount(fid, weights=core, minlength=n) > 0
    return core | ~has_core[fid]


def _largest_per_candidate(fid: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Index (into the pixel arrays) of each candidate's largest ``size`` pixel, in
    the order of the candidates present."""
    order = np.lexsort((-size, fid))
    return order[np.r_[True, fid[order][1:] != fid[order][:-1]]]


def _candidate_peaks(fid: np.ndarray, y: np.ndarray, x: np.ndarray, n: int, diff: np.ndarray, bbox: Box) -> np.ndarray:
    """``(n, 2)`` parent ``(x, y)`` of each candidate's largest ``|diff|`` pixel."""
    with np.errstate(invalid="ignore"):
        size = np.nan_to_num(np.abs(diff[y - bbox.y0, x - bbox.x0]), nan=-1.0)
    first = _largest_per_candidate(fid, size)
    out = np.zeros((n, 2), dtype=np.int64)
    out[fid[first], 0], out[fid[first], 1] = x[first], y[first]
    return out


def match_variable_sources(
    candidates: ArtifactCandidates, diff: np.ndarray, bbox: Box, source_peaks: np.ndarray,
    psf_sigma: float, config: CompareWarpConfig, core: np.ndarray | None = None,
) -> np.ndarray:
    """Per candidate, the index of the template source (``source_peaks``, ``(m, 2)``
    parent ``(x, y)``) it looks like a change of brightness of, or -1: the candidate's
    largest ``|diff|`` pixel within ``variable_peak_match_sigma`` PSF sigma of the source's
    peak, and every seed pixel (all pixels without ``core``) within
    ``variable_max_radius_sigma`` of it."""
    n = candidates.n
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(source_peaks) == 0:
        return out
    fid, y, x = candidates.pixels()
    peaks = _candidate_peaks(fid, y, x, n, diff, bbox).astype(np.float64)
    tree = cKDTree(source_peaks.astype(np.float64))
    dist, which = tree.query(peaks, distance_upper_bound=config.variable_peak_match_sigma * psf_sigma)
    near = np.isfinite(dist)
    centre = source_peaks[np.minimum(which, len(source_peaks) - 1)]
    use = _seed_pixels(fid, n, core)
    r2 = ((x - centre[fid, 0]) ** 2 + (y - centre[fid, 1]) ** 2).astype(np.float64)
    reach = np.zeros(n, dtype=np.float64)
    np.maximum.at(reach, fid[use], r2[use])
    ok = near & (reach <= (config.variable_max_radius_sigma * psf_sigma) ** 2)
    out[ok] = which[ok]
    return out


def unexplained_by_template(
    candidates: ArtifactCandidates, diff: MaskedImage, template: MaskedImage, psf_sigma: float, config: CompareWarpConfig
) -> np.ndarray:
    """Per candidate of a direct warp's difference from the template: whether its peak is
    brighter than any PSF mismatch of what the template holds there could make it.  A
    source of template flux ``F`` peaks at most ``F / (2 pi s^2)`` in a warp whose PSF
    has sigma ``s`` >= ``sharp_sigma``; the template's flux is taken at its 3-sigma upper
    bound and the peak at its 3-sigma lower one, so faint sources seen sharper in one
    epoch are explained and rays on the sky are not."""
    n = candidates.n
    if n == 0:
        return np.zeros(0, dtype=bool)
    fid, y, x = candidates.pixels()
    bbox = diff.bbox
    peaks = _candidate_peaks(fid, y, x, n, diff.image, bbox)
    iy, ix = peaks[:, 1] - bbox.y0, peaks[:, 0] - bbox.x0
    value = diff.image[iy, ix].astype(np.float64)
    noise = np.sqrt(np.maximum(diff.variance[iy, ix].astype(np.float64), 0.0))
    flux = psf_weighted_fluxes(template.image, peaks, bbox, psf_sigma)
    flux_noise = np.sqrt(np.maximum(template.variance[iy, ix].astype(np.float64), 0.0)
                         / float((psf_weights(psf_sigma) ** 2).sum()))
    most = np.maximum(np.nan_to_num(flux, nan=np.inf) + 3.0 * flux_noise, 0.0) / (2.0 * math.pi * config.sharp_sigma**2)
    return np.nan_to_num(value - 3.0 * noise, nan=-np.inf) > most


def _excess_at(diff: MaskedImage, sharper: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The deviation beyond the sharper epochs' (floored at 0) and its variance (two
    epochs' worth) at array indices; NaN outside the arrays."""
    ny, nx = sharper.shape
    inside = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    jy, jx = np.where(inside, iy, 0), np.where(inside, ix, 0)
    value = diff.image[jy, jx].astype(np.float64) - np.maximum(np.nan_to_num(sharper[jy, jx], nan=0.0), 0.0)
    var = 2.0 * diff.variance[jy, jx].astype(np.float64)
    return np.where(inside, value, np.nan), np.where(inside, var, np.nan)


def unexplained_pixels(
    candidates: ArtifactCandidates, diff: MaskedImage, template: MaskedImage, sharper: np.ndarray,
    psf_sigma: float, config: CompareWarpConfig,
) -> np.ndarray:
    """Per candidate pixel (in :meth:`ArtifactCandidates.pixels` order): whether the
    direct warp's deviation from the template there exceeds what the sharper epochs show
    (``sharper``: the largest of their deviations, NaN where none has data) by
    ``sharp_excess_sigma`` and ``sharp_template_fraction`` of the template.  A PSF
    mismatch is largest in the sharpest epochs near a source's core, so the galaxy a ray
    lies on is explained there and the ray is not.  Every pixel of a candidate that
    :func:`unexplained_by_template` keeps is flagged too, so this only adds to it; the
    sharper epochs judge only candidates they cover everywhere."""
    fid, y, x = candidates.pixels()
    if not len(fid):
        return np.zeros(0, dtype=bool)
    bbox = diff.bbox
    iy, ix = y - bbox.y0, x - bbox.x0
    whole = np.bincount(fid, weights=~np.isfinite(sharper[iy, ix]), minlength=candidates.n) == 0
    excess, var = _excess_at(diff, sharper, iy, ix)
    allowance = config.sharp_template_fraction * np.maximum(template.image[iy, ix].astype(np.float64), 0.0)
    with np.errstate(invalid="ignore"):
        beyond = excess - config.sharp_excess_sigma * np.sqrt(np.maximum(var, 0.0)) > allowance
    by_template = unexplained_by_template(candidates, diff, template, psf_sigma, config)
    return by_template[fid] | (whole[fid] & beyond)


def sharper_than_psf(
    candidates: ArtifactCandidates, diff: MaskedImage, sharper: np.ndarray,
    ratios: tuple[float, float, float], n_sigma: float,
) -> np.ndarray:
    """Per candidate: whether its excess over the sharper epochs is sharper than the
    warp's PSF at its peak, ``ratio * (peak - n dpeak) > mean + n dmean`` for the mean of
    some opposite pair of neighbours (``ratios``: PSF neighbour over peak, horizontal,
    vertical, diagonal; LSST's condition 3 for a cosmic ray with ``cond3_fac2`` 1).  A
    change of a source's brightness has the PSF's shape; a ray does not."""
    n = candidates.n
    if n == 0:
        return np.zeros(0, dtype=bool)
    fid, y, x = candidates.pixels()
    bbox = diff.bbox
    iy, ix = y - bbox.y0, x - bbox.x0
    value, _ = _excess_at(diff, sharper, iy, ix)
    first = _largest_per_candidate(fid, np.nan_to_num(value, nan=-np.inf))
    py, px = np.zeros(n, np.int64), np.zeros(n, np.int64)
    py[fid[first]], px[fid[first]] = iy[first], ix[first]
    peak, peak_var = _excess_at(diff, sharper, py, px)
    out = np.zeros(n, dtype=bool)
    for (dy, dx), ratio in zip(((0, 1), (1, 0), (1, 1), (1, -1)), (ratios[0], ratios[1], ratios[2], ratios[2])):
        a, va = _excess_at(diff, sharper, py - dy, px - dx)
        b, vb = _excess_at(diff, sharper, py + dy, px + dx)
        mean, mean_sd = 0.5 * (a + b), 0.5 * np.sqrt(va + vb)
        with np.errstate(invalid="ignore"):  # NaN (off the arrays) compares False
            out |= ratio * (peak - n_sigma * np.sqrt(peak_var)) > mean + n_sigma * mean_sd
    return out


def restrict_candidates(
    candidates: ArtifactCandidates, flags: np.ndarray, bbox: Box, grow: int
) -> ArtifactCandidates:
    """The ``flags`` pixels of ``candidates`` grown by ``grow`` pixels within them, as
    new (8-connected) candidates; those flagged everywhere stay as they are."""
    fid, y, x = candidates.pixels()
    if not flags.any():
        return ArtifactCandidates.empty()
    n_flagged = np.bincount(fid, weights=flags, minlength=candidates.n)
    n_pixels = np.bincount(fid, minlength=candidates.n)
    whole = n_flagged == n_pixels
    part = (n_flagged > 0) & ~whole
    kept = candidates.select(whole)
    if not part.any():
        return kept
    use = part[fid]
    fid, y, x, flags = fid[use], y[use], x[use], flags[use]
    box = Box.enclosing(x, y)
    inside = np.zeros(box.shape, dtype=bool)
    inside[y - box.y0, x - box.x0] = True
    keep = np.zeros(box.shape, dtype=bool)
    keep[y[flags] - box.y0, x[flags] - box.x0] = True
    if grow:
        keep = ndimage.binary_dilation(keep, structure=np.ones((3, 3), bool), iterations=grow, mask=inside)
    labels, n = ndimage.label(keep, structure=np.ones((3, 3), bool))
    spans, ids = _label_runs(labels, box.y0, box.x0)
    return kept.extended(ArtifactCandidates(spans, ids, int(n)))


class EpochSourceFluxes:
    """Every epoch's PSF-weighted flux, and its variance, at each template source: a
    variable is there in the epochs other than the one it deviates in; a transient that
    made its own template source is not.  An epoch's flux is the source's template flux
    (without its bright neighbours' wings) plus its difference from the template there."""

    def __init__(self, template: MaskedImage, sources: TemplateSources, n_epochs: int, psf_sigma: float) -> None:
        self.peaks, self.bbox, self.sigma = sources.peaks, template.bbox, psf_sigma
        self.flux = np.full((n_epochs, len(self.peaks)), np.nan)
        self.variance = np.full((n_epochs, len(self.peaks)), np.nan)
        self._template_flux = sources.flux
        self._template_var = self._at(template.variance)
        self._phi_norm = float((psf_weights(psf_sigma) ** 2).sum())

    def _at(self, image: np.ndarray) -> np.ndarray:
        return image[self.peaks[:, 1] - self.bbox.y0, self.peaks[:, 0] - self.bbox.x0].astype(np.float64)

    def record(self, epoch: int, diff: MaskedImage) -> None:
        """Fluxes of ``epoch`` from its difference from the template (the template's own
        variance taken back out; a locally flat variance over the stamp)."""
        if not len(self.peaks):
            return
        self.flux[epoch] = self._template_flux + psf_weighted_fluxes(diff.image, self.peaks, self.bbox, self.sigma)
        own = self._at(diff.variance) - self._template_var
        self.variance[epoch] = np.where(np.isfinite(own) & (own > 0), own, np.nan) / self._phi_norm

    def others_snr(self, epoch: int, sources: np.ndarray) -> np.ndarray:
        """S/N of the inverse-variance mean flux of each of ``sources`` (indices) over the
        epochs other than ``epoch``; -inf where none has data."""
        f = np.delete(self.flux[:, sources], epoch, axis=0)
        v = np.delete(self.variance[:, sources], epoch, axis=0)
        good = np.isfinite(f) & np.isfinite(v) & (v > 0)
        w = np.where(good, 1.0 / np.where(good, v, 1.0), 0.0)
        total = w.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (np.where(good, f, 0.0) * w).sum(axis=0) / total
            return np.where(total > 0, mean * np.sqrt(total), -np.inf)


def filter_artifacts(
    candidates: ArtifactCandidates,
    epoch_count: np.ndarray,
    n_image: np.ndarray,
    bbox: Box,
    config: CompareWarpConfig,
    template_footprints: Footprints | None = None,
    core: np.ndarray | None = None,
    preserve: np.ndarray | None = None,
    uncontained: np.ndarray | None = None,
) -> ArtifactCandidates:
    """Keep the candidates that are transient: more than ``spatialThreshold`` of their
    pixels deviate in at least one but at most the effective maximum number of epochs
    (LSST: from the footprint's mean epoch count; with ``local_epoch_rule``: from each
    pixel's own count, the fraction taken over the pixels deep enough to decide); then
    rescue those lying wholly inside one template footprint (LSST ``filterArtifacts``).

    ``core`` (one flag per candidate pixel, in :meth:`ArtifactCandidates.pixels` order)
    marks the pixels above the detection seed threshold: with hysteresis detection only
    they take part in the containment test, so a bright star's residual keeps LSST's
    protection although its footprint now reaches into the star's wings.

    ``preserve`` (one flag per candidate) keeps the flagged ones out too: the variable
    sources of :func:`match_variable_sources`; ``uncontained`` (one flag per candidate)
    exempts the flagged ones from the containment rescue: those sharper than any
    source (:func:`sharper_than_psf`)."""
    if candidates.n == 0:
        return candidates
    fid, y, x = candidates.pixels()
    iy, ix = y - bbox.y0, x - bbox.x0
    outlier_n = epoch_count[iy, ix].astype(np.int64)
    total_n = n_image[iy, ix].astype(np.float64)
    n_pix = np.bincount(fid, minlength=candidates.n).astype(np.float64)
    if config.local_epoch_rule:
        eff_max = _effective_max_epochs(total_n, config)  # per pixel
        judged = eff_max >= 1
    else:
        mean_total = np.bincount(fid, weights=total_n, minlength=candidates.n) / np.maximum(n_pix, 1)
        eff_max = _effective_max_epochs(mean_total, config)[fid]  # per footprint
        judged = np.ones(len(fid), dtype=bool)
    transient = judged & (outlier_n > 0) & (outlier_n <= eff_max)
    n_judged = np.bincount(fid, weights=judged, minlength=candidates.n)
    frac = np.bincount(fid, weights=transient, minlength=candidates.n) / np.maximum(n_judged, 1)
    keep = frac > config.spatial_threshold
    use = _seed_pixels(fid, candidates.n, core)
    if preserve is not None:
        keep &= ~preserve
    if template_footprints is not None and keep.any():
        labels, cfid = template_footprints.labels[iy, ix][use], fid[use]
        first = np.full(candidates.n, -1, dtype=np.int64)
        np.maximum.at(first, cfid, labels)
        lowest = np.full(candidates.n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(lowest, cfid, labels)
        contained = (lowest == first) & (lowest > 0)
        if uncontained is not None:
            contained &= ~uncontained
        keep &= ~contained
    return candidates.select(keep)


def difference_into(
    handle: WarpHandle, template: MaskedImage, config: CompareWarpConfig, diff: MaskedImage
) -> None:
    """``diff`` := warp - template over the patch (§7.3c): the warp's variance rescaled
    to its measured noise, plus the template's; the warp's mask; NaN / NO_DATA where the
    warp has no pixels.  Writes into ``diff``'s arrays, so one buffer serves every warp;
    the warp itself is only read."""
    bbox = diff.bbox
    planes = diff.planes
    inter = bbox.intersection(handle.bbox)
    if inter != bbox:
        diff.image.fill(np.nan)
        diff.mask.fill(planes.bitmask("NO_DATA"))
        diff.variance.fill(np.inf)
    if inter.is_empty():
        return
    section = handle.read(inter).masked_image
    factor = 1.0
    if config.do_scale_warp_variance:
        try:
            factor = measure_variance_scale(section, config.scale_warp_variance)
        except Exception as exc:  # noqa: BLE001 - LSST: warn and go on unscaled
            logger.warning("visit %d: variance not rescaled: %s", handle.visit, exc)
    sl = inter.slices(bbox)
    np.subtract(section.image, template.image[sl], out=diff.image[sl])
    mask = section.mask
    if section.planes != planes:
        mask, _ = remap_mask(mask, section.planes, planes)
    diff.mask[sl] = mask
    np.multiply(section.variance, np.float32(factor), out=diff.variance[sl])
    diff.variance[sl] += template.variance[sl]


def find_artifacts(
    template: Exposure,
    psf_matched_handles: Sequence[WarpHandle | None],
    config: CompareWarpConfig = CompareWarpConfig(),
    direct_handles: Sequence[WarpHandle | None] | None = None,
) -> FindArtifactsResult:
    """Artifact masks for every warp (LSST ``findArtifacts``, §7.3 step 3).

    Pass 1 detects >7.5 sigma deviations of each PSF-matched warp from the template and
    counts, per pixel, the epochs deviating (``epoch_count``) and the epochs with data
    (``n_image``); pass 2 keeps the candidates that deviate in few epochs
    (:func:`filter_artifacts`).  With ``direct_handles`` (aligned with the PSF-matched
    ones) and ``do_clip_sharp_artifacts``, pass 1 also detects sharp deviations of each
    direct warp that the template cannot explain (:func:`unexplained_by_template`),
    counted in their own epoch count and judged by the same rules in pass 2.
    """
    t0 = time.perf_counter()
    bbox = template.bbox
    planes = standard_planes()
    template_fp = detect_template_footprints(template, config) if config.do_preserve_contained_by_source else None
    sigma = _psf_sigma(template.psf)
    sources = template_sources(template, sigma, config) if config.do_preserve_variable_sources else None
    epoch_count = np.zeros(bbox.shape, dtype=np.int32)
    n_image = np.zeros(bbox.shape, dtype=np.int32)
    n_warps = len(psf_matched_handles)
    if direct_handles is not None and len(direct_handles) != n_warps:
        raise ValueError(f"{len(direct_handles)} direct warps for {n_warps} PSF-matched ones")
    sharp_handles = direct_handles if config.do_clip_sharp_artifacts else None
    sharp_count = None if sharp_handles is None else np.zeros(bbox.shape, dtype=np.int32)
    passes: list[list[_Candidates | None]] = [[None] * n_warps, [None] * n_warps]  # PSF-matched, sharp
    fluxes = None if sources is None else EpochSourceFluxes(template.masked_image, sources, n_warps, sigma)
    order = list(range(n_warps))
    sharper = None  # per pixel, the largest deviation of the sharper direct warps done so far
    cores = [_WarpCore()] * n_warps
    if sharp_handles is not None and config.sharp_compare_sharper_epochs:
        cores = [_warp_core(h, template.wcs) for h in sharp_handles]
        order.sort(key=lambda j: cores[j].sigma)
        sharper = np.full(bbox.shape, np.nan, dtype=np.float32)
    no_data_spans: list[np.ndarray] = [empty_spans()] * n_warps
    edge_spans: list[np.ndarray] = [empty_spans()] * n_warps
    whole = spans_from_mask(np.ones(bbox.shape, bool), bbox)
    bad_for_count = np.int32(planes.bitmask("NO_DATA", "BAD", "SAT"))
    unknown = np.int32(planes.bitmask("NO_DATA", "BAD", "SAT", "SUSPECT", "CR", "INTRP"))
    diff = MaskedImage.empty(bbox, planes=planes)
    finite = np.empty(bbox.shape, dtype=bool)
    for i in order:
        handle = psf_matched_handles[i]
        if handle is None:
            no_data_spans[i] = whole
            continue
        difference_into(handle, template.masked_image, config, diff)
        np.isfinite(diff.image, out=finite)
        n_image += finite & ((diff.mask & bad_for_count) == 0)
        if fluxes is not None:
            fluxes.record(i, diff)
        passes[0][i] = _detect_candidates(diff, sigma, config.detect, config, epoch_count, fluxes)
        no_data_spans[i] = spans_from_mask(~finite, bbox)
        edge_spans[i] = spans_from_mask((diff.mask & np.int32(planes.bitmask("EDGE"))) != 0, bbox)
        direct = None if sharp_handles is None else sharp_handles[i]
        if direct is not None and sharp_count is not None:
            difference_into(direct, template.masked_image, config, diff)
            passes[1][i] = _detect_candidates(
                diff, config.sharp_sigma, config.sharp_detect, config, sharp_count, fluxes,
                explain=(template.masked_image, sigma), sharper=None if sharper is None else (sharper, cores[i].ratios),
            )
            if sharper is not None:
                # what a sharper warp does not know (saturated cores, repaired pixels) explains nothing
                diff.image[(diff.mask & unknown) != 0] = np.nan
                np.fmax(sharper, diff.image, out=sharper)
    alt_masks: list[AltMask] = []
    kept: list[ArtifactCandidates | None] = [None] * n_warps
    for i in range(n_warps):
        for found, count in zip((passes[0][i], passes[1][i]), (epoch_count, sharp_count)):
            if found is None or count is None:
                continue
            cands = found.candidates
            if cands.n:
                preserve = None
                if fluxes is not None and found.on_source is not None and (found.on_source >= 0).any():
                    preserve = found.on_source >= 0
                    preserve[preserve] = fluxes.others_snr(i, found.on_source[preserve]) >= config.variable_min_template_snr
                cands = filter_artifacts(cands, count, n_image, bbox, config, template_fp, found.core, preserve, found.sharp)
            kept[i] = cands if kept[i] is None else kept[i].extended(cands)
        clipped = kept[i].spans if kept[i] is not None else empty_spans()
        alt_masks.append(AltMask(clipped=clipped, no_data=no_data_spans[i], edge=edge_spans[i]))
    n_clipped = sum(c.n for c in kept if c is not None)
    logger.info("found %d artifacts in %d warps in %.2fs", n_clipped, n_warps, time.perf_counter() - t0)
    visits = [None if h is None else int(h.visit) for h in psf_matched_handles]
    return FindArtifactsResult(alt_masks, epoch_count, n_image, kept, template_fp, visits)


@dataclass
class _Candidates:
    """One warp's candidates from one difference, with their seed flags and matches."""

    candidates: ArtifactCandidates
    core: np.ndarray | None = None
    on_source: np.ndarray | None = None
    sharp: np.ndarray | None = None
    """Per candidate: sharper than the warp's PSF, so neither a variable nor rescued by
    containment in a template source."""


def _detect_candidates(
    diff: MaskedImage,
    sigma: float,
    detect: DetectionConfig,
    config: CompareWarpConfig,
    count: np.ndarray,
    fluxes: EpochSourceFluxes | None,
    explain: tuple[MaskedImage, float] | None = None,
    sharper: tuple[np.ndarray, tuple[float, float, float]] | None = None,
) -> _Candidates:
    """Detect on ``diff`` (``sigma``: the smoothing scale), prefilter, keep only those the
    template cannot explain (``explain``: template and its PSF sigma; with ``sharper``,
    the sharper epochs' largest deviation and this warp's PSF neighbour ratios, only
    their pixels that it cannot explain either), add them to the epoch ``count`` and
    match them with the template's sources (not those sharper than this warp's PSF)."""
    bbox = diff.bbox
    result = detect_footprints(diff, sigma, detect)
    fp = result.positive
    if result.negative is not None:
        fp = result.negative if fp is None else fp.merge(result.negative)
    cands = candidates_from_footprints(fp) if fp is not None else ArtifactCandidates.empty()
    if config.do_prefilter_artifacts:
        cands = prefilter_artifacts(cands, diff.mask, bbox, diff.planes, config)
    if explain is not None and cands.n:
        if sharper is None:
            cands = cands.select(unexplained_by_template(cands, diff, explain[0], explain[1], config))
        else:
            flags = unexplained_pixels(cands, diff, explain[0], sharper[0], explain[1], config)
            cands = restrict_candidates(cands, flags, bbox, config.sharp_grow)
    out = _Candidates(cands)
    if cands.n:
        _, y, x = cands.pixels()
        count[y - bbox.y0, x - bbox.x0] += 1
        if result.seeds is not None:
            out.core = result.seeds[y - bbox.y0, x - bbox.x0]
        if fluxes is not None:
            out.on_source = match_variable_sources(cands, diff.image, bbox, fluxes.peaks, fluxes.sigma, config, out.core)
        if sharper is not None:
            out.sharp = sharper_than_psf(cands, diff, sharper[0], sharper[1], config.sharp_shape_sigma)
            if out.on_source is not None:
                out.on_source[out.sharp] = -1
    return out


# --------------------------------------------------------------------------------------
# the whole task
# --------------------------------------------------------------------------------------


def with_psf_matched_polygons(direct: WarpHandle, psf_matched: WarpHandle | None) -> WarpHandle:
    """The direct warp with its ccd rows' valid polygons replaced by the (shrunk) ones of
    the matching PSF-matched warp's rows, for the coadd PSF (LSST doUsePsfMatchedPolygons)."""
    if psf_matched is None or direct.coadd_inputs is None or psf_matched.coadd_inputs is None:
        return direct
    polygons = {row.id: row.valid_polygon for row in psf_matched.coadd_inputs.ccds}
    direct_ids = {row.id for row in direct.coadd_inputs.ccds}
    missing = sorted(set(polygons) - direct_ids)
    if missing:
        raise ValueError(f"visit {direct.visit}: PSF-matched ccd rows {missing} are not in the direct warp")
    rows = [row.with_valid_polygon(polygons.get(row.id, row.valid_polygon)) for row in direct.coadd_inputs.ccds]
    return replace(direct, coadd_inputs=direct.coadd_inputs.with_ccds(rows))


def _match_psf_matched(
    direct: Sequence[WarpHandle], psf_matched: Sequence[WarpHandle | None]
) -> list[WarpHandle | None]:
    by_visit = {h.visit: h for h in psf_matched if h is not None}
    return [by_visit.get(h.visit) for h in direct]


def compare_warp_assemble(
    direct_handles: Sequence[WarpHandle],
    psf_matched_handles: Sequence[WarpHandle | None],
    patch_bbox: Box,
    tract_wcs: WCS | None,
    config: CompareWarpConfig = CompareWarpConfig(),
    *,
    template: Exposure | None = None,
) -> CompareWarpResult:
    """CompareWarp coadd of the direct warps (§7.3): weights, template, artifacts, then a
    mean with CLIPPED inputs excluded and warp EDGE areas flagged on the coadd."""
    weights = compute_weights(direct_handles, config, patch_bbox=patch_bbox)
    used = [h for h, _ in weights]
    if template is None:
        template = build_template(psf_matched_handles, patch_bbox, tract_wcs, config.assemble_static_sky_model)
    matched = _match_psf_matched(used, psf_matched_handles)
    found = find_artifacts(template, matched, config, direct_handles=used)
    weights = [(with_psf_matched_polygons(h, m), w) for (h, w), m in zip(weights, matched)]
    result: AssembleResult = assemble(
        weights, patch_bbox, tract_wcs, config, alt_masks=found.alt_masks, extra_bad_mask_planes=("CLIPPED",)
    )
    alt_by_visit = {h.visit: a for h, a in zip(used, found.alt_masks) if a is not None}
    metadata = dict(result.metadata)
    metadata["COADD_NCLIPPED_FOOTPRINTS"] = int(sum(c.n for c in found.candidates if c is not None))
    return CompareWarpResult(result.coadd, result.n_image, template, alt_by_visit, found.epoch_count, metadata)
