"""The truth catalog: one list of sources that every exposure is rendered from.

Kinds: ``star`` (static point sources, a few bright enough to saturate), ``galaxy``
(truncated Sersic profiles), ``variable`` (point sources with a sinusoidal light curve,
some near the detection limit, or flare stars: constant below the single-visit limit but
for one visit's flare) and ``asteroid`` (a point source moving along a great circle). Ordinary sources are
scattered over each CCD's footprint at the undithered pointing; the special ones are
placed where every visit (or as many as possible) sees them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from astropy.table import Table

from coadd_core.camera import Detector
from coadd_core.sim.conditions import Exposure
from coadd_core.sim.config import SimConfig
from coadd_core.sim.geometry import DetectorOnSky, fp_to_sky_matrix, inverse_gnomonic, offset_by

__all__ = [
    "BANDS",
    "AB_ZERO_NJY",
    "mag_to_njy",
    "make_catalog",
    "variable_mag",
    "asteroid_position",
    "source_positions",
    "galaxy_trunc_factor",
]

log = logging.getLogger(__name__)

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
AB_ZERO_NJY = 3631.0e9
"""Flux (nJy) of an AB magnitude 0 source."""


def mag_to_njy(mag: np.ndarray | float) -> np.ndarray:
    return AB_ZERO_NJY * 10 ** (-0.4 * np.asarray(mag, dtype=float))


def galaxy_trunc_factor(sersic_n: np.ndarray | float) -> np.ndarray:
    """Truncation radius / half-light radius: wide enough to keep the profile's character."""
    return np.where(np.asarray(sersic_n) >= 2.5, 8.0, 6.0)


def _power_law_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm proportional to 10**(slope*m) on [lo, hi]."""
    u = rng.uniform(0.0, 1.0, size=n)
    if abs(slope) < 1e-9:
        return lo + u * (hi - lo)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _star_colors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Colours along a rough stellar locus, relative to r."""
    gr = rng.uniform(0.25, 1.45, size=n)
    return {
        "u": gr + 0.9 + 0.9 * gr + rng.normal(0, 0.08, n),
        "g": gr,
        "r": np.zeros(n),
        "i": -(0.05 + 0.42 * gr + rng.normal(0, 0.03, n)),
        "z": -(0.07 + 0.62 * gr + rng.normal(0, 0.04, n)),
    }


