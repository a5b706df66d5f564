"""Property test: whatever state a finished run folder is in (each of its files, the sweep's
manifest and job record missing, empty, truncated, foreign JSON, a symbolic link out of the
folder, or a folder where the file belongs), `run` (resume), `status`, `gather`, `board --no-run`,
`compare` and `export` give a correct result or a one-line error (exit 2): never a traceback,
never a write outside the folder and the outputs they were given.

One tiny finished run (mlp on digits, one epoch) is built once and copied per example; the
examples are capped (about 15 s here in all).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench import cli
from bench.io import read_json
from bench.spec import load_sweep
from bench.sweep import write_manifest

SWEEP = ('name = "tiny"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
         "[pruners.dense]\n")
RUN_FLAGS = ["--pruner", "dense", "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--quiet"]
RUN_FILES = ["checkpoint.pt", "config.json", "history.csv", "predictions.npz", "progress.json", "result.json",
             "train.log", ".lock"]
STATES = ["missing", "empty", "truncated", "foreign JSON", "symlink out", "folder"]
FILES = [*RUN_FILES, "../sweep.json", "../.jobs/RUN.json"]  # RUN: the run folder's name
COMMANDS = ["run", "status", "gather", "board", "compare", "export"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """root/ holding board/tiny/sweep.toml and runs/tiny/ (its manifest and one finished run)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "board" / "tiny").mkdir(parents=True)
    (root / "board" / "tiny" / "sweep.toml").write_text(SWEEP)
    out = root / "runs" / "tiny"
    assert cli.main(["run", *RUN_FLAGS, "--out", str(out)]) == 0
    spec = load_sweep(root / "board" / "tiny" / "sweep.toml")
    (cell,) = spec.cells
    assert (out / cell.run_id / "result.json").is_file()  # the sweep's cell is the run made above
    write_manifest(out, spec)
    (out / ".jobs").mkdir()
    (out / ".jobs" / f"{cell.run_id}.json").write_text('{"job_id": "1", "executor": "local"}')
    return root


def tree(folder: Path) -> dict[str, str]:
    """path -> content hash of every file under `folder` (links not followed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def spoil(path: Path, state: str, outside: Path) -> None:
    """Put the file at `path` into `state`; a link points at a copy of it in `outside`."""
    data = path.read_bytes() if path.is_file() else b""
    if path.exists():
        path.unlink()
    if state == "empty":
        path.write_bytes(b"")
    elif state == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif state == "foreign JSON":
        path.write_text('{"name": "not ours", "cells": "no", "status": ["?"]}')
    elif state == "symlink out":
        target = outside / path.name
        target.write_bytes(data)
        path.symlink_to(target)
    elif state == "folder":
        path.mkdir()
        (path / "inside").write_text("x")


def command(name: str, root: Path, run_dir: Path) -> list[str]:
    runs, out = root / "runs" / "tiny", root / "out"
    return {
        "run": ["run", *RUN_FLAGS, "--out", str(runs)],
        "status": ["status", str(runs)],
        "gather": ["gather", str(runs), "-o", str(out / "results.parquet")],
        "board": ["board", str(root / "board" / "tiny"), "--runs", str(root / "runs"), "--no-run",
                  "--no-plots", "--out", str(out / "board")],
        "compare": ["compare", str(runs), str(runs)],
        "export": ["export", str(run_dir), "--no-onnx", "--out", str(out / "export")],
    }[name]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@example(file="result.json", state="folder", name="run")  # once a run that failed writing its result
@example(file="config.json", state="foreign JSON", name="export")  # once a TypeError
@example(file="checkpoint.pt", state="symlink out", name="run")
@given(file=st.sampled_from(FILES), state=st.sampled_from(STATES), name=st.sampled_from(COMMANDS))
def test_any_run_folder_state_gives_a_result_or_one_line_error(
        finished, tmp_path_factory, capsys, file, state, name):
    root = tmp_path_factory.mktemp("state")
    shutil.copytree(finished, root, dirs_exist_ok=True, symlinks=True)
    (outside := root / "outside").mkdir()
    (run_dir,) = (root / "runs" / "tiny").glob("dense-*")
    spoil(run_dir / file.replace("RUN", run_dir.name), state, outside)
    before = {**tree(outside), **{k: v for k, v in tree(root).items() if not k.startswith(("runs/", "out"))}}
    capsys.readouterr()

    code = cli.main(command(name, root, run_dir))

    err = capsys.readouterr().err
    assert "Traceback" not in err
    after = {**tree(outside), **{k: v for k, v in tree(root).items() if not k.startswith(("runs/", "out"))}}
    assert after == before, "a write outside the run folder and the command's outputs"
    if code == 2:
        assert len([line for line in err.splitlines() if ": error: " in line]) == 1, err
        return
    if name == "run":  # a correct result: the run recomputed (or resumed) and finished
        assert code == 0 and read_json(run_dir / "result.json")["status"] == "ok", err
    elif name == "status":
        assert code in (0, 1), err  # 1: a cell without a finished result is stopped
    else:
        assert code == 0, err
