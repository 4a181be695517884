"""The ``coadd`` command line: help everywhere, one-line errors, working subcommands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser, main

SUBCOMMANDS = [
    ["demo"],
    ["evaluate"],
    ["simulate"],
    ["camera"],
    ["skymap"],
    ["skymap", "find"],
    ["skymap", "register"],
    ["check-query"],
    ["repo"],
    ["repo", "create"],
    ["repo", "upgrade"],
    ["ingest"],
    ["ingest-refcat"],
    ["run"],
    ["run", "calibs"],
    ["run", "isr"],
    ["run", "warp"],
    ["run", "coadd"],
    ["query"],
    ["query", "datasets"],
    ["query", "collections"],
    ["query", "data-ids"],
]


def _subparser_names() -> set[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(actions[0].choices)


def test_every_subcommand_is_covered_here() -> None:
    assert {c[0] for c in SUBCOMMANDS} == _subparser_names()


@pytest.mark.parametrize("words", [[], *SUBCOMMANDS])
def test_help_everywhere(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    assert "usage: coadd" in capsys.readouterr().out


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("coadd")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "simulate" in out.stdout and "demo" in out.stdout


def test_errors_are_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["skymap", "find", "10,95"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("coadd: error: ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_debug_shows_the_exception() -> None:
    with pytest.raises(Exception):
        main(["--debug", "skymap", "find", "not-a-position"])


def test_query_syntax_error_points_at_column(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-query", "detector < AND band='r'"])
    err = capsys.readouterr().err.splitlines()
    assert code != 0
    assert "column 11" in err[0]
    assert err[1] == "detector < AND band='r'"
    assert err[2].index("^") == 11


def test_check_query_normalises(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-query", "instrument='MegaPrime' and exposure in (1001,1002) and detector<4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "instrument = 'MegaPrime' AND exposure IN (1001, 1002) AND detector < 4"
    assert out[1] == "keys: detector, exposure, instrument"


def test_camera_lists_36_ccds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["camera", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 36
    assert rows[0]["name"] == "ccd00" and rows[35]["name"] == "ccd35"


def test_skymap_find_known_tract(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["skymap", "find", "150.1,2.2", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    # The rings sky map's ring geometry does not depend on the pixel scale: COSMOS is tract 9813.
    assert row["tract"] == 9813
    assert row["patch"] == row["patch_y"] * 8 + row["patch_x"]


def test_simulate_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    assert main(["simulate", "--preset", "tiny", "--out", str(out), "--no-progress", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"bias", "dark", "flat", "science"}
    for row in rows:
        assert (out / "raw" / row["file"]).is_file()


def test_simulate_unknown_preset_is_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--preset", "nope", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "nope" in err and "Traceback" not in err


def test_repository_commands_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], prefect_harness) -> None:
    sim = tmp_path / "sim"
    repo = tmp_path / "repo"
    assert main(["simulate", "--preset", "tiny", "--out", str(sim), "--no-progress"]) == 0
    assert main(["repo", "create", str(repo)]) == 0
    assert main(["repo", "create", str(repo)]) != 0  # exists: a clear error
    assert main(["repo", "upgrade", str(repo)]) == 0  # already at the newest schema
    capsys.readouterr()
    assert main(["ingest", str(repo), str(sim / "raw")]) == 0
    assert "8 file(s) ingested" in capsys.readouterr().out
    assert main(["ingest", str(repo), str(sim / "raw")]) == 0
    assert "8 already ingested" in capsys.readouterr().out
    assert main(["query", "datasets", str(repo), "raw", "-c", "MegaPrime/raw/all",
                 "-d", "exposure.observation_type='science' AND detector = 13", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4
    assert all(r["data_id"]["detector"] == 13 and r["run"] == "MegaPrime/raw/all" and r["uri"] for r in rows)
    assert main(["query", "collections", str(repo), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "MegaPrime/raw/all", "type": "RUN"}]
    assert main(["query", "data-ids", str(repo), "exposure", "-d", "exposure.observation_type='bias'", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["skymap", "register", str(repo), "rings", "--tracts", "overlapping"]) == 0
    assert "patch(es) registered" in capsys.readouterr().out
    assert main(["query", "data-ids", str(repo), "tract", "--format", "json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [9813]
    code = main(["query", "datasets", str(repo), "raw", "-c", "MegaPrime/raw/all", "-d", "detector = = 1"])
    assert code != 0 and "column" in capsys.readouterr().err


def test_bad_collection_name_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "datasets", str(tmp_path), "raw", "-c", "../etc"])
    assert exc.value.code == 2


def test_evaluate_names_a_directory_that_is_not_a_simulated_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "simulation.json" in err and len(err.strip().splitlines()) == 1
