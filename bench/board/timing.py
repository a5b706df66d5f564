"""The timing phase: after a board's accuracy runs, every (pruner, setting) is timed again, one
process, serially, interleaved with its dense model, over a fixed number of training steps after
warm-up; the board's time columns and cost figure then come from these records alone.

Why: the accuracy runs of a sweep share the machine with each other (and with anything else
running), so their wall times measure the load as much as the method. Here each setting and its
dense model take turns in rounds (bench.perf.timing.round_robin, rotating the order), so a drift
in load hits both; a setting's cost is the median over rounds of its step time over dense's in
the same round. A record whose machine was loaded (bench.record.is_loaded) is kept, marked, and
never used by a board.

    bench board leaderboards/digits-mlp --time          # accuracy runs, then the timing phase

Records: DIR/timing/timing-<run_id of the setting's first cell>.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.io import read_json, write_json
from bench.record import is_loaded

STEPS, WARMUP, ROUNDS = 10, 1, 5  # steps per block, discarded warm-up rounds, kept rounds
COLUMNS = [
    "run_id",
    "pruner",
    "timed_step_ms",
    "timed_dense_step_ms",
    "timed_vs_dense",
    "timed_vs_dense_low",
    "timed_vs_dense_high",
    "timing_loaded",
    "dense_run_id",
]


def optimizer_family(config: RunConfig) -> str:
    """The optimizer family `config`'s pruner trains with ("sgd", "sgd_momentum", "adam"): which dense
    model it is compared with (bench.pruner.Pruner.optimizer_family; nothing is built)."""
    from bench.pruner import RunContext
    from bench.registry import PRUNERS

    cls = PRUNERS.get(config.pruner)
    return cls(cls.Hparams(**config.hparams), config.budget, RunContext(seed=config.seed)).optimizer_family


def settings(cells: Iterable[RunConfig]) -> list[tuple[RunConfig, list[str], RunConfig]]:
    """Per (data set, model, budget, pruner, hyperparameters) of a sweep's non-dense cells: one config
    to time (the lowest seed), the run ids it stands for (every seed), and the dense config it is
    timed against: its own dense model (same data set, model, budget and optimizer family, lowest
    seed). A setting whose family has no dense cell is not timed."""
    cells = list(cells)

    def budget(c: RunConfig) -> str:
        return json.dumps(dataclasses.asdict(c.budget), sort_keys=True, default=str)

    dense = {
        (c.dataset, c.model, budget(c), optimizer_family(c)): c
        for c in sorted(cells, key=lambda c: c.seed, reverse=True)
        if c.pruner == "dense"
    }
    groups: dict[tuple[str, ...], list[RunConfig]] = {}
    for c in cells:
        if c.pruner != "dense":
            hparams = json.dumps(c.hparams, sort_keys=True, default=str)
            key = (c.dataset, c.model, budget(c), c.pruner, hparams)
            groups.setdefault(key, []).append(c)
    out = []
    for key, group in groups.items():
        group.sort(key=lambda c: c.seed)
        ref = dense.get((*key[:3], optimizer_family(group[0])))
        if ref is not None:
            out.append((group[0], [c.run_id for c in group], ref))
    return out


def _trainer(config: RunConfig, folder: Path) -> tuple[Any, Any, Any]:
    """(trainer, device, data) for timing `config`'s training steps (the same construction as
    bench.estimate's probe)."""
    from bench.registry import DATASETS, MODELS
    from bench.run.build import build
    from bench.run.distributed import resolve_device
    from bench.run.trainer import Trainer

    b, info, model = config.budget, DATASETS.get(config.dataset), MODELS.get(config.model)
    device = resolve_device(config.device)
    shape = info.input_shape or model.input_shapes[0]
    classes = info.num_classes or (model.classes or (10,))[0]
    data = info.load(config.data_dir, device, b.augment, shape, classes)
    return Trainer(build(config, data=data), folder), device, data


