"""Trim and assemble (LSST ``AssembleCcdTask``, ALGORITHMS.md §2.1 step 4).

The conversion to float, the overscan subtraction and the copy of each amp's data
section to its assembled place are one numpy operation per amp writing straight into
the output image, so the raw frame is never copied as floats.
"""

from __future__ import annotations

from typing import Any, Iterable, MutableMapping

import numpy as np

from coadd_core.camera import Amplifier, Detector
from coadd_core.geom import Box

__all__ = ["raw_box", "place_amp", "remove_keys"]


def raw_box(detector: Detector) -> Box:
    """Box of the whole raw frame."""
    return Box.from_size(detector.raw_width, detector.raw_height)


def place_amp(
    raw: np.ndarray,
    amp: Amplifier,
    out: np.ndarray,
    out_box: Box,
    level: float | np.ndarray,
    *,
    source: Box | None = None,
    target: Box | None = None,
) -> None:
    """``out[target] = raw[source] - level`` as float32 (level: scalar or per source row).

    By default ``source`` is the amp's raw data section and ``target`` its assembled
    place; the unassembled mode passes the amp's raw box for both.
    """
    src = amp.raw_data_bbox if source is None else source
    dst = amp.bbox if target is None else target
    if src.shape != dst.shape:
        raise ValueError(f"amp {amp.name}: source {src} and target {dst} differ in size")
    raw_view = raw[src.slices(raw_box_of(raw))]
    out_view = out[dst.slices(out_box)]
    if isinstance(level, np.ndarray):
        sub = np.asarray(level, dtype=np.float32)[:, None]
    else:
        sub = np.float32(level)
    np.subtract(raw_view, sub, out=out_view, dtype=np.float32, casting="unsafe")


def raw_box_of(raw: np.ndarray) -> Box:
    return Box.from_shape(raw.shape)


def remove_keys(metadata: MutableMapping[str, Any], keys: Iterable[str]) -> None:
    """Drop header keys that no longer describe the assembled image."""
    for key in keys:
        metadata.pop(key, None)
