"""MaskedImage: image, mask and variance planes on one pixel box (LSST ``MaskedImageF``).

Arithmetic follows ALGORITHMS.md §0 so that errors propagate the way the LSST code
propagates them: sums and differences add variances and OR masks, scaling by ``s``
multiplies the variance by ``s**2``, and image division uses
``var = (Va b^2 + Vb a^2) / b^4``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .geom import Box
from .masks import MaskPlanes, remap_mask, standard_planes

__all__ = ["MaskedImage", "masked_images_equal"]

_Scalar = (int, float, np.integer, np.floating)


def _as_array(value: Any, dtype: type, name: str) -> np.ndarray:
    """The array itself when it already has ``dtype`` (so views stay views), else a copy."""
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {array.shape}")
    if array.dtype != dtype or not array.dtype.isnative:
        array = array.astype(dtype)
    return array


class MaskedImage:
    """Image (float32), mask (int32) and variance (float32) arrays over ``bbox``.

    Give the origin either as ``xy0`` or as a ``bbox`` matching the array shape (default
    origin (0, 0)); a missing mask or variance starts as zeros.  ``bbox`` is in parent
    coordinates: array index ``[y - y0, x - x0]`` holds parent pixel
    (x, y).  The arrays are held by reference; :meth:`subset` returns views.
    """

    __slots__ = ("image", "mask", "variance", "_bbox", "planes")

    def __init__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        variance: np.ndarray | None = None,
        *,
        xy0: tuple[int, int] | None = None,
        bbox: Box | None = None,
        planes: MaskPlanes | None = None,
    ) -> None:
        self.image = _as_array(image, np.float32, "image")
        shape = self.image.shape
        self.mask = (
            np.zeros(shape, dtype=np.int32) if mask is None else _as_array(mask, np.int32, "mask")
        )
        self.variance = (
            np.zeros(shape, dtype=np.float32)
            if variance is None
            else _as_array(variance, np.float32, "variance")
        )
        if self.mask.shape != shape or self.variance.shape != shape:
            raise ValueError(
                f"plane shapes differ: image {shape}, mask {self.mask.shape}, "
                f"variance {self.variance.shape}"
            )
        if bbox is not None:
            if xy0 is not None and tuple(xy0) != bbox.xy0:
                raise ValueError(f"xy0 {tuple(xy0)} disagrees with bbox {bbox}")
            if bbox.shape != shape:
                raise ValueError(f"bbox {bbox} does not match the array shape {shape}")
            self._bbox = bbox
        else:
            x0, y0 = (0, 0) if xy0 is None else (int(xy0[0]), int(xy0[1]))
            self._bbox = Box.from_shape(shape, (x0, y0))
        self.planes = standard_planes() if planes is None else planes

    # -- construction ----------------------------------------------------------------
    @classmethod
    def empty(cls, box: Box, planes: MaskPlanes | None = None) -> "MaskedImage":
        """Uninitialised image and variance, zero mask (for callers that fill every pixel)."""
        return cls(
            np.empty(box.shape, dtype=np.float32),
            np.zeros(box.shape, dtype=np.int32),
            np.empty(box.shape, dtype=np.float32),
            xy0=box.xy0,
            planes=planes,
        )

    @classmethod
    def zeros(cls, box: Box, planes: MaskPlanes | None = None) -> "MaskedImage":
        return cls(
            np.zeros(box.shape, dtype=np.float32),
            np.zeros(box.shape, dtype=np.int32),
            np.zeros(box.shape, dtype=np.float32),
            xy0=box.xy0,
            planes=planes,
        )

    def copy(self) -> "MaskedImage":
        """Deep copy (arrays and plane dictionary)."""
        return MaskedImage(
            self.image.copy(),
            self.mask.copy(),
            self.variance.copy(),
            xy0=self.xy0,
            planes=self.planes.copy(),
        )

    # -- geometry ----------------------------------------------------------------------
    @property
    def bbox(self) -> Box:
        return self._bbox

    @property
    def xy0(self) -> tuple[int, int]:
        return self._bbox.xy0

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    @property
    def width(self) -> int:
        return self._bbox.width

    @property
    def height(self) -> int:
        return self._bbox.height

    def subset(self, box: Box) -> "MaskedImage":
        """View of the pixels in ``box`` (parent coordinates); writes show in the parent."""
        if box.is_empty() or not self._bbox.contains(box):
            raise ValueError(f"sub-box {box} is not inside the image box {self._bbox}")
        rows, cols = box.slices(self._bbox)
        return MaskedImage(
            self.image[rows, cols],
            self.mask[rows, cols],
            self.variance[rows, cols],
            xy0=box.xy0,
            planes=self.planes,
        )

    def __getitem__(self, box: Box) -> "MaskedImage":
        return self.subset(box)

    def assign(self, other: "MaskedImage") -> None:
        """Copy ``other``'s pixels into the overlapping part of ``other.bbox`` here."""
        if not self._bbox.contains(other.bbox):
            raise ValueError(f"box {other.bbox} is not inside the image box {self._bbox}")
        mask = self._conformed_mask(other)
        rows, cols = other.bbox.slices(self._bbox)
        self.image[rows, cols] = other.image
        self.mask[rows, cols] = mask
        self.variance[rows, cols] = other.variance

    # -- mask planes -------------------------------------------------------------------
    def add_mask_plane(self, name: str, description: str = "") -> int:
        """Bit of plane ``name``, adding it (to a copy of the shared dictionary) if new."""
        if name in self.planes:
            return self.planes.bit(name)
        self.planes = self.planes.copy()
        return self.planes.add_plane(name, description)

    def _conformed_mask(self, other: "MaskedImage") -> np.ndarray:
        """``other.mask`` in this image's bit convention (adding missing planes here)."""
        if other.planes is self.planes or other.planes == self.planes:
            return other.mask
        mask, planes = remap_mask(other.mask, other.planes, self.planes)
        if planes is not self.planes:
            self.planes = planes
        return mask

    # -- arithmetic --------------------------------------------------------------------
    def _check_same_box(self, other: "MaskedImage", op: str) -> None:
        if other.bbox != self._bbox:
            raise ValueError(f"cannot {op} images on different boxes: {self._bbox} and {other.bbox}")

    def __add__(self, other: "MaskedImage | float") -> "MaskedImage":
        result = self.copy()
        result += other
        return result

    def __sub__(self, other: "MaskedImage | float") -> "MaskedImage":
        result = self.copy()
        result -= other
        return result

    def __mul__(self, scale: float) -> "MaskedImage":
        result = self.copy()
        result *= scale
        return result

    __rmul__ = __mul__

    def __truediv__(self, other: "MaskedImage | float") -> "MaskedImage":
        result = self.copy()
        result /= other
        return result

    def __iadd__(self, other: "MaskedImage | float") -> "MaskedImage":
        if isinstance(other, MaskedImage):
            self._check_same_box(other, "add")
            mask = self._conformed_mask(other)
            self.image += other.image
            self.variance += other.variance
            self.mask |= mask
        elif isinstance(other, _Scalar):
            self.image += np.float32(other)
        else:
            return NotImplemented
        return self

    def __isub__(self, other: "MaskedImage | float") -> "MaskedImage":
        if isinstance(other, MaskedImage):
            self._check_same_box(other, "subtract")
            mask = self._conformed_mask(other)
            self.image -= other.image
            self.variance += other.variance
            self.mask |= mask
        elif isinstance(other, _Scalar):
            self.image -= np.float32(other)
        else:
            return NotImplemented
        return self

    def __imul__(self, scale: float) -> "MaskedImage":
        if not isinstance(scale, _Scalar):
            return NotImplemented
        s = float(scale)
        self.image *= np.float32(s)
        self.variance *= np.float32(s * s)
        return self

    def __itruediv__(self, other: "MaskedImage | float") -> "MaskedImage":
        if isinstance(other, MaskedImage):
            self._check_same_box(other, "divide")
            mask = self._conformed_mask(other)
            a, b = self.image, other.image
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                # (Va b^2 + Vb a^2) / b^4 written as (Va + Vb q^2) / b^2 with q = a/b,
                # which does not overflow float32 for large b.
                q = a / b
                self.variance[...] = (self.variance + other.variance * q * q) / (b * b)
                self.image[...] = q
            self.mask |= mask
        elif isinstance(other, _Scalar):
            s = float(other)
            self.image /= np.float32(s)
            self.variance /= np.float32(s * s)
        else:
            return NotImplemented
        return self

    def scaled_subtract(self, other: "MaskedImage", scale: float) -> "MaskedImage":
        """``self - scale * other`` as a new image: var = Va + scale^2 Vb, masks OR."""
        self._check_same_box(other, "subtract")
        result = self.copy()
        mask = result._conformed_mask(other)
        s = float(scale)
        result.image -= np.float32(s) * other.image
        result.variance += np.float32(s * s) * other.variance
        result.mask |= mask
        return result

    def scaled_add(self, other: "MaskedImage", scale: float) -> "MaskedImage":
        """``self + scale * other`` as a new image: var = Va + scale^2 Vb, masks OR."""
        return self.scaled_subtract(other, -float(scale))

    def __repr__(self) -> str:
        return f"MaskedImage(bbox={self._bbox})"


def masked_images_equal(a: MaskedImage, b: MaskedImage) -> bool:
    """True if boxes, plane dictionaries and all pixels (NaNs in place) are identical."""
    return (
        a.bbox == b.bbox
        and a.planes == b.planes
        and np.array_equal(a.image, b.image, equal_nan=True)
        and np.array_equal(a.mask, b.mask)
        and np.array_equal(a.variance, b.variance, equal_nan=True)
    )
