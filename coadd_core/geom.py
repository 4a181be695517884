"""Integer pixel boxes in parent coordinates (the LSST ``Box2I`` convention).

A box is inclusive on both ends: ``Box(x0=0, y0=0, x1=9, y1=4)`` covers 10 x 5 pixels.
Pixel (i, j) has its centre at (x=i, y=j) and covers [i-0.5, i+0.5). An image whose
box starts at ``(x0, y0)`` (its ``xy0``) stores parent pixel (x, y) at array index
``[y - y0, x - x0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """Inclusive integer pixel box ``[x0, x1] x [y0, y1]`` in parent coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)):
                raise TypeError(f"Box.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_size(cls, width: int, height: int, x0: int = 0, y0: int = 0) -> "Box":
        """Box of ``width`` x ``height`` pixels starting at ``(x0, y0)``."""
        if width < 0 or height < 0:
            raise ValueError(f"negative box size {width} x {height}")
        return cls(x0, y0, x0 + width - 1, y0 + height - 1)

    @classmethod
    def from_shape(cls, shape: tuple[int, int], xy0: tuple[int, int] = (0, 0)) -> "Box":
        """Box of a numpy array of ``shape`` (ny, nx) whose first pixel is at ``xy0``."""
        return cls.from_size(shape[1], shape[0], xy0[0], xy0[1])

    @classmethod
    def enclosing(cls, x: np.ndarray, y: np.ndarray) -> "Box":
        """Smallest box holding the pixels whose centres are nearest to the points (x, y)."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return cls(
            int(np.floor(np.min(x) + 0.5)),
            int(np.floor(np.min(y) + 0.5)),
            int(np.floor(np.max(x) + 0.5)),
            int(np.floor(np.max(y) + 0.5)),
        )

    # -- properties ------------------------------------------------------------------
    @property
    def width(self) -> int:
        return max(self.x1 - self.x0 + 1, 0)

    @property
    def height(self) -> int:
        return max(self.y1 - self.y0 + 1, 0)

    @property
    def shape(self) -> tuple[int, int]:
        """Numpy shape ``(height, width)``."""
        return (self.height, self.width)

    @property
    def xy0(self) -> tuple[int, int]:
        return (self.x0, self.y0)

    @property
    def area(self) -> int:
        return self.width * self.height

    def is_empty(self) -> bool:
        return self.width == 0 or self.height == 0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def corners(self, float_box: bool = True) -> np.ndarray:
        """Corner positions ``[[x, y], ...]`` counter-clockwise from the lower left.

        With ``float_box`` the corners of the pixel edges (box +- 0.5) are returned, as
        LSST does when it converts an integer box to a sky polygon.
        """
        pad = 0.5 if float_box else 0.0
        xa, xb = self.x0 - pad, self.x1 + pad
        ya, yb = self.y0 - pad, self.y1 + pad
        return np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]], dtype=float)

    # -- set operations --------------------------------------------------------------
    def contains(self, other: "Box") -> bool:
        return (
            other.is_empty()
            or (
                self.x0 <= other.x0
                and self.y0 <= other.y0
                and other.x1 <= self.x1
                and other.y1 <= self.y1
            )
        )

    def contains_point(self, x: float, y: float) -> bool:
        """True if the pixel nearest to (x, y) lies in the box."""
        i = int(np.floor(x + 0.5))
        j = int(np.floor(y + 0.5))
        return self.x0 <= i <= self.x1 and self.y0 <= j <= self.y1

    def overlaps(self, other: "Box") -> bool:
        return not self.intersection(other).is_empty()

    def intersection(self, other: "Box") -> "Box":
        """Overlap of two boxes; an empty box (width or height 0) if they do not overlap."""
        x0 = max(self.x0, other.x0)
        y0 = max(self.y0, other.y0)
        x1 = min(self.x1, other.x1)
        y1 = min(self.y1, other.y1)
        if x1 < x0 or y1 < y0:
            return Box(x0, y0, x0 - 1, y0 - 1)
        return Box(x0, y0, x1, y1)

    def union(self, other: "Box") -> "Box":
        if self.is_empty():
            return other
        if other.is_empty():
            return self
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def grown(self, border: int) -> "Box":
        return Box(self.x0 - border, self.y0 - border, self.x1 + border, self.y1 + border)

    def shifted(self, dx: int, dy: int) -> "Box":
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)

    # -- array access ----------------------------------------------------------------
    def slices(self, parent: "Box") -> tuple[slice, slice]:
        """Array slices ``[rows, cols]`` selecting this box inside an array covering ``parent``."""
        if not parent.contains(self):
            raise ValueError(f"{self} is not inside {parent}")
        return (
            slice(self.y0 - parent.y0, self.y1 - parent.y0 + 1),
            slice(self.x0 - parent.x0, self.x1 - parent.x0 + 1),
        )

    def subregions(self, width: int, height: int) -> Iterator["Box"]:
        """Tile the box into sub-boxes of at most ``width`` x ``height`` (row-major)."""
        if width <= 0 or height <= 0:
            raise ValueError("sub-region size must be positive")
        for y in range(self.y0, self.y1 + 1, height):
            for x in range(self.x0, self.x1 + 1, width):
                yield Box(x, y, min(x + width - 1, self.x1), min(y + height - 1, self.y1))

    # -- serialisation ---------------------------------------------------------------
    def to_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    @classmethod
    def from_list(cls, values: list[int] | tuple[int, ...]) -> "Box":
        x0, y0, x1, y1 = (int(v) for v in values)
        return cls(x0, y0, x1, y1)

    @classmethod
    def from_fits_section(cls, section: str) -> "Box":
        """Parse a 1-based inclusive FITS section ``[x0:x1,y0:y1]`` into a 0-based box."""
        text = section.strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError(f"not a FITS section: {section!r}")
        try:
            xs, ys = text[1:-1].split(",")
            xa, xb = (int(v) for v in xs.split(":"))
            ya, yb = (int(v) for v in ys.split(":"))
        except ValueError as exc:
            raise ValueError(f"not a FITS section: {section!r}") from exc
        return cls(xa - 1, ya - 1, xb - 1, yb - 1)

    def to_fits_section(self) -> str:
        return f"[{self.x0 + 1}:{self.x1 + 1},{self.y0 + 1}:{self.y1 + 1}]"

    def __str__(self) -> str:
        return f"Box(x={self.x0}..{self.x1}, y={self.y0}..{self.y1})"
