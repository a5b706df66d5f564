"""`bench perf`: the benchmark code runs and reports sane fields. Never timing thresholds: the
numbers depend on the machine; the ratios must only be positive and finite."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import perf
from bench.cli import main
from bench.config import Budget, RunConfig
from bench.perf import suites, timing
from bench.registry import PRUNERS
from bench.run.trainer import MEMORY_STEPS, Trainer
from bench.validate import check_config

CPU = torch.device("cpu")


def finite_positive(x: float) -> bool:
    return isinstance(x, float | int) and math.isfinite(x) and x > 0


# ---------------------------------------------------------------------------------- optimizer


def test_optimizer_suite_reports_equal_weights_and_state() -> None:
    o = suites.bench_optimizer(torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Linear(30, 5)), CPU,
                             rounds=1, steps=3)
    assert o["grda_equals_reference"] and o["max_abs_diff"] <= 1e-5
    assert o["steps_each"] == 6  # warm-up round + one timed round, 3 steps each
    assert o["state_bytes"]["grda"] == o["state_bytes"]["sgd"] == 4 * (20 * 30 + 30 + 30 * 5 + 5)
    assert finite_positive(o["grda_vs_sgd"]) and finite_positive(o["reference_vs_grda"])


# ------------------------------------------------------------------------------------- timing


def test_round_robin_rotates_order_discards_warmup_and_pairs_rounds() -> None:
    calls: list[str] = []
    blocks = {n: (lambda n=n: calls.append(n) or [float(len(calls))]) for n in "abc"}
    out = timing.round_robin(blocks, rounds=2)
    assert calls == list("abc" + "bca" + "cab")
    assert out == {"a": [[6.0], [8.0]], "b": [[4.0], [9.0]], "c": [[5.0], [7.0]]}
    assert timing.ratio(out["a"], out["c"]) == (6 / 5 + 8 / 7) / 2  # paired by round
    assert timing.summary(out["b"]) == {"median_ms": 6.5, "p25_ms": 5.25, "p75_ms": 7.75, "n": 2}
    calls.clear()
    out = timing.round_robin(blocks, rounds=1, min_seconds=0.05)
    assert len(calls) >= 6 and all(len(v) == len(calls) // 3 - 1 for v in out.values())


# ------------------------------------------------------------------------------------ pruners


@pytest.mark.parametrize("pruner", [p for p in PRUNERS.names() if p != perf.REFERENCE])
def test_every_registered_pruner_is_timed_against_dense(pruner: str) -> None:
    budget = Budget(batch_size=16, momentum=perf.PERF_MOMENTUM)
    configs = {p: check_config(RunConfig(p, "mlp", "synthetic", budget=budget, device="cpu"))
               for p in (perf.REFERENCE, pruner)}
    rows = suites.bench_pruners(configs, perf.QUICK, CPU, memory=False)
    assert [r["pruner"] for r in rows] == [perf.REFERENCE, pruner]
    for r in rows:
        assert r["step"]["n"] == perf.QUICK.rounds * perf.QUICK.opt_steps
        assert r["train_step"]["n"] == perf.QUICK.rounds * perf.QUICK.train_steps
        for key in ("step_ratio", "train_step_ratio", "state_ratio", "state_bytes"):
            assert finite_positive(r[key]), (key, r[key])
        assert r["weights_finite"]
    if pruner == "grda":  # one accumulator per parameter, like SGD's momentum buffer
        assert rows[1]["state_bytes"] == rows[0]["state_bytes"]


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_timing_the_step_alone_leaves_training_untouched(pruner: str, tmp_path) -> None:
    """The optimizer-only block repeats steps on the last gradients, then restores everything."""
    cfg = check_config(RunConfig(pruner=pruner, model="mlp", dataset="synthetic",
                                 budget=Budget(batch_size=16, momentum=0.9), device="cpu"))
    tr = Trainer(cfg, tmp_path, progress=False)
    warm = MEMORY_STEPS.stop  # the block starts after the steps whose tensors are tracked
    assert len(suites._train_block(tr, 2)) == 2 and tr.step == warm + 2
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_before = json.dumps(tr.optimizer.state_dict()["param_groups"], default=str)
    assert len(suites._step_block(tr, 3)) == 3
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert json.dumps(tr.optimizer.state_dict()["param_groups"], default=str) == opt_before
    assert tr.step == warm + 2


def test_training_blocks_may_run_past_the_step_budget(tmp_path) -> None:
    """Perf times as many steps as it needs; the budget (and so the pruners' schedules) is unchanged."""
    cfg = check_config(RunConfig(pruner="grda", model="mlp", dataset="synthetic",
                                 budget=Budget(batch_size=16, max_steps=1), device="cpu"))
    tr = Trainer(cfg, tmp_path, progress=False)
    assert len(suites._train_block(tr, 3)) == 3 and tr.step == MEMORY_STEPS.stop + 3
    assert tr.total_steps == tr.context.total_steps == 1


def test_every_suite_has_a_runner() -> None:
    assert tuple(suites.RUNNERS) == perf.SUITES


def test_importing_the_cli_imports_no_torch() -> None:
    code = "import sys, bench.perf; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------------------------- end to end


def test_cli_quick_reports_every_suite(tmp_path, capsys) -> None:
    """End to end (about 30-60 s here: fresh processes for CPU memory, DataLoader workers, a real
    template run for the results fixture): exit 0, a table with PASS/MISS, and a JSON report."""
    out = tmp_path / "perf.json"
    rc = main(["perf", "--quick", "--model", "mlp", "--dataset", "synthetic", "--pruners", "grda",
               "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| check | measured | target | result |" in printed
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] and report["meta"]["pruners"] == ["dense", "grda"]
    assert sorted(report["meta"]["suite_seconds"]) == sorted(perf.SUITES)

    dense, grda = report["pruners"]
    for r in (dense, grda):
        for key in ("step_ratio", "train_step_ratio", "peak_memory_ratio", "state_ratio",
                    "peak_memory_bytes"):
            assert finite_positive(r[key]), (r["pruner"], key, r[key])
        assert 0 <= r["memory_growth_bytes"] <= r["peak_memory_bytes"]
    assert dense["step_ratio"] == dense["train_step_ratio"] == 1.0
    assert grda["state_bytes"] == dense["state_bytes"]

    o = report["optimizer"]
    assert o["grda_equals_reference"] and o["state_bytes"]["grda"] == o["state_bytes"]["sgd"]
    assert all(finite_positive(lp["ratio"]) for lp in report["loop"])
    loops = [(lp["model"], lp["dataset"]) for lp in report["loop"]]
    assert loops == [("mlp", "synthetic"), ("mlp", "digits")]
    d = report["data"]
    assert finite_positive(d["speedup_0w"]) and finite_positive(d["speedup_2w"])
    r = report["results"]
    assert r["gathered"] == r["runs"] == perf.QUICK.result_folders and finite_positive(r["gather_s"])
    c = report["compact"]
    assert c["outputs_equal"] and c["params_compact"] < c["params"] and c["flops_ratio"] > 1

    checks = {ch["name"]: ch for ch in report["checks"]}
    assert checks["state bytes: grda / dense SGD-momentum"]["passed"]
    assert checks["optimizer: grda weights == reference loop weights"]["passed"]
    assert checks["compact: outputs unchanged after removing zero channels"]["passed"]
    assert all(isinstance(ch["passed"], bool) and ch["target"] for ch in checks.values())
    assert len(checks) == 13


@pytest.mark.parametrize("argv, expected", [
    (["--pruners", "grda,nope"], "valid choices: "),
    (["--suite", "pruners,speed"], "valid choices: pruners, optimizer, harness, compact"),
    (["--set", "c=0.1"], "expected PRUNER.KEY=VALUE"),
    (["--pruners", "grda", "--set", "gmp.x=1"], "PRUNER one of dense, grda"),
    (["--pruners", "grda", "--set", "grda.mu=2"], "pruners.grda"),
    (["--dataset", "digits"], "does not fit dataset 'digits'"),
    (["--batch-size", "0"], "budget.batch_size"),
    (["--threads", "-1"], "--threads"),
])
def test_bad_input_exits_2_before_anything_runs(argv: list[str], expected: str, tmp_path, capsys) -> None:
    out = tmp_path / "perf.json"
    assert main(["perf", "--quick", *argv, "--json", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error(capsys) -> None:
    assert main(["perf", "--quick", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ start-up


def test_a_digits_run_imports_neither_torchvision_nor_torch_dynamo(tmp_path, monkeypatch) -> None:
    """The registry imports only the modules of the names asked for; the optimizers and the
    memory tracker skip torch's dynamo guards; the digits split comes from the user cache after
    the first run (which imports scikit-learn to compute it)."""
    from bench.perf.startup import heavy_imports

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    first = heavy_imports(str(tmp_path / "runs"))
    assert "sklearn" in first and "torchvision" not in first and "torch._dynamo" not in first
    assert list((tmp_path / "cache").glob("digits-split-*.npz"))
    assert heavy_imports(str(tmp_path / "runs")) == []  # no torchvision, torch._dynamo, pandas...
    # gRDA (its own optimizer), VD (Adam) and STR (a parametrization) alike
    for pruner in ("grda", "vd", "str"):
        assert heavy_imports(str(tmp_path / "runs"), pruner) == [], pruner


def test_registry_imports_a_module_only_when_its_entry_is_asked_for() -> None:
    code = ("import sys; from bench.registry import MODELS, PRUNERS; "
            "names = MODELS.names(); assert 'resnet50' in names and 'mlp' in names, names; "
            "assert 'bench.models.torchvision_models' not in sys.modules; "
            "MODELS.get('mlp'); assert 'bench.models.torchvision_models' not in sys.modules; "
            "assert 'baselines.vd' not in sys.modules; PRUNERS.get('dense'); "
            "assert 'baselines.vd' not in sys.modules; "
            "info = MODELS.get('resnet50'); assert 'torchvision' not in sys.modules; "
            "info.build(10); assert 'torchvision' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_name_lists_every_builtin_choice() -> None:
    from bench.errors import ConfigError
    from bench.registry import MODELS

    with pytest.raises(ConfigError, match=r"model: unknown model 'nope'; valid choices: .*resnet50"):
        MODELS.get("nope", "model")


def test_declared_names_are_read_from_the_decorators(tmp_path) -> None:
    from bench.registry import declared_names

    path = tmp_path / "m.py"
    path.write_text('@register_model(\n    "a", input_shapes=()\n)\ndef a(n): ...\n\n'
                    '@other("b")\ndef b(): ...\n\n@register_pruner("c")\nclass C: ...\n'
                    '# @register_model("d")\n')
    assert declared_names(path) == ["a", "c"]


# ------------------------------------------------------------------------------------ dry runs

DRY = """
name = "dry"
[budget]
epochs = 2
batch_size = 32
[grid]
models = ["mlp"]
datasets = ["digits"]
seeds = [0, 1]
[pruners.dense]
"""


def test_step_counts_leave_out_the_validation_split() -> None:
    from bench.estimate import _total_steps

    def config(**budget) -> RunConfig:
        return RunConfig("dense", "mlp", "digits", {}, Budget(epochs=2, batch_size=32, **budget))

    assert _total_steps(config(val_fraction=0.0), 1437) == 2 * 45
    assert _total_steps(config(val_fraction=0.1), 1437) == 2 * 41  # 1293 examples, as a run has
    assert _total_steps(config(val_fraction=0.1, max_steps=50), 1437) == 50
    # a val_fraction >= 1 is a count of examples (ImageNet's sweep holds out 10,000 of 1,281,167)
    assert _total_steps(config(val_fraction=437.0), 1437) == 2 * 32
    imagenet = RunConfig("dense", "resnet50", "imagenet", {},
                         Budget(epochs=1, batch_size=256, val_fraction=10000))
    assert _total_steps(imagenet, 1281167) == 4966


def test_a_dry_run_counts_each_cells_own_steps(tmp_path, monkeypatch) -> None:
    """IMP trains a full budget a round: its 99% cell (10 rounds at 40%) runs 11 budgets, its 80%
    cell (4 rounds) 5; one probe of the group times both, each at its own step count, and the
    scheduler's time limit is the longest cell's."""
    from bench import estimate
    from bench.sweep import load_sweep

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.toml").write_text(DRY.replace("[pruners.dense]", "[pruners.imp]\nsparsity = [0.8, 0.99]\n"
                                                 "rate = 0.4\nrewind = \"init\""))
    spec = load_sweep(tmp_path / "s.toml")
    assert estimate.budget_multiple(spec.cells[0]) == 5 and estimate.budget_multiple(spec.cells[-1]) == 11
    assert estimate.relative_steps(spec.cells) == [1.0, 1.0, 2.2, 2.2]  # seeds 0, 1 of 80%, then 99%
    monkeypatch.setattr(estimate, "_probe", lambda c, steps, **kw: (1.0, 0.01, 1437, "stand-in probe"))
    est = estimate.estimate(spec)
    first = 1.0 + 0.01 * 5 * 2 * 41  # 2 epochs of 41 steps, 5 budgets
    assert est.total_s == pytest.approx(2 * first + 2 * (1.0 + (first - 1.0) * 2.2))
    assert est.max_cell_s == pytest.approx(1.0 + (first - 1.0) * 2.2)
    cell = est.cells["imp/mlp/digits"]
    assert cell.total_s == pytest.approx(1.0 + 0.01 * 11 * 2 * 41, rel=0.01)
    # wall time: the compute over the lanes, but never less than the longest cell (four lanes: it)
    assert est.wall_s(1) == pytest.approx(est.todo_s)
    assert est.wall_s(2) == pytest.approx(est.todo_s / 2)
    assert est.max_cell_s > est.todo_s / 4 and est.wall_s(4) == pytest.approx(est.max_cell_s)


def test_a_dry_run_reuses_its_cached_probe_unless_asked_to_probe(tmp_path, monkeypatch) -> None:
    from bench import estimate
    from bench.sweep import load_sweep

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.toml").write_text(DRY)
    spec = load_sweep(tmp_path / "s.toml")
    probes = []
    real = estimate._probe
    monkeypatch.setattr(estimate, "_probe", lambda c, steps, **kw: probes.append(c) or real(c, steps, **kw))
    first = estimate.estimate(spec)
    assert len(probes) == 1 and "timed probe" in first.rates["dense/mlp/digits"]
    again = estimate.estimate(spec)
    assert len(probes) == 1 and "timed probe, " in again.rates["dense/mlp/digits"]
    assert "; cached " in again.rates["dense/mlp/digits"]
    assert again.total_s == pytest.approx(first.total_s)
    estimate.estimate(spec, probe=True)
    assert len(probes) == 2


def test_a_dry_run_probes_with_the_threads_each_local_cell_gets(tmp_path, monkeypatch) -> None:
    """Two cells at a time on this machine's cores: each trains with cores / 2 threads, and the
    probe that times them must too (timed with every core, the estimate comes out too short)."""
    from bench import estimate, executors
    from bench.sweep import load_sweep

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "s.toml").write_text(DRY)
    spec = load_sweep(tmp_path / "s.toml")
    local = executors.create("local", {"parallel": 2})
    threads = local.cell_threads(len(spec.cells))
    assert threads == max(1, len(os.sched_getaffinity(0)) // 2)
    seen = []
    real = estimate._probe
    monkeypatch.setattr(estimate, "_probe",
                        lambda c, steps, **kw: seen.append(torch.get_num_threads()) or real(c, steps, **kw))
    before = torch.get_num_threads()
    est = estimate.estimate(spec, threads=threads)
    assert seen == [threads] and f"{threads} thread(s)" in est.rates["dense/mlp/digits"]
    assert torch.get_num_threads() == before  # the dry run's own process is left as it was


def test_the_probe_times_the_step_alone_after_an_untimed_warm_up(monkeypatch) -> None:
    """A slow loader and slow first steps (a GPU's warm-up) stay out of the probe's step time: its
    batch is fetched before the clock starts, and the warm-up is neither timed nor counted against
    the probe's time limit (it would leave 1-2 timed steps); the printed line says what was timed."""
    import time

    from bench import estimate
    from bench.data import TensorData

    batches = TensorData.train_batches

    def slow_loader(self, *args, **kwargs):
        for xy in batches(self, *args, **kwargs):
            time.sleep(0.5)
            yield xy

    steps, train_step = [], Trainer.train_step

    def step(self, *args, **kwargs):
        steps.append(time.perf_counter())
        if len(steps) <= estimate.WARMUP_STEPS["cpu"]:
            time.sleep(0.6)  # the warm-up alone outlasts max_s
        return train_step(self, *args, **kwargs)

    monkeypatch.setattr(TensorData, "train_batches", slow_loader)
    monkeypatch.setattr(Trainer, "train_step", step)
    config = check_config(RunConfig("dense", "mlp", "digits", {}, Budget(epochs=1, batch_size=32)))
    _, step_s, num_train, how = estimate._probe(config, steps=5, max_s=0.5, cpu_batch=32)
    warmup = estimate.WARMUP_STEPS["cpu"]
    assert len(steps) == warmup + 5 and num_train == 1437
    assert step_s < 0.25, "neither the loader's 0.5 s per batch nor the warm-up is in the step time"
    assert f"the training step alone on a held batch: median of 5 after {warmup} warm-up" in how


def test_a_large_model_is_estimated_from_its_macs_at_the_device_rate(tmp_path, monkeypatch) -> None:
    from bench import estimate
    from bench.sweep import load_sweep

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(estimate, "PROBE_MAX_MACS", 0.0)  # the MLP counts as large
    monkeypatch.setattr(estimate, "_probe", lambda c, steps, **kw: pytest.fail("probed"))
    (tmp_path / "s.toml").write_text(DRY)
    est = estimate.estimate(load_sweep(tmp_path / "s.toml"))
    how = est.rates["dense/mlp/digits"]
    assert "MAC estimate: 3 x " in how and "x 82 steps" in how and "GMAC/s" in how
    cell = est.cells["dense/mlp/digits"]
    assert cell.steps_per_epoch == 41 and finite_positive(cell.epoch_s) and est.total_s == 2 * cell.total_s
    assert {"macs.json", "rates.json"} <= {p.name for p in (tmp_path / "cache").iterdir()}


def test_the_user_cache_recomputes_what_it_cannot_read_and_survives_being_unwritable(tmp_path,
                                                                                       monkeypatch) -> None:
    import numpy as np

    from bench import cache

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "c"))
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"x": np.arange(3)}

    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2]
    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 1
    (tmp_path / "c" / "a.npz").write_bytes(b"torn")  # a damaged entry is recomputed and replaced
    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 2
    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 2
    (tmp_path / "c" / "a.npz").write_bytes((tmp_path / "c" / "a.npz").read_bytes()[:-20])  # a torn zip
    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 3
    (tmp_path / "c" / "p.json").write_text("[1, 2]")  # not an object: treated as empty
    assert cache.read_json("p") == {}
    cache.write_json("p", {"k": 1})
    assert cache.read_json("p") == {"k": 1}
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "file" / "c"))  # cannot be created
    assert cache.cached_arrays("a", compute)["x"].tolist() == [0, 1, 2] and len(calls) == 4
    cache.write_json("p", {"k": 2})
    assert cache.read_json("p") == {}
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".tmp")] == []


