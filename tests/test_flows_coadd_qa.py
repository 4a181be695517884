"""The coadd flow's QA artifact: pictures embedded within a size budget, listed by path after."""

from __future__ import annotations

from pathlib import Path

from flows.coadd import qa_markdown


def test_pictures_are_embedded_until_the_budget_then_listed(tmp_path: Path) -> None:
    rows = []
    for patch in (1, 2, 3):
        pics = {}
        for kind in ("coadd", "clipped", "epoch_count"):
            path = tmp_path / f"{patch}_{kind}.png"
            path.write_bytes(b"\x89PNG" + bytes(3000))
            pics[kind] = str(path)
        rows.append({"tract": 9813, "patch": patch, "band": "r", "pictures": pics})
    rows.append({"tract": 9813, "patch": 4, "band": "r"})  # no pictures: left out
    everything = qa_markdown(rows, budget=10**9)
    assert everything.count("data:image/png;base64,") == 9 and "patch 4" not in everything
    # room for one patch's three pictures (about 4 kB each): the others by path
    one = qa_markdown(rows, budget=15_000)
    assert one.count("data:image/png;base64,") == 3 and "patch 1" in one
    assert f"- `{tmp_path / '2_coadd.png'}`" in one and f"- `{tmp_path / '3_epoch_count.png'}`" in one
    assert len(one) < 16_000
