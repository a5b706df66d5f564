"""Input and state a hostile (or unlucky) user gives `bench`: every bad value exits 2 naming the
file, the key and the valid range before anything is created or submitted; corrupt or foreign
state is recomputed or reported with its path; no cell is lost or run twice.

The end-to-end test (SIGINT to `bench sweep`, then a re-run that resumes the cell) starts a real
local job: ~20 s here. The rest take well under a second each, the property test ~10 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import cli, io, results, status
from bench.config import MAX_SEED, Budget, RunConfig
from bench.errors import ConfigError
from bench.executors import local as local_executor
from bench.executors import slurm as slurm_executor
from bench.run.job import run
from bench.spec import load_sweep, sweep_from_toml
from bench.sweep import run_sweep
from bench.validate import check_config

ONE_EPOCH = RunConfig(budget=Budget(epochs=1))
GRID = '[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'


def no_gpu_here() -> str:
    """A CUDA device this machine does not have (cuda:99 has none anywhere)."""
    return "cuda:99"


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def sweep_file(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def no_submit(monkeypatch):
    """Submissions recorded instead of started (cells per call)."""
    calls: list[list[RunConfig]] = []
    for cls in (local_executor.Local, slurm_executor.Slurm):
        monkeypatch.setattr(cls, "submit", lambda self, cells, out, name: calls.append(list(cells)) or [])
    return calls


# ------------------------------------------------------------------- values refused before writing


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--lr", "inf"], "budget.lr = 'inf': expected a finite number"),
        (["--weight-decay", "inf"], "budget.weight_decay = 'inf': expected a finite number"),
        (["--momentum", "nan"], "budget.momentum = 'nan': expected a finite number"),
        (["--pruner", "grda", "--set", "c=inf"], "pruners.grda.c = 'inf': expected a finite number"),
        (["--pruner", "vd", "--set", "kl_weight=inf"], "pruners.vd.kl_weight = 'inf': expected a finite"),
        (["--seed", "-1"], f"seed = -1: expected an integer in [0, {MAX_SEED}]"),
        (["--seed", str(2**40)], f"seed = {2**40}: expected an integer in [0, {MAX_SEED}]"),
        (["--device", "tpu"], "device = 'tpu': valid choices: auto, cpu, cuda, cuda:N"),
        (["--device", no_gpu_here()], "--device = 'cuda:99': no such device on this machine"),
    ],
)
def test_run_values_that_failed_after_the_folder_existed_exit_2_first(tmp_path, capsys, argv, message):
    out = tmp_path / "runs"
    assert cli.main(["run", *argv, "--out", str(out), "--quiet", "--epochs", "1"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_largest_seed_trains(tmp_path):  # the limit is not stricter than the generator needs
    record = run(RunConfig(seed=MAX_SEED, budget=Budget(epochs=1, max_steps=2)), tmp_path)
    assert record["status"] == "ok"


@pytest.mark.parametrize("kind", ["file", "newline", "read-only", "under a file"])
def test_an_out_folder_that_cannot_be_written_exits_2_naming_it(tmp_path, capsys, monkeypatch, kind):
    (tmp_path / "f").write_text("not a folder")
    out = {"file": tmp_path / "f", "newline": tmp_path / "a\nb", "read-only": tmp_path / "ro" / "runs",
           "under a file": tmp_path / "f" / "runs"}[kind]
    if kind == "read-only":  # (chmod does not stop root, who runs these tests in CI)
        (tmp_path / "ro").mkdir()
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path / "ro" and access(p, mode))
    before = files_under(tmp_path)
    assert cli.main(["run", "--out", str(out), "--quiet", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--out = " in err and any(w in err for w in ("is a file", "printable", "not writable"))
    write = sweep_file(tmp_path, f'name = "x"\n{GRID}[pruners.dense]\n')
    assert cli.main(["sweep", str(write), "--out", str(out)]) == 2
    assert "--out = " in capsys.readouterr().err
    assert files_under(tmp_path) == sorted([*before, "s.toml"])


@pytest.mark.parametrize(
    "text,message",
    [
        ("[pruners.vd]\nkl_weight = inf", "[pruners.vd] kl_weight = inf: expected a finite number"),
        ("[budget]\nlr = inf\n[pruners.dense]", "[budget] lr = inf: expected a finite number"),
        ("[budget]\nweight_decay = nan\n[pruners.dense]", "[budget] weight_decay = nan: expected a finite"),
        (f'name = "{"n" * 300}"\n[pruners.dense]', "must be a string of 1 to 100 letters"),
    ],
)
def test_sweep_values_that_failed_later_exit_2_naming_file_and_key(tmp_path, capsys, no_submit, text,
                                                                     message):
    text = text if text.startswith("name") else f'name = "x"\n{text}'
    path = sweep_file(tmp_path, text.replace("[pruners", GRID + "[pruners", 1))
    out = tmp_path / "out"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    assert not out.exists() and not no_submit


def test_seeds_beyond_the_data_order_generator_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[grid\] seeds = 1099511627776: expected an integer in \[0, "):
        sweep_from_toml(f'{GRID}seeds = [0, {2**40}]\n[pruners.dense]')


def test_sweep_size_is_checked_before_expansion_and_the_limit_can_be_raised(tmp_path):
    axis = ", ".join(f"0.{i:03d}" for i in range(1, 1000))  # 999 values of c x 999 of mu x 100 seeds
    seeds = ", ".join(map(str, range(100)))
    text = f"{GRID}seeds = [{seeds}]\n[pruners.grda]\nc = [{axis}]\nmu = [{axis}]\n"
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        sweep_from_toml(text, "big.toml")
    assert time.perf_counter() - t0 < 2  # 10^8 cells are never built
    assert "big.toml: the grid asks for up to 99,800,100 cells, more than max_cells = 10,000" in str(e.value)
    assert "set max_cells = 99800100 at the top of the file" in str(e.value)
    small = f"{GRID}seeds = [0, 1, 2]\n[pruners.gmp]\nsparsity = [0.5, 0.8]\n"
    with pytest.raises(ConfigError, match="up to 6 cells, more than max_cells = 5"):
        sweep_from_toml("max_cells = 5\n" + small)
    assert len(sweep_from_toml("max_cells = 6\n" + small).cells) == 6
    with pytest.raises(ConfigError, match="max_cells = 0: expected an integer >= 1"):
        sweep_from_toml("max_cells = 0\n" + small)


@pytest.mark.parametrize(
    "profile,message",
    [
        ("mem_gb = 0.0001", "mem_gb = 0.0001: must be in [1/1024, 1048576] GB"),
        ("mem_gb = 1e300", "mem_gb = 1e+300: expected a finite number (not inf or nan) of magnitude at most"),
        ("mem_gb = 1e30", "mem_gb = 1e+30: must be in [1/1024, 1048576] GB"),
        ("mem_gb = inf", "mem_gb = inf: expected a finite number"),
        ("mem_gb = nan", "mem_gb = nan: expected a finite number"),
    ],
)
def test_slurm_memory_that_overflows_or_rounds_to_0_mb_exits_2(tmp_path, capsys, no_submit, profile, message):
    prof = tmp_path / "p.toml"
    prof.write_text(profile + "\n")
    path = sweep_file(tmp_path, f"{GRID}[pruners.dense]\n")
    out = tmp_path / "out"
    argv = ["sweep", str(path), "--out", str(out), "--executor", "slurm", "--profile", str(prof)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(prof) in err and message in err, err
    assert not out.exists() and not no_submit


def test_slurm_memory_never_rounds_down_to_0_mb():
    params = slurm_executor.slurm_parameters(slurm_executor.Profile(mem_gb=1.001 / 1024), "x")
    assert params["mem"] == "2MB"
    assert slurm_executor.slurm_parameters(slurm_executor.Profile(mem_gb=1.5), "x")["mem"] == "1536MB"


def test_binary_profile_exits_2_naming_it(tmp_path, capsys, no_submit):
    prof = tmp_path / "p.toml"
    prof.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    path = sweep_file(tmp_path, f"{GRID}[pruners.dense]\n")
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "slurm", "--profile",
                     str(prof)]) == 2
    assert f"{prof}: not a text file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_newline_in_the_out_path_never_reaches_an_sbatch_script(tmp_path, capsys, no_submit):
    with pytest.raises(ConfigError, match="printable characters on one line"):
        slurm_executor.sbatch_script(slurm_executor.Profile(), "x", tmp_path / "a\n#SBATCH --x\nrm -rf ~", 2)
    path = sweep_file(tmp_path, f"{GRID}[pruners.dense]\n")
    out = tmp_path / "o\nrm -rf ~"
    code = cli.main(["sweep", str(path), "--out", str(out), "--executor", "slurm", "--profile", "local-test"])
    assert code == 2 and "printable characters on one line" in capsys.readouterr().err
    assert not out.exists() and not no_submit


def test_a_device_that_is_not_here(tmp_path, capsys, monkeypatch, no_submit):
    path = sweep_file(tmp_path, f'device = "{no_gpu_here()}"\n{GRID}[budget]\nepochs = 1\n[pruners.dense]\n')
    # a local sweep would train here: refused
    assert cli.main(["sweep", str(path), "--out", str(tmp_path / "o")]) == 2
    assert f"{path}: device = 'cuda:99': no such device on this machine" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # its dry run (a login node without that GPU): a message instead of an estimate, exit 0
    assert cli.main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no estimate for dense/mlp/digits: the sweep's device cuda:99 is not on this machine" in out
    assert not (tmp_path / "o").exists()
    # a job that meets it anyway records its run as failed (the failure handler does not raise)
    config = RunConfig(device=no_gpu_here(), budget=Budget(epochs=1))
    with pytest.raises((RuntimeError, AssertionError, ValueError)):
        run(config, tmp_path / "runs")
    record = json.loads((tmp_path / "runs" / check_config(config).run_id / "result.json").read_text())
    assert record["status"] == "failed" and record["device"].startswith("cpu")


# ----------------------------------------------------------------------- corrupt or foreign state


def _full(config: RunConfig, **fields) -> dict:
    return {**check_config(config).identity(), "status": "ok", "top1": 0.5, **fields}


@pytest.mark.parametrize("kind", ["list", "number", "status only", "metric of the wrong type",
                                  "null hparams"])
def test_a_result_json_of_the_wrong_shape_is_recomputed_and_skipped_by_gather(tmp_path, kind):
    config = check_config(ONE_EPOCH)
    folder = tmp_path / config.run_id
    bad = {"list": [], "number": 3, "status only": {"status": "ok"},
           "metric of the wrong type": _full(config, top1="high"),
           "null hparams": _full(config, hparams=None)}[kind]
    io.write_json(folder / "result.json", bad)
    assert status.cell_statuses(tmp_path, [config])[0].state == "missing"  # not done
    g = results.gather(tmp_path)
    assert g.runs.empty and len(g.skipped) == 1 and g.skipped[0].path == str(folder)
    record = run(config, tmp_path)  # recomputed, not returned, not a crash
    assert record["status"] == "ok" and isinstance(record["top1"], float)
    assert status.cell_statuses(tmp_path, [config])[0].state == "done"


def test_a_gathered_table_keeps_numeric_columns_numeric(tmp_path):
    config = check_config(ONE_EPOCH)
    io.write_json(tmp_path / "a" / "result.json", _full(config, run_id="a", top1="high"))
    io.write_json(tmp_path / "b" / "result.json", _full(config, run_id="b", top1=0.7))
    g = results.gather(tmp_path)
    assert list(g.runs["run_id"]) == ["b"] and g.runs["top1"].dtype.kind == "f"
    assert "top1 = 'high': expected a number" in g.skipped[0].reason


def test_a_checkpoint_that_loads_but_lacks_keys_is_set_aside_and_the_run_recomputed(tmp_path, capsys):
    config = check_config(RunConfig(budget=Budget(epochs=2)))
    folder = tmp_path / config.run_id
    folder.mkdir()
    torch.save({"config_hash": config.config_hash, "epoch": 1, "model": {}}, folder / "checkpoint.pt")
    record = run(config, tmp_path)
    assert record["status"] == "ok" and record["resumed"] is False and record["epochs_completed"] == 2
    assert (folder / "checkpoint.bad.pt").exists()
    assert "cannot resume from it (it lacks step, samples" in capsys.readouterr().err


def test_a_checkpoint_temporary_left_by_a_killed_write_is_removed(tmp_path):
    config = check_config(ONE_EPOCH)
    folder = tmp_path / config.run_id
    folder.mkdir()
    (folder / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    run(config, tmp_path)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("manifest", ["[]", '{"cells": 3}', '{"cells": [1]}', '{"cells": [{"budget": 1}]}',
                                      '{"cells": [], "imports": [3]}', "\x00\x01garbage"])
def test_a_corrupt_manifest_is_reported_with_its_path(tmp_path, capsys, no_submit, manifest):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(manifest)
    assert cli.main(["status", str(out)]) == 2
    assert f"{out / 'sweep.json'}: not a sweep manifest" in capsys.readouterr().err
    path = sweep_file(tmp_path, f"{GRID}[pruners.dense]\n")
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 2  # never overwritten
    assert f"{out / 'sweep.json'}: not a sweep manifest" in capsys.readouterr().err
    assert (out / "sweep.json").read_text() == manifest and not no_submit


@pytest.mark.parametrize("job", ["3", '{"job_id": [1]}', '{"job_id": "1", "earlier_jobs": 5}'])
def test_a_corrupt_job_record_counts_as_absent_and_is_replaced(tmp_path, job, monkeypatch):
    spec = load_sweep(sweep_file(tmp_path, f"{GRID}[pruners.dense]\n"))
    out = tmp_path / "out"
    (out / ".jobs").mkdir(parents=True)
    (out / ".jobs" / f"{spec.cells[0].run_id}.json").write_text(job)
    if "earlier_jobs" in job:  # a well-formed id whose list of earlier jobs is not a list
        monkeypatch.setattr(local_executor, "_alive", lambda record: False)
    states = [s.state for s in status.cell_statuses(out, spec.cells)]
    assert states == ["stopped" if "earlier_jobs" in job else "missing"]
    monkeypatch.setattr(local_executor.submitit, "LocalExecutor", FakeLocalExecutor)
    run_sweep(spec, out, wait=False, progress=False)
    record = io.read_json(out / ".jobs" / f"{spec.cells[0].run_id}.json")
    assert record["job_id"] == "424242" and isinstance(record["earlier_jobs"], list)


class FakeLocalExecutor:
    """submitit.LocalExecutor that starts nothing: its jobs have a pid no process has."""

    def __init__(self, folder, **kwargs):
        self.folder = Path(folder)

    def update_parameters(self, **kwargs):
        pass

    def submit(self, fn):
        class Job:
            job_id = "424242"
            paths = type("P", (), {"stdout": self.folder / "424242" / "out"})()

        return Job()


def test_gather_output_that_is_a_folder_exits_2_before_reading(tmp_path, capsys):
    io.write_json(tmp_path / "runs" / "r" / "result.json", _full(ONE_EPOCH, run_id="r"))
    (tmp_path / "table").mkdir()
    assert cli.main(["gather", str(tmp_path / "runs"), "-o", str(tmp_path / "table")]) == 2
    table = tmp_path / "table"
    assert f"-o {table}: {table} is a folder; give a file name" in capsys.readouterr().err
    assert files_under(tmp_path / "table") == []


def test_a_garbage_history_parquet_is_reported_with_its_path(tmp_path, capsys):
    io.write_json(tmp_path / "runs" / "r" / "result.json", _full(ONE_EPOCH, run_id="r"))
    table = tmp_path / "results.parquet"
    assert cli.main(["gather", str(tmp_path / "runs"), "-o", str(table)]) == 0
    results.history_path(table).write_bytes(b"PAR1 garbage")
    with pytest.raises(ConfigError, match=r"results\.history\.parquet: not a readable parquet file"):
        results.read(table)
    assert cli.main(["leaderboard", str(table), "-o", str(tmp_path / "lb")]) == 2
    assert "results.history.parquet: not a readable parquet file" in capsys.readouterr().err


def test_gather_follows_symlink_cycles_once(tmp_path):
    runs = tmp_path / "runs"
    io.write_json(runs / "a" / "r" / "result.json", _full(ONE_EPOCH, run_id="r"))
    (runs / "a" / "loop").symlink_to(runs, target_is_directory=True)
    (runs / "a" / "loop2").symlink_to(runs / "a", target_is_directory=True)
    (runs / "alias").symlink_to(runs / "a" / "r", target_is_directory=True)
    t0 = time.perf_counter()
    g = results.gather(runs)
    assert time.perf_counter() - t0 < 5
    assert list(g.runs["run_id"]) == ["r"] and not g.duplicates and not g.skipped


# -------------------------------------------------------------------- sweeps that never lose a cell


def test_two_sweeps_sharing_an_out_folder_keep_both_in_the_manifest(tmp_path, capsys, no_submit):
    a = sweep_file(tmp_path, f'name = "a"\n{GRID}[pruners.dense]\n', "a.toml")
    b = sweep_file(tmp_path, f'name = "b"\n{GRID}seeds = [0, 1]\n[pruners.gmp]\n', "b.toml")
    out = tmp_path / "out"
    for path in (a, b):
        assert cli.main(["sweep", str(path), "--out", str(out), "--no-wait"]) == 0
    manifest, cells = status.read_manifest(out)
    expected = {c.run_id for path in (a, b) for c in load_sweep(path).cells}
    assert {c.run_id for c in cells} == expected and len(expected) == 3
    assert [s["name"] for s in manifest["sweeps"]] == ["a", "b"]
    capsys.readouterr()
    assert cli.main(["status", str(out)]) == 0
    assert "sweep a, b, 3 cells" in capsys.readouterr().out


def test_force_retrains_a_finished_run_keeping_the_old_result(tmp_path, capsys, no_submit):
    out = tmp_path / "runs"
    argv = ["run", "--out", str(out), "--quiet", "--epochs", "1", "--max-steps", "3"]
    assert cli.main(argv) == 0
    folder = next(out.iterdir())
    first = json.loads((folder / "result.json").read_text())
    assert isinstance(first["git_dirty"], bool | None) and "git_dirty" in first
    assert cli.main(argv) == 0  # cached
    assert json.loads((folder / "result.json").read_text()) == first
    assert cli.main([*argv, "--force"]) == 0
    again = json.loads((folder / "result.json").read_text())
    assert again["started_at"] >= first["started_at"] and again["resumed"] is False
    assert json.loads((folder / "result.replaced.json").read_text()) == first
    # a sweep: --force resubmits finished cells (their results set aside), never running ones
    spec = load_sweep(sweep_file(tmp_path, f'{GRID}seeds = [0, 1]\n[budget]\nepochs = 1\nmax_steps = 3\n'
                                 "[pruners.dense]\n"))
    for cell in spec.cells:
        run(cell, tmp_path / "sw")
    run_sweep(spec, tmp_path / "sw", wait=False, progress=False)
    assert no_submit == [[]]
    run_sweep(spec, tmp_path / "sw", wait=False, progress=False, force=True)
    assert no_submit[1] == spec.cells
    assert all((tmp_path / "sw" / c.run_id / "result.replaced.json").exists() for c in spec.cells)
    assert not any((tmp_path / "sw" / c.run_id / "result.json").exists() for c in spec.cells)


def test_gather_warns_when_a_table_mixes_code_versions(tmp_path):
    sha = "1" * 40
    io.write_json(tmp_path / "a" / "result.json", _full(ONE_EPOCH, run_id="a", git_sha=sha, git_dirty=False))
    io.write_json(tmp_path / "b" / "result.json", _full(ONE_EPOCH, run_id="b", git_sha=sha, git_dirty=True))
    report = results.gather(tmp_path).report()
    assert "warning: these runs come from 2 code version(s): " in report
    assert "1111111111 (uncommitted changes): 1 runs" in report and "--force" in report
    io.write_json(tmp_path / "b" / "result.json", _full(ONE_EPOCH, run_id="b", git_sha=sha, git_dirty=False))
    assert "warning" not in results.gather(tmp_path).report()


def _job_record(out: Path, cell: RunConfig) -> dict | None:
    return io.read_json(out / ".jobs" / f"{cell.run_id}.json")


def test_sigint_to_bench_sweep_stops_its_jobs_and_a_rerun_resumes_the_cell(tmp_path):
    """Ctrl-C (SIGINT to the `bench sweep` process alone) stops its local job, as its message says;
    the cell is then `stopped`, and re-running the sweep (no flag) resumes it from its checkpoint."""
    # far more epochs than the test lasts: the run must still be training when the signal comes
    sweep_text = f'{GRID}[budget]\nepochs = 20000\n[pruners.dense]\n'
    path = sweep_file(tmp_path, sweep_text)
    (cell,) = load_sweep(path).cells
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as in a terminal's foreground process: a shell starts background jobs (`pytest &`,
    # nohup) with SIGINT ignored, and Python then never raises KeyboardInterrupt
    sweep = subprocess.Popen([sys.executable, "-m", "bench.cli", "sweep", str(path), "--out", str(out)],
                             stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + patience(120)
    while not (out / cell.run_id / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    job = _job_record(out, cell)
    assert job and local_executor._alive(job), "the job never started"
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=patience(120))
    assert sweep.returncode == 130 and "its local jobs were stopped" in err
    deadline = time.monotonic() + patience(60)
    while local_executor._alive(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not local_executor._alive(job), "the local job kept training after the sweep was interrupted"
    (state,) = status.cell_statuses(out, [cell])
    assert state.state == "stopped"
    # the re-run resumes it; a shorter budget would be another cell, so stop it after one more epoch
    done_before = io.load_checkpoint(out / cell.run_id / "checkpoint.pt")["epoch"]
    assert 1 <= done_before < 20000
    spec = load_sweep(sweep_file(tmp_path, sweep_text, "s.toml"))
    run_sweep(spec, out, wait=False, progress=False)
    job = _job_record(out, cell)
    try:
        deadline = time.monotonic() + patience(120)
        while time.monotonic() < deadline:
            ckpt = io.load_checkpoint(out / cell.run_id / "checkpoint.pt")
            if ckpt and ckpt["epoch"] > done_before:
                break
            time.sleep(0.2)
        assert ckpt["epoch"] > done_before and len(ckpt["history"]) == ckpt["epoch"]  # resumed, not restarted
        assert status.cell_statuses(out, [cell])[0].state == "running"
    finally:
        _kill_tree(int(job["job_id"]))


def patience(seconds: float) -> float:
    """`seconds` on an idle machine, scaled by the load per core: a busy 2-core machine running
    other work is slower by that much, and a timeout should not turn that into a failure."""
    return seconds * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _kill_tree(pid: int) -> None:
    """SIGKILL a local job: submitit's controller process and the task processes it started."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # its parent is the controller
            children.append(int(stat.parent.name))
    for p in [pid, *children]:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)


