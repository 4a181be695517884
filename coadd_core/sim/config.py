"""Configuration models of the survey simulator and the named presets.

Every field carries its default and meaning; presets are plain ``SimConfig`` instances
(``tiny`` for tests, ``demo`` for a few minutes of rendering, ``full`` for the whole
mosaic). Magnitudes are AB; zero points are the AB magnitude giving 1 e-/s at airmass 1
through a clear sky and a unit flat.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DetectorChoice",
    "ObservingConfig",
    "SceneConfig",
    "ArtifactConfig",
    "DetectorEffectsConfig",
    "CalibrationConfig",
    "RefcatConfig",
    "SimConfig",
    "PRESETS",
    "get_preset",
    "BAND_PHYSICAL_FILTERS",
]

Range = tuple[float, float]

BAND_PHYSICAL_FILTERS: dict[str, str] = {
    "u": "u.MP9302",
    "g": "g.MP9402",
    "r": "r.MP9602",
    "i": "i.MP9703",
    "z": "z.MP9901",
}
"""MegaPrime physical filter used for each band (third-generation filter set)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _ordered(value: Range) -> Range:
    lo, hi = value
    if hi < lo:
        raise ValueError(f"range {value} is reversed")
    return value


class DetectorChoice(_Model):
    """One simulated CCD: a camera detector, optionally re-sized (small test CCDs)."""

    name: str = Field(description="camera detector name, e.g. 'ccd13'")
    amp_width: int | None = Field(
        None, gt=0, description="imaging columns per amplifier; None = the camera's (1024)"
    )
    height: int | None = Field(None, gt=0, description="imaging rows; None = the camera's (4612)")
    focal_plane_mm: tuple[float, float] | None = Field(
        None, description="chip centre in the focal plane (mm); None = the camera's"
    )


class ObservingConfig(_Model):
    """The science visits: pointing, dithers, timing and observing conditions."""

    n_visits: int = Field(8, ge=1, description="number of science visits")
    band: str = Field("r", description="band of every science visit (u, g, r, i, z)")
    exposure_time: float = Field(300.0, gt=0, description="shutter-open time per visit (s)")
    start_utc: str = Field(
        "2015-03-21T08:00:00", description="UTC start of the first visit (22:00 HST, field near transit)"
    )
    visit_spacing_s: int = Field(420, gt=0, description="start-to-start time between visits (s)")
    ra_deg: float = Field(150.1, description="field centre RA (ICRS, deg)")
    dec_deg: float = Field(2.2, ge=-89.0, le=89.0, description="field centre Dec (ICRS, deg)")
    dither_arcsec: float = Field(
        60.0, ge=0, description="dither offsets are drawn uniformly inside this radius (visit 0 undithered)"
    )
    rotated_visit: int | None = Field(
        3, description="index of the visit rotated on the sky; None = no rotated visit"
    )
    rotation_deg: float = Field(
        60.0, description="position angle (E of N) of the focal-plane +y axis in the rotated visit"
    )
    seeing_fwhm_arcsec: Range = Field((0.6, 1.2), description="range of the per-visit PSF FWHM (arcsec)")
    moffat_beta: float = Field(3.5, gt=1.5, description="Moffat beta of the PSF")
    psf_ellipticity_rms: float = Field(0.02, ge=0, description="rms of each PSF shear component per visit")
    sky_mag_arcsec2: Range = Field((20.6, 21.0), description="range of the sky brightness (mag/arcsec^2)")
    transparency: Range = Field((0.85, 1.0), description="range of the fraction of source light passing clouds")
    zero_points: dict[str, float] = Field(
        default_factory=lambda: {"u": 25.7, "g": 26.9, "r": 26.7, "i": 26.4, "z": 25.4},
        description="AB mag giving 1 e-/s per band at airmass 1, clear sky, unit flat",
    )
    extinction: dict[str, float] = Field(
        default_factory=lambda: {"u": 0.35, "g": 0.15, "r": 0.10, "i": 0.04, "z": 0.03},
        description="atmospheric extinction per band (mag per airmass)",
    )
    run_id: str = Field("15AQ99", description="RUNID (science program)")
    target_name: str = Field("SIM.FIELD", description="OBJECT of science exposures")

    _check_seeing = field_validator("seeing_fwhm_arcsec", "sky_mag_arcsec2", "transparency")(_ordered)

    @property
    def physical_filter(self) -> str:
        return BAND_PHYSICAL_FILTERS[self.band]

    @model_validator(mode="after")
    def _check(self) -> "ObservingConfig":
        if self.band not in BAND_PHYSICAL_FILTERS:
            raise ValueError(f"unknown band {self.band!r}")
        if self.rotated_visit is not None and not 0 <= self.rotated_visit < self.n_visits:
            raise ValueError("rotated_visit must index a visit")
        return self


