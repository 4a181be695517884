"""Quick-look pictures for people: stretched PNG previews of images and raw mosaics.

These are for eyes (Prefect artifacts, files beside the outputs), not for science: the
raw mosaic removes each amplifier's overscan median and nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from astropy.io import fits

from coadd_core.camera import Camera, load_camera

if TYPE_CHECKING:
    from coadd_core.exposure import Exposure

log = logging.getLogger(__name__)


def asinh_stretch(array: np.ndarray, *, low_pct: float = 1.0, high_pct: float = 99.8, soften: float = 10.0) -> np.ndarray:
    """Map an image to [0, 1] with an asinh stretch between two percentiles (NaN -> 0)."""
    data = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.float32)
    lo, hi = np.percentile(data[finite], [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((np.where(finite, data, lo) - lo) / (hi - lo), 0.0, 1.0)
    return (np.arcsinh(soften * scaled) / np.arcsinh(soften)).astype(np.float32)


def bin_image(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks (edges that do not fill a block are dropped)."""
    if factor <= 1:
        return np.asarray(array, dtype=np.float32)
    ny, nx = (s // factor for s in array.shape)
    trimmed = np.asarray(array[: ny * factor, : nx * factor], dtype=np.float32)
    return trimmed.reshape(ny, factor, nx, factor).mean(axis=(1, 3))


def save_png(
    array: np.ndarray,
    path: str | Path,
    *,
    title: str | None = None,
    cmap: str = "gray",
    stretch: bool = True,
    colorbar: bool = False,
    max_pixels: int = 1600,
) -> Path:
    """Write a PNG preview of ``array`` (row 0 at the bottom, as astronomers draw images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(array)
    factor = max(1, int(np.ceil(max(data.shape) / max_pixels)))
    shown = bin_image(data, factor) if factor > 1 else data.astype(np.float32)
    if stretch:
        shown = asinh_stretch(shown)
    height, width = shown.shape
    aspect = height / max(width, 1)
    fig_w = 8.0
    fig, ax = plt.subplots(figsize=(fig_w, max(2.0, fig_w * aspect) + (0.5 if title else 0.0)), dpi=100)
    im = ax.imshow(shown, origin="lower", cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def raw_mosaic(path: str | Path, *, camera: Camera | None = None, binning: int = 8) -> np.ndarray:
    """A binned focal-plane picture of a raw MEF: each CCD trimmed, overscan-subtracted, placed.

    Each amplifier's serial-overscan median is subtracted (enough for a picture) and the
    CCD is drawn where the camera puts it, rotated as the camera says; gaps stay NaN.
    """
    camera = camera or load_camera("MegaPrime")
    placed: list[tuple[float, float, np.ndarray]] = []
    with fits.open(path, memmap=False) as hdus:
        for hdu in hdus[1:]:
            if hdu.data is None:
                continue
            det = camera.detector_from_header(hdu.header)
            raw = np.asarray(hdu.data, dtype=np.float32)
            ccd = np.full(det.bbox.shape, np.nan, dtype=np.float32)
            for amp in det.amplifiers:
                level = float(np.median(raw[amp.raw_serial_overscan_bbox.slices(det.raw_bbox)]))
                ccd[amp.bbox.slices(det.bbox)] = raw[amp.raw_data_bbox.slices(det.raw_bbox)] - level
            if round(det.rotation_deg) % 360 == 180:
                ccd = ccd[::-1, ::-1]
            x0, y0 = det.pixel_to_focal_plane(det.bbox.x0, det.bbox.y0)
            x1, y1 = det.pixel_to_focal_plane(det.bbox.x1, det.bbox.y1)
            placed.append((float(min(x0, x1)), float(min(y0, y1)), bin_image(ccd, binning)))
    if not placed:
        raise ValueError(f"{path}: no image extensions")
    scale = camera.pixel_size_mm * binning
    xs = [p[0] for p in placed]
    ys = [p[1] for p in placed]
    origin_x, origin_y = min(xs), min(ys)
    width = max(int(round((x - origin_x) / scale)) + a.shape[1] for x, _, a in placed)
    height = max(int(round((y - origin_y) / scale)) + a.shape[0] for _, y, a in placed)
    canvas = np.full((height, width), np.nan, dtype=np.float32)
    for x, y, tile in placed:
        i = int(round((x - origin_x) / scale))
        j = int(round((y - origin_y) / scale))
        canvas[j : j + tile.shape[0], i : i + tile.shape[1]] = tile
    return canvas


def save_raw_previews(raw_files: Sequence[str | Path], out_dir: str | Path, *, binning: int = 8) -> list[Path]:
    """One PNG mosaic per raw file, named after it."""
    written = []
    for raw in raw_files:
        name = Path(raw).name.split(".")[0]
        mosaic = raw_mosaic(raw, binning=binning)
        written.append(save_png(mosaic, Path(out_dir) / f"{name}.png", title=f"raw {name} (binned {binning}x{binning})"))
    return written


def coadd_qa_pictures(
    coadd: "Exposure", epoch_count: np.ndarray | None, out_dir: str | Path, *, title: str = ""
) -> dict[str, Path]:
    """PNGs of a coadd: the image, its CLIPPED mask and (CompareWarp) the epoch-count image.

    The epoch count is how many warps flagged an artifact candidate at each pixel: a
    trail shows as a 1-epoch streak, a real variable as a high count (and is kept).
    """
    from coadd_core.crop import data_bbox

    out = Path(out_dir)
    box = data_bbox(coadd)
    if box.is_empty():
        box = coadd.bbox
    view = coadd.subset(box)
    no_data = (view.mask & view.planes.bitmask("NO_DATA")) != 0
    shown = np.where(no_data, np.nan, view.image)  # the interpolated fill would set the stretch
    pictures = {"coadd": save_png(shown, out / "coadd.png", title=f"coadd {title}")}
    clipped = (view.mask & view.planes.bitmask("CLIPPED")) != 0
    pictures["clipped"] = save_png(
        clipped.astype(np.float32), out / "clipped.png", title=f"CLIPPED {title} ({int(clipped.sum())} px)",
        stretch=False, cmap="magma",
    )
    if epoch_count is not None:
        counts = np.asarray(epoch_count, dtype=np.float32)
        if counts.shape == coadd.bbox.shape:
            counts = counts[box.slices(coadd.bbox)]
        pictures["epoch_count"] = save_png(
            counts, out / "epoch_count.png",
            title=f"artifact epoch count {title}", stretch=False, cmap="viridis", colorbar=True,
        )
    return pictures
