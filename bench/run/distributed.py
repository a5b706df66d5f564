"""Device, thread and rank helpers of a run: which device, how many CPU threads, which rank of how
many, and the seeds and collective device that follow from them."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from torch import nn

from bench.config import RunConfig


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA if present, else CPU. `auto` and `cuda` mean this process's current CUDA
    device, which a multi-rank job sets to its local rank's (bench.executors.base.RunJob)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)  # a CUDA device where there is none: callers check before using it


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank `rank`'s own randomness (dropout, noise) in `epoch`: distinct per rank."""
    return (seed * 1_000_003 + epoch) * 10_007 + rank + 1


def set_threads(threads: int) -> int:
    """Torch's CPU threads for this process (`threads`; 0 keeps torch's default); returns the
    number in use. One thread per run is the default: several runs on a few cores otherwise
    oversubscribe them and each runs many times slower."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def configure_backends(config: RunConfig, device: torch.device) -> None:
    """Process-wide numerics for this run: deterministic algorithms or not; TF32 matrix products
    for fp32 on CUDA (bf16 autocast needs none)."""
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    if torch.are_deterministic_algorithms_enabled() != config.deterministic:
        torch.use_deterministic_algorithms(config.deterministic)  # imports torch._inductor: ~0.8 s
    torch.backends.cudnn.benchmark = device.type == "cuda" and not config.deterministic
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


# How long a rank waits in a collective for the others. Longer than any work one rank does alone
# while the others wait: rank 0 listing ImageNet's 1.28M files on a network file system, writing
# a checkpoint, measuring the speed-up. torch's defaults (10 min for NCCL) are shorter than a slow
# scan; a real hang still ends, with an error, within this time.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)


def init_group(backend: str) -> None:
    """Join this job's torch.distributed group (its rank and size from the environment)."""
    torch.distributed.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` (several ranks) with its BatchNorm layers as SyncBatchNorm on GPUs: statistics over
    the global batch, not each rank's slice, so a run computes the same for any number of GPUs
    and a resume with another GPU count continues the same training; the GPU count stays out of
    the run's identity. In place: the parameters and buffers are the same tensors. torch has no
    SyncBatchNorm on CPUs: CPU ranks (a test set-up) keep per-rank statistics."""
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def dist_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised (a multi-task job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def collective_device() -> torch.device:
    """Where tensors of a collective live: NCCL needs them on the rank's GPU."""
    nccl = torch.distributed.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def gather_cat(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """The ranks' tensors concatenated in rank order (each rank's share of the test set, say);
    the tensor itself with one rank."""
    if world == 1:
        return tensor
    parts: list[torch.Tensor | None] = [None] * world
    torch.distributed.all_gather_object(parts, tensor.cpu())
    return torch.cat([p for p in parts if p is not None])


def max_over_ranks(value: int, world: int) -> int:
    """The largest of the ranks' `value`s (the value itself with one rank)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=collective_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())
