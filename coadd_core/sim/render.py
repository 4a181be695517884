"""Render one CCD of one exposure: light -> charge -> raw ADU with bias and overscan.

Order (what a real CCD does): sky, sources, trails and ghosts are *light* (before the
flat); the response map multiplies them; dark current adds charge; photon noise; cosmic
rays add charge (not flat-fielded); charge above full well bleeds along the column;
each amplifier converts to ADU with its gain, bias level and ramp (also in its overscan),
fixed bias pattern and read noise, and clips at its saturation level.

Each source is drawn by GalSim on its own stamp of the CCD image (a view, no copy).
Random streams are derived from (seed, exposure, detector) so a CCD renders identically
in any process and in any order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import galsim
import numpy as np

from coadd_core.camera import Detector
from coadd_core.sim.artifacts import CosmicRay, add_cosmic_rays, draw_ghost, draw_trail
from coadd_core.sim.calibs import AmpElectronics, bias_pattern, dark_map, response_map
from coadd_core.sim.conditions import Exposure
from coadd_core.sim.config import ArtifactConfig, DetectorEffectsConfig
from coadd_core.sim.scene import galaxy_trunc_factor

__all__ = [
    "SOURCE_DTYPE",
    "CcdTask",
    "CcdRender",
    "RenderOptions",
    "render_ccd",
    "render_electrons",
    "electrons_to_raw",
    "bleed_saturation",
    "star_stamp_radius",
    "make_psf",
    "photon_noise",
]

SOURCE_DTYPE = np.dtype(
    [
        ("id", "i8"),
        ("x", "f8"),  # assembled pixel position
        ("y", "f8"),
        ("counts", "f8"),  # electrons at unit flat
        ("sersic_n", "f8"),  # NaN for point sources
        ("hlr", "f8"),  # half-light radius (arcsec)
        ("g", "f8"),  # |shear| (a-b)/(a+b)
        ("beta_deg", "f8"),  # major axis angle from +xi (East) towards +eta (North)
        ("trail_xi", "f8"),  # motion during the exposure (arcsec)
        ("trail_eta", "f8"),
        ("radius", "i4"),  # stamp half-size (px)
    ]
)

_TAG_PHOTON, _TAG_COSMIC, _TAG_READ, _TAG_JITTER = 1, 2, 3, 4


@dataclass(frozen=True)
class RenderOptions:
    """Switches for the parts of a render (all on for real files; tests turn some off)."""

    sources: bool = True
    sky: bool = True
    artifacts: bool = True
    flat: bool = True
    dark: bool = True
    noise: bool = True


@dataclass(frozen=True)
class CcdTask:
    """Everything needed to render one CCD of one exposure, small enough to pickle."""

    exposure: Exposure
    detector: Detector
    wcs_cards: dict[str, Any]
    electronics: tuple[AmpElectronics, ...]
    effects: DetectorEffectsConfig
    artifacts: ArtifactConfig
    seed: int
    pixel_scale: float
    sky_e: float = 0.0
    sources: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=SOURCE_DTYPE))
    trails: tuple[tuple[float, float, float, float, float, float], ...] = ()
    ghosts: tuple[tuple[float, float, float, float, float], ...] = ()
    folding_threshold: float = 5e-3

    def rng(self, tag: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.exposure.expnum, self.detector.id, tag])

    def bias_jitter(self) -> tuple[float, ...]:
        """Per-amp bias level offset of this exposure (ADU)."""
        rng = self.rng(_TAG_JITTER)
        return tuple(float(v) for v in rng.normal(0.0, self.effects.bias_jitter_adu, len(self.electronics)))


@dataclass(frozen=True)
class CcdRender:
    """A rendered CCD: raw uint16 pixels and the cosmic rays that were added."""

    expnum: int
    detector: str
    raw: np.ndarray
    cosmic_rays: tuple[CosmicRay, ...]
    n_saturated: int


def make_psf(exposure: Exposure, gsparams: galsim.GSParams | None = None) -> galsim.GSObject:
    """The visit's PSF: a Moffat of the recorded FWHM with a small shear."""
    c = exposure.conditions
    if c is None:
        raise ValueError("calibration exposures have no PSF")
    psf = galsim.Moffat(beta=c.moffat_beta, fwhm=c.seeing_fwhm_arcsec, gsparams=gsparams)
    if c.psf_g1 or c.psf_g2:
        psf = psf.shear(g1=c.psf_g1, g2=c.psf_g2)
    return psf


