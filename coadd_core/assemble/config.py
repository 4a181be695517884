"""Coadd assembly configurations (LSST ``AssembleCoaddConfig`` and its CompareWarp/SafeClip
variants), as frozen pydantic models carrying the LSST defaults (ALGORITHMS.md §6.2,
§7.1, §8)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..detection import DetectionConfig

__all__ = [
    "AssembleCoaddConfig",
    "CompareWarpConfig",
    "SafeClipConfig",
    "ScaleVarianceConfig",
    "StaticSkyModelConfig",
    "default_artifact_detection",
    "default_safe_clip_detection",
    "default_template_detection",
]

#: Statistics the stacker can compute.
Statistic = Literal["MEAN", "MEDIAN", "MEANCLIP"]
#: Statistics LSST accepts together with doInterp.
_INTERP_STATISTICS = {"MEAN", "MEDIAN", "MEANCLIP", "VARIANCE", "VARIANCECLIP"}


class AssembleCoaddConfig(BaseModel):
    """Plain coadd of warps (LSST ``AssembleCoaddConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warp_type: Literal["direct", "psfMatched"] = Field(
        "direct", description="Kind of warp to coadd; LSST warpType, default 'direct'."
    )
    subregion_size: tuple[int, int] = Field(
        (2000, 2000), description="Largest (width, height) stacked at once; LSST subregionSize."
    )
    max_stack_bytes: int = Field(
        64 * 2**20,
        gt=0,
        description="Memory for one sub-region's input stack; shrinks sub-regions as warps grow (no LSST field).",
    )
    statistic: Statistic = Field("MEANCLIP", description="Per-pixel stacking statistic; LSST statistic.")
    sigma_clip: float = Field(3.0, gt=0, description="MEANCLIP clip in sigma (also weights); LSST sigmaClip, 3.0.")
    clip_iter: int = Field(2, ge=1, description="MEANCLIP iterations (also weights); LSST clipIter, 2.")
    calc_error_from_input_variance: bool = Field(
        True, description="Coadd variance from input variances; LSST calcErrorFromInputVariance, True."
    )
    do_online_for_mean: bool = Field(
        False, description="Running-sum MEAN (same result here); LSST doOnlineForMean, False."
    )
    do_interp: bool = Field(True, description="Interpolate over NO_DATA pixels; LSST doInterp, True.")
    do_n_image: bool = Field(False, description="Make the uint16 input-count image; LSST doNImage, False.")
    mask_propagation_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"SAT": 0.1},
        description="Plane -> rejected weight fraction above which it is set; LSST maskPropagationThresholds.",
    )
    remove_mask_planes: tuple[str, ...] = Field(
        ("NOT_DEBLENDED",), description="Planes cleared on the inputs before stacking; LSST removeMaskPlanes."
    )
    bad_mask_planes: tuple[str, ...] = Field(
        ("NO_DATA", "BAD", "SAT", "EDGE"), description="Planes that exclude an input pixel; LSST badMaskPlanes."
    )
    do_mask_bright_objects: bool = Field(
        False, description="Mask bright-object regions; LSST doMaskBrightObjects, False (True is refused: no bright-object catalog input)."
    )
    bright_object_mask_name: str = Field(
        "BRIGHT_OBJECT", description="Plane for bright-object regions; LSST brightObjectMaskName."
    )
    coadd_psf_warping_kernel_name: Literal["lanczos3", "lanczos4", "lanczos5"] = Field(
        "lanczos3", description="Kernel warping input PSFs into the coadd PSF; LSST coaddPsf.warpingKernelName."
    )
    coadd_psf_cache_size: int = Field(0, ge=0, description="Coadd PSF kernel cache; LSST coaddPsf.cacheSize, 0.")
    do_select_visits: bool = Field(False, description="Use a visit selection; LSST doSelectVisits, False.")
    do_input_map: bool = Field(False, description="Make the HEALPix input map; LSST doInputMap, False.")
    do_attach_transmission_curve: bool = Field(
        False, description="Attach a transmission curve; LSST doAttachTransmissionCurve, False."
    )
    do_scale_zero_point: bool = Field(
        False, description="Rescale warps to a zero point (deprecated); LSST doScaleZeroPoint, False."
    )
    do_write: bool = Field(True, description="Persist the coadd; LSST doWrite, True.")

    @model_validator(mode="after")
    def _check(self) -> "AssembleCoaddConfig":
        if self.do_interp and self.statistic not in _INTERP_STATISTICS:
            raise ValueError(f"doInterp is not supported with statistic {self.statistic}")
        if min(self.subregion_size) <= 0:
            raise ValueError(f"subregion_size must be positive, got {self.subregion_size}")
        if self.do_mask_bright_objects:
            # refused when the config is made, not halfway through a run
            raise ValueError("doMaskBrightObjects needs a bright-object catalog input, which this pipeline has not")
        return self