def _block(config: RunConfig, folder: Path, steps: int) -> Any:
    """A function timing `steps` training steps of `config` (ms each), resuming where it left off."""
    from bench.perf.timing import time_block

    trainer, device, data = _trainer(config, folder)
    state = {"epoch": 0, "batches": iter(())}

    def next_batch() -> tuple[Any, Any]:
        batch = next(state["batches"], None)
        while batch is None:
            state["batches"] = iter(data.train_batches(config.budget.batch_size, state["epoch"], config.seed))
            state["epoch"] += 1
            batch = next(state["batches"], None)
        return batch

    def block() -> list[float]:
        times = []
        for _ in range(steps):
            x, y = next_batch()
            times.append(time_block(lambda x=x, y=y: trainer.train_step(x, y), device))
        return times

    return block


def time_setting(
    config: RunConfig,
    run_ids: list[str],
    dense: RunConfig,
    steps: int = STEPS,
    warmup: int = WARMUP,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """One timing record: `config` and `dense` interleaved, `rounds` rounds of `steps` steps each."""
    from bench.perf.timing import round_robin

    before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        blocks = {
            "setting": _block(config, Path(tmp) / "a", steps),
            "dense": _block(dense, Path(tmp) / "d", steps),
        }
        timed = round_robin(blocks, rounds, warmup=warmup)
    after = os.getloadavg()[0]
    per_round = [
        statistics.median(a) / statistics.median(d)
        for a, d in zip(timed["setting"], timed["dense"], strict=True)
    ]
    return {
        "run_ids": run_ids,
        "pruner": config.pruner,
        "hparams": config.hparams,
        "dataset": config.dataset,
        "model": config.model,
        "dense_run_id": dense.run_id,
        "steps": steps,
        "warmup_rounds": warmup,
        "rounds": rounds,
        "batch_size": config.budget.batch_size,
        "step_ms": statistics.median(t for r in timed["setting"] for t in r),
        "dense_step_ms": statistics.median(t for r in timed["dense"] for t in r),
        "ratio_per_round": per_round,
        "load_avg_before": before,
        "load_avg_after": after,
        "cpu_count": os.cpu_count(),
        "loaded": is_loaded(before, after, os.cpu_count()),
    }


def time_board(
    cells: Iterable[RunConfig],
    folder: str | Path,
    steps: int = STEPS,
    warmup: int = WARMUP,
    rounds: int = ROUNDS,
) -> list[Path]:
    """Time every setting of `cells` serially into `folder` (one record each); returns the paths."""
    folder = Path(folder)
    written = []
    for config, run_ids, dense in settings(cells):
        path = folder / f"timing-{run_ids[0]}.json"
        write_json(path, time_setting(config, run_ids, dense, steps, warmup, rounds))
        written.append(path)
    return written


def _ratio_interval(ratios: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Median of the per-round ratios and its distribution-free interval (binomial order statistics)."""
    from scipy import stats

    v = np.sort(np.asarray(ratios, float))
    n = len(v)
    lo_k, hi_k = stats.binom.ppf([(1 - confidence) / 2, (1 + confidence) / 2], n, 0.5).astype(int)
    return float(np.median(v)), float(v[max(lo_k - 1, 0)]), float(v[min(hi_k, n - 1)])


def load_timings(folder: str | Path) -> pd.DataFrame:
    """The timing records in `folder`, one row per run id they stand for (COLUMNS); a malformed record
    is a ConfigError naming the file."""
    rows = []
    for path in sorted(Path(folder).glob("timing-*.json")):
        r = read_json(path)
        ok = (
            isinstance(r, dict)
            and isinstance(r.get("run_ids"), list)
            and isinstance(r.get("ratio_per_round"), list)
        )
        if (
            not ok
            or not r["ratio_per_round"]
            or not all(isinstance(x, int | float) for x in r["ratio_per_round"])
        ):
            raise ConfigError(
                f"{path}: malformed timing record (run_ids, ratio_per_round); remake it with "
                "`bench board DIR --time` or remove it"
            )
        mid, lo, hi = _ratio_interval(r["ratio_per_round"])
        rows += [
            (
                run_id,
                r.get("pruner"),
                r.get("step_ms"),
                r.get("dense_step_ms"),
                mid,
                lo,
                hi,
                bool(r.get("loaded")),
                r.get("dense_run_id"),
            )
            for run_id in r["run_ids"]
        ]
    return pd.DataFrame(rows, columns=COLUMNS)
