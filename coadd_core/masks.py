"""Mask planes: the name <-> bit dictionary of an int32 mask (LSST ``Mask`` plane dict).

Bits 0..20 have fixed meanings (ALGORITHMS.md §1.2) so that every image made by the
pipeline agrees without consulting a dictionary; further planes take the next free bit.
Each mask carries its own :class:`MaskPlanes`; files record the dictionary as
``MP_<NAME> = bit`` header keywords and readers remap foreign assignments with
:func:`remap_mask` into the in-memory convention.

Bit 31 is the int32 sign bit: bit masks are returned as *signed* int32-compatible Python
ints so they can be combined directly with ``np.int32`` arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import numpy as np

__all__ = [
    "MAX_BIT",
    "STANDARD_PLANES",
    "MaskPlanes",
    "PlaneInfo",
    "bit",
    "bitmask",
    "names_from_bits",
    "remap_mask",
    "standard_planes",
]

logger = logging.getLogger(__name__)

#: Highest usable bit of an int32 mask.
MAX_BIT = 31

#: The standard planes in bit order (bit = position), with one-line meanings.
STANDARD_PLANES: tuple[tuple[str, str], ...] = (
    ("BAD", "bad pixel: sensor defect, bad amplifier, or variance <= 0"),
    ("SAT", "saturated: at or above the saturation level"),
    ("INTRP", "value interpolated from neighbouring pixels"),
    ("CR", "cosmic ray"),
    ("EDGE", "too close to the image edge for the detection kernel"),
    ("DETECTED", "pixel belongs to a detected source"),
    ("DETECTED_NEGATIVE", "pixel belongs to a detected negative source"),
    ("SUSPECT", "at or above the suspect (possibly non-linear) level"),
    ("NO_DATA", "no data: off the detector, in a chip gap, or outside the valid polygon"),
    ("VIGNETTED", "vignetted by the telescope or camera"),
    ("STREAK", "satellite or meteor streak"),
    ("UNMASKEDNAN", "non-finite value that was not otherwise masked"),
    ("CROSSTALK", "crosstalk correction applied"),
    ("CLIPPED", "artifact removed from an input, or a coadd pixel where an input was clipped"),
    ("REJECTED", "coadd: an input was rejected by a bad plane other than EDGE/NO_DATA/CLIPPED"),
    ("SENSOR_EDGE", "coadd: an input was rejected for EDGE"),
    ("INEXACT_PSF", "the coadd PSF model is inexact here (inputs rejected or clipped)"),
    ("BRIGHT_OBJECT", "near a bright object"),
    ("NOT_DEBLENDED", "source too large to be deblended"),
    ("HIGH_VARIANCE", "variance much higher than typical"),
    ("PARTLY_VIGNETTED", "partly vignetted"),
)


def _to_int32(value: int) -> int:
    """Wrap an unsigned 32-bit pattern into the signed range of ``np.int32``."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True, slots=True)
class PlaneInfo:
    """One mask plane: its bit number and a one-line meaning."""

    bit: int
    description: str = ""


