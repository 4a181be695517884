"""Instrument signature removal of one raw CCD (LSST ``IsrTask`` + ``CfhtIsrTask``).

:func:`run_isr` turns one raw MegaPrime HDU (uint16 as stored) into ``postISRCCD``: an
assembled float32 image in ADU with variance (ADU^2) and mask, the assembled-frame WCS,
VisitInfo and a rough PhotoCalib. The steps and their order are those of
ALGORITHMS.md §2.1, each gated by its :class:`IsrConfig` flag. Geometry always comes
from the header (``detector_from_header``), so full-size and small simulated CCDs take
the same path.

Cost: every step is a vectorised pass or a numba kernel over the pixels (or only over
the rows holding a plane of interest); statistics that only feed pixels about to be
interpolated are skipped, since they could not change the result.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numba
import numpy as np
from astropy.io import fits

from coadd_core.calib._stats import clipped_mean, gather_good, quantiles
from coadd_core.camera import Detector, load_camera
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
from coadd_core.interpolate import interpolate_over
from coadd_core.isr.assemble import raw_box, remove_keys
from coadd_core.isr.cfht import cfht_detector, saturation_from_histogram
from coadd_core.isr.config import IsrConfig, cfht_isr_config
from coadd_core.isr.masking import (
    grow_mask,
    mask_border,
    mask_boxes,
    widen_saturation_trails,
)
from coadd_core.isr.overscan import OverscanResult, fit_overscan, overscan_box
from coadd_core.isr.raw import assembled_wcs, visit_info_from_header
from coadd_core.masks import remap_mask, standard_planes
from coadd_core.photocalib import PhotoCalib

__all__ = ["IsrResult", "run_isr", "QA_MASK_PLANES"]

log = logging.getLogger(__name__)

#: Planes left out of the per-amp QA statistics.
QA_MASK_PLANES = ("BAD", "SAT", "SUSPECT", "NO_DATA", "INTRP", "UNMASKEDNAN")

# header keywords that describe the raw file or the raw WCS, not the postISR image
_STRUCTURAL = {
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT",
    "BZERO", "BSCALE", "EXTEND", "EXTNAME", "EXTVER", "INHERIT", "CHECKSUM", "DATASUM",
    "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2", "CRVAL1",
    "CRVAL2", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
    "CDELT1", "CDELT2", "LONPOLE", "LATPOLE", "RADESYS", "EQUINOX", "COMMENT", "HISTORY", "",
}


@dataclass
class IsrResult:
    """``postISRCCD`` and the ISR task metadata (overscans, levels, counts, QA)."""

    exposure: Exposure
    metadata: dict[str, Any] = field(default_factory=dict)
    overscans: dict[str, OverscanResult] = field(default_factory=dict)


# -- calibration checks ---------------------------------------------------------------------
def _check_calibs(
    config: IsrConfig,
    out_box: Box,
    bias: Exposure | None,
    dark: Exposure | None,
    flat: Exposure | None,
) -> None:
    for name, enabled, calib in (
        ("bias", config.do_bias, bias),
        ("dark", config.do_dark, dark),
        ("flat", config.do_flat, flat),
    ):
        if not enabled:
            continue
        if calib is None:
            raise RuntimeError(f"ISR: do_{name} is enabled but no master {name} was given")
        if calib.bbox != out_box:
            raise RuntimeError(
                f"ISR: master {name} covers {calib.bbox}, the exposure {out_box}; "
                "calibrations must match the exposure's box"
            )


def _conformed(calib: Exposure, planes: Any) -> np.ndarray:
    """The calibration's mask in the output's bit convention (no pass when they agree)."""
    if calib.planes is planes or calib.planes == planes:
        return calib.mask
    mask, _ = remap_mask(calib.mask, calib.planes, planes)
    return mask


# -- fused pixel kernels --------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _fused_amp(
    raw: np.ndarray,
    raw_x0: int,
    raw_y0: int,
    model: np.ndarray,
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    x0: int,
    y0: int,
    width: int,
    height: int,
    sat_level: float,
    suspect_level: float,
    sat_bit: int,
    suspect_bit: int,
    do_bias: bool,
    bias: np.ndarray,
    bias_var: np.ndarray,
    bias_mask: np.ndarray,
    do_variance: bool,
    inv_gain: float,
    rn2: float,
    neg_bit: int,
    nan_bit: int,
    do_dark: bool,
    dark: np.ndarray,
    dark_var: np.ndarray,
    dark_mask: np.ndarray,
    dark_scale: float,
    do_flat: bool,
    flat: np.ndarray,
    flat_var: np.ndarray,
    flat_mask: np.ndarray,
    flat_scale: float,
) -> np.ndarray:
    """ISR steps 2, 4-7, 9, 11 and 12 of one amp, pixel by pixel, in the §2.1 order.

    The amp's data section (``height`` x ``width`` from raw (raw_x0, raw_y0)) goes to
    the output box at (x0, y0) of the whole-CCD arrays: float32 minus the per-row
    overscan model; SAT/SUSPECT from the raw value; minus bias (masks OR; its variance
    is superseded by the variance step); var = image/gain + (rn/gain)^2, <= 0 ->
    ``neg_bit``; non-finite with no mask bit -> ``nan_bit``; minus ``dark_scale`` x dark
    (variance += scale^2 Vdark); divided by ``flat_scale`` x flat with the flat variance
    propagated. Loop-invariant switches and branch-free masks let the inner loop
    vectorise over whole-CCD (contiguous) arrays. Returns counts of (SAT, negative
    variance, unmasked NaN) pixels.
    """
    s2 = np.float32(dark_scale * dark_scale)
    ds = np.float32(dark_scale)
    f2 = np.float32(flat_scale * flat_scale)
    fs = np.float32(flat_scale)
    ig = np.float32(inv_gain)
    r2 = np.float32(rn2)
    one = np.float32(1.0)
    n_sat = 0
    n_neg = 0
    n_nan = 0
    for jj in range(height):
        j = y0 + jj
        rj = raw_y0 + jj
        level = np.float32(model[jj])
        for ii in range(width):
            i = x0 + ii
            r = raw[rj, raw_x0 + ii]
            rf = np.float32(r)
            is_sat = rf >= sat_level
            m = mask[j, i] | (sat_bit * is_sat) | (suspect_bit * (rf >= suspect_level))
            n_sat += is_sat
            x = rf - level
            if do_bias:
                x = x - bias[j, i]
                m |= bias_mask[j, i]
            if do_variance:
                v = x * ig + r2
                neg = v <= 0
                m |= neg_bit * neg
                n_neg += neg
            elif do_bias:
                v = one + bias_var[j, i]
            else:
                v = one
            bad = (m == 0) & ~(np.isfinite(x) & np.isfinite(v)) & (nan_bit != 0)
            m |= nan_bit * bad
            n_nan += bad
            if do_dark:
                x = x - ds * dark[j, i]
                v = v + s2 * dark_var[j, i]
                m |= dark_mask[j, i]
            if do_flat:
                inv = one / (fs * flat[j, i])
                q = x * inv
                v = (v + f2 * flat_var[j, i] * q * q) * (inv * inv)
                x = q
                m |= flat_mask[j, i]
            image[j, i] = x
            variance[j, i] = v
            mask[j, i] = m
    counts = np.zeros(3, dtype=np.int64)
    counts[0] = n_sat
    counts[1] = n_neg
    counts[2] = n_nan
    return counts


@numba.njit(cache=True, nogil=True)
def _count_bits(mask: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Number of pixels carrying each of ``bits``, in one pass."""
    counts = np.zeros(bits.size, dtype=np.int64)
    ny, nx = mask.shape
    for j in range(ny):
        for i in range(nx):
            m = mask[j, i]
            if m != 0:
                for k in range(bits.size):
                    if m & bits[k]:
                        counts[k] += 1
    return counts


