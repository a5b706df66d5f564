"""Sweeps: the TOML format (expansion, every error at once), skip/resubmit logic, SLURM job-state
parsing, the sbatch script (golden file), and the local executor end to end (incl. 2-process DDP).

The end-to-end tests start real submitit jobs (each pays Python + torch start-up, ~5-10 s here):
test_local_sweep_end_to_end (~20 s) and test_two_process_ddp_run_matches_single_process (~40 s).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import cli, executors
from bench.config import SWEEP_LEVEL, Budget, RunConfig, build_dataclass
from bench.errors import ConfigError
from bench.estimate import Estimate
from bench.executors import local as local_executor
from bench.executors import slurm as slurm_executor
from bench.io import read_json, write_json
from bench.pruner import RunContext
from bench.registry import PRUNERS
from bench.run.job import run
from bench.spec import TOP_KEYS, load_sweep, run_overrides, sweep_from_dict, sweep_from_toml
from bench.status import cell_statuses, to_submit
from bench.sweep import run_sweep
from bench.tracks import OWN_OPTIMIZER_NOTES, describe_track, own_optimizer
from bench.validate import check_config

GOLDEN = Path(__file__).parent / "golden"

DEMO = """
name = "digits-demo"
[budget]
epochs = 2
batch_size = 32
lr = 0.1
[grid]
models = ["mlp"]
datasets = ["digits"]
seeds = [0, 1, 2]
[pruners.grda]
c = [0.01, 0.02]
mu = 0.6
[pruners.dense]
"""


def _slurm_test() -> executors.Executor:
    return executors.create("slurm", {"profile": "local-test"})



def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ format/expansion


def test_expansion_is_models_x_datasets_x_seeds_x_pruner_axes(tmp_path):
    spec = load_sweep(write(tmp_path, DEMO))
    assert spec.name == "digits-demo" and spec.path == tmp_path / "sweep.toml"
    assert spec.per_pruner() == {"grda": 6, "dense": 3}
    assert len({c.run_id for c in spec.cells}) == 9
    grda = {(c.hparams["c"], c.seed) for c in spec.cells if c.pruner == "grda"}
    assert grda == {(c, s) for c in (0.01, 0.02) for s in (0, 1, 2)}
    for cell in spec.cells:
        assert cell.budget == spec.budget == Budget(epochs=2, batch_size=32, lr=0.1)
        assert cell == check_config(cell)  # validated, hyperparameters resolved (defaults filled in)
        if cell.pruner == "grda":
            assert cell.hparams["mu"] == 0.6 and cell.hparams["prune_all"] is True


def test_a_cell_is_the_same_run_as_bench_run_with_the_same_settings(tmp_path):
    """Same run_id, so a sweep and `bench run` share (and skip) each other's run folders."""
    spec = load_sweep(write(tmp_path, DEMO))
    args = cli.build_parser("run").parse_args(
        [
            "run",
            "--pruner",
            "grda",
            "--set",
            "c=0.02",
            "--set",
            "mu=0.6",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--lr",
            "0.1",
            "--seed",
            "1",
        ]
    )
    ids = {c.run_id for c in spec.cells}
    assert cli.config_from_args(args).run_id in ids


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_every_pruner_table_without_keys_is_one_cell_per_seed_with_defaults(pruner):
    spec = sweep_from_dict(
        {"grid": {"models": ["mlp"], "datasets": ["digits"], "seeds": [0, 1]}, "pruners": {pruner: {}}}
    )
    defaults = dataclasses.asdict(PRUNERS.get(pruner).Hparams())
    assert [c.seed for c in spec.cells] == [0, 1]
    assert all(c.pruner == pruner and c.hparams == defaults for c in spec.cells)


def test_array_of_tables_adds_settings_and_identical_cells_run_once():
    spec = sweep_from_toml("""
[grid]
models = "mlp"
datasets = "digits"
[[pruners.grda]]
c = [0.01, 0.02]
mu = 0.6
[[pruners.grda]]
c = 0.02
mu = [0.6, 0.7]
""")
    assert sorted((c.hparams["c"], c.hparams["mu"]) for c in spec.cells) == [
        (0.01, 0.6),
        (0.02, 0.6),
        (0.02, 0.7),
    ]
    assert spec.name == "sweep" and spec.budget == Budget()  # defaults: the file's stem, Budget()


def test_a_budget_key_under_one_pruner_is_its_own_axis_and_counts_as_its_settings():
    spec = sweep_from_toml("""
[budget]
lr = 0.1
epochs = 3
[grid]
models = "mlp"
datasets = "digits"
seeds = [0, 1]
[pruners.dense]
[pruners.gmp]
sparsity = [0.8, 0.9]
lr = [0.05, 0.1]
""")
    gmp = sorted((c.hparams["sparsity"], c.budget.lr, c.seed) for c in spec.cells if c.pruner == "gmp")
    assert gmp == [(s, lr, seed) for s in (0.8, 0.9) for lr in (0.05, 0.1) for seed in (0, 1)]
    assert {c.budget.lr for c in spec.cells if c.pruner == "dense"} == {0.1}  # [budget]'s value
    assert {c.budget.epochs for c in spec.cells} == {3}
    assert spec.settings_per_pruner() == {"dense": 1, "gmp": 4} and spec.tuned == ("lr",)
    assert {spec.section_budget(c) for c in spec.cells} == {Budget(lr=0.1, epochs=3)}  # one section
    assert len({c.run_id for c in spec.cells}) == len(spec.cells) == 2 + 8


