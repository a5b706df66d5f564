"""The multi-rank path on CPUs (two gloo processes, forked): per-rank randomness, the run-folder
lock without collective timeouts, sharded data and evaluation; and what a GPU run adds that a CPU
can check: bf16 autocast, per-rank RNG and peak memory across resumes, the dry run's time-limit
refusal and the committed paper sweeps' fit to the profiles their READMEs name."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from bench import cli
from bench.config import Budget, RunConfig
from bench.data import TensorData
from bench.data.imagenet import FolderData
from bench.errors import ConfigError
from bench.estimate import CellTime, Estimate
from bench.executors.base import MAX_TIMEOUTS
from bench.executors.slurm import Slurm, SlurmOptions, load_profile, max_step_s
from bench.io import load_checkpoint, save_checkpoint
from bench.registry import DATASETS
from bench.run.job import run
from bench.run.trainer import Trainer
from bench.spec import load_sweep
from bench.validate import check_config

REPO = Path(__file__).resolve().parents[1]


def small(**budget) -> RunConfig:
    return check_config(RunConfig(pruner="grda", budget=Budget(**{"epochs": 1, **budget}), device="cpu"))


def _rank_main(rank: int, world: int, store: str, out: str, fn_name: str, args: tuple, timeout_s: float,
               ) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                                         timeout=timedelta(seconds=timeout_s))
    try:
        result = globals()[fn_name](rank, *args)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    except BaseException:
        Path(out, f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        torch.distributed.destroy_process_group()


def start_ranks(tmp: Path, fn_name: str, *args, world: int = 2, timeout_s: float = 60) -> list[mp.Process]:
    """`fn_name(rank, *args)` in `world` forked processes of one gloo group; results in tmp/rank*.json."""
    ctx = mp.get_context("fork")
    store = tmp / "store"
    procs = [ctx.Process(target=_rank_main, args=(r, world, str(store), str(tmp), fn_name, args, timeout_s))
             for r in range(world)]
    for p in procs:
        p.start()
    return procs


def join_ranks(tmp: Path, procs: list[mp.Process], world: int = 2) -> list:
    for p in procs:
        p.join(120)
    errors = [f.read_text() for f in sorted(tmp.glob("rank*.err"))]
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(world)]


# ----------------------------------------------------------------------------------- per rank


def _draws(rank: int, run_dir: str) -> dict:
    tr = Trainer(small(), Path(run_dir), progress=False)
    out = {}
    for epoch in (0, 1):
        tr.epoch = epoch
        tr.seed_epoch()
        out[epoch] = torch.rand(4).tolist()
    return out


def test_ranks_draw_different_noise_each_epoch(tmp_path):
    draws = join_ranks(tmp_path, start_ranks(tmp_path, "_draws", str(tmp_path)))
    r0, r1 = draws
    assert r0["0"] != r1["0"] and r0["1"] != r1["1"]  # per rank
    assert r0["0"] != r0["1"]  # per epoch
    again = _draws(0, str(tmp_path))  # a function of (seed, epoch, rank): the same draws again
    assert again[0] == r0["0"]


def _run(rank: int, out: str) -> dict:
    return run(small(epochs=2), out)


def test_second_multirank_run_waits_for_the_lock_then_returns_the_first_result(tmp_path):
    """The folder's lock is held (by a first run) for three times the group's collective timeout;
    the group polls, then returns the first run's result instead of timing out or training."""
    first = run(small(epochs=2), tmp_path / "first")
    run_dir = tmp_path / "shared" / first["run_id"]
    run_dir.mkdir(parents=True)
    with open(run_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = start_ranks(tmp_path, "_run", str(tmp_path / "shared"), timeout_s=2)
        time.sleep(6)
        assert all(p.is_alive() for p in procs)  # still waiting, not failed
        shutil.copy(tmp_path / "first" / first["run_id"] / "result.json", run_dir / "result.json")
        fcntl.flock(lock, fcntl.LOCK_UN)
    results = join_ranks(tmp_path, procs)
    assert results[0] == results[1] == first
    assert not (run_dir / "checkpoint.pt").exists()  # nothing was trained


# ------------------------------------------------------------------------------------ sharded


def _evaluate_both_ways(rank: int, run_dir: str) -> dict:
    tr = Trainer(small(batch_size=64), Path(run_dir), progress=False)
    tr.train_epoch(steps=3)
    sharded = tr.evaluate(tr.model, keep=True)
    gathered = tr.predictions["test"].tolist()
    tr.world = 1  # the same model, the whole test set in this process
    single = tr.evaluate(tr.model, keep=True)
    return {"sharded": sharded, "single": single, "samples": tr.samples,
            "predictions_gathered": gathered, "predictions_single": tr.predictions["test"].tolist()}


def test_sharded_evaluation_gives_the_single_process_top1(tmp_path):
    res = join_ranks(tmp_path, start_ranks(tmp_path, "_evaluate_both_ways", str(tmp_path)))
    for r in res:
        assert r["sharded"] == r["single"]
        assert r["samples"] == 3 * 64  # global examples, though each rank loaded half
        # every rank holds the whole test set's predictions, in the data set's order
        assert r["predictions_gathered"] == r["predictions_single"]
    assert res[0]["sharded"] == res[1]["sharded"]
    assert 0.1 < res[0]["sharded"][0] < 1


def test_tensor_data_shards_reassemble_the_global_batches():
    data = TensorData(torch.randn(50, 3), torch.arange(50), torch.randn(21, 3), torch.arange(21), 50)
    whole = list(data.train_batches(8, epoch=2, seed=1))
    parts = [list(data.train_batches(8, epoch=2, seed=1, shard=(r, 3))) for r in range(3)]
    for i, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
    test = torch.cat([y for r in range(2) for _, y in data.test_batches(4, shard=(r, 2))])
    assert torch.equal(test, torch.arange(21))


class _Noisy(torch.utils.data.Dataset):
    """uint8 'images' whose pixels are a random draw (an augmentation) plus the index."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int):
        noise = torch.randint(0, 100, (3, 2, 2), dtype=torch.uint8)
        return noise + i, i


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_loader_shards_and_augmentation_do_not_depend_on_ranks_or_workers(workers):
    """Each rank decodes only its slice of each batch; the images (augmentation included) are
    the single process's, whatever the number of ranks or workers; uint8 normalized on the device."""
    def load(w):
        return FolderData(_Noisy(), _Noisy(), 23, torch.device("cpu"), w, mean=(0.5,) * 3, std=(0.25,) * 3)

    single = list(load(0).train_batches(5, epoch=1, seed=3))
    shards = [list(load(workers).train_batches(5, epoch=1, seed=3, shard=(r, 2))) for r in range(2)]
    for i, (x, y) in enumerate(single):
        assert x.dtype == torch.float32
        assert torch.equal(torch.cat([s[i][1] for s in shards]), y)
        assert torch.equal(torch.cat([s[i][0] for s in shards]), x)
    x0, _ = single[0]
    assert float(x0.max()) <= (255 / 255 - 0.5) / 0.25
    other_epoch = list(load(0).train_batches(5, epoch=2, seed=3))
    assert not torch.equal(other_epoch[0][1], single[0][1])
    test = torch.cat([y for r in range(2) for _, y in load(workers).test_batches(4, shard=(r, 2))])
    assert torch.equal(test, torch.arange(23))


# ------------------------------------------------------------------------ precision, resume


def test_bf16_autocast_runs_end_to_end_on_cpu(tmp_path):
    config = small(epochs=2, precision="bf16")
    assert config.run_id != small(epochs=2).run_id  # precision is part of the run's identity
    record = run(config, tmp_path)
    assert record["status"] == "ok" and record["precision"] == "bf16" and record["gpus"] == 1
    assert record["gpu_type"] is None and record["top1"] > 0.5
    tr = Trainer(config, tmp_path / "t", progress=False)
    x, _ = next(iter(tr.data.train_batches(8, 0, 0)))
    with tr.autocast():
        assert tr.model(x).dtype == torch.bfloat16


def test_fp32_default_keeps_run_ids():
    assert small().run_id == dataclasses.replace(small(), budget=Budget(epochs=1, precision="fp32")).run_id
    with pytest.raises(ConfigError, match=r"budget\.precision = 'fp16': valid choices: fp32, bf16"):
        Budget(precision="fp16")


def test_resume_keeps_the_peak_memory_and_tolerates_fewer_ranks_than_the_writer(tmp_path):
    """A checkpoint written by 3 ranks, with a large peak: one process resumes from it (its own
    rank's RNG state restored, the others dropped) and reports the peak of both segments."""
    config = small(epochs=2)
    first = run(config, tmp_path)
    run_dir = tmp_path / config.run_id
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    # the checkpoint keeps the peak at the last epoch's end; the result's also covers the final evaluation
    assert len(ckpt["rng"]) == 1 and 0 < ckpt["peak_memory_bytes"] <= first["peak_memory_bytes"]
    ckpt["epoch"], ckpt["step"], ckpt["history"] = 1, ckpt["step"] // 2, ckpt["history"][:1]
    ckpt["rng"] = ckpt["rng"] * 3
    ckpt["peak_memory_bytes"] = 10**13
    save_checkpoint(run_dir / "checkpoint.pt", ckpt)
    (run_dir / "result.json").unlink()
    resumed = run(config, tmp_path)
    assert resumed["resumed"] and resumed["status"] == "ok" and resumed["peak_memory_bytes"] == 10**13
    assert resumed["epochs_completed"] == 2


# ------------------------------------------------------------------------ dry run, devices


def _sweep(tmp: Path, epochs: int, device: str = "auto") -> Path:
    f = tmp / "s.toml"
    f.write_text(f'name = "fit"\ndevice = "{device}"\n[budget]\nepochs = {epochs}\n[grid]\nmodels = ["mlp"]\n'
                 'datasets = ["digits"]\n[pruners.grda]\n')
    return f


def test_dry_run_refuses_a_cell_that_cannot_finish_within_the_limit_times_requeues(tmp_path, capsys):
    profile = tmp_path / "short.toml"
    profile.write_text("timeout_min = 2\ncpus_per_task = 1\n")
    argv = ["sweep", str(_sweep(tmp_path, 50_000)), "--dry-run", "--out", str(tmp_path / "out"),
            "--executor", "slurm", "--profile", str(profile)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"profile {profile} (time limit 2 min x {1 + MAX_TIMEOUTS} runs" in err
    assert f"{MAX_TIMEOUTS} requeues" in err and "grda/mlp/digits" in err
    assert not (tmp_path / "out").exists()
    argv[1] = str(_sweep(tmp_path, 2))
    assert cli.main(argv) == 0


def test_cuda_n_with_several_gpus_is_refused_before_anything_is_written(tmp_path, capsys):
    argv = ["sweep", str(_sweep(tmp_path, 1, device="cuda:1")), "--gpus", "2", "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 2
    assert "device = 'cuda:1' with --gpus 2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


PAPER_BOARDS = sorted(p.parent for p in REPO.glob("leaderboards/*/README.md")
                      if "--profile" in p.read_text())


@pytest.mark.parametrize("board", PAPER_BOARDS, ids=lambda p: p.name)
def test_committed_paper_sweeps_fit_the_profile_their_readme_names(board):
    """The README names an existing profile and states the longest step that fits it, which is
    what the dry run's check accepts (and 10% slower is refused)."""
    readme = (board / "README.md").read_text()
    command = next(ln for ln in readme.splitlines() if ln.startswith("bench sweep") and "--profile" in ln)
    name = re.search(r"--profile (\S+)", command).group(1)
    gpus = int(m.group(1)) if (m := re.search(r"--gpus (\d+)", command)) else 1
    profile = load_profile(name)
    assert profile.gpus_per_node > 0
    spec = load_sweep(board / "sweep.toml")
    b = spec.budget
    steps = math.ceil(DATASETS.get(spec.cells[0].dataset).num_train / b.batch_size)
    allowed = max_step_s(b.epochs, steps, profile.timeout_min)
    assert f"at most {allowed:.3g} s" in readme and f"`{name}` ({profile.timeout_min} min" in readme
    executor = Slurm(SlurmOptions(profile=name), tasks=gpus)
    for factor, fits in ((0.99, True), (1.1, False)):
        cell = CellTime(0.0, factor * allowed * steps, b.epochs, steps, "finished runs")
        est = Estimate(0, 0, cell.total_s, "gpu", {}, [], {"x": cell})
        if fits:
            executor.dry_run_check(est)
        else:
            with pytest.raises(ConfigError, match=f"profile {name}"):
                executor.dry_run_check(est)
