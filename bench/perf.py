"""`bench perf`: wall time and memory of every pruner against dense SGD with momentum, and the
speed of the harness itself.

Suites (all by default):

- `pruners`: for every registered pruner on the same model and batch, the optimizer/pruner step
  alone and the whole training step (the Trainer's own loop and timers, hooks included), peak
  memory (CUDA allocator; on CPU peak RSS in a fresh process per pruner) and exact state bytes.
- `optimizer`: the gRDA optimizer step on ResNet-18's parameter shapes (11.7M) against
  `torch.optim.SGD(momentum=0.9, foreach=True)` and against a per-parameter loop written like the
  authors' gRDA code (`ReferenceGRDA`), which must give the same weights.
- `harness`: `Trainer.train_epoch` against a bare hand-written loop on the same batches; the
  on-device batched augmentation against a torchvision DataLoader with per-image PIL transforms;
  `bench gather` of 10,000 run folders and a leaderboard from that table.
- `compact`: a model with all-zero channels made physically smaller (`bench.compact`): measured
  inference speed-up beside the FLOPs ratio.

Timings are medians over many calls after a warm-up round, interleaved between the compared
variants in round-robin blocks (the order rotates every round), device-synchronized, and reported
as ratios: absolute times are not comparable between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from bench import metrics
from bench.compact import remove_zero_channels, zero_random_channels
from bench.config import Budget, RunConfig, add_dataclass_flags, dataclass_from_args, parse_sets
from bench.data import TensorData, crop_flip
from bench.errors import ConfigError
from bench.grda import GRDA
from bench.io import write_json
from bench.registry import MODELS, PRUNERS
from bench.train import Trainer, resolve_device
from bench.validate import check_config

SUITES = ("pruners", "optimizer", "harness", "compact")
REFERENCE = "dense"  # the pruner every ratio is taken against (SGD with the budget's momentum)
PERF_MOMENTUM = 0.9  # perf's default budget momentum: the baseline is SGD with momentum
SMALL_RUN = ("mlp", "digits")  # the README's main run, where harness overhead weighs most


@dataclass(frozen=True)
class Sizes:
    """How much to measure. Rounds are interleaved; one more, discarded, round warms up."""

    rounds: int = 7  # pruners suite: rounds of blocks
    train_steps: int = 4  # whole training steps per pruner per round
    opt_steps: int = 10  # optimizer/pruner steps alone per pruner per round
    memory_steps: int = 3  # training steps while peak memory is tracked
    big_params: str = "resnet18"  # optimizer suite: torchvision model whose shapes are used, or "model"
    big_rounds: int = 10
    big_steps: int = 5
    min_seconds: float = 5.0  # each interleaved comparison runs at least this long (after warm-up)
    loop_rounds: int = 10  # harness: Trainer vs bare loop
    loop_block_s: float = 1.0  # a block is a whole epoch, or about this long if an epoch is longer
    images: int = 50_000  # harness: CIFAR-shaped images for the data pipeline
    image_batch: int = 128
    tensor_repeats: int = 3  # epochs of the on-device pipeline (it is cheap; median)
    result_folders: int = 10_000  # harness: run folders for `bench gather` and the leaderboard
    result_repeats: int = 2
    compact_fraction: float = 0.5  # fraction of each channel group zeroed
    latency_rounds: int = 10
    latency_steps: int = 3


# For tests: every code path at tiny sizes (the numbers mean nothing).
QUICK = Sizes(rounds=1, train_steps=2, opt_steps=2, memory_steps=1, big_params="model", big_rounds=1,
              big_steps=2, min_seconds=0.0, loop_rounds=1, loop_block_s=0.0, images=512, tensor_repeats=1,
              result_folders=30, result_repeats=1, latency_rounds=1, latency_steps=1)


@dataclass(frozen=True)
class Check:
    """One target: a measured value against a bound (or a property that must hold)."""

    name: str
    value: float | bool
    target: str
    passed: bool


def check(name: str, value: float | bool, op: str, bound: float | None = None) -> Check:
    """`value op bound` (op: <=, >=, ==), or `value` itself with op "true"; NaN never passes."""
    if op == "true":
        return Check(name, bool(value), "true", bool(value))
    assert bound is not None
    ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
    return Check(name, float(value), f"{op} {bound:g}", bool(ok) and math.isfinite(value))


# -------------------------------------------------------------------------------------- timing


def time_calls(fn: Callable[[], object], n: int, device: torch.device) -> list[float]:
    """Milliseconds of each of `n` calls of `fn`, device-synchronized (CUDA events on a GPU)."""
    if device.type == "cuda":
        pairs = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in pairs]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_block(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of `fn`, synchronized with the device before and after."""
    metrics.synchronize(device)
    t0 = time.perf_counter()
    fn()
    metrics.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


