"""Cropping exposures to their data box."""

from __future__ import annotations

import numpy as np

from coadd_core.crop import crop_to_data, data_bbox
from coadd_core.exposure import Exposure
from coadd_core.geom import Box
from coadd_core.image import MaskedImage


def _exposure() -> Exposure:
    mi = MaskedImage.zeros(Box.from_size(100, 80, x0=1000, y0=2000))
    no_data = mi.planes.bitmask("NO_DATA")
    mi.mask[:] = no_data
    mi.image[:] = np.nan
    mi.mask[10:30, 40:55] = 0
    mi.image[10:30, 40:55] = 1.0
    return Exposure(mi, metadata={"k": 1})


def test_data_bbox_in_parent_coordinates() -> None:
    assert data_bbox(_exposure()) == Box(1040, 2010, 1054, 2029)


def test_crop_keeps_pixels_and_place() -> None:
    exp = _exposure()
    cropped = crop_to_data(exp, margin=2)
    assert cropped is not None
    assert cropped.bbox == Box(1038, 2008, 1056, 2031)
    np.testing.assert_array_equal(cropped.image, exp.subset(cropped.bbox).image)
    assert cropped.metadata == {"k": 1}
    assert cropped.image.base is None or cropped.image.base is not exp.image.base


def test_nothing_to_keep() -> None:
    exp = _exposure()
    exp.mask[:] = exp.planes.bitmask("NO_DATA")
    assert crop_to_data(exp) is None