class StaticSkyModelConfig(AssembleCoaddConfig):
    """The PSF-matched template coadd of CompareWarp (LSST ``assembleStaticSkyModel``)."""

    warp_type: Literal["direct", "psfMatched"] = Field(
        "psfMatched", description="Template is built from PSF-matched warps; LSST warpType."
    )
    statistic: Statistic = Field("MEANCLIP", description="Clipped mean template; LSST statistic 'MEANCLIP'.")
    sigma_clip: float = Field(2.5, gt=0, description="Template clip in sigma; LSST sigmaClip, 2.5.")
    clip_iter: int = Field(3, ge=1, description="Template clip iterations; LSST clipIter, 3.")
    bad_mask_planes: tuple[str, ...] = Field(
        ("NO_DATA",), description="Only NO_DATA excludes inputs of the template; LSST badMaskPlanes."
    )
    do_write: bool = Field(False, description="Persist the template coadd; LSST doWrite, False.")

    @model_validator(mode="after")
    def _check_n_image(self) -> "StaticSkyModelConfig":
        if self.do_n_image:
            raise ValueError("assembleStaticSkyModel.doNImage must be False")
        return self


def default_artifact_detection() -> DetectionConfig:
    """CompareWarp ``detect`` on warp differences (§7.1).

    Seeds at 7.5 sigma as LSST, but footprints extend down to 2.5 sigma
    (``include_threshold_multiplier`` 3, afw's hysteresis) instead of stopping at 7.5:
    the faint rims of ghosts and trails that LSST leaves in the coadd are clipped with
    their cores.  [project default; LSST: threshold 7.5, multiplier 1]
    """
    return DetectionConfig(
        threshold_type="pixel_stdev",
        threshold_value=2.5,
        include_threshold_multiplier=3.0,
        polarity="both",
        min_pixels=4,
        n_sigma_to_grow=0.4,
        isotropic_grow=True,
        do_smooth=False,
        do_temp_local_background=False,
        reestimate_background=False,
    )


def default_sharp_detection() -> DetectionConfig:
    """Detection of sharp deviations of a direct warp from the template: the artifact
    detection's thresholds (seeds 7.5, extent 2.5 sigma), positive only, on the
    difference smoothed by ``sharp_sigma``.  [project default; LSST: none]"""
    return default_artifact_detection().model_copy(update={"polarity": "positive", "do_smooth": True, "min_pixels": 1})


def default_template_detection() -> DetectionConfig:
    """CompareWarp ``detectTemplate`` on the template (§7.1)."""
    from ..background import BackgroundConfig

    return DetectionConfig(
        threshold_type="pixel_stdev",
        threshold_value=300.0,
        polarity="positive",
        min_pixels=1,
        n_sigma_to_grow=2.4,
        do_smooth=True,
        do_temp_local_background=True,
        temp_local_bin_size=64,
        reestimate_background=True,
        background=BackgroundConfig(use_approx=False),
    )


def default_safe_clip_detection() -> DetectionConfig:
    """SafeClip ``clipDetection`` on the clipped/unclipped difference (§8)."""
    return DetectionConfig(
        threshold_type="pixel_stdev",
        threshold_value=2.0,
        polarity="both",
        min_pixels=4,
        n_sigma_to_grow=2.0,
        isotropic_grow=True,
        do_smooth=True,
        do_temp_local_background=False,
        reestimate_background=False,
    )