def test_a_list_in_budget_runs_every_pruner_at_each_value_unless_the_pruner_sets_its_own():
    spec = sweep_from_toml("""
[budget]
weight_decay = [0.0, 5e-4]
momentum = 0.9
[grid]
models = "mlp"
datasets = "digits"
[pruners.dense]
[pruners.magnitude]
sparsity = 0.9
weight_decay = 1e-4
""")
    assert sorted(c.budget.weight_decay for c in spec.cells if c.pruner == "dense") == [0.0, 5e-4]
    assert [c.budget.weight_decay for c in spec.cells if c.pruner == "magnitude"] == [1e-4]
    assert {c.budget.momentum for c in spec.cells} == {0.9}
    assert spec.budget.weight_decay == 0.0  # the base budget: each axis at its first value
    assert spec.tuned == ("weight_decay",) and spec.settings_per_pruner() == {"dense": 2, "magnitude": 1}
    tracks = sweep_from_toml("""
[budget]
recipe = ["paper", "shared"]
[grid]
models = "mlp"
datasets = "digits"
[pruners.gmp]
sparsity = [0.8, 0.9]
""")  # a section key: one section per value, not tuning
    assert tracks.tuned == () and tracks.settings_per_pruner() == {"gmp": 2} and len(tracks.cells) == 4
    assert {tracks.section_budget(c).recipe for c in tracks.cells} == {"paper", "shared"}


def test_budget_axes_count_towards_max_cells_before_expansion():
    with pytest.raises(ConfigError, match=r"up to 1,000,000 cells, more than max_cells = 10,000"):
        sweep_from_toml("""
[budget]
lr = [{}]
[grid]
models = "mlp"
datasets = "digits"
[pruners.gmp]
sparsity = [{}]
""".format(", ".join(str(0.001 * (i + 1)) for i in range(1000)),
       ", ".join(str(0.0009 * (i + 1)) for i in range(1000))))


def test_section_budget_keys_cannot_be_set_per_pruner_and_bad_budget_axes_name_the_table():
    with pytest.raises(ConfigError) as e:
        sweep_from_toml("""
[budget]
lr = [0.1, -1.0]
[grid]
models = "mlp"
datasets = "digits"
[pruners.gmp]
sparsity = 0.9
val_fraction = 0.2
epochs = [2, 0]
momentum = []
""", "t.toml")
    msg = str(e.value)
    assert "t.toml: [budget] lr = -1.0: must be > 0" in msg
    assert "t.toml: [pruners.gmp] val_fraction: set it in [budget]" in msg
    assert "t.toml: [pruners.gmp] epochs = 0: must be > 0" in msg
    assert "t.toml: [pruners.gmp] momentum = []: an axis must not be empty" in msg
    assert msg.startswith("4 errors in t.toml:")


def test_overrides_drop_a_pruner_or_key_and_set_budget_axes_per_pruner():
    doc = """
[budget]
momentum = 0.9
[grid]
models = "mlp"
datasets = "digits"
[pruners.dense]
[pruners.gmp]
sparsity = 0.9
[pruners.imp]
sparsity = 0.9
"""
    spec = sweep_from_toml(doc, "t.toml", ["~pruners.imp", "~budget.momentum", "pruners.gmp.lr=[0.05, 0.1]"])
    assert sorted(c.pruner for c in spec.cells) == ["dense", "gmp", "gmp"]
    assert {c.budget.momentum for c in spec.cells} == {0.0}
    assert sorted(c.budget.lr for c in spec.cells if c.pruner == "gmp") == [0.05, 0.1]
    with pytest.raises(ConfigError, match="no such key to remove; pruners has: dense, gmp, imp"):
        sweep_from_toml(doc, "t.toml", ["~pruners.snip"])
    with pytest.raises(ConfigError, match=r"expected KEY.PATH=VALUE to set a key or ~KEY.PATH to remove one"):
        sweep_from_toml(doc, "t.toml", ["~pruners.imp=1"])


def test_run_overrides_take_the_sweep_grammar_for_one_run():
    hp, budget = run_overrides(["c=0.02", "pruners.grda.mu=0.6", "budget.lr=0.05"], "grda", Budget())
    assert hp == {"c": "0.02", "mu": "0.6"} and budget == Budget(lr=0.05)
    with pytest.raises(ConfigError, match=r"pruners.grda.KEY=VALUE .*valid budget keys: epochs"):
        run_overrides(["pruners.gmp.sparsity=0.9"], "grda", Budget())
    with pytest.raises(ConfigError, match=r"--set budget.lr = -1.0: must be > 0"):
        run_overrides(["budget.lr=-1"], "grda", Budget())
    with pytest.raises(ConfigError, match=r"--set budget.recipe = 'best': valid choices: shared, paper"):
        run_overrides(["budget.recipe=best"], "grda", Budget())
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        run_overrides(["budget.lr"], "grda", Budget())


def test_a_validation_split_of_a_fixed_count_of_examples():
    from bench.data import validation_indices

    assert Budget(val_fraction=10000).val_fraction == 10000.0
    with pytest.raises(ConfigError, match=r"val_fraction = 1.5: must be a fraction in \[0, 1\) or"):
        Budget(val_fraction=1.5)
    labels = torch.arange(1000) % 10  # 100 examples per class
    picked = validation_indices(labels, 50)
    assert len(picked) == 50 and torch.bincount(labels[picked]).tolist() == [5] * 10
    assert torch.equal(picked, validation_indices(labels, 0.05))  # the same split as the fraction
    with pytest.raises(ConfigError, match=r"val_fraction = 1000: a count of examples must be below"):
        validation_indices(labels, 1000)
    spec = sweep_from_toml('''
[budget]
val_fraction = 10000
[grid]
models = "resnet50"
datasets = "imagenet"
[pruners.dense]
''')
    assert spec.cells[0].budget.val_fraction == 10000
    with pytest.raises(ConfigError, match=r"val_fraction = 2000000: a count of examples must be below imag"):
        sweep_from_toml('''
[budget]
val_fraction = 2000000
[grid]
models = "resnet50"
datasets = "imagenet"
[pruners.dense]
''')


