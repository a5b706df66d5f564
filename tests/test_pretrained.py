"""Pretrained starts (`--init`): a run started from a finished run's folder, a state_dict file or
torchvision's cached weights records the weights' sha256 as part of its identity, and its model
starts from them."""

from __future__ import annotations

import json

import pytest
import torch

from bench import cli
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.pretrained import sha256, starter
from bench.run.build import build
from bench.run.checkpoint import load_model
from bench.validate import check_config


def _run(argv: list[str], capsys) -> dict:
    assert cli.main(["run", *argv, "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished dense run (one epoch on digits) to start from."""
    out = tmp_path_factory.mktemp("runs")
    config = RunConfig(budget=Budget(epochs=1))
    from bench.run.job import run

    run(config, out)
    return out / config.run_id


def _config(**budget) -> RunConfig:
    return check_config(RunConfig(budget=Budget(epochs=1, **budget), device="cpu"))


def _start(config: RunConfig) -> torch.nn.Module:
    """The model a run of `config` starts training (as bench.run.trainer builds it)."""
    return build(config, init=starter(config.budget)).model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_a_run_started_from_a_run_folder_records_it_and_starts_from_its_weights(trained, tmp_path, capsys):
    result = _run(["--pruner", "magnitude", "--epochs", "1", "--init", str(trained), "--out", str(tmp_path)],
                  capsys)
    assert result["budget"]["init"] == str(trained)
    assert result["budget"]["init_sha256"] == sha256(str(trained))
    scratch = RunConfig(pruner="magnitude", budget=Budget(epochs=1))
    assert result["run_id"] != scratch.run_id  # prune-then-fine-tune: a budget of its own

    _, source = load_model(trained, device="cpu")
    assert _same_weights(_start(_config(init=str(trained))), source)
    assert not _same_weights(_start(_config()), source)


def test_a_state_dict_file_is_an_init_and_its_path_is_not_the_identity(trained, tmp_path):
    _, source = load_model(trained, device="cpu")
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(source.state_dict(), first)
    second.write_bytes(first.read_bytes())
    a, b = (_config(init=str(p)) for p in (first, second))
    assert a.run_id == b.run_id and a.config_hash == b.config_hash
    assert _same_weights(_start(a), source)

    state = source.state_dict()
    state[next(iter(state))].add_(1.0)
    torch.save(state, second)  # other weights at the same path: another run
    assert _config(init=str(second)).run_id != a.run_id
    with pytest.raises(ConfigError, match="changed since the run was configured"):
        _start(b)


def test_weights_that_do_not_fit_the_model_are_bad_input(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ConfigError, match=r"budget.init = .*do not fit the run's model \(missing"):
        _start(_config(init=str(path)))


def test_missing_inits_name_what_is_expected(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cli.main(["run", "--init", "torchvision:resnet18", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "never downloaded" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err
    assert cli.main(["run", "--init", str(tmp_path / "nowhere.pt"), "--out", str(tmp_path)]) == 2
    assert "budget.init" in capsys.readouterr().err
    assert not list(tmp_path.glob("dense-*"))  # nothing written


def test_a_run_folder_init_is_named_by_its_weights_not_by_its_checkpoint_file(trained, tmp_path):
    from bench.run.job import run

    config = RunConfig(budget=Budget(epochs=1))
    run(config, tmp_path)  # the same run trained again elsewhere: same weights, another checkpoint.pt
    again = tmp_path / config.run_id
    assert (again / "checkpoint.pt").read_bytes() != (trained / "checkpoint.pt").read_bytes()
    assert sha256(str(again)) == sha256(str(trained))
    other = RunConfig(budget=Budget(epochs=1), seed=1)
    run(other, tmp_path)
    assert sha256(str(tmp_path / other.run_id)) != sha256(str(trained))


def test_a_sweep_file_names_an_init_and_its_cells_record_its_hash(trained):
    from bench.spec import sweep_from_toml

    spec = sweep_from_toml(f'[budget]\ninit = "{trained}"\nepochs = 1\n[grid]\nmodels = ["mlp"]\n'
                           'datasets = ["digits"]\n[pruners.magnitude]\nsparsity = 0.5\n')
    (cell,) = spec.cells
    assert cell.budget.init_sha256 == sha256(str(trained))
