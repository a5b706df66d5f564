"""Sweeps: submit a parsed sweep's cells to an executor; re-running skips what is done.

Out folder: `<run_id>/` per cell (see bench.run.job), `sweep.json` (the manifest: the cells of
every sweep submitted into this folder, the latest TOML source and the plugin modules),
`.jobs/<run_id>.json` (the job that last ran each cell), `.submitit/` (job logs). Parsing:
bench.spec; where cells run: bench.executors; where they stand: bench.status; the dry run's
compute estimate: bench.estimate.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import executors, registry, status
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.estimate import estimate
from bench.executors import Executor
from bench.io import write_json
from bench.loader_probe import executor_cpus, loader_bound
from bench.runs import RunDir, RunStatus, hold_lock
from bench.spec import SweepSpec, check_local_data, load_sweep
from bench.validate import check_device_here, check_devices, check_out

LOCK_FILE = ".sweep.lock"
# what a sweep writes into its out folder besides the run folders and sweep.json (written by rename)
WRITTEN_THROUGH = (".jobs", ".submitit", LOCK_FILE)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Serialise submissions into one out folder (two `bench sweep` at once never double-submit).
    The lock file is opened without following a link and holds its holder's PID, said on stderr
    when another submission waits for it."""
    with hold_lock(out / LOCK_FILE, f"{out}: waiting for another submission into this folder (PID {{pid}}) "
                   "to finish"):
        yield


def check_out_folder(out: Path, cells: Sequence[RunConfig]) -> None:
    """ConfigError naming the path unless what the sweep writes into `out` (job records, job logs,
    its lock, the cells' run folders) can be written there: no symbolic link (a write through it
    would land outside the out folder), no file where a folder belongs nor the reverse. Writes
    nothing: called before anything is written or submitted."""
    for name in WRITTEN_THROUGH:
        path = out / name
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link to {os.readlink(path)}; a sweep writes its job "
                              "records, logs and lock only inside its out folder (remove the link)")
    check_out(out / ".jobs", "--out")  # a file there would fail the submission late
    check_out(out / ".submitit", "--out")
    if (out / LOCK_FILE).is_dir():
        raise ConfigError(f"{out / LOCK_FILE} is a folder where the sweep keeps its lock file; move it away")
    for cell in cells:
        RunDir(out, cell.run_id).check_no_links()