class SceneConfig(_Model):
    """The truth catalog: static stars, galaxies, variable stars and asteroids."""

    star_density_deg2: float = Field(4000.0, ge=0, description="stars per deg^2 within star_mag")
    star_mag: Range = Field((16.0, 24.0), description="reference-band magnitude range of ordinary stars")
    star_count_slope: float = Field(0.15, description="star counts rise as 10**(slope * mag)")
    galaxy_density_deg2: float = Field(40000.0, ge=0, description="galaxies per deg^2 within galaxy_mag")
    galaxy_mag: Range = Field((19.0, 25.0), description="reference-band magnitude range of galaxies")
    galaxy_count_slope: float = Field(0.35, description="galaxy counts rise as 10**(slope * mag)")
    galaxy_sersic_n: tuple[float, ...] = Field(
        (1.0, 1.0, 1.0, 1.5, 1.5, 4.0), description="Sersic indices drawn with equal odds (few values keep GalSim fast)"
    )
    galaxy_hlr_arcsec_at_20: float = Field(1.0, gt=0, description="median half-light radius at mag 20 (arcsec)")
    galaxy_hlr_mag_slope: float = Field(-0.09, description="log10 of the median radius changes by this per mag")
    galaxy_ellipticity_rms: float = Field(0.3, ge=0, description="rms of each intrinsic ellipticity component")
    min_stars_per_ccd: int = Field(0, ge=0, description="at least this many ordinary stars on each CCD")
    min_galaxies_per_ccd: int = Field(0, ge=0, description="at least this many galaxies on each CCD")
    bright_stars_per_ccd: int = Field(1, ge=0, description="stars bright enough to saturate, per CCD")
    bright_star_mag: Range = Field((12.5, 14.5), description="magnitude range of the saturating stars")
    variables_per_ccd: int = Field(2, ge=0, description="variable stars per CCD")
    variable_mag: Range = Field((17.5, 20.0), description="mean magnitude range of variable stars")
    variable_amplitude_mag: Range = Field((0.3, 0.8), description="range of the semi-amplitude (mag)")
    variable_period_days: Range = Field((0.04, 0.2), description="range of the (sinusoidal) period (d)")
    variable_flare_mag: Range = Field(
        (0.0, 0.0),
        description="brightening (mag) of each sinusoidal variable during one visit (a flare); (0, 0) = none",
    )
    faint_variables_per_ccd: int = Field(
        0, ge=0, description="variable stars near the single-visit detection limit, per CCD (seen at their brightest only)"
    )
    faint_variable_mag: Range = Field((24.5, 25.5), description="mean magnitude range of the faint variables")
    faint_variable_amplitude_mag: Range = Field((1.5, 2.0), description="semi-amplitude range of the faint variables (mag)")
    flare_stars_per_ccd: int = Field(
        0, ge=0,
        description="stars below the single-visit detection limit that flare in one visit, per CCD (only that "
        "visit detects them: the variables SafeClip clips)",
    )
    flare_star_mag: Range = Field((25.0, 25.5), description="quiescent magnitude range of the flare stars")
    flare_star_flare_mag: Range = Field((3.0, 3.5), description="brightening range of a flare star's flare (mag)")
    n_asteroids: int = Field(1, ge=0, description="moving objects in the field")
    asteroid_mag: Range = Field((19.0, 20.0), description="magnitude range of asteroids")
    asteroid_rate_arcsec_per_hour: Range = Field(
        (30.0, 45.0), description="range of the sky motion rate (main-belt rates near opposition)"
    )
    edge_margin_px: float = Field(30.0, ge=0, description="special objects stay this far inside a CCD")

    _check = field_validator(
        "star_mag", "galaxy_mag", "bright_star_mag", "variable_mag", "variable_amplitude_mag",
        "variable_period_days", "variable_flare_mag", "faint_variable_mag", "faint_variable_amplitude_mag",
        "flare_star_mag", "flare_star_flare_mag", "asteroid_mag", "asteroid_rate_arcsec_per_hour",
    )(_ordered)


