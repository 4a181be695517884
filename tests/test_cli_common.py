"""The shared CLI conventions: run/query arguments, task runners, output formats."""

from __future__ import annotations

import argparse
import json

import pytest

from flows import cli_common
from flows.cli_common import TaskRunnerSpec, parse_task_runner


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coadd run isr", exit_on_error=False)
    cli_common.add_run_arguments(parser)
    return parser


def test_run_arguments_defaults() -> None:
    args = _run_parser().parse_args(["repo", "-i", "raw/all,calib", "-o", "u/me/isr"])
    assert args.repo == "repo"
    assert args.inputs == ["raw/all", "calib"]
    assert args.output == "u/me/isr"
    assert args.data_query == ""
    assert args.clobber is False
    assert args.task_runner == TaskRunnerSpec(kind="processes")


def test_run_arguments_all_options() -> None:
    args = _run_parser().parse_args(
        [
            "repo",
            "-i",
            "a",
            "-o",
            "b",
            "-d",
            "detector < 4",
            "--clobber",
            "--task-runner",
            "dask=tcp://10.0.0.1:8786",
        ]
    )
    assert args.data_query == "detector < 4"
    assert args.clobber
    assert args.task_runner.kind == "dask"
    assert args.task_runner.address == "tcp://10.0.0.1:8786"
    assert str(args.task_runner) == "dask=tcp://10.0.0.1:8786"


@pytest.mark.parametrize(
    "text,kind,address",
    [("threads", "threads", None), ("PROCESSES", "processes", None), ("dask", "dask", None)],
)
def test_parse_task_runner(text: str, kind: str, address: str | None) -> None:
    spec = parse_task_runner(text)
    assert (spec.kind, spec.address) == (kind, address)


@pytest.mark.parametrize("bad", ["thread", "threads=tcp://x:1", "dask=", "dask=http://x; rm -rf /", ""])
def test_parse_task_runner_rejects(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_task_runner(bad)


@pytest.mark.parametrize("bad", ["../etc", "/abs", "a,,b", "a/../b", "has space", "trailing/"])
def test_collection_names_rejected(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli_common.parse_collection_list(bad)


def test_format_table_aligns_columns() -> None:
    text = cli_common.format_table([{"a": 1, "bb": "x"}, {"a": 22.5, "bb": None}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "bb"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["1", "x"]
    assert lines[3].split() == ["22.5", "-"]
    assert cli_common.format_table([]) == "(no rows)"


def test_format_json_round_trips() -> None:
    rows = [{"data_id": {"visit": 1}, "run": "r", "uri": "file:///x"}]
    assert json.loads(cli_common.format_json(rows)) == rows
