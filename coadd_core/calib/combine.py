"""Master bias, dark and flat from ISR'd inputs (cp_pipe ``CalibCombineTask``, ALGORITHMS.md §2.5).

Each master is the per-pixel afw MEANCLIP (median/IQR clip first, then mean/sigma;
unweighted) of its inputs, each first divided by its scale, computed along the stack
axis in blocks of rows so memory stays bounded whatever the number of inputs. The
statistic is the project's statistics engine (:func:`coadd_core.stats.stack`), the one
coadds use; a pixel with no good input becomes BAD and is filled by interpolation;
every plane but BAD is cleared.

Darks are divided by their dark time (the master is ADU per second of dark time) and
their cosmic rays are masked first: with few darks, clipping alone cannot reject them.
Flats from several detectors are normalised together by solving B = E[exposure] x
G[detector] for the per-input medians B, so a master keeps its detector's response G
relative to the others.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, Mapping, Sequence, overload

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from coadd_core.calib._stats import gather_good, quantiles
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage
# a module reference: coadd_core.interpolate imports this package's kernels in turn
import coadd_core.interpolate as interpolation
from coadd_core.masks import MaskPlanes, remap_mask, standard_planes
from coadd_core.stats import StackResult, StatsConfig, stack

__all__ = [
    "CalibCombineConfig",
    "combine",
    "combine_bias",
    "combine_dark",
    "combine_flat",
    "find_cosmic_rays",
    "solve_flat_scales",
]

log = logging.getLogger(__name__)

CalibType = Literal["bias", "dark", "flat"]

# int32 sign bit: marks pixels with no good input during a combination (no plane uses it)
_NO_GOOD = -(1 << 31)


class CalibCombineConfig(BaseModel):
    """Combination of calibration inputs (LSST ``CalibCombineConfig`` and cp_pipe presets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clip: float = Field(3.0, gt=0, description="clip: sigma-clipping threshold of MEANCLIP")
    n_iter: int = Field(3, ge=1, description="nIter: MEANCLIP iterations (the IQR one included)")
    mask: tuple[str, ...] | None = Field(
        None,
        description="mask: planes whose input pixels are ignored; None = the type's "
        "(bias: DETECTED, INTRP; dark: + SAT, CR; flat: SAT, DETECTED, INTRP)",
    )
    no_good_pixels_mask: str = Field("BAD", description="noGoodPixelsMask: plane of pixels with no good input")
    min_inputs_for_scatter_error: int = Field(
        5, ge=2, description="error from input variance below this many inputs, else from the scatter"
    )
    subregion_rows: int = Field(
        200, gt=0, description="subregionSize (10000, 200): rows combined at a time"
    )
    dark_mask_cosmic_rays: bool = Field(
        True, description="dark: mask cosmic rays (plane CR) in each input before combining"
    )
    cosmic_ray_n_sigma: float = Field(5.0, gt=0, description="dark CR threshold above the column median (sigma)")
    cosmic_ray_column_window: int = Field(
        41, ge=3, description="dark CR: rows of the running column median (longer than any track)"
    )
    cosmic_ray_grow: int = Field(1, ge=0, description="dark CR: pixels added around each detection")
    flat_solve_iterations: int = Field(
        10, ge=1, description="flat: alternating iterations of the B = E x G solve"
    )

    def mask_planes(self, calib_type: CalibType) -> tuple[str, ...]:
        if self.mask is not None:
            return self.mask
        if calib_type == "bias":
            return ("DETECTED", "INTRP")
        if calib_type == "dark":
            return ("SAT", "DETECTED", "INTRP", "CR")
        return ("SAT", "DETECTED", "INTRP")


def _check_inputs(inputs: Sequence[Exposure]) -> Box:
    if not inputs:
        raise RuntimeError("no calibration inputs to combine")
    box = inputs[0].bbox
    for e in inputs[1:]:
        if e.bbox != box:
            raise RuntimeError(f"calibration inputs differ in size: {box} and {e.bbox}")
    return box


@numba.njit(cache=True, nogil=True)
def _confirm_cosmic_rays(
    image: np.ndarray, variance: np.ndarray, rows: np.ndarray, cols: np.ndarray, half: int, n_sigma: float
) -> np.ndarray:
    ny = image.shape[0]
    keep = np.zeros(rows.size, dtype=np.bool_)
    buf = np.empty(2 * half + 1, dtype=np.float64)
    for k in range(rows.size):
        j, i = rows[k], cols[k]
        a, b = max(j - half, 0), min(j + half + 1, ny)
        n = b - a
        for t in range(n):
            buf[t] = image[a + t, i]
        s = np.sort(buf[:n])
        med = s[n // 2] if n % 2 == 1 else 0.5 * (s[n // 2 - 1] + s[n // 2])
        v = variance[j, i]
        keep[k] = v > 0 and image[j, i] - med > n_sigma * math.sqrt(v)
    return keep


def find_cosmic_rays(
    mi: MaskedImage, *, n_sigma: float = 5.0, column_window: int = 41, grow: int = 1, ignore_bits: int = 0
) -> np.ndarray:
    """Boolean map of cosmic-ray pixels in a frame without sources (a dark).

    A pixel is a cosmic ray when it exceeds the running median of its column
    (``column_window`` rows) by more than ``n_sigma`` standard deviations (from the
    variance plane). The column median follows hot columns and other fixed structure,
    which a dark must keep, while a track crossing a column occupies only a few of the
    window's rows. Only pixels already that far above the frame's median are examined,
    so the cost follows the number of bright pixels, not the frame size.
    """
    image = mi.image
    level = float(quantiles(gather_good(image, mi.mask, ignore_bits), (0.5,))[0])
    with np.errstate(invalid="ignore"):
        candidates = (image - np.float32(level)) > np.float32(n_sigma) * np.sqrt(np.maximum(mi.variance, 0.0))
    if ignore_bits:
        candidates &= (mi.mask & np.int32(ignore_bits)) == 0
    rows, cols = np.nonzero(candidates)
    hits = np.zeros(image.shape, dtype=bool)
    if rows.size == 0:
        return hits
    keep = _confirm_cosmic_rays(image, mi.variance, rows, cols, column_window // 2, float(n_sigma))
    hits[rows[keep], cols[keep]] = True
    if grow > 0 and hits.any():
        hits = ndimage.binary_dilation(hits, ndimage.generate_binary_structure(2, 2), iterations=grow)
    return hits


def _conform(e: Exposure, planes: MaskPlanes) -> np.ndarray:
    return remap_mask(e.mask, e.planes, planes)[0]


def combine(
    inputs: Sequence[Exposure],
    scales: Sequence[float],
    calib_type: CalibType,
    config: CalibCombineConfig | None = None,
    *,
    extra_masks: Sequence[np.ndarray | None] | None = None,
) -> Exposure:
    """MEANCLIP of ``inputs[i] / scales[i]`` per pixel; BAD where no input is good.

    ``extra_masks`` (one boolean map or None per input) mark more pixels to ignore (CR).
    """
    config = config or CalibCombineConfig()
    box = _check_inputs(inputs)
    if len(scales) != len(inputs):
        raise ValueError("one scale per input is needed")
    planes = standard_planes()
    ignore = planes.bitmask(*config.mask_planes(calib_type))
    bad = planes.bitmask(config.no_good_pixels_mask)
    cr_bit = planes.bitmask("CR")
    no_data = planes.bitmask("NO_DATA")
    n = len(inputs)
    ny, nx = box.shape
    value = np.empty((ny, nx), dtype=np.float32)
    var = np.empty((ny, nx), dtype=np.float32)
    out_mask = np.zeros((ny, nx), dtype=np.int32)
    masks = [_conform(e, planes) for e in inputs]
    from_input_variance = n < config.min_inputs_for_scatter_error
    stats = StatsConfig(
        statistic="MEANCLIP",
        num_sigma_clip=config.clip,
        num_iter=config.n_iter,
        and_mask=ignore,
        calc_error_from_input_variance=from_input_variance,
    )
    rows = config.subregion_rows
    hb = min(rows, ny)
    data_b = np.empty((n, hb, nx), dtype=np.float32)
    var_b = np.empty_like(data_b)
    mask_b = np.empty((n, hb, nx), dtype=np.int32)
    block_mask = np.empty((hb, nx), dtype=np.int32)
    nclip = np.empty((hb, nx), dtype=np.int32)
    inv = [np.float32(1.0 / s) for s in scales]
    inv2 = [np.float32(1.0 / (s * s)) for s in scales]
    keep = np.int32(bad | no_data)
    for y0 in range(0, ny, rows):
        y1 = min(y0 + rows, ny)
        h = y1 - y0
        d, v, m = data_b[:, :h], var_b[:, :h], mask_b[:, :h]
        for k, e in enumerate(inputs):
            np.multiply(e.image[y0:y1], inv[k], out=d[k])
            np.multiply(e.variance[y0:y1], inv2[k], out=v[k])
            m[k] = masks[k][y0:y1]
            if extra_masks is not None and extra_masks[k] is not None:
                m[k][extra_masks[k][y0:y1]] |= cr_bit
        # output mask: OR over the good inputs plus a private bit where none was good;
        # only BAD (and NO_DATA, an error below) survive
        result = stack(
            d,
            m,
            v,
            None,
            stats,
            clipped_bit=0,
            no_good_bit=_NO_GOOD,
            planes=planes,
            out=StackResult(value[y0:y1], block_mask[:h], var[y0:y1], nclip[:h]),
        )
        none_good = (result.mask & _NO_GOOD) != 0
        out_mask[y0:y1] = result.mask & keep
        out_mask[y0:y1][none_good] |= bad
        value[y0:y1][none_good] = np.nan
    if np.any(out_mask & no_data):
        raise RuntimeError(f"combined {calib_type} has NO_DATA pixels; inputs are incomplete")
    mi = MaskedImage(value, out_mask, var, xy0=box.xy0, planes=planes)
    nan = ~(np.isfinite(value) & np.isfinite(var))
    n_nan = int(np.count_nonzero(nan))
    if n_nan:
        tmp = planes.bitmask("NO_DATA")
        mi.mask[nan] |= tmp
        interpolation.interpolate_over(mi, tmp, set_intrp=False)
        mi.mask &= ~np.int32(tmp)
    first = inputs[0]
    visit = first.visit_info.replace(observation_type=calib_type) if first.visit_info is not None else None
    metadata = {
        "OBSTYPE": calib_type,
        "CALIB_N_INPUTS": n,
        "CALIB_N_NO_GOOD": int(np.count_nonzero(out_mask & bad)),
        "CALIB_N_NAN_FILLED": n_nan,
        "CALIB_ERROR_FROM": "input variance" if from_input_variance else "scatter",
        "CALIB_INPUT_EXPOSURES": [
            e.visit_info.exposure_id if e.visit_info is not None else None for e in inputs
        ],
        "CALIB_SCALES": [float(s) for s in scales],
    }
    return Exposure(mi, wcs=None, visit_info=visit, metadata=metadata)


def combine_bias(inputs: Sequence[Exposure], config: CalibCombineConfig | None = None) -> Exposure:
    """Master bias: MEANCLIP of overscan-corrected bias frames (scale 1)."""
    return combine(inputs, [1.0] * len(inputs), "bias", config)


def _dark_time(e: Exposure) -> float:
    dt = e.visit_info.dark_time if e.visit_info is not None else None
    if dt is None or not math.isfinite(dt) or dt <= 0:
        raise RuntimeError("dark input without a positive dark time")
    return float(dt)


def combine_dark(inputs: Sequence[Exposure], config: CalibCombineConfig | None = None) -> Exposure:
    """Master dark in ADU per second of dark time; cosmic rays of each input masked CR."""
    config = config or CalibCombineConfig()
    _check_inputs(inputs)
    times = [_dark_time(e) for e in inputs]
    extra: list[np.ndarray | None] = [None] * len(inputs)
    if config.dark_mask_cosmic_rays:
        sat_bad = inputs[0].planes.bitmask("SAT", "BAD")
        for k, e in enumerate(inputs):
            extra[k] = find_cosmic_rays(
                e.masked_image,
                n_sigma=config.cosmic_ray_n_sigma,
                column_window=config.cosmic_ray_column_window,
                grow=config.cosmic_ray_grow,
                ignore_bits=sat_bad,
            )
    master = combine(inputs, times, "dark", config, extra_masks=extra)
    if master.visit_info is not None:
        master.visit_info = master.visit_info.replace(dark_time=1.0, exposure_time=1.0)
    master.metadata["CALIB_N_COSMIC_RAY_PIXELS"] = int(sum(int(m.sum()) for m in extra if m is not None))
    return master


def _input_median(e: Exposure, bits: int) -> tuple[float, int]:
    values = gather_good(e.image, e.mask, bits)
    if values.size == 0:
        return math.nan, 0
    return float(quantiles(values, (0.5,))[0]), int(values.size)


def solve_flat_scales(
    medians: np.ndarray, counts: np.ndarray, iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Solve B[d, e] = E[e] G[d] in log space by alternating count-weighted means.

    ``medians``/``counts``: detectors x exposures. G starts at 1 and is renormalised to
    a count-weighted mean of 1 each iteration. Returns (E per exposure, G per detector).
    """
    b = np.asarray(medians, dtype=np.float64)
    w = np.where(np.isfinite(b) & (b > 0), np.asarray(counts, dtype=np.float64), 0.0)
    logb = np.log(np.where(w > 0, b, 1.0))
    log_g = np.zeros(b.shape[0])
    log_e = np.zeros(b.shape[1])
    for _ in range(iterations):
        we = w.sum(axis=0)
        log_e = np.where(we > 0, (w * (logb - log_g[:, None])).sum(axis=0) / np.where(we > 0, we, 1), 0.0)
        wg = w.sum(axis=1)
        log_g = np.where(wg > 0, (w * (logb - log_e[None, :])).sum(axis=1) / np.where(wg > 0, wg, 1), 0.0)
        g = np.exp(log_g)
        norm = float((g * wg).sum() / wg.sum()) if wg.sum() > 0 else 1.0
        log_g -= math.log(norm)
        log_e += math.log(norm)
    return np.exp(log_e), np.exp(log_g)


@overload
def combine_flat(inputs: Sequence[Exposure], config: CalibCombineConfig | None = None) -> Exposure: ...


@overload
def combine_flat(
    inputs: Mapping[str, Sequence[Exposure]], config: CalibCombineConfig | None = None
) -> dict[str, Exposure]: ...


def combine_flat(
    inputs: Sequence[Exposure] | Mapping[str, Sequence[Exposure]],
    config: CalibCombineConfig | None = None,
) -> Exposure | dict[str, Exposure]:
    """Master flat(s).

    A list (one detector): each input divided by its median, combined, and the master
    normalised to a mean of 1 over its non-BAD pixels. A mapping detector -> inputs
    (the same exposures, in the same order, for every detector): the per-exposure
    scales E come from the B = E x G solve, so the masters keep the detectors'
    relative response G (count-weighted mean 1 over the focal plane).
    """
    config = config or CalibCombineConfig()
    planes = standard_planes()
    bits = planes.bitmask(*config.mask_planes("flat"), "BAD")
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        _check_inputs(inputs)
        scales = []
        for e in inputs:
            med, _ = _input_median(e, bits)
            if not (math.isfinite(med) and med > 0):
                raise RuntimeError("flat input has no positive median")
            scales.append(med)
        master = combine(inputs, scales, "flat", config)
        good = gather_good(master.image, master.mask, planes.bitmask("BAD"))
        mean = float(np.mean(good, dtype=np.float64)) if good.size else math.nan
        if not (math.isfinite(mean) and mean > 0):
            raise RuntimeError("combined flat has no positive mean")
        master.masked_image /= mean
        master.metadata["CALIB_FLAT_NORMALISATION"] = mean
        return master
    names = list(inputs)
    n_exp = {len(v) for v in inputs.values()}
    if len(n_exp) != 1:
        raise RuntimeError("every detector needs the same flat exposures")
    ne = n_exp.pop()
    medians = np.empty((len(names), ne))
    counts = np.zeros((len(names), ne))
    for d, name in enumerate(names):
        for k, e in enumerate(inputs[name]):
            medians[d, k], counts[d, k] = _input_median(e, bits)
    e_scale, g_resp = solve_flat_scales(medians, counts, config.flat_solve_iterations)
    out: dict[str, Exposure] = {}
    for d, name in enumerate(names):
        master = combine(list(inputs[name]), list(e_scale), "flat", config)
        master.metadata["CALIB_FLAT_RESPONSE"] = float(g_resp[d])
        out[name] = master
    return out
