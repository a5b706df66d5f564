"""`bench perf`: wall time and memory of every pruner against dense SGD with momentum, and the
speed of the harness itself.

Four suites (all by default; `suites.py` says what each measures): `pruners`, `optimizer`,
`harness`, `compact`. Timings are medians over many calls after a warm-up round, interleaved
between the compared variants in round-robin blocks (the order rotates every round),
device-synchronized, and reported as ratios: absolute times are not comparable between runs on a
shared machine.

    options.py   suite names, the reference pruner, Sizes, PerfOptions (no torch)
    timing.py    time_calls, time_block, round_robin, summary, ratio, check
    suites.py    the bench_* measurements and the runner of each suite (its checks)
    fixtures.py  run folders for the gather/leaderboard timing
    report.py    the report dict as Markdown tables
    startup.py   `--startup`: a small run's whole process against `import torch`

This module holds the driver (`run_perf`) and the CLI. Importing it (and so building `bench`'s
parser) imports no torch: the suites are imported when they run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.config import (
    Budget,
    RunConfig,
    add_dataclass_flags,
    add_run_level_flags,
    dataclass_from_args,
    parse_sets,
    run_level_from_args,
)
from bench.errors import ConfigError
from bench.io import write_json
from bench.perf.options import PERF_MOMENTUM, QUICK, REFERENCE, SMALL_RUN, SUITES, PerfOptions, Sizes
from bench.perf.report import format_report

__all__ = [
    "PERF_MOMENTUM",
    "QUICK",
    "REFERENCE",
    "SMALL_RUN",
    "SUITES",
    "PerfOptions",
    "Sizes",
    "cmd_perf",
    "configure",
    "format_report",
    "run_perf",
]


def run_perf(opts: PerfOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the selected suites; returns the report (meta, per-suite results, checks)."""
    import torch

    from bench import metrics
    from bench.perf.suites import RUNNERS
    from bench.run.distributed import resolve_device

    ref_cfg = opts.configs[REFERENCE]
    device = resolve_device(ref_cfg.device)
    report: dict[str, Any] = {"meta": {
        "model": ref_cfg.model, "dataset": ref_cfg.dataset, "pruners": list(opts.configs),
        "budget": dataclasses.asdict(ref_cfg.budget), "suites": list(opts.suites), "quick": opts.quick,
        "sizes": dataclasses.asdict(opts.sizes), "threads": torch.get_num_threads(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), **metrics.provenance(device),
    }}
    checks = []
    seconds: dict[str, float] = {}
    for suite in SUITES:
        if suite in opts.suites:
            t0 = time.perf_counter()
            checks += RUNNERS[suite](opts, device, report, log)
            seconds[suite] = round(time.perf_counter() - t0, 1)
    report["checks"] = [dataclasses.asdict(c) for c in checks]
    report["meta"].update(suite_seconds=seconds, finished_at=datetime.now(UTC).isoformat(timespec="seconds"))
    return report


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
    import torch

    from bench.registry import PRUNERS
    from bench.run.distributed import resolve_device
    from bench.validate import check_config

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
    base = RunConfig(model=args.model, dataset=args.dataset, budget=budget, **run_level_from_args(args))
    device = resolve_device(base.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {base.device}: CUDA is not available here; valid choices: auto, cpu")
    configs = {p: check_config(dataclasses.replace(base, pruner=p, hparams=hparams[p], device=str(device)))
               for p in pruners}
    return PerfOptions(configs, tuple(suites), QUICK if args.quick else Sizes(), args.quick)


def cmd_perf(args: argparse.Namespace) -> int:
    if args.startup:  # subprocesses only: this process need not import torch
        from bench.perf.startup import cmd_startup

        return cmd_startup(args)
    import torch

    if args.json:
        from bench.validate import check_out_file

        check_out_file(args.json, "--json")  # before the measurements, not after them
    if args.kernels:
        from bench.perf.kernels import cmd_kernels

        return cmd_kernels(args)
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
    p.add_argument("--kernels", action="store_true",
                   help="instead: the kernel table, dense vs CSR/BSR (and 2:4 on CUDA) matrix products on "
                   "standard layer shapes from 50%% to 99%% sparsity, and the crossover sparsity")
    p.add_argument("--startup", action="store_true",
                   help="instead: a 1-epoch digits `bench run` against `python -c \"import torch\"`, as "
                   "whole processes, interleaved (--repeats), and the heavy modules the run imports")
    p.add_argument("--repeats", type=int, default=7, help="--startup: interleaved repeats")
    p.add_argument("--model", default="resnet20", help="model name (see `bench list`)")
    p.add_argument("--dataset", default="synthetic", help="dataset name (synthetic takes the model's shape)")
    p.add_argument("--pruners", default=None, help="comma-separated pruners (default: all registered); "
                   f"{REFERENCE} is always measured as the reference")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="PRUNER.KEY=VALUE",
                   help="a pruner hyperparameter, repeatable (e.g. --set grda.c=0.02)")
    p.add_argument("--suite", default="all", help=f"all, or comma-separated: {', '.join(SUITES)}")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests; numbers are meaningless)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the full report as JSON")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    add_run_level_flags(p, ("seed", "device", "data_dir"))  # the timed models' and batches' seed
    budget = p.add_argument_group("budget")
    budget.add_argument("--momentum", default=None, metavar="MOMENTUM", help="SGD momentum of the SGD-based "
                        f"pruners (default here: {PERF_MOMENTUM}; gRDA uses none by design)")
    add_dataclass_flags(budget, Budget, fields=[f for f in dataclasses.fields(Budget)
                                                if f.name not in ("momentum", "init")  # times from scratch
                                                and not f.metadata.get("computed")])
    p.set_defaults(func=cmd_perf)
