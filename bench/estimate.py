"""The compute a sweep needs (`bench sweep FILE --dry-run`), each cell's budget extrapolated from,
in this order:
1. the finished runs of the same (pruner, model, dataset) in the out folder;
2. a timed probe of a few training steps on this machine (wall time of the step alone, on a batch
   fetched beforehand, after an untimed warm-up; the loader is timed apart by bench.loader_probe
   and a cell takes the slower of the two), cached in the user cache (bench.cache) per (pruner,
   model, dataset, batch size, precision, device, torch version, threads), so a repeated dry run
   answers at once;
3. on a CPU, for a model above PROBE_MAX_MACS with no cached probe, the dense training arithmetic
   (3 x forward MACs x batch per step) at this device's rate, measured once on a ResNet-20 and
   cached: seconds, where a probe would build and train a large model on the CPU, at the price of
   the pruner's own overhead and the data loading (not counted). `probe=True`
   (`bench sweep --dry-run --probe`) times a real probe for every group and refreshes the cache.
The printed rate says which was used. Step counts are those of the training set left after the
validation split (`budget.val_fraction`)."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from bench import cache
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.registry import DATASETS, MODELS
from bench.spec import SweepSpec
from bench.status import finished_result


@dataclass(frozen=True)
class CellTime:
    """One cell's time, as a scheduler's time limit sees it: setup, then `epochs` epochs (a run
    checkpoints at epoch ends, so a requeued one redoes the epoch it was in)."""

    setup_s: float
    epoch_s: float
    epochs: int
    steps_per_epoch: int
    timed_on: str  # "cpu", "cuda", or "finished runs" (measured where the cells run)

    @property
    def total_s(self) -> float:
        return self.setup_s + self.epochs * self.epoch_s


@dataclass(frozen=True)
class Estimate:
    """Compute seconds for the whole sweep and for the cells still to run, on one device."""

    total_s: float
    todo_s: float
    max_cell_s: float
    device: str
    rates: dict[str, str]  # "pruner/model/dataset" -> how its time was obtained
    unavailable: list[str]  # groups without an estimate, and why
    cells: dict[str, CellTime]  # "pruner/model/dataset" -> one cell's time (the groups with one)

    def wall_s(self, parallel: int) -> float:
        """Wall time of the cells to run, `parallel` at a time: their compute spread over the lanes,
        never less than the longest cell's (nor more than all of it in turn)."""
        return min(self.todo_s, max(self.todo_s / max(parallel, 1), self.max_cell_s))


PROBE_MAX_MACS = 1e7  # forward MACs per example: above it, no probe unless asked for (a ResNet-20: 4e7)
RATE_MODEL, RATE_BATCH = "resnet20", 16  # the dense training step that measures a device's MAC rate
# probe steps run before the timed ones (CUDA: cuDNN's algorithm search, the allocator's first
# blocks, lazy kernel loading), and the fewest timed steps a probe takes
WARMUP_STEPS = {"cpu": 2, "cuda": 10}
MIN_TIMED = 3


def estimate(spec: SweepSpec, out: Path | None = None, probe_steps: int = 8, probe: bool = False,
             threads: int | None = None) -> Estimate:
    """Extrapolate each cell's compute to its budget: the training time of finished runs of the
    same (pruner, model, dataset) in `out`, else a probe on this machine (cached; data loading +
    steps x the step time; evaluation is not counted), else, for a large model on a CPU, its MACs
    at this device's rate. `probe`: time a real probe for every group without finished runs.
    `threads`: the torch threads each cell will run with on a CPU (the executor's), so a probe
    times what a cell gets, not the whole machine."""
    import torch  # not at the top: parsing a sweep must not import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _estimate(spec, out, probe_steps, probe)
    finally:
        torch.set_num_threads(before)


