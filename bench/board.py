"""`bench board DIR`: regenerate a committed leaderboard in one command: run DIR/sweep.toml into
runs/<name> (done cells are skipped; on any executor, waiting for every cell), gather its cells
into DIR/results.parquet (+ history) and write the leaderboard into DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench import executors, results
from bench.errors import ConfigError
from bench.executors import Executor
from bench.leaderboard import load_published, write_leaderboard
from bench.spec import load_sweep
from bench.sweep import check_here, run_sweep
from bench.validate import check_out


def board(directory: str | Path, runs_root: str | Path = "runs", plots: bool = True,
          executor: Executor | None = None, force: bool = False) -> Path:
    """Run, gather and write the leaderboard of `directory` (holding sweep.toml); returns its README.
    `force`: retrain every cell from scratch (see `bench sweep --force`)."""
    directory = Path(directory)
    spec = load_sweep(directory / "sweep.toml")
    runs_dir = check_out(Path(runs_root) / spec.name, "--runs")
    check_out(directory, "DIR")
    executor = executor or executors.create()
    check_here(spec, executor)
    run_sweep(spec, runs_dir, executor, wait=True, force=force)  # on a cluster too: it needs every cell
    g = results.gather(runs_dir)
    cells = {c.run_id for c in spec.cells}
    extra = ~g.runs["run_id"].isin(cells) if len(g.runs) else pd.Series(dtype=bool)
    g.runs = g.runs[~extra].reset_index(drop=True)
    if len(g.history):
        g.history = g.history[g.history["run_id"].isin(cells)].reset_index(drop=True)
    print(g.report(), file=sys.stderr)
    if extra.any():
        print(f"  ignored {int(extra.sum())} runs in {runs_dir} that are not cells of {spec.path}",
              file=sys.stderr)
    if g.runs.empty:
        raise ConfigError(f"board {directory}: no finished runs in {runs_dir}")
    results.write(g, directory / "results.parquet")
    return write_leaderboard(g.runs, directory, g.history, load_published(), f"Leaderboard: {spec.name}",
                             plots, note=_board_note(directory, runs_dir, len(spec.cells)))


def _board_note(directory: Path, runs_dir: Path, cells: int) -> str:
    return (f"Produced by `bench board {directory.as_posix()}` from `sweep.toml` ({cells} runs, kept in "
            f"`{runs_dir.as_posix()}/`); the runs table is `results.parquet` (history: "
            "`results.history.parquet`), the tables as CSV in `leaderboard.csv` and `matched_sparsity.csv`.")


def cmd_board(args: argparse.Namespace) -> int:
    readme = board(args.dir, args.runs, not args.no_plots, executors.from_args(args), args.force)
    print(f"wrote {readme}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="leaderboard folder holding sweep.toml (e.g. leaderboards/digits-mlp)")
    p.add_argument("--runs", default="runs", help="parent of the sweep's run folder (default: runs)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--force", action="store_true", help="retrain every cell from scratch (old results are "
                   "kept as result.replaced.json)")
    executors.add_flags(p)
    p.set_defaults(func=cmd_board)