def write_manifest(out: Path, spec: SweepSpec) -> None:
    """`out/sweep.json`: the sweep's name, its TOML source, the plugin modules its names need and
    every cell (what `bench status` reads). A manifest already there (another sweep into the same
    folder) keeps its cells and imports: the new one holds both sweeps' cells. Call it under
    `_locked(out)`; a manifest it cannot read raises ConfigError naming it (nothing is lost)."""
    old, old_cells = status.read_manifest(out, required=False)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cells = {c.run_id: c for c in old_cells} | {c.run_id: c for c in spec.cells}
    earlier = [s for s in old.get("sweeps", []) if isinstance(s, dict)]
    if old and not earlier:  # a manifest of one sweep, written before manifests listed several
        earlier = [{k: old.get(k) for k in ("name", "path", "written_at")}]
    this = {"name": spec.name, "path": str(spec.path), "written_at": now}
    write_json(
        out / status.MANIFEST,
        {
            "name": spec.name,
            "path": str(spec.path),
            "source": spec.source,
            "overrides": list(spec.overrides),
            "imports": list(dict.fromkeys([*old.get("imports", []), *registry.loaded_plugins()])),
            "written_at": now,
            "sweeps": [*(s for s in earlier if s.get("path") != this["path"]), this],
            "cells": [{**c.to_dict(), "run_id": run_id} for run_id, c in cells.items()],
        },
    )


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor: Executor | None = None,
    wait: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Submit the cells that are not done (nor running or pending) and, with `wait`, wait for all.

    Stopped cells (their job ended without a result) are resubmitted and resume from their
    checkpoint; failed cells only with `retry_failed`; with `force`, finished ones too, retrained
    from scratch (see `bench.run.job.retire`). `executor`: from `bench.executors.create` (default:
    local, one job per core). Interrupted while waiting (Ctrl-C), the jobs that stop with this
    process (local ones) are cancelled before KeyboardInterrupt goes on. Returns one record per
    cell (see `bench.status.records`).
    """
    out = Path(out)
    executor = executor or executors.create()
    check_devices(spec.cells, executor.tasks)  # before anything is written
    executor.check_cells(spec.cells)
    say = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    check_out_folder(out, spec.cells)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out = {str(out)!r}: cannot create the folder ({e.strerror})") from None
    with _locked(out):
        write_manifest(out, spec)
        statuses = status.cell_statuses(out, spec.cells)
        todo = status.to_submit(statuses, retry_failed, force)
        counts = Counter(s.state for s in statuses)
        if force:
            from bench.run.job import retire  # torch: only when a retrain is asked for

            for cell in todo:
                retire(out / cell.run_id)
        jobs = executor.submit(todo, out, spec.name)
    skipped = ", ".join(f"{counts[k]} {k}" for k in status.STATES if counts[k] and k != "missing")
    failed_left = 0 if retry_failed or force else counts["failed"]
    say(
        f"sweep {spec.name}: {len(spec.cells)} cells, {len(todo)} submitted"
        + (f" ({skipped} already)" if skipped else "")
        + (f"; {failed_left} failed not resubmitted (--retry-failed)" if failed_left else "")
    )
    if jobs and not executor.waits:
        array = jobs[0].job_id.split("_")[0]
        say(f"{executor.name} job {array} ({len(jobs)} task(s)); follow it with: bench status {out} --wait")
    if wait:
        try:
            statuses = status.wait_for(out, spec.cells, executor.poll_s, progress, jobs)
        except KeyboardInterrupt:
            if executor.stops_with_sweep:
                for job in jobs:
                    job.cancel(check=False)
            raise
    else:
        statuses = status.cell_statuses(out, spec.cells)
    return status.records(statuses, out)


# ----------------------------------------------------------------------------------------- CLI


def _budget_line(budget: Budget) -> str:
    return " ".join(f"{f.name}={getattr(budget, f.name)}" for f in dataclasses.fields(budget))


def _hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.2g} min" if seconds >= 60 else f"{seconds:.2g} s"


def check_here(spec: SweepSpec, executor: Executor) -> None:
    """What a sweep whose cells train on this machine needs here: dataset files and devices."""
    if not executor.runs_here:
        return
    check_local_data(spec)
    for device in sorted({c.device for c in spec.cells}):
        check_device_here(device, f"{spec.path}: device")


def cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.file, args.sets)
    out = check_out(args.out or Path("runs") / spec.name, "--out")
    executor = executors.from_args(args)
    check_devices(spec.cells, executor.tasks)
    if args.dry_run:
        return _dry_run(spec, out, executor, args.probe)
    check_here(spec, executor)
    wait = not args.no_wait and executor.waits
    try:
        recs = run_sweep(spec, out, executor, wait, args.retry_failed, force=args.force)
    except KeyboardInterrupt:
        print(
            f"interrupted: its local jobs were stopped; `bench sweep {args.file} --out {out}` resumes them "
            "from their checkpoints",
            file=sys.stderr,
        )
        return 130
    counts = Counter(r["status"] for r in recs)
    print(f"{out}: " + ", ".join(f"{counts[k]} {k}" for k in (RunStatus.OK, *status.STATES) if counts[k]))
    return 1 if any(counts[k] for k in status.UNFINISHED) else 0


def _dry_run(spec: SweepSpec, out: Path, executor: Executor, probe: bool = False) -> int:
    cells = spec.cells
    executor.check_cells(cells)
    print(f"sweep {spec.name} ({spec.path}): {len(cells)} cells")
    for pruner, n in spec.per_pruner().items():
        print(f"  {pruner:<14} {n}")
    axes = {k: sorted({getattr(c, k) for c in cells}) for k in ("model", "dataset", "seed")}
    print("  " + "; ".join(f"{k}s {', '.join(map(str, v))}" for k, v in axes.items()))
    print(f"  budget: {_budget_line(spec.budget)}")
    tracks = list(dict.fromkeys(c.budget.recipe for c in cells))
    if len(tracks) > 1:
        print(f"  recipe tracks (one board section each): {', '.join(tracks)}")
    if spec.tuned:
        settings = ", ".join(f"{p} {n}" for p, n in spec.settings_per_pruner().items())
        print(f"  tuned budget keys: {', '.join(spec.tuned)}; settings per pruner: {settings}")
    print("timing each (pruner, model, dataset) here (cached probe, probe or MACs)...", file=sys.stderr)
    threads = executor.cell_threads(len(cells))  # probes time what one cell gets, not the machine
    est = estimate(spec, out if out.exists() else None, probe=probe, threads=threads)
    est = loader_bound(cells, est, executor_cpus(executor), executor.tasks)  # the slower: steps or loader
    n_done = sum(1 for c in cells if status.finished_result(out if out.exists() else None, c))
    unit = "GPU" if est.device != "cpu" else "CPU"
    print(f"out: {out} ({n_done} finished, {len(cells) - n_done} to run)")
    partial = " (without the groups below that have none)" if est.unavailable else ""
    print(
        f"estimated compute{partial}, timed on this machine ({est.device}): {est.todo_s / 3600:.3g} "
        f"{unit}-hours for the cells to run, {est.total_s / 3600:.3g} for all; "
        f"longest cell {_hours(est.max_cell_s)}"
    )
    lanes = executor.lanes(len(cells))
    print(f"  {executor.name}: about {_hours(est.wall_s(lanes))} of wall time with {lanes} cell(s) at a "
          "time, if its devices are as fast as this one's, plus a few seconds of start-up per job")
    for label, how in est.rates.items():
        print(f"  {label}: {how}")
    for line in est.unavailable:
        print(f"  no estimate for {line}")
    for line in executor.dry_run_check(est):  # raises (exit 2) if a cell cannot finish
        print(f"  {line}")
    print("dry run: nothing was submitted or written")
    return 0


def add_override_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="set a key of the sweep file (TOML value syntax; a list is an axis) or remove "
                   "one with ~KEY.PATH, repeatable: --set budget.epochs=1 --set pruners.grda.c=0.01 "
                   "--set 'pruners.gmp.lr=[0.05, 0.1]' --set 'grid.seeds=[0]' --set ~pruners.imp")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="sweep file (TOML)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate every cell, count them and estimate the compute; run nothing",
    )
    p.add_argument("--probe", action="store_true",
                   help="--dry-run: time a real probe of every (pruner, model, dataset) here, not a cached "
                   "probe or a large model's MACs at this device's rate (minutes for a large model on a CPU)")
    add_override_flag(p)
    p.add_argument("--out", help="out folder (default: runs/<name>)")
    p.add_argument("--no-wait", action="store_true", help="return once the jobs are started")
    p.add_argument("--retry-failed", action="store_true", help="resubmit failed cells too (they resume)")
    p.add_argument("--force", action="store_true",
                   help="retrain finished and failed cells from scratch (their old results are kept as "
                   "result.replaced.json); never touches a running or pending one")
    executors.add_flags(p)
    p.set_defaults(func=cmd_sweep)

