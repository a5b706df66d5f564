"""Sweeps on the real single-node SLURM test cluster (`bash slurm/cluster/start.sh`): a sweep is
one job array and a second submission submits nothing; a job requeued mid-run resumes to the
result of an uninterrupted run; a cancelled job's cell is reported stopped, not waited on, and
re-running the sweep resubmits it; an invalid
file submits nothing. Set PRUNEBENCH_NO_SLURM=1 to skip them (a failing start is an error).
About 2-3 minutes on the 2-core VM."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from bench import cli, executors
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.executors import slurm as slurm_executor
from bench.io import read_json
from bench.run.job import run
from bench.spec import load_sweep
from bench.status import wait_for
from bench.sweep import run_sweep

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


def _slurm_test() -> executors.Executor:
    return executors.create("slurm", {"profile": "local-test"})



def sweep_file(tmp_path: Path, epochs: int, batch_size: int, settings: str) -> Path:
    name = f"t{uuid.uuid4().hex[:8]}"  # unique job name, to count this test's jobs
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
[budget]
epochs = {epochs}
batch_size = {batch_size}
lr = 0.05
[grid]
models = ["mlp"]
datasets = ["digits"]
{settings}
""")
    return path


def arrays_submitted(name: str) -> set[str]:
    """Ids of the jobs (an array counts once) submitted under the sweep's job name."""
    queued = subprocess.run(
        ["squeue", "-h", "-r", "-n", f"bench-{name}", "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout.split()
    acct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-S", "2000-01-01", "--name", f"bench-{name}", "-o", "JobID"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {j.split("_")[0] for j in queued + acct}


def arrays_settled(name: str, expected: set[str], timeout: float = 60) -> set[str]:
    """`arrays_submitted`, polled until it shows `expected`: a cancelled job leaves squeue before
    the accounting records it (a second or more on a loaded machine)."""
    deadline = time.time() + timeout
    while (seen := arrays_submitted(name)) != expected and time.time() < deadline:
        time.sleep(1)
    return seen


def history(folder: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((folder / "history.csv").open()))
    return [{k: r[k] for k in ("epoch", "step", "loss", "val_top1", "sparsity")} for r in rows]


def job_of(out: Path, run_id: str) -> str:
    return read_json(out / ".jobs" / f"{run_id}.json")["job_id"]


def test_sweep_is_one_array_and_a_second_submission_submits_nothing(cluster, tmp_path, cleanup):
    spec = load_sweep(
        sweep_file(tmp_path, 2, 32, "[pruners.grda]\nc = [0.01, 0.02]\nmu = 0.6\n[pruners.dense]")
    )
    out = tmp_path / "out"
    cleanup.append(out)
    records = run_sweep(spec, out, _slurm_test(), wait=True, progress=False)
    assert [r["status"] for r in records] == ["ok"] * 3
    (array,) = arrays_submitted(spec.name)
    assert sorted(r["slurm_job_id"] for r in records) == [f"{array}_{i}" for i in range(3)]
    # the script submitit gave sbatch is the one the golden-file test pins
    script = (out / ".submitit" / array / f"{array}_submission.sh").read_text()
    profile = slurm_executor.load_profile("local-test")
    assert script == slurm_executor.sbatch_script(profile, spec.name, out.absolute() / ".submitit" / "%j", 3)

    jobs = {p.name: p.read_text() for p in (out / ".jobs").iterdir()}
    again = run_sweep(spec, out, _slurm_test(), wait=True, progress=False)
    assert again == records
    assert arrays_submitted(spec.name) == {array}
    assert {p.name: p.read_text() for p in (out / ".jobs").iterdir()} == jobs


def test_job_requeued_mid_run_ends_with_the_uninterrupted_result(cluster, tmp_path, cleanup):
    # 150 epochs (0.07-0.5 s each): the job must outlive the 2 s between requeue's SIGTERM (which submitit
    # ignores) and its SIGKILL (KillWait in start.sh), or it ends before it can be requeued
    spec = load_sweep(sweep_file(tmp_path, 150, 8, "[pruners.grda]\nc = 0.02\nmu = 0.6"))
    (cell,) = spec.cells
    out = tmp_path / "out"
    cleanup.append(out)
    run_sweep(spec, out, _slurm_test(), wait=False, progress=False)
    job = job_of(out, cell.run_id)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job (cpus_per_task = 1): float sums depend on the thread count
    with ThreadPoolExecutor(1) as pool:
        reference = pool.submit(run, cell, tmp_path / "reference")  # meanwhile, uninterrupted
        deadline = time.time() + 240
        while not (out / cell.run_id / "checkpoint.pt").exists():
            assert time.time() < deadline, "the job wrote no checkpoint"
            time.sleep(0.2)
        subprocess.run(["scontrol", "requeue", job], check=True)
        assert not (out / cell.run_id / "result.json").exists(), "the job ended before the requeue"
        (status,) = wait_for(out, spec.cells, 1.0, progress=False)
        reference = reference.result()
    torch.set_num_threads(threads)
    result = read_json(out / cell.run_id / "result.json")
    assert status.state == "done" and result["resumed"] is True  # it did stop and resume
    assert history(out / cell.run_id) == history(tmp_path / "reference" / cell.run_id)
    for key in ("top1", "top5", "sparsity", "sparsity_all", "steps", "samples_seen", "layer_sparsity"):
        assert result[key] == reference[key], key
    accounting = subprocess.run(
        ["sacct", "-j", job.split("_")[0], "-X", "-n", "-P", "--duplicates", "-o", "State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "REQUEUED" in accounting


def test_cancelled_job_is_reported_stopped_and_resubmitted_by_a_rerun(cluster, tmp_path, cleanup):
    spec = load_sweep(sweep_file(tmp_path, 500, 8, "[pruners.dense]"))
    (cell,) = spec.cells
    out = tmp_path / "out"
    cleanup.append(out)
    run_sweep(spec, out, _slurm_test(), wait=False, progress=False)
    subprocess.run(["scancel", job_of(out, cell.run_id)], check=True)
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, "-m", "bench.cli", "status", str(out), "--wait", "--poll", "1"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 1, p.stderr
    assert "stopped 1" in p.stdout and "CANCELLED" in p.stdout and "resume the stopped ones" in p.stdout
    assert time.time() - t0 < 120
    first = job_of(out, cell.run_id)
    assert arrays_settled(spec.name, {first}) == {first}
    run_sweep(spec, out, _slurm_test(), wait=False, progress=False)  # a stopped cell is resubmitted
    second = job_of(out, cell.run_id)
    assert second != first and arrays_settled(spec.name, {first, second}) == {first, second}


def test_invalid_sweep_submits_nothing(cluster, tmp_path, capsys):
    path = sweep_file(tmp_path, 0, 32, "[pruners.grda]\nmu = 2.0\nrecipe = \"paper\"")
    name = path.stem
    out = tmp_path / "out"
    assert (
        cli.main(["sweep", str(path), "--executor", "slurm", "--profile", "local-test", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert f"3 errors in {path}" in err
    for line in (
        "[budget] epochs = 0: must be > 0",
        "[pruners.grda] mu = 2.0: must be in (0, 1)",
        "[pruners.grda] recipe: set it in [budget]: it is the same for every pruner of a section",
    ):
        assert line in err
    assert not out.exists()
    assert arrays_submitted(name) == set()


def test_a_checkpoint_cadence_longer_than_a_run_is_refused_before_anything_is_written(tmp_path, capsys):
    """A requeued run resumes from its last checkpoint: with `checkpoint_every_s` at or above the
    profile's usable time (10 min less the 90 s USR2 lead) every requeue would start over."""
    ex = executors.create("slurm", {"profile": "local-test"})
    ex.check_cells([RunConfig(checkpoint_every_s=60.0)])  # well below: accepted
    with pytest.raises(ConfigError, match=r"checkpoint_every_s = 510: .* valid choices: 0 \(every epoch\) "
                                          r"up to below 510"):
        ex.check_cells([RunConfig(checkpoint_every_s=510.0)])
    path = sweep_file(tmp_path, 1, 32, "[pruners.grda]")
    path.write_text("checkpoint_every_s = 600\n" + path.read_text())
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        argv = ["sweep", str(path), "--executor", "slurm", "--profile", "local-test", "--out", str(out)]
        assert cli.main(argv + extra) == 2
        assert "checkpoint_every_s = 600" in capsys.readouterr().err
    assert not out.exists()