# -------------------------------------------------------------------------------- property test

VALID = st.sampled_from(["0.5", "0.01", "1", "2", "[0, 1]", '"auto"', "0.9"])
HOSTILE = VALID | st.sampled_from([
    "0", "1", "-1", "0.5", "1e-300", "1e300", "inf", "-inf", "nan", "2.5", str(2**40), str(2**70), "", "x",
    "true", "[1, 2]", '"a\\nb"', '"cuda"', '"cuda:99"', '"cpu"', f'"{"n" * 300}"',
])
SWEEP_KEYS = {
    "top": ["name", "device", "max_cells", "data_dir"],
    "budget": ["epochs", "lr", "weight_decay", "momentum", "batch_size", "max_steps"],
    "grid": ["seeds"],
    "grda": ["c", "mu"],
    "vd": ["kl_weight"],
}


@st.composite
def sweep_texts(draw):
    """A sweep file with a few hostile values in places users put them."""
    parts: dict[str, list[str]] = {k: [] for k in SWEEP_KEYS}
    for table, keys in SWEEP_KEYS.items():
        for key in draw(st.lists(st.sampled_from(keys), max_size=1)):
            value = draw(HOSTILE)
            if value:
                parts[table].append(f"{key} = {value}")
    return "\n".join([
        *parts["top"], "[budget]", *parts["budget"], "[grid]", 'models = ["mlp"]', 'datasets = ["digits"]',
        *parts["grid"], "[pruners.grda]", *parts["grda"], "[pruners.vd]", *parts["vd"],
    ]) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=sweep_texts(), out=st.sampled_from(["o", "o", "o", "o\nx", "f", "f/o"]))
