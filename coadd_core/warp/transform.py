"""Destination -> source pixel mapping through the sky, and its coarse interpolation grid.

afw evaluates the exact mapping (destination pixel -> sky -> source pixel) only on a
coarse grid every ``interpLength`` destination pixels, the last row and column always
included, and interpolates linearly in between (ALGORITHMS.md §5.1); WCS evaluation
would otherwise cost more than the resampling itself.  The grid is anchored one pixel
left of and below the destination box, because the relative pixel area of a pixel is
computed from its left and lower neighbours.

Determinism: every grid node is computed from its own position only (for distorted
WCSs the inverse is iterated per point to convergence, not "until every point in the
batch converged" as astropy's ``all_world2pix`` does), so a node's value, and hence
every output pixel, does not depend on which chunk of rows asked for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from ..geom import Box

__all__ = [
    "GridChunk",
    "PixelTransform",
    "clip_polygon_to_rectangle",
    "grid_chunk",
    "map_outline",
    "polygon_area",
    "relative_area",
]

#: Per-point convergence tolerance (pixels) of the distorted-WCS inverse.
_INVERSE_TOL = 1e-11
_INVERSE_MAX_ITER = 50


def _has_distortion(wcs: WCS) -> bool:
    return any(
        d is not None for d in (wcs.sip, wcs.cpdis1, wcs.cpdis2, wcs.det2im1, wcs.det2im2)
    )


class PixelTransform:
    """Pixel -> pixel mapping between two WCSs (parent pixel coordinates, origin 0).

    ``dest_to_src`` goes destination pixel -> sky -> source pixel, the direction a
    resampler needs.  Not thread-safe (astropy WCS objects are not); give each thread
    its own instance.
    """

    def __init__(self, src_wcs: WCS, dest_wcs: WCS) -> None:
        self.src_wcs = src_wcs
        self.dest_wcs = dest_wcs

    @staticmethod
    def _world_to_pixel(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        target_x, target_y = wcs.wcs_world2pix(ra, dec, 0)
        if not _has_distortion(wcs):
            return target_x, target_y
        # Solve foc(p) = target per point (foc = pixel + distortion, in pixels) by
        # fixed-point iteration, freezing each point once its own correction is tiny.
        x = np.array(target_x, dtype=float)
        y = np.array(target_y, dtype=float)
        active = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
        for _ in range(_INVERSE_MAX_ITER):
            if active.size == 0:
                break
            foc = wcs.pix2foc(np.column_stack([x[active], y[active]]), 0)
            dx = target_x[active] - foc[:, 0]
            dy = target_y[active] - foc[:, 1]
            x[active] += dx
            y[active] += dy
            active = active[(np.abs(dx) >= _INVERSE_TOL) | (np.abs(dy) >= _INVERSE_TOL)]
        return x, y

    def dest_to_src(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source pixel positions of destination pixel positions."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        ra, dec = self.dest_wcs.all_pix2world(x.ravel(), y.ravel(), 0)
        sx, sy = self._world_to_pixel(self.src_wcs, ra, dec)
        return sx.reshape(x.shape), sy.reshape(x.shape)

    def src_to_dest(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Destination pixel positions of source pixel positions."""
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        ra, dec = self.src_wcs.all_pix2world(x.ravel(), y.ravel(), 0)
        dx, dy = self._world_to_pixel(self.dest_wcs, ra, dec)
        return dx.reshape(x.shape), dy.reshape(x.shape)

    def inverse(self) -> "PixelTransform":
        return PixelTransform(self.dest_wcs, self.src_wcs)

    def jacobian(self, x: float, y: float, step: float = 0.5) -> np.ndarray:
        """``d(src)/d(dest)`` at destination (x, y) by central differences (2 x 2)."""
        px = np.array([x + step, x - step, x, x])
        py = np.array([y, y, y + step, y - step])
        sx, sy = self.dest_to_src(px, py)
        return np.array(
            [
                [(sx[0] - sx[1]) / (2 * step), (sx[2] - sx[3]) / (2 * step)],
                [(sy[0] - sy[1]) / (2 * step), (sy[2] - sy[3]) / (2 * step)],
            ]
        )

    def local_affine(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
        """``(J, s)``: ``src ~ s + J @ (dest - (x, y))`` near destination (x, y)."""
        sx, sy = self.dest_to_src(np.array([x]), np.array([y]))
        return self.jacobian(x, y), np.array([sx[0], sy[0]])

    def local_affines(self, x: np.ndarray, y: np.ndarray, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`local_affine` at many positions with one WCS evaluation: ``(n, 2, 2)`` and ``(n, 2)``."""
        x = np.asarray(x, dtype=float).ravel()
        y = np.asarray(y, dtype=float).ravel()
        px = np.concatenate([x, x + step, x - step, x, x])
        py = np.concatenate([y, y, y, y + step, y - step])
        sx, sy = (a.reshape(5, -1) for a in self.dest_to_src(px, py))
        jac = np.empty((len(x), 2, 2))
        jac[:, 0, 0] = (sx[1] - sx[2]) / (2 * step)
        jac[:, 0, 1] = (sx[3] - sx[4]) / (2 * step)
        jac[:, 1, 0] = (sy[1] - sy[2]) / (2 * step)
        jac[:, 1, 1] = (sy[3] - sy[4]) / (2 * step)
        return jac, np.column_stack([sx[0], sy[0]])


def _node_coord(k: np.ndarray, interp: int, last: int) -> np.ndarray:
    return np.minimum(k * interp, last)


@dataclass(frozen=True)
class GridChunk:
    """Exact source positions at the grid nodes needed by a block of destination rows.

    Grid coordinates ``(u, v) = (x - anchor.x0 + 1, y - anchor.y0 + 1)``; nodes at
    multiples of ``interp`` (and at ``last_u`` / ``last_v``).  ``grid_x/grid_y`` hold
    local source indices (parent position minus the source ``xy0``) for node rows
    ``node_row0 ..`` and node columns ``node_col0 ..``.
    """

    grid_x: np.ndarray
    grid_y: np.ndarray
    node_row0: int
    node_col0: int
    interp: int
    last_u: int
    last_v: int


def grid_chunk(
    transform: PixelTransform,
    anchor: Box,
    interp_length: int,
    region: Box,
    src_xy0: tuple[int, int],
) -> GridChunk:
    """Grid nodes covering destination ``region`` (plus the row below and column left).

    ``interp_length`` 0 means exact everywhere (every pixel is a node).
    """
    interp = max(int(interp_length), 1)
    last_u = anchor.width
    last_v = anchor.height
    nbu = max((last_u + interp - 1) // interp, 1)
    nbv = max((last_v + interp - 1) // interp, 1)
    u_a = region.x0 - anchor.x0  # grid u of the column left of the region
    u_b = region.x1 - anchor.x0 + 1
    v_a = region.y0 - anchor.y0
    v_b = region.y1 - anchor.y0 + 1
    k0 = min(u_a // interp, nbu - 1)
    k1 = min(u_b // interp, nbu - 1) + 1
    b0 = min(v_a // interp, nbv - 1)
    b1 = min(v_b // interp, nbv - 1) + 1
    cols = _node_coord(np.arange(k0, k1 + 1), interp, last_u)
    rows = _node_coord(np.arange(b0, b1 + 1), interp, last_v)
    xx = (cols + (anchor.x0 - 1)).astype(float)
    yy = (rows + (anchor.y0 - 1)).astype(float)
    gx, gy = np.meshgrid(xx, yy)
    sx, sy = transform.dest_to_src(gx, gy)
    return GridChunk(
        grid_x=np.ascontiguousarray(sx - src_xy0[0]),
        grid_y=np.ascontiguousarray(sy - src_xy0[1]),
        node_row0=int(b0),
        node_col0=int(k0),
        interp=interp,
        last_u=last_u,
        last_v=last_v,
    )


def relative_area(transform: PixelTransform, box: Box) -> np.ndarray:
    """Exact relative pixel area ``|det J|`` (source pixels per destination pixel) over ``box``.

    Backward differences with the left and lower neighbours, as the warper uses; for
    checks and small boxes (evaluates the WCS at every pixel).
    """
    xs = np.arange(box.x0 - 1, box.x1 + 1, dtype=float)
    ys = np.arange(box.y0 - 1, box.y1 + 1, dtype=float)
    gx, gy = np.meshgrid(xs, ys)
    sx, sy = transform.dest_to_src(gx, gy)
    ax = sx[1:, 1:] - sx[1:, :-1]
    ay = sy[1:, 1:] - sy[1:, :-1]
    bx = sx[1:, 1:] - sx[:-1, 1:]
    by = sy[1:, 1:] - sy[:-1, 1:]
    return np.abs(ax * by - ay * bx)


def clip_polygon_to_rectangle(
    vertices: np.ndarray, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    """Part of a polygon (``N x 2`` vertices) inside ``[x0, x1] x [y0, y1]`` (Sutherland-Hodgman).

    Exact for convex polygons; returns an empty ``0 x 2`` array when nothing is inside.
    """
    pts = [tuple(v) for v in np.asarray(vertices, dtype=float)]

    def clip(points: list[tuple[float, float]], axis: int, bound: float, keep_below: bool) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        n = len(points)
        for i in range(n):
            cur = points[i]
            prev = points[i - 1]
            cur_in = cur[axis] <= bound if keep_below else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_below else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        return out

    for axis, bound, below in ((0, x0, False), (0, x1, True), (1, y0, False), (1, y1, True)):
        if not pts:
            break
        pts = clip(pts, axis, bound, below)
    return np.array(pts, dtype=float).reshape(-1, 2)


def polygon_area(vertices: np.ndarray) -> float:
    """Unsigned shoelace area of ``N x 2`` vertices (0 for fewer than 3)."""
    v = np.asarray(vertices, dtype=float)
    if len(v) < 3:
        return 0.0
    x, y = v[:, 0], v[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def map_outline(
    vertices: np.ndarray, transform: PixelTransform, points_per_edge: int = 16
) -> np.ndarray:
    """A source-pixel polygon densified and mapped into destination pixels (``M x 2``)."""
    start = np.asarray(vertices, dtype=float)
    end = np.roll(start, -1, axis=0)
    t = np.arange(points_per_edge, dtype=float)[None, :, None] / points_per_edge
    pts = (start[:, None, :] + t * (end - start)[:, None, :]).reshape(-1, 2)
    dx, dy = transform.src_to_dest(pts[:, 0], pts[:, 1])
    return np.column_stack([dx, dy])
