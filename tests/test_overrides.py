"""`--set` overrides (one grammar for `bench run`, `bench sweep` and `bench board`), `bench board
--no-run/--out`, and `bench.results.load` of a board folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import cli
from bench.errors import ConfigError
from bench.estimate import Estimate
from bench.results import load, load_history
from bench.spec import apply_overrides, load_sweep, parse_value

REPO = Path(__file__).resolve().parents[1]
VGG = REPO / "leaderboards" / "cifar10-vgg16" / "sweep.toml"
DIGITS = REPO / "leaderboards" / "digits-mlp"


def test_parse_value_is_toml_or_a_bare_string():
    assert parse_value("1") == 1 and parse_value("0.01") == 0.01 and parse_value("[0]") == [0]
    assert parse_value('"x"') == "x" and parse_value("true") is True and parse_value("mlp") == "mlp"


def test_apply_overrides_sets_nested_keys_and_every_table_of_an_array():
    doc = {"budget": {"epochs": 600}, "pruners": {"grda": [{"c": 0.1, "mu": 0.6}, {"c": 0.2}]}}
    new = apply_overrides(doc, ["budget.epochs=1", "pruners.grda.c=0.01", "grid.seeds=[0]"])
    assert new == {"budget": {"epochs": 1}, "grid": {"seeds": [0]},
                   "pruners": {"grda": [{"c": 0.01, "mu": 0.6}, {"c": 0.01}]}}
    assert doc["budget"]["epochs"] == 600  # the parsed file is not changed
    with pytest.raises(ConfigError, match=r"expected KEY\.PATH=VALUE"):
        apply_overrides(doc, ["budget.epochs"])
    with pytest.raises(ConfigError, match=r"budget.epochs = 600 is not a table"):
        apply_overrides(doc, ["budget.epochs.x=1"])


def test_overrides_of_the_committed_paper_sweep():
    full = load_sweep(VGG)
    smoke = load_sweep(VGG, ["budget.epochs=1", "pruners.grda.c=0.01", "grid.seeds=[0]"])
    assert full.budget.epochs == 600 and smoke.budget.epochs == 1
    assert len(smoke.cells) * 3 == len(full.cells)
    assert {c.hparams["c"] for c in smoke.cells if c.pruner == "grda"} == {0.01}
    assert smoke.overrides == ("budget.epochs=1", "pruners.grda.c=0.01", "grid.seeds=[0]")


def test_cli_dry_run_of_the_paper_sweep_with_overrides(tmp_path, capsys, monkeypatch):
    seen = []

    def fake_estimate(spec, out=None, probe=False, threads=None):  # vgg16's estimate is not under test
        seen.append(spec)
        return Estimate(1.0, 1.0, 1.0, "cpu", {}, [], {})

    monkeypatch.setattr("bench.sweep.estimate", fake_estimate)
    argv = ["sweep", str(VGG), "--set", "budget.epochs=1", "--set", "pruners.grda.c=0.01",
            "--set", "grid.seeds=[0]", "--out", str(tmp_path / "out"), "--dry-run"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    cells = len(load_sweep(VGG).cells) // 3  # one seed of three
    assert f"{cells} cells" in out and "budget: epochs=1 " in out and "seeds 0\n" in out
    assert seen[0].budget.epochs == 1 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["budget.epoch=1"], "[budget] unknown key(s) 'epoch'; valid keys: epochs"),
        (["pruners.grda.cc=1"], "[pruners.grda] unknown key(s) 'cc'; valid keys: c, mu"),
        (["budget.epochs=0"], "[budget] epochs = 0: must be > 0"),
        (["grid.seeds=[-1]"], "[grid] seeds = -1: expected an integer in [0, 1073741823]"),
        (["budget"], "expected KEY.PATH=VALUE"),
    ],
)
def test_bad_overrides_exit_2_naming_the_key(tmp_path, capsys, sets, message):
    argv = ["board", str(VGG.parent), "--runs", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_board_no_run_out_rebuilds_from_the_board_parquet(tmp_path):
    board = tmp_path / "digits-mlp"
    board.mkdir()
    for name in ("sweep.toml", "results.parquet", "results.history.parquet"):
        shutil.copy(DIGITS / name, board / name)
    out = tmp_path / "elsewhere"
    assert cli.main(["board", str(board), "--runs", str(tmp_path / "runs"), "--no-run", "--no-plots",
                     "--out", str(out)]) == 0
    assert (out / "README.md").is_file() and (out / "leaderboard.csv").is_file()
    assert len(load(out)) == len(load(board)) == len(load_sweep(DIGITS / "sweep.toml").cells)
    untouched = ["results.history.parquet", "results.parquet", "sweep.toml"]
    assert sorted(p.name for p in board.iterdir()) == untouched
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_board_no_run_without_runs_or_table_exits_2(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    shutil.copy(DIGITS / "sweep.toml", tmp_path / "b" / "sweep.toml")
    assert cli.main(["board", str(tmp_path / "b"), "--runs", str(tmp_path), "--no-run"]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_load_reads_a_board_folder():
    runs = load(DIGITS)
    cells = len(load_sweep(DIGITS / "sweep.toml").cells)
    assert len(runs) == cells and set(runs["pruner"]) >= {"dense", "grda", "gmp"}
    assert len(load(DIGITS / "results.parquet")) == cells
    hist = load_history(DIGITS)
    assert set(hist["run_id"]) == set(runs["run_id"])


SMALL = """
name = "small"
[budget]
epochs = 1
[grid]
models = ["mlp"]
datasets = ["digits"]
seeds = [0, 1]
[pruners.dense]
[pruners.gmp]
sparsity = 0.9
[pruners.imp]
sparsity = 0.9
"""


def test_set_drops_a_pruner_and_tunes_a_budget_key_from_the_command_line(tmp_path, capsys, monkeypatch):
    no_probe = Estimate(1.0, 1.0, 1.0, "cpu", {}, [], {})
    monkeypatch.setattr("bench.sweep.estimate", lambda spec, out=None, probe=False, threads=None: no_probe)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SMALL)
    argv = ["sweep", str(sweep), "--dry-run", "--out", str(tmp_path / "out"),
            "--set", "~pruners.imp", "--set", "pruners.gmp.lr=[0.05, 0.1]"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep small" in out and ": 6 cells" in out  # dense x 2 seeds + gmp x 2 lr x 2 seeds
    assert "imp" not in out and not (tmp_path / "out").exists()
    assert "tuned budget keys: lr; settings per pruner: dense 1, gmp 2" in out
    assert cli.main([*argv[:-4], "--set", "~pruners.snip"]) == 2
    assert "no such key to remove; pruners has: dense, gmp, imp" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["budget.lr=-1"], "--set budget.lr = -1.0: must be > 0"),
        (["budget.recipe=best"], "--set budget.recipe = 'best': valid choices: shared, paper"),
        (["pruners.grda.c=0.01"], "a run takes KEY=VALUE or pruners.gmp.KEY=VALUE"),
        (["pruners.gmp.sparsity=1.5"], "sparsity = 1.5: must be in [0, 1)"),
    ],
)
def test_run_takes_the_same_set_grammar_and_names_the_key(tmp_path, capsys, sets, message):
    argv = ["run", "--pruner", "gmp", "--out", str(tmp_path / "runs"), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
