"""The compute a sweep needs (`bench sweep FILE --dry-run`): each cell's budget extrapolated from
the finished runs of the same (pruner, model, dataset) in the out folder, else from a short timed
probe of a few training steps on this machine."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

from bench.config import RunConfig
from bench.status import finished_result

if TYPE_CHECKING:
    from bench.sweep import SweepSpec


@dataclass(frozen=True)
class Estimate:
    """Compute seconds for the whole sweep and for the cells still to run, on one device."""

    total_s: float
    todo_s: float
    max_cell_s: float
    device: str
    rates: dict[str, str]  # "pruner/model/dataset" -> how its time was obtained
    unavailable: list[str]  # groups without an estimate, and why


def estimate(spec: SweepSpec, out: Path | None = None, probe_steps: int = 8) -> Estimate:
    """Extrapolate each cell's compute to its budget: the training time of finished runs of the
    same (pruner, model, dataset) in `out`, else a short timed probe on this machine (data
    loading + steps x the step time; evaluation is not counted)."""
    import torch

    from bench.train import resolve_device

    done = {c.run_id: finished_result(out, c) for c in spec.cells} if out else {}
    groups: dict[tuple[str, str, str], list[RunConfig]] = {}
    for c in spec.cells:
        groups.setdefault((c.pruner, c.model, c.dataset), []).append(c)
    total = todo = longest = 0.0
    rates: dict[str, str] = {}
    unavailable: list[str] = []
    for key, cells in groups.items():
        label = "/".join(key)
        finished = [done[c.run_id] for c in cells if done.get(c.run_id)]
        times = [r["train_time_s"] for r in finished if r.get("train_time_s")]
        if times:
            cell_s = median(times)
            rates[label] = f"{cell_s:.3g} s of training per run (median of {len(times)} finished here)"
        else:
            try:
                setup_s, step_s, steps, stand_in = _probe(cells[0], probe_steps)
            except Exception as e:  # out of memory, a broken pruner...: report, do not fail the dry run
                unavailable.append(f"{label}: {type(e).__name__}: {e}")
                continue
            if steps is None:
                unavailable.append(
                    f"{label}: {step_s * 1e3:.3g} ms/step on random stand-in data ({stand_in}); "
                    "the number of steps needs the dataset"
                )
                continue
            cell_s = setup_s + steps * step_s
            rates[label] = (
                f"{step_s * 1e3:.3g} ms/step x {steps} steps + {setup_s:.2g} s to load (timed probe)"
            )
        longest = max(longest, cell_s)
        total += cell_s * len(cells)
        todo += cell_s * sum(1 for c in cells if not done.get(c.run_id))
    device = resolve_device(spec.cells[0].device if spec.cells else "auto")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return Estimate(total, todo, longest, name, rates, unavailable)


def _probe(config: RunConfig, steps: int, max_s: float = 3.0) -> tuple[float, float, int | None, str]:
    """(load s, s per training step, total steps or None, why stand-in data) of one cell, timed
    here over up to `steps` steps (at least 1, no more once `max_s` seconds have passed) after
    one warm-up step.
    A dataset that is not on disk is replaced by random data of the model's shape (the step time
    holds; the number of steps does not, unless the budget caps it with max_steps)."""
    from bench.errors import ConfigError
    from bench.registry import DATASETS
    from bench.train import Trainer

    stand_in = ""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            trainer = Trainer(config, Path(tmp), progress=False)
        except (ConfigError, OSError) as e:
            on_disk = DATASETS.get(config.dataset).on_disk
            stand_in = f"{config.dataset} is not on disk here" if on_disk else f"{type(e).__name__}: {e}"
            trainer = Trainer(dataclasses.replace(config, dataset="synthetic"), Path(tmp), progress=False)
        setup_s = time.perf_counter() - t0
        total_steps: int | None = trainer.total_steps
        if stand_in:
            total_steps = config.budget.max_steps or None
        t0 = time.perf_counter()
        while len(trainer.step_times) < 2 or (
            len(trainer.step_times) < 1 + steps and time.perf_counter() - t0 < max_s
        ):
            trainer.total_steps = trainer.step + 1  # train_epoch takes one step and returns
            trainer.train_epoch()
        times = list(trainer.step_times)[1:]
    return setup_s, median(times) / 1e3, total_steps, stand_in
