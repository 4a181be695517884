"""Numba convolution with a kernel that is constant over tiles (PSF matching of warps).

A spatially varying matching kernel changes by a tiny fraction over a few tens of
pixels, so it is evaluated at the centre of each ``tile x tile`` block and applied
there unchanged; the image and the variance (with the squared kernel) are convolved in
one pass whose inner loop runs along output rows, which vectorises.  Masks are OR-ed
over a rectangular footprint with two separable passes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["convolve_tiles", "dilate_mask", "polygon_mask"]


@njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _convolve_rows(
    img: np.ndarray,
    var: np.ndarray,
    kernels: np.ndarray,
    tile: int,
    origin_y: int,
    origin_x: int,
    y_lo: int,
    y_hi: int,
    out_img: np.ndarray,
    out_var: np.ndarray,
) -> None:
    height, width = img.shape
    ksize = kernels.shape[2]
    half = ksize // 2
    acc_i = np.empty(tile, dtype=np.float32)
    acc_v = np.empty(tile, dtype=np.float32)
    fi = img.reshape(height * width)
    fv = var.reshape(height * width)
    for y in range(y_lo, y_hi):
        ty = (y + origin_y) // tile
        # tiles are anchored at -origin_x in this array's columns
        x = half
        while x < width - half:
            tx = (x + origin_x) // tile
            x1 = min((tx + 1) * tile - origin_x, width - half)
            n = x1 - x
            for k in range(n):
                acc_i[k] = 0.0
                acc_v[k] = 0.0
            for j in range(ksize):
                row = y + j - half
                for i in range(ksize):
                    w = kernels[ty, tx, j, i]
                    w2 = w * w
                    off = np.uint64(row * width + x + i - half)
                    for k in range(n):
                        acc_i[k] += w * fi[off + np.uint64(k)]
                        acc_v[k] += w2 * fv[off + np.uint64(k)]
            for k in range(n):
                out_img[y, x + k] = acc_i[k]
                out_var[y, x + k] = acc_v[k]
            x = x1


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def convolve_tiles(
    img: np.ndarray,
    var: np.ndarray,
    kernels: np.ndarray,
    tile: int,
    origin_y: int,
    origin_x: int,
    out_img: np.ndarray,
    out_var: np.ndarray,
    nblocks: int,
) -> None:
    """``out = img (*) K``, ``out_var = var (*) K^2``, K constant over tiles.

    Pixel ``(y, x)`` of the arrays uses ``kernels[(y + origin_y) // tile, (x + origin_x)
    // tile]``, so a chunk of a larger image keeps the tiling of the whole.  Each kernel
    is a square odd array already flipped (applied as a correlation: pass
    ``K[::-1, ::-1]`` of a convolution kernel).  Inputs must be finite and C contiguous.
    Only pixels at least the kernel half-width from the array edge are written; rows are
    split into ``nblocks`` parallel blocks.
    """
    height = img.shape[0]
    half = kernels.shape[2] // 2
    y_first = half
    y_last = height - half
    nrows = max(y_last - y_first, 0)
    for blk in prange(nblocks):
        lo = y_first + blk * nrows // nblocks
        hi = y_first + (blk + 1) * nrows // nblocks
        if lo < hi:
            _convolve_rows(img, var, kernels, tile, origin_y, origin_x, lo, hi, out_img, out_var)


@njit(nogil=True, cache=True)
def _or_window(a: np.ndarray, lo: int, k: int, g: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = OR(a[i + lo .. i + lo + k - 1])`` where the window fits (van Herk / Gil-Werman).

    Prefix (``g``) and suffix (``h``) ORs within blocks of ``k`` make every window the OR
    of one suffix and one prefix: three operations per element whatever ``k``.
    """
    n = a.shape[0]
    for start in range(0, n, k):
        end = min(start + k, n)
        acc = 0
        for j in range(start, end):
            acc |= a[j]
            g[j] = acc
        acc = 0
        for j in range(end - 1, start - 1, -1):
            acc |= a[j]
            h[j] = acc
    for i in range(n):
        s = i + lo
        e = s + k - 1
        if s >= 0 and e < n:
            out[i] = h[s] | g[e]


@njit(parallel=True, nogil=True, cache=True)
def dilate_mask(
    mask: np.ndarray, y_lo: int, y_hi: int, x_lo: int, x_hi: int, edge_bits: int, nblocks: int
) -> np.ndarray:
    """OR of ``mask`` over the offsets ``[y_lo, y_hi] x [x_lo, x_hi]`` around each pixel.

    Pixels whose footprint leaves the array get ``edge_bits`` only.
    """
    height, width = mask.shape
    kx = x_hi - x_lo + 1
    ky = y_hi - y_lo + 1
    rows = np.full((height, width), edge_bits, dtype=np.int32)
    out = np.full((height, width), edge_bits, dtype=np.int32)
    for blk in prange(nblocks):
        r0 = blk * height // nblocks
        r1 = (blk + 1) * height // nblocks
        g = np.empty(width, dtype=np.int32)
        h = np.empty(width, dtype=np.int32)
        for y in range(r0, r1):
            _or_window(mask[y], x_lo, kx, g, h, rows[y])
    for blk in prange(nblocks):
        c0 = blk * width // nblocks
        c1 = (blk + 1) * width // nblocks
        col = np.empty(height, dtype=np.int32)
        res = np.empty(height, dtype=np.int32)
        g = np.empty(height, dtype=np.int32)
        h = np.empty(height, dtype=np.int32)
        for x in range(c0, c1):
            if x + x_lo < 0 or x + x_hi >= width:
                continue
            for y in range(height):
                col[y] = rows[y, x]
                res[y] = edge_bits
            _or_window(col, y_lo, ky, g, h, res)
            for y in range(height):
                out[y, x] = res[y]
    return out


@njit(nogil=True, cache=True)
def polygon_mask(vertices: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Boolean ``height x width`` raster of pixel centres ``(x0 + i, y0 + j)`` inside the polygon.

    Scan-line version of :meth:`ValidPolygon.contains` (even-odd rule, same crossing
    arithmetic), linear in the number of pixels.  Serial: ~2 ms per million pixels, less
    than a parallel region costs on a busy machine.
    """
    out = np.zeros((height, width), dtype=np.bool_)
    nv = vertices.shape[0]
    for j in range(height):
        y = float(y0 + j)
        crossings = np.empty(nv)
        nc = 0
        for e in range(nv):
            xa = vertices[e, 0]
            ya = vertices[e, 1]
            xb = vertices[(e + 1) % nv, 0]
            yb = vertices[(e + 1) % nv, 1]
            if ya == yb:
                continue
            if (ya > y) != (yb > y):
                crossings[nc] = xa + (y - ya) * (xb - xa) / (yb - ya)
                nc += 1
        if nc == 0:
            continue
        c = np.sort(crossings[:nc])
        # pixel x is inside when an odd number of crossings lie strictly right of it
        k = 0
        for i in range(width):
            x = float(x0 + i)
            while k < nc and c[k] <= x:
                k += 1
            out[j, i] = ((nc - k) & 1) == 1
    return out
