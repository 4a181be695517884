"""CfhtIsrTask specifics (ALGORITHMS.md §2.3): saturation from the raw histogram, header electronics.

MegaPrime headers give one ``SATURATE`` per CCD that is often wrong (65535 where the
amplifiers clip lower), so the level is read off the data: saturated pixels pile up in
one narrow range of values just below the true clipping level. Gains and read noises
come from ``GAINA/B`` and ``RDNOISEA/B`` (``RDNOISE`` where the per-amp value is the
65535 placeholder of old files); the camera layer already applies those.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping

import numpy as np

from coadd_core.camera import Detector

__all__ = ["HISTOGRAM_THRESHOLD", "HISTOGRAM_BINS", "saturation_from_histogram", "cfht_detector"]

log = logging.getLogger(__name__)

#: Raw level (ADU) above which the histogram is searched for the saturation pile-up.
HISTOGRAM_THRESHOLD = 60000
#: Histogram bins over [threshold, max + 1].
HISTOGRAM_BINS = 100


def saturation_from_histogram(
    raw: np.ndarray, header: Mapping[str, Any], *, safe: float = 0.95
) -> float:
    """Saturation level (ADU) of a raw CCD, the same for both amps.

    If the brightest pixel exceeds 60000 ADU: ``int(safe * e)``, with ``e`` the lower
    edge of the most populated of 100 bins spanning [60000, max + 1]; else the header's
    ``SATURATE`` (NaN when absent).
    """
    top = int(raw.max()) if raw.size else 0
    if top > HISTOGRAM_THRESHOLD:
        high = raw[raw >= HISTOGRAM_THRESHOLD]
        counts, edges = np.histogram(high, bins=HISTOGRAM_BINS, range=(HISTOGRAM_THRESHOLD, top + 1))
        edge = float(edges[int(np.argmax(counts))])
        level = float(int(safe * edge))
        log.debug("saturation from the histogram: pile-up at %.0f ADU -> %.0f ADU", edge, level)
        return level
    value = header.get("SATURATE")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def cfht_detector(detector: Detector, saturation: float) -> Detector:
    """The detector with every amp's saturation set to ``saturation`` (NaN keeps the amp's)."""
    if not math.isfinite(saturation):
        return detector
    amps = tuple(dataclasses.replace(a, saturation=float(saturation)) for a in detector.amplifiers)
    return dataclasses.replace(detector, amplifiers=amps)
