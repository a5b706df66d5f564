"""What a board's sweep costs on this machine, per pruner, from runs of its own cells timed here.

    OMP_NUM_THREADS=1 .venv/bin/python tests/perf_board_cost.py leaderboards/fashion-lenet300/sweep.toml \
        [--set KEY.PATH=VALUE ...] [--cores 2] [--short 1 --long 3]

For each pruner of the sweep, one of its cells (seed 0, its last setting: the highest level) runs
whole (`bench.run.job.run`: loading, training, per-epoch evaluation, final evaluation and speed-up
measurement) with `--short` and with `--long` epochs, one thread, in a temporary folder. The
difference gives its time per epoch, the rest its fixed cost per run (CPU time of this process:
with one thread, the wall time on a quiet core, even when other work shares the machine); a cell then costs
fixed + epochs x per-epoch, and the board the sum over its cells. `--cores` jobs at once (the
local executor's default: one per core) divide it. Epoch times differ little between the phases
of a pruner's schedule on a small network; the total is an estimate from measured epoch times.
Not collected by pytest (timings, not tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import defaultdict

import torch

from bench.registry import populate
from bench.run.job import run
from bench.spec import load_sweep


def timed_run(config, epochs: int, out: str) -> float:
    config = dataclasses.replace(config, budget=dataclasses.replace(config.budget, epochs=epochs))
    t0 = time.process_time()
    record = run(config, out)
    if record["status"] != "ok":
        raise RuntimeError(f"{config.run_id}: {record['status']}: {record.get('error')}")
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--short", type=int, default=1)
    ap.add_argument("--long", type=int, default=3)
    ap.add_argument("--pruners", default="", help="comma-separated: time only these")
    args = ap.parse_args()
    torch.set_num_threads(1)
    populate()
    spec = load_sweep(args.sweep, args.sets)
    groups: dict[str, list] = defaultdict(list)
    for c in spec.cells:
        groups[c.pruner].append(c)
    only = set(filter(None, args.pruners.split(",")))
    total = 0.0
    b = spec.budget
    print(f"{spec.name}: {len(spec.cells)} cells, {b.epochs} epochs, batch {b.batch_size}")
    print(f"{'pruner':<15} {'cells':>5} {'fixed s':>8} {'epoch s':>8} {'run s':>8} {'all s':>8}")
    for pruner, cells in groups.items():
        if only and pruner not in only:
            continue
        probe = [c for c in cells if c.seed == cells[0].seed][-1]
        with tempfile.TemporaryDirectory() as tmp:
            short = timed_run(probe, args.short, tmp)
            long = timed_run(probe, args.long, tmp)
        epoch_s = (long - short) / (args.long - args.short)
        fixed_s = max(short - args.short * epoch_s, 0.0)
        run_s = fixed_s + probe.budget.epochs * epoch_s
        total += run_s * len(cells)
        print(f"{pruner:<15} {len(cells):>5} {fixed_s:>8.2f} {epoch_s:>8.2f} {run_s:>8.1f} "
              f"{run_s * len(cells):>8.0f}", flush=True)
    print(f"total: {total:.0f} s on one core = {total / 3600:.2f} h; on {args.cores} cores "
          f"{total / args.cores / 3600:.2f} h")


if __name__ == "__main__":
    main()
