"""Measured inference speed-up of finished runs: `bench speedup RUN_DIR...`.

    bench speedup runs/digits-mlp          # every finished run under the folder
    bench speedup runs/x/grda-mlp-... --device cpu --force

A run's final model is rebuilt from its folder (config.json + checkpoint.pt, the pruner's
`finalize`: exactly the model its result was evaluated on) and measured by
`bench.inference.measure_speedup` (backends, checks, timing: see there); the `speedup_*` fields
(`bench.record.RunRecord`) are added to its result.json, nothing retrained and no other field
changed. The trainer records the same fields at the end of every run, so this command is for runs
that finished before it did, or for timing on another device.

The board's figure of measured against theoretical speed-up is `bench.plots.speedup_vs_theoretical`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from bench.errors import ConfigError
from bench.inference import measure_speedup, measure_trained
from bench.io import read_json, write_json
from bench.record import renamed
from bench.run.checkpoint import load_built
from bench.run.distributed import resolve_device
from bench.runs import RunDir, RunStatus

__all__ = ["add_speedup", "measure_speedup", "speedup_for_run"]

def speedup_for_run(run_dir: str | Path, device: str | None = None, **options: Any) -> dict[str, Any]:
    """The `speedup_*` fields of a finished run (status ok), measured on `device` (default: the
    run's); `options` go to `measure_speedup` (batch_size, repeats, budget_s, ...)."""
    run_dir = Path(run_dir)
    result = read_json(RunDir.at(run_dir).result)
    if result is None or result.get("status") != RunStatus.OK:
        status = None if result is None else result.get("status")
        raise ConfigError(f"{run_dir}: not a finished run (result.json status {status!r}; needs 'ok')")
    built, final = load_built(run_dir, device)
    counts = renamed(result)  # a result from before the macs_* names has flops_*
    flops = (counts["macs_dense"], counts["macs_sparse"]) if counts.get("macs_sparse") else None
    return measure_trained(final, built.data, built.device, built.dense_model, flops, **options)


def add_speedup(run_dir: str | Path, device: str | None = None, **options: Any) -> dict[str, Any]:
    """Measure a finished run and write its result.json with the `speedup_*` fields added (or
    replaced); every other field is kept as it was. Returns the new record."""
    fields = speedup_for_run(run_dir, device, **options)
    path = RunDir.at(run_dir).result
    result = read_json(path)  # read again: the file is the source of truth, not an earlier copy
    return write_json(path, {**result, **fields})


def run_folders(paths: list[str]) -> list[Path]:
    """Run folders (holding result.json) among `paths` and under them, in order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ConfigError(f"speedup: {p} is not a folder")
        name = RunDir.at(p).result.name
        found += [p] if (p / name).exists() else sorted(r.parent for r in p.rglob(name))
    return found


# ---------------------------------------------------------------------------------------- CLI


def cmd_speedup(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device:
        resolve_device(args.device)  # fail early on a malformed name
    options = {"batch_size": args.batch, "repeats": args.repeats, "budget_s": args.budget_s}
    failed = 0
    folders = run_folders(args.dirs)
    if not folders:
        raise ConfigError(f"speedup: no run folder (one holding result.json) under {', '.join(args.dirs)}")
    for folder in folders:
        result = read_json(RunDir.at(folder).result) or {}
        if result.get("status") != RunStatus.OK:
            print(f"{folder}: skipped (status {result.get('status')!r})", file=sys.stderr)
            continue
        if "speedup_best" in result and not args.force:
            print(f"{folder}: skipped (already measured; --force to measure again)", file=sys.stderr)
            continue
        try:
            r = add_speedup(folder, args.device, **options)
        except ConfigError as e:
            print(f"{folder}: {e}", file=sys.stderr)
            failed += 1
            continue
        theo = "n/a" if r["speedup_theoretical"] is None else f"{r['speedup_theoretical']:.2f}x"
        print(f"{r['run_id']}: theoretical {theo}; best: {r['speedup_best_backend']} "
              f"{r['speedup_best']:.2f}x at batch {r['speedup_batch']}, "
              f"{r['speedup_best_backend_b1']} {r['speedup_best_b1']:.2f}x at batch 1")
    return 1 if failed else 0


def configure(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding them")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: each run's own)")
    p.add_argument("--batch", type=int, default=256, help="throughput batch size (default: 256)")
    p.add_argument("--repeats", type=int, default=9, help="timing samples per backend and batch (default: 9)")
    p.add_argument("--budget-s", type=float, default=2.0,
                   help="timing seconds per batch size; fewer repeats (3 at least) beyond it (default: 2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--force", action="store_true", help="measure runs that already have speed-ups again")
    p.set_defaults(func=cmd_speedup)
