"""Faults a long sweep meets: a process killed mid-run, two writers on one folder."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.config import Budget, RunConfig
from bench.train import check_config, run

ARGS = ["--pruner", "grda", "--set", "c=0.05", "--set", "mu=0.6", "--epochs", "12", "--quiet"]
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
