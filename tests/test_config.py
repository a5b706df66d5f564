"""Run-level flags from the RunConfig declaration: `bench run` and `bench perf` take the same
flags, with the fields' defaults and checks."""

from __future__ import annotations

import argparse

import pytest

from bench import cli
from bench.config import RUN_LEVEL, RunConfig, add_run_level_flags, run_level_from_args
from bench.errors import ConfigError


def test_unset_run_level_flags_leave_the_fields_defaults():
    parser = argparse.ArgumentParser()
    add_run_level_flags(parser)
    assert run_level_from_args(parser.parse_args([])) == {}
    args = parser.parse_args(["--seed", "3", "--data-dir", "/d", "--device", "cpu", "--deterministic"])
    assert run_level_from_args(args) == {"seed": 3, "data_dir": "/d", "device": "cpu", "deterministic": True}
    assert RunConfig(**run_level_from_args(parser.parse_args([]))).data_dir == "data"
    assert {a.dest for a in parser._actions if a.dest != "help"} == set(RUN_LEVEL)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--seed", "-1"], "--seed = -1: expected an integer in [0, 1073741823]"),
    (["--seed", "x"], "--seed = 'x': expected an integer"),
    (["--device", "tpu"], "--device = 'tpu': valid choices: auto, cpu, cuda, cuda:N"),
])
def test_a_bad_run_level_flag_names_the_flag_and_the_valid_values(argv, expected):
    parser = argparse.ArgumentParser()
    add_run_level_flags(parser)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        run_level_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(("argv", "expected"), [
    (["--seed", "-1"], "--seed = -1: expected an integer"),
    (["--device", "tpu"], "--device = 'tpu': valid choices: auto, cpu, cuda, cuda:N"),
])
def test_perf_takes_the_run_level_flags_of_bench_run(argv, expected, tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert cli.main(["perf", "--quick", *argv, "--json", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()