class MaskPlanes(Mapping[str, PlaneInfo]):
    """Ordered mapping plane name -> :class:`PlaneInfo` (LSST ``Mask.getMaskPlaneDict``).

    Planes can be added (:meth:`add_plane`) but not removed or renumbered, so a bit never
    changes meaning within one dictionary.  Images that share a dictionary and need a new
    plane copy it first (see ``MaskedImage.add_mask_plane``).
    """

    __slots__ = ("_planes",)

    def __init__(self, planes: Iterable[tuple[str, int, str]] | None = None) -> None:
        self._planes: dict[str, PlaneInfo] = {}
        for name, bit_number, description in planes or ():
            self._insert(name, bit_number, description)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def standard(cls) -> "MaskPlanes":
        """A fresh dictionary holding the standard planes at their fixed bits."""
        return cls((name, i, text) for i, (name, text) in enumerate(STANDARD_PLANES))

    def copy(self) -> "MaskPlanes":
        new = MaskPlanes()
        new._planes = dict(self._planes)
        return new

    def _insert(self, name: str, bit_number: int, description: str) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"invalid mask plane name {name!r}")
        if not 0 <= bit_number <= MAX_BIT:
            raise ValueError(f"mask plane {name!r}: bit {bit_number} outside 0..{MAX_BIT}")
        if name in self._planes:
            raise ValueError(f"mask plane {name!r} already defined")
        used = self.bits_used()
        if bit_number in used:
            other = next(n for n, p in self._planes.items() if p.bit == bit_number)
            raise ValueError(f"mask plane {name!r}: bit {bit_number} already used by {other!r}")
        self._planes[name] = PlaneInfo(int(bit_number), description)

    def add_plane(self, name: str, description: str = "") -> int:
        """Add ``name`` at the lowest free bit (no-op if present); return its bit."""
        if name in self._planes:
            return self._planes[name].bit
        used = self.bits_used()
        free = next((b for b in range(MAX_BIT + 1) if b not in used), None)
        if free is None:
            raise ValueError(f"no free mask bit left for plane {name!r} (all {MAX_BIT + 1} used)")
        self._insert(name, free, description)
        return free

    # -- Mapping protocol --------------------------------------------------------------
    def __getitem__(self, name: str) -> PlaneInfo:
        return self._planes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._planes)

    def __len__(self) -> int:
        return len(self._planes)

    def __eq__(self, other: object) -> bool:
        """Same names at the same bits; descriptions are documentation and not compared."""
        if isinstance(other, MaskPlanes):
            return self.bits() == other.bits()
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={p.bit}" for n, p in self._planes.items())
        return f"MaskPlanes({inner})"

    # -- queries -----------------------------------------------------------------------
    def bits(self) -> dict[str, int]:
        """Plain ``{name: bit}`` dictionary."""
        return {n: p.bit for n, p in self._planes.items()}

    def bits_used(self) -> set[int]:
        return {p.bit for p in self._planes.values()}

    def bit(self, name: str) -> int:
        """Bit number of plane ``name``; KeyError listing the known planes if absent."""
        try:
            return self._planes[name].bit
        except KeyError:
            raise KeyError(f"unknown mask plane {name!r}; known: {', '.join(self._planes)}") from None

    def bitmask(self, *names: str) -> int:
        """OR of the bits of ``names``, as a signed int usable with int32 arrays."""
        value = 0
        for name in names:
            value |= 1 << self.bit(name)
        return _to_int32(value)

    def names_from_bits(self, value: int) -> list[str]:
        """Names of the planes set in ``value`` (in bit order); unnamed bits are ignored."""
        value = int(value) & 0xFFFFFFFF
        by_bit = sorted((p.bit, n) for n, p in self._planes.items())
        return [n for b, n in by_bit if value & (1 << b)]

    def description(self, name: str) -> str:
        return self._planes[name].description

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int | str]]:
        return {n: [p.bit, p.description] for n, p in self._planes.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[int | str] | tuple[int, str] | int]) -> "MaskPlanes":
        planes = []
        for name, value in data.items():
            if isinstance(value, (int, np.integer)):
                planes.append((name, int(value), _standard_description(name)))
            else:
                planes.append((name, int(value[0]), str(value[1])))
        return cls(planes)


_STANDARD_BITS = {name: i for i, (name, _) in enumerate(STANDARD_PLANES)}
_STANDARD = MaskPlanes.standard()


def _standard_description(name: str) -> str:
    return STANDARD_PLANES[_STANDARD_BITS[name]][1] if name in _STANDARD_BITS else ""


def standard_planes() -> MaskPlanes:
    """A fresh copy of the standard plane dictionary (safe to extend)."""
    return _STANDARD.copy()


def bit(name: str) -> int:
    """Bit of a standard plane."""
    return _STANDARD.bit(name)


def bitmask(*names: str) -> int:
    """Bit mask of standard planes (signed, int32-compatible)."""
    return _STANDARD.bitmask(*names)


def names_from_bits(value: int) -> list[str]:
    """Standard plane names set in ``value``."""
    return _STANDARD.names_from_bits(value)


def remap_mask(
    mask: np.ndarray, source: MaskPlanes, target: MaskPlanes
) -> tuple[np.ndarray, MaskPlanes]:
    """Re-express ``mask`` (bits per ``source``) in the bit convention of ``target``.

    Planes of ``source`` missing from ``target`` are added to a copy of ``target`` at the
    next free bit.  Bits set in the mask but named by no ``source`` plane carry no meaning
    and are dropped (with a warning).  Returns the new int32 mask and the dictionary it
    uses; when nothing moves the input array and ``target`` are returned unchanged.
    """
    planes = target
    moves: list[tuple[int, int]] = []
    for name, info in source.items():
        if name not in planes:
            if planes is target:
                planes = target.copy()
            planes.add_plane(name, info.description)
        moves.append((info.bit, planes.bit(name)))
    named = 0
    for src_bit, _ in moves:
        named |= 1 << src_bit
    mask = np.asarray(mask)
    unnamed = _to_int32(~named)
    if unnamed and np.any(mask & np.int32(unnamed)):
        stray = int(np.bitwise_or.reduce(mask & np.int32(unnamed), axis=None)) & 0xFFFFFFFF
        logger.warning("dropping mask bits %#x that no plane names", stray)
    if all(s == d for s, d in moves) and not (unnamed and np.any(mask & np.int32(unnamed))):
        return mask, planes
    out = np.zeros(mask.shape, dtype=np.int32)
    for src_bit, dst_bit in moves:
        hit = (mask & np.int32(_to_int32(1 << src_bit))) != 0
        out[hit] |= np.int32(_to_int32(1 << dst_bit))
    return out, planes