def test_track_text_names_each_method_s_optimizer_and_marks_those_off_the_shared_recipe():
    pruners = [("dense", {}), ("grda", {}), ("vd", {}), ("gmp", {}), ("vd", {"optimizer": "sgd"})]
    paper = describe_track("paper", pruners)
    assert "SGD, no momentum or weight decay for grda" in paper
    assert "Adam, lr 0.001 for vd;" in paper and "for vd (optimizer = sgd)" in paper
    assert "momentum 0.9, weight decay 0.0005 for gmp" in paper and "dense" not in paper
    assert "Not on it" not in paper  # on the paper track every method trains its own way
    shared = describe_track("shared", pruners, Budget(momentum=0.9, weight_decay=5e-4))
    assert "(here: SGD, momentum 0.9, weight decay 0.0005)" in shared
    assert shared.count("gRDA is its own optimizer") == 1 and shared.count("VD needs Adam") == 1
    assert own_optimizer("shared", "vd", {"optimizer": "sgd"}) is None
    assert own_optimizer("shared", "gmp", {}) is None and own_optimizer("paper", "grda", {}) is None


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_the_shared_track_marks_exactly_the_methods_whose_metadata_owns_their_optimizer(pruner):
    info = PRUNERS.get(pruner).info
    assert (own_optimizer("shared", pruner, {}) is not None) == info.own_optimizer
    assert pruner not in OWN_OPTIMIZER_NOTES or info.own_optimizer  # no note for a method that shares


PAPER_DECAY = """
[budget]
epochs = 1
max_steps = 1
recipe = "paper"
weight_decay = 1e-4
nesterov = true
[grid]
models = ["mlp"]
datasets = ["digits"]
[pruners.gmp]
sparsity = 0.9
[pruners.str]
[pruners.imp]  # a paper of its own: that pruner's own values
sparsity = 0.9
weight_decay = 2e-4
nesterov = false
[pruners.grda]
[pruners.vd]
[pruners.dense]
optimizer = ["sgd", "sgd_momentum"]
"""


def _sgd(opt: torch.optim.Optimizer) -> tuple[str, float, bool, list[float]]:
    d = opt.defaults
    return type(opt).__name__, d.get("momentum", 0.0), d.get("nesterov", False), [
        g.get("weight_decay", 0.0) for g in opt.param_groups]


def test_a_sweep_states_the_weight_decay_and_nesterov_of_the_momentum_sgd_papers():
    """[budget] weight_decay and nesterov on the paper track: the optimizer of every method whose
    paper trains with SGD and momentum (and of the dense model trained that way) takes them, a
    pruner's own table its own; gRDA (its own optimizer), VD's Adam and plain SGD keep theirs."""
    from bench.run.build import build

    built = {(c.pruner, c.hparams.get("optimizer")): _sgd(build(c).optimizer)
             for c in sweep_from_toml(PAPER_DECAY).cells}
    assert built[("gmp", None)] == ("SGD", 0.9, True, [1e-4])
    assert built[("str", None)][:3] == ("SGD", 0.9, True)
    assert built[("str", None)][3][0] == 1e-4  # the weights'; the thresholds' is its s_weight_decay
    assert built[("imp", None)] == ("SGD", 0.9, False, [2e-4])
    assert built[("dense", "sgd_momentum")] == ("SGD", 0.9, True, [1e-4])
    assert built[("dense", "sgd")] == ("SGD", 0.0, False, [0.0])
    assert built[("vd", "adam")][0] == "Adam" and set(built[("vd", "adam")][3]) == {0.0}
    assert built[("grda", None)][0] == "GRDA"
    text = describe_track("paper", [("gmp", {}), ("imp", {})], sweep_from_toml(PAPER_DECAY).budget)
    assert "SGD, Nesterov momentum 0.9, weight decay 0.0001 for gmp" in text
    # unset (every committed board so far): the papers' CIFAR-scale 5e-4, no Nesterov, as before
    unset = sweep_from_toml(PAPER_DECAY, overrides=["~budget.weight_decay", "~budget.nesterov",
                                                    "~pruners.imp.weight_decay", "~pruners.imp.nesterov"])
    for cell in unset.cells:
        if cell.pruner in ("gmp", "imp"):
            assert _sgd(build(cell).optimizer) == ("SGD", 0.9, False, [5e-4])


def test_nesterov_on_the_shared_track_needs_the_budgets_momentum():
    from bench.pruner import OptimizerRecipe

    assert OptimizerRecipe.shared(Budget(momentum=0.9, nesterov=True)).nesterov
    plain = OptimizerRecipe.shared(Budget(nesterov=True))  # no momentum: Nesterov's step is plain SGD's
    assert not plain.nesterov and plain.build([torch.zeros(1, requires_grad=True)], Budget()).defaults[
        "momentum"] == 0.0


@pytest.mark.parametrize(("override", "expected"), [
    ("budget.nesterov=2", "[budget] nesterov = 2: expected true or false"),
    ("budget.weight_decay=-1e-4", "[budget] weight_decay = -0.0001: must be >= 0"),
    ("pruners.imp.weight_decay='high'", "[pruners.imp] weight_decay = 'high': expected a number"),
    ("pruners.imp.nesterov='sometimes'", "[pruners.imp] nesterov = 'sometimes': expected true or false"),
])
def test_a_bad_paper_weight_decay_or_nesterov_names_the_key(override, expected):
    with pytest.raises(ConfigError) as e:
        sweep_from_toml(PAPER_DECAY, "s.toml", [override])
    assert f"s.toml: {expected}" in str(e.value)


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "leaderboards").glob("*/sweep.toml"))


def _optimizer_family(cell: RunConfig) -> str:
    """The optimizer family a cell trains with (`Pruner.optimizer_family`), from its pruner built
    as a run builds it (no model needed)."""
    cls = PRUNERS.get(cell.pruner)
    pruner = cls(build_dataclass(cls.Hparams, cell.hparams, cell.pruner), cell.budget, RunContext())
    return pruner.optimizer_family


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_sweeps_lead_with_the_paper_track_with_a_dense_row_per_optimizer_family(
    path, tmp_path, monkeypatch, capsys
):
    spec = load_sweep(path)
    assert spec.budget.recipe == "paper"  # the primary track: the file's (first) recipe
    for recipe in {c.budget.recipe for c in spec.cells}:
        cells = [c for c in spec.cells if c.budget.recipe == recipe]
        dense = {_optimizer_family(c) for c in cells if c.pruner == "dense"}
        pruned = {_optimizer_family(c) for c in cells if c.pruner != "dense"}
        assert pruned <= dense, f"{recipe} track: no dense row trained with {sorted(pruned - dense)}"
    # and the dry run still takes it (its compute probe is not under test here)
    no_probe = Estimate(1.0, 1.0, 1.0, "cpu", {}, [], {})
    monkeypatch.setattr("bench.sweep.estimate", lambda spec, out=None, probe=False, threads=None: no_probe)
    assert cli.main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert f"{len(spec.cells)} cells" in capsys.readouterr().out and not (tmp_path / "out").exists()


