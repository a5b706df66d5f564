"""GPU check: a few minutes on one GPU node that measure what the GPU path adds, with ratios.

    python slurm/gpu_check.py --json gpu_check.json          # on a GPU node (srun --gres=gpu:2 ...)

1. resnet20 training step (Trainer.train_step, synthetic CIFAR-shaped data, batch 128) in fp32
   (TF32) and bf16 autocast, channels-last on CUDA: median ms, bf16 speed-up, peak memory.
2. gRDA optimizer step against SGD(momentum=0.9, foreach=True) on ResNet-50's parameters (161
   tensors, 25.6M): gRDA's foreach shrink (the CUDA default) and its per-tensor shrink.
3. With two GPUs: a two-rank NCCL run of resnet20 (one epoch of synthetic data), its wall time and
   top-1 against the same run in one process.
On a machine without CUDA every part that needs it is skipped with a reason (step 1 then runs on
the CPU at batch 16), so the script, and its test, run anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import metrics
from bench.config import Budget, RunConfig
from bench.grda import GRDA
from bench.perf.timing import time_calls
from bench.registry import MODELS
from bench.run.build import build
from bench.run.job import run
from bench.run.trainer import Trainer
from bench.validate import check_config


def resnet20_step(device: str, precision: str, batch: int, steps: int) -> dict[str, Any]:
    """Median ms of whole training steps (after 3 warm-up steps) and the peak memory."""
    budget = Budget(epochs=1, batch_size=batch, momentum=0.9, precision=precision)
    config = check_config(RunConfig(pruner="dense", model="resnet20", dataset="synthetic", device=device,
                                    budget=budget))
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(build(config), Path(tmp))
        x, y = next(iter(tr.data.train_batches(batch, 0, 0)))
        for _ in range(3):
            tr.train_step(x, y)
        metrics.reset_peak_memory(tr.device)
        times = time_calls(lambda: tr.train_step(x, y), steps, tr.device)
        peak = metrics.peak_memory(tr.device)
    return {"precision": precision, "batch": batch, "median_ms": statistics.median(times),
            "peak_memory_bytes": peak, "channels_last": tr.channels_last}


def optimizer_steps(steps: int) -> dict[str, Any]:
    """gRDA (foreach and per-tensor shrink) and SGD-momentum steps on ResNet-50's parameters."""
    dev = torch.device("cuda")
    model = MODELS.get("resnet50").build(1000).to(dev)
    init = [p.detach() for p in model.parameters()]
    grads = [torch.randn_like(p) * 0.01 for p in init]

    def params() -> list[torch.Tensor]:
        ps = [p.clone().requires_grad_() for p in init]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g
        return ps

    opts = {"sgd_momentum": torch.optim.SGD(params(), lr=0.1, momentum=0.9, foreach=True),
            "grda_foreach": GRDA(params(), lr=0.1, c=0.005, mu=0.55, foreach=True),
            "grda_per_tensor": GRDA(params(), lr=0.1, c=0.005, mu=0.55, foreach=False)}
    out: dict[str, Any] = {"tensors": len(init), "params": sum(p.numel() for p in init)}
    for name, opt in opts.items():
        time_calls(opt.step, 5, dev)
        out[f"{name}_ms"] = statistics.median(time_calls(opt.step, steps, dev))
    a = opts["grda_foreach"].param_groups[0]["params"]
    b = opts["grda_per_tensor"].param_groups[0]["params"]
    out["foreach_equals_per_tensor"] = all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    out["grda_foreach_vs_sgd"] = out["grda_foreach_ms"] / out["sgd_momentum_ms"]
    out["grda_per_tensor_vs_foreach"] = out["grda_per_tensor_ms"] / out["grda_foreach_ms"]
    return out


def _two_rank_config() -> RunConfig:
    return check_config(RunConfig(pruner="grda", model="resnet20", dataset="synthetic",
                                  budget=Budget(epochs=1, batch_size=128)))


def _rank(rank: int, store: str, out: str) -> None:
    torch.cuda.set_device(rank)
    torch.distributed.init_process_group("nccl", init_method=f"file://{store}", rank=rank, world_size=2,
                                         timeout=timedelta(minutes=5))
    try:
        t0 = time.perf_counter()
        record = run(_two_rank_config(), out)
        if rank == 0:
            Path(out, "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0, **record}))
    finally:
        torch.distributed.destroy_process_group()


def two_ranks() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_rank, args=(str(Path(tmp) / "store"), str(Path(tmp) / "ddp")), nprocs=2)
        ddp = json.loads((Path(tmp) / "ddp" / "wall.json").read_text())
        t0 = time.perf_counter()
        single = run(_two_rank_config(), Path(tmp) / "single")
        single_s = time.perf_counter() - t0
    return {"two_rank_wall_s": ddp["wall_s"], "one_rank_wall_s": single_s, "two_rank_top1": ddp["top1"],
            "one_rank_top1": single["top1"], "gpus_recorded": ddp["gpus"], "gpu_type": ddp["gpu_type"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", help="write the report here")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    n_gpus = torch.cuda.device_count() if cuda else 0
    report: dict[str, Any] = {"device": metrics.device_name(torch.device("cuda" if cuda else "cpu")),
                              "gpus": n_gpus, "torch": torch.__version__, "skipped": {}}
    device, batch = ("cuda", 128) if cuda else ("cpu", 16)
    steps = {p: resnet20_step(device, p, batch, args.steps if cuda else 2) for p in ("fp32", "bf16")}
    report["resnet20_step"] = steps
    report["bf16_speedup"] = steps["fp32"]["median_ms"] / steps["bf16"]["median_ms"]
    if cuda:
        report["optimizer_step"] = optimizer_steps(args.steps)
    else:
        report["skipped"]["optimizer_step"] = "needs CUDA (the foreach shrink is the CUDA default)"
    if n_gpus >= 2:
        report["two_ranks"] = two_ranks()
    else:
        report["skipped"]["two_ranks"] = f"needs 2 GPUs, found {n_gpus}"
    for k, v in steps.items():
        print(f"resnet20 step {k} batch {v['batch']}: {v['median_ms']:.2f} ms, peak "
              f"{v['peak_memory_bytes'] / 2**20:.0f} MiB, channels-last {v['channels_last']}")
    print(f"bf16 speed-up (fp32 ms / bf16 ms): {report['bf16_speedup']:.2f}x")
    if "optimizer_step" in report:
        o = report["optimizer_step"]
        print(f"gRDA foreach / SGD-momentum step ({o['tensors']} tensors): {o['grda_foreach_vs_sgd']:.2f}x; "
              f"per-tensor / foreach gRDA: {o['grda_per_tensor_vs_foreach']:.2f}x; "
              f"bit-identical: {o['foreach_equals_per_tensor']}")
    if "two_ranks" in report:
        t = report["two_ranks"]
        print(f"two ranks: {t['two_rank_wall_s']:.1f} s (top-1 {t['two_rank_top1']:.3f}) vs one: "
              f"{t['one_rank_wall_s']:.1f} s (top-1 {t['one_rank_top1']:.3f})")
    for k, why in report["skipped"].items():
        print(f"skipped {k}: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
