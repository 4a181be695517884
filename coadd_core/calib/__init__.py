"""Master calibrations (cp_pipe): bias, dark and flat from ISR'd inputs."""

from coadd_core.calib.combine import (
    CalibCombineConfig,
    combine,
    combine_bias,
    combine_dark,
    combine_flat,
    find_cosmic_rays,
    solve_flat_scales,
)

__all__ = [
    "CalibCombineConfig",
    "combine",
    "combine_bias",
    "combine_dark",
    "combine_flat",
    "find_cosmic_rays",
    "solve_flat_scales",
]