BUILT = [p for p in COMMITTED if (p.parent / "results.parquet").exists()]


@pytest.mark.parametrize("path", BUILT, ids=lambda p: p.parent.name)
def test_a_built_boards_sweep_expands_to_exactly_the_runs_of_its_results(path):
    """The run ids of a committed board's results are its sweep file's cells: a change to the
    sweep parser, the budget or a pruner's defaults that renames a cell shows here."""
    import pandas as pd

    runs = pd.read_parquet(path.parent / "results.parquet", columns=["run_id"])["run_id"]
    assert sorted(c.run_id for c in load_sweep(path).cells) == sorted(runs)


def test_data_dir_and_device_reach_every_cell():
    spec = sweep_from_dict(
        {
            "data_dir": "/data",
            "device": "cpu",
            "pruners": {"dense": {}},
            "grid": {"models": ["mlp"], "datasets": ["digits"]},
        }
    )
    assert [(c.data_dir, c.device) for c in spec.cells] == [("/data", "cpu")]


def test_run_level_keys_are_the_run_config_fields_with_their_defaults_and_checks():
    """The sweep's top-level run keys are RunConfig's SWEEP_LEVEL fields: unset, a cell has the
    field's default; set badly, each is an error naming the key, all reported at once."""
    assert set(SWEEP_LEVEL) <= set(TOP_KEYS)
    assert set(SWEEP_LEVEL) <= {f.name for f in dataclasses.fields(RunConfig)}
    grid = {"pruners": {"dense": {}}, "grid": {"models": ["mlp"], "datasets": ["digits"]}}
    (cell,) = sweep_from_dict(grid).cells
    assert {k: getattr(cell, k) for k in SWEEP_LEVEL} == {k: getattr(RunConfig(), k) for k in SWEEP_LEVEL}
    assert cell.data_dir == RunConfig.data_dir == "data"
    (cell,) = sweep_from_dict({**grid, "device": "cpu", "deterministic": True, "compile": True}).cells
    assert (cell.device, cell.deterministic, cell.compile) == ("cpu", True, True)
    bad = {"data_dir": 1, "device": "tpu", "deterministic": 2, "compile": "maybe", "loggers": ["nope"]}
    with pytest.raises(ConfigError) as e:
        sweep_from_dict({**grid, **bad}, "s.toml")
    msg = str(e.value)
    assert msg.startswith("5 errors in s.toml:")
    for line in ("data_dir = 1: expected a string", "device = 'tpu': valid choices: auto, cpu, cuda, cuda:N",
                 "deterministic = 2: expected true or false", "compile = 'maybe': expected true or false",
                 "loggers = 'nope': unknown logger; valid choices: "):
        assert line in msg


BAD = """
name = "bad"
colour = "blue"
[budget]
epochs = 0
lr = "fast"
batch_size = [16, 0]
[grid]
models = ["mlp", "transformer"]
datasets = ["digits"]
seeds = [0, -1]
[pruners.grda]
c = [0.01, -0.02]
mu = 2.0
recipe = "paper"
bogus = 1
[pruners.nope]
"""