def test_property_sweep_files_exit_0_or_2_and_create_nothing_on_2(tmp_path_factory, text, out):
    root = tmp_path_factory.mktemp("p")
    (root / "f").write_text("a file")
    path = sweep_file(root, text)
    before = files_under(root)
    submitted = []
    original = local_executor.Local.submit
    local_executor.Local.submit = lambda self, cells, o, name: submitted.append(cells) or []
    try:
        code = cli.main(["sweep", str(path), "--out", str(root / out), "--no-wait"])
    finally:
        local_executor.Local.submit = original
    assert code in (0, 2)
    if code == 2:
        assert files_under(root) == before and not submitted
    else:
        assert (root / out / "sweep.json").exists() and submitted


RUN_VALUES = {
    "--lr": ["0.1", "1e30", "1e300", "inf", "nan", "-1", "0"],
    "--weight-decay": ["0", "1e300", "inf", "-1"],
    "--seed": ["0", "-1", str(MAX_SEED), str(MAX_SEED + 1), str(2**70)],
    "--set": ["c=0.01", "c=inf", "c=-1", "mu=nan", "mu=0.5"],
    "--device": ["cpu", "auto", "cuda:99", "gpu"],
}


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in RUN_VALUES.items()}))
def test_property_run_values_exit_0_or_2_and_create_nothing_on_2(tmp_path_factory, values):
    root = tmp_path_factory.mktemp("r")
    flags = [x for k, v in values.items() for x in (k, v)]
    out = root / "runs"
    code = cli.main(["run", "--pruner", "grda", "--epochs", "1", "--max-steps", "2", "--quiet", *flags,
                     "--out", str(out)])
    if code == 2:
        assert not out.exists()
    else:  # trained: ok, or diverged or failed (exit 1) at a huge learning rate, recorded
        (folder,) = out.iterdir()
        record = json.loads((folder / "result.json").read_text())
        assert (code, record["status"]) in ((0, "ok"), (1, "diverged"), (1, "failed"))