def _galaxy_colors(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    gr = rng.uniform(0.3, 1.0, size=n)
    ri = rng.uniform(0.2, 0.6, size=n)
    return {
        "u": gr + rng.uniform(0.5, 1.6, size=n),
        "g": gr,
        "r": np.zeros(n),
        "i": -ri,
        "z": -(ri + rng.uniform(0.05, 0.4, size=n)),
    }


@dataclass
class _Block:
    """Columns of one group of sources before they are stacked into the catalog."""

    kind: str
    ra: np.ndarray
    dec: np.ndarray
    ref_mag: np.ndarray
    colors: dict[str, np.ndarray]
    detector: np.ndarray
    bright: bool = False

    def __len__(self) -> int:
        return len(self.ra)


def _footprint_sampler(config: SimConfig, detectors: Sequence[Detector], pixel_scale: float, plate: float):
    """Uniform sampler of sky positions inside each CCD at the undithered, unrotated pointing."""
    obs = config.observing
    m = fp_to_sky_matrix(0.0, plate)
    rects = []
    for det in detectors:
        corners = det.bbox.corners()
        fx, fy = det.pixel_to_focal_plane(corners[:, 0], corners[:, 1])
        xi, eta = m @ np.vstack([fx, fy])
        rects.append((xi.min(), xi.max(), eta.min(), eta.max()))

    def sample(rng: np.random.Generator, det_index: int, n: int, inset_px: float = 0.0):
        x0, x1, y0, y1 = rects[det_index]
        inset = inset_px * pixel_scale
        xi = rng.uniform(x0 + inset, x1 - inset, size=n)
        eta = rng.uniform(y0 + inset, y1 - inset, size=n)
        return inverse_gnomonic(xi / 3600.0, eta / 3600.0, obs.ra_deg, obs.dec_deg)

    def area_deg2(det_index: int) -> float:
        x0, x1, y0, y1 = rects[det_index]
        return (x1 - x0) * (y1 - y0) / 3600.0**2

    return sample, area_deg2


def _visibility(
    ra: np.ndarray, dec: np.ndarray, views: Sequence[Sequence[DetectorOnSky]], margin: float
) -> np.ndarray:
    """Number of exposures (outer sequence) in which each position lands cleanly on a CCD.

    Clean: at least ``margin`` px from the CCD edges and from its defect boxes, so the
    special sources can be measured in every visit.
    """
    count = np.zeros(len(ra), dtype=int)
    for exposure_views in views:
        seen = np.zeros(len(ra), dtype=bool)
        for view in exposure_views:
            x, y = view.sky_to_pixel(ra, dec)
            ok = view.contains(x, y, margin)
            for box in view.detector.defects:
                ok &= ~(
                    (x > box.x0 - margin) & (x < box.x1 + margin) & (y > box.y0 - margin) & (y < box.y1 + margin)
                )
            seen |= ok
        count += seen
    return count


def _separated(ra: float, dec: float, taken: list[tuple[float, float, float]], scale: float = 1.0) -> bool:
    """True if (ra, dec) keeps ``scale`` times each taken source's minimum separation."""
    for ra2, dec2, min_sep in taken:
        dra = (ra - ra2) * math.cos(math.radians(dec))
        if math.hypot(dra, dec - dec2) * 3600.0 < min_sep * scale:
            return False
    return True


def _place_special(
    rng: np.random.Generator,
    sample,
    det_index: int,
    views,
    margin: float,
    taken: list[tuple[float, float, float]],
    min_sep: float,
) -> tuple[float, float]:
    """A position seen by as many visits as possible, clear of other special sources.

    Coverage comes first: among the candidates seen by the most visits, the first one
    clear of the others is taken, then one at half the clearance, then any.
    """
    ra, dec = sample(rng, det_index, 1000, inset_px=margin)
    seen = _visibility(ra, dec, views, margin)
    order = np.lexsort((rng.uniform(size=len(ra)), -seen))
    best = order[seen[order] == seen.max()]
    if seen.max() < len(views):
        log.info("special source on detector %d is seen in %d of %d visits only", det_index, seen.max(), len(views))
    for scale in (1.0, 0.5):
        for k in best:
            if _separated(float(ra[k]), float(dec[k]), taken, scale):
                taken.append((float(ra[k]), float(dec[k]), min_sep))
                return float(ra[k]), float(dec[k])
    k = best[0]
    taken.append((float(ra[k]), float(dec[k]), min_sep))
    return float(ra[k]), float(dec[k])


def asteroid_position(row, mjd: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sky position of an asteroid catalog row at ``mjd`` (great-circle motion)."""
    hours = (np.asarray(mjd, dtype=float) - row["ast_t0_mjd"]) * 24.0
    dist = row["ast_rate_arcsec_per_hour"] * hours / 3600.0
    pa = np.where(dist >= 0, row["ast_pa_deg"], row["ast_pa_deg"] + 180.0)
    return offset_by(row["ra"], row["dec"], pa, np.abs(dist))


def variable_mag(row, band: str, mjd: float | np.ndarray) -> np.ndarray:
    """Magnitude of a variable star catalog row in ``band`` at ``mjd``: a sinusoid, plus
    a flare (``var_flare_mag`` brighter from ``var_flare_start_mjd`` to ``_end_mjd``)."""
    t = np.asarray(mjd, dtype=float)
    phase = 2 * np.pi * (t - row["var_t0_mjd"]) / row["var_period_days"]
    mag = row[f"{band}_mag"] + row["var_amplitude_mag"] * np.sin(phase + row["var_phase_rad"])
    if "var_flare_mag" in row.colnames and row["var_flare_mag"] > 0:
        flaring = (t >= row["var_flare_start_mjd"]) & (t <= row["var_flare_end_mjd"])
        mag = mag - row["var_flare_mag"] * flaring
    return mag


def source_positions(catalog: Table, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of every catalog source at ``mjd`` (asteroids moved, others fixed)."""
    ra = np.array(catalog["ra"], dtype=float)
    dec = np.array(catalog["dec"], dtype=float)
    for i in np.flatnonzero(np.asarray(catalog["kind"]) == "asteroid"):
        a, d = asteroid_position(catalog[i], mjd)
        ra[i], dec[i] = float(a), float(d)
    return ra, dec


def _add_flares(
    table: Table, rows: np.ndarray, mag_range: tuple[float, float], science: Sequence[Exposure],
    rng: np.random.Generator,
) -> None:
    """One flare for each of ``rows``, ``mag_range`` brighter during one visit's exposure."""
    if "var_flare_mag" not in table.colnames:
        n = len(table)
        table["var_flare_mag"] = np.zeros(n)
        table["var_flare_start_mjd"] = np.full(n, np.nan)
        table["var_flare_end_mjd"] = np.full(n, np.nan)
    for i in rows:
        visit = science[int(rng.integers(len(science)))]
        table["var_flare_mag"][i] = float(rng.uniform(*mag_range))
        table["var_flare_start_mjd"][i] = visit.mjd_start
        table["var_flare_end_mjd"][i] = visit.mjd_end


def _near_limit_blocks(
    count: int, mag_range: tuple[float, float], detectors: Sequence[Detector], sample, views, margin: float,
    taken: list[tuple[float, float, float]], rng: np.random.Generator,
) -> list[_Block]:
    """``count`` variables per CCD near the detection limit (faint variables, flare stars)."""
    blocks = []
    for k, det in enumerate(detectors):
        pos = [_place_special(rng, sample, k, views, margin, taken, 8.0) for _ in range(count)]
        blocks.append(
            _Block("variable", np.array([p[0] for p in pos]), np.array([p[1] for p in pos]),
                   rng.uniform(*mag_range, size=count), _star_colors(rng, count), np.full(count, det.name))
        )
    return blocks


def _light_curve(
    rng: np.random.Generator, amplitude_range: tuple[float, float], period_range: tuple[float, float],
    times: np.ndarray, mjd_ref: float,
) -> tuple[float, float, float]:
    """Semi-amplitude, period and phase of a sinusoid that changes between every pair of
    consecutive visits (``times``)."""
    amplitude = float(rng.uniform(*amplitude_range))
    for _ in range(200):
        period = float(rng.uniform(*period_range))
        phase = float(rng.uniform(0.0, 2 * np.pi))
        curve = amplitude * np.sin(2 * np.pi * (times - mjd_ref) / period + phase)
        if len(times) < 2 or np.min(np.abs(np.diff(curve))) >= 0.1 * amplitude:
            break
    return amplitude, period, phase


def make_catalog(
    config: SimConfig,
    detectors: Sequence[Detector],
    science: Sequence[Exposure],
    pixel_scale_arcsec: float,
    plate_scale_arcsec_per_mm: float,
    rng: np.random.Generator,
) -> Table:
    """Draw the truth catalog (see the module docstring for the kinds)."""
    sc = config.scene
    ref_band = config.observing.band
    sample, area_deg2 = _footprint_sampler(config, detectors, pixel_scale_arcsec, plate_scale_arcsec_per_mm)
    views = [
        [DetectorOnSky.create(d, e.ra_deg, e.dec_deg, e.rotation_deg, pixel_scale_arcsec) for d in detectors]
        for e in science
    ]
    blocks: list[_Block] = []
    taken: list[tuple[float, float, float]] = []
    margin = sc.edge_margin_px

    for k, det in enumerate(detectors):
        area = area_deg2(k)
        n_star = max(sc.min_stars_per_ccd, int(rng.poisson(sc.star_density_deg2 * area)))
        ra, dec = sample(rng, k, n_star)
        mags = _power_law_mags(rng, n_star, *sc.star_mag, sc.star_count_slope)
        blocks.append(_Block("star", ra, dec, mags, _star_colors(rng, n_star), np.full(n_star, det.name)))

        n_gal = max(sc.min_galaxies_per_ccd, int(rng.poisson(sc.galaxy_density_deg2 * area)))
        ra, dec = sample(rng, k, n_gal)
        mags = _power_law_mags(rng, n_gal, *sc.galaxy_mag, sc.galaxy_count_slope)
        blocks.append(_Block("galaxy", ra, dec, mags, _galaxy_colors(rng, n_gal), np.full(n_gal, det.name)))

        for kind, count, mag_range, sep in (
            ("star", sc.bright_stars_per_ccd, sc.bright_star_mag, 25.0),
            ("variable", sc.variables_per_ccd, sc.variable_mag, 8.0),
        ):
            if count == 0:
                continue
            pos = [_place_special(rng, sample, k, views, margin, taken, sep) for _ in range(count)]
            blocks.append(
                _Block(
                    kind,
                    np.array([p[0] for p in pos]),
                    np.array([p[1] for p in pos]),
                    rng.uniform(*mag_range, size=count),
                    _star_colors(rng, count),
                    np.full(count, det.name),
                    bright=kind == "star",
                )
            )

    # variables near the detection limit (faint variables, then flare stars), each kind
    # from its own child stream, after the others and unseen by the asteroids' placement:
    # the rest of the scene (and of the survey) is drawn as without them
    near: list[tuple[float, float, float]] = list(taken)
    streams: dict[str, np.random.Generator] = {}
    for name, count, mag_range in (
        ("faint", sc.faint_variables_per_ccd, sc.faint_variable_mag),
        ("flare", sc.flare_stars_per_ccd, sc.flare_star_mag),
    ):
        if count:
            streams[name] = rng.spawn(1)[0]
            blocks += _near_limit_blocks(count, mag_range, detectors, sample, views, margin, near, streams[name])
    n_faint = sc.faint_variables_per_ccd * len(detectors) if "faint" in streams else 0
    n_flare = sc.flare_stars_per_ccd * len(detectors) if "flare" in streams else 0
    table = _stack(blocks, ref_band)
    n = len(table)
    is_faint = np.zeros(n, bool)
    is_faint[n - n_faint - n_flare : n - n_flare] = True
    is_flare = np.zeros(n, bool)
    is_flare[n - n_flare :] = True
    table["near_limit"] = is_faint | is_flare  # artifacts are not kept clear of them
    # galaxy shapes
    is_gal = np.asarray(table["kind"]) == "galaxy"
    ng = int(is_gal.sum())
    sersic = np.full(n, np.nan)
    hlr = np.full(n, np.nan)
    ell = np.zeros(n)
    pa = np.zeros(n)
    if ng:
        sersic[is_gal] = rng.choice(np.asarray(sc.galaxy_sersic_n, dtype=float), size=ng)
        gmag = np.asarray(table[f"{ref_band}_mag"])[is_gal]
        median = sc.galaxy_hlr_arcsec_at_20 * 10 ** (sc.galaxy_hlr_mag_slope * (gmag - 20.0))
        hlr[is_gal] = np.clip(median * np.exp(rng.normal(0.0, 0.35, size=ng)), 0.15, 4.0)
        e = np.hypot(*rng.normal(0.0, sc.galaxy_ellipticity_rms, size=(2, ng)))
        ell[is_gal] = np.minimum(e, 0.7)
        pa[is_gal] = rng.uniform(0.0, 180.0, size=ng)
    table["sersic_n"] = sersic
    table["half_light_radius_arcsec"] = hlr
    table["ellipticity"] = ell
    table["position_angle_deg"] = pa

    # variable stars: sinusoids (flare stars are constant between flares)
    is_var = np.asarray(table["kind"]) == "variable"
    mjd_ref = science[0].mjd_start if science else 0.0
    for name in ("var_amplitude_mag", "var_period_days", "var_phase_rad", "var_t0_mjd"):
        table[name] = np.full(n, np.nan)
    times = np.array([e.mjd_mid for e in science])
    for i in np.flatnonzero(is_var):
        if is_flare[i]:
            amplitude, period, phase = 0.0, 1.0, 0.0
        else:
            gen, amplitudes = (streams["faint"], sc.faint_variable_amplitude_mag) if is_faint[i] else (rng, sc.variable_amplitude_mag)
            amplitude, period, phase = _light_curve(gen, amplitudes, sc.variable_period_days, times, mjd_ref)
        table["var_amplitude_mag"][i] = amplitude
        table["var_period_days"][i] = period
        table["var_phase_rad"][i] = phase
        table["var_t0_mjd"][i] = mjd_ref
    if science and sc.variable_flare_mag[1] > 0 and (is_var & ~is_flare).any():
        # from a child stream: the rest of the catalog is the same with or without flares
        _add_flares(table, np.flatnonzero(is_var & ~is_flare), sc.variable_flare_mag, science, rng.spawn(1)[0])
    if science and n_flare:
        _add_flares(table, np.flatnonzero(is_flare), sc.flare_star_flare_mag, science, streams["flare"])

    table = _add_asteroids(table, config, detectors, science, views, sample, taken, rng)
    table["id"] = np.arange(1, len(table) + 1, dtype=np.int64)
    cols = ["id"] + [c for c in table.colnames if c != "id"]
    table = table[cols]
    table.meta["reference_band"] = ref_band
    table.meta["flux_unit"] = "nJy"
    table.meta["sersic_truncation"] = "trunc radius = 6 hlr (n < 2.5) or 8 hlr; fluxes are within it"
    table.meta["position_angle"] = "degrees East of North of the major axis"
    table.meta["ellipticity"] = "(a - b) / (a + b)"
    return table


def _stack(blocks: list[_Block], ref_band: str) -> Table:
    kinds = np.concatenate([np.full(len(b), b.kind, dtype="<U8") for b in blocks]) if blocks else np.array([], dtype="<U8")
    table = Table()
    table["kind"] = kinds
    table["ra"] = np.concatenate([b.ra for b in blocks]) if blocks else np.array([])
    table["dec"] = np.concatenate([b.dec for b in blocks]) if blocks else np.array([])
    table["ra"].unit = "deg"
    table["dec"].unit = "deg"
    table["bright"] = np.concatenate([np.full(len(b), b.bright) for b in blocks]) if blocks else np.array([], bool)
    table["ref_detector"] = np.concatenate([b.detector for b in blocks]) if blocks else np.array([], dtype="<U5")
    ref = np.concatenate([b.ref_mag for b in blocks]) if blocks else np.array([])
    for band in BANDS:
        col = np.concatenate([b.colors[band] for b in blocks]) if blocks else np.array([])
        # colours are stored relative to r; shift so the reference band holds ref_mag
        ref_col = np.concatenate([b.colors[ref_band] for b in blocks]) if blocks else np.array([])
        table[f"{band}_mag"] = np.round(ref + col - ref_col, 5)
    for band in BANDS:
        table[f"{band}_flux_nJy"] = mag_to_njy(table[f"{band}_mag"])
    return table


def _add_asteroids(
    table: Table,
    config: SimConfig,
    detectors: Sequence[Detector],
    science: Sequence[Exposure],
    views: Sequence[Sequence[DetectorOnSky]],
    sample,
    taken: list[tuple[float, float, float]],
    rng: np.random.Generator,
) -> Table:
    """Asteroids on great-circle tracks that stay on the CCDs in as many visits as possible."""
    sc = config.scene
    for name in ("ast_rate_arcsec_per_hour", "ast_pa_deg", "ast_t0_mjd"):
        table[name] = np.full(len(table), np.nan)
    if sc.n_asteroids == 0 or not science:
        return table
    mjd_mid = np.array([e.mjd_mid for e in science])
    t_ref = float(0.5 * (mjd_mid.min() + mjd_mid.max()))
    rows = []
    for a in range(sc.n_asteroids):
        # coverage first (every visit if possible), then clearance from other special sources
        best: tuple[int, bool, dict] | None = None
        for _ in range(400):
            det_index = int(rng.integers(len(detectors)))
            ra0, dec0 = sample(rng, det_index, 1, inset_px=sc.edge_margin_px)
            row = {
                "ra": float(ra0[0]),
                "dec": float(dec0[0]),
                "ast_rate_arcsec_per_hour": float(rng.uniform(*sc.asteroid_rate_arcsec_per_hour)),
                "ast_pa_deg": float(rng.uniform(0.0, 360.0)),
                "ast_t0_mjd": t_ref,
                "det_index": det_index,
            }
            seen = 0
            for e, exposure_views in zip(science, views):
                ra_t, dec_t = asteroid_position(row, e.mjd_mid)
                seen += int(_visibility(np.atleast_1d(ra_t), np.atleast_1d(dec_t), [exposure_views], sc.edge_margin_px)[0])
            clear = _separated(row["ra"], row["dec"], taken)
            if best is None or (seen, clear) > (best[0], best[1]):
                best = (seen, clear, row)
            if seen == len(science) and clear:
                break
        assert best is not None
        row = best[2]
        det_index = row["det_index"]
        if best[0] < len(science):
            log.info("asteroid %d stays on the CCDs in %d of %d visits only", a + 1, best[0], len(science))
        taken.append((row["ra"], row["dec"], 10.0))
        mag = float(rng.uniform(*sc.asteroid_mag))
        colors = {b: float(v[0]) for b, v in _galaxy_colors(rng, 1).items()}
        rows.append((row, mag, colors, detectors[det_index].name))
    ref_band = config.observing.band
    for row, mag, colors, det_name in rows:
        new = {c: np.nan for c in table.colnames}
        new.update(kind="asteroid", ra=row["ra"], dec=row["dec"], bright=False, ref_detector=det_name,
                   ellipticity=0.0, position_angle_deg=0.0)
        for band in BANDS:
            new[f"{band}_mag"] = round(mag + colors[band] - colors[ref_band], 5)
            new[f"{band}_flux_nJy"] = float(mag_to_njy(new[f"{band}_mag"]))
        for key in ("ast_rate_arcsec_per_hour", "ast_pa_deg", "ast_t0_mjd"):
            new[key] = row[key]
        table.add_row(new)
    return table
