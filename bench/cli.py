"""`bench` command line.

Subcommands are a table (`COMMANDS`: name -> module, help); a subcommand's module is imported
only when that subcommand runs, and gives its flags with `configure(parser)`, so `bench --help`
answers without importing torch. Every subcommand takes `--import MODULE` (repeatable): a
user's module (or `.py` file) whose pruners, models and data sets then work like built-in ones
(see bench.registry). Budget flags are generated from the `Budget` dataclass.

Bad input (unknown names, wrong types, out-of-range values) exits with status 2 and a message
naming the field and the valid choices, before anything runs or is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import bench
from bench import registry
from bench.callbacks import summary_line
from bench.config import Budget, add_run_flags
from bench.errors import ConfigError, clip_words
from bench.registry import DATASETS, MODELS, PRUNERS
from bench.runs import FILES, RunDir, RunStatus
from bench.spec import config_from_args
from bench.validate import check_data, check_device_here, check_out

# name -> ("module:function" that adds the command's flags to its parser, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("bench.cli:configure_run", "train one run and write its folder under --out"),
    "list": ("bench.cli:configure_list", "every registered pruner, model and dataset, with hyperparameters"),
    "sweep": ("bench.sweep", "run a TOML grid of runs locally or as one SLURM job array"),
    "status": ("bench.status", "done / running / pending / failed / diverged cells of a sweep folder"),
    "gather": ("bench.results", "collect run folders into results.parquet (+ .history.parquet)"),
    "leaderboard": ("bench.board.cli:configure_leaderboard",
                    "Markdown + CSV + figures from a results.parquet"),
    "board": ("bench.board.cli:configure", "run DIR/sweep.toml, gather it, write the leaderboard into DIR"),
    "calibrate": ("bench.calibrate", "search a pruner's sparsity knob (gRDA c, STR s_weight_decay, VD "
                  "kl_weight) for a target sparsity; the answer is a full-budget run"),
    "compare": ("bench.compare", "two pruners, settings or run sets, paired by seed: differences in top-1 "
                "(95% interval, p-value), sparsity, time and memory"),
    "export": ("bench.export", "write a finished run's pruned model as safetensors (+ ONNX), checked by "
               "loading it back"),
    "speedup": ("bench.speedup", "measure the inference speed-up per backend of finished runs (no "
                "retraining)"),
    "valley": ("bench.valley.cli", "is a pruned model in its dense run's valley: loss along the path between "
               "them, barrier, Hessian top-k projection of their difference"),
    "readme": ("bench.readme", "rewrite the README's generated blocks (column glossary, what the boards "
               "find, valley findings) from the code and the committed boards"),
    "perf": ("bench.perf", "wall time and memory of every pruner vs dense SGD-momentum, and the harness's "
             "speed"),
}


# ------------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    from bench.run.job import run  # torch: only when a run is asked for

    config = config_from_args(args)
    check_data(config)  # missing dataset files: exit 2 before the run folder is created
    check_device_here(config.device)
    check_out(args.out, "--out")
    RunDir(Path(args.out), config.run_id).check_no_links()  # exit 2 before anything is written
    try:
        result = run(config, args.out, progress=not args.quiet and not args.json, force=args.force)
    except Exception as e:  # recorded as failed in the run folder, with its traceback
        if disk_full(e):
            raise  # said in one line by `main`
        folder = f"{args.out.rstrip('/')}/{config.run_id}"
        print(f"bench run: the run failed: {type(e).__name__}: {e}\n(recorded in {folder}/{FILES['result']}, "
              f"traceback in {folder}/{FILES['traceback']})", file=sys.stderr)
        return 1
    folder = f"{args.out.rstrip('/')}/{result['run_id']}"
    print(json.dumps(result, indent=2) if args.json else summary_line(result, folder))
    return 0 if result["status"] == RunStatus.OK else 1


def cmd_list(args: argparse.Namespace) -> int:
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
        print(f"  {name:<14} {shape:<10} {classes:<6} {_first_line(info.description)}{where}")
    print("\nbudget (shared; flags of `bench run`):")
    for f in dataclasses.fields(Budget):
        print(f"  --{f.name.replace('_', '-'):<18} {f.default!r}: {f.metadata.get('help', '')}")
    return 0


def _first_line(text: str | None) -> str:
    """A docstring's first paragraph, on one line (a sentence may wrap over several)."""
    return " ".join((text or "").strip().split("\n\n", 1)[0].split())


def configure_run(p: argparse.ArgumentParser) -> None:
    add_run_flags(p)
    p.add_argument("--out", default="runs", help="parent folder of run folders")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar: one line per epoch on stderr instead (as in a job's log)")
    p.add_argument("--json", action="store_true",
                   help="print the full result record as JSON, not the summary line")
    p.add_argument("--force", action="store_true", help="train again from scratch even if the run finished "
                   "(the old result is kept as result.replaced.json)")
    p.set_defaults(func=cmd_run)


def configure_list(p: argparse.ArgumentParser) -> None:
    p.set_defaults(func=cmd_list)


# ------------------------------------------------------------------------------------ parser


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors echo long values clipped (see bench.errors.clip)."""

    def error(self, message: str):  # type: ignore[override]
        super().error(clip_words(message))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the flags of `command` only: its module is the only one imported."""
    parser = Parser(prog="bench", description="Benchmark pruners under one shared budget.")
    parser.add_argument("--version", action="version", version=f"prunebench {bench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (target, help_) in COMMANDS.items():
        # argparse %-formats a help, not a description
        p = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_)
        if name == command:
            p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                           help="import a module (or .py file) of your own pruners, models or data sets "
                           "first; repeatable")
            module, _, function = target.partition(":")
            getattr(importlib.import_module(module), function or "configure")(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    name = f"bench {command}" if command in COMMANDS else "bench"
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        registry.load_plugins(args.imports)
        return args.func(args)
    except ConfigError as e:
        print(f"{name}: error: {clip_words(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bench list | head`: the reader has all it wanted
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        trains = command in ("run", "sweep", "board", "calibrate")
        print(f"\n{name}: interrupted (Ctrl-C)" + ("; the same command resumes the runs from their last "
              "checkpoints" if trains else ""), file=sys.stderr)
        return 130
    except OSError as e:
        if not disk_full(e):
            raise
        print(f"{name}: error: disk full writing {e.filename or 'the output'}; free space there and run "
              "the command again", file=sys.stderr)
        return 1


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e))


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
