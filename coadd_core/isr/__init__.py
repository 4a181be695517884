"""Instrument signature removal for CFHT MegaPrime raw CCDs (LSST IsrTask / CfhtIsrTask)."""

from coadd_core.isr.config import IsrConfig, OverscanConfig, cfht_isr_config, isr_config_for

__all__ = ["IsrConfig", "OverscanConfig", "cfht_isr_config", "isr_config_for"]
