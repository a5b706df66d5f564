"""Faults a long sweep meets: a process killed mid-run, a write cut short, two writers on one folder."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import io, results
from bench.config import Budget, RunConfig
from bench.executors import local as local_executor
from bench.run.job import run
from bench.spec import load_sweep
from bench.sweep import run_sweep
from bench.validate import check_config

ARGS = ["--pruner", "grda", "--set", "c=0.05", "--set", "mu=0.6", "--epochs", "12", "--quiet", "--json"]
CONFIG = RunConfig(pruner="grda", hparams={"c": 0.05, "mu": 0.6}, budget=Budget(epochs=12))


def bench_run(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", *ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def epochs_done(folder: Path) -> int:
    try:
        return len(list(csv.DictReader((folder / "history.csv").open())))
    except OSError:
        return 0


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(tmp_path):
    clean = run(CONFIG, tmp_path / "clean")
    folder = tmp_path / "killed" / check_config(CONFIG).run_id

    proc = bench_run(tmp_path / "killed")
    deadline = time.monotonic() + 120
    while epochs_done(folder) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (folder / "result.json").exists()
    done_before = epochs_done(folder)
    assert 3 <= done_before < 12

    rerun = bench_run(tmp_path / "killed")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    resumed = json.loads((folder / "result.json").read_text())
    assert resumed["resumed"] is True
    for key in ("top1", "top5", "sparsity", "sparsity_all", "layer_sparsity", "steps", "samples_seen"):
        assert resumed[key] == clean[key], key
    assert epochs_done(folder) == 12  # no epoch recorded twice


def test_two_processes_on_one_run_folder_train_it_once(tmp_path):
    procs = [bench_run(tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o) for o, _ in outs]
    assert results[0] == results[1]
    folder = tmp_path / check_config(CONFIG).run_id
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert epochs_done(folder) == 12
    record = json.loads((folder / "result.json").read_text())
    assert record["resumed"] is False  # the second process found it finished, not half done


def test_a_write_cut_short_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    io.write_json(path, {"status": "ok"})

    def dies_midway(f):
        f.write(b'{"status": "fa')
        raise KeyboardInterrupt  # or SIGKILL: the rename never happens

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, dies_midway)
    assert io.read_json(path) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_results_checkpoints_and_tables_are_renamed_into_place(tmp_path, monkeypatch):
    renamed, replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: renamed.append(Path(dst).name) or replace(src, dst))
    record = run(RunConfig(budget=Budget(epochs=1)), tmp_path / "runs")
    table = tmp_path / "results.parquet"
    results.write(results.gather(tmp_path / "runs"), table)
    written = {"config.json", "checkpoint.pt", "history.csv", "result.json", table.name}
    assert written | {results.history_path(table).name} <= set(renamed)
    assert not [p for p in (tmp_path / "runs" / record["run_id"]).iterdir() if p.suffix == ".tmp"]


TWO_SWEEPS = """
[grid]
models = ["mlp"]
datasets = ["digits"]
seeds = [0, 1]
[pruners.grda]
[pruners.dense]
"""


def test_two_sweeps_into_one_out_folder_at_once_submit_every_cell_once(tmp_path, monkeypatch):
    """Two `bench sweep` of the same grid at once: each submits under the folder's lock, so the
    second sees the first's jobs (alive: pending) and submits nothing; no cell lost, none twice.
    (That each run then trains once, even if reached twice, is the run lock's job: above.)"""
    (tmp_path / "s.toml").write_text(TWO_SWEEPS)
    spec, out = load_sweep(tmp_path / "s.toml"), tmp_path / "out"
    alive = subprocess.Popen(["sleep", "60"])
    job = {"executor": "local", "job_id": str(alive.pid),
           "start_ticks": local_executor._start_ticks(alive.pid), "submitted_ts": 4e9}
    submitted = []

    def slow_submit(cells, out, *args, **kwargs):
        time.sleep(0.5)  # a slow submission: the other sweep reads the folder meanwhile
        for cell in cells:
            io.write_json(out / ".jobs" / f"{cell.run_id}.json", {"run_id": cell.run_id, **job})
        submitted.extend(cell.run_id for cell in cells)
        return []

    monkeypatch.setattr(local_executor.Local, "submit", lambda self, cells, out, _: slow_submit(cells, out))
    records = []
    sweeps = [
        threading.Thread(target=lambda: records.append(run_sweep(spec, out, wait=False, progress=False)))
        for _ in range(2)
    ]
    try:
        for t in sweeps:
            t.start()
        for t in sweeps:
            t.join(timeout=300)  # generous: a loaded 2-core machine
    finally:
        alive.kill()
        alive.wait()
    assert sorted(submitted) == sorted(c.run_id for c in spec.cells)
    assert len(records) == 2 and all(r["status"] == "pending" for rs in records for r in rs)


def test_status_of_a_job_record_without_an_executor_never_asks_slurm(tmp_path, monkeypatch):
    """A `.jobs` record that names no executor (or one not installed here) counts as a job that
    ended: `bench status` reports the cell stopped without calling any scheduler."""
    from bench import status
    from bench.executors import slurm as slurm_executor

    def no_scheduler(*a, **k):
        raise AssertionError("SLURM was asked about a job no record says is SLURM's")

    monkeypatch.setattr(slurm_executor.Slurm, "job_states", classmethod(no_scheduler))
    monkeypatch.setattr(slurm_executor.Slurm, "activity", classmethod(no_scheduler))
    cells = [check_config(RunConfig(seed=s)) for s in (0, 1)]
    (tmp_path / ".jobs").mkdir()
    for cell, executor in zip(cells, ({}, {"executor": "pbs"}), strict=True):
        (tmp_path / ".jobs" / f"{cell.run_id}.json").write_text(json.dumps({"job_id": "7", **executor}))
    found = status.cell_statuses(tmp_path, cells)
    assert [s.state for s in found] == ["stopped", "stopped"]
    assert all("state unknown" in s.reason for s in found)


def test_only_an_executor_that_runs_here_checks_this_machine():
    from bench.executors import executors

    assert {n for n, c in executors().items() if c.runs_here} == {"local"}
