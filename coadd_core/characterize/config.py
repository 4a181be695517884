"""Configuration of single-frame characterisation (LSST ``CharacterizeImageConfig`` and
the parts of ``CalibrateConfig`` it needs: photometric calibration against a refcat)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..background import BackgroundConfig
from ..detection import DetectionConfig

__all__ = [
    "CharacterizeConfig",
    "CosmicRayConfig",
    "PhotoCalConfig",
    "PsfMeasureConfig",
    "RefcatColumns",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CosmicRayConfig(_Frozen):
    """Cosmic-ray finder (LSST ``FindCosmicRaysConfig``, the SDSS algorithm)."""

    min_sigma: float = Field(
        6.0, gt=0, description="Pixel must exceed a neighbour pair mean by this many sigma; LSST minSigma, 6.0."
    )
    min_dn: float = Field(
        150.0, ge=0, description="Least total counts (image units) in one cosmic ray; LSST min_DN, 150.0."
    )
    cond3_fac: float = Field(
        2.5, ge=0, description="Noise allowance (sigma) in the PSF-sharpness test; LSST cond3_fac, 2.5."
    )
    cond3_fac2: float = Field(
        0.6, gt=0, description="Fraction of the PSF's neighbour/peak ratio a CR falls below; LSST cond3_fac2, 0.6."
    )
    n_iteration: int = Field(
        3, ge=0, description="Passes adding contaminated neighbours of found CRs; LSST niteration, 3."
    )
    n_cr_pixel_max: int = Field(
        1_000_000, gt=0, description="Give up (mask nothing) above this many CR pixels; LSST nCrPixelMax."
    )
    grow: int = Field(
        1, ge=0,
        description="Also mask and repair the pixels within this many pixels (a square) of each ray: the "
        "faint edges of a track, below the neighbour test, are most of the charge it leaves.  Drizzle's "
        "driz_cr_grow, 1.  [project default; LSST: 0]",
    )
    find_lines: bool = Field(
        True,
        description="Also test short straight segments (2-4 px along rows, columns, diagonals) with "
        "conditions 2 and 3 on their sums against the parallel segments beside them, or against the sky "
        "where those lie within twice their noise below it: a faint track whose pixels each stand 4-6 "
        "sigma above their neighbours passes at sqrt(length) times that.  [project default; LSST: "
        "single pixels only]",
    )
    line_pixel_sigma: float = Field(
        1.5, ge=0, description="Least excess (sigma) of each pixel of a segment over its two neighbours "
        "across (``find_lines``), so one bright pixel does not carry a segment of noise."
    )
    follow_tracks: bool = Field(
        True,
        description="Follow each elongated ray beyond its ends along its fitted line while a pixel there "
        "exceeds the mean of its two neighbours across the line by half ``min_sigma``, with no PSF test: "
        "a track crossing a star's convex wing never looks sharper than the PSF there, but always stands "
        "above the pixels beside it (log-quadratic in the two pixels each side where they are bright; "
        "never into a source's concave core).  Those pixels are repaired across the track the same way "
        "and not grown.  [project default; LSST: none]",
    )
    track_min_pixels: int = Field(
        4, ge=2, description="Least pixels of a ray whose line is followed (``follow_tracks``): a shorter "
        "one's direction is too loose."
    )
    keep_crs: bool = Field(
        False, description="Mask cosmic rays but leave their pixel values; LSST keepCRs, False."
    )
    bad_mask_planes: tuple[str, ...] = Field(
        ("BAD", "INTRP", "SAT"),
        description="Pixels never called CRs nor used for repairs; LSST badMask (BAD|INTRP|SAT).",
    )


class PsfMeasureConfig(_Frozen):
    """PSF star selection and pixelised model (LSST ``objectSizeStarSelector`` + PSFEx roles)."""

    stamp_size: int = Field(
        41, ge=11, description="Odd side of the PSF model image (px); LSST psfex stampSize, 41."
    )
    min_snr: float = Field(
        50.0, gt=0, description="Least matched-filter S/N of a PSF star; LSST starSelector fluxMin (as S/N)."
    )
    min_snr_floor: float = Field(
        20.0, gt=0, description="Lowest S/N the threshold is halved down to when stars are too few."
    )
    max_candidates: int = Field(
        300, gt=0, description="Brightest candidates examined; LSST psfDeterminer maxCandidates, 300."
    )
    bad_mask_planes: tuple[str, ...] = Field(
        ("SAT", "BAD", "CR", "EDGE", "NO_DATA", "INTRP", "SUSPECT"),
        description="A star with any of these within bad_box_half_size of its centre is rejected; LSST badFlags.",
    )
    bad_box_half_size: int = Field(
        6, ge=1, description="Half side of the box checked for bad_mask_planes (px); LSST uses centre flags."
    )
    max_ellipticity: float = Field(
        0.2, gt=0, description="Largest |e| = sqrt(e1^2 + e2^2) from second moments; roundness cut."
    )
    size_tolerance: float = Field(
        0.1, gt=0, description="Fractional half-width of the stellar locus in moment radius; LSST widthStdAllowed role."
    )
    max_asymmetry: float = Field(
        0.03, gt=0, description="Reject a star when more than this fraction of its stamp's flux breaks point symmetry (an unsplit blend)..."
    )
    asymmetry_sigma: float = Field(
        5.0, gt=0, description="...and that asymmetry is significant at this many sigma (chi^2 of the half-turn difference)."
    )
    max_chi2_factor: float = Field(
        3.0, gt=1, description="Reject stars whose residual chi^2 exceeds this times the median; LSST reducedChi2ForPsfCandidates role."
    )
    n_model_iterations: int = Field(
        3, ge=1, description="Stack, reject outliers and re-centre this many times; LSST nIterForPsf, 3."
    )
    min_stars: int = Field(3, ge=1, description="Fewest stars for a PSF model; LSST minimum for psfex.")
    wing_radius_fwhm: float = Field(
        2.0, gt=0, description="Beyond this many FWHM the model is its azimuthal mean (blended over 1 FWHM)."
    )


class RefcatColumns(_Frozen):
    """Column names of a reference catalog; ``{band}`` is replaced by the band."""

    ra: str = Field("ra", description="Right ascension column (deg, ICRS).")
    dec: str = Field("dec", description="Declination column (deg, ICRS).")
    mag: str = Field("{band}_mag", description="AB magnitude column template.")
    mag_err: str = Field("{band}_mag_err", description="Magnitude error column template (optional in the file).")


class PhotoCalConfig(_Frozen):
    """Photometric calibration against a reference catalog (LSST ``PhotoCalConfig``)."""

    match_radius_arcsec: float = Field(
        1.0, gt=0, description="Largest source-reference separation (arcsec); LSST matchRadius role, 1.0."
    )
    min_snr: float = Field(
        10.0, gt=0, description="Least PSF-flux S/N of a calibration star; LSST photoCal S/N cut role."
    )
    psf_fit_radius_fwhm: float = Field(
        1.5, gt=0, description="PSF fluxes are fitted within this many FWHM of the star (neighbours stay out)."
    )
    isolation_radius_fwhm: float = Field(
        4.0, gt=0, description="A calibration star has no other peak within this many FWHM..."
    )
    isolation_flux_ratio: float = Field(
        0.05, ge=0, description="...whose smoothed peak exceeds this fraction of the star's."
    )
    max_size_excess: float = Field(
        0.15, gt=0, description="Largest |moment radius / PSF's - 1| of a calibration star (blends are bigger)."
    )
    systematic_err: float = Field(
        0.01, ge=0, description="Per-star magnitude error floor in the zero-point fit (mag)."
    )
    n_sigma_clip: float = Field(3.0, gt=0, description="Clip of zero-point outliers; LSST sigmaMax role, 3.0.")
    n_iter: int = Field(5, ge=1, description="Clipping iterations; LSST nIter, 20.")
    min_matches: int = Field(3, ge=1, description="Fewest matched stars for a measured zero point.")
    default_mag_err: float = Field(
        0.02, gt=0, description="Reference magnitude error when the catalog has none (mag)."
    )
    flux_mag0_per_second: float = Field(
        10 ** (0.4 * 28.0),
        gt=0,
        description="Nominal flux (image units/s) of mag 0 when the input has no calibration; LSST fluxMag0T1.",
    )
    columns: RefcatColumns = Field(default_factory=RefcatColumns, description="Reference catalog columns.")


class CharacterizeConfig(_Frozen):
    """Everything :func:`coadd_core.characterize.characterize` does (LSST characterizeImage)."""

    background: BackgroundConfig = Field(
        default_factory=BackgroundConfig, description="Sky background model; LSST background subtask."
    )
    detection: DetectionConfig = Field(
        default_factory=DetectionConfig, description="Source detection (DETECTED plane); LSST detection subtask."
    )
    cosmic_ray: CosmicRayConfig = Field(
        default_factory=CosmicRayConfig, description="Cosmic-ray repair; LSST repair.cosmicray."
    )
    psf: PsfMeasureConfig = Field(default_factory=PsfMeasureConfig, description="PSF measurement.")
    photocal: PhotoCalConfig = Field(default_factory=PhotoCalConfig, description="Photometric calibration.")
    initial_psf_fwhm: float = Field(
        4.0, gt=0, description="FWHM (px) of the Gaussian PSF assumed before measuring one; LSST installSimplePsf.fwhm."
    )
    psf_iterations: int = Field(
        2, ge=1, description="Detect / measure-PSF passes, each using the last PSF; LSST psfIterations, 2."
    )
    redetect_tolerance: float = Field(
        0.02, ge=0, description="Detect again when the final PSF sigma differs by more than this fraction."
    )
    do_measure_psf: bool = Field(
        True, description="Measure a PSF model (else keep the input's); LSST doMeasurePsf, True."
    )
    do_photocal: bool = Field(
        True, description="Calibrate against the refcat when one is given; LSST doPhotoCal, True."
    )
