"""Score a coadd against the simulator's truth.

The pipeline never sees the truth; this module does, to measure what artifact
rejection achieved on one patch:

* **artifact pixels** of a direct warp are those where the noise-free artifact (trail,
  ghost, asteroid or cosmic ray), rendered by the simulator on the CCD and warped like
  the calexp, adds more than ``threshold`` times the warp's own per-pixel noise, on
  pixels the coadd could use (finite, none of the final assembly's bad planes) and at
  least ``min_epochs`` visits deep (with two, no clipping rule can tell the transient
  from the static sky; those pixels are counted apart).  The
  score is the fraction of them CLIPPED (or set NO_DATA) in that warp's alternative
  mask.  Cosmic-ray pixels the ISR flagged CR were repaired in the calexp and are
  counted apart (the ISR's share); only the charge it left is warped and scored.
* **leak**: the artifacts' contribution to the coadd, obtained by assembling the
  truth-artifact warps with the very weights, masks and alternative masks of the final
  assembly (a MEAN is linear in its inputs, so this is exact), summed over the artifact
  pixels and compared with the coadd's noise there.
* **false clips**: stars (static or variable) with a CLIPPED pixel within ``2 FWHM`` of
  their centre in a warp whose artifacts do not come near them.
* **photometry**: aperture fluxes of isolated, unsaturated stars in the coadd, corrected
  to total with the coadd PSF, against the truth flux (variables: the weighted mean of
  their per-visit fluxes with the coadd weights).
* **noise**: robust standard deviation of ``image / sqrt(variance)`` over source-free
  full-depth pixels; the warps' variance planes carry each pixel's variance (the
  Lanczos kernel's sum of squared weights), and visits are independent, so the
  expectation is 1 whatever the pixel-to-pixel correlation of the warped noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from ..assemble import AltMask, AssembleCoaddConfig, WarpHandle, assemble
from ..assemble.alt_masks import spans_to_mask
from ..exposure import Exposure
from ..geom import Box
from ..image import MaskedImage
from ..photocalib import PhotoCalib
from ..warp import MakeWarpConfig, make_direct_warp
from .render import SOURCE_DTYPE, RenderOptions, render_electrons
from .scene import mag_to_njy, variable_mag
from .survey import SurveyPlan

__all__ = [
    "ARTIFACT_KINDS",
    "PatchTruth",
    "CoaddScore",
    "artifact_electrons",
    "patch_truth",
    "score_coadd",
]

ARTIFACT_KINDS = ("trail", "ghost", "asteroid", "cosmic_ray")
"""Kinds of transient the scores are split by."""

_OPTIONS = RenderOptions(sources=True, sky=False, artifacts=True, flat=False, dark=False, noise=False)
_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def artifact_electrons(plan: SurveyPlan, expnum: int, detector: str) -> dict[str, np.ndarray]:
    """Noise-free electrons (unit flat, assembled CCD frame) of each transient kind on one
    CCD of one visit; kinds absent from it are left out."""
    task = plan.ccd_task(expnum, detector)
    kinds = dict(zip(np.asarray(plan.catalog["id"]).tolist(), np.asarray(plan.catalog["kind"]).tolist()))
    asteroids = task.sources[[kinds.get(int(i)) == "asteroid" for i in task.sources["id"]]]
    no_rays = task.artifacts.model_copy(update={"cosmic_ray_rate": 0.0, "min_cosmic_rays_per_ccd": 0})
    bare = dataclasses.replace(task, sky_e=0.0, sources=np.zeros(0, SOURCE_DTYPE), trails=(), ghosts=(), artifacts=no_rays)
    variants = {
        "trail": dataclasses.replace(bare, trails=task.trails),
        "ghost": dataclasses.replace(bare, ghosts=task.ghosts),
        "asteroid": dataclasses.replace(bare, sources=asteroids),
        # the same random stream as the real render, so the same tracks
        "cosmic_ray": dataclasses.replace(bare, artifacts=task.artifacts),
    }
    present = {
        "trail": bool(task.trails),
        "ghost": bool(task.ghosts),
        "asteroid": len(asteroids) > 0,
        "cosmic_ray": task.exposure.dark_time > 0,
    }
    out: dict[str, np.ndarray] = {}
    for kind, variant in variants.items():
        if present[kind]:
            charge, _, _ = render_electrons(variant, _OPTIONS)
            if charge.any():
                out[kind] = charge
    return out


@dataclass
class PatchTruth:
    """What the simulator knows about one patch, on the coadd's pixel grid."""

    bbox: Box
    tract_wcs: WCS
    artifacts: dict[int, dict[str, np.ndarray]]
    """visit -> kind -> noise-free artifact (nJy per pixel) on ``bbox`` (0 where none)."""
    seeing_px: dict[int, float]
    """visit -> PSF FWHM in patch pixels."""
    sources: np.ndarray
    """Every truth source in or near the patch: x, y (patch pixels), kind, flux (nJy),
    bright (saturating), hlr_px, and per-visit fluxes of variables."""
    variable_flux: dict[int, dict[int, float]] = field(default_factory=dict)
    """source id -> visit -> flux (nJy) of the variable stars."""
    isr_cosmic_rays: tuple[int, int] = (0, 0)
    """Calexp pixels where a cosmic ray adds more than 1 sigma, and how many of them the
    ISR flagged CR (and repaired), over the calexps given; pixels it interpolated for
    another reason (a bad column) are not counted."""