class ArtifactConfig(_Model):
    """Transient artifacts: satellite trails, an optical ghost and cosmic rays."""

    trail_visits: tuple[int, ...] = Field((1, 5), description="indices of visits crossed by one satellite trail each")
    trail_width_arcsec: Range = Field((1.5, 3.0), description="range of the trail FWHM across (arcsec)")
    trail_sb_mag: Range = Field((20.0, 21.0), description="range of the peak surface brightness (mag/arcsec^2)")
    trail_angle_deg: Range = Field(
        (0.0, 180.0), description="range of the trail angle from the focal-plane +y axis (deg)"
    )
    ghost_visit: int | None = Field(2, description="index of the visit with an optical ghost; None = none")
    ghost_radius_arcsec: float = Field(80.0, gt=0, description="outer radius of the ghost (arcsec)")
    ghost_inner_fraction: float = Field(0.35, ge=0, lt=1, description="central hole radius / outer radius")
    ghost_sb_mag: float = Field(23.5, description="surface brightness of the ghost ring (mag/arcsec^2)")
    cosmic_ray_rate: float = Field(0.02, ge=0, description="cosmic rays per cm^2 per s of dark time")
    min_cosmic_rays_per_ccd: int = Field(0, ge=0, description="at least this many per CCD in exposures with dark time")
    cosmic_ray_length_px: float = Field(5.0, gt=0, description="mean projected track length (px, exponential)")
    cosmic_ray_max_length_px: float = Field(40.0, gt=0, description="longest track (px)")
    cosmic_ray_charge_per_px: Range = Field((400.0, 2500.0), description="range of deposited e- per px of track")

    _check = field_validator(
        "trail_width_arcsec", "trail_sb_mag", "trail_angle_deg", "cosmic_ray_charge_per_px"
    )(_ordered)


class DetectorEffectsConfig(_Model):
    """Instrument signatures the ISR stage has to remove."""

    bias_level_adu: Range = Field((1000.0, 1600.0), description="range of the per-amp bias level (ADU)")
    bias_ramp_adu: Range = Field((5.0, 20.0), description="range of the bias excess at the first row (ADU)")
    bias_ramp_rows: float = Field(
        0.05, gt=0, description="e-folding length of the bias ramp, as a fraction of the rows"
    )
    bias_slope_adu: Range = Field((-3.0, 3.0), description="range of the bias change from first to last row (ADU)")
    bias_jitter_adu: float = Field(2.0, ge=0, description="rms of the per-exposure bias level change (ADU)")
    bias_pattern_adu: float = Field(0.8, ge=0, description="rms of the fixed column pattern of the bias (ADU)")
    prnu: float = Field(0.01, ge=0, description="pixel response non-uniformity (rms)")
    vignetting: float = Field(0.12, ge=0, lt=1, description="flat deficit at vignetting_radius_mm")
    vignetting_radius_mm: float = Field(180.0, gt=0, description="focal-plane radius where the deficit applies")
    ccd_qe_rms: float = Field(0.03, ge=0, description="rms of the per-CCD, per-band response")
    hot_column_rate: float = Field(2.0, ge=0, description="dark current of hot defect columns (e-/s/px)")
    dead_response: float = Field(0.05, ge=0, le=1, description="response of dead defect columns")