class ScaleVarianceConfig(BaseModel):
    """Empirical rescaling of a warp's variance plane (LSST ``ScaleVarianceConfig``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bin_size: int = Field(32, gt=0, description="Temporary background cell size; LSST background.binSize, 32.")
    mask_planes: tuple[str, ...] = Field(
        ("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP"),
        description="Pixels ignored when measuring the noise; LSST maskPlanes.",
    )
    limit: float = Field(10.0, gt=0, description="Largest acceptable factor; LSST limit, 10.0.")


class CompareWarpConfig(AssembleCoaddConfig):
    """Artifact rejection by comparing PSF-matched warps with a template (LSST
    ``CompareWarpAssembleCoaddConfig``)."""

    statistic: Statistic = Field("MEAN", description="Final stacking statistic; LSST statistic 'MEAN'.")
    bad_mask_planes: tuple[str, ...] = Field(
        ("NO_DATA", "BAD", "SAT"), description="EDGE is not bad here; LSST badMaskPlanes (CLIPPED added at run)."
    )
    remove_mask_planes: tuple[str, ...] = Field(
        ("NOT_DEBLENDED", "EDGE"), description="Planes cleared on the inputs; LSST removeMaskPlanes."
    )
    assemble_static_sky_model: StaticSkyModelConfig = Field(
        default_factory=StaticSkyModelConfig, description="Template coadd; LSST assembleStaticSkyModel."
    )
    detect: DetectionConfig = Field(
        default_factory=default_artifact_detection, description="Detection on warp - template; LSST detect."
    )
    detect_template: DetectionConfig = Field(
        default_factory=default_template_detection, description="Detection on the template; LSST detectTemplate."
    )
    max_detect_template_iter: int = Field(
        10, ge=1, description="Attempts at template detection; LSST findArtifacts retry limit (10)."
    )
    detect_template_multiplier: float = Field(
        1.25, gt=1, description="Threshold factor per failed attempt; LSST findArtifacts retry factor 1.25."
    )
    max_num_epochs: int = Field(2, ge=0, description="Epochs an artifact may appear in; LSST maxNumEpochs, 2.")
    max_fraction_epochs_low: float = Field(
        0.4, ge=0, lt=1, description="Effective max epochs fraction at low N; LSST maxFractionEpochsLow, 0.4."
    )
    max_fraction_epochs_high: float = Field(
        0.03, ge=0, lt=1, description="Effective max epochs fraction at high N; LSST maxFractionEpochsHigh, 0.03."
    )
    spatial_threshold: float = Field(
        0.5, ge=0, le=1, description="Fraction of footprint pixels meeting the temporal test; LSST spatialThreshold."
    )
    local_epoch_rule: bool = Field(
        True,
        description=(
            "Apply the temporal test with each pixel's own epoch count and take the spatial fraction over "
            "the pixels deep enough to decide (effective max epochs >= 1), instead of LSST's one effective "
            "max from the footprint's mean count: a trail crossing from 2-epoch into deeper coverage is "
            "judged where it can be.  Identical to LSST on footprints of uniform depth.  [project default]"
        ),
    )
    do_scale_warp_variance: bool = Field(
        True, description="Rescale PSF-matched warp variances empirically; LSST doScaleWarpVariance, True."
    )
    scale_warp_variance: ScaleVarianceConfig = Field(
        default_factory=ScaleVarianceConfig, description="Variance rescaling; LSST scaleWarpVariance."
    )
    do_preserve_contained_by_source: bool = Field(
        True, description="Keep candidates inside template footprints; LSST doPreserveContainedBySource, True."
    )
    do_preserve_variable_sources: bool = Field(
        True,
        description=(
            "Keep candidates that are a point source's change of brightness: peaked within "
            "variable_peak_match_sigma PSF sigma of a source peak on the template (variable_peak_threshold) and no "
            "wider than variable_max_radius_sigma PSF sigma around it, the source reaching "
            "variable_min_template_snr in the other epochs.  A variable seen only near its maximum "
            "deviates in as few epochs as an artifact, and LSST's rescue only covers 300-sigma sources.  "
            "[project default; LSST: none]"
        ),
    )
    variable_peak_threshold: float = Field(
        2.0, gt=0,
        description="Template source peaks for do_preserve_variable_sources: local maxima of a difference of "
        "Gaussians (PSF sigma minus twice it) above this many times its noise (from the variance plane).",
    )
    variable_peak_match_sigma: float = Field(
        1.5, gt=0,
        description="Largest distance (PSF sigma) of a candidate's peak from a template source's peak; "
        "the peaks of faint sources, and of those on a neighbour's wing, wander by about a sigma.",
    )
    variable_max_radius_sigma: float = Field(
        3.5, gt=0,
        description="Largest distance (PSF sigma) of a candidate's seed pixels from that peak: 7.5 sigma is "
        "reached 3.0 sigma out on a 1000-sigma point source.",
    )
    variable_min_template_snr: float = Field(
        5.0, gt=0,
        description="The source's PSF-weighted flux, averaged over the other epochs, must reach this S/N: a "
        "transient bright enough to make its own template source (few epochs) has none there.",
    )
    variable_halo_min_snr: float = Field(
        300.0, gt=0,
        description="Template sources whose difference-of-Gaussians peak reaches this many times its noise are "
        "bright: the round ones' azimuthal median profiles are subtracted before fainter peaks are sought and "
        "measured, so a faint star on their wing is found and its flux is its own.",
    )
    variable_halo_radius_sigma: float = Field(
        20.0, gt=0,
        description="Largest radius (PSF sigma) of a bright source's subtracted profile; it stops sooner where "
        "the profile falls below half the pixel noise.",
    )
    variable_halo_max_ellipticity: float = Field(
        0.1, ge=0,
        description="Only bright sources rounder than this (Gaussian-weighted moments; the template's PSF is "
        "round) have their profile subtracted: a galaxy's or a blend's is not a function of radius.",
    )
    variable_halo_core_sigma: float = Field(
        1.5, gt=0,
        description="Peaks left within this many PSF sigma of a bright source's peak by its profile's "
        "subtraction are dropped: the bright source's own peak stands for its core.",
    )
    do_clip_sharp_artifacts: bool = Field(
        True,
        description=(
            "Also detect sharp positive deviations of each direct warp from the template (sharp_detect) and "
            "keep those brighter than any PSF mismatch of the template's flux there could make them, judged "
            "then by the same epoch, containment and variable rules: cosmic rays the ISR left are too sharp "
            "for the PSF-matched warps, which show them at a fifth of their significance.  "
            "[project default; LSST: none]"
        ),
    )
    sharp_sigma: float = Field(
        1.0, gt=0,
        description="Smoothing (pixels) of the direct warps' differences for sharp_detect, and the sharpest "
        "PSF sigma a source can have in a direct warp when its template flux explains a deviation.",
    )
    sharp_detect: DetectionConfig = Field(
        default_factory=default_sharp_detection, description="Detection of sharp deviations of direct warps."
    )
    sharp_compare_sharper_epochs: bool = Field(
        True,
        description=(
            "Judge a direct warp's sharp deviation pixel by pixel against the direct warps with a smaller PSF "
            "sigma: near a source's core they deviate from the template at least as much, while a ray is in "
            "one epoch only.  A candidate the template-flux bound explains still keeps its pixels deviating "
            "by sharp_excess_sigma more than the sharper epochs show there and by sharp_template_fraction of "
            "the template (grown by sharp_grow within it), so a ray on a galaxy is no longer explained by the "
            "galaxy's flux.  Processing runs from the sharpest direct warp.  [project default; LSST: none]"
        ),
    )
    sharp_excess_sigma: float = Field(
        3.0, gt=0,
        description="Least excess over the sharper epochs' deviation, in sigma of the difference of two epochs "
        "(sqrt(2) times this warp's difference noise).",
    )
    sharp_template_fraction: float = Field(
        1.0, ge=0,
        description="Allowance, as a fraction of the template there, for what the sharper epochs cannot show: "
        "on a source's wing, beyond the radius where PSFs cross, a sharper PSF gives less light (for "
        "Gaussians, up to about 0.6 of the template where the warp exceeds it), and PSF-shape differences.",
    )
    sharp_shape_sigma: float = Field(
        2.5, ge=0,
        description="A candidate of sharp_compare_sharper_epochs is no source's change of brightness when its "
        "excess over the sharper epochs is sharper than the warp's PSF across some direction by this many sigma "
        "(LSST's cond3_fac for a cosmic ray's pixel, with the PSF's own neighbour ratio): neither the "
        "variable-source rescue nor the containment rescue then applies to it.",
    )
    sharp_grow: int = Field(
        2, ge=0,
        description="Pixels by which a candidate's unexplained pixels are grown, within its footprint: the "
        "resampled ray's faint edges.",
    )
    do_prefilter_artifacts: bool = Field(
        True, description="Drop candidates mostly on bad pixels; LSST doPrefilterArtifacts, True."
    )
    prefilter_artifacts_mask_planes: tuple[str, ...] = Field(
        ("NO_DATA", "BAD", "SUSPECT"), description="Bad planes for the prefilter; LSST prefilterArtifactsMaskPlanes."
    )
    prefilter_artifacts_ratio: float = Field(
        0.05, ge=0, description="Keep candidates with more good pixels than this; LSST prefilterArtifactsRatio."
    )
    do_filter_morphological: bool = Field(
        False, description="Streak (line) filter on the differences; LSST doFilterMorphological, False (True is refused: not available)."
    )
    streak_mask_name: str = Field("STREAK", description="Plane of detected streaks; LSST streakMaskName.")
    grow_streak_fp: float = Field(5.0, description="Streak growth in PSF sigma; LSST growStreakFp, 5.")
    do_write_artifact_masks: bool = Field(
        False, description="Persist per-visit artifact masks; LSST doWriteArtifactMasks, False (True is refused: not available)."
    )

    @model_validator(mode="after")
    def _check_template(self) -> "CompareWarpConfig":
        if self.assemble_static_sky_model.do_write and self.assemble_static_sky_model.warp_type == self.warp_type:
            raise ValueError("the template cannot be written with the same warp type as the coadd")
        if self.do_filter_morphological:
            raise ValueError("doFilterMorphological (the streak filter) is not available; leave it False")
        if self.do_write_artifact_masks:
            raise ValueError("doWriteArtifactMasks is not available; 'coadd evaluate' recomputes the masks")
        return self


class SafeClipConfig(AssembleCoaddConfig):
    """Legacy artifact rejection from a clipped/unclipped coadd difference (LSST
    ``SafeClipAssembleCoaddConfig``)."""

    statistic: Statistic = Field("MEAN", description="Final statistic, must be MEAN; LSST statistic.")
    sigma_clip: float = Field(1.5, gt=0, description="Clip of the clipped coadd; LSST sigmaClip, 1.5.")
    clip_iter: int = Field(3, ge=1, description="Iterations of the clipped coadd; LSST clipIter, 3.")
    clip_detection: DetectionConfig = Field(
        default_factory=default_safe_clip_detection, description="Detection on the difference; LSST clipDetection."
    )
    min_clip_foot_overlap: float = Field(
        0.6, description="Overlap to clip the one warp among several; LSST minClipFootOverlap, 0.6."
    )
    min_clip_foot_overlap_single: float = Field(
        0.5, description="Overlap to clip a single candidate warp; LSST minClipFootOverlapSingle, 0.5."
    )
    min_clip_foot_overlap_double: float = Field(
        0.45, description="Overlap to clip two warps; LSST minClipFootOverlapDouble, 0.45."
    )
    max_clip_foot_overlap_double: float = Field(
        0.15, description="Largest overlap of the other warps when clipping two; LSST maxClipFootOverlapDouble."
    )
    min_big_overlap: int = Field(
        100, description="Pixels of clipped area that make a whole warp footprint clipped; LSST minBigOverlap."
    )

    @model_validator(mode="after")
    def _check_statistic(self) -> "SafeClipConfig":
        if self.statistic != "MEAN":
            raise ValueError(f"SafeClip requires statistic MEAN, got {self.statistic}")
        return self
