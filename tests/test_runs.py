"""The run folder (bench.runs.RunDir) and what a run leaves in it: no write through a symbolic
link, numbered results under --force, locks that say who holds them and are taken over when their
holder is gone, per-example predictions, validation top-1 per epoch, threads recorded, a finished
run's model loaded back."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.predictions import read_run_predictions as load_predictions
from bench.run import checkpoint as run_checkpoint
from bench.run.checkpoint import load_model
from bench.run.job import run
from bench.run.result import describe_optimizer
from bench.runs import Backend, RunDir, RunStatus, check_path_text
from bench.validate import check_config

SMALL = Budget(epochs=2)


def config(**kw) -> RunConfig:
    return check_config(RunConfig(budget=kw.pop("budget", SMALL), **kw))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = config(pruner="grda")
    return cfg, out / cfg.run_id, run(cfg, out)


def test_enums_compare_equal_to_the_strings_records_hold():
    assert RunStatus.OK == "ok" and json.dumps({"s": RunStatus.FAILED}) == '{"s": "failed"}'
    assert Backend.parse("2to4") is Backend.parse("2:4") is Backend.SEMI_STRUCTURED
    assert Backend.SEMI_STRUCTURED.key == "2to4" and Backend.SPARSE.key == "sparse"
    with pytest.raises(ConfigError, match="valid choices: dense, compact, sparse, 2:4"):
        Backend.parse("csr")


def test_a_run_folder_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    cfg = config()
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "config.json").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / cfg.run_id).symlink_to(victim)
    with pytest.raises(ConfigError, match=f"{cfg.run_id} is a symbolic link"):
        run(cfg, out)
    assert [p.name for p in victim.iterdir()] == ["config.json"]
    assert (victim / "config.json").read_text() == "precious"


@pytest.mark.parametrize("name", [".lock", "train.log", "checkpoint.pt", "history.csv"])
def test_a_link_inside_a_run_folder_is_refused_before_anything_is_written(tmp_path, name):
    cfg = config()
    target = tmp_path / "target.txt"
    target.write_text("keep")
    folder = tmp_path / "out" / cfg.run_id
    folder.mkdir(parents=True)
    (folder / name).symlink_to(target)
    with pytest.raises(ConfigError, match=f"{name} is a symbolic link"):
        run(cfg, tmp_path / "out")
    assert target.read_text() == "keep" and sorted(p.name for p in folder.iterdir()) == [name]


def test_percent_in_an_output_path_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'%' is not allowed"):
        check_path_text(tmp_path / "runs_%j")
    with pytest.raises(ConfigError, match="'%' is not allowed"):
        run(config(), tmp_path / "runs_%j")
    assert not (tmp_path / "runs_%j").exists()


def test_force_keeps_every_earlier_result_numbered(tmp_path):
    cfg = config(budget=Budget(epochs=1))
    first = run(cfg, tmp_path)
    rd = RunDir(tmp_path, cfg.run_id)
    (rd.result).write_text(json.dumps({**first, "top1": 0.111}))  # tell the results apart
    second = run(cfg, tmp_path, force=True)
    (rd.result).write_text(json.dumps({**second, "top1": 0.222}))
    run(cfg, tmp_path, force=True)
    kept = rd.replaced_results()
    assert [p.name for p in kept] == ["result.replaced.json", "result.replaced.2.json"]
    assert [json.loads(p.read_text())["top1"] for p in kept] == [0.111, 0.222]
    assert (rd.path / "predictions.replaced.npz").is_file() and rd.predictions.is_file()


def test_a_failed_retrain_keeps_the_last_good_result(tmp_path, monkeypatch):
    cfg = config(budget=Budget(epochs=1))
    good = run(cfg, tmp_path)
    from bench.run.trainer import Trainer

    monkeypatch.setattr(Trainer, "train_epoch", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            run(cfg, tmp_path, force=True)
    rd = RunDir(tmp_path, cfg.run_id)
    kept = [json.loads(p.read_text()) for p in rd.replaced_results()]
    assert kept[0]["top1"] == good["top1"] and kept[0]["status"] == "ok"
    assert kept[1]["status"] == "failed" and json.loads(rd.result.read_text())["status"] == "failed"


def test_a_lock_whose_holder_is_gone_is_taken_over(tmp_path):
    rd = RunDir(tmp_path, "r")
    rd.create()
    rd.lock_file.write_text("999999999\n")  # a PID that does not exist; no flock held
    t0 = time.monotonic()
    with rd.lock(wait=False):
        assert rd.holder() == os.getpid()
    assert time.monotonic() - t0 < 5


def test_a_lock_held_by_a_live_process_names_it(tmp_path, capfd):
    rd = RunDir(tmp_path, "r")
    rd.create()
    code = ("import sys, time\nfrom pathlib import Path\nfrom bench.runs import RunDir\n"
            "rd = RunDir(Path(sys.argv[1]), 'r')\nwith rd.lock():\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"locked by PID {holder.pid}"), rd.lock(wait=False):
            pass
    finally:
        holder.kill()
        holder.wait()
    with rd.lock(wait=False):  # its holder died: the lock is free
        pass


def test_a_run_waiting_for_a_live_holder_says_who_holds_the_lock(tmp_path, monkeypatch, capfd):
    from bench import runs

    monkeypatch.setattr(runs, "LOCK_MESSAGE_AFTER_S", 0.0)
    rd = RunDir(tmp_path, "r")
    rd.create()
    code = ("import sys, time\nfrom pathlib import Path\nfrom bench.runs import RunDir\n"
            "with RunDir(Path(sys.argv[1]), 'r').lock():\n"
            "    print('held', flush=True)\n    time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with rd.lock():  # waits until the holder lets go
            assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for the run's lock, held by PID {holder.pid}" in capfd.readouterr().err


@pytest.mark.parametrize("when", ["after an epoch", "after training"])
def test_a_folder_deleted_mid_run_is_not_recreated_without_its_config(tmp_path, monkeypatch, when):
    import shutil

    from bench.run.trainer import Trainer

    cfg = config(budget=Budget(epochs=2))
    hook = "save" if when == "after an epoch" else "fit"
    owner = run_checkpoint if hook == "save" else Trainer
    original = getattr(owner, hook)

    def delete_the_folder(self, *args):
        if hook == "save" and self.epoch == 1:  # before the first checkpoint is written
            shutil.rmtree(self.run.path)
        result = original(self, *args)
        if hook == "fit":  # before the result is written
            shutil.rmtree(self.run.path)
        return result

    monkeypatch.setattr(owner, hook, delete_the_folder)
    with pytest.raises(ConfigError, match="disappeared while the run was training"):
        run(cfg, tmp_path)
    assert not (tmp_path / cfg.run_id).exists()


def test_predictions_cover_val_and_test_in_order_and_match_top1(finished):
    _, folder, record = finished
    p = load_predictions(folder)
    assert set(p) == {"val_pred", "val_true", "test_pred", "test_true"}
    assert all(a.dtype == np.int16 for a in p.values())
    assert len(p["test_true"]) == record["num_test"] and len(p["val_true"]) == record["num_val"]
    assert (p["test_pred"] == p["test_true"]).mean() == pytest.approx(record["top1"])
    assert (p["val_pred"] == p["val_true"]).mean() == pytest.approx(record["val_top1"])


def test_a_run_without_predictions_still_loads(tmp_path, finished):
    _, folder, _ = finished
    import shutil

    old = tmp_path / folder.name
    shutil.copytree(folder, old)
    (old / "predictions.npz").unlink()
    assert load_predictions(old) is None
    _, model = load_model(old)
    assert not model.training


def test_history_has_validation_per_epoch_and_no_test_column(finished):
    _, folder, record = finished
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "top1" not in rows[0]
    assert all(0 < float(r["val_top1"]) <= 1 and 0 < float(r["train_top1"]) <= 1 for r in rows)
    assert float(rows[-1]["val_top1"]) == pytest.approx(record["val_top1"])  # the same final model
    ratios = [float(r["w_l2_l1"]) for r in rows]
    assert all(0 < x < 1 for x in ratios)


def test_load_model_gives_the_recorded_accuracy(finished):
    cfg, folder, record = finished
    loaded_cfg, model = load_model(folder)
    assert loaded_cfg.config_hash == cfg.config_hash and not model.training
    from bench.run.build import load_data

    data = load_data(loaded_cfg, torch.device("cpu"))
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data.test_batches(256))
    assert correct / data.num_test == pytest.approx(record["top1"])


def test_threads_default_to_one_and_are_recorded(tmp_path, finished):
    _, _, record = finished
    assert record["torch_threads"] == 1
    assert RunConfig(threads=0).run_id == RunConfig().run_id  # how it runs, not what it trains
    assert RunConfig(threads=3).config_hash == RunConfig().config_hash
    with pytest.raises(ConfigError, match="threads"):
        RunConfig(threads=-1)


def test_a_runs_threads_are_set_and_recorded(tmp_path):
    before = torch.get_num_threads()
    try:
        record = run(config(budget=Budget(epochs=1), threads=2), tmp_path)
        assert record["torch_threads"] == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_describe_optimizer_shows_what_the_optimizer_declares():
    p = [torch.nn.Parameter(torch.zeros(1))]
    assert describe_optimizer(torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4)) == (
        "SGD(lr=0.1, momentum=0.9, weight_decay=0.0005)")
    assert describe_optimizer(torch.optim.Adam(p, lr=1e-3)) == "Adam(lr=0.001, betas=(0.9, 0.999))"

    class Custom(torch.optim.SGD):  # a setting the harness has never heard of is shown too
        def __init__(self, params, lr, shrink):
            super().__init__(params, lr=lr)
            self.defaults["shrink"] = shrink
            self.param_groups[0]["shrink"] = shrink

    assert describe_optimizer(Custom(p, lr=0.1, shrink=0.5)) == "Custom(lr=0.1, shrink=0.5)"
