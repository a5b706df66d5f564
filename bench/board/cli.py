"""The board commands.

`bench board DIR`: regenerate a committed leaderboard in one command: run DIR/sweep.toml into
runs/<name> (done cells are skipped; on any executor, waiting for every cell), gather its cells
into results.parquet (+ history and per-example predictions) and write the leaderboard, into DIR
or `--out`.

    bench board leaderboards/digits-mlp                      # run what is missing, rewrite the board
    bench board leaderboards/digits-mlp --no-run             # tables from the runs that exist
    bench board leaderboards/cifar10-vgg16 --set budget.epochs=1 --set 'grid.seeds=[0]' --out /tmp/smoke

`bench leaderboard results.parquet -o DIR`: a board from a gathered table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter

import pandas as pd

from bench import executors, predictions, results
from bench.board.prepare import prepare
from bench.board.published import load_published
from bench.board.timing import load_timings, time_board
from bench.board.write import write_leaderboard
from bench.errors import ConfigError
from bench.executors import Executor
from bench.record import LOADED_RULE
from bench.valley.board import read_valley


def board(
    directory: str | Path,
    runs_root: str | Path = "runs",
    plots: bool = True,
    executor: Executor | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    run: bool = True,
    out: str | Path | None = None,
    force: bool = False,
    time: bool = False,
) -> Path:
    """Run, gather and write the leaderboard of `directory` (holding sweep.toml, and optionally
    `calibration/`: `bench calibrate` records of the knob values it uses, and `timing/`: the timing
    phase's records, bench.board.timing); returns its README.

    `overrides`: `KEY.PATH=VALUE` changes to the sweep file (bench.overrides.apply_overrides); `run`
    False: no cell is run, the tables come from the finished runs there are (or, with none, from
    the board's own results.parquet); `out`: where the board is written (default `directory`);
    `force`: retrain every cell from scratch (see `bench sweep --force`); `time`: after the runs, the
    timing phase (every setting timed serially, interleaved with dense) into `out`/timing.
    """
    from bench.calibrate import load_calibrations
    from bench.spec import load_sweep
    from bench.sweep import check_here, run_sweep
    from bench.validate import LEADERBOARD_FILES, check_out, check_out_files
    from bench.valley.board import PATHS_FILE, TABLE_FILE

    directory = Path(directory)
    out = check_out(Path(out) if out is not None else directory, "--out")
    spec = load_sweep(directory / "sweep.toml", overrides)
    runs_dir = check_out(Path(runs_root) / spec.name, "--runs")
    table = out / "results.parquet"  # every fixed name written into `out`, before any run
    tables = [table, results.history_path(table), predictions.predictions_path(table)]
    check_out_files(out, [*LEADERBOARD_FILES, TABLE_FILE, PATHS_FILE, *(p.name for p in tables)], "--out")
    if time:
        check_out(out / "timing", "--out")
    calibrations = load_calibrations(directory / "calibration")  # a malformed record stops us before any run
    timing_dir = (out if time else directory) / "timing"
    load_timings(timing_dir)  # likewise
    stored_valley = None if run else read_valley(directory)  # likewise; a run measures it anew
    took: list[tuple[str, float]] = []  # each phase's wall time, said at the end
    if run:
        executor = executor or executors.create()
        check_here(spec, executor)
        with _phase("runs", took):
            run_sweep(spec, runs_dir, executor, wait=True, force=force)  # on a cluster too: it needs all
    with _phase("gather", took):
        g = results.gather(runs_dir) if runs_dir.is_dir() else None
    from_folders = g is not None and not g.runs.empty
    if not from_folders:
        if run or not (directory / "results.parquet").is_file():
            raise ConfigError(
                f"board {directory}: no finished runs in {runs_dir}"
                + ("" if run else f" and no {directory / 'results.parquet'}")
            )
        runs, history = results.read(directory / "results.parquet")
        g = results.Gathered(
            runs,
            history if history is not None else pd.DataFrame(columns=list(results.HISTORY_IDENTITY)),
            predictions=predictions.read_predictions(directory / "results.parquet"),
        )
        print(
            f"no runs in {runs_dir}: the board is rebuilt from {directory / 'results.parquet'}",
            file=sys.stderr,
        )
    cells = {c.run_id for c in spec.cells}
    extra = ~g.runs["run_id"].isin(cells) if len(g.runs) else pd.Series(dtype=bool)
    g.runs = g.runs[~extra].reset_index(drop=True)
    if len(g.history):
        g.history = g.history[g.history["run_id"].isin(cells)].reset_index(drop=True)
    g.predictions = {k: v for k, v in g.predictions.items() if k in cells}
    print(g.report(), file=sys.stderr)
    if extra.any():
        print(f"  ignored {int(extra.sum())} runs that are not cells of {spec.path}", file=sys.stderr)
    if g.runs.empty:
        raise ConfigError(f"board {directory}: no finished runs of its cells in {runs_dir}")
    out.mkdir(parents=True, exist_ok=True)
    results.write(g, out / "results.parquet")
    df = prepare(g.runs)
    with _phase("valley", took):
        valley = _valley(df, runs_dir, stored_valley, measure=from_folders and (run or stored_valley is None))
    if time:
        print(
            f"timing phase: every setting, serially, interleaved with dense, into {timing_dir}",
            file=sys.stderr,
        )
        with _phase("timing", took):
            time_board(spec.cells, timing_dir)
    timings = load_timings(timing_dir)
    if len(timings) and timings["timing_loaded"].any():
        print(
            f"warning: {int(timings['timing_loaded'].sum())} timing record(s) were taken on a loaded machine "
            f"({LOADED_RULE}) and are not used; rerun `--time` on a quiet machine",
            file=sys.stderr,
        )
    with _phase("tables and figures", took):
        readme = write_leaderboard(
            g.runs,
            out,
            g.history,
            load_published(),
            f"Leaderboard: {spec.name}",
            plots,
            note=_board_note(directory, runs_dir, len(spec.cells), spec.overrides),
            calibrations=calibrations,
            predictions=predictions.correctness(g.predictions),
            timings=timings,
            valley=valley,
            prepared=df,
            directory=directory.as_posix(),
        )
    print("board: " + ", ".join(f"{name} {_duration(s)}" for name, s in took), file=sys.stderr)
    return readme


@contextmanager
def _phase(name: str, took: list[tuple[str, float]]) -> Iterator[None]:
    start = perf_counter()
    yield
    took.append((name, perf_counter() - start))


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _valley(
    df: pd.DataFrame, runs_dir: Path, stored: tuple[pd.DataFrame, pd.DataFrame] | None, measure: bool
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The board's valley table: measured from the run folders (`measure`), else `stored` (the
    board's own valley.csv read back; None if it has none)."""
    from bench.valley.board import LEVELS, board_valley

    if not measure:
        return stored
    levels = ", ".join(f"{100 * x:g}%" for x in LEVELS)
    print(f"valley: each pruner at {levels} against its dense run (bench valley)", file=sys.stderr)
    return board_valley(df, runs_dir)


def _board_note(directory: Path, runs_dir: Path, cells: int, overrides: tuple[str, ...] = ()) -> str:
    sets = "".join(f" --set {o}" for o in overrides)
    return (
        f"Produced by `bench board {directory.as_posix()}{sets}` from `sweep.toml` ({cells} runs, "
        f"kept in `{runs_dir.as_posix()}/`); the runs table is `results.parquet` (history: "
        "`results.history.parquet`, per-example predictions: `results.predictions.npz`), the tables as "
        "CSV in `leaderboard.csv`, `matched_sparsity.csv` and `valley.csv` (paths: `valley-paths.csv`)."
    )


def cmd_board(args: argparse.Namespace) -> int:
    readme = board(
        args.dir,
        args.runs,
        not args.no_plots,
        None if args.no_run else executors.from_args(args),
        args.sets,
        not args.no_run,
        args.out,
        args.force,
        args.time,
    )
    print(f"wrote {readme}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    from bench.sweep import add_override_flag

    p.add_argument("dir", help="leaderboard folder holding sweep.toml (e.g. leaderboards/digits-mlp)")
    p.add_argument("--runs", default="runs", help="parent of the sweep's run folder (default: runs)")
    p.add_argument("--out", help="write the board here instead of into DIR")
    p.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: tables from the finished runs there are (or DIR/results.parquet)",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    add_override_flag(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain every cell from scratch (old results are kept as result.replaced.json)",
    )
    p.add_argument(
        "--time",
        action="store_true",
        help="after the runs, time every setting serially against "
        "dense on this machine (keep it quiet): the board's time columns come from these records",
    )
    executors.add_flags(p)
    p.set_defaults(func=cmd_board)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from bench.validate import LEADERBOARD_FILES, check_out_files

    out = check_out_files(Path(args.output), LEADERBOARD_FILES, "-o")  # before the work
    runs, history = results.read(args.results)
    published = load_published(args.published) if args.published != "none" else None
    readme = write_leaderboard(
        runs,
        out,
        history,
        published,
        args.title,
        plots=not args.no_plots,
        note=f"Generated by `bench leaderboard` from `{Path(args.results).name}`.",
        where=str(args.results),
        predictions=predictions.correctness(predictions.read_predictions(args.results)),
    )
    print(f"wrote {readme}", file=sys.stderr)
    return 0


def configure_leaderboard(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "results",
        help="runs table from `bench gather` (its .history.parquet and .predictions.npz are used if there)",
    )
    p.add_argument("-o", "--output", required=True, help="folder for README.md, CSV and PNG files")
    p.add_argument("--title", help="Markdown title (default: Leaderboard: <output folder name>)")
    p.add_argument(
        "--published",
        default=None,
        help="published rows CSV (default: leaderboards/published.csv; 'none' to leave them out)",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_leaderboard)