def _estimate(spec: SweepSpec, out: Path | None, probe_steps: int, probe: bool) -> Estimate:
    import torch

    from bench.run.distributed import resolve_device

    done = {c.run_id: finished_result(out, c) for c in spec.cells} if out else {}
    device = resolve_device(spec.cells[0].device if spec.cells else "auto")
    missing = _missing_device(device)
    groups: dict[tuple[str, str, str], list[RunConfig]] = {}
    for c in spec.cells:
        groups.setdefault((c.pruner, c.model, c.dataset), []).append(c)
    total = todo = longest = 0.0
    rates: dict[str, str] = {}
    unavailable: list[str] = []
    cell_times: dict[str, CellTime] = {}
    for key, cells in groups.items():
        label = "/".join(key)
        scale = dict(zip((c.run_id for c in cells), relative_steps(cells), strict=True))
        most = max(scale.values())
        finished = [(done[c.run_id], scale[c.run_id]) for c in cells if done.get(c.run_id)]
        runs = [(r, k) for r, k in finished if r.get("train_time_s") and r.get("epochs_completed")]
        b = cells[0].budget
        if runs:  # in units of the group's first cell
            cell_s = median(r["train_time_s"] / k for r, k in runs)
            epoch_s = median(r["train_time_s"] / r["epochs_completed"] for r, _ in runs)
            first = runs[0][0]
            per_epoch = math.ceil(first["steps"] / first["epochs_completed"]) if first.get("steps") else 0
            epochs = math.ceil(median(r["epochs_completed"] / k for r, k in runs) * most)
            cell_times[label] = CellTime(0.0, epoch_s, epochs, per_epoch, "finished runs")
            rates[label] = f"{cell_s:.3g} s of training per run (median of {len(runs)} finished here)"
            setup_s = 0.0
        elif missing:
            unavailable.append(f"{label}: {missing}")
            continue
        else:
            try:
                setup_s, step_s, steps, how = _timed(cells[0], probe_steps, probe)
            except Exception as e:  # out of memory, a broken pruner...: report, do not fail the dry run
                unavailable.append(f"{label}: {type(e).__name__}: {e}")
                continue
            if steps is None:
                unavailable.append(
                    f"{label}: {step_s * 1e3:.3g} ms/step ({how}); the number of steps needs the dataset"
                )
                continue
            cell_s = setup_s + steps * step_s
            rounds = budget_multiple(cells[0]) * b.epochs  # epochs the first cell trains
            per_epoch = math.ceil(steps / rounds)
            kind = resolve_device(cells[0].device).type
            epochs = math.ceil(rounds * most)  # the group's longest cell
            cell_times[label] = CellTime(setup_s, per_epoch * step_s, epochs, per_epoch, kind)
            more = "" if most == 1 else f" (the first cell; others up to {most:.3g}x its steps)"
            rates[label] = (f"{step_s * 1e3:.3g} ms/step x {steps} steps{more} + {setup_s:.2g} s to load "
                            f"({how})")
        times = {c.run_id: setup_s + (cell_s - setup_s) * scale[c.run_id] for c in cells}
        longest = max(longest, *times.values())
        total += sum(times.values())
        todo += sum(t for run_id, t in times.items() if not done.get(run_id))
    name = "cpu" if device.type != "cuda" else str(device) if missing else torch.cuda.get_device_name(device)
    return Estimate(total, todo, longest, name, rates, unavailable, cell_times)


def budget_multiple(config: RunConfig) -> float:
    """The cell's optimizer steps per budget step, as its pruner counts them before `prepare`
    (IMP: R + 1 full budgets, less the rewound steps it learns from the model); 1 for a pruner
    that cannot count before it has a model."""
    from bench.pruner import RunContext
    from bench.registry import PRUNERS

    cls, budget_steps = PRUNERS.get(config.pruner), 10_000
    try:
        pruner = cls(cls.Hparams(**config.hparams), config.budget, RunContext(total_steps=budget_steps))
        return pruner.train_steps() / budget_steps
    except Exception:  # a pruner that needs its model first
        return 1.0


def relative_steps(cells: list[RunConfig]) -> list[float]:
    """Each cell's `budget_multiple` relative to the first cell's (IMP's 99% cell trains about
    twice its 80% cell's steps)."""
    counts = [budget_multiple(c) for c in cells]
    return [n / counts[0] for n in counts]


def _missing_device(device: Any) -> str:
    """Why the sweep's device cannot time a probe here ('' if it can): a CUDA sweep's dry run on
    a machine without that GPU (a login node) estimates from finished runs only."""
    import torch

    if device.type != "cuda":
        return ""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) < count:
        return ""
    return (f"the sweep's device {device} is not on this machine (run the dry run where it is, or "
            "after some cells have finished)")


