"""``coadd evaluate``: score the coadds of a simulated run against the simulator's truth.

For every patch coadded in a demo-style output directory (``truth/``, ``repo/``), the
stored warps are assembled again in memory with CompareWarp and with SafeClip (the
alternative masks are not stored), the compare-warp coadd is checked against the stored
``deepCoadd``, and both are scored with :func:`coadd_core.sim.evaluate.score_coadd`:
artifact pixels rejected, artifact flux left in the coadd, false clips on stars,
photometry of static and variable stars and the noise of the coadd, side by side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli_common import format_table

logger = logging.getLogger(__name__)

__all__ = ["PatchEvaluation", "evaluate_run", "format_evaluation"]


@dataclass
class PatchEvaluation:
    """Scores of one patch x band, one per method, and the check of the stored coadd."""

    tract: int
    patch: int
    band: str
    n_warps: int
    scores: dict[str, Any] = field(default_factory=dict)
    stored_coadd_max_diff: float = float("nan")
    """Largest difference of the re-assembled CompareWarp coadd from the stored deepCoadd,
    relative to the stored coadd's largest absolute value."""


class _LazyCalexps(Mapping[int, list[Any]]):
    """visit -> its calexps, read from the butler when asked for (and not kept)."""

    def __init__(self, butler: Any, collections: str, instrument: str, visits: list[int]) -> None:
        self._butler, self._collections, self._instrument, self._visits = butler, collections, instrument, visits

    def __getitem__(self, visit: int) -> list[Any]:
        if visit not in self._visits:
            raise KeyError(visit)
        refs = self._butler.query_datasets(
            "calexp", self._collections, data_id={"instrument": self._instrument, "visit": visit}
        )
        return [self._butler.get(r) for r in refs]

    def __iter__(self) -> Iterator[int]:
        return iter(self._visits)

    def __len__(self) -> int:
        return len(self._visits)


def _plan(out_dir: Path) -> Any:
    from coadd_core.sim import plan_survey
    from coadd_core.sim.config import SimConfig

    path = out_dir / "truth" / "simulation.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a simulated run (no truth/simulation.json)")
    info = json.loads(path.read_text())
    return plan_survey(SimConfig.model_validate(info["config"]), seed=int(info["seed"]))


def evaluate_run(
    out_dir: str | Path,
    *,
    coadds: str = "demo/coadd",
    warps: str = "demo/warp",
    calexps: str = "demo/isr",
    methods: tuple[str, ...] = ("compare-warp", "safe-clip"),
    threshold: float = 1.0,
    where: str = "",
) -> list[PatchEvaluation]:
    """Score every coadded patch of the simulated run in ``out_dir`` (those matching the
    data query ``where``, e.g. ``"patch IN (36, 44)"``) with ``methods``."""
    from coadd_core.assemble import (
        CompareWarpConfig,
        SafeClipConfig,
        WarpHandle,
        compare_warp_assemble,
        safe_clip_assemble,
    )
    from coadd_core.sim.evaluate import patch_truth, score_coadd
    from flows.stage import load_skymap
    from registry.butler import Butler

    out = Path(out_dir)
    plan = _plan(out)
    results: list[PatchEvaluation] = []
    with Butler.open(out / "repo") as butler:
        _, skymap = load_skymap(butler, None)
        stored = butler.query_datasets("deepCoadd", coadds, where)
        if not stored:
            matching = f" matching {where!r}" if where else ""
            raise LookupError(f"no deepCoadd{matching} in {coadds!r} of {out / 'repo'}")
        for ref in sorted(stored, key=lambda r: (r.data_id["tract"], r.data_id["patch"])):
            did = {k: ref.data_id[k] for k in ("skymap", "tract", "patch", "band")}
            tract = skymap[did["tract"]]
            patch = tract[did["patch"]]
            direct_refs = butler.query_datasets("deepCoadd_directWarp", warps, data_id=did)
            matched_refs = butler.query_datasets("deepCoadd_psfMatchedWarp", warps, data_id=did)
            direct = {int(r.data_id["visit"]): butler.get(r) for r in direct_refs}
            # calexps are read one visit at a time while the truth is rendered
            visit_calexps = _LazyCalexps(butler, calexps, plan.camera.name, sorted(direct))
            # assemble and score where the warps have pixels (the rest of a patch holds
            # nothing in a small run); only the local backgrounds of the template detection
            # see a different grid, so the stored coadd is reproduced closely, not exactly
            box = None
            for w in direct.values():
                box = w.bbox if box is None else box.union(w.bbox)
            box = box.intersection(patch.outer_bbox)
            logger.info("tract %s patch %s: %d warps, rendering the truth over %s", did["tract"], did["patch"], len(direct), box)
            truth = patch_truth(plan, visit_calexps, box, tract.wcs)
            evaluation = PatchEvaluation(int(did["tract"]), int(did["patch"]), str(did["band"]), len(direct))
            handles = [WarpHandle.from_exposure(w, visit=v) for v, w in sorted(direct.items())]
            for method in methods:
                if method == "compare-warp":
                    config: Any = CompareWarpConfig(do_n_image=True)
                    m_handles = [
                        WarpHandle.from_file(butler.datastore.local_path_or_url(r.uri), visit=int(r.data_id["visit"]))
                        for r in matched_refs
                    ]
                    result = compare_warp_assemble(handles, m_handles, box, tract.wcs, config)
                    mine = butler.get(ref, bbox=box)
                    diff = np.abs(np.nan_to_num(result.coadd.image) - np.nan_to_num(mine.image))
                    scale = float(np.nanmax(np.abs(mine.image))) or 1.0
                    evaluation.stored_coadd_max_diff = float(diff.max()) / scale if diff.size else 0.0
                elif method == "safe-clip":
                    config = SafeClipConfig(do_n_image=True)
                    result = safe_clip_assemble(handles, box, tract.wcs, config)
                else:
                    raise ValueError(f"unknown method {method!r}; known: compare-warp, safe-clip")
                evaluation.scores[method] = score_coadd(
                    method, result.coadd, direct, result.alt_masks, truth, config, threshold=threshold
                )
            results.append(evaluation)
    return results


def format_evaluation(results: list[PatchEvaluation]) -> str:
    """Side-by-side table of the methods' scores for each patch."""
    blocks = []
    for ev in results:
        methods = list(ev.scores)
        names: list[str] = []
        values: dict[str, dict[str, str]] = {}
        for m in methods:
            for name, value in ev.scores[m].rows():
                if name not in names:
                    names.append(name)
                values.setdefault(name, {})[m] = value
        rows = [{"metric": n, **{m: values[n].get(m, "-") for m in methods}} for n in names]
        head = f"tract {ev.tract} patch {ev.patch} band {ev.band}: {ev.n_warps} warps"
        if np.isfinite(ev.stored_coadd_max_diff):
            head += f" (stored deepCoadd reproduced to {ev.stored_coadd_max_diff:.1e} of its peak)"
        blocks.append(head + "\n" + format_table(rows))
    return "\n\n".join(blocks)
