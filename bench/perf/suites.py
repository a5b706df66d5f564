"""The four suites of `bench perf`: each `bench_*` function measures and returns a dict; each
runner (RUNNERS) logs, fills its part of the report and returns its checks.

- `pruners`: for every registered pruner on the same model and batch, the optimizer/pruner step
  alone and the whole training step (the Trainer's own loop and timers, hooks included), peak
  memory (CUDA allocator; on CPU peak RSS in a fresh process per pruner) and exact state bytes.
- `optimizer`: the gRDA optimizer step on ResNet-18's parameter shapes (11.7M) against
  `torch.optim.SGD(momentum=0.9, foreach=True)` and against a per-parameter loop written like the
  authors' gRDA code (`bench.grda.ReferenceGRDA`), which must give the same weights.
- `harness`: `Trainer.train_epoch` against a bare hand-written loop on the same batches; the
  on-device batched augmentation against a torchvision DataLoader with per-image PIL transforms;
  `bench gather` of 10,000 run folders and a leaderboard from that table.
- `compact`: a model with all-zero channels made physically smaller (`bench.compact`): measured
  inference speed-up beside the FLOPs ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from bench import metrics, results
from bench.board.published import load_published
from bench.board.write import write_leaderboard
from bench.compact import remove_zero_channels, zero_random_channels
from bench.config import RunConfig
from bench.data import TensorData, crop_flip
from bench.grda import GRDA, ReferenceGRDA
from bench.perf.fixtures import make_run_folders
from bench.perf.options import PERF_MOMENTUM, REFERENCE, SMALL_RUN, PerfOptions, Sizes
from bench.perf.timing import Check, Rounds, check, ratio, round_robin, summary, time_block, time_calls
from bench.registry import MODELS
from bench.run.build import build
from bench.run.trainer import MEMORY_STEPS, Trainer
from bench.validate import check_config

# ------------------------------------------------------------------------------ suite: pruners


def _train_block(trainer: Trainer, steps: int) -> list[float]:
    """`steps` whole training steps through `Trainer.train_epoch`; the Trainer's own step times.
    Timing may run past the budget's step count; the pruners' schedules are as the budget says."""
    if trainer.step < MEMORY_STEPS.stop:  # past the steps whose tensors are tracked (not timed)
        trainer.train_epoch(steps=MEMORY_STEPS.stop - trainer.step)
    trainer.step_times.clear()
    trainer.train_epoch(steps=steps)
    return list(trainer.step_times)


def _step_block(trainer: Trainer, steps: int) -> list[float]:
    """The optimizer/pruner half of a step alone (`Trainer.update`: the hooks in the Trainer's own
    order), repeated on the last gradients. It runs on a twin of the trainer with its own copies of
    the model, optimizer and pruner, so the repeated steps (or a structural change a hook makes)
    never reach the run being timed."""
    return time_calls(_twin(trainer).update, steps, trainer.device)


def _twin(trainer: Trainer) -> Trainer:
    """A new Trainer on deep copies of `trainer`'s model, optimizer and pruner (gradients included;
    the same data and budget), at the same step: its `update` never touches the original."""
    # one deep copy of the three: tensors they share stay shared
    model, optimizer, pruner = copy.deepcopy((trainer.model, trainer.optimizer, trainer.pruner))
    for p, q in zip(trainer.model.parameters(), model.parameters(), strict=True):
        q.grad = None if p.grad is None else p.grad.clone()  # deepcopy leaves gradients behind
    pieces = dataclasses.replace(trainer.built, model=model, optimizer=optimizer, pruner=pruner)
    twin = Trainer(pieces, trainer.run)
    twin.step = trainer.step
    return twin


def measure_memory(config: RunConfig, steps: int) -> dict[str, int]:
    """Peak memory during `steps` training steps of a fresh Trainer (tracking reset just before).

    On CPU, call it in a fresh process: peak RSS is per process and never goes down."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(build(config), Path(tmp))
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
        trainers = {name: Trainer(build(cfg), Path(tmp)) for name, cfg in configs.items()}
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
        tr = Trainer(build(config), Path(tmp))
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
            tr.train_epoch(steps=steps)

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


def bench_results(n: int, repeats: int) -> dict[str, Any]:
    """`bench gather` of `n` run folders (results.gather, history included) and a leaderboard from
    that table (leaderboard.write_leaderboard: Markdown + CSV, no figures); median seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        make_run_folders(root, n)
        gather_s, board_s = [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            g = results.gather(root)
            gather_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            write_leaderboard(g.runs, Path(tmp) / f"board{r}", g.history,
                              load_published(), plots=False)
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
    flops_dense, flops_sparse = metrics.macs(model, shape, device)
    flops_compact, _ = metrics.macs(compact, shape, device)
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


# -------------------------------------------------------------------------------------- runners


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


Runner = Callable[[PerfOptions, torch.device, dict[str, Any], Log], list[Check]]
RUNNERS: dict[str, Runner] = {"pruners": _suite_pruners, "optimizer": _suite_optimizer,
                              "harness": _suite_harness, "compact": _suite_compact}