def test_a_plugin_entry_wins_over_the_builtin_imported_after_it() -> None:
    code = """
import warnings
from bench.models import register_model
from bench.registry import MODELS

@register_model("mlp", input_shapes=((1, 8, 8),))
def mine(num_classes):
    '''my own mlp'''

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    MODELS.items()  # imports every built-in model module, bench.models.mlp included
assert MODELS.get("mlp").build is mine
assert any("replaces the built-in" in str(w.message) for w in caught), caught
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_dry_run_counts_imp_at_its_full_budget_per_round(tmp_path, monkeypatch) -> None:
    """IMP trains a budget per round: the estimate's steps are the pruner's, not one budget's."""
    from bench import estimate
    from bench.sweep import load_sweep

    monkeypatch.setenv("PRUNEBENCH_CACHE", str(tmp_path / "cache"))
    imp = "[pruners.dense]\n[pruners.imp]\nsparsity = 0.36"
    (tmp_path / "s.toml").write_text(DRY.replace("[pruners.dense]", imp))
    spec = load_sweep(tmp_path / "s.toml")
    rates = estimate.estimate(spec).rates
    dense_steps = int(re.search(r"x (\d+) steps", rates["dense/mlp/digits"]).group(1))
    imp_steps = int(re.search(r"x (\d+) steps", rates["imp/mlp/digits"]).group(1))
    assert imp_steps == 3 * dense_steps  # 0.8^2 = 0.64 kept: two rounds after the first budget
