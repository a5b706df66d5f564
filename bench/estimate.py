"""The compute a sweep needs (`bench sweep FILE --dry-run`): each cell's budget extrapolated from
the finished runs of the same (pruner, model, dataset) in the out folder, else from a short timed
probe of a few training steps on this machine: wall time per step, data loading included."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

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


def estimate(spec: SweepSpec, out: Path | None = None, probe_steps: int = 8) -> Estimate:
    """Extrapolate each cell's compute to its budget: the training time of finished runs of the
    same (pruner, model, dataset) in `out`, else a short timed probe on this machine (data
    loading + steps x the step time; evaluation is not counted)."""
    import torch  # not at the top: parsing a sweep must not import torch

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
        finished = [done[c.run_id] for c in cells if done.get(c.run_id)]
        runs = [r for r in finished if r.get("train_time_s") and r.get("epochs_completed")]
        b = cells[0].budget
        if runs:
            cell_s = median(r["train_time_s"] for r in runs)
            epoch_s = median(r["train_time_s"] / r["epochs_completed"] for r in runs)
            first = runs[0]
            per_epoch = math.ceil(first["steps"] / first["epochs_completed"]) if first.get("steps") else 0
            cell_times[label] = CellTime(0.0, epoch_s, b.epochs, per_epoch, "finished runs")
            rates[label] = f"{cell_s:.3g} s of training per run (median of {len(runs)} finished here)"
        elif missing:
            unavailable.append(f"{label}: {missing}")
            continue
        else:
            try:
                setup_s, step_s, steps, how = _probe(cells[0], probe_steps)
            except Exception as e:  # out of memory, a broken pruner...: report, do not fail the dry run
                unavailable.append(f"{label}: {type(e).__name__}: {e}")
                continue
            if steps is None:
                unavailable.append(
                    f"{label}: {step_s * 1e3:.3g} ms/step ({how}); the number of steps needs the dataset"
                )
                continue
            cell_s = setup_s + steps * step_s
            per_epoch = math.ceil(steps / b.epochs)
            kind = resolve_device(cells[0].device).type
            cell_times[label] = CellTime(setup_s, per_epoch * step_s, b.epochs, per_epoch, kind)
            rates[label] = f"{step_s * 1e3:.3g} ms/step x {steps} steps + {setup_s:.2g} s to load ({how})"
        longest = max(longest, cell_s)
        total += cell_s * len(cells)
        todo += cell_s * sum(1 for c in cells if not done.get(c.run_id))
    name = "cpu" if device.type != "cuda" else str(device) if missing else torch.cuda.get_device_name(device)
    return Estimate(total, todo, longest, name, rates, unavailable, cell_times)


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


def _probe(
    config: RunConfig, steps: int, max_s: float = 3.0, cpu_batch: int = 4
) -> tuple[float, float, int | None, str]:
    """(load s, s per training step, total steps or None, how) of one cell, timed here over up to
    `steps` steps (at least 1, no more once `max_s` seconds have passed) after one warm-up step.
    A step's time is wall time from asking the data for its batch to the step's end (device
    synchronized): data loading and augmentation count, as they do in a run.
    On a CPU the steps take `cpu_batch` examples and their time is scaled linearly to the budget's
    batch size: a full ResNet-50 batch takes minutes there. A dataset that is not on disk is
    replaced by random data of its shape; the step count then comes from its standard size."""
    from bench import metrics  # torch: imported when a probe runs
    from bench.data.synthetic import load_synthetic
    from bench.run.build import build
    from bench.run.distributed import resolve_device
    from bench.run.trainer import Trainer

    b, info, model = config.budget, DATASETS.get(config.dataset), MODELS.get(config.model)
    device = resolve_device(config.device)
    batch = b.batch_size if device.type == "cuda" else min(b.batch_size, cpu_batch)
    how = ["timed probe"] + ([f"batch {batch} scaled to {b.batch_size}"] if batch < b.batch_size else [])
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
    total_steps = b.epochs * math.ceil(num_train / b.batch_size) if num_train else None
    if b.max_steps:
        total_steps = min(total_steps or b.max_steps, b.max_steps)
    with tempfile.TemporaryDirectory() as tmp:
        small = dataclasses.replace(config, budget=dataclasses.replace(b, batch_size=batch))
        trainer = Trainer(build(small, data=data), Path(tmp))
        setup_s = time.perf_counter() - t0
        times: list[float] = []
        t0 = time.perf_counter()
        epoch = 0
        while len(times) < 2 or (len(times) < 1 + steps and time.perf_counter() - t0 < max_s):
            batches = iter(data.train_batches(batch, epoch, config.seed))
            epoch += 1
            while len(times) < 1 + steps:
                t_step = time.perf_counter()
                batch_xy = next(batches, None)
                if batch_xy is None:
                    break
                trainer.train_step(*batch_xy)
                metrics.synchronize(device)
                times.append(time.perf_counter() - t_step)
                if len(times) >= 2 and time.perf_counter() - t0 >= max_s:
                    break
    return setup_s, median(times[1:]) * b.batch_size / batch, total_steps, ", ".join(how)