@numba.njit(cache=True, nogil=True)
def _set_bad(image: np.ndarray, mask: np.ndarray, bad: int, skip: int, value: float) -> int:
    ny, nx = image.shape
    n = 0
    for j in range(ny):
        for i in range(nx):
            m = mask[j, i]
            if (m & bad) != 0 and (m & skip) == 0:
                image[j, i] = value
                n += 1
    return n


# -- the task -------------------------------------------------------------------------------
def _header_metadata(header: fits.Header, remove: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key in out:
            continue
        value = card.value
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
    remove_keys(out, remove)
    return out


def _amp_saturation(config: IsrConfig, amp_level: float, detector_level: float) -> float:
    if math.isfinite(config.saturation):
        return float(config.saturation)
    if math.isfinite(detector_level):
        return detector_level
    return float(amp_level)


def _gain(amp_gain: float, name: str) -> float:
    if not (math.isfinite(amp_gain) and amp_gain > 0):
        log.warning("amp %s: gain %r is not positive; using 1.0", name, amp_gain)
        return 1.0
    return float(amp_gain)


def _qa_stats(image: np.ndarray, mask: np.ndarray, bits: int, config: IsrConfig) -> dict[str, float]:
    values = gather_good(image, mask, bits)
    if values.size == 0:
        return {"mean": math.nan, "median": math.nan, "stdev_clip": math.nan, "n_good": 0}
    q1, med, q3 = (float(q) for q in quantiles(values, (0.25, 0.5, 0.75)))
    _, var, _ = clipped_mean(
        values, config.fallback_num_sigma_clip, config.fallback_num_iter, quartiles=(q1, med, q3)
    )
    return {
        "mean": float(np.mean(values, dtype=np.float64)),
        "median": med,
        "stdev_clip": math.sqrt(var) if math.isfinite(var) and var >= 0 else math.nan,
        "n_good": int(values.size),
    }


def _background_qa(mi: MaskedImage, config: IsrConfig) -> dict[str, float]:
    bits = mi.planes.bitmask("BAD", "SAT", "DETECTED")
    values = gather_good(mi.image, mi.mask, bits)
    if values.size == 0:
        return {}
    sky = float(quantiles(values, (0.5,))[0])
    _, var, _ = clipped_mean(values, 3.0, 3)
    means = []
    size = config.qa_flatness_mesh_size
    for sub in mi.bbox.subregions(size, size):
        part = mi.subset(sub)
        vals = gather_good(part.image, part.mask, bits)
        if vals.size > 1:
            means.append(clipped_mean(vals, 3.0, 3)[0])
    means_arr = np.asarray(means)
    out = {"SKYLEVEL": sky, "SKYSIGMA": math.sqrt(var) if var >= 0 else math.nan}
    if means_arr.size:
        out["FLATNESS_PP"] = float(np.ptp(means_arr))
        out["FLATNESS_RMS"] = float(np.std(means_arr))
    return out


def run_isr(
    raw: np.ndarray,
    header: fits.Header,
    *,
    detector: Detector | None = None,
    bias: Exposure | None = None,
    dark: Exposure | None = None,
    flat: Exposure | None = None,
    defects: Sequence[Box] | None = None,
    config: IsrConfig | None = None,
) -> IsrResult:
    """ISR of one raw CCD HDU (ALGORITHMS.md §2.1-2.3).

    ``raw`` is the HDU's data as stored (``NAXIS2 x NAXIS1``). ``detector`` defaults to
    ``load_camera('MegaPrime').detector_from_header(header)``; ``defects`` (assembled
    boxes) to the detector's. ``config`` defaults to :func:`cfht_isr_config` with bias
    and flat on exactly when those masters are given. A calibration missing for an
    enabled step, or covering another box than the output, raises ``RuntimeError``.
    """
    if config is None:
        config = cfht_isr_config(have_bias=bias is not None, have_flat=flat is not None)
    if detector is None:
        detector = load_camera("MegaPrime").detector_from_header(header)
    raw = np.asarray(raw)
    if raw.shape != (detector.raw_height, detector.raw_width):
        raise ValueError(
            f"{detector.name}: raw frame {raw.shape[::-1]} (x, y) differs from the header's "
            f"{detector.raw_width} x {detector.raw_height}"
        )
    if not config.do_convert_int_to_float and raw.dtype.kind in "iu":
        raise RuntimeError("ISR: integer raw data need do_convert_int_to_float")
    out_box = detector.bbox if config.do_assemble_ccd else raw_box(detector)
    _check_calibs(config, out_box, bias, dark, flat)
    visit_info = visit_info_from_header(header)
    steps: list[str] = []
    meta: dict[str, Any] = {"detector": detector.name, "steps": steps}

    # CfhtIsrTask: one saturation level for the CCD, read off the data
    detector_sat = math.nan
    if config.saturation_from_histogram:
        detector_sat = saturation_from_histogram(raw, header, safe=config.saturation_safe_fraction)
        detector = cfht_detector(detector, detector_sat)
    planes = standard_planes()
    mi = MaskedImage(
        np.empty(out_box.shape, dtype=np.float32),
        np.zeros(out_box.shape, dtype=np.int32),
        np.empty(out_box.shape, dtype=np.float32),
        xy0=out_box.xy0,
        planes=planes,
    )
    image, mask, variance = mi.image, mi.mask, mi.variance
    bad_bit = planes.bitmask("BAD")
    sat_bit = planes.bitmask(config.saturated_mask_name)
    suspect_bit = planes.bitmask(config.suspect_mask_name)
    defect_boxes = tuple(detector.defects if defects is None else defects)
    overscans: dict[str, OverscanResult] = {}
    amp_meta: dict[str, dict[str, Any]] = {}
    rbox = raw_box(detector)
    amp_boxes = {a.name: (a.bbox if config.do_assemble_ccd else a.raw_bbox) for a in detector.amplifiers}
    if not config.do_assemble_ccd:
        # pixels outside every amp box (parallel overscan) keep their raw values
        np.copyto(image, raw, casting="unsafe")
        variance.fill(0.0)

    # Steps 2-12 touch each pixel once: the mask-only steps that do not depend on pixel
    # values (amp and defect boxes, edges) are applied first, then one fused kernel per
    # amp converts, subtracts overscan and bias, sets the variance, masks SAT, negative
    # variance and NaNs, subtracts the dark and divides by the flat, in the §2.1 order.
    # -- step 3 (part): amplifier state and overscan ---------------------------------------
    models: dict[str, np.ndarray] = {}
    levels: dict[str, float] = {}
    for amp in detector.amplifiers:
        target = amp_boxes[amp.name]
        source = amp.raw_data_bbox if config.do_assemble_ccd else target
        raw_view = raw[source.slices(rbox)]
        level = _amp_saturation(config, amp.saturation, detector_sat)
        levels[amp.name] = level
        info: dict[str, Any] = {"saturation": level, "gain": amp.gain, "read_noise": amp.read_noise}
        amp_bad = any(d.contains(amp.bbox) for d in defect_boxes) if config.do_defect else False
        if not amp_bad and raw_view.size:
            lowest = float(raw_view.min())
            all_sat = config.do_saturation and math.isfinite(level) and lowest >= level
            all_sus = config.do_suspect and lowest >= amp.suspect_level
            amp_bad = bool(all_sat or all_sus)
        info["bad_amp"] = amp_bad
        model = np.zeros(source.height, dtype=np.float64)
        if config.do_overscan and not amp_bad:
            obox = overscan_box(amp, config.overscan)
            if obox.is_empty():
                log.warning("amp %s has no serial overscan; not corrected", amp.name)
            else:
                opix = raw[obox.slices(rbox)]
                omasked = opix >= level if (config.do_saturation and math.isfinite(level)) else None
                result, _ = fit_overscan(opix, omasked, config.overscan)
                overscans[amp.name] = result
                info.update(
                    overscan_mean=result.mean,
                    overscan_median=result.median,
                    overscan_sigma=result.sigma,
                    overscan_residual_mean=result.residual_mean,
                    overscan_residual_median=result.residual_median,
                    overscan_residual_sigma=result.residual_sigma,
                )
                # one value per overscan row, mapped onto the source rows
                rows = np.arange(source.y0, source.y1 + 1)
                model = np.interp(rows, np.arange(obox.y0, obox.y1 + 1), result.row_model(obox.height))
        models[amp.name] = model
        if amp_bad:
            mask[target.slices(out_box)] |= bad_bit
            log.info("%s amp %s is bad (defect or fully saturated)", detector.name, amp.name)
        amp_meta[amp.name] = info
    steps += ["convert", "saturation" if config.do_saturation else "", "overscan" if config.do_overscan else ""]
    if config.do_assemble_ccd:
        steps.append("assemble")
    # -- step 8 (mask part): defects and edges --------------------------------------------
    if config.do_defect:
        meta["n_defect_pixels"] = mask_boxes(mask, out_box, defect_boxes, bad_bit) if config.do_assemble_ccd else 0
        if config.num_edge_suspect > 0:
            if config.edge_mask_level == "DETECTOR":
                mask_border(mask, config.num_edge_suspect, suspect_bit)
            else:
                for box in amp_boxes.values():
                    mask_border(mask[box.slices(out_box)], config.num_edge_suspect, suspect_bit)
    if config.edge_mask_width > 0:
        mask_border(mask, config.edge_mask_width, planes.bitmask("EDGE"))
    # -- step 11/12 inputs: dark scale, flat scale ----------------------------------------
    dark_scale = 0.0
    if config.do_dark:
        assert dark is not None
        exp_dt = visit_info.dark_time
        if exp_dt is None or not math.isfinite(exp_dt):
            raise RuntimeError("ISR: the exposure has no dark time (DARKTIME); cannot scale the dark")
        dark_dt = dark.visit_info.dark_time if dark.visit_info is not None else None
        if dark_dt is None or not math.isfinite(dark_dt) or dark_dt <= 0:
            log.warning("master dark has no dark time; assuming 1 s")
            dark_dt = 1.0
        dark_scale = exp_dt / dark_dt
        meta["dark_scale"] = dark_scale
    if config.do_fringe and visit_info.physical_filter in config.fringe_filters:
        raise RuntimeError(f"ISR: fringe correction for {visit_info.physical_filter} is not available")
    flat_scale = 1.0
    if config.do_flat:
        assert flat is not None
        if config.flat_scaling_type == "USER":
            flat_scale = config.flat_user_scale
        else:
            good = gather_good(flat.image, flat.mask, flat.planes.bitmask("BAD"))
            flat_scale = float(np.mean(good, dtype=np.float64)) if config.flat_scaling_type == "MEAN" else float(
                quantiles(good, (0.5,))[0]
            )
        meta["flat_scale"] = flat_scale
    # -- steps 2, 4-7, 9, 11, 12 fused per amp -------------------------------------------
    nan_bit = (1 << mi.add_mask_plane("UNMASKEDNAN")) if config.do_nan_masking else 0
    neg_bit = planes.bitmask(config.negative_variance_mask_name) if config.mask_negative_variance else 0
    empty_f = np.zeros((1, 1), dtype=np.float32)
    empty_m = np.zeros((1, 1), dtype=np.int32)
    cal_planes = {
        "bias": (bias, config.do_bias),
        "dark": (dark, config.do_dark),
        "flat": (flat, config.do_flat),
    }
    conformed = {k: _conformed(c, planes) if (on and c is not None) else None for k, (c, on) in cal_planes.items()}
    gains: dict[str, float] = {}
    counts = np.zeros(3, dtype=np.int64)
    raw = np.ascontiguousarray(raw)
    for amp in detector.amplifiers:
        target = amp_boxes[amp.name]
        source = amp.raw_data_bbox if config.do_assemble_ccd else target
        g = _gain(amp.gain, amp.name)
        gains[amp.name] = g
        amp_meta[amp.name]["read_noise_adu"] = amp.read_noise / g

        def part(name: str, plane: str) -> np.ndarray:
            calib = cal_planes[name][0]
            if conformed[name] is None or calib is None:
                return empty_m if plane == "mask" else empty_f
            if plane == "mask":
                return np.ascontiguousarray(conformed[name])
            return np.ascontiguousarray(getattr(calib, plane))

        counts += _fused_amp(
            raw,
            source.x0 - rbox.x0,
            source.y0 - rbox.y0,
            models[amp.name],
            image,
            variance,
            mask,
            target.x0 - out_box.x0,
            target.y0 - out_box.y0,
            target.width,
            target.height,
            levels[amp.name] if config.do_saturation else math.inf,
            amp.suspect_level if config.do_suspect else math.inf,
            np.int32(sat_bit),
            np.int32(suspect_bit),
            config.do_bias,
            part("bias", "image"),
            part("bias", "variance"),
            part("bias", "mask"),
            config.do_variance,
            1.0 / g,
            (amp.read_noise / g) ** 2,
            np.int32(neg_bit),
            np.int32(nan_bit),
            config.do_dark,
            part("dark", "image"),
            part("dark", "variance"),
            part("dark", "mask"),
            float(dark_scale),
            config.do_flat,
            part("flat", "image"),
            part("flat", "variance"),
            part("flat", "mask"),
            float(flat_scale),
        )
    meta["n_sat_raw"] = int(counts[0])
    if config.do_bias:
        steps.append("bias")
    if config.do_variance:
        steps.append("variance")
        if config.mask_negative_variance:
            meta["n_negative_variance"] = int(counts[1])
    if config.do_defect:
        steps.append("defects")
    if config.do_nan_masking:
        meta["n_unmasked_nan"] = int(counts[2])
        steps.append("nan_masking")
    # -- step 10: widen saturation trails -------------------------------------------------
    if config.do_widen_saturation_trails:
        meta["n_sat_widened"] = widen_saturation_trails(mask, sat_bit)
        steps.append("widen_saturation_trails")
    if config.do_dark:
        steps.append("dark")
    if config.do_flat:
        steps.append("flat")
    # -- step 13: bad regions -------------------------------------------------------------
    interp_planes = tuple(p for p in config.interpolation_planes() if p in mi.planes)
    intrp_bit = mi.planes.bitmask("INTRP")
    if config.do_set_bad_regions:
        # pixels about to be interpolated get new values from their good neighbours only,
        # so their interim value cannot matter: skip the median when interpolation covers BAD
        if not (config.do_interpolate and "BAD" in interp_planes):
            good = gather_good(image, mask, bad_bit)
            if good.size:
                value = float(quantiles(good, (0.5,))[0])
                meta["n_bad_set"] = int(_set_bad(image, mask, np.int32(bad_bit), np.int32(intrp_bit), value))
        steps.append("set_bad_regions")
    # -- step 14: interpolation -----------------------------------------------------------
    if config.do_interpolate:
        if config.grow_saturation_footprint_size > 0:
            meta["n_sat_grown"] = grow_mask(mask, sat_bit, config.grow_saturation_footprint_size)
        bits = mi.planes.bitmask(*interp_planes) if interp_planes else 0
        meta["n_interpolated"] = interpolate_over(
            mi,
            bits,
            num_sigma_clip=config.fallback_num_sigma_clip,
            num_iter=config.fallback_num_iter,
        )
        steps.append("interpolate")
    if config.do_apply_gains and gains:
        for amp in detector.amplifiers:
            sl = amp_boxes[amp.name].slices(out_box)
            g = gains.get(amp.name, _gain(amp.gain, amp.name))
            image[sl] *= np.float32(g)
            variance[sl] *= np.float32(g * g)
        steps.append("apply_gains")
    # -- step 15: rough zero point --------------------------------------------------------
    photo_calib = None
    exptime = visit_info.exposure_time
    if exptime is not None and math.isfinite(exptime) and exptime > 0:
        flux0 = config.flux_mag0(visit_info.physical_filter) * exptime
        photo_calib = PhotoCalib.from_zero_point(2.5 * math.log10(flux0))
        meta["zero_point"] = photo_calib.zero_point
    # -- step 16: QA ----------------------------------------------------------------------
    mask = mi.mask
    count_bits = np.array([sat_bit, bad_bit, intrp_bit], dtype=np.int32)
    if config.do_standard_statistics:
        qa_bits = mi.planes.bitmask(*(p for p in QA_MASK_PLANES if p in mi.planes))
        totals = np.zeros(3, dtype=np.int64)
        for amp in detector.amplifiers:
            sl = amp_boxes[amp.name].slices(out_box)
            amp_meta[amp.name].update(_qa_stats(image[sl], mask[sl], qa_bits, config))
            counts = _count_bits(mask[sl], count_bits)
            amp_meta[amp.name]["n_sat"] = int(counts[0])
            amp_meta[amp.name]["n_bad"] = int(counts[1])
            totals += counts
        if config.do_assemble_ccd:
            counts = totals
        else:
            counts = _count_bits(mask, count_bits)
    else:
        counts = _count_bits(mask, count_bits)
    meta["n_sat"], meta["n_bad"], meta["n_intrp"] = (int(c) for c in counts)
    if config.do_measure_background:
        meta.update(_background_qa(mi, config))
    meta["amps"] = amp_meta
    meta["saturation"] = detector_sat if math.isfinite(detector_sat) else None
    meta["steps"] = [s for s in steps if s]

    exposure_meta = _header_metadata(header, config.keys_to_remove if config.do_assemble_ccd else ())
    for name, info in amp_meta.items():
        for key in ("overscan_mean", "overscan_median", "overscan_residual_sigma", "saturation", "read_noise_adu"):
            if key in info and info[key] is not None and math.isfinite(info[key]):
                exposure_meta[f"ISR_{key.upper()}_{name}"] = float(info[key])
    exposure_meta["ISR_N_SAT"] = meta["n_sat"]
    exposure_meta["ISR_N_BAD"] = meta["n_bad"]
    exposure_meta["ISR_N_INTRP"] = meta["n_intrp"]
    exposure_meta["isr"] = meta
    wcs = assembled_wcs(header, detector) if config.do_assemble_ccd else None
    exposure = Exposure(mi, wcs=wcs, photo_calib=photo_calib, visit_info=visit_info, metadata=exposure_meta)
    log.debug("%s ISR done: %s", detector.name, ", ".join(meta["steps"]))
    return IsrResult(exposure=exposure, metadata=meta, overscans=overscans)
