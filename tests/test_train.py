"""The budgeted trainer: the run folder and record, resume after interruption, divergence,
failures, schedules, and the acceptance command of the core harness."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from bench import cli, metrics
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.registry import MODELS, PRUNERS
from bench.run.checkpoint import load_built
from bench.run.history import l2_l1_ratio
from bench.run.job import run
from bench.run.trainer import Trainer
from bench.schedules import lr_factor
from bench.validate import check_config

SHORT = Budget(epochs=3)

RECORD_FIELDS = {
    "run_id",
    "config_hash",
    "pruner",
    "model",
    "dataset",
    "seed",
    "hparams",
    "budget",
    "status",
    "top1",
    "top5",
    "sparsity",
    "sparsity_all",
    "layer_sparsity",
    "nonzero_params",
    "total_params",
    "macs_dense",
    "macs_sparse",
    "val_top1",
    "num_train",
    "num_val",
    "num_test",
    "peak_tensor_bytes",
    "step_time_iqr_ms",
    "loaded",
    "optimizer",
    "cpu_model",
    "torch_threads",
    "load_avg_before",
    "load_avg_after",
    "train_time_s",
    "step_time_ms",
    "peak_memory_bytes",
    "state_bytes",
    "device",
    "torch_version",
    "git_sha",
    "slurm_job_id",
    "started_at",
    "finished_at",
    "steps",
    "samples_seen",
}


def test_run_writes_folder_and_record(tmp_path):
    config = RunConfig(pruner="grda", hparams={"c": 0.02, "mu": 0.6}, budget=SHORT)
    r = run(config, tmp_path)
    folder = tmp_path / r["run_id"]
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "result.json",
        "history.csv",
        "checkpoint.pt",
    }
    assert RECORD_FIELDS <= set(r)
    assert json.loads((folder / "result.json").read_text())["top1"] == r["top1"]
    assert r["status"] == "ok" and 0.5 < r["top1"] <= 1 and 0 < r["sparsity"] < 1
    # 1437 training images, 142 held out for validation (10% of each class, rounded): 1295 trained on,
    # batch 32 -> 41 steps per epoch
    assert (r["num_train"], r["num_val"], r["num_test"]) == (1295, 142, 360)
    assert r["steps"] == 3 * 41 and r["samples_seen"] == 3 * 1295
    assert 0.5 < r["val_top1"] <= 1
    assert r["macs_sparse"] < r["macs_dense"]
    assert r["nonzero_params"] < r["total_params"]
    # state = params + grads + one accumulator each: exactly 3x the parameter bytes
    assert r["state_bytes"] == 3 * 4 * r["total_params"]
    rows = list(csv.DictReader((folder / "history.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert float(rows[-1]["sparsity"]) == pytest.approx(r["sparsity"])
    saved = json.loads((folder / "config.json").read_text())
    assert RunConfig.from_dict(
        {k: v for k, v in saved.items() if k not in ("run_id", "config_hash")}
    ) == config.__class__(**{**config.__dict__, "hparams": {"c": 0.02, "mu": 0.6, "prune_all": True}})


def test_finished_run_is_not_retrained(tmp_path, monkeypatch):
    config = RunConfig(budget=Budget(epochs=1))
    first = run(config, tmp_path)
    monkeypatch.setattr(Trainer, "fit", lambda *a: pytest.fail("trained again"))
    assert run(config, tmp_path) == first


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = RunConfig(pruner="grda", hparams={"c": 0.05, "mu": 0.6}, budget=Budget(epochs=4))
    clean = run(config, tmp_path / "clean")

    calls = {"n": 0}
    original = Trainer.train_epoch

    def crash_in_third_epoch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # like a SIGINT / preemption mid-epoch
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = run(config, tmp_path / "resumed")
    assert resumed["resumed"] is True and clean["resumed"] is False
    for key in (
        "top1",
        "top5",
        "sparsity",
        "sparsity_all",
        "nonzero_params",
        "steps",
        "samples_seen",
        "layer_sparsity",
    ):
        assert resumed[key] == clean[key], key
    hist = [
        (tmp_path / d / config.run_id / "history.csv").read_text().splitlines() for d in ("clean", "resumed")
    ]
    strip = [[",".join(line.split(",")[:6]) for line in h] for h in hist]  # all but elapsed time
    assert strip[0] == strip[1]


def test_checkpoint_every_s_skips_epoch_end_writes_but_not_the_last(tmp_path, monkeypatch):
    """A run of short epochs checkpoints once `checkpoint_every_s` seconds of training have passed
    (here never before the end), always at its last epoch, and trains exactly the same model; an
    interrupted one resumes from the last checkpoint it wrote (here none: from scratch)."""
    from bench.run import checkpoint

    config = RunConfig(pruner="grda", hparams={"c": 0.05, "mu": 0.6}, budget=Budget(epochs=4))
    every_epoch = run(config, tmp_path / "a")
    saved, save = [], checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda t: saved.append(t.epoch) or save(t))
    sparse = dataclasses.replace(config, checkpoint_every_s=3600.0)
    assert sparse.run_id == config.run_id and sparse.config_hash == config.config_hash
    result = run(sparse, tmp_path / "b")
    assert saved == [4]
    for key in ("top1", "sparsity", "nonzero_params", "steps", "resumed"):
        assert result[key] == every_epoch[key], key
    assert len((tmp_path / "b" / config.run_id / "history.csv").read_text().splitlines()) == 1 + 4
    saved.clear()
    assert run(dataclasses.replace(config, checkpoint_every_s=0.0), tmp_path / "c")["status"] == "ok"
    assert saved == [1, 2, 3, 4]

    original = Trainer.train_epoch
    calls = {"n": 0}

    def crash_in_third_epoch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(sparse, tmp_path / "d")
    assert not (tmp_path / "d" / config.run_id / "checkpoint.pt").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    again = run(sparse, tmp_path / "d")
    assert again["resumed"] is False and again["top1"] == every_epoch["top1"]


@pytest.mark.parametrize("bad", [-1.0, "soon", True])
def test_checkpoint_every_s_must_be_seconds(bad):
    with pytest.raises(ConfigError, match=r"checkpoint_every_s = .*expected a number of seconds >= 0"):
        check_config(RunConfig(checkpoint_every_s=bad))


def test_truncated_checkpoint_is_recomputed(tmp_path):
    config = RunConfig(budget=Budget(epochs=2))
    clean = run(config, tmp_path / "a")
    folder = tmp_path / "b" / config.run_id
    folder.mkdir(parents=True)
    data = (tmp_path / "a" / config.run_id / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    again = run(config, tmp_path / "b")
    assert again["resumed"] is False and again["top1"] == clean["top1"]


def test_truncated_result_json_is_recomputed(tmp_path):
    first = run(RunConfig(budget=Budget(epochs=2)), tmp_path)
    path = tmp_path / first["run_id"] / "result.json"
    path.write_text(path.read_text()[:100])  # a copy cut short, a disk that filled up
    again = run(RunConfig(budget=Budget(epochs=2)), tmp_path)
    assert again["status"] == "ok" and again["top1"] == first["top1"] and again["steps"] == first["steps"]
    assert json.loads(path.read_text()) == again


def test_divergence_is_recorded(tmp_path):
    r = run(RunConfig(budget=Budget(epochs=3, lr=1e6)), tmp_path)
    assert r["status"] == "diverged" and r["diverged_epoch"] == 0 and r["top1"] is None
    assert json.loads((tmp_path / r["run_id"] / "result.json").read_text())["status"] == "diverged"


def test_failure_is_recorded_with_traceback(tmp_path, monkeypatch):
    def boom(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Trainer, "train_epoch", boom)
    config = RunConfig(budget=Budget(epochs=1))
    with pytest.raises(RuntimeError):
        run(config, tmp_path)
    folder = tmp_path / check_config(config).run_id
    record = json.loads((folder / "result.json").read_text())
    assert record["status"] == "failed" and "disk on fire" in record["error"]
    assert "RuntimeError: disk on fire" in (folder / "traceback.txt").read_text()


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_every_pruner_trains_one_epoch(tmp_path, pruner):
    r = run(RunConfig(pruner=pruner, budget=Budget(epochs=1, batch_size=64)), tmp_path)
    # one short epoch: the loop, hooks, checkpoint and record work for every pruner (accuracy at
    # the full budget is checked per pruner in test_baselines)
    assert r["status"] == "ok" and 0 <= r["top1"] <= 1
    assert r["steps"] == 21 * r["budget_multiplier"]  # 1295 training images (IMP: a budget per round)
    assert 0 <= r["sparsity"] < 1 and r["macs_sparse"] <= r["macs_dense"]


def test_model_dataset_mismatch_is_refused_naming_both():
    with pytest.raises(ConfigError, match=r"resnet20.*digits"):
        check_config(RunConfig(model="resnet20", dataset="digits"))


@pytest.mark.parametrize("field,value", [("pruner", "nope"), ("model", "nope"), ("dataset", "nope")])
def test_unknown_names_list_valid_choices(field, value):
    with pytest.raises(ConfigError, match=f"unknown {field} 'nope'; valid choices: .*"):
        check_config(RunConfig(**{field: value}))


def test_lr_schedules():
    b = Budget
    assert lr_factor(b(lr_schedule="constant"), 0.7) == 1
    assert [lr_factor(b(lr_schedule="step"), p) for p in (0.1, 0.5, 0.8)] == pytest.approx([1, 0.1, 0.01])
    assert lr_factor(b(lr_schedule="cosine"), 0.5) == pytest.approx(0.5)
    cifar = [lr_factor(b(lr_schedule="cifar"), p) for p in (0.0, 0.49, 0.5, 0.7, 0.9, 0.99)]
    assert cifar == pytest.approx([1, 1, 1, 1 - 0.99 * 0.5, 0.01, 0.01])


def test_run_id_is_stable_and_ignores_defaults():
    # Pinned: a change here renames every existing run folder (breaks resume and skip-done).
    # The validation split changed what a default run trains on, so default runs got new names;
    # val_fraction 0 (the whole training set, as before the split existed) keeps the old ones.
    assert RunConfig().run_id == "dense-mlp-digits-s0-2db354b2d7"
    assert RunConfig(budget=Budget(val_fraction=0.0)).run_id == "dense-mlp-digits-s0-9b269bb9be"
    a = check_config(RunConfig(pruner="grda", hparams={"c": 0.02}))
    b = check_config(RunConfig(pruner="grda", hparams={"c": 0.02, "mu": 0.55}))  # mu default made explicit
    assert a.run_id == b.run_id
    assert a.run_id == "grda-mlp-digits-s0-d627874a3c"
    old = check_config(RunConfig(pruner="grda", hparams={"c": 0.02}, budget=Budget(val_fraction=0.0)))
    assert old.run_id == "grda-mlp-digits-s0-44a9e9c4b6"
    # an old config.json (no val_fraction) reads back as what it trained with
    legacy = RunConfig.from_dict({"pruner": "dense", "budget": {"epochs": 60}})
    assert legacy.budget.val_fraction == 0.0 and legacy.run_id == "dense-mlp-digits-s0-9b269bb9be"
    assert RunConfig(budget=Budget(recipe="paper")).run_id != RunConfig().run_id
    assert check_config(RunConfig(pruner="grda", hparams={"c": 0.03})).run_id != a.run_id
    assert RunConfig(data_dir="/elsewhere").run_id == RunConfig().run_id


def test_readme_command_reaches_sparsity_and_accuracy(tmp_path, capsys):
    """The core issue's acceptance command, as a new user types it."""
    code = cli.main(
        [
            "run",
            "--pruner",
            "grda",
            "--model",
            "mlp",
            "--dataset",
            "digits",
            "--epochs",
            "60",
            "--batch-size",
            "32",
            "--lr",
            "0.1",
            "--lr-schedule",
            "constant",
            "--set",
            "c=0.02",
            "--set",
            "mu=0.6",
            "--seed",
            "0",
            "--out",
            str(tmp_path),
            "--quiet",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "ok"
    assert out["top1"] >= 0.95 and out["sparsity"] >= 0.90


def test_training_peak_memory_counts_a_pruners_extra_state(tmp_path):
    """CPU: the tracked peak of the training's tensors differs between dense and a pruner keeping
    twice the state (VD: a mean and a log-variance per weight), by at least that extra state."""
    peaks, states = {}, {}
    for pruner, hparams in (("dense", {}), ("vd", {"kl_weight": 0.06})):
        config = check_config(RunConfig(pruner=pruner, hparams=hparams, budget=SHORT, device="cpu"))
        trainer = Trainer(config, tmp_path / pruner, False)
        trainer.train_epoch(steps=6)
        peaks[pruner] = trainer.tensor_peak
        states[pruner] = metrics.state_bytes(trainer.model, trainer.optimizer, trainer.pruner.state_tensors())
    assert states["vd"] > 1.9 * states["dense"]
    assert peaks["dense"] >= states["dense"]  # the state is live throughout
    assert peaks["vd"] - peaks["dense"] >= states["vd"] - states["dense"]


def test_paper_recipe_gives_each_pruner_its_papers_optimizer(tmp_path):
    def optimizer(pruner, hparams, recipe):
        budget = Budget(epochs=1, recipe=recipe)
        config = check_config(RunConfig(pruner=pruner, hparams=hparams, budget=budget))
        return Trainer(config, tmp_path, False).optimizer

    shared = optimizer("magnitude", {"sparsity": 0.5}, "shared")
    assert isinstance(shared, torch.optim.SGD) and shared.defaults["momentum"] == 0.0
    paper = optimizer("magnitude", {"sparsity": 0.5}, "paper")
    assert paper.defaults["momentum"] == 0.9 and paper.defaults["weight_decay"] == 5e-4
    vd = optimizer("vd", {}, "paper")
    assert isinstance(vd, torch.optim.Adam) and vd.defaults["lr"] == 1e-3
    assert type(optimizer("grda", {}, "paper")).__name__ == "GRDA"
    stv = optimizer("str", {"s_weight_decay": 0.04}, "paper")
    assert [g["weight_decay"] for g in stv.param_groups] == [5e-4, 0.04]
    # the shared lr schedule scales each recipe's own lr: Adam's 1e-3, not the budget's 0.1
    trainer = Trainer(check_config(RunConfig(pruner="vd", budget=Budget(epochs=1, lr_schedule="cosine",
                                                                       recipe="paper"))), tmp_path, False)
    trainer.step = trainer.total_steps // 2
    trainer.set_lr()
    factor = lr_factor(trainer.budget, trainer.step / trainer.total_steps)
    assert 0.4 < factor < 0.6 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_every_pruner_declares_its_papers_recipe(pruner):
    """`recipe = "paper"` means each pruner's own paper's optimizer: none may silently fall back."""
    assert PRUNERS.get(pruner).paper_recipe is not None, f"{pruner}: declare paper_recipe"


@pytest.mark.parametrize("pruner", ["vd", "str"])
def test_history_ratio_is_over_the_effective_weights_of_reparameterized_pruners(tmp_path, pruner):
    """w_l2_l1 is ||w||_2/||w||_1 of the network's weights: the finalized (evaluated) model's, not
    the trained parameters, which hold VD's log sigma^2 and STR's dense v and thresholds s."""
    r = run(check_config(RunConfig(pruner=pruner, budget=Budget(epochs=1))), tmp_path)
    with open(tmp_path / r["run_id"] / "history.csv") as f:
        last = list(csv.DictReader(f))[-1]
    built, final = load_built(tmp_path / r["run_id"])  # final: the model the last epoch evaluated
    dense = MODELS.get("mlp").build(10)
    assert sorted(n for n, _ in final.named_parameters()) == sorted(n for n, _ in dense.named_parameters())
    assert float(last["w_l2_l1"]) == l2_l1_ratio(final)
    assert float(last["w_l2_l1"]) != l2_l1_ratio(built.model)  # the trained reparameterization's
