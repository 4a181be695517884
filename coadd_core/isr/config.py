"""ISR configuration: ``IsrTaskConfig`` and ``OverscanCorrectionTaskConfig`` as frozen models.

Every field carries the LSST default (ALGORITHMS.md §2.1, §2.2) and names its LSST
counterpart, so a reader can map a setting to ip_isr.  The MegaPrime defaults of this
project (``CfhtIsrTask`` overrides, §2.3) are :func:`cfht_isr_config`; the reduced
"levels" used to make calibration inputs (§2.5) are :func:`isr_config_for`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "OverscanFitType",
    "OverscanConfig",
    "IsrConfig",
    "cfht_isr_config",
    "isr_config_for",
    "DEFAULT_FLUX_MAG0_T1",
]

OverscanFitType = Literal[
    "MEDIAN",
    "MEAN",
    "MEANCLIP",
    "MEDIAN_PER_ROW",
    "MEAN_PER_ROW",
    "POLY",
    "CHEB",
    "LEG",
    "NATURAL_SPLINE",
    "CUBIC_SPLINE",
    "AKIMA_SPLINE",
]

#: Flux of a magnitude-0 source per second of exposure (ADU/s) when the filter is unknown.
DEFAULT_FLUX_MAG0_T1 = 10.0 ** (0.4 * 28.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OverscanConfig(_Frozen):
    """Serial overscan correction (LSST ``OverscanCorrectionTaskConfig``)."""

    fit_type: OverscanFitType = Field(
        "MEDIAN", description="fitType: statistic or model of the overscan level"
    )
    order: int = Field(
        1, ge=0, description="order: polynomial order, or number of bins for the spline types"
    )
    num_sigma_clip: float = Field(
        3.0, gt=0, description="numSigmaClip: rejection threshold (sigma) before collapsing rows"
    )
    num_iter: int = Field(
        3, ge=1, description="StatisticsControl numIter: iterations of the MEANCLIP fit type"
    )
    mask_planes: tuple[str, ...] = Field(
        ("BAD", "SAT"), description="maskPlanes: planes whose pixels are ignored in the fit"
    )
    overscan_is_int: bool = Field(
        True, description="overscanIsInt: truncate to integers before per-row medians"
    )
    max_deviation: float = Field(
        1000.0, gt=0, description="maxDeviation: pixels this far (ADU) from the median are masked BAD"
    )
    do_absolute_max_deviation: bool = Field(
        True, description="doAbsoluteMaxDeviation: apply maxDeviation to |v - median| (else v - median)"
    )
    do_parallel_overscan: bool = Field(
        False, description="doParallelOverscan: also correct with the parallel overscan (not supported)"
    )
    leading_columns_to_skip: int = Field(
        0, ge=0, description="leadingColumnsToSkip: overscan columns next to the data left out"
    )
    trailing_columns_to_skip: int = Field(
        0, ge=0, description="trailingColumnsToSkip: overscan columns far from the data left out"
    )

    @field_validator("do_parallel_overscan")
    @classmethod
    def _serial_only(cls, value: bool) -> bool:
        if value:
            raise ValueError("parallel overscan correction is not supported (serial only)")
        return value

    @property
    def is_per_row(self) -> bool:
        """True for the fit types that give one value per row."""
        return self.fit_type not in ("MEDIAN", "MEAN", "MEANCLIP")


class IsrConfig(_Frozen):
    """Instrument signature removal (LSST ``IsrTaskConfig``), LSST defaults."""

    # -- conversion and amplifier masking ------------------------------------------------
    do_convert_int_to_float: bool = Field(
        True, description="doConvertIntToFloat: float32 image, variance 1, mask 0"
    )
    do_saturation: bool = Field(True, description="doSaturation: mask pixels >= saturation as SAT")
    saturated_mask_name: str = Field("SAT", description="saturatedMaskName: plane of saturated pixels")
    saturation: float = Field(
        math.nan, description="saturation: level (ADU) overriding the amplifier's; NaN = use the amp's"
    )
    do_suspect: bool = Field(False, description="doSuspect: mask pixels >= the amp suspect level")
    suspect_mask_name: str = Field("SUSPECT", description="suspectMaskName: plane of suspect pixels")
    # -- overscan, assembly, bias --------------------------------------------------------
    do_overscan: bool = Field(True, description="doOverscan: subtract the serial overscan per amp")
    overscan: OverscanConfig = Field(
        default_factory=OverscanConfig, description="overscan: OverscanCorrectionTask config"
    )
    do_assemble_ccd: bool = Field(True, description="doAssembleCcd: trim and place the amps")
    keys_to_remove: tuple[str, ...] = Field(
        ("DATASEC", "BIASSEC", "TRIMSEC", "GAIN"),
        description="assembleCcd.keysToRemove: header keys dropped after assembly",
    )
    do_bias: bool = Field(True, description="doBias: subtract the master bias")
    do_bias_before_overscan: bool = Field(
        False, description="doBiasBeforeOverscan: subtract the bias from the raw frame first"
    )
    # -- variance, linearity, defects ----------------------------------------------------
    do_variance: bool = Field(True, description="doVariance: var = image/gain + (readNoise/gain)^2")
    mask_negative_variance: bool = Field(
        True, description="maskNegativeVariance: mask pixels with variance <= 0"
    )
    negative_variance_mask_name: str = Field(
        "BAD", description="negativeVarianceMaskName: plane for variance <= 0"
    )
    do_linearize: bool = Field(
        True, description="doLinearize: apply the amp linearizer (MegaPrime amps have none)"
    )
    do_crosstalk: bool = Field(False, description="doCrosstalk: crosstalk correction (not supported)")
    do_defect: bool = Field(True, description="doDefect: mask the defect boxes BAD")
    num_edge_suspect: int = Field(
        0, ge=0, description="numEdgeSuspect: pixels at the detector edge masked SUSPECT"
    )
    edge_mask_level: Literal["DETECTOR", "AMP"] = Field(
        "DETECTOR", description="edgeMaskLevel: numEdgeSuspect counts from detector or amp edges"
    )
    edge_mask_width: int = Field(
        0, ge=0, description="EDGE mask border width in pixels (no LSST IsrTask field; 0 = none)"
    )
    do_nan_masking: bool = Field(
        True, description="doNanMasking: non-finite, otherwise unmasked pixels -> UNMASKEDNAN"
    )
    do_widen_saturation_trails: bool = Field(
        True, description="doWidenSaturationTrails: widen horizontal SAT runs (bleed trails)"
    )
    # -- dark, flat, fringe --------------------------------------------------------------
    do_brighter_fatter: bool = Field(False, description="doBrighterFatter: not supported")
    do_dark: bool = Field(True, description="doDark: subtract the master dark scaled by dark time")
    do_flat: bool = Field(True, description="doFlat: divide by the master flat")
    flat_scaling_type: Literal["USER", "MEAN", "MEDIAN"] = Field(
        "USER", description="flatScalingType: how the flat is scaled before division"
    )
    flat_user_scale: float = Field(
        1.0, gt=0, description="flatUserScale: flat scale when flatScalingType is USER"
    )
    do_fringe: bool = Field(True, description="doFringe: fringe subtraction (listed filters only)")
    fringe_after_flat: bool = Field(True, description="fringeAfterFlat: fringe after flat-fielding")
    fringe_filters: tuple[str, ...] = Field(
        (), description="fringe.filters: physical filters that need fringe correction"
    )
    do_apply_gains: bool = Field(
        False, description="doApplyGains: multiply by the gain (output in electrons)"
    )
    # -- bad regions and interpolation ---------------------------------------------------
    do_set_bad_regions: bool = Field(
        True, description="doSetBadRegions: BAD, not INTRP pixels := median of the rest"
    )
    bad_statistic: Literal["MEDIAN", "MEANCLIP"] = Field(
        "MEANCLIP", description="badStatistic: declared but not passed on by LSST; MEDIAN is used"
    )
    do_interpolate: bool = Field(True, description="doInterpolate: interpolate over masked pixels")
    do_saturation_interpolation: bool = Field(
        True, description="doSaturationInterpolation: include SAT in the interpolated planes"
    )
    do_nan_interpolation: bool = Field(
        True, description="doNanInterpolation: include UNMASKEDNAN in the interpolated planes"
    )
    mask_list_to_interpolate: tuple[str, ...] = Field(
        ("SAT", "BAD"), description="maskListToInterpolate: planes interpolated over"
    )
    grow_saturation_footprint_size: int = Field(
        1, ge=0, description="growSaturationFootprintSize: SAT grown by this (Manhattan) before interpolation"
    )
    fallback_num_sigma_clip: float = Field(
        3.0, gt=0, description="interpolation fallback: clipped-mean sigma (afw StatisticsControl)"
    )
    fallback_num_iter: int = Field(
        3, ge=1, description="interpolation fallback: clipped-mean iterations (afw StatisticsControl)"
    )
    # -- photometric calibration and QA --------------------------------------------------
    flux_mag0_t1: dict[str, float] = Field(
        default_factory=dict, description="fluxMag0T1: mag-0 flux per second per physical filter"
    )
    default_flux_mag0_t1: float = Field(
        DEFAULT_FLUX_MAG0_T1, gt=0, description="defaultFluxMag0T1: mag-0 flux per second otherwise"
    )
    do_measure_background: bool = Field(
        False, description="doMeasureBackground: SKYLEVEL/SKYSIGMA and flatness QA"
    )
    do_standard_statistics: bool = Field(
        True, description="doStandardStatistics: per-amp counts and statistics in the metadata"
    )
    qa_flatness_mesh_size: int = Field(
        256, gt=0, description="qa.flatness.meshX/Y: mesh size (px) of the flatness statistics"
    )
    # -- CfhtIsrTask ---------------------------------------------------------------------
    saturation_from_histogram: bool = Field(
        False, description="CfhtIsrTask: derive saturation from the raw histogram (§2.3)"
    )
    saturation_safe_fraction: float = Field(
        0.95, gt=0, le=1, description="CfhtIsrTask safe: fraction of the histogram saturation used"
    )

    @field_validator("do_crosstalk", "do_brighter_fatter")
    @classmethod
    def _unsupported(cls, value: bool) -> bool:
        if value:
            raise ValueError("crosstalk and brighter-fatter corrections are not supported")
        return value

    def interpolation_planes(self) -> tuple[str, ...]:
        """Planes interpolated over: maskListToInterpolate (+ UNMASKEDNAN), per the switches."""
        planes = [p for p in self.mask_list_to_interpolate if p != "SAT" or self.do_saturation_interpolation]
        if self.do_nan_interpolation and "UNMASKEDNAN" not in planes:
            planes.append("UNMASKEDNAN")
        return tuple(planes)

    def flux_mag0(self, physical_filter: str | None) -> float:
        """Magnitude-0 flux per second for a physical filter."""
        if physical_filter is not None and physical_filter in self.flux_mag0_t1:
            return float(self.flux_mag0_t1[physical_filter])
        return float(self.default_flux_mag0_t1)


def cfht_isr_config(*, have_bias: bool = True, have_flat: bool = True, **overrides: object) -> IsrConfig:
    """Project defaults for MegaPrime (CfhtIsrTask, ALGORITHMS.md §2.3).

    obs_cfht turns bias, dark, flat and fringe off; this project subtracts the bias and
    divides by the flat when masters exist (``have_bias`` / ``have_flat``), leaves the
    dark off (about 3 e-/h) and the fringe off, measures the overscan as a MEDIAN of float
    values, and derives the saturation level from the raw histogram.
    """
    values: dict[str, object] = dict(
        do_bias=have_bias,
        do_dark=False,
        do_flat=have_flat,
        do_fringe=False,
        fringe_after_flat=False,
        do_suspect=False,
        overscan=OverscanConfig(fit_type="MEDIAN", overscan_is_int=False),
        saturation_from_histogram=True,
    )
    values.update(overrides)
    return IsrConfig(**values)


CalibLevel = Literal["bias", "dark", "flat", "science"]


def isr_config_for(kind: CalibLevel, **overrides: object) -> IsrConfig:
    """ISR level of an input of a master calibration (cp_pipe, ALGORITHMS.md §2.5).

    ``bias``: overscan only (saturation on, no interpolation); ``dark``: overscan and
    bias; ``flat``: overscan, bias and dark; ``science``: :func:`cfht_isr_config`. The
    calibration levels leave pixels uninterpolated and skip the rough zero point and QA
    that only science frames need.
    """
    if kind == "science":
        return cfht_isr_config(**overrides)  # type: ignore[arg-type]
    if kind not in ("bias", "dark", "flat"):
        raise ValueError(f"unknown ISR level {kind!r}; known: bias, dark, flat, science")
    base: dict[str, object] = dict(
        do_bias=kind in ("dark", "flat"),
        do_dark=kind == "flat",
        do_flat=False,
        do_fringe=False,
        do_defect=kind != "bias",
        do_set_bad_regions=False,
        do_interpolate=False,
        do_widen_saturation_trails=False,
        do_standard_statistics=False,
        overscan=OverscanConfig(fit_type="MEDIAN", overscan_is_int=False),
        saturation_from_histogram=True,
    )
    base.update(overrides)
    return IsrConfig(**base)
