"""``coadd simulate``: write a simulated survey and summarise it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coadd_core.sim import SimulationResult, simulate


def run_simulation(
    preset: str, out_dir: Path, *, seed: int | None = None, progress: bool = True, workers: int = 1
) -> SimulationResult:
    """Simulate ``preset`` into ``out_dir`` (raw/, refcat/, truth/)."""
    return simulate(preset, out_dir, seed=seed, progress=progress, workers=workers)


def summary_rows(result: SimulationResult) -> list[dict[str, Any]]:
    """One row per exposure written: number, kind, filter, exposure time, MJD, file."""
    return [
        {
            "exposure": row["expnum"],
            "kind": row["kind"],
            "physical_filter": row["physical_filter"],
            "exptime": row["exptime"],
            "mjd": round(float(row["mjd"]), 5),
            "file": Path(row["file"]).name,
        }
        for row in result.exposures
    ]
