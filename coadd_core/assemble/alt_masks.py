"""Alternative masks: per-warp span lists that replace parts of a warp's mask during
assembly (LSST ``altMaskList`` of SpanSets; ALGORITHMS.md §7.4).

Spans are ``(y, x0, x1)`` rows, parent coordinates, inclusive, held as ``(K, 3)`` int32
arrays: compact enough to keep one set per warp for a whole patch while the pixels are
streamed by sub-region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..geom import Box
from ..masks import MaskPlanes

__all__ = [
    "AltMask",
    "apply_alt_edge_mask",
    "apply_alt_mask",
    "empty_spans",
    "paint_spans",
    "spans_area",
    "spans_from_mask",
    "spans_to_mask",
]


def empty_spans() -> np.ndarray:
    return np.zeros((0, 3), dtype=np.int32)


@dataclass
class AltMask:
    """Spans to set on one warp: artifacts (CLIPPED), no data (NO_DATA) and EDGE."""

    clipped: np.ndarray = field(default_factory=empty_spans)
    no_data: np.ndarray = field(default_factory=empty_spans)
    edge: np.ndarray = field(default_factory=empty_spans)

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {"CLIPPED": self.clipped.tolist(), "NO_DATA": self.no_data.tolist(), "EDGE": self.edge.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[list[int]]]) -> "AltMask":
        def arr(key: str) -> np.ndarray:
            return np.asarray(data.get(key, []), dtype=np.int32).reshape(-1, 3)

        return cls(arr("CLIPPED"), arr("NO_DATA"), arr("EDGE"))


def spans_from_mask(selected: np.ndarray, bbox: Box) -> np.ndarray:
    """Row runs of the true pixels of a boolean array covering ``bbox``."""
    sel = np.asarray(selected, dtype=bool)
    if not sel.any():
        return empty_spans()
    padded = np.zeros((sel.shape[0], sel.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = sel
    change = np.diff(padded, axis=1)
    ys, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)
    out = np.empty((len(ys), 3), dtype=np.int32)
    out[:, 0] = ys + bbox.y0
    out[:, 1] = starts + bbox.x0
    out[:, 2] = ends - 1 + bbox.x0
    return out


def spans_area(spans: np.ndarray) -> int:
    return int((spans[:, 2] - spans[:, 1] + 1).sum()) if len(spans) else 0


@numba.njit(nogil=True, cache=True)
def _paint(mask: np.ndarray, spans: np.ndarray, x0: int, y0: int, set_bits: np.int32, clear_bits: np.int32) -> None:
    ny, nx = mask.shape
    keep = ~clear_bits
    for k in range(spans.shape[0]):
        y = spans[k, 0] - y0
        if y < 0 or y >= ny:
            continue
        a = max(spans[k, 1] - x0, 0)
        b = min(spans[k, 2] - x0, nx - 1)
        for x in range(a, b + 1):
            mask[y, x] = (mask[y, x] & keep) | set_bits


def paint_spans(mask: np.ndarray, box: Box, spans: np.ndarray, set_bits: int, clear_bits: int = 0) -> None:
    """Clear ``clear_bits`` then set ``set_bits`` on the span pixels inside ``box``.

    ``mask`` is the array covering ``box``; spans outside it are ignored.
    """
    if len(spans) == 0:
        return
    _paint(mask, np.ascontiguousarray(spans, dtype=np.int32), box.x0, box.y0,
           np.int32(set_bits), np.int32(clear_bits))


def spans_to_mask(spans: np.ndarray, box: Box) -> np.ndarray:
    """Boolean array over ``box`` that is true on the spans."""
    out = np.zeros(box.shape, dtype=np.int32)
    paint_spans(out, box, spans, 1)
    return out.astype(bool)


def apply_alt_mask(mask: np.ndarray, box: Box, alt: AltMask, planes: MaskPlanes, bad_planes: tuple[str, ...]) -> None:
    """§7.4 on one warp's mask section: inside the NO_DATA spans first clear the bad
    planes, then set NO_DATA, CLIPPED and EDGE on their spans."""
    bad = planes.bitmask(*[p for p in bad_planes if p in planes])
    paint_spans(mask, box, alt.no_data, planes.bitmask("NO_DATA"), bad)
    paint_spans(mask, box, alt.clipped, planes.bitmask("CLIPPED"))
    paint_spans(mask, box, alt.edge, planes.bitmask("EDGE"))


def apply_alt_edge_mask(mask: np.ndarray, box: Box, alt_masks: list[AltMask | None], planes: MaskPlanes) -> None:
    """Coadd pixels in any warp's EDGE spans get SENSOR_EDGE and INEXACT_PSF (LSST
    ``applyAltEdgeMask``)."""
    bits = planes.bitmask("SENSOR_EDGE", "INEXACT_PSF")
    for alt in alt_masks:
        if alt is not None:
            paint_spans(mask, box, alt.edge, bits)
