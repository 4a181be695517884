"""The pipeline's dataset types, with the LSST names, dimensions and storage classes."""

from __future__ import annotations

from registry.refs import DatasetType

_EXPOSURE = ("instrument", "exposure", "detector")
_VISIT = ("instrument", "visit", "detector")
_WARP = ("instrument", "visit", "skymap", "tract", "patch")
_COADD = ("skymap", "tract", "patch", "band")

STANDARD_DATASET_TYPES: tuple[DatasetType, ...] = (
    DatasetType("raw", _EXPOSURE, "RawImage"),
    DatasetType("bias", ("instrument", "detector"), "Exposure", is_calibration=True),
    DatasetType("dark", ("instrument", "detector"), "Exposure", is_calibration=True),
    DatasetType("flat", ("instrument", "detector", "physical_filter"), "Exposure", is_calibration=True),
    DatasetType("postISRCCD", _EXPOSURE, "Exposure"),
    DatasetType("calexp", _VISIT, "Exposure"),
    DatasetType("calexpBackground", _VISIT, "StructuredData"),
    DatasetType("skyMap", ("skymap",), "SkyMap"),
    DatasetType("refcat", (), "Table"),
    DatasetType("deepCoadd_directWarp", _WARP, "Exposure"),
    DatasetType("deepCoadd_psfMatchedWarp", _WARP, "Exposure"),
    DatasetType("deepCoadd_templateCoadd", _COADD, "Exposure"),
    DatasetType("deepCoadd", _COADD, "Exposure"),
    DatasetType("deepCoadd_nImage", _COADD, "Image"),
    DatasetType("template", _VISIT, "Exposure"),
)

#: Readable file layouts for the main types; anything else uses the datastore default.
FILE_TEMPLATES: dict[str, str] = {
    "raw": "{run}/{dataset_type}/{exposure}/{dataset_type}_{instrument}_{exposure}_{run_name}",
    "bias": "{run}/{dataset_type}/{dataset_type}_{instrument}_{detector}_{run_name}",
    "dark": "{run}/{dataset_type}/{dataset_type}_{instrument}_{detector}_{run_name}",
    "flat": "{run}/{dataset_type}/{physical_filter}/{dataset_type}_{instrument}_{physical_filter}_{detector}_{run_name}",
    "postISRCCD": "{run}/{dataset_type}/{exposure}/{dataset_type}_{instrument}_{exposure}_{detector}_{run_name}",
    "calexp": "{run}/{dataset_type}/{visit}/{dataset_type}_{instrument}_{visit}_{detector}_{run_name}",
    "calexpBackground": "{run}/{dataset_type}/{visit}/{dataset_type}_{instrument}_{visit}_{detector}_{run_name}",
    "deepCoadd_directWarp": "{run}/{dataset_type}/{tract}/{patch}/{dataset_type}_{instrument}_{visit}_{tract}_{patch}_{run_name}",
    "deepCoadd_psfMatchedWarp": "{run}/{dataset_type}/{tract}/{patch}/{dataset_type}_{instrument}_{visit}_{tract}_{patch}_{run_name}",
    "deepCoadd_templateCoadd": "{run}/{dataset_type}/{band}/{tract}/{patch}/{dataset_type}_{band}_{tract}_{patch}_{run_name}",
    "deepCoadd": "{run}/{dataset_type}/{band}/{tract}/{patch}/{dataset_type}_{band}_{tract}_{patch}_{run_name}",
    "deepCoadd_nImage": "{run}/{dataset_type}/{band}/{tract}/{patch}/{dataset_type}_{band}_{tract}_{patch}_{run_name}",
    "template": "{run}/{dataset_type}/{visit}/{dataset_type}_{instrument}_{visit}_{detector}_{run_name}",
    "skyMap": "{run}/{dataset_type}/{dataset_type}_{skymap}_{run_name}",
}