class CalibrationConfig(_Model):
    """Bias, dark and dome-flat exposures taken before the night."""

    n_bias: int = Field(3, ge=0, description="bias exposures")
    n_dark: int = Field(3, ge=0, description="dark exposures")
    n_flat: int = Field(3, ge=0, description="flat exposures per flat band")
    dark_time: float = Field(300.0, gt=0, description="dark exposure time (s)")
    flat_time: float = Field(8.0, gt=0, description="flat exposure time (s)")
    flat_level_e: float = Field(30000.0, gt=0, description="flat illumination at unit response (e-/px)")
    flat_bands: tuple[str, ...] | None = Field(None, description="bands with flats; None = the science band")


class RefcatConfig(_Model):
    """Photometric reference catalog drawn from the truth stars."""

    name: str = Field("sim_ps1", description="catalog name: refcat/refcat_<name>.csv")
    bands: tuple[str, ...] = Field(("g", "r", "i", "z"), description="bands with magnitudes")
    mag_limit: float = Field(22.0, description="faintest reference-band magnitude kept")
    error_floor: float = Field(0.005, ge=0, description="systematic magnitude error floor")
    depth_mag: float = Field(23.0, description="magnitude with a 0.2 mag random error")
    include_variables: bool = Field(False, description="keep variable stars in the refcat")