def test_every_error_is_reported_at_once_naming_file_table_and_key(tmp_path):
    path = write(tmp_path, BAD, "bad.toml")
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    msg = str(e.value)
    valid_top = "valid keys: " + ", ".join(TOP_KEYS)
    expected = [
        f"bad.toml: unknown key(s) 'colour'; {valid_top}",
        "bad.toml: [budget] epochs = 0: must be > 0",
        "bad.toml: [budget] lr = 'fast': expected a number",
        "bad.toml: [budget] batch_size = 0: must be > 0",
        "bad.toml: [grid] models = 'transformer': unknown model; valid choices: ",
        "bad.toml: [grid] seeds = -1: expected an integer in [0, 1073741823]",
        "bad.toml: [pruners.grda] c = -0.02: must be >= 0",
        "bad.toml: [pruners.grda] mu = 2.0: must be in (0, 1)",
        "bad.toml: [pruners.grda] recipe: set it in [budget]: it is the same for every pruner of a section "
        "(budget keys a pruner may set: epochs, max_steps",
        "bad.toml: [pruners.grda] unknown key(s) 'bogus'; valid keys: c, mu, prune_all",
        f"bad.toml: [pruners.nope]: unknown pruner 'nope'; valid choices: {', '.join(PRUNERS.names())}",
    ]
    for line in expected:
        assert line in msg
    assert msg.startswith(f"{len(expected)} errors in {path}:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[grid]\nmodels=['mlp']\ndatasets=['digits']", "[pruners] needs at least one [pruners.NAME] table"),
        ("[pruners.dense]", "[grid] missing"),
        (
            "[grid]\nmodels=['resnet20']\ndatasets=['digits']\n[pruners.dense]",
            "does not fit dataset 'digits'",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\nshuffle=1\n[pruners.dense]",
            "[grid] unknown key(s) 'shuffle'; valid keys: models, datasets, seeds",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.grda]\nseeds=[1]",
            "[pruners.grda] seeds: set it in [grid]",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.grda]\nc=[]",
            "[pruners.grda] c = []: an axis must not be empty",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\n[[pruners.grda]]\nc=0.1\n[[pruners.grda]]\nmu=7",
            "[[pruners.grda]] #2 mu = 7.0: must be in (0, 1)",
        ),
        (
            "device='tpu'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]",
            "device = 'tpu': valid choices: auto, cpu, cuda, cuda:N",
        ),
        ("name='a b'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]", "name = 'a b': must be"),
        # the name makes the out folder runs/<name>: nothing may escape runs/
        ("name='../evil'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]", "name = '../evil'"),
        ("name='a/b'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]", "name = 'a/b': must be"),
        ("name='/tmp/x'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]", "name = '/tmp/x'"),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['imagenette']\n[pruners.dense]",
            "[grid] datasets = 'imagenette': unknown dataset; valid choices: cifar10, ",
        ),
        ("[grid]\nmodels=[]\ndatasets=['digits']\n[pruners.dense]", "[grid] models = []: must not be empty"),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\nseeds=[]\n[pruners.dense]",
            "[grid] seeds = []: must not be empty",
        ),
        (
            "[budget]\nlr=0\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]",
            "[budget] lr = 0.0: must be > 0",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.magnitude]\nsparsity=[0.5, 1.0]",
            "[pruners.magnitude] sparsity = 1.0: must be in [0, 1)",
        ),
        (
            "[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.grda]\nmu='high'",
            "[pruners.grda] mu = 'high': expected a number",
        ),
        (
            "[budget]\nlr_schedule='linear'\n[grid]\nmodels=['mlp']\ndatasets=['digits']\n[pruners.dense]",
            "[budget] lr_schedule = 'linear': valid choices: constant, step, cosine, cifar",
        ),
        ("pruners = ['grda']\n[grid]\nmodels=['mlp']\ndatasets=['digits']", "[pruners] needs at least one"),
        ("[grid\nmodels=", "not valid TOML"),
    ],
)
def test_single_errors_name_the_table_and_key(tmp_path, monkeypatch, capsys, text, expected):
    """Through the CLI: exit 2, the message names the file and the key, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text, "s.toml")
    assert cli.main(["sweep", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench sweep: error: s.toml: ") and expected in err
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]


# ------------------------------------------------------------------------------ fuzzing (hypothesis)

KEYS = [
    "name",
    "data_dir",
    "device",
    "budget",
    "grid",
    "pruners",
    "models",
    "datasets",
    "seeds",
    "grda",
    "dense",
    "c",
    "mu",
    "prune_all",
    "epochs",
    "lr",
    "batch_size",
    "lr_schedule",
    "lr_milestones",
    "max_steps",
    "x",
]
SCALARS = (
    st.integers(-3, 3)
    | st.integers()
    | st.just(10**400)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.sampled_from(["mlp", "digits", "grda", "cpu", "auto", "cosine", "", "a b"])
    | st.text(max_size=5)
    | st.dates()
    | st.datetimes()
)
VALUES = st.recursive(
    SCALARS,
    lambda v: st.lists(v, max_size=3) | st.dictionaries(st.sampled_from(KEYS), v, max_size=3),
    max_leaves=8,
)


def _expect_spec_or_config_error(fn, *args):
    try:
        spec = fn(*args)
    except ConfigError as e:  # any other exception fails the test
        assert "fuzz.toml" in str(e) and len(str(e)) > len("fuzz.toml: ")  # names the file, says why
        return
    assert spec.cells and all(isinstance(c, RunConfig) for c in spec.cells)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_fuzz_documents_raise_only_config_error(doc):
    _expect_spec_or_config_error(sweep_from_dict, doc, "fuzz.toml")


@settings(max_examples=200, deadline=None)
@given(
    grid=st.fixed_dictionaries(
        {},
        optional={
            "models": VALUES | st.just(["mlp"]),
            "datasets": VALUES | st.just(["digits"]),
            "seeds": VALUES,
        },
    ),
    pruner=st.dictionaries(st.sampled_from(["c", "mu", "prune_all", "epochs", "k"]), VALUES, max_size=3),
    budget=st.dictionaries(
        st.sampled_from(["epochs", "lr", "lr_milestones", "augment", "z"]), VALUES, max_size=3
    ),
)
def test_fuzz_near_valid_documents_raise_only_config_error(grid, pruner, budget):
    doc = {"grid": grid, "pruners": {"grda": pruner, "dense": {}}, "budget": budget}
    _expect_spec_or_config_error(sweep_from_dict, doc, "fuzz.toml")


TOKENS = [
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\n",
    " ",
    ",",
    '"',
    "'",
    "{",
    "}",
    ".",
    "#",
    "pruners",
    "grid",
    "budget",
    "grda",
    "c",
    "mu",
    "models",
    "datasets",
    "seeds",
    "mlp",
    "digits",
    "1",
    "0.5",
    "-2",
    "true",
    "1e999",
    "nan",
    "inf",
    "1979-05-27",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join) | st.text(max_size=60))
def test_fuzz_toml_text_raises_only_config_error(text):
    _expect_spec_or_config_error(sweep_from_toml, text, "fuzz.toml")


# --------------------------------------------------------------------------------------- CLI


def test_cli_invalid_file_exits_2_listing_errors_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, BAD, "bad.toml")
    for extra in ([], ["--dry-run"], ["--executor", "slurm", "--profile", "local-test"]):
        assert cli.main(["sweep", "bad.toml", *extra]) == 2
        err = capsys.readouterr().err
        assert "11 errors in bad.toml" in err and "[pruners.grda] mu = 2.0: must be in (0, 1)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_local_sweep_with_missing_dataset_files_exits_2_and_submits_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "data_dir = 'nowhere'\n[grid]\nmodels = ['lenet300_100']\ndatasets = ['mnist']\n"
                    "[pruners.dense]\n", "s.toml")
    monkeypatch.setattr(local_executor.Local, "submit", lambda *a, **k: pytest.fail("submitted"))
    assert cli.main(["sweep", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert "s.toml: data_dir = 'nowhere': dataset 'mnist': files not found at 'nowhere/MNIST/raw'" in err
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]


def test_cli_dry_run_counts_cells_estimates_compute_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, DEMO)
    assert cli.main(["sweep", "sweep.toml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sweep digits-demo (sweep.toml): 9 cells" in out
    assert re.search(r"grda\s+6", out) and re.search(r"dense\s+3", out)
    assert re.search(r"estimated compute, timed on this machine \(cpu\): [0-9.e-]+ CPU-hours", out)
    # a small model: probed at its real batch
    probe = r"grda/mlp/digits: [0-9.e+-]+ ms/step x 82 steps .*\(timed probe, \d+ thread\(s\)[;)]"
    assert re.search(probe, out)
    assert (
        cli.main(["sweep", "sweep.toml", "--dry-run", "--executor", "slurm", "--profile", "local-test"]) == 0
    )
    assert "slurm: about " in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "partition = 'debug'\ngpu = 1\n",
            "unknown key(s) gpu; valid keys: partition, gpus_per_node, cpus_per_task",
        ),
        ("timeout_min = 1\n", "timeout_min = 1: must be >= 2"),
        ("cpus_per_task = 'two'\n", "cpus_per_task = 'two': expected an integer"),
        ("partition = debug\n", "not valid TOML"),
        # a newline would end the #SBATCH comment line and put the rest on a line the shell runs
        ('partition = "debug\\necho pwned #"\n', "partition = 'debug\\necho pwned #': must be printable"),
    ],
)
def test_bad_profile_exits_2_naming_file_and_key_before_anything(
    tmp_path, monkeypatch, capsys, text, expected
):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, DEMO)
    (tmp_path / "slurm" / "profiles").mkdir(parents=True)
    write(tmp_path / "slurm" / "profiles", text, "mine.toml")
    assert cli.main(["sweep", "sweep.toml", "--executor", "slurm", "--profile", "mine"]) == 2
    err = capsys.readouterr().err
    assert "slurm/profiles/mine.toml" in err and expected in err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["sweep", "sweep.toml", "--executor", "slurm", "--profile", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--profile nosuch: no such profile" in err and re.search(r"available: .*\bmine\b", err)
    assert cli.main(["sweep", "sweep.toml", "--profile", "mine"]) == 2  # a profile is for slurm
    assert not (tmp_path / "runs").exists()


def test_repository_profiles_load():
    assert set(slurm_executor.profile_names()) >= {"example-gpu", "local-test"}
    for name in ("example-gpu", "local-test"):
        assert isinstance(slurm_executor.load_profile(name), slurm_executor.Profile)


# ------------------------------------------------------------------------------ sbatch (golden)


@pytest.mark.parametrize(("profile", "tasks"), [("local-test", 1), ("example-gpu", 1), ("example-gpu", 2)])
def test_sbatch_script_matches_golden_file(tmp_path, profile, tasks):
    """The script submitit writes for a 6-cell array. UPDATE_GOLDEN=1 rewrites the files."""
    folder = tmp_path / "runs" / "digits-demo" / ".submitit" / "%j"
    profile_ = slurm_executor.load_profile(profile)
    script = slurm_executor.sbatch_script(profile_, "digits-demo", folder, 6, tasks)
    python = slurm_executor.shlex.quote(sys.executable)
    script = script.replace(str(tmp_path), "<TMP>").replace(python, "<PYTHON>")
    golden = GOLDEN / f"sbatch_{profile}{'_x2' if tasks > 1 else ''}.sh"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(script)
    assert script == golden.read_text()
    assert "#SBATCH --array=0-5%" in script and "#SBATCH --requeue" in script


def test_sbatch_script_quotes_the_out_folder(tmp_path):
    folder = tmp_path / "a b;$(touch pwned)" / ".submitit" / "%j"
    script = slurm_executor.sbatch_script(slurm_executor.load_profile("local-test"), "n", folder, 2)
    (command,) = [line for line in script.splitlines() if "submitit.core._submit" in line]
    args = shlex.split(command)  # as the job's shell splits it: each path one argument, nothing run
    assert args[-1] == str(folder) and args[args.index("--output") + 1].startswith(str(folder.parent))


# ------------------------------------------------------------------------- status and skip logic


def _spec(tmp_path: Path):
    return load_sweep(write(tmp_path, DEMO))


def _result(out: Path, config: RunConfig, status: str) -> None:
    write_json(out / config.run_id / "result.json", {**config.identity(), "status": status, "error": "boom"})


def _job(out: Path, config: RunConfig, record: dict) -> None:
    write_json(out / ".jobs" / f"{config.run_id}.json", {"run_id": config.run_id, **record})


def test_statuses_and_what_is_resubmitted(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    c = spec.cells
    _result(out, c[0], "ok")
    _result(out, c[1], "diverged")
    _result(out, c[2], "failed")
    live = subprocess.Popen(["sleep", "60"])
    try:
        alive = {
            "executor": "local",
            "job_id": str(live.pid),
            "start_ticks": local_executor._start_ticks(live.pid),
            "submitted_ts": 0,
        }
        _job(out, c[3], alive)  # alive, its config.json written: running
        write_json(out / c[3].run_id / "config.json", {})
        _job(out, c[4], {**alive, "submitted_ts": 4e9})  # alive, not started yet: pending
        _result(out, c[5], "failed")  # failed before, resubmitted and alive: running, not failed
        _job(out, c[5], alive)
        write_json(out / c[5].run_id / "config.json", {})
        _job(out, c[6], {**alive, "start_ticks": -1})  # pid reused by another process: dead
        _job(out, c[7], {"executor": "local", "job_id": "999999999", "start_ticks": 1})  # gone
        states = [s.state for s in cell_statuses(out, c)]
    finally:
        live.kill()
        live.wait()
    assert states == [
        "done",
        "diverged",
        "failed",
        "running",
        "pending",
        "running",
        "stopped",
        "stopped",
        "missing",
    ]
    statuses = cell_statuses(out, c)  # the live job is gone now: its cells are stopped, or failed
    assert "ended (EXITED) without a result" in statuses[7].reason
    assert to_submit(statuses) == [c[3], c[4], c[6], c[7], c[8]]  # stopped cells resume by default
    assert to_submit(statuses, retry_failed=True) == [c[2], c[3], c[4], c[5], c[6], c[7], c[8]]


def test_run_sweep_never_resubmits_done_running_or_pending_cells(tmp_path, monkeypatch):
    spec, out = _spec(tmp_path), tmp_path / "out"
    calls = []
    monkeypatch.setattr(slurm_executor.Slurm, "submit", lambda _, cells, *a: calls.append(cells) or [])
    monkeypatch.setattr(
        executors, "job_states", lambda records: {"7_1": "RUNNING", "7_2": "PENDING", "7_3": "CANCELLED"}
    )
    c = spec.cells
    _result(out, c[0], "ok")
    _job(out, c[1], {"executor": "slurm", "job_id": "7_1"})
    _job(out, c[2], {"executor": "slurm", "job_id": "7_2"})
    _job(out, c[3], {"executor": "slurm", "job_id": "7_3"})  # cancelled without a result: stopped
    records = run_sweep(spec, out, _slurm_test(), wait=False, progress=False)
    assert calls == [c[3:]]
    assert [r["status"] for r in records[:5]] == ["ok", "running", "pending", "stopped", "missing"]
    assert "job 7_3 ended (CANCELLED) without a result" in records[3]["error"]
    run_sweep(spec, out, _slurm_test(), wait=False, progress=False, retry_failed=True)
    assert calls[1] == [c[3], *c[4:]]
    manifest = read_json(out / "sweep.json")
    assert manifest["name"] == "digits-demo" and len(manifest["cells"]) == 9 and manifest["source"] == DEMO


def test_slurm_states_squeue_decides_liveness_sacct_says_how_it_ended(monkeypatch):
    outputs = {
        "squeue": "12_0|RUNNING\n12_3|PENDING\n13|REQUEUED\n99_1|RUNNING\n",
        "sacct": "JobID|State\n12_0|RUNNING\n12_1|CANCELLED by 0\n12_2|RUNNING\n"
        "12_[3-5]|PENDING\n13|PENDING\n",
    }
    monkeypatch.setattr(slurm_executor, "_command", lambda cmd: outputs[cmd[0]])
    states = slurm_executor.slurm_states({"12_0", "12_1", "12_2", "12_3", "12_4", "13", "14"})
    assert states == {
        "12_0": "RUNNING",
        "12_1": "CANCELLED",
        "12_2": "ENDED",
        "12_3": "PENDING",
        "12_4": "ENDED",
        "13": "REQUEUED",
        "14": "UNKNOWN",
    }
    alive = {k for k, v in states.items() if v in executors.ALIVE}
    assert alive == {"12_0", "12_3", "13"}


def test_local_submission_runs_cells_in_lanes_bounded_by_cores(tmp_path, monkeypatch):
    """One job per core at most, torch threads = cores / jobs, every cell in exactly one job."""
    submitted = []

    class FakeJob:
        def __init__(self, fn):
            self.fn, self.job_id = fn, str(os.getpid())
            self.paths = type("P", (), {"stdout": tmp_path / "log" / "x.out"})

    class FakeExecutor:
        def __init__(self, folder, **kw):
            self.params = {}

        def update_parameters(self, **kw):
            self.params = kw

        def submit(self, fn):
            submitted.append((fn, dict(self.params)))
            return FakeJob(fn)

    monkeypatch.setattr(local_executor.submitit, "LocalExecutor", FakeExecutor)
    monkeypatch.setattr(local_executor, "local_devices", lambda: (4, 0))
    spec = _spec(tmp_path)
    jobs = executors.create("local").submit(spec.cells, tmp_path / "out", "x")
    assert len(jobs) == 4 and [p["tasks_per_node"] for _, p in submitted] == [1] * 4
    assert [fn.threads for fn, _ in submitted] == [1, 1, 1, 1]
    assert sorted(c.run_id for fn, _ in submitted for c in fn.configs) == sorted(c.run_id for c in spec.cells)
    submitted.clear()
    executors.create("local", gpus=2).submit(spec.cells[:3], tmp_path / "out", "x")
    assert [(fn.threads, p["tasks_per_node"], p["gpus_per_node"]) for fn, p in submitted] == [(1, 2, 0)] * 2
    submitted.clear()
    executors.create("local").submit(spec.cells[:1], tmp_path / "out", "x")
    assert [fn.threads for fn, _ in submitted] == [4]  # one job: all the cores
    rec = read_json(tmp_path / "out" / ".jobs" / f"{spec.cells[0].run_id}.json")
    assert rec["executor"] == "local" and rec["job_id"] == str(os.getpid())


def test_local_jobs_take_the_long_cells_first_and_share_the_work(tmp_path):
    """IMP's 99% cells (11 budgets) start first, one per job, and every job ends with about the same
    number of budgets to train; cells of equal cost keep the sweep's order."""
    from bench.spec import load_sweep

    (tmp_path / "s.toml").write_text(
        'name = "lanes"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
        'seeds = [0, 1]\n[pruners.dense]\noptimizer = ["sgd", "sgd_momentum", "adam"]\n'
        '[pruners.imp]\nsparsity = [0.8, 0.99]\nrate = 0.4\n')
    cells = load_sweep(tmp_path / "s.toml").cells
    groups = local_executor.balanced(cells, 2)
    budgets = [[11 if c.hparams.get("sparsity") == 0.99 else 5 if c.pruner == "imp" else 1 for c in g]
               for g in groups]
    assert [b[0] for b in budgets] == [11, 11] and [b[1] for b in budgets] == [5, 5]
    assert [sum(b) for b in budgets] == [19, 19]
    assert sorted(c.run_id for g in groups for c in g) == sorted(c.run_id for c in cells)
    order = {c.run_id: i for i, c in enumerate(cells)}
    for g in groups:  # the 6 dense cells, 3 to a job, each job's in the sweep's order
        dense = [order[c.run_id] for c in g if c.pruner == "dense"]
        assert len(dense) == 3 and dense == sorted(dense)