_TRUTH_DTYPE = np.dtype([("id", "i8"), ("x", "f8"), ("y", "f8"), ("kind", "U8"), ("flux", "f8"), ("bright", "?"), ("hlr_px", "f8")])


def patch_truth(
    plan: SurveyPlan,
    calexps: Mapping[int, Sequence[Exposure]],
    bbox: Box,
    tract_wcs: WCS,
    warp_config: MakeWarpConfig | None = None,
) -> PatchTruth:
    """Truth of a patch: the artifacts warped like ``calexps`` (visit -> its calexps, each
    with ``visit_info.detector_name``) plus the sources' patch positions and fluxes.

    Cosmic rays the ISR flagged CR were repaired in the calexp, and pixels it interpolated
    for another reason (INTRP: bad columns, saturation) hold none of their charge, so only
    the charge of the other pixels is warped: what the warps still hold.
    """
    band = plan.config.observing.band
    by_expnum = {e.expnum: e for e in plan.science}
    artifacts: dict[int, dict[str, np.ndarray]] = {}
    seeing: dict[int, float] = {}
    cr_significant = cr_flagged = 0
    tract_scale = float(np.sqrt(abs(np.linalg.det(tract_wcs.pixel_scale_matrix)))) * 3600.0
    for visit, exposures in calexps.items():
        exp = by_expnum[visit]
        seeing[visit] = exp.conditions.seeing_fwhm_arcsec / tract_scale
        njy_per_e = float(mag_to_njy(20.0) / exp.counts_e(20.0))
        per_kind: dict[str, list[Exposure]] = {}
        for calexp in exposures:
            name = calexp.visit_info.detector_name if calexp.visit_info is not None else None
            if name is None:
                raise ValueError(f"visit {visit}: a calexp has no detector name")
            for kind, charge in artifact_electrons(plan, visit, name).items():
                if charge.shape != calexp.bbox.shape:
                    raise ValueError(f"visit {visit} {name}: render {charge.shape} != calexp {calexp.bbox.shape}")
                if kind == "cosmic_ray":
                    planes = calexp.planes
                    flagged = (calexp.mask & planes.bitmask("CR")) != 0 if "CR" in planes else np.zeros(charge.shape, bool)
                    # pixels the ISR interpolated for another reason (a bad column, saturation)
                    # no longer hold the ray's charge either
                    replaced = ((calexp.mask & planes.bitmask("INTRP")) != 0) & ~flagged if "INTRP" in planes else np.zeros_like(flagged)
                    calibration = calexp.photo_calib.calibration_mean if calexp.photo_calib is not None else 1.0
                    loud = charge * (njy_per_e / calibration) > np.sqrt(np.where(calexp.variance > 0, calexp.variance, np.inf))
                    loud &= ~replaced
                    cr_significant += int(loud.sum())
                    cr_flagged += int((loud & flagged).sum())
                    charge = np.where(flagged | replaced, np.float32(0.0), charge)
                mi = MaskedImage(charge * np.float32(njy_per_e), np.zeros(charge.shape, np.int32),
                                 np.zeros(charge.shape, np.float32), xy0=calexp.bbox.xy0)
                per_kind.setdefault(kind, []).append(
                    Exposure(mi, wcs=calexp.wcs, psf=calexp.psf, photo_calib=PhotoCalib(1.0), visit_info=calexp.visit_info)
                )
        images: dict[str, np.ndarray] = {}
        for kind, truth_calexps in per_kind.items():
            warp = make_direct_warp(truth_calexps, bbox, tract_wcs, _no_coverage_cut(warp_config), visit=visit)
            if warp is None:
                continue
            image = _place(warp.image, warp.bbox, bbox, 0.0)
            image[~np.isfinite(image)] = 0.0
            if image.any():
                images[kind] = image
        artifacts[visit] = images
    sources, variable_flux = _sources(plan, bbox, tract_wcs, tract_scale, band)
    return PatchTruth(bbox, tract_wcs, artifacts, seeing, sources, variable_flux, (cr_significant, cr_flagged))