def _timed(config: RunConfig, probe_steps: int, probe: bool) -> tuple[float, float, int | None, str]:
    """(load s, s per step, total steps or None, how) of a group: from the cache, a probe, or MACs."""
    import torch

    from bench import metrics
    from bench.run.distributed import resolve_device

    device = resolve_device(config.device)
    b = config.budget
    key = "|".join([config.pruner, config.model, config.dataset, f"batch {b.batch_size}", b.precision,
                    metrics.device_name(device), f"torch {torch.__version__}",
                    f"{torch.get_num_threads()} threads", "step alone"])  # older probes timed loading too
    probes = cache.read_json("probes")
    hit = probes.get(key)
    if hit and not probe:
        steps = _total_steps(config, hit["num_train"])
        return hit["setup_s"], hit["step_s"], steps, f"{hit['how']}; cached {hit['when']}"
    cpu_batch = 4
    if not probe and device.type == "cpu":  # a GPU probes a large model in seconds
        macs, num_train = _macs_and_size(config, device)
        if macs <= PROBE_MAX_MACS:  # a small model: its real batch costs milliseconds here
            cpu_batch = b.batch_size
        else:
            rate = _device_rate(device)
            step_s = metrics.TRAIN_PASSES * macs * b.batch_size / rate
            return 0.0, step_s, _total_steps(config, num_train), (
                f"MAC estimate: {metrics.TRAIN_PASSES} x {macs / 1e6:.3g} MMAC x batch {b.batch_size} at "
                f"{rate / 1e9:.3g} GMAC/s, a dense {RATE_MODEL}'s rate here; no pruner overhead or data "
                "loading; --probe for a timed probe")
    setup_s, step_s, num_train, how = _probe(config, probe_steps, cpu_batch=cpu_batch)
    if num_train is not None:
        from datetime import UTC, datetime

        probes = cache.read_json("probes")  # again: another dry run may have written meanwhile
        probes[key] = dict(setup_s=setup_s, step_s=step_s, num_train=num_train, how=how,
                           when=datetime.now(UTC).strftime("%Y-%m-%d"))
        cache.write_json("probes", probes)
    return setup_s, step_s, _total_steps(config, num_train), how


def _total_steps(config: RunConfig, num_train: int | None) -> int | None:
    """Steps of a run whose data set has `num_train` training examples before the validation
    split (per class `round(f * n)` are held out: the total is exact up to that rounding), times
    the pruner's steps per budget step (`budget_multiple`: IMP's full-budget rounds). A
    `val_fraction` >= 1 is a count of examples (bench.data.validation_indices)."""
    if not num_train:
        return config.budget.max_steps or None
    b = config.budget
    held_out = round(b.val_fraction) if b.val_fraction >= 1 else round(b.val_fraction * num_train)
    steps = b.epochs * math.ceil(max(num_train - held_out, 0) / b.batch_size)
    steps = min(steps, b.max_steps) if b.max_steps else steps
    return round(steps * budget_multiple(config))


def _macs_and_size(config: RunConfig, device: Any) -> tuple[float, int | None]:
    """(dense forward MACs of one example, training examples before the validation split); a
    data set without a recorded size (digits, synthetic) is loaded to count them. Cached."""
    import torch

    from bench import metrics

    info, model_info = DATASETS.get(config.dataset), MODELS.get(config.model)
    shape = info.input_shape or model_info.input_shapes[0]
    classes = info.num_classes or (model_info.classes or (10,))[0]
    key = f"{config.model}|{config.dataset}|{'x'.join(map(str, shape))}|{classes}"
    known = cache.read_json("macs")
    if key not in known:
        cpu = torch.device("cpu")
        dense, _ = metrics.macs(model_info.build(classes), tuple(shape), cpu)
        num_train = info.num_train
        if num_train is None:
            num_train = info.load(config.data_dir, cpu, False, shape, classes).num_train
        known = cache.read_json("macs")
        known[key] = dict(macs=dense, num_train=num_train)
        cache.write_json("macs", known)
    return known[key]["macs"], known[key]["num_train"]


