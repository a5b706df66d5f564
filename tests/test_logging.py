"""What a run tells a person while and after it trains: train.log, the epoch lines (stderr, for
job logs, and progress.json for `bench status -v`), trainer callbacks, experiment trackers, the
summary line of `bench run` and the provenance of its record."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from bench import cli
from bench.callbacks import Callback, duration, epoch_line, read_progress, summary_line
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.run.job import run
from bench.run.trainer import Trainer
from bench.spec import sweep_from_toml
from bench.status import MANIFEST
from bench.validate import check_config

LINE = re.compile(r"epoch (\d+)/3  loss \d+\.\d{4}  train_top1 0\.\d{4}  val_top1 0\.\d{4}  "
                  r"sparsity 0\.\d{4}  eta \S+")


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory) -> tuple[Path, dict]:
    """One 3-epoch gRDA run with the TensorBoard logger, without a progress bar."""
    out = tmp_path_factory.mktemp("runs")
    config = RunConfig(pruner="grda", hparams={"c": 0.02}, budget=Budget(epochs=3), loggers=("tensorboard",))
    record = run(check_config(config), out)
    return out / record["run_id"], record


def test_train_log_is_human_readable(tb_run):
    run_dir, record = tb_run
    lines = (run_dir / "train.log").read_text().splitlines()
    assert "starting: " + record["run_id"] in lines[0] and "pruner grda" in lines[0]
    assert [int(LINE.search(x).group(1)) for x in lines[1:4]] == [1, 2, 3]
    assert lines[4].endswith(summary_line(record, run_dir))
    assert f"val_top1 {record['val_top1']:.4f}" in lines[3]  # the last epoch evaluates the final model
    assert f"top1 {record['top1']:.4f}" in lines[4]  # the test set only at the end


def test_progress_json_holds_the_last_epoch_line(tb_run):
    run_dir, _ = tb_run
    assert LINE.fullmatch(read_progress(run_dir)) and read_progress(run_dir).startswith("epoch 3/3")
    assert json.loads((run_dir / "progress.json").read_text())["epochs"] == 3


def test_tensorboard_event_files_read_back(tb_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, record = tb_run
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"epoch/loss", "epoch/val_top1", "epoch/train_top1", "epoch/w_l2_l1", "epoch/sparsity", "epoch/lr",
            "final/top1", "final/val_top1"} <= set(tags)
    assert "epoch/top1" not in tags  # the test set is not watched while training
    assert [e.step for e in acc.Scalars("epoch/val_top1")] == [1, 2, 3]
    with open(run_dir / "history.csv") as f:
        history = [float(row["val_top1"]) for row in csv.DictReader(f)]
    assert [e.value for e in acc.Scalars("epoch/val_top1")] == pytest.approx(history)
    assert acc.Scalars("final/top1")[0].value == pytest.approx(record["top1"])
    hparams = acc.PluginTagToContent("hparams")  # the HParams dashboard: config and final metrics
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"hparams.c" in hparams["_hparams_/session_start_info"]
    assert b"hparam/val_top1" in hparams["_hparams_/experiment"]


def test_tracker_is_not_part_of_the_run_identity():
    plain = check_config(RunConfig(pruner="grda", hparams={"c": 0.02}, budget=Budget(epochs=3)))
    logged = check_config(RunConfig(pruner="grda", hparams={"c": 0.02}, budget=Budget(epochs=3),
                                    loggers=("tensorboard",)))
    assert plain.run_id == logged.run_id and plain.config_hash == logged.config_hash


def test_provenance_records_package_versions(tb_run):
    from importlib.metadata import version

    import numpy
    import torch
    import torchvision

    _, record = tb_run
    assert record["torch_version"] == torch.__version__
    assert record["torchvision_version"] == torchvision.__version__.split("+")[0]
    assert record["numpy_version"] == numpy.__version__
    assert record["torch_pruning_version"] == version("torch-pruning")  # the installed distribution


def test_epoch_lines_reach_stderr_without_a_progress_bar(tmp_path, capfd):
    run(check_config(RunConfig(budget=Budget(epochs=2))), tmp_path)
    err = capfd.readouterr().err
    assert re.search(r"dense-mlp-digits-s0-\w+: epoch 1/2  loss ", err)
    assert re.search(r": epoch 2/2 .* eta 0.0s\n", err)


def test_callbacks_are_called_in_order(tmp_path):
    calls = []

    class Spy(Callback):
        def on_fit_start(self, trainer):
            calls.append(("start", trainer.epoch))

        def on_epoch_end(self, trainer, row):
            calls.append(("epoch", row["epoch"], row["val_top1"] is not None))

        def on_fit_end(self, trainer, record):
            calls.append(("end", record["status"]))

    config = check_config(RunConfig(budget=Budget(epochs=2)))
    (tmp_path / config.run_id).mkdir()
    Trainer(config, tmp_path / config.run_id, False, callbacks=[Spy()]).fit("now")
    assert calls == [("start", 0), ("epoch", 0, True), ("epoch", 1, True), ("end", "ok")]


def test_status_verbose_shows_the_epoch_line_of_a_running_cell(tmp_path, capsys):
    spec = sweep_from_toml('[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n[pruners.dense]\n')
    cell = spec.cells[0]
    (tmp_path / cell.run_id).mkdir()
    (tmp_path / cell.run_id / "progress.json").write_text(json.dumps({"line": "epoch 7/60  loss 0.1000"}))
    cells = [{**cell.to_dict(), "run_id": cell.run_id}]
    (tmp_path / MANIFEST).write_text(json.dumps({"name": "x", "cells": cells}))
    cli.main(["status", str(tmp_path), "-v"])
    out = capsys.readouterr().out
    assert "missing  " + cell.run_id in out and "epoch 7/60  loss 0.1000" in out


def test_run_summary_line_and_json(tmp_path, capsys):
    argv = ["run", "--epochs", "2", "--out", str(tmp_path), "--quiet"]
    assert cli.main(argv) == 0
    line = capsys.readouterr().out.strip()
    pattern = r"ok  top1 0\.\d{4}  sparsity 0\.\d{4}  MACs \S+ fewer  train \S+  "
    assert re.fullmatch(pattern + re.escape(str(tmp_path)) + r"/dense-mlp-digits-s0-\w+", line), line
    assert cli.main([*argv, "--json"]) == 0  # the finished run, read back: the whole record
    record = json.loads(capsys.readouterr().out)
    assert record["status"] == "ok" and "layer_sparsity" in record and "numpy_version" in record
    assert line.split()[2] == f"{record['top1']:.4f}"


def test_summary_line_reads_macs_under_either_name():
    base = {"status": "ok", "top1": 0.9, "sparsity": 0.5, "train_time_s": 75.0}
    flops = {"flops_dense": 8.0, "flops_sparse": 2.0}
    assert "MACs 4x fewer  train 1m15s" in summary_line({**base, **flops}, "d")
    assert "MACs 2x fewer" in summary_line({**base, "macs_dense": 8.0, "macs_sparse": 4.0}, "d")
    assert summary_line({"status": "failed", "error": "boom"}, "d") == "failed: boom  d"
    assert duration(3725) == "1h02m" and duration(2.34) == "2.3s"
    row = {"epoch": 0, "loss": float("nan"), "train_top1": None, "val_top1": None, "sparsity": None}
    assert epoch_line(row, 5, None) == "epoch 1/5  loss nan  train_top1 -  val_top1 -  sparsity -  eta -"


def test_unknown_or_missing_logger_exits_2(tmp_path, capsys, monkeypatch):
    assert cli.main(["run", "--logger", "neptune", "--out", str(tmp_path)]) == 2
    assert "unknown logger; valid choices: tensorboard, wandb, mlflow" in capsys.readouterr().err
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'prunebench\[wandb\]'"):
        check_config(RunConfig(loggers=("wandb",)))
    assert not any(tmp_path.iterdir())


def test_sweep_file_selects_loggers():
    spec = sweep_from_toml('loggers = ["tensorboard"]\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
                           "[pruners.dense]\n")
    assert spec.cells[0].loggers == ("tensorboard",)
    with pytest.raises(ConfigError, match="loggers = 'tb': unknown logger"):
        sweep_from_toml('loggers = ["tb"]\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
                        "[pruners.dense]\n")


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    record = run(check_config(RunConfig(budget=Budget(epochs=2), loggers=("wandb",))), tmp_path)
    offline = list((tmp_path / record["run_id"] / "wandb").glob("offline-run-*"))
    assert offline and any(offline[0].glob("*.wandb"))


def test_mlflow_local_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # a local store
    record = run(check_config(RunConfig(budget=Budget(epochs=2), loggers=("mlflow",))), tmp_path)
    found = mlflow.search_runs(experiment_names=["prunebench"], output_format="list")
    assert found and found[0].info.run_name == record["run_id"]
    assert found[0].data.metrics["final_top1"] == pytest.approx(record["top1"])
    history = mlflow.MlflowClient().get_metric_history(found[0].info.run_id, "val_top1")
    assert [m.step for m in history] == [1, 2]
