"""Valid-pixel polygon of an exposure (LSST ``afw.geom.Polygon`` as ``validPolygon``).

Vertices are float pixel positions in parent coordinates; a pixel is inside when its
centre is.  The polygon marks the usable area of an image (e.g. vignetting cut, or a
warp's footprint shrunk by the warping kernel) so coadd code can treat pixels outside as
NO_DATA and the coadd PSF can ignore inputs that do not cover a point.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .geom import Box

__all__ = ["ValidPolygon"]


class ValidPolygon:
    """Simple (non-self-intersecting) polygon given by ``N x 2`` vertices ``[[x, y], ...]``.

    The vertex order is kept as given (either orientation) so the polygon round-trips
    exactly; the closing edge from the last to the first vertex is implicit.
    """

    __slots__ = ("_vertices",)

    def __init__(self, vertices: np.ndarray | list[list[float]]) -> None:
        v = np.array(vertices, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 3:
            raise ValueError(f"a polygon needs N >= 3 vertices as an N x 2 array, got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("polygon vertices must be finite")
        if len(v) > 3 and np.array_equal(v[0], v[-1]):
            v = v[:-1]
        v.setflags(write=False)
        self._vertices = v

    @classmethod
    def from_box(cls, box: Box) -> "ValidPolygon":
        """The box's outer pixel edges (box +- 0.5), counter-clockwise, as LSST does."""
        return cls(box.corners(float_box=True))

    @property
    def vertices(self) -> np.ndarray:
        """Read-only ``N x 2`` vertex array."""
        return self._vertices

    def __len__(self) -> int:
        return len(self._vertices)

    # -- measures ----------------------------------------------------------------------
    def signed_area(self) -> float:
        """Shoelace area; positive for counter-clockwise vertices."""
        x, y = self._vertices[:, 0], self._vertices[:, 1]
        return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))

    @property
    def area(self) -> float:
        return abs(self.signed_area())

    def bbox(self) -> Box:
        """Smallest integer box holding every pixel whose centre may lie inside."""
        lo = np.min(self._vertices, axis=0)
        hi = np.max(self._vertices, axis=0)
        return Box(int(np.ceil(lo[0])), int(np.ceil(lo[1])), int(np.floor(hi[0])), int(np.floor(hi[1])))

    # -- membership --------------------------------------------------------------------
    def contains(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | bool:
        """Even-odd test for points (x, y) (broadcast together); points on an edge may go either way."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        xa, ya = np.broadcast_arrays(xa, ya)
        inside = np.zeros(xa.shape, dtype=bool)
        verts = self._vertices
        for (x1, y1), (x2, y2) in zip(verts, np.roll(verts, -1, axis=0)):
            if y1 == y2:
                continue
            crosses = (y1 > ya) != (y2 > ya)
            x_cross = x1 + (ya - y1) * (x2 - x1) / (y2 - y1)
            inside ^= crosses & (xa < x_cross)
        return bool(inside) if inside.ndim == 0 else inside

    def mask(self, box: Box) -> np.ndarray:
        """Boolean array over ``box``: True where the pixel centre is inside."""
        yy, xx = np.mgrid[box.y0 : box.y1 + 1, box.x0 : box.x1 + 1]
        return np.asarray(self.contains(xx, yy))

    # -- transformations ---------------------------------------------------------------
    def transform(
        self, func: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    ) -> "ValidPolygon":
        """Map every vertex with ``func(x, y) -> (x', y')`` (e.g. a pixel-to-pixel warp).

        Only vertices move, so a strongly non-linear mapping should be applied to a
        densified polygon (:meth:`densified`).
        """
        xs, ys = func(self._vertices[:, 0].copy(), self._vertices[:, 1].copy())
        return ValidPolygon(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))

    def shifted(self, dx: float, dy: float) -> "ValidPolygon":
        return ValidPolygon(self._vertices + np.array([dx, dy]))

    def densified(self, points_per_edge: int) -> "ValidPolygon":
        """Insert ``points_per_edge - 1`` evenly spaced points into every edge."""
        if points_per_edge < 1:
            raise ValueError("points_per_edge must be >= 1")
        start = self._vertices
        end = np.roll(start, -1, axis=0)
        t = np.arange(points_per_edge, dtype=float)[None, :, None] / points_per_edge
        pts = start[:, None, :] + t * (end - start)[:, None, :]
        return ValidPolygon(pts.reshape(-1, 2))

    def buffer(self, distance: float) -> "ValidPolygon":
        """Move every edge outwards by ``distance`` (inwards if negative), mitred corners.

        Exact for convex polygons (the usual case: boxes and warped boxes); raises if the
        polygon collapses.
        """
        if distance == 0:
            return ValidPolygon(self._vertices)
        v = self._vertices
        orientation = 1.0 if self.signed_area() > 0 else -1.0
        nxt = np.roll(v, -1, axis=0)
        edge = nxt - v
        length = np.hypot(edge[:, 0], edge[:, 1])
        if np.any(length == 0):
            raise ValueError("polygon has repeated vertices")
        # outward normal of a counter-clockwise edge (dx, dy) is (dy, -dx)
        normal = orientation * np.column_stack([edge[:, 1], -edge[:, 0]]) / length[:, None]
        p = v + distance * normal  # a point on each offset edge
        d = edge
        # corner i joins offset edge i-1 and offset edge i
        p_prev, d_prev = np.roll(p, 1, axis=0), np.roll(d, 1, axis=0)
        cross = d_prev[:, 0] * d[:, 1] - d_prev[:, 1] * d[:, 0]
        collinear = np.abs(cross) < 1e-12 * length * np.roll(length, 1)
        w = p - p_prev
        numerator = w[:, 0] * d[:, 1] - w[:, 1] * d[:, 0]
        t = np.where(collinear, 0.0, numerator / np.where(collinear, 1.0, cross))
        corners = np.where(collinear[:, None], p, p_prev + t[:, None] * d_prev)
        result = ValidPolygon(corners)
        if result.signed_area() * orientation <= 0:
            raise ValueError(f"polygon collapses when buffered by {distance}")
        return result

    def shrink(self, distance: float) -> "ValidPolygon":
        """Move every edge inwards by ``distance`` pixels (LSST shrinks warps' polygons)."""
        return self.buffer(-distance)

    # -- serialisation / comparison ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"vertices": self._vertices.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ValidPolygon":
        return cls(np.asarray(data["vertices"], dtype=np.float64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ValidPolygon):
            return NotImplemented
        return np.array_equal(self._vertices, other._vertices)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ValidPolygon({self._vertices.tolist()!r})"
