"""Instrument signature removal for CFHT MegaPrime raw CCDs (LSST IsrTask / CfhtIsrTask)."""

from coadd_core.isr.config import IsrConfig, OverscanConfig, cfht_isr_config, isr_config_for
from coadd_core.isr.isr import IsrResult, run_isr
from coadd_core.isr.overscan import OverscanResult, fit_overscan
from coadd_core.isr.raw import assembled_wcs, visit_info_from_header

__all__ = [
    "IsrConfig",
    "OverscanConfig",
    "IsrResult",
    "OverscanResult",
    "assembled_wcs",
    "cfht_isr_config",
    "fit_overscan",
    "isr_config_for",
    "run_isr",
    "visit_info_from_header",
]
