"""A results folder is data, never code: the modules a sweep's manifest (`sweep.json`) lists are
never imported by `bench status DIR`, `bench sweep --out DIR` or `bench board --runs`. A command
that needs them says which `--import` to add (exit 2); one that does not, proceeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import cli, registry
from bench.config import RunConfig

PLANTED = '''
from pathlib import Path

Path(__file__).with_name("IMPORTED").write_text("the manifest's module ran")

from baselines.dense import Dense
from bench.pruner import register_pruner


@register_pruner("planted")
class Planted(Dense):
    """A pruner only this module registers."""
'''


@pytest.fixture
def clean_registry(monkeypatch):
    """Plugins imported by a test leave neither entries nor modules nor the environment behind."""
    monkeypatch.setenv(registry.PLUGINS_ENV, "")
    registry.populate()  # the built-in entries are in what is restored
    saved = [dict(r._entries) for r in (registry.PRUNERS, registry.MODELS, registry.DATASETS)]
    modules = set(sys.modules)
    yield
    for r, entries in zip((registry.PRUNERS, registry.MODELS, registry.DATASETS), saved, strict=True):
        r._entries = entries
    for name in set(sys.modules) - modules:
        if name.startswith("prunebench_plugin_"):
            del sys.modules[name]


def planted_folder(tmp_path: Path, pruner: str) -> tuple[Path, Path]:
    """(out folder whose manifest lists a module and has one cell of `pruner`, the module)."""
    module = tmp_path / "planted.py"
    module.write_text(PLANTED)
    out = tmp_path / "out"
    out.mkdir()
    cell = RunConfig(pruner=pruner, model="mlp", dataset="digits", seed=0).to_dict()
    (out / "sweep.json").write_text(json.dumps(
        {"name": "s", "path": "s.toml", "imports": [str(module)], "cells": [cell]}))
    return out, module


def test_status_never_imports_the_manifests_modules_and_says_which_import_to_add(
        tmp_path, capsys, clean_registry):
    out, module = planted_folder(tmp_path, "planted")
    assert cli.main(["status", str(out)]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "IMPORTED").exists()
    assert f"--import {module}" in err and "pruner 'planted'" in err and len(err.strip().splitlines()) == 1


def test_status_with_the_import_given_reads_the_folder(tmp_path, capsys, clean_registry):
    out, module = planted_folder(tmp_path, "planted")
    assert cli.main(["status", str(out), "--import", str(module)]) == 0
    assert (tmp_path / "IMPORTED").exists() and "missing 1" in capsys.readouterr().out


def test_a_folder_whose_cells_need_no_listed_module_is_read_without_it(tmp_path, capsys, clean_registry):
    out, _ = planted_folder(tmp_path, "dense")
    assert cli.main(["status", str(out)]) == 0
    assert not (tmp_path / "IMPORTED").exists() and "missing 1" in capsys.readouterr().out


def test_a_sweep_into_the_folder_never_imports_its_modules(tmp_path, capsys, clean_registry, monkeypatch):
    from bench.executors import local

    monkeypatch.setattr(local.Local, "submit", lambda *a: pytest.fail("submitted"))
    out, module = planted_folder(tmp_path, "planted")
    sweep = tmp_path / "s.toml"
    sweep.write_text('name = "s"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
                     "[pruners.dense]\n")
    assert cli.main(["sweep", str(sweep), "--out", str(out)]) == 2
    assert f"--import {module}" in capsys.readouterr().err and not (tmp_path / "IMPORTED").exists()


def test_a_board_over_the_runs_folder_never_imports_its_modules(
        tmp_path, capsys, clean_registry, monkeypatch):
    from bench.executors import local

    monkeypatch.setattr(local.Local, "submit", lambda *a: pytest.fail("submitted"))
    runs, module = planted_folder(tmp_path, "planted")
    board = tmp_path / "boards" / "s"
    board.mkdir(parents=True)
    (board / "sweep.toml").write_text('name = "s"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\n'
                                      'datasets = ["digits"]\n[pruners.dense]\n[pruners.grda]\n')
    (runs.parent / "runs").mkdir()
    runs.rename(runs.parent / "runs" / "s")
    assert cli.main(["board", str(board), "--runs", str(tmp_path / "runs")]) == 2
    assert f"--import {module}" in capsys.readouterr().err and not (tmp_path / "IMPORTED").exists()
