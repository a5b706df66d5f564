"""Every output path is checked before the work it would hold (a one-line error, exit 2, naming
the path), and what used to end in a traceback ends in one line: a closed pipe, Ctrl-C, a full
disk, a huge echoed value, a validation split that leaves nothing to train on, an empty folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import calibrate, cli, io
from bench.config import Budget, RunConfig
from bench.executors import local
from bench.run.job import run
from bench.validate import check_config

GRID = 'name = "s"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n[pruners.dense]\n'


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def never(*_args, **_kwargs):
    pytest.fail("the work started before its output path was checked")


# ------------------------------------------------------------------ output paths, before the work


def test_perf_json_into_a_folder_exits_2_before_measuring(tmp_path, capsys, monkeypatch):
    import bench.perf

    monkeypatch.setattr(bench.perf, "run_perf", never)
    assert cli.main(["perf", "--quick", "--json", str(tmp_path)]) == 2
    one_error_line(capsys, "--json", str(tmp_path), "is a folder")


def test_calibrate_out_under_a_file_exits_2_before_searching(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(calibrate, "calibrate", never)
    (tmp_path / "f").write_text("")
    out = str(tmp_path / "f" / "o")
    assert cli.main(["calibrate", "--pruner", "grda", "--target", "0.5", "--out", out]) == 2
    one_error_line(capsys, "--out", "is a file")


def test_export_out_under_a_file_exits_2_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import bench.export
    import bench.run.checkpoint

    finished = (RunConfig(), {"run_id": "r", "top1": 1.0})
    monkeypatch.setattr(bench.export, "_finished", lambda run_dir: finished)
    monkeypatch.setattr(bench.run.checkpoint, "load_built", never)
    (tmp_path / "f").write_text("")
    assert cli.main(["export", str(tmp_path), "--out", str(tmp_path / "f" / "o")]) == 2
    one_error_line(capsys, "--out", "is a file")


def test_an_over_long_name_exits_2_before_reading_anything(tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    assert cli.main(["leaderboard", "no-such.parquet", "-o", str(long)]) == 2
    one_error_line(capsys, "-o", "300 bytes long")
    assert cli.main(["sweep", str(_sweep(tmp_path)), "--out", str(long / "out")]) == 2
    one_error_line(capsys, "--out", "300 bytes long")
    assert cli.main(["gather", str(tmp_path), "-o", str(tmp_path / ("r" * 300 + ".parquet"))]) == 2
    one_error_line(capsys, "-o", "308 bytes long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_jobs_record_folder_that_is_a_file_exits_2_before_submitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local.Local, "submit", never)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".jobs").write_text("")
    assert cli.main(["sweep", str(_sweep(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, ".jobs", "is a file")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".jobs"]


def _sweep(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(GRID)
    return path


# --------------------------------------------------------------------------- one line, no traceback


def test_a_validation_split_near_1_is_refused_before_a_folder_is_made(tmp_path, capsys):
    args = ["run", "--model", "mlp", "--dataset", "digits", "--val-fraction", "0.9995",
            "--out", str(tmp_path / "o")]
    assert cli.main(args) == 2
    one_error_line(capsys, "val_fraction = 0.9995", "[0, 0.9]")
    assert not (tmp_path / "o").exists()


def test_a_huge_name_is_echoed_clipped(tmp_path, capsys):
    name = "p" * 10_000_000
    assert cli.main(["run", "--pruner", name, "--out", str(tmp_path)]) == 2
    err = one_error_line(capsys, "unknown pruner", "valid choices", "characters]")
    assert len(err) < 2000


def test_a_huge_flag_value_is_echoed_clipped(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["status", "--poll", "9" * 1_000_000])
    assert e.value.code == 2 and len(capsys.readouterr().err) < 2000


def test_a_closed_pipe_ends_quietly():
    reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    bench = subprocess.run([sys.executable, "-m", "bench.cli", "list"], stdout=reader.stdin,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=600)
    reader.stdin.close()
    reader.wait()
    assert bench.returncode == 0 and "Traceback" not in bench.stderr and "Error" not in bench.stderr


def test_ctrl_c_prints_one_line(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_list", interrupted)
    assert cli.main(["list"]) == 130
    one_error_line(capsys, "interrupted")


def test_a_full_disk_is_named_with_the_path(tmp_path, capsys, monkeypatch):
    def full(f):  # torch reports a full disk as an internal writer error
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    class NoSpace:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(io.os, "statvfs", lambda path: NoSpace)
    with pytest.raises(OSError, match=r"disk full.*checkpoint.pt") as e:
        io.atomic_write(tmp_path / "checkpoint.pt", full)
    assert e.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())  # no temporary left

    def listing(args):
        raise e.value

    monkeypatch.setattr(cli, "cmd_list", listing)
    assert cli.main(["list"]) == 1
    one_error_line(capsys, "disk full", "checkpoint.pt")


def test_another_failed_write_is_not_called_a_full_disk(tmp_path):
    def broken(f):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):
        io.atomic_write(tmp_path / "x", broken)


def test_speedup_on_a_folder_without_runs_says_so(tmp_path, capsys):
    assert cli.main(["speedup", str(tmp_path)]) == 2
    one_error_line(capsys, "no run folder", str(tmp_path))


def test_compare_of_an_empty_run_set_says_which_side(tmp_path, capsys):
    import pandas as pd

    from bench.compare import compare
    from bench.errors import ConfigError

    runs = pd.DataFrame({"pruner": ["grda"], "model": "mlp", "dataset": "digits", "seed": [0],
                         "run_id": ["a"], "status": "ok", "top1": [0.9]})
    with pytest.raises(ConfigError, match=r"^A \(all\): no runs to compare$"):
        compare((runs.iloc[:0], runs), "all", "all")


def test_a_checkpoint_with_fields_of_the_wrong_type_is_set_aside(tmp_path, capsys):
    config = check_config(RunConfig(budget=Budget(epochs=2)))
    folder = tmp_path / config.run_id
    folder.mkdir()
    fields = {"config_hash": config.config_hash, "epoch": 1, "step": 3, "samples": 9, "train_time": 1.0,
              "step_times": [], "history": "not a list", "model": {}, "optimizer": {}, "pruner": {}}
    torch.save(fields, folder / "checkpoint.pt")
    record = run(config, tmp_path)
    assert record["status"] == "ok" and record["resumed"] is False and record["epochs_completed"] == 2
    assert (folder / "checkpoint.bad.pt").exists()
    assert "history of the wrong type" in capsys.readouterr().err


def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_set_aside(tmp_path, capsys):
    config = check_config(RunConfig(pruner="dense", budget=Budget(epochs=2, momentum=0.9)))
    run(config, tmp_path)
    folder = tmp_path / config.run_id
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
    state = ckpt["optimizer"]["state"]
    assert state, "no optimizer state to spoil"
    first = next(iter(state.values()))
    key = next(k for k, v in first.items() if torch.is_tensor(v) and v.dim() > 0)
    first[key] = torch.zeros(3, 3, 3)
    torch.save({**ckpt, "epoch": 1, "history": ckpt["history"][:1]}, folder / "checkpoint.pt")
    (folder / "result.json").unlink()
    capsys.readouterr()
    record = run(config, tmp_path)
    assert record["status"] == "ok" and record["resumed"] is False and record["epochs_completed"] == 2
    assert (folder / "checkpoint.bad.pt").exists() and "of shape (3, 3, 3)" in capsys.readouterr().err
