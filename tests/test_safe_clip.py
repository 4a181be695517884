"""SafeClip (ALGORITHMS.md §8, §11 item 11) and a side-by-side comparison with CompareWarp
on the same synthetic survey."""

from __future__ import annotations

import numpy as np
import pytest

from coadd_core.assemble import CompareWarpConfig, SafeClipConfig, WarpHandle
from coadd_core.assemble.alt_masks import spans_to_mask
from coadd_core.assemble.compare_warp import compare_warp_assemble
from coadd_core.assemble.safe_clip import choose_clipped_warps, safe_clip_assemble
from coadd_core.detection import DetectionConfig, detect_footprints
from coadd_core.geom import Box
from coadd_core.masks import bitmask
from coadd_core.psf import GaussianPsf
from test_compare_warp import (
    NOISE,
    WCS0,
    artifact_metrics,
    build_scene,
    clipped_masks,
    make_exposure,
    render_points,
)

BOX = Box(0, 0, 99, 99)
TRANSIENT = (60.3, 55.6, 1.2e4)


def detected_warps(n, rng, transient_epoch=None, sigma=2.0):
    warps = []
    for e in range(n):
        sources = [(25.4, 30.2, 3e4)] + ([TRANSIENT] if e == transient_epoch else [])
        img = render_points(BOX, sources, sigma) + rng.normal(0, NOISE, BOX.shape)
        exp = make_exposure(BOX, img, NOISE**2, e + 1, GaussianPsf(sigma))
        detect_footprints(exp.masked_image, sigma, DetectionConfig(threshold_value=5.0))
        exp.mask[...] &= ~np.int32(bitmask("EDGE"))
        warps.append(exp)
    return warps


@pytest.mark.parametrize("n", [3, 4])
def test_transient_clipped_only_in_its_epoch(n):
    rng = np.random.default_rng(40 + n)
    warps = detected_warps(n, rng, transient_epoch=1)
    res = safe_clip_assemble([WarpHandle.from_exposure(w) for w in warps], BOX, WCS0, SafeClipConfig())
    x, y = int(round(TRANSIENT[0])), int(round(TRANSIENT[1]))
    clipped = {v: spans_to_mask(a.clipped, BOX) for v, a in res.alt_masks.items()}
    assert clipped[2][y, x]
    assert all(not c.any() for v, c in clipped.items() if v != 2)
    assert res.coadd.mask[y, x] & np.int32(bitmask("CLIPPED"))
    others = np.mean([w.image[y, x] for i, w in enumerate(warps) if i != 1])
    assert res.coadd.image[y, x] == pytest.approx(others, abs=1e-3)
    assert res.difference.bbox == BOX


def test_two_epochs_nothing_found():
    rng = np.random.default_rng(50)
    warps = detected_warps(2, rng, transient_epoch=1)
    res = safe_clip_assemble([WarpHandle.from_exposure(w) for w in warps], BOX, WCS0, SafeClipConfig())
    assert all(len(a.clipped) == 0 for a in res.alt_masks.values())


def test_clip_choice_rules():
    cfg = SafeClipConfig()
    n_pix = np.array([100.0])

    def choose(det, ignore=None):
        det = np.array(det, float)[:, None]
        ign = np.zeros_like(det) if ignore is None else np.array(ignore, float)[:, None]
        return choose_clipped_warps(ign, det, n_pix, cfg)[:, 0]

    assert choose([60, 0, 0]).tolist() == [True, False, False]          # single candidate > 0.5
    assert choose([40, 0, 0]).tolist() == [False, False, False]         # single candidate <= 0.5
    assert choose([70, 30, 0]).tolist() == [True, False, False]         # exactly one > 0.6
    assert choose([70, 65, 0]).tolist() == [False, False, False]        # two > 0.6
    assert choose([50, 50, 10, 5, 0]).tolist() == [True, True, False, False, False]  # the double rule
    assert choose([50, 50, 10]).tolist() == [False, False, False]       # double needs > 3 candidates
    assert choose([50, 50, 20, 5]).tolist() == [False, False, False, False]  # rest overlap > 0.15
    assert choose([60, 0], ignore=[60, 0]).tolist() == [False, False]   # mostly bad: not a candidate


def test_statistic_must_be_mean():
    with pytest.raises(ValueError):
        SafeClipConfig(statistic="MEDIAN")


def test_compare_warp_beats_safe_clip_on_the_same_data():
    scene = build_scene(seed=1, detect_warps=True)
    direct, matched = scene.handles()
    cw = compare_warp_assemble(direct, matched, scene.box, WCS0, CompareWarpConfig())
    sc = safe_clip_assemble(direct, scene.box, WCS0, SafeClipConfig())
    m_cw = artifact_metrics(scene, cw.coadd, clipped_masks(scene, cw.alt_masks))
    m_sc = artifact_metrics(scene, sc.coadd, clipped_masks(scene, sc.alt_masks))
    report = f"CompareWarp {m_cw}\nSafeClip    {m_sc}"
    assert m_cw["artifact_clipped_fraction"] >= m_sc["artifact_clipped_fraction"], report
    assert m_cw["artifact_residual_over_3sigma"] <= m_sc["artifact_residual_over_3sigma"], report
    assert m_cw["variable_star_pixels_clipped"] < m_sc["variable_star_pixels_clipped"], report
    assert m_cw["static_star_pixels_clipped"] <= m_sc["static_star_pixels_clipped"], report
