"""The `bench` command line: listing, and bad input refused with exit 2 before anything is written."""

from __future__ import annotations

import pytest

from bench import cli
from bench.registry import DATASETS, MODELS, PRUNERS


def test_list_shows_every_registered_entry_with_hyperparameters(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in PRUNERS.names() + MODELS.names() + DATASETS.names():
        assert f"  {name} " in out
    for name, cls in PRUNERS.items():
        for field, default, _ in cls.describe():
            assert f"{field} = {default!r}" in out, (name, field)
    assert "--batch-size" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--pruner", "nope"], "unknown pruner 'nope'; valid choices: "),
        (["--model", "nope"], "unknown model 'nope'; valid choices: "),
        (["--dataset", "nope"], "unknown dataset 'nope'; valid choices: "),
        (["--pruner", "grda", "--set", "nope=1"], "pruners.grda: unknown key(s) nope; valid keys: c, mu"),
        (["--pruner", "grda", "--set", "mu=1.5"], "pruners.grda: mu = 1.5: must be in (0, 1)"),
        (["--pruner", "grda", "--set", "mu=0"], "pruners.grda: mu = 0.0: must be in (0, 1)"),
        (["--pruner", "grda", "--set", "c=abc"], "pruners.grda.c = 'abc': expected a number"),
        (["--pruner", "magnitude", "--set", "sparsity=1"], "magnitude: sparsity = 1.0: must be in [0, 1)"),
        (["--pruner", "gmp", "--set", "sparsity=-0.1"], "pruners.gmp: sparsity = -0.1: must be in [0, 1)"),
        (["--pruner", "magnitude", "--set", "scope=row"], "scope = 'row': valid choices: global, layer"),
        (["--set", "c0.1"], "expected KEY=VALUE"),
        (["--lr", "0"], "budget.lr = 0.0: must be > 0"),
        (["--lr", "-0.1"], "budget.lr = -0.1: must be > 0"),
        (["--epochs", "0"], "budget.epochs = 0: must be > 0"),
        (["--epochs", "2.5"], "budget.epochs = '2.5': expected an integer"),
        (["--lr-schedule", "linear"], "valid choices: constant, step, cosine, cifar"),
        (["--model", "resnet20"], "model 'resnet20' does not fit dataset 'digits'"),
    ],
)
def test_bad_input_exits_2_naming_the_field(tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    assert cli.main(["run", *argv, "--out", str(out), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "nothing may be written for bad input"


def test_missing_dataset_files_exit_2_naming_the_path(tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["run", "--model", "resnet20", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")]
    code = cli.main([*argv, "--out", str(out), "--quiet", "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "dataset 'cifar10': files not found at " in err and str(tmp_path / "none") in err
    assert not out.exists(), "nothing may be written for bad input"
