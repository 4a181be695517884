"""Sky map configurations (LSST ``BaseSkyMapConfig`` and its rings / discrete variants).

The configs are frozen pydantic models so that the same objects can be flow parameters,
serialised into the registry, and hashed to identify a sky map definition. Defaults are
the project defaults of ALGORITHMS.md §4 (LSST's own defaults are noted per field).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SkyMapConfig", "RingsSkyMapConfig", "DiscreteSkyMapConfig"]


class SkyMapConfig(BaseModel):
    """Fields shared by every sky map: tract WCS and patch layout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pixel_scale: float = Field(
        0.185, gt=0, description="Tract pixel scale (arcsec/px); LSST pixelScale, default 0.333."
    )
    projection: Literal["TAN", "STG"] = Field(
        "TAN", description="Tract WCS projection code; LSST projection, default 'STG'."
    )
    tract_overlap: float = Field(
        1.0 / 60.0,
        ge=0,
        description="Minimum overlap of adjacent tracts (deg); LSST tractOverlap, default 1.0.",
    )
    patch_inner_dimensions: tuple[int, int] = Field(
        (4000, 4000), description="Inner patch size (x, y) in pixels; LSST patchInnerDimensions."
    )
    patch_border: int = Field(
        100, ge=0, description="Outer minus inner patch size per side (px); LSST patchBorder."
    )

    @model_validator(mode="after")
    def _check_patch_dimensions(self) -> "SkyMapConfig":
        if min(self.patch_inner_dimensions) <= 0:
            raise ValueError(
                f"patch_inner_dimensions must be positive: {self.patch_inner_dimensions}"
            )
        return self


class RingsSkyMapConfig(SkyMapConfig):
    """Rings of constant declination divided into tracts, plus two polar caps (LSST RingsSkyMap)."""

    num_rings: int = Field(120, gt=0, description="Number of declination rings; LSST numRings.")
    ra_start: float = Field(
        0.0,
        ge=0.0,
        lt=360.0,
        description="RA of the first tract centre of each ring (deg); LSST raStart.",
    )


class DiscreteSkyMapConfig(SkyMapConfig):
    """One square tract per listed position (LSST DiscreteSkyMap)."""

    ra_list: tuple[float, ...] = Field(..., description="Tract centre RAs (deg); LSST raList.")
    dec_list: tuple[float, ...] = Field(..., description="Tract centre Decs (deg); LSST decList.")
    radius_list: tuple[float, ...] = Field(
        ..., description="Tract half-sizes (deg), before tract_overlap; LSST radiusList."
    )

    @model_validator(mode="after")
    def _check_lists(self) -> "DiscreteSkyMapConfig":
        lengths = {len(self.ra_list), len(self.dec_list), len(self.radius_list)}
        if len(lengths) != 1:
            raise ValueError(
                "ra_list, dec_list and radius_list must have equal lengths, got "
                f"{len(self.ra_list)}, {len(self.dec_list)}, {len(self.radius_list)}"
            )
        if not self.ra_list:
            raise ValueError("a discrete sky map needs at least one tract")
        if any(not -90.0 <= d <= 90.0 for d in self.dec_list):
            raise ValueError("dec_list values must lie in [-90, 90] deg")
        if any(r < 0 for r in self.radius_list):
            raise ValueError("radius_list values must be non-negative")
        return self