def star_stamp_radius(counts: np.ndarray, fwhm_px: float, beta: float) -> np.ndarray:
    """Stamp half-size (px) leaving out a negligible part of a Moffat star's flux.

    The flux outside radius R is (1 + (R/alpha)^2)^(1 - beta); we allow at most 1e-3 of
    the flux or 30 e-, whichever is smaller.
    """
    counts = np.maximum(np.asarray(counts, dtype=float), 1.0)
    alpha = fwhm_px / (2.0 * math.sqrt(2 ** (1.0 / beta) - 1.0))
    frac = np.clip(30.0 / counts, 1e-8, 1e-3)
    r = alpha * np.sqrt(frac ** (1.0 / (1.0 - beta)) - 1.0)
    return np.clip(np.ceil(r), 8, 400).astype(int)


def _source_object(src: np.void, psf: galsim.GSObject, gsparams: galsim.GSParams) -> galsim.GSObject:
    counts = float(src["counts"])
    if math.isnan(src["sersic_n"]):
        trail = math.hypot(src["trail_xi"], src["trail_eta"])
        if trail <= 0.05:
            return psf.withFlux(counts)
        # a moving point source: the PSF swept along its path during the exposure
        k = max(3, int(math.ceil(trail / 0.1)))
        steps = np.linspace(-0.5, 0.5, k)
        return galsim.Sum(
            [psf.shift(float(s * src["trail_xi"]), float(s * src["trail_eta"])) for s in steps], gsparams=gsparams
        ).withFlux(counts)
    n = float(src["sersic_n"])
    hlr = float(src["hlr"])
    gal = galsim.Sersic(
        n=n, half_light_radius=hlr, trunc=float(galaxy_trunc_factor(n)) * hlr, flux=counts, gsparams=gsparams
    )
    if src["g"] > 0:
        gal = gal.shear(g=float(src["g"]), beta=float(src["beta_deg"]) * galsim.degrees)
    return galsim.Convolve([gal, psf], gsparams=gsparams)


def _draw_sources(light: np.ndarray, task: CcdTask) -> None:
    if len(task.sources) == 0:
        return
    gsparams = galsim.GSParams(folding_threshold=task.folding_threshold)
    psf = make_psf(task.exposure, gsparams)
    c = task.wcs_cards
    wcs = galsim.JacobianWCS(c["CD1_1"] * 3600.0, c["CD1_2"] * 3600.0, c["CD2_1"] * 3600.0, c["CD2_2"] * 3600.0)
    image = galsim.ImageF(light, xmin=0, ymin=0, wcs=wcs)
    full = image.bounds
    for src in task.sources:
        ix, iy, r = int(math.floor(src["x"] + 0.5)), int(math.floor(src["y"] + 0.5)), int(src["radius"])
        bounds = galsim.BoundsI(ix - r, ix + r, iy - r, iy + r) & full
        if not bounds.isDefined():
            continue
        obj = _source_object(src, psf, gsparams)
        obj.drawImage(
            image=image[bounds], center=galsim.PositionD(float(src["x"]), float(src["y"])), add_to_image=True
        )


def photon_noise(expected: np.ndarray, rng: np.random.Generator, gaussian_above: float = 100.0) -> np.ndarray:
    """Poisson draws of ``expected`` electrons (float32).

    Above ``gaussian_above`` electrons the Poisson law is replaced by its normal limit
    (rounded), indistinguishable there and several times faster on full CCDs.
    """
    high = expected >= gaussian_above
    n_high = int(np.count_nonzero(high))
    if n_high == 0:
        return rng.poisson(expected).astype(np.float32)
    if n_high == expected.size:
        out = expected + np.sqrt(expected) * rng.standard_normal(expected.shape, dtype=np.float32)
        return np.rint(out, out=out)
    out = np.empty(expected.shape, dtype=np.float32)
    low = ~high
    out[low] = rng.poisson(expected[low])
    lam = expected[high]
    out[high] = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32))
    return out


def bleed_saturation(charge: np.ndarray, full_well: np.ndarray) -> np.ndarray:
    """Spill charge above full well up and down its column, conserving it; in place.

    Each run of over-full pixels is capped at full well and its excess shared equally
    between the pixels above and below, filling them to full well in turn; charge that
    reaches the end of a column is lost. Returns the mask of pixels at full well.
    """
    ny = charge.shape[0]
    over_cols = np.flatnonzero((charge > full_well[None, :]).any(axis=0))
    for c in over_cols:
        fw = float(full_well[c])
        col = charge[:, c].astype(np.float64)
        for _ in range(1000):
            over = col > fw
            if not over.any():
                break
            edges = np.flatnonzero(np.diff(np.concatenate(([0], over.astype(np.int8), [0]))))
            for a, b in zip(edges[::2], edges[1::2] - 1):
                excess = float(np.sum(col[a : b + 1] - fw))
                col[a : b + 1] = fw
                _spill(col, b + 1, ny, 1, 0.5 * excess, fw)
                _spill(col, a - 1, -1, -1, 0.5 * excess, fw)
        charge[:, c] = col
    # charge is float32: compare with a tolerance above its rounding (0.1 e- at 1e5 e-)
    return charge >= (full_well * (1.0 - 1e-6)).astype(charge.dtype)[None, :]