def _no_coverage_cut(config: MakeWarpConfig | None) -> MakeWarpConfig:
    cfg = config or MakeWarpConfig()
    return cfg.model_copy(update={"min_coverage_fraction": 0.0})


def _sources(plan: SurveyPlan, bbox: Box, tract_wcs: WCS, tract_scale: float, band: str) -> tuple[np.ndarray, dict[int, dict[int, float]]]:
    cat = plan.catalog
    kind = np.asarray(cat["kind"]).astype(str)
    keep = kind != "asteroid"
    x, y = tract_wcs.all_world2pix(np.asarray(cat["ra"], float), np.asarray(cat["dec"], float), 0)
    margin = 50
    keep &= (x > bbox.x0 - margin) & (x < bbox.x1 + margin) & (y > bbox.y0 - margin) & (y < bbox.y1 + margin)
    idx = np.flatnonzero(keep)
    out = np.zeros(len(idx), _TRUTH_DTYPE)
    out["id"] = np.asarray(cat["id"])[idx]
    out["x"], out["y"] = x[idx], y[idx]
    out["kind"] = kind[idx]
    out["flux"] = np.asarray(cat[f"{band}_flux_nJy"], float)[idx]
    out["bright"] = np.asarray(cat["bright"], bool)[idx]
    hlr = np.nan_to_num(np.asarray(cat["half_light_radius_arcsec"], float)[idx], nan=0.0)
    out["hlr_px"] = hlr / tract_scale
    variable_flux: dict[int, dict[int, float]] = {}
    for i in idx[kind[idx] == "variable"]:
        row = cat[int(i)]
        variable_flux[int(row["id"])] = {
            e.expnum: float(mag_to_njy(variable_mag(row, band, e.mjd_mid))) for e in plan.science
        }
    return out, variable_flux


def _place(array: np.ndarray, src: Box, dst: Box, fill: float) -> np.ndarray:
    """``array`` (on ``src``) copied onto a new array over ``dst``, ``fill`` elsewhere."""
    out = np.full(dst.shape, fill, dtype=np.float32 if array.dtype.kind == "f" else array.dtype)
    common = src.intersection(dst)
    if common.is_empty():
        return out
    out[common.slices(dst)] = array[common.slices(src)]
    return out


@dataclass
class KindScore:
    """Artifact pixels of one kind, summed over the warps."""

    pixels: int = 0
    rejected: int = 0
    shallow: int = 0  # artifact pixels where fewer than min_epochs visits have data (not scored)
    leak_njy: float = 0.0
    leak_sigma: float = 0.0
    plain_mean_leak_njy: float = 0.0
    objects: int = 0  # connected artifacts (8-connected in the coadd) with a scored pixel
    objects_over: int = 0  # of them, those whose own residual exceeds ``object_limit`` sigma
    worst_object_sigma: float = 0.0  # the largest residual of one object (sigma of the coadd)
    left: list[tuple[float, float, float, int]] = field(default_factory=list)
    """(x, y, sigma, pixels) of each object over the limit: its centroid (patch pixels),
    residual and size, the worst first (where to look)."""

    @property
    def fraction(self) -> float:
        return self.rejected / self.pixels if self.pixels else float("nan")


