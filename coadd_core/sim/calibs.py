"""Fixed instrument signatures: amplifier electronics, bias structure, dark and flat response.

These are properties of a detector, not of an exposure, so they are drawn from the seed
and the detector alone: every bias, dark, flat and science frame of a CCD shares them,
which is what makes master calibrations meaningful. Per-exposure changes (bias level
jitter, noise) are drawn by the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from coadd_core.camera import Detector
from coadd_core.geom import Box
from coadd_core.sim.config import DetectorEffectsConfig

__all__ = [
    "AmpElectronics",
    "amp_electronics",
    "bias_row_profile",
    "bias_pattern",
    "defect_kinds",
    "response_map",
    "dark_map",
    "detector_rng",
]

_BANDS = ("u", "g", "r", "i", "z")
# stream tags keep the random draws of different signatures independent
_TAG_ELECTRONICS, _TAG_PATTERN, _TAG_DEFECTS, _TAG_PRNU, _TAG_QE = 11, 12, 13, 14, 15


def detector_rng(seed: int, tag: int, detector: Detector, *extra: int) -> np.random.Generator:
    """A random stream that depends only on the seed, a purpose tag and the detector."""
    return np.random.default_rng([seed, tag, detector.id, *extra])


@dataclass(frozen=True)
class AmpElectronics:
    """What one amplifier adds to the charge it reads: gain, noise, bias with its ramp."""

    name: str
    gain: float
    read_noise: float
    saturation: float
    bias_level: float
    ramp_amplitude: float
    ramp_rows: float
    slope: float
    full_well_e: float

    def row_bias(self, rows: np.ndarray, n_rows: int) -> np.ndarray:
        """Bias (ADU, without the per-exposure jitter) of raw rows: level + ramp + slope."""
        rows = np.asarray(rows, dtype=np.float64)
        return (
            self.bias_level
            + self.ramp_amplitude * np.exp(-rows / self.ramp_rows)
            + self.slope * rows / max(n_rows - 1, 1)
        )


def amp_electronics(detector: Detector, effects: DetectorEffectsConfig, seed: int) -> tuple[AmpElectronics, ...]:
    """Per-amp electronics of a detector (gain, noise and saturation from the camera)."""
    rng = detector_rng(seed, _TAG_ELECTRONICS, detector)
    out = []
    for amp in detector.amplifiers:
        level = round(float(rng.uniform(*effects.bias_level_adu)), 2)
        out.append(
            AmpElectronics(
                name=amp.name,
                gain=amp.gain,
                read_noise=amp.read_noise,
                saturation=amp.saturation,
                bias_level=level,
                ramp_amplitude=round(float(rng.uniform(*effects.bias_ramp_adu)), 3),
                ramp_rows=effects.bias_ramp_rows * detector.bbox.height,
                slope=round(float(rng.uniform(*effects.bias_slope_adu)), 3),
                # a pixel at full well reads exactly the saturation level
                full_well_e=(amp.saturation - level) * amp.gain,
            )
        )
    return tuple(out)


def bias_row_profile(electronics: AmpElectronics, raw_height: int) -> np.ndarray:
    """Bias level of every raw row of an amplifier (ADU)."""
    return electronics.row_bias(np.arange(raw_height), raw_height)


@lru_cache(maxsize=4)
def bias_pattern(detector: Detector, effects: DetectorEffectsConfig, seed: int) -> np.ndarray:
    """Fixed 2-D bias structure of the imaging pixels (ADU, assembled shape).

    Column-to-column offsets plus a gentle gradient: what a master bias removes after the
    overscan (which only sees the row-dependent level) has been subtracted.
    """
    rng = detector_rng(seed, _TAG_PATTERN, detector)
    h, w = detector.bbox.shape
    columns = rng.normal(0.0, effects.bias_pattern_adu, size=w)
    x = np.linspace(-1.0, 1.0, w)
    y = np.linspace(-1.0, 1.0, h)
    gradient = 0.5 * effects.bias_pattern_adu * (x[None, :] * rng.uniform(-1, 1) + y[:, None] * rng.uniform(-1, 1))
    out = (columns[None, :] + gradient).astype(np.float32)
    out.setflags(write=False)
    return out


def defect_kinds(detector: Detector, seed: int) -> tuple[str, ...]:
    """Electrical behaviour of each defect box: ``dead`` (no response) or ``hot`` (dark current)."""
    rng = detector_rng(seed, _TAG_DEFECTS, detector)
    return tuple("hot" if rng.uniform() < 0.4 else "dead" for _ in detector.defects)


def _boxes(detector: Detector, seed: int, kind: str) -> list[Box]:
    return [d for d, k in zip(detector.defects, defect_kinds(detector, seed)) if k == kind]


@lru_cache(maxsize=4)
def response_map(detector: Detector, band: str, effects: DetectorEffectsConfig, seed: int) -> np.ndarray:
    """Relative response (the true flat field) of every imaging pixel in ``band``.

    Vignetting falling off with focal-plane radius, a per-CCD/per-band QE factor, pixel
    response non-uniformity, and the dead defect columns.
    """
    h, w = detector.bbox.shape
    fx, fy = detector.pixel_to_focal_plane(np.arange(w)[None, :], np.arange(h)[:, None])
    r2 = (fx**2 + fy**2) / effects.vignetting_radius_mm**2
    band_index = _BANDS.index(band) if band in _BANDS else len(_BANDS)
    qe = 1.0 + detector_rng(seed, _TAG_QE, detector, band_index).normal(0.0, effects.ccd_qe_rms)
    prnu = detector_rng(seed, _TAG_PRNU, detector).standard_normal(size=(h, w), dtype=np.float32)
    out = ((1.0 - effects.vignetting * r2) * qe).astype(np.float32) * (1.0 + effects.prnu * prnu)
    for box in _boxes(detector, seed, "dead"):
        out[box.slices(detector.bbox)] *= effects.dead_response
    out.setflags(write=False)
    return out


def dark_map(detector: Detector, effects: DetectorEffectsConfig, seed: int, dark_time: float) -> tuple[float, list[tuple[Box, float]]]:
    """Dark charge: a uniform level (e-/px) plus the extra charge of each hot defect box."""
    uniform = detector.dark_current * dark_time / 3600.0
    hot = [(box, effects.hot_column_rate * dark_time) for box in _boxes(detector, seed, "hot")]
    return uniform, hot
