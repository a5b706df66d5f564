"""Can the data loader keep the device busy? The dry run's step probe times a few steps, which a
loader's prefetch queue can feed for a while however slow it is; a loader that then falls behind
makes every step wait. So the dry run also times the loader alone, for about `LOADER_S` seconds,
with the CPUs a job of the executor gets (its profile's `cpus_per_task`), and each cell's epoch
takes the slower of the two: the steps, or the loader.

The loader is timed with this machine's cores when it has fewer than the profile gives a job and
scaled to the profile's count (decoding images is parallel across workers, one per core)."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.estimate import Estimate
from bench.registry import DATASETS, MODELS

LOADER_S = 30.0  # seconds the loader is timed (at most)
LOADER_BATCHES = 200  # ...or this many batches, whichever comes first


@dataclasses.dataclass(frozen=True)
class LoaderTime:
    s_per_batch: float  # steady state: the second half of the timed batches, scaled to `workers`
    batches: int
    workers: int  # the loader workers a job of the profile has
    timed_workers: int  # the workers it was timed with here


def job_workers(cpus: int) -> int:
    """Loader workers of a job with `cpus` CPUs: one core is left to the training process."""
    return max(1, cpus - 1)


def time_loader(data: Any, batch_size: int, seed: int, cpus: int, tasks: int = 1, max_s: float | None = None,
                max_batches: int | None = None) -> LoaderTime:
    """Seconds per batch of one rank's slice of the global batches (`tasks` ranks), the loader
    alone, in steady state: the first batch (starting the workers) is not timed, and the rate is
    that of the second half of the batches (after a prefetch queue has drained)."""
    from bench.data.imagenet import job_cpus

    max_s = LOADER_S if max_s is None else max_s
    max_batches = LOADER_BATCHES if max_batches is None else max_batches
    workers = job_workers(cpus)
    timed = workers
    if hasattr(data, "num_workers"):  # a loader with worker processes: as many as a job has, at most ours
        timed = min(workers, job_workers(job_cpus()))
        data.num_workers = timed
    shard = {"shard": (0, tasks)} if tasks > 1 else {}
    stamps: list[float] = []
    epoch, start = 0, time.perf_counter()
    while len(stamps) < max_batches + 1 and time.perf_counter() - start < max_s:
        n_before = len(stamps)
        for _ in data.train_batches(batch_size, epoch, seed, **shard):
            stamps.append(time.perf_counter())
            if len(stamps) >= max_batches + 1 or time.perf_counter() - start >= max_s:
                break
        if len(stamps) == n_before:
            break  # an empty epoch
        epoch += 1
    if len(stamps) < 3:
        raise ConfigError("the loader gave fewer than 3 batches to time")
    half = stamps[len(stamps) // 2 :]
    per_batch = (half[-1] - half[0]) / max(len(half) - 1, 1)
    return LoaderTime(per_batch * timed / workers, len(stamps) - 1, workers, timed)


def executor_cpus(executor: Any) -> int:
    """CPUs per task of a job of `executor`: its SLURM profile's, else this machine's."""
    from bench.data.imagenet import job_cpus

    profile = getattr(executor, "profile", None)
    return getattr(profile, "cpus_per_task", None) or job_cpus()


def _load(config: RunConfig) -> Any:
    from bench.run.distributed import resolve_device

    info, model = DATASETS.get(config.dataset), MODELS.get(config.model)
    shape = info.input_shape or model.input_shapes[0]
    classes = info.num_classes or (model.classes or (10,))[0]
    return info.load(config.data_dir, resolve_device(config.device), config.budget.augment, shape, classes)


def loader_bound(cells: list[RunConfig], est: Estimate, cpus: int, tasks: int = 1,
                 max_s: float | None = None) -> Estimate:
    """`est` with each probed cell's epoch time raised to its loader's, where the loader alone is
    slower than the steps (timed with `cpus` CPUs per task, `tasks` tasks a run); `rates` say
    which bounds each cell. Cells timed from finished runs (loader included) stay as they are."""
    groups: dict[str, list[RunConfig]] = defaultdict(list)
    for c in cells:
        groups[f"{c.pruner}/{c.model}/{c.dataset}"].append(c)
    times, rates = dict(est.cells), dict(est.rates)
    timed: dict[tuple, LoaderTime | str] = {}  # the loader is the same for every pruner of a data set
    for label, group in groups.items():
        cell = times.get(label)
        if cell is None or cell.timed_on == "finished runs":
            continue
        config = group[0]
        b = config.budget
        key = (config.dataset, config.data_dir, config.model, config.device, b.batch_size, b.augment,
               b.val_fraction, config.seed)
        if key not in timed:
            try:
                data = _load(config).holdout(b.val_fraction)
                timed[key] = time_loader(data, b.batch_size, config.seed, cpus, tasks, max_s)
            except (ConfigError, OSError) as e:
                timed[key] = f"{type(e).__name__}: {e}"
        lt = timed[key]
        if isinstance(lt, str):
            rates[label] += f"; the loader not timed ({lt})"
            continue
        loader_epoch_s = lt.s_per_batch * cell.steps_per_epoch
        scaled = f", timed with {lt.timed_workers} and scaled" if lt.timed_workers != lt.workers else ""
        note = (f"the loader alone {lt.s_per_batch * 1e3:.3g} ms/batch with {cpus} CPUs per task "
                f"({lt.workers} workers{scaled})")
        if loader_epoch_s > cell.epoch_s:
            times[label] = dataclasses.replace(cell, epoch_s=loader_epoch_s)
            rates[label] += f"; {note}: slower than the steps, so the loader sets the pace"
        else:
            rates[label] += f"; {note}: keeps up"
    # a probed group has no finished run: the extra time is every one of its cells'
    extra = sum((times[k].total_s - est.cells[k].total_s) * len(groups[k]) for k in times if k in groups)
    longest = max([est.max_cell_s, *(t.total_s for t in times.values())])
    return dataclasses.replace(est, total_s=est.total_s + extra, todo_s=est.todo_s + extra,
                               max_cell_s=longest, rates=rates, cells=times)