@dataclass
class CoaddScore:
    """Truth scores of one coadd (see the module docstring for the definitions)."""

    method: str
    threshold_sigma: float
    kinds: dict[str, KindScore]
    n_static: int
    n_variable: int
    static_false_clips: int
    variable_false_clips: int
    false_clip_pixels: int
    excluded_star_warps: int
    static_phot_offset: float
    n_static_phot: int
    variable_phot_offset: float
    n_variable_phot: int
    noise_ratio: float
    n_noise_pixels: int
    clipped_pixels: int
    isr_cosmic_rays: tuple[int, int] = (0, 0)
    object_limit: float = 3.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_fraction(self) -> float:
        """Rejected fraction of trail, ghost and asteroid pixels together."""
        ks = [self.kinds[k] for k in ("trail", "ghost", "asteroid") if k in self.kinds]
        n = sum(k.pixels for k in ks)
        return sum(k.rejected for k in ks) / n if n else float("nan")

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs for a side-by-side table."""
        out = []
        for kind in ARTIFACT_KINDS:
            k = self.kinds.get(kind)
            if k is None or k.pixels + k.shallow == 0:
                continue
            shallow = f" (+{k.shallow} where < 3 visits)" if k.shallow else ""
            out.append((f"{kind} pixels > {self.threshold_sigma:g} sigma rejected", f"{k.rejected}/{k.pixels} = {100 * k.fraction:.2f}%{shallow}"))
            out.append((f"{kind} flux left in coadd", f"{k.leak_njy:.0f} nJy = {k.leak_sigma:+.2f} sigma (plain mean: {k.plain_mean_leak_njy:.0f})"))
            if k.objects > 1:
                where = f" at x={k.left[0][0]:.0f}, y={k.left[0][1]:.0f}" if k.left else ""
                out.append((f"{kind}s left above {self.object_limit:g} sigma in the coadd, each",
                            f"{k.objects_over}/{k.objects} (worst {k.worst_object_sigma:+.2f} sigma{where})"))
        n_cr, n_flagged = self.isr_cosmic_rays
        if n_cr:
            out.insert(0, ("cosmic-ray calexp pixels > 1 sigma flagged CR by ISR", f"{n_flagged}/{n_cr} = {100 * n_flagged / n_cr:.2f}%"))
        out += [
            ("static stars with a false clip", f"{self.static_false_clips}/{self.n_static}"),
            ("variable stars with a false clip", f"{self.variable_false_clips}/{self.n_variable}"),
            ("false-clip pixels near stars", str(self.false_clip_pixels)),
            ("static-star photometry, median offset", f"{100 * self.static_phot_offset:+.2f}% ({self.n_static_phot} stars)"),
            ("variable-star photometry vs mean flux", f"{100 * self.variable_phot_offset:+.2f}% ({self.n_variable_phot} stars)"),
            ("noise: robust std of image/sqrt(var)", f"{self.noise_ratio:.3f} ({self.n_noise_pixels} px; expected 1)"),
            ("CLIPPED coadd pixels", str(self.clipped_pixels)),
        ]
        return out


def _usable(warp: Exposure, bad_planes: Sequence[str]) -> np.ndarray:
    planes = warp.planes
    bits = planes.bitmask(*[p for p in bad_planes if p in planes])
    return np.isfinite(warp.image) & ((warp.mask & bits) == 0) & np.isfinite(warp.variance) & (warp.variance > 0)


def score_coadd(
    method: str,
    coadd: Exposure,
    warps: Mapping[int, Exposure],
    alt_masks: Mapping[int, AltMask],
    truth: PatchTruth,
    config: AssembleCoaddConfig,
    *,
    threshold: float = 1.0,
    star_radius_fwhm: float = 2.0,
    min_epochs: int = 3,
    object_limit: float = 3.0,
) -> CoaddScore:
    """Truth scores of ``coadd`` made by ``method`` from the direct ``warps`` (visit ->
    warp) with ``alt_masks`` (visit -> alternative mask) and final assembly ``config``;
    each connected artifact whose residual exceeds ``object_limit`` coadd sigma is
    counted as visible."""
    box = truth.bbox
    if coadd.bbox != box:
        raise ValueError(f"coadd box {coadd.bbox} != truth box {box}")
    visits = [int(v) for v in coadd.metadata.get("COADD_VISITS", sorted(warps))]
    weights = [float(w) for w in coadd.metadata.get("COADD_WEIGHTS", [1.0] * len(visits))]
    usable: dict[int, np.ndarray] = {}
    clipped: dict[int, np.ndarray] = {}  # CLIPPED on pixels the coadd could have used
    rejected: dict[int, np.ndarray] = {}  # CLIPPED or NO_DATA (no PSF-matched pixel)
    dropped: dict[int, np.ndarray] = {}  # NO_DATA from the method's alternative mask
    sigma: dict[int, np.ndarray] = {}
    for v in visits:
        w = warps[v]
        u = _place(_usable(w, config.bad_mask_planes).astype(np.uint8), w.bbox, box, 0).astype(bool)
        usable[v] = u
        sigma[v] = np.sqrt(_place(np.where(np.isfinite(w.variance), w.variance, np.inf), w.bbox, box, np.inf))
        alt = alt_masks.get(v)
        clip = np.zeros(box.shape, bool)
        rej = np.zeros(box.shape, bool)
        if alt is not None:
            clip = spans_to_mask(alt.clipped, box) & u
            dropped[v] = spans_to_mask(alt.no_data, box)
            rej = clip | dropped[v]
        clipped[v] = clip
        rejected[v] = rej
    kinds = {k: KindScore() for k in ARTIFACT_KINDS}
    artifact_zone: dict[int, np.ndarray] = {}
    union: dict[str, np.ndarray] = {k: np.zeros(box.shape, bool) for k in ARTIFACT_KINDS}
    extent: dict[str, np.ndarray] = {k: np.zeros(box.shape, bool) for k in ARTIFACT_KINDS}  # > 0.1 sigma
    # where the method has fewer than min_epochs inputs no clipping rule can act (LSST's
    # effective maximum number of epochs is 0 for N <= 2): counted apart.  The inputs are
    # the usable direct-warp pixels the method does not set NO_DATA: CompareWarp drops
    # those whose PSF-matched warp has none (LSST), e.g. within the matching kernel of a
    # CCD edge, so its depth there is what it really stacks
    usable_in = {v: usable[v] & ~dropped[v] if v in dropped else usable[v] for v in visits}
    depth = np.sum([usable_in[v] for v in visits], axis=0) if visits else np.zeros(box.shape, int)
    deep = depth >= min_epochs
    for v in visits:
        zone = np.zeros(box.shape, bool)
        for kind, image in truth.artifacts.get(v, {}).items():
            significant = (image > threshold * sigma[v]) & usable[v]
            faint = image > 0.1 * sigma[v]
            zone |= faint
            extent[kind] |= faint & usable[v] & deep
            ks = kinds[kind]
            ks.shallow += int((significant & ~deep).sum())
            significant &= deep
            ks.pixels += int(significant.sum())
            ks.rejected += int((significant & rejected[v]).sum())
            union[kind] |= significant
        artifact_zone[v] = zone
    # what each kind leaves in the coadd: the same final assembly of the truth artifacts
    coadd_sigma = np.sqrt(np.where(np.isfinite(coadd.variance), coadd.variance, 0.0))
    for kind in ARTIFACT_KINDS:
        if not union[kind].any():
            continue
        leak = _assemble_truth(kind, visits, weights, warps, alt_masks, truth, config, box, coadd.wcs)
        plain = _assemble_truth(kind, visits, weights, warps, None, truth, config, box, coadd.wcs)
        sel = union[kind] & np.isfinite(leak)
        ks = kinds[kind]
        ks.leak_njy = float(np.nansum(leak[sel]))
        ks.plain_mean_leak_njy = float(np.nansum(plain[sel & np.isfinite(plain)]))
        noise = float(np.sqrt(np.sum(coadd_sigma[sel] ** 2)))
        ks.leak_sigma = ks.leak_njy / noise if noise > 0 else float("nan")
        _score_objects(ks, extent[kind] | union[kind], union[kind], np.where(np.isfinite(leak), leak, 0.0), coadd_sigma, object_limit,
                       xy0=(box.x0, box.y0))
    stars = truth.sources[np.isin(truth.sources["kind"], ["star", "variable"])]
    false = _false_clips(stars, visits, clipped, usable, artifact_zone, truth, star_radius_fwhm)
    static_off, n_static_phot, var_off, n_var_phot, phot_rows = _photometry(coadd, truth, visits, weights, usable, rejected)
    noise_ratio, n_noise = _noise_ratio(coadd, truth)
    clipped_bit = coadd.planes.bitmask("CLIPPED")
    return CoaddScore(
        method=method,
        threshold_sigma=threshold,
        kinds={k: s for k, s in kinds.items() if s.pixels or s.shallow},
        n_static=int(np.sum(stars["kind"] == "star")),
        n_variable=int(np.sum(stars["kind"] == "variable")),
        static_false_clips=false["star"],
        variable_false_clips=false["variable"],
        false_clip_pixels=false["pixels"],
        excluded_star_warps=false["excluded"],
        static_phot_offset=static_off,
        n_static_phot=n_static_phot,
        variable_phot_offset=var_off,
        n_variable_phot=n_var_phot,
        noise_ratio=noise_ratio,
        n_noise_pixels=n_noise,
        clipped_pixels=int(((coadd.mask & clipped_bit) != 0).sum()),
        isr_cosmic_rays=truth.isr_cosmic_rays,
        object_limit=object_limit,
        details={"photometry": phot_rows, "false_clip_stars": false["which"]},
    )


def _score_objects(
    ks: KindScore, extent: np.ndarray, scored: np.ndarray, leak: np.ndarray, coadd_sigma: np.ndarray, limit: float,
    xy0: tuple[int, int] = (0, 0),
) -> None:
    """Residual of each artifact: the leak summed over its scored pixels (those of the
    summed score), over the noise of that sum; an artifact is a connected group
    (8-connected) of pixels above 0.1 sigma of a warp.  Many faint artifacts can add up
    to a significant total while each is lost in the noise; what a user sees is one of
    them standing out."""
    labels, n = ndimage.label(extent, structure=np.ones((3, 3), bool))
    if n == 0:
        return
    index = np.arange(1, n + 1)
    has_scored = ndimage.maximum(scored, labels, index).astype(bool)
    flux = ndimage.sum_labels(np.where(scored, leak, 0.0), labels, index)[has_scored]
    noise = np.sqrt(ndimage.sum_labels(np.where(scored, coadd_sigma**2, 0.0), labels, index))[has_scored]
    with np.errstate(divide="ignore", invalid="ignore"):
        significance = np.where(noise > 0, flux / noise, 0.0)
    is_over = np.abs(significance) > limit
    ks.objects = int(has_scored.sum())
    ks.objects_over = int(is_over.sum())
    ks.worst_object_sigma = float(significance[np.argmax(np.abs(significance))]) if len(significance) else 0.0
    over = index[has_scored][is_over]
    if len(over):
        centres = ndimage.center_of_mass(extent, labels, over)
        sizes = ndimage.sum_labels(extent, labels, over)
        rows = [(float(x) + xy0[0], float(y) + xy0[1], float(z), int(n))
                for (y, x), z, n in zip(centres, significance[is_over], sizes)]
        ks.left = sorted(rows, key=lambda r: -abs(r[2]))


def _assemble_truth(
    kind: str,
    visits: Sequence[int],
    weights: Sequence[float],
    warps: Mapping[int, Exposure],
    alt_masks: Mapping[int, AltMask] | None,
    truth: PatchTruth,
    config: AssembleCoaddConfig,
    box: Box,
    wcs: WCS | None,
) -> np.ndarray:
    """The coadd of the truth artifacts of ``kind`` through the final assembly: each warp's
    pixels replaced by its artifact (0 where none), masks and weights unchanged."""
    handles = []
    for v, wt in zip(visits, weights):
        w = warps[v]
        art = truth.artifacts.get(v, {}).get(kind)
        image = np.zeros(w.bbox.shape, np.float32)
        if art is not None:
            image = _place(art, box, w.bbox, 0.0)
        image[~np.isfinite(w.image)] = np.nan
        mi = MaskedImage(image, w.mask.copy(), w.variance.copy(), xy0=w.bbox.xy0, planes=w.planes.copy())
        exp = Exposure(mi, wcs=w.wcs, psf=w.psf, photo_calib=w.photo_calib, visit_info=w.visit_info, metadata=dict(w.metadata))
        handles.append((WarpHandle.from_exposure(exp, visit=v), wt))
    alt = None if alt_masks is None else [alt_masks.get(v) for v in visits]
    cfg = config.model_copy(update={"do_interp": False})
    result = assemble(handles, box, wcs, cfg, alt_masks=alt, extra_bad_mask_planes=("CLIPPED",) if alt is not None else ())
    return result.coadd.image


def _false_clips(
    stars: np.ndarray,
    visits: Sequence[int],
    clipped: Mapping[int, np.ndarray],
    usable: Mapping[int, np.ndarray],
    artifact_zone: Mapping[int, np.ndarray],
    truth: PatchTruth,
    radius_fwhm: float,
) -> dict[str, Any]:
    box = truth.bbox
    yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
    out: dict[str, Any] = {"star": 0, "variable": 0, "pixels": 0, "excluded": 0, "which": []}
    for s in stars:
        hit = False
        for v in visits:
            fwhm = truth.seeing_px[v]
            r = radius_fwhm * fwhm
            x0, x1 = int(math.floor(s["x"] - r)), int(math.ceil(s["x"] + r))
            y0, y1 = int(math.floor(s["y"] - r)), int(math.ceil(s["y"] + r))
            sub = Box(max(x0, box.x0), max(y0, box.y0), min(x1, box.x1), min(y1, box.y1))
            if sub.is_empty():
                continue
            sl = sub.slices(box)
            disk = (xx[sl] - s["x"]) ** 2 + (yy[sl] - s["y"]) ** 2 <= r * r
            if not (disk & usable[v][sl]).any():
                continue
            # artifacts near the star (their clipped footprints are grown): not a false clip
            grow = int(math.ceil(r + 3 * fwhm))
            near = Box(max(x0 - grow, box.x0), max(y0 - grow, box.y0), min(x1 + grow, box.x1), min(y1 + grow, box.y1))
            if artifact_zone[v][near.slices(box)].any():
                out["excluded"] += 1
                continue
            n = int((disk & clipped[v][sl]).sum())
            if n:
                hit = True
                out["pixels"] += n
                out["which"].append((int(s["id"]), str(s["kind"]), int(v), n))
        if hit:
            out[str(s["kind"])] += 1
    return out


def _photometry(
    coadd: Exposure,
    truth: PatchTruth,
    visits: Sequence[int],
    weights: Sequence[float],
    usable: Mapping[int, np.ndarray],
    rejected: Mapping[int, np.ndarray],
    contamination: float = 0.003,
    min_flux: float = 1.0e4,
) -> tuple[float, int, float, int, list[tuple[int, str, float, float]]]:
    """Median fractional offsets of the aperture fluxes of isolated unsaturated stars
    (static, variable) from truth.

    Stars of at least ``min_flux`` nJy (about 21.4 mag, where the aperture noise is
    well under 1 %).  Aperture radius 2 FWHM (the broadest visit's), sky from the median
    of an annulus; corrected to total with the coadd PSF at the star measured the same
    way (the annulus lies on the star's wings) and the coadd's ``PSF_APCORR`` (the light
    beyond the PSF's box).  A star is used when its aperture
    and annulus lie in the box, no pixel of the aperture is NO_DATA, SAT, BAD or EDGE,
    and the light its neighbours could throw into the aperture (Moffat beta 3.5 wings
    beyond their distance to the aperture edge; galaxies counted from 2 half-light radii
    closer) is below ``contamination`` of its flux.  A variable's truth is what the
    weighted mean makes of it: per pixel the coadd-weighted mean of its per-visit fluxes
    over the visits used there, averaged over the aperture with the PSF as weight.
    """
    box = truth.bbox
    src = truth.sources
    fwhm = max(truth.seeing_px.values())
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / 3.5) - 1.0))
    r_ap = 2.0 * fwhm
    r_in, r_out = r_ap + 3.0, r_ap + 10.0
    bad_bits = coadd.planes.bitmask(*[p for p in ("NO_DATA", "SAT", "BAD", "EDGE") if p in coadd.planes])
    rows: list[tuple[int, str, float, float]] = []
    weight = dict(zip(visits, weights))
    for s in src[np.isin(src["kind"], ["star", "variable"]) & ~src["bright"] & (src["flux"] >= min_flux)]:
        x, y = float(s["x"]), float(s["y"])
        if not (box.x0 + r_out + 1 <= x <= box.x1 - r_out - 1 and box.y0 + r_out + 1 <= y <= box.y1 - r_out - 1):
            continue
        d = np.maximum(np.hypot(src["x"] - x, src["y"] - y) - r_ap - 2.0 * src["hlr_px"], 0.0)
        wing = np.clip(src["flux"], 0.0, None) * (1.0 + (d / alpha) ** 2) ** (1.0 - 3.5)
        if float(np.sum(wing[src["id"] != s["id"]])) > contamination * s["flux"]:
            continue
        ix, iy = int(round(x)), int(round(y))
        h = int(math.ceil(r_out)) + 1
        cut = Box(ix - h, iy - h, ix + h, iy + h)
        sl = cut.slices(box)
        img, msk = coadd.image[sl], coadd.mask[sl]
        yy, xx = np.mgrid[cut.y0 : cut.y1 + 1, cut.x0 : cut.x1 + 1]
        rr = np.hypot(xx - x, yy - y)
        ap, ann = rr <= r_ap, (rr >= r_in) & (rr <= r_out)
        if (msk[ap] & bad_bits).any() or not np.isfinite(img[ap | ann]).all():
            continue
        if coadd.psf is None:
            continue
        sky = float(np.median(img[ann]))
        flux = float(np.sum(img[ap] - sky))
        psf = coadd.psf.compute_image(x, y)
        stamp = psf.array / psf.array.sum()
        inter = psf.bbox.intersection(cut)
        prof = np.zeros(img.shape)
        prof[inter.slices(cut)] = stamp[inter.slices(psf.bbox)]
        # the annulus lies on the star's wings: its median takes some of the star's light
        # as sky, from every aperture pixel
        flux /= float(prof[ap].sum() - ap.sum() * np.median(prof[ann]))
        flux *= float(coadd.metadata.get("PSF_APCORR", 1.0))  # light beyond the PSF's box
        if s["kind"] == "variable":
            # what a weighted mean makes of it: per pixel the mean over the visits used
            # there, averaged over the aperture with the PSF's weights
            fluxes = truth.variable_flux[int(s["id"])]
            num = np.zeros(img.shape)
            den = np.zeros(img.shape)
            for v in visits:
                used = usable[v][sl] & ~rejected[v][sl]
                num += weight[v] * fluxes[v] * used
                den += weight[v] * used
            prof *= ap & (den > 0)
            if prof.sum() <= 0:
                continue
            true = float(np.sum(prof * num / np.where(den > 0, den, 1.0)) / prof.sum())
        else:
            true = float(s["flux"])
        rows.append((int(s["id"]), str(s["kind"]), flux, true))
    static = [f / t - 1 for _, k, f, t in rows if k == "star"]
    var = [f / t - 1 for _, k, f, t in rows if k == "variable"]
    return (
        float(np.median(static)) if static else float("nan"), len(static),
        float(np.median(var)) if var else float("nan"), len(var), rows,
    )


def _noise_ratio(coadd: Exposure, truth: PatchTruth) -> tuple[float, int]:
    """Robust std of image/sqrt(variance) away from every truth source and mask."""
    box = truth.bbox
    fwhm = max(truth.seeing_px.values())
    keep = np.isfinite(coadd.image) & np.isfinite(coadd.variance) & (coadd.variance > 0)
    keep &= coadd.mask == 0
    for s in truth.sources:
        # bright sources reach further: radius where a Moffat-ish profile fades into the noise
        r = 4 * fwhm + 3 * s["hlr_px"] + 6 * fwhm * max(0.0, math.log10(max(s["flux"], 1.0) / 1e4))
        near = Box(int(s["x"] - r), int(s["y"] - r), int(math.ceil(s["x"] + r)), int(math.ceil(s["y"] + r))).intersection(box)
        if not near.is_empty():
            keep[near.slices(box)] = False
    # whatever the truth list misses (asteroid, bright trails of charge) is cut by a
    # 5-sigma detection, grown by 2 FWHM
    chi = np.where(keep, coadd.image / np.sqrt(np.where(keep, coadd.variance, 1.0)), 0.0)
    loud = ndimage.binary_dilation(np.abs(chi) > 5, iterations=int(2 * fwhm))
    keep &= ~loud
    vals = chi[keep]
    if vals.size < 100:
        return float("nan"), int(vals.size)
    mad = float(np.median(np.abs(vals - np.median(vals))))
    return 1.4826 * mad, int(vals.size)