Rounds = list[list[float]]  # one block's timings (ms), per round


def round_robin(
    blocks: Mapping[str, Callable[[], list[float]]], rounds: int, min_seconds: float = 0.0, warmup: int = 1,
) -> dict[str, Rounds]:
    """Run every block once per round, rotating the order, for at least `rounds` rounds and
    `min_seconds`; the first `warmup` rounds are discarded. Returns each block's timings by round."""
    names = list(blocks)
    out: dict[str, Rounds] = {n: [] for n in names}
    r, started = 0, time.perf_counter()
    while r < warmup + rounds or time.perf_counter() - started < min_seconds:
        if r == warmup:
            started = time.perf_counter()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times = blocks[name]()
            if r >= warmup:
                out[name].append(times)
        r += 1
    return out


def summary(rounds: Rounds) -> dict[str, float]:
    """Median and quartiles (ms) of all of a block's timings."""
    times = [t for r in rounds for t in r]
    q = np.percentile(np.asarray(times), [25, 50, 75])
    return {"median_ms": float(q[1]), "p25_ms": float(q[0]), "p75_ms": float(q[2]), "n": len(times)}


def ratio(a: Rounds, b: Rounds) -> float:
    """Time of `a` over time of `b`, paired by round: the median over rounds of the ratio of their
    medians in that round, so that the machine's load drifting between rounds cancels out."""
    return statistics.median(statistics.median(x) / statistics.median(y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------- reference gRDA (slow)


class ReferenceGRDA(torch.optim.Optimizer):
    """gRDA written the way the authors' PyTorch code is (REFERENCE.md's formula): a Python loop
    over parameters, per-parameter step counter on the host, threshold as a tensor on the device
    (moved there with `.to(p.device)` every step, a host-to-device copy that syncs on CUDA), and
    `torch.sign(a) * (|a| - L).clamp(min=0)` allocating a new weight tensor. Only for `bench perf`:
    it shows what `bench.grda.GRDA` saves and checks that it computes the same weights."""

    def __init__(self, params: Iterable[Any], lr: float, c: float, mu: float) -> None:
        super().__init__(params, dict(lr=lr, c=c, mu=mu))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, c, mu = group["lr"], group["c"], group["mu"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["iter_num"] = torch.zeros(1)
                    state["accumulator"] = p.detach().clone()
                    state["l1_accumulation"] = torch.zeros(1, device=p.device)
                n, a = state["iter_num"], state["accumulator"]
                n.add_(1)
                a.add_(p.grad, alpha=-lr)
                lr_t = torch.tensor(lr)
                l1_diff = c * torch.pow(lr_t, mu + 0.5) * (torch.pow(n, mu) - torch.pow(n - 1, mu))
                state["l1_accumulation"] += l1_diff.to(p.device)
                new_a_l1 = torch.abs(a) - state["l1_accumulation"]
                p.data = torch.sign(a) * new_a_l1.clamp(min=0)


# ------------------------------------------------------------------------------ suite: pruners


def _train_block(trainer: Trainer, steps: int) -> list[float]:
    """`steps` whole training steps through `Trainer.train_epoch`; the Trainer's own step times."""
    trainer.step_times.clear()
    trainer.total_steps = trainer.step + steps  # the loop stops at the step budget
    trainer.train_epoch()
    return list(trainer.step_times)


def _step_block(trainer: Trainer, steps: int) -> list[float]:
    """The optimizer/pruner step alone, hooks as the Trainer calls them, repeated on the last
    gradients. It runs on a copy of the model, optimizer and pruner, so the repeated steps (or a
    structural change a hook makes) never reach the run being timed."""
    model, opt, pruner = copy.deepcopy((trainer.model, trainer.optimizer, trainer.pruner))
    for p, q in zip(trainer.model.parameters(), model.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()  # deepcopy leaves gradients behind
    step = trainer.step

    def one() -> None:
        nonlocal opt
        pruner.after_backward(step)
        opt.step()
        pruner.after_step(step)
        if pruner.model_changed:  # as Trainer.rebuild_optimizer
            pruner.model_changed = False
            opt = pruner.make_optimizer(model)

    return time_calls(one, steps, trainer.device)


def measure_memory(config: RunConfig, steps: int) -> dict[str, int]:
    """Peak memory during `steps` training steps of a fresh Trainer (tracking reset just before).

    On CPU, call it in a fresh process: peak RSS is per process and never goes down."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), progress=False)
        metrics.reset_peak_memory(trainer.device)
        before = metrics.peak_memory(trainer.device)  # right after a reset: the current level
        _train_block(trainer, steps)
        peak = metrics.peak_memory(trainer.device)
        state = metrics.state_bytes(trainer.model, trainer.optimizer, trainer.pruner.state_tensors())
    return {"peak_memory_bytes": peak, "memory_growth_bytes": peak - before, "state_bytes": state}


def bench_pruners(
    configs: Mapping[str, RunConfig], sizes: Sizes, device: torch.device, memory: bool = True,
) -> list[dict[str, Any]]:
    """One row per pruner: step and training-step times, memory (unless `memory` is False), state
    bytes, and their ratios to REFERENCE's (which `configs` must hold)."""
    times, state, finite = _time_pruners(configs, sizes)  # its trainers are gone when memory is measured
    no_memory = {"peak_memory_bytes": None, "memory_growth_bytes": None}
    mem = _memory_all(configs, sizes.memory_steps, device) if memory else {n: no_memory for n in configs}
    rows = []
    for name in configs:
        rows.append({
            "pruner": name, "hparams": configs[name].hparams,
            "step": summary(times[f"step:{name}"]), "train_step": summary(times[f"train:{name}"]),
            "state_bytes": state[name], "peak_memory_bytes": mem[name]["peak_memory_bytes"],
            "memory_growth_bytes": mem[name]["memory_growth_bytes"], "weights_finite": finite[name],
        })
    ref = next(r for r in rows if r["pruner"] == REFERENCE)
    for r in rows:
        r["step_ratio"] = ratio(times[f"step:{r['pruner']}"], times[f"step:{REFERENCE}"])
        r["train_step_ratio"] = ratio(times[f"train:{r['pruner']}"], times[f"train:{REFERENCE}"])
        r["peak_memory_ratio"] = r["peak_memory_bytes"] / ref["peak_memory_bytes"] if memory else None
        r["state_ratio"] = r["state_bytes"] / ref["state_bytes"]
    return rows


def _time_pruners(
    configs: Mapping[str, RunConfig], sizes: Sizes,
) -> tuple[dict[str, Rounds], dict[str, int], dict[str, bool]]:
    """Interleaved timings of every pruner's blocks; then its state bytes and whether its weights
    stayed finite."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: Trainer(cfg, Path(tmp), progress=False) for name, cfg in configs.items()}
        blocks: dict[str, Callable[[], list[float]]] = {}
        for name, tr in trainers.items():
            blocks[f"train:{name}"] = lambda tr=tr: _train_block(tr, sizes.train_steps)
            blocks[f"step:{name}"] = lambda tr=tr: _step_block(tr, sizes.opt_steps)
        times = round_robin(blocks, sizes.rounds, sizes.min_seconds)
    state = {n: metrics.state_bytes(t.model, t.optimizer, t.pruner.state_tensors())
             for n, t in trainers.items()}
    finite = {n: all(math.isfinite(float(p.detach().sum())) for p in t.model.parameters())
              for n, t in trainers.items()}
    return times, state, finite


def _memory_all(configs: Mapping[str, RunConfig], steps: int, device: torch.device) -> dict[str, dict]:
    if device.type == "cuda":  # the allocator's peak is exact in-process, once the timing is done
        out = {}
        for name, cfg in configs.items():
            torch.cuda.empty_cache()
            out[name] = measure_memory(cfg, steps)
        return out
    # CPU: peak RSS only grows within a process, so one fresh (spawned) process per pruner; two at
    # a time (they only measure memory, which concurrency does not change).
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        pending = {name: pool.apply_async(measure_memory, (cfg, steps)) for name, cfg in configs.items()}
        return {name: p.get() for name, p in pending.items()}


# ---------------------------------------------------------------------------- suite: optimizer


def bench_optimizer(
    module: nn.Module, device: torch.device, rounds: int, steps: int, min_seconds: float = 0.0,
    lr: float = 0.1, c: float = 0.005, mu: float = 0.55, momentum: float = PERF_MOMENTUM,
) -> dict[str, Any]:
    """SGD-momentum vs GRDA vs ReferenceGRDA steps on copies of `module`'s parameters, with the same
    fixed gradients; afterwards GRDA and the reference must hold the same weights."""
    init = [p.detach().to(device) for p in module.parameters()]
    gen = torch.Generator().manual_seed(0)
    grads = [(torch.randn(p.shape, generator=gen) * 0.01).to(device) for p in init]

    def params() -> list[torch.Tensor]:
        ps = [p.clone().requires_grad_() for p in init]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g
        return ps

    opts: dict[str, torch.optim.Optimizer] = {
        "sgd": torch.optim.SGD(params(), lr=lr, momentum=momentum, foreach=True),
        "grda": GRDA(params(), lr=lr, c=c, mu=mu),
        "reference": ReferenceGRDA(params(), lr=lr, c=c, mu=mu),
    }
    blocks = {k: (lambda o=o: time_calls(o.step, steps, device)) for k, o in opts.items()}
    times = round_robin(blocks, rounds, min_seconds)
    ours = [p.detach() for p in opts["grda"].param_groups[0]["params"]]
    ref = [p.detach() for p in opts["reference"].param_groups[0]["params"]]
    diff = max(float((a - b).abs().max()) for a, b in zip(ours, ref, strict=True))
    same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ours, ref, strict=True))
    zeros = sum(int((p == 0).sum()) for p in ours)

    def opt_state_bytes(o: torch.optim.Optimizer) -> int:
        return metrics.tensor_bytes(v for s in o.state.values() for v in s.values() if torch.is_tensor(v))

    s = {k: summary(v) for k, v in times.items()}
    return {
        "params": sum(p.numel() for p in init), "tensors": len(init),
        "steps_each": opts["grda"].param_groups[0]["step"],
        "times": s,
        "vs_sgd": {k: ratio(v, times["sgd"]) for k, v in times.items()},
        "grda_vs_sgd": ratio(times["grda"], times["sgd"]),
        "reference_vs_grda": ratio(times["reference"], times["grda"]),
        "grda_equals_reference": same, "max_abs_diff": diff,
        "grda_sparsity": zeros / sum(p.numel() for p in ours),
        "state_bytes": {k: opt_state_bytes(o) for k, o in opts.items()},
    }


# ------------------------------------------------------------------------------ suite: harness


def bench_loop(config: RunConfig, rounds: int, block_seconds: float, min_seconds: float = 0.0,
               ) -> dict[str, Any]:
    """`Trainer.train_epoch` of a `dense` config against a bare loop (forward, loss, backward, SGD
    step) over the same batches, on identically initialized models with the same SGD. A block is a
    whole epoch, or as many steps as take about `block_seconds` if an epoch takes longer."""
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(config, Path(tmp), progress=False)
        b, dev = config.budget, tr.device
        step_ms = time_block(lambda: _train_block(tr, 2), dev) / 2  # also a warm-up
        steps = min(tr.steps_per_epoch, max(1, round(block_seconds * 1e3 / step_ms)))
        torch.manual_seed(config.seed)
        model = MODELS.get(config.model).build(tr.data.num_classes).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=b.lr, momentum=b.momentum, weight_decay=b.weight_decay,
                              foreach=True)

        def bare() -> None:
            model.train()
            for x, y in itertools.islice(tr.data.train_batches(b.batch_size, 0, config.seed), steps):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        def harness() -> None:
            tr.total_steps = tr.step + steps
            tr.train_epoch()

        times = round_robin({"trainer": lambda: [time_block(harness, dev) / steps],
                             "bare": lambda: [time_block(bare, dev) / steps]}, rounds, min_seconds)
    s = {k: summary(v) for k, v in times.items()}
    return {"model": config.model, "dataset": config.dataset, "batch_size": b.batch_size,
            "steps_per_block": steps, "times": s, "ratio": ratio(times["trainer"], times["bare"])}


class _PILImages(torch.utils.data.Dataset):
    """Images held as uint8 HWC arrays and converted to PIL per item, like torchvision's CIFAR10."""

    def __init__(self, x: np.ndarray, y: list[int], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def bench_data(n: int, batch: int, device: torch.device, repeats: int) -> dict[str, Any]:
    """One epoch of CIFAR-shaped batches with pad-4 crop + flip + normalize: on-device `crop_flip`
    via TensorData against a DataLoader of per-image PIL transforms (0 and 2 workers)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x_dev, y_dev = x.to(device), y.to(device)
    data = TensorData(x_dev, y_dev, x_dev[:batch], y_dev[:batch], 10, mean, std, crop_flip)

    def tensor_epoch() -> None:
        for _ in data.train_batches(batch, 0, 0):
            pass

    tensor_epoch()  # warm-up
    tensor_ms = statistics.median(time_block(tensor_epoch, device) for _ in range(repeats))
    T = torchvision.transforms
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    dataset = _PILImages(x.permute(0, 2, 3, 1).contiguous().numpy(), y.tolist(), transform)
    out: dict[str, Any] = {"images": n, "batch_size": batch, "tensor_data_ms": tensor_ms}
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0, pin_memory=device.type == "cuda")

        def loader_epoch(loader: torch.utils.data.DataLoader = loader) -> None:
            for xb, yb in loader:
                xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

        next(iter(loader))  # start the workers (steady state: persistent workers)
        ms = time_block(loader_epoch, device)
        out[f"dataloader_{workers}w_ms"] = ms
        out[f"speedup_{workers}w"] = ms / tensor_ms
        del loader
    return out


def make_run_folders(root: Path, n: int, epochs: int = 60) -> None:
    """`n` run folders shaped like `bench run`'s (result.json, config.json, history.csv with
    `epochs` rows), copied from one real short run with varied pruner, hyperparameters, seed and
    metrics. A throwaway fixture: written plainly, since 3n fsyncs (bench.io) would dominate."""
    import random

    from bench.train import run

    with tempfile.TemporaryDirectory() as tmp:
        template = run(check_config(RunConfig(pruner="grda", budget=Budget(epochs=1))), tmp)
        header = (Path(tmp) / template["run_id"] / "history.csv").read_text().splitlines()[0].split(",")
    rng = random.Random(0)
    pruners = PRUNERS.names()

    def files(i: int) -> tuple[Path, dict[str, str]]:
        k = len(pruners)
        pruner, seed, setting = pruners[i % k], (i // k) % 5, i // (5 * k) % 4
        hparams = dataclasses.asdict(PRUNERS.get(pruner).Hparams())
        first_float = next((k for k, v in hparams.items() if isinstance(v, float)), None)
        if first_float:
            hparams[first_float] *= 1 + setting
        run_id = f"{pruner}-mlp-digits-s{seed}-{i:010x}"
        top1, sparsity = rng.uniform(0.8, 0.98), 0.0 if pruner == "dense" else rng.uniform(0.5, 0.99)
        record = {**template, "run_id": run_id, "config_hash": f"{i:064x}", "pruner": pruner, "seed": seed,
                  "hparams": hparams, "top1": top1, "top5": min(1.0, top1 + 0.01), "sparsity": sparsity,
                  "sparsity_all": sparsity * 0.99, "flops_sparse": template["flops_dense"] * (1 - sparsity),
                  "train_time_s": rng.uniform(3, 8), "step_time_ms": rng.uniform(0.5, 2)}
        rows = [",".join(header)] + [
            ",".join(str(v) for v in (e, (e + 1) * 45, rng.uniform(0.1, 2), top1, sparsity * e / epochs, 0.1,
                                      e * 0.1)[: len(header)])
            for e in range(epochs)
        ]
        return root / run_id, {
            "result.json": json.dumps(record, indent=2, sort_keys=True),
            "config.json": json.dumps({"run_id": run_id, "pruner": pruner, "seed": seed, "hparams": hparams}),
            "history.csv": "\n".join(rows) + "\n",
        }

    def write(item: tuple[Path, dict[str, str]]) -> None:
        folder, texts = item
        folder.mkdir(parents=True)
        for name, text in texts.items():
            (folder / name).write_text(text)

    with ThreadPoolExecutor(16) as pool:  # file creation is I/O-bound
        list(pool.map(write, (files(i) for i in range(n))))


def bench_results(n: int, repeats: int) -> dict[str, Any]:
    """`bench gather` of `n` run folders (results.gather, history included) and a leaderboard from
    that table (leaderboard.write_leaderboard: Markdown + CSV, no figures); median seconds."""
    from bench import leaderboard, results

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        make_run_folders(root, n)
        gather_s, board_s = [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            g = results.gather(root)
            gather_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            leaderboard.write_leaderboard(g.runs, Path(tmp) / f"board{r}", g.history,
                                          leaderboard.load_published(), plots=False)
            board_s.append(time.perf_counter() - t0)
    return {"runs": n, "gathered": len(g.runs), "history_rows": len(g.history),
            "gather_s": statistics.median(gather_s), "leaderboard_s": statistics.median(board_s)}


# ------------------------------------------------------------------------------ suite: compact


def bench_compact(
    model_name: str, num_classes: int, device: torch.device, batch: int, sizes: Sizes,
) -> dict[str, Any]:
    """Zero a fraction of every channel group, remove those channels, and compare inference."""
    info = MODELS.get(model_name)
    shape = info.input_shapes[0]
    torch.manual_seed(0)
    model = info.build(num_classes).to(device).eval()
    example = torch.randn(2, *shape, device=device)
    zero_random_channels(model, example, sizes.compact_fraction)
    compact = remove_zero_channels(model, example)  # raises if outputs change
    x = torch.randn(batch, *shape, device=device)
    with torch.inference_mode():
        same = torch.allclose(model(x), compact(x), rtol=1e-4, atol=1e-5)
        times = round_robin({
            "original": lambda: time_calls(lambda: model(x), sizes.latency_steps, device),
            "compact": lambda: time_calls(lambda: compact(x), sizes.latency_steps, device),
        }, sizes.latency_rounds, sizes.min_seconds)
    flops_dense, flops_sparse = metrics.flops(model, shape, device)
    flops_compact, _ = metrics.flops(compact, shape, device)
    s = {k: summary(v) for k, v in times.items()}
    return {
        "model": model_name, "zeroed_fraction": sizes.compact_fraction, "batch_size": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "params_compact": sum(p.numel() for p in compact.parameters()),
        "flops": flops_dense, "flops_sparse": flops_sparse, "flops_compact": flops_compact,
        "flops_ratio": flops_dense / flops_compact, "sparse_flops_ratio": flops_dense / flops_sparse,
        "times": s, "measured_speedup": ratio(times["original"], times["compact"]),
        "outputs_equal": bool(same),
    }


# --------------------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class PerfOptions:
    configs: dict[str, RunConfig]  # pruner name -> validated config (REFERENCE first)
    suites: tuple[str, ...] = SUITES
    sizes: Sizes = Sizes()
    quick: bool = False


def run_perf(opts: PerfOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the selected suites; returns the report (meta, per-suite results, checks)."""
    ref_cfg = opts.configs[REFERENCE]
    device = resolve_device(ref_cfg.device)
    report: dict[str, Any] = {"meta": {
        "model": ref_cfg.model, "dataset": ref_cfg.dataset, "pruners": list(opts.configs),
        "budget": dataclasses.asdict(ref_cfg.budget), "suites": list(opts.suites), "quick": opts.quick,
        "sizes": dataclasses.asdict(opts.sizes), "threads": torch.get_num_threads(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), **metrics.provenance(device),
    }}
    checks: list[Check] = []
    seconds: dict[str, float] = {}
    runners = {"pruners": _suite_pruners, "optimizer": _suite_optimizer, "harness": _suite_harness,
               "compact": _suite_compact}
    for suite in SUITES:
        if suite in opts.suites:
            t0 = time.perf_counter()
            checks += runners[suite](opts, device, report, log)
            seconds[suite] = round(time.perf_counter() - t0, 1)
    report["checks"] = [dataclasses.asdict(c) for c in checks]
    report["meta"].update(suite_seconds=seconds, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    return report


Log = Callable[[str], None]


def _suite_pruners(opts: PerfOptions, device: torch.device, report: dict[str, Any], log: Log) -> list[Check]:
    ref = opts.configs[REFERENCE]
    log(f"[perf] pruners: {', '.join(opts.configs)} on {ref.model}/{ref.dataset}, "
        f"batch {ref.budget.batch_size}, {device}")
    rows = report["pruners"] = bench_pruners(opts.configs, opts.sizes, device)
    grda = next((r for r in rows if r["pruner"] == "grda"), None)
    if grda is None:
        return []
    return [check("train step: grda / dense SGD-momentum", grda["train_step_ratio"], "<=", 1.03),
            check("state bytes: grda / dense SGD-momentum", grda["state_ratio"], "==", 1.0)]


def _suite_optimizer(opts: PerfOptions, device: torch.device, report: dict[str, Any], log: Log,
                     ) -> list[Check]:
    sizes, info = opts.sizes, MODELS.get(opts.configs[REFERENCE].model)
    module = torchvision.models.resnet18() if sizes.big_params == "resnet18" else info.build(
        (info.classes or (10,))[0])
    log(f"[perf] optimizer step on {sizes.big_params} parameter shapes")
    o = report["optimizer"] = bench_optimizer(module, device, sizes.big_rounds, sizes.big_steps,
                                              sizes.min_seconds)
    size = f"{o['params'] / 1e6:.1f}M params"
    return [
        check(f"optimizer step: grda / SGD(momentum=0.9, foreach) ({size})", o["grda_vs_sgd"], "<=", 1.0),
        check(f"optimizer step: reference loop / grda ({size})", o["reference_vs_grda"], ">=", 3.0),
        check("optimizer: grda weights == reference loop weights", o["grda_equals_reference"], "true"),
        check("optimizer state bytes: grda / SGD-momentum",
              o["state_bytes"]["grda"] / o["state_bytes"]["sgd"], "==", 1.0),
    ]


def _suite_harness(opts: PerfOptions, device: torch.device, report: dict[str, Any], log: Log) -> list[Check]:
    sizes, ref, checks = opts.sizes, opts.configs[REFERENCE], []
    loops = [ref]
    if (ref.model, ref.dataset) != SMALL_RUN:
        loops.append(check_config(dataclasses.replace(ref, model=SMALL_RUN[0], dataset=SMALL_RUN[1])))
    report["loop"] = []
    for cfg in loops:
        log(f"[perf] Trainer vs bare loop on {cfg.model}/{cfg.dataset}")
        lp = bench_loop(cfg, sizes.loop_rounds, sizes.loop_block_s, sizes.min_seconds)
        report["loop"].append(lp)
        checks.append(check(f"loop: Trainer.train_epoch / bare loop ({cfg.model}, {cfg.dataset})",
                            lp["ratio"], "<=", 1.05))
    log(f"[perf] data pipeline, {sizes.images} images")
    d = report["data"] = bench_data(sizes.images, sizes.image_batch, device, sizes.tensor_repeats)
    checks += [check(f"data: DataLoader+PIL ({w} workers) / TensorData crop_flip, one epoch",
                     d[f"speedup_{w}w"], ">=", 10.0) for w in (0, 2)]
    log(f"[perf] gather and leaderboard of {sizes.result_folders} run folders")
    g = report["results"] = bench_results(sizes.result_folders, sizes.result_repeats)
    return [*checks, check(f"results: bench gather of {g['runs']} run folders (s)", g["gather_s"], "<=", 5.0),
            check(f"results: leaderboard from {g['runs']} runs (s)", g["leaderboard_s"], "<=", 2.0)]


def _suite_compact(opts: PerfOptions, device: torch.device, report: dict[str, Any], log: Log) -> list[Check]:
    ref = opts.configs[REFERENCE]
    log(f"[perf] channel removal on {ref.model}")
    num_classes = (MODELS.get(ref.model).classes or (10,))[0]
    c = report["compact"] = bench_compact(ref.model, num_classes, device, ref.budget.batch_size, opts.sizes)
    return [check("compact: outputs unchanged after removing zero channels", c["outputs_equal"], "true")]


# -------------------------------------------------------------------------------------- output


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as markdown tables: per pruner, harness, compaction, and the checks."""
    meta, parts = report["meta"], []
    parts.append(f"device: {meta['device']}, torch {meta['torch_version']}, {meta['threads']} threads; "
                 f"model {meta['model']}, dataset {meta['dataset']}, batch {meta['budget']['batch_size']}"
                 + (" (quick: tiny sizes, numbers meaningless)" if meta["quick"] else "")
                 + "; seconds per suite: "
                 + ", ".join(f"{k} {v:g}" for k, v in meta["suite_seconds"].items()))
    if "pruners" in report:
        rows = [(r["pruner"], f"{r['step']['median_ms']:.3f}", f"{r['step_ratio']:.2f}x",
                 f"{r['train_step']['median_ms']:.2f}", f"{r['train_step_ratio']:.3f}x",
                 *((_mib(r["peak_memory_bytes"]), f"{r['peak_memory_ratio']:.3f}x",
                    _mib(r["memory_growth_bytes"])) if r["peak_memory_bytes"] is not None else ("-",) * 3),
                 _mib(r["state_bytes"]), f"{r['state_ratio']:.3f}x") for r in report["pruners"]]
        parts.append(markdown_table(rows, ["pruner", "opt step ms", "vs dense", "train step ms", "vs dense",
                                           "peak MiB", "vs dense", "of which steps MiB", "state MiB",
                                           "vs dense"]))
    if "optimizer" in report:
        o = report["optimizer"]
        rows = [(k, f"{v['median_ms']:.2f}", f"{o['vs_sgd'][k]:.2f}x",
                 _mib(o["state_bytes"][k])) for k, v in o["times"].items()]
        parts.append(f"optimizer step, {o['params'] / 1e6:.1f}M parameters in {o['tensors']} tensors "
                     f"(grda == reference: {o['grda_equals_reference']}, max |diff| {o['max_abs_diff']:.1e}, "
                     f"sparsity {o['grda_sparsity']:.3f} after {o['steps_each']} steps)\n"
                     + markdown_table(rows, ["optimizer", "step ms", "vs SGD-momentum", "state MiB"]))
    if "loop" in report:
        rows = [(f"{lp['model']}/{lp['dataset']}", lp["batch_size"],
                 f"{lp['times']['trainer']['median_ms']:.3f}", f"{lp['times']['bare']['median_ms']:.3f}",
                 f"{lp['ratio']:.3f}x") for lp in report["loop"]]
        parts.append(markdown_table(rows, ["loop", "batch", "Trainer ms/step", "bare ms/step", "ratio"]))
    if "data" in report:
        d = report["data"]
        parts.append(markdown_table(
            [("TensorData + crop_flip (on device)", f"{d['tensor_data_ms'] / 1e3:.2f}", "1x")]
            + [(f"DataLoader + PIL transforms, {w} workers", f"{d[f'dataloader_{w}w_ms'] / 1e3:.2f}",
                f"{d[f'speedup_{w}w']:.1f}x") for w in (0, 2)],
            [f"one epoch, {d['images']} images, batch {d['batch_size']}", "s", "time / on-device"]))
    if "results" in report:
        g = report["results"]
        parts.append(markdown_table(
            [(f"bench gather ({g['history_rows']} history rows)", g["runs"], f"{g['gather_s']:.2f}"),
             ("leaderboard (Markdown + CSV, no figures)", g["gathered"], f"{g['leaderboard_s']:.2f}")],
            ["results", "runs", "s"]))
    if "compact" in report:
        c = report["compact"]
        parts.append(markdown_table([(
            c["model"], f"{c['zeroed_fraction']:.2f}", f"{c['params']} -> {c['params_compact']}",
            f"{c['flops_ratio']:.2f}x", f"{c['sparse_flops_ratio']:.2f}x",
            f"{c['times']['original']['median_ms']:.2f} -> {c['times']['compact']['median_ms']:.2f}",
            f"{c['measured_speedup']:.2f}x", c["outputs_equal"])],
            ["compacted model", "channels zeroed", "params", "FLOPs ratio", "unstructured-count ratio",
             f"latency ms (batch {c['batch_size']})", "measured speed-up", "outputs equal"]))
    if report["checks"]:
        rows = [(c["name"], f"{c['value']:.3f}" if isinstance(c["value"], float) else c["value"], c["target"],
                 "PASS" if c["passed"] else "MISS") for c in report["checks"]]
        parts.append(markdown_table(rows, ["check", "measured", "target", "result"]))
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ CLI


def parse_list(value: str | None, choices: Sequence[str], flag: str) -> list[str]:
    """A comma-separated list of names, each one of `choices` (ConfigError naming the flag)."""
    if value is None:
        return list(choices)
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise ConfigError(f"{flag} {value!r}: unknown {', '.join(bad) or '(empty)'}; "
                          f"valid choices: {', '.join(choices)}")
    return names


def options_from_args(args: argparse.Namespace) -> PerfOptions:
    """Validate everything (names, hyperparameters, model/dataset fit, device) before running."""
    pruners = parse_list(args.pruners, PRUNERS.names(), "--pruners")
    pruners = [REFERENCE] + [p for p in pruners if p != REFERENCE]
    suites = parse_list(args.suite, SUITES, "--suite") if args.suite != "all" else list(SUITES)
    hparams: dict[str, dict[str, str]] = {p: {} for p in pruners}
    for key, value in parse_sets(args.sets).items():
        pruner, dot, field = key.partition(".")
        if not dot or pruner not in hparams:
            raise ConfigError(f"--set {key}={value}: expected PRUNER.KEY=VALUE with PRUNER one of "
                              f"{', '.join(pruners)} (e.g. --set grda.c=0.02)")
        hparams[pruner][field] = value
    if args.threads < 0:
        raise ConfigError(f"--threads {args.threads}: must be >= 0 (0: torch's default)")
    if args.momentum is None:
        args.momentum = str(PERF_MOMENTUM)
    budget = dataclass_from_args(Budget, args, "budget")
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available here; valid choices: auto, cpu")
    configs = {p: check_config(RunConfig(p, args.model, args.dataset, hparams[p], budget, args.seed,
                                         args.data_dir, str(device)))
               for p in pruners}
    return PerfOptions(configs, tuple(suites), QUICK if args.quick else Sizes(), args.quick)


def cmd_perf(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_perf(opts, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"report: {args.json}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.description = "Timings are interleaved medians, printed as ratios with the targets (PASS/MISS)."
    p.add_argument("--model", default="resnet20", help="model name (see `bench list`)")
    p.add_argument("--dataset", default="synthetic", help="dataset name (synthetic takes the model's shape)")
    p.add_argument("--pruners", default=None, help="comma-separated pruners (default: all registered); "
                   f"{REFERENCE} is always measured as the reference")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="PRUNER.KEY=VALUE",
                   help="a pruner hyperparameter, repeatable (e.g. --set grda.c=0.02)")
    p.add_argument("--suite", default="all", help=f"all, or comma-separated: {', '.join(SUITES)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests; numbers are meaningless)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full report as JSON")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data", help="where on-disk datasets live")
    add_dataclass_flags(p.add_argument_group(f"budget (default momentum here: {PERF_MOMENTUM})"), Budget)
    p.set_defaults(func=cmd_perf)
