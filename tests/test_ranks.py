"""What several ranks must agree on, with two gloo processes on CPU: whether and how to resume a
checkpoint (a bad one must not split them into different set-ups and hang them), who writes a
failure record, the data set's file listing, and each rank's share of the validation split.

Every group here has a short collective timeout: a rank left waiting fails the test instead of
hanging it."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.io import load_checkpoint, read_json, save_checkpoint
from bench.run.job import record_failure, run
from bench.run.trainer import Trainer
from bench.validate import check_config

TIMEOUT_S = 30


def small(**budget: Any) -> RunConfig:
    return check_config(RunConfig(pruner="grda", budget=Budget(**{"epochs": 2, **budget}), device="cpu"))


def _rank_main(rank: int, store: str, out: str, fn: Callable[..., Any], args: tuple) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                                         timeout=timedelta(seconds=TIMEOUT_S))
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(fn(rank, *args)))
    except BaseException:
        Path(out, f"rank{rank}.err").write_text(traceback.format_exc())
        raise
    finally:
        torch.distributed.destroy_process_group()


def two_ranks(tmp: Path, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """`fn(rank, *args)` in two forked processes of one gloo group; their JSON results by rank."""
    ctx = mp.get_context("fork")
    store = str(tmp / "store")
    procs = [ctx.Process(target=_rank_main, args=(r, store, str(tmp), fn, args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(3 * TIMEOUT_S)
        if p.is_alive():
            p.kill()
    errors = [f.read_text() for f in sorted(tmp.glob("rank*.err"))]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0, 0]
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


# ------------------------------------------------------------------------------ checkpoints


def _run(rank: int, out: str) -> dict:
    return run(small(), out)


def _spoil(tmp: Path, how: Callable[[dict], None]) -> tuple[dict, Path]:
    """A finished 2-epoch run whose checkpoint is set back to epoch 1 and spoiled by `how`."""
    first = run(small(), tmp / "out")
    run_dir = tmp / "out" / first["run_id"]
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    ckpt["epoch"], ckpt["step"], ckpt["history"] = 1, ckpt["step"] // 2, ckpt["history"][:1]
    how(ckpt)
    save_checkpoint(run_dir / "checkpoint.pt", ckpt)
    (run_dir / "result.json").unlink()
    return first, run_dir


def _rank1_cannot_restore(ckpt: dict) -> None:
    """Only rank 1 fails: its RNG state is not one (rank 0's is fine)."""
    ckpt["rng"] = [ckpt["rng"][0], {"cpu": torch.zeros(3, dtype=torch.uint8), "cuda": None}]


def _incomplete(ckpt: dict) -> None:
    del ckpt["optimizer"]


@pytest.mark.parametrize("spoil", [_rank1_cannot_restore, _incomplete], ids=["one-rank-fails", "incomplete"])
def test_a_bad_checkpoint_under_two_ranks_is_set_aside_once_and_both_start_over(tmp_path, spoil):
    """Both ranks take the same branch (train from scratch, in the same DDP set-up) instead of one
    resuming while the other starts over, which hangs them; the result is the uninterrupted run's."""
    first, run_dir = _spoil(tmp_path, spoil)
    results = two_ranks(tmp_path, _run, str(tmp_path / "out"))
    assert results[0]["status"] == results[1]["status"] == "ok"
    assert not results[0]["resumed"] and not results[1]["resumed"]
    assert results[0]["epochs_completed"] == 2
    assert (run_dir / "checkpoint.bad.pt").exists() and (run_dir / "checkpoint.pt").exists()
    assert read_json(run_dir / "result.json")["run_id"] == first["run_id"]


def test_a_good_checkpoint_is_resumed_by_both_ranks(tmp_path):
    _spoil(tmp_path, lambda ckpt: None)
    results = two_ranks(tmp_path, _run, str(tmp_path / "out"))
    assert results[0]["resumed"] and results[1]["resumed"] and results[0]["epochs_completed"] == 2


# --------------------------------------------------------------------------- failure record


def _fail_on_every_rank(rank: int, out: str) -> str:
    """Each rank fails with its own error, then (as a job does) records it; rank 1 after rank 0."""
    def boom(self: Trainer, started: str) -> dict:
        raise RuntimeError(f"boom on rank {rank}")

    Trainer.fit = boom  # this forked process's own class
    config = small()
    try:
        run(config, out)
    except RuntimeError as e:
        error = e
    torch.distributed.barrier()
    if rank == 1:
        record_failure(config, Path(out) / config.run_id, error)
    torch.distributed.barrier()
    return str(error)


def test_the_failure_record_is_rank_zeros(tmp_path):
    errors = two_ranks(tmp_path, _fail_on_every_rank, str(tmp_path / "out"))
    assert errors == ["boom on rank 0", "boom on rank 1"]
    record = read_json(tmp_path / "out" / small().run_id / "result.json")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: boom on rank 0"


# ----------------------------------------------------------------------- listing, val shard


def _listings(rank: int, root: str) -> Any:
    from bench.data import imagenet

    if rank == 1:  # only rank 0 may walk the files
        imagenet._scan = lambda folder: pytest.fail("rank 1 scanned the folder")
    listing = imagenet.shared_listings(os.path.join(root, "imagenet"))
    try:
        imagenet.shared_listings(os.path.join(root, "nowhere"))
    except ConfigError as e:
        return {"listing": listing["train"][2], "missing": str(e)}
    return {"listing": listing["train"][2], "missing": None}


def test_the_image_folder_is_listed_by_rank_zero_and_shared(tmp_path):
    for cls in ("n01", "n02"):
        for split in ("train", "val"):
            (tmp_path / "imagenet" / split / cls).mkdir(parents=True)
            for i in range(2):
                (tmp_path / "imagenet" / split / cls / f"{i}.png").write_bytes(b"")
    r0, r1 = two_ranks(tmp_path, _listings, str(tmp_path))
    assert r0["listing"] == r1["listing"] and len(r0["listing"]) == 4
    assert r0["missing"] == r1["missing"] and "files not found" in r0["missing"]  # an error, no hang


def _validation(rank: int, run_dir: str) -> dict:
    tr = Trainer(small(), Path(run_dir), progress=False)
    tr.train_epoch(steps=2)
    sharded = tr.evaluate(tr.model, "val", keep=True)
    gathered = tr.predictions["val"].tolist()
    shard = sum(len(y) for _, y in tr.data.val_batches(64, shard=(rank, 2)))
    tr.world = 1  # the same model, the whole validation split in this process
    return {"sharded": sharded, "single": tr.evaluate(tr.model, "val", keep=True), "shard": shard,
            "num_val": tr.data.num_val, "gathered": gathered, "whole": tr.predictions["val"].tolist()}


def test_each_rank_evaluates_its_share_of_the_validation_split(tmp_path):
    for r in two_ranks(tmp_path, _validation, str(tmp_path)):
        assert r["sharded"] == r["single"] and r["gathered"] == r["whole"]
        assert 0 < r["shard"] <= (r["num_val"] + 1) // 2  # decodes only about half



def test_batchnorm_is_synchronised_across_gpu_ranks():
    """BatchNorm over the global batch on GPUs (no GPU count in the run's identity); in place, so
    the optimizer's parameters and the saved buffers stay the model's."""
    from bench.models.resnet_cifar import resnet20
    from bench.run.distributed import sync_batchnorm

    def norms(m: torch.nn.Module) -> set[str]:
        return {type(x).__name__ for x in m.modules() if "BatchNorm" in type(x).__name__}

    model = resnet20(10)
    params, buffers = list(model.parameters()), list(model.buffers())
    assert sync_batchnorm(model, torch.device("cpu")) is model and norms(model) == {"BatchNorm2d"}
    assert sync_batchnorm(model, torch.device("cuda")) is model and norms(model) == {"SyncBatchNorm"}
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))
    assert all(a is b for a, b in zip(buffers, model.buffers(), strict=True))