# ------------------------------------------------------------------------- local executor (e2e)

SMALL = """
name = "small"
[budget]
epochs = 2
[grid]
models = ["mlp"]
datasets = ["digits"]
[pruners.grda]
c = [0.01, 0.02]
mu = 0.6
[pruners.dense]
"""


def history(folder: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((folder / "history.csv").open()))
    columns = ("epoch", "step", "loss", "train_top1", "val_top1", "sparsity", "w_l2_l1")
    return [{k: r[k] for k in columns} for r in rows]


def test_local_sweep_end_to_end(tmp_path, monkeypatch, capsys):
    """Runs on submitit's local executor; --no-wait then `bench status --wait`; a second
    submission submits nothing; results equal in-process runs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local_executor, "local_devices", lambda: (2, 0))  # 2 jobs of 1 thread, any machine
    write(tmp_path, SMALL)
    assert cli.main(["sweep", "sweep.toml", "--no-wait"]) == 0
    out = tmp_path / "runs" / "small"
    jobs_before = sorted(p.name for p in (out / ".submitit").iterdir() if p.name.isdigit())
    assert len(jobs_before) == 2  # one job per core
    assert cli.main(["status", str(out), "--wait", "--poll", "0.5"]) == 0
    line = "done 3   running 0   pending 0   failed 0   stopped 0   diverged 0   missing 0"
    assert line in capsys.readouterr().out

    spec = load_sweep("sweep.toml")
    records = run_sweep(spec, out, progress=False)
    assert [r["status"] for r in records] == ["ok"] * 3
    assert sorted(p.name for p in (out / ".submitit").iterdir() if p.name.isdigit()) == jobs_before
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each local job here: float sums depend on the thread count
    try:
        reference = run(spec.cells[1], tmp_path / "inprocess")
    finally:
        torch.set_num_threads(threads)
    assert records[1]["top1"] == reference["top1"] and records[1]["sparsity"] == reference["sparsity"]
    assert history(out / spec.cells[1].run_id) == history(tmp_path / "inprocess" / spec.cells[1].run_id)
    capsys.readouterr()
    assert cli.main(["sweep", "sweep.toml", "--dry-run"]) == 0  # the estimate now uses the finished runs
    dry = capsys.readouterr().out
    assert "(3 finished, 0 to run)" in dry and "median of 2 finished here" in dry and "probe" not in dry


def test_a_job_goes_on_after_a_failed_run_which_is_resubmitted_only_with_retry_failed(
    tmp_path, monkeypatch, capsys
):
    """A job (here called in-process) records a failed run (traceback.txt) and a diverged one and
    goes on with its next cell; `bench status` and the gathered table show both; the failure is
    reported with its reason and resubmitted only with --retry-failed."""
    from bench import results

    monkeypatch.chdir(tmp_path)
    write(tmp_path, SMALL)
    spec = load_sweep("sweep.toml")
    no_data = check_config(
        RunConfig(
            pruner="dense", model="lenet300_100", dataset="mnist", data_dir="nowhere", budget=Budget(epochs=1)
        )
    )
    nan = check_config(RunConfig(budget=Budget(epochs=2, lr=1e6)))  # the loss overflows in epoch 0
    out = tmp_path / "runs" / "small"
    calls = []
    monkeypatch.setattr(local_executor.Local, "submit", lambda _, cells, *a: calls.append(cells) or [])
    cells = [no_data, nan, spec.cells[2]]
    run_sweep(dataclasses.replace(spec, cells=cells), out, wait=False, progress=False)
    assert calls == [cells]

    monkeypatch.setattr(executors.base.submitit, "JobEnvironment", lambda: type("Env", (), {"num_tasks": 1}))
    with pytest.raises(RuntimeError, match=r"1 run\(s\) failed: dense-lenet300_100-mnist-.*'mnist'"):
        executors.base.RunJob(calls[0], out, threads=1)()
    assert read_json(out / spec.cells[2].run_id / "result.json")["status"] == "ok"  # the next cell ran
    assert "'mnist'" in (out / no_data.run_id / "traceback.txt").read_text()
    assert read_json(out / nan.run_id / "result.json")["diverged_epoch"] == 0
    for cell in calls[0]:  # as if the job had exited
        _job(out, cell, {"executor": "local", "job_id": "999999999", "start_ticks": 1})
    assert cli.main(["status", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "done 1   running 0   pending 0   failed 1   stopped 0   diverged 1" in printed
    assert "'mnist'" in printed
    assert "--retry-failed" in printed
    table = results.gather(out).runs.set_index("run_id")
    assert table.loc[no_data.run_id, "status"] == "failed" and "'mnist'" in table.loc[no_data.run_id, "error"]
    assert table.loc[nan.run_id, "status"] == "diverged" and table.loc[nan.run_id, "diverged_epoch"] == 0
    spec = dataclasses.replace(spec, cells=calls[0])
    (failed, diverged, done) = run_sweep(spec, out, wait=False, progress=False)
    assert (failed["status"], diverged["status"], done["status"]) == ("failed", "diverged", "ok")
    assert calls[1] == []
    run_sweep(spec, out, wait=False, retry_failed=True, progress=False)
    assert calls[2] == [calls[0][0]]  # diverged is a result, not a failure: never resubmitted


def test_job_is_picklable_and_checkpoints_to_itself(tmp_path):
    import cloudpickle

    job = executors.base.RunJob(load_sweep(write(tmp_path, DEMO)).cells[:2], tmp_path, threads=1)
    again = cloudpickle.loads(cloudpickle.dumps(job))
    assert again.configs == job.configs and again.out == str(tmp_path)
    delayed = job.checkpoint()
    assert delayed.function is job and not delayed.args


def test_two_process_ddp_run_matches_single_process(tmp_path):
    """--gpus 2 on a CPU machine: 2 tasks of one local job on gloo; each takes half of every
    batch; one folder, one result, the same training as one process (up to float rounding)."""
    spec = sweep_from_toml(SMALL.replace("c = [0.01, 0.02]", "c = 0.02").replace("[pruners.dense]", ""))
    (cell,) = spec.cells
    (record,) = run_sweep(spec, tmp_path / "ddp", executors.create("local", gpus=2), progress=False)
    assert record["status"] == "ok" and record["samples_seen"] == 2 * 1295  # 1437 less the validation split
    logs = list((tmp_path / "ddp" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # two tasks
    reference = run(cell, tmp_path / "single")
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == [
        cell.run_id,
        "sweep.json",
    ]
    ddp, single = history(tmp_path / "ddp" / cell.run_id), history(tmp_path / "single" / cell.run_id)
    for a, b in zip(ddp, single, strict=True):
        assert a["step"] == b["step"] and float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)
    assert record["top1"] == pytest.approx(reference["top1"], abs=0.01)
    assert record["sparsity"] == pytest.approx(reference["sparsity"], abs=0.005)