class SimConfig(_Model):
    """A whole simulated survey."""

    name: str = Field("custom", description="preset name (recorded in the truth)")
    camera: str = Field("MegaPrime", description="camera definition to load")
    detectors: tuple[DetectorChoice, ...] = Field(description="CCDs to simulate")
    seed: int = Field(20150321, ge=0, description="random seed; same seed -> byte-identical files")
    first_expnum: int = Field(1800000, ge=0, description="odometer (EXPNUM) of the first exposure")
    observing: ObservingConfig = Field(default_factory=ObservingConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    artifacts: ArtifactConfig = Field(default_factory=ArtifactConfig)
    effects: DetectorEffectsConfig = Field(default_factory=DetectorEffectsConfig)
    calibrations: CalibrationConfig = Field(default_factory=CalibrationConfig)
    refcat: RefcatConfig = Field(default_factory=RefcatConfig)
    gsparams_folding_threshold: float = Field(
        5e-3, gt=0, description="GalSim folding threshold (FFT accuracy vs speed)"
    )

    @model_validator(mode="after")
    def _check(self) -> "SimConfig":
        names = [d.name for d in self.detectors]
        if not names or len(set(names)) != len(names):
            raise ValueError("detectors must be a non-empty list of distinct names")
        n = self.observing.n_visits
        for v in self.artifacts.trail_visits:
            if not 0 <= v < n:
                raise ValueError(f"trail visit {v} out of range")
        if self.artifacts.ghost_visit is not None and not 0 <= self.artifacts.ghost_visit < n:
            raise ValueError("ghost_visit out of range")
        return self

    @property
    def flat_bands(self) -> tuple[str, ...]:
        return self.calibrations.flat_bands or (self.observing.band,)


def _tiny() -> SimConfig:
    # Two 256 x 512 CCDs stacked North-South about the boresight (one per mosaic half,
    # so both orientations are exercised), 24 px apart.
    offset = 268 * 0.0135
    return SimConfig(
        name="tiny",
        detectors=(
            DetectorChoice(name="ccd13", amp_width=128, height=512, focal_plane_mm=(0.0, offset)),
            DetectorChoice(name="ccd22", amp_width=128, height=512, focal_plane_mm=(0.0, -offset)),
        ),
        seed=1234,
        observing=ObservingConfig(
            n_visits=4,
            dither_arcsec=6.0,
            rotated_visit=2,
            rotation_deg=30.0,
            seeing_fwhm_arcsec=(0.6, 1.2),
        ),
        scene=SceneConfig(
            star_mag=(16.0, 22.5),
            min_stars_per_ccd=24,
            min_galaxies_per_ccd=6,
            bright_stars_per_ccd=1,
            bright_star_mag=(13.5, 14.0),
            variables_per_ccd=1,
            variable_mag=(17.5, 19.0),
            n_asteroids=1,
            edge_margin_px=20.0,
        ),
        artifacts=ArtifactConfig(
            trail_visits=(1, 3),
            trail_angle_deg=(-12.0, 12.0),
            ghost_visit=0,
            ghost_radius_arcsec=12.0,
            ghost_sb_mag=22.5,
            min_cosmic_rays_per_ccd=4,
        ),
        calibrations=CalibrationConfig(n_bias=2, n_dark=1, n_flat=1),
    )


def _small() -> SimConfig:
    # Two 512 x 1024 CCDs (a quarter of a real one each way) stacked North-South as in
    # tiny, with the demo's eight visits: enough epochs for the CompareWarp temporal rule,
    # two satellite trails, a ghost, an asteroid moving a few PSF widths between visits
    # and two variable stars per CCD; rendered in seconds (the coadd truth tests run the
    # whole pipeline on it).
    offset = 524 * 0.0135
    return SimConfig(
        name="small",
        detectors=(
            DetectorChoice(name="ccd13", amp_width=256, height=1024, focal_plane_mm=(0.0, offset)),
            DetectorChoice(name="ccd22", amp_width=256, height=1024, focal_plane_mm=(0.0, -offset)),
        ),
        seed=4321,
        observing=ObservingConfig(
            n_visits=8,
            dither_arcsec=8.0,
            rotated_visit=3,
            rotation_deg=30.0,
            seeing_fwhm_arcsec=(0.6, 1.2),
        ),
        scene=SceneConfig(
            star_mag=(16.0, 22.5),
            min_stars_per_ccd=30,
            min_galaxies_per_ccd=10,
            bright_stars_per_ccd=1,
            bright_star_mag=(13.5, 14.0),
            variables_per_ccd=2,
            variable_mag=(17.5, 19.0),
            faint_variables_per_ccd=6,
            flare_stars_per_ccd=3,
            n_asteroids=1,
            edge_margin_px=40.0,
        ),
        artifacts=ArtifactConfig(
            trail_visits=(1, 5),
            trail_angle_deg=(-12.0, 12.0),
            ghost_visit=2,
            ghost_radius_arcsec=20.0,
            ghost_sb_mag=22.5,
            min_cosmic_rays_per_ccd=8,
        ),
        calibrations=CalibrationConfig(n_bias=2, n_dark=1, n_flat=1),
    )


def _demo() -> SimConfig:
    return SimConfig(
        name="demo",
        detectors=tuple(DetectorChoice(name=n) for n in ("ccd12", "ccd13", "ccd21", "ccd22")),
        seed=20150321,
        observing=ObservingConfig(n_visits=8, rotated_visit=3, rotation_deg=45.0, dither_arcsec=60.0),
        scene=SceneConfig(
            bright_stars_per_ccd=2, variables_per_ccd=2, faint_variables_per_ccd=4, flare_stars_per_ccd=2, n_asteroids=1
        ),
        artifacts=ArtifactConfig(trail_visits=(1, 5), ghost_visit=2),
        calibrations=CalibrationConfig(n_bias=3, n_dark=3, n_flat=3),
    )


def _full() -> SimConfig:
    return SimConfig(
        name="full",
        detectors=tuple(DetectorChoice(name=f"ccd{i:02d}") for i in range(36)),
        seed=20150321,
        observing=ObservingConfig(n_visits=8, rotated_visit=3, rotation_deg=45.0, dither_arcsec=90.0),
        scene=SceneConfig(bright_stars_per_ccd=2, variables_per_ccd=1, n_asteroids=2),
        artifacts=ArtifactConfig(trail_visits=(1, 5, 6), ghost_visit=2, ghost_radius_arcsec=120.0),
        calibrations=CalibrationConfig(n_bias=3, n_dark=3, n_flat=3),
    )


PRESETS: dict[str, SimConfig] = {"tiny": _tiny(), "small": _small(), "demo": _demo(), "full": _full()}
"""Named configurations: ``tiny`` (seconds, tests), ``small`` (tiny CCDs, 8 visits: coadd
tests), ``demo`` (4 CCDs, minutes), ``full`` (36 CCDs)."""

PresetName = Literal["tiny", "small", "demo", "full"]


def get_preset(name: str) -> SimConfig:
    """The preset configuration ``name`` (``tiny``, ``demo`` or ``full``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulation preset {name!r}; known: {sorted(PRESETS)}") from None