def _device_rate(device: Any, steps: int = 5) -> float:
    """MACs per second of dense SGD training steps of RATE_MODEL on `device` (median of `steps`
    after a warm-up), counted as TRAIN_PASSES x forward MACs. Cached per device, torch, threads."""
    import torch
    import torch.nn.functional as F

    from bench import metrics

    key = f"{metrics.device_name(device)}|torch {torch.__version__}|{torch.get_num_threads()} threads"
    rates = cache.read_json("rates")
    if key in rates:
        return float(rates[key])
    info = MODELS.get(RATE_MODEL)
    shape, batch = info.input_shapes[0], RATE_BATCH
    torch.manual_seed(0)
    model = info.build(10).to(device)
    dense, _ = metrics.macs(model, shape, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    times = []
    for _ in range(1 + steps):
        metrics.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        metrics.synchronize(device)
        times.append(time.perf_counter() - t0)
    rate = metrics.TRAIN_PASSES * dense * batch / median(times[1:])
    rates = cache.read_json("rates")
    rates[key] = rate
    cache.write_json("rates", rates)
    return rate


def _probe(
    config: RunConfig, steps: int, max_s: float = 3.0, cpu_batch: int = 4
) -> tuple[float, float, int | None, str]:
    """(load s, s per training step, training examples before the validation split or None, how)
    of one cell, timed here (the pruner's steps per budget step: `budget_multiple`).

    The step is timed alone: `Trainer.train_step` on one batch fetched before the clock starts
    (the loader is timed on its own, `bench.loader_probe`, and a cell takes the slower of the
    two), each step's wall time with the device synchronized, median of up to `steps` steps (at
    least MIN_TIMED; no more once `max_s` seconds of timed steps have passed). The warm-up
    (WARMUP_STEPS: on CUDA, cuDNN's algorithm search and the allocator's first blocks) is neither
    timed nor counted against `max_s`.
    On a CPU the steps take `cpu_batch` examples and their time is scaled linearly to the budget's
    batch size: a full ResNet-50 batch takes minutes there. A dataset that is not on disk is
    replaced by random data of its shape; the step count then comes from its standard size."""
    import torch

    from bench import metrics  # torch: imported when a probe runs
    from bench.data.synthetic import load_synthetic
    from bench.run.build import build
    from bench.run.distributed import resolve_device
    from bench.run.trainer import Trainer

    b, info, model = config.budget, DATASETS.get(config.dataset), MODELS.get(config.model)
    device = resolve_device(config.device)
    batch = b.batch_size if device.type == "cuda" else min(b.batch_size, cpu_batch)
    warmup = WARMUP_STEPS["cuda" if device.type == "cuda" else "cpu"]
    how = ["timed probe"] + ([f"{torch.get_num_threads()} thread(s)"] if device.type == "cpu" else [])
    how += [f"batch {batch} scaled to {b.batch_size}"] if batch < b.batch_size else []
    shape = info.input_shape or model.input_shapes[0]
    classes = info.num_classes or (model.classes or (10,))[0]
    t0 = time.perf_counter()
    try:
        data = info.load(config.data_dir, device, b.augment, shape, classes)
        num_train: int | None = data.num_train
    except (ConfigError, OSError) as e:
        how.append(f"random stand-in data: {config.dataset} is not on disk here" if info.on_disk else
                   f"random stand-in data: {type(e).__name__}: {e}")
        data = load_synthetic("", device, b.augment, shape, classes, num_train=2 * batch, num_test=batch)
        num_train = info.num_train
    with tempfile.TemporaryDirectory() as tmp:
        small = dataclasses.replace(config, budget=dataclasses.replace(b, batch_size=batch))
        built = build(small, data=data)
        trainer = Trainer(built, Path(tmp))
        setup_s = time.perf_counter() - t0
        x, y = next(iter(data.train_batches(batch, 0, config.seed)))  # held: no loading is timed
        for _ in range(warmup):
            trainer.train_step(x, y)
        times: list[float] = []
        while len(times) < MIN_TIMED or (len(times) < steps and sum(times) < max_s):
            metrics.synchronize(device)
            t_step = time.perf_counter()
            trainer.train_step(x, y)
            metrics.synchronize(device)
            times.append(time.perf_counter() - t_step)
    timed = f"the training step alone on a held batch: median of {len(times)} after {warmup} warm-up"
    return setup_s, median(times) * b.batch_size / batch, num_train, f"{', '.join(how)}; {timed}"
