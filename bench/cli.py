"""`bench` command line. Flags for the budget are generated from the `Budget` dataclass; each
subcommand other than `run` and `list` lives in the module that implements it and registers
itself through `add_cli(subparsers)` (listed in COMMAND_MODULES).

Bad input (unknown names, wrong types, out-of-range values) exits with status 2 and a message
naming the field and the valid choices, before anything runs or is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Sequence

from bench.config import Budget, RunConfig, add_dataclass_flags, dataclass_from_args, parse_sets
from bench.errors import ConfigError

# Modules that add subcommands with `add_cli(subparsers)`.
COMMAND_MODULES: tuple[str, ...] = (
    "bench.sweep", "bench.results", "bench.leaderboard", "bench.perf", "bench.calibrate",
)


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that define one run: pruner, model, dataset, hyperparameters, budget, seed."""
    parser.add_argument("--pruner", default="dense", help="pruner name (see `bench list`)")
    parser.add_argument("--model", default="mlp", help="model name (see `bench list`)")
    parser.add_argument("--dataset", default="digits", help="dataset name (see `bench list`)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pruner hyperparameter, repeatable (e.g. --set c=0.02 --set mu=0.6)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data", help="where on-disk datasets live")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_dataclass_flags(parser, Budget, "budget (shared by every pruner in a comparison)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated RunConfig (hyperparameters resolved) from `add_run_flags` flags."""
    from bench.train import check_config

    config = RunConfig(
        pruner=args.pruner,
        model=args.model,
        dataset=args.dataset,
        hparams=parse_sets(args.sets),
        budget=dataclass_from_args(Budget, args, "budget"),
        seed=args.seed,
        data_dir=args.data_dir,
        device=args.device,
    )
    return check_config(config)


# ------------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from bench.train import check_data, run

    config = config_from_args(args)
    check_data(config)  # missing dataset files: exit 2 before the run folder is created
    result = run(config, args.out, progress=not args.quiet)
    keys = (
        "run_id",
        "status",
        "top1",
        "sparsity",
        "sparsity_all",
        "flops_dense",
        "flops_sparse",
        "train_time_s",
        "step_time_ms",
        "peak_memory_bytes",
        "state_bytes",
    )
    print(json.dumps({k: result.get(k) for k in keys}, indent=2))
    print(f"run folder: {args.out.rstrip('/')}/{result['run_id']}", file=sys.stderr)
    return 0 if result["status"] == "ok" else 1


def cmd_list(args: argparse.Namespace) -> int:
    from bench.registry import DATASETS, MODELS, PRUNERS

    print("pruners (hyperparameters: default, help):")
    for name, cls in PRUNERS.items():
        print(f"  {name:<12} {_first_line(cls.__doc__)}")
        for field, default, help_ in cls.describe():
            print(f"      {field} = {default!r}: {help_}")
    print("\nmodels (input shapes, classes):")
    for name, info in MODELS.items():
        classes = "any" if info.classes is None else "/".join(map(str, info.classes))
        shapes = " | ".join("x".join(map(str, s)) for s in info.input_shapes)
        print(f"  {name:<16} {shapes:<12} classes {classes:<5} {_first_line(info.description)}")
    print("\ndatasets (input shape, classes):")
    for name, info in DATASETS.items():
        shape = "x".join(map(str, info.input_shape)) if info.input_shape else "model's"
        where = " [on disk under --data-dir]" if info.on_disk else ""
        classes = info.num_classes or "model"
        print(f"  {name:<12} {shape:<10} {classes:<6} {_first_line(info.description)}{where}")
    print("\nbudget (shared; flags of `bench run`):")
    for f in dataclasses.fields(Budget):
        print(f"  --{f.name.replace('_', '-'):<18} {f.default!r}: {f.metadata.get('help', '')}")
    return 0


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark pruners under one shared budget.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train one run and write its folder under --out")
    add_run_flags(p)
    p.add_argument("--out", default="runs", help="parent folder of run folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="every registered pruner, model and dataset, with hyperparameters")
    p.set_defaults(func=cmd_list)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"bench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