def _spill(col: np.ndarray, start: int, stop: int, step: int, amount: float, fw: float) -> None:
    if amount <= 0 or start == stop:
        return
    idx = np.arange(start, stop, step)
    room = np.clip(fw - col[idx], 0.0, None)
    filled = np.cumsum(room)
    k = int(np.searchsorted(filled, amount))
    col[idx[:k]] = np.maximum(col[idx[:k]], fw)
    if k < len(idx):
        col[idx[k]] += amount - (filled[k - 1] if k > 0 else 0.0)


def render_electrons(
    task: CcdTask, options: RenderOptions = RenderOptions()
) -> tuple[np.ndarray, tuple[CosmicRay, ...], np.ndarray]:
    """Charge image (electrons, assembled float32), cosmic rays added, full-well mask."""
    exp = task.exposure
    det = task.detector
    h, w = det.bbox.shape
    light = np.zeros((h, w), dtype=np.float32)
    if exp.kind == "science":
        if options.sources:
            _draw_sources(light, task)
        if options.sky:
            light += np.float32(task.sky_e)
        if options.artifacts:
            for x1, y1, x2, y2, sigma, peak in task.trails:
                draw_trail(light, x1, y1, x2, y2, sigma, peak)
            for xc, yc, radius, inner, peak in task.ghosts:
                draw_ghost(light, xc, yc, radius, inner, peak)
    elif exp.kind == "flat":
        light += np.float32(exp.flat_level_e)
    if options.flat and exp.kind in ("science", "flat"):
        light *= response_map(det, exp.band, task.effects, task.seed)
    if options.dark and exp.dark_time > 0:
        uniform, hot = dark_map(det, task.effects, task.seed, exp.dark_time)
        light += np.float32(uniform)
        for box, charge in hot:
            light[box.slices(det.bbox)] += np.float32(charge)
    if options.noise and light.any():
        charge = photon_noise(np.maximum(light, 0.0), task.rng(_TAG_PHOTON))
    else:
        charge = light
    rays: tuple[CosmicRay, ...] = ()
    if options.artifacts and exp.dark_time > 0:
        rays = tuple(add_cosmic_rays(charge, task.artifacts, exp.dark_time, det.pixel_size_mm, task.rng(_TAG_COSMIC)))
    full_well = np.empty(w, dtype=np.float64)
    for amp, elec in zip(det.amplifiers, task.electronics):
        full_well[amp.bbox.x0 : amp.bbox.x1 + 1] = elec.full_well_e
    saturated = bleed_saturation(charge, full_well)
    return charge, rays, saturated


def electrons_to_raw(
    charge: np.ndarray, saturated: np.ndarray, task: CcdTask, options: RenderOptions = RenderOptions()
) -> np.ndarray:
    """Read a charge image out through the amplifiers into a raw uint16 frame."""
    det = task.detector
    raw = np.zeros((det.raw_height, det.raw_width), dtype=np.float32)
    rows = np.arange(det.raw_height)
    pattern = bias_pattern(det, task.effects, task.seed)
    jitter = task.bias_jitter()
    read_rng = task.rng(_TAG_READ)
    for amp, elec, dj in zip(det.amplifiers, task.electronics, jitter):
        columns = amp.raw_bbox
        if not amp.raw_serial_overscan_bbox.is_empty():
            columns = columns.union(amp.raw_serial_overscan_bbox)
        region = raw[:, columns.x0 : columns.x1 + 1]
        region += (elec.row_bias(rows, det.raw_height) + dj).astype(np.float32)[:, None]
        data = amp.raw_data_bbox.slices(det.raw_bbox)
        src = amp.bbox.slices(det.bbox)
        raw[data] += pattern[src] + charge[src] / np.float32(elec.gain)
        if options.noise:
            region += read_rng.standard_normal(size=region.shape, dtype=np.float32) * np.float32(elec.read_noise / elec.gain)
        np.minimum(region, np.float32(elec.saturation), out=region)
        raw[data][saturated[src]] = np.float32(elec.saturation)  # basic slicing: a view
    np.rint(raw, out=raw)
    np.clip(raw, 0, 65535, out=raw)
    return raw.astype(np.uint16)


def render_ccd(task: CcdTask, options: RenderOptions = RenderOptions()) -> CcdRender:
    """Render one CCD of one exposure into raw pixels."""
    charge, rays, saturated = render_electrons(task, options)
    raw = electrons_to_raw(charge, saturated, task, options)
    return CcdRender(
        expnum=task.exposure.expnum,
        detector=task.detector.name,
        raw=raw,
        cosmic_rays=rays,
        n_saturated=int(saturated.sum()),
    )
