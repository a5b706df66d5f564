"""Trainer callbacks: what a run tells the world while it trains, apart from its result files.

A callback subclasses `Callback` and overrides any of three hooks, which `bench.run.trainer.Trainer`
calls on rank 0 only, in this order:

    on_fit_start(trainer)            once, after a resume (trainer.epoch is the first epoch to run)
    on_epoch_end(trainer, row)       after each epoch; `row` is that epoch's history.csv row:
                                     epoch, step, loss, train_top1, val_top1, sparsity,
                                     w_l2_l1, lr, elapsed_s
    on_fit_end(trainer, record)      once, with the run's result record (the result.json dict)

Every run gets the two built-in ones: `TrainLog` (a human-readable `train.log` in the run folder)
and `Progress` (one line per epoch on stderr, which a SLURM or local job writes into its log,
and `progress.json`, which `bench status -v` reads). Experiment trackers (TensorBoard, W&B,
MLflow) are callbacks too: see bench.loggers.

    class PrintTop1(Callback):
        def on_epoch_end(self, trainer, row):
            print(row["epoch"], row["val_top1"])

    Trainer(config, run_dir, progress=False, callbacks=[PrintTop1()]).fit(started)
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.io import read_json, write_json
from bench.runs import RunDir, RunStatus

if TYPE_CHECKING:
    from bench.run.trainer import Trainer

class Callback:
    """Hooks into a run's training; every hook does nothing unless overridden."""

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        pass


# ------------------------------------------------------------------------------- the epoch line


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def duration(seconds: float) -> str:
    """`3725` -> `1h02m`, `75` -> `1m15s`, `14.2` -> `14s`, `2.34` -> `2.3s`."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def epoch_line(row: dict[str, Any], epochs: int, eta_s: float | None) -> str:
    """`epoch 3/60  loss 0.4121  train_top1 0.9012  val_top1 0.9120  sparsity 0.8034  eta 1m20s`
    (epochs count from 1; the test set is evaluated only at the end, never per epoch)."""
    eta = "-" if eta_s is None else duration(eta_s)
    return (f"epoch {row['epoch'] + 1}/{epochs}  loss {_fmt(row['loss'])}  "
            f"train_top1 {_fmt(row.get('train_top1'))}  val_top1 {_fmt(row.get('val_top1'))}  "
            f"sparsity {_fmt(row['sparsity'])}  eta {eta}")


def read_progress(run_dir: Path) -> str | None:
    """The last epoch line a run wrote (`progress.json`), or None before its first epoch."""
    p = read_json(RunDir.at(run_dir).progress)
    return p.get("line") if isinstance(p, dict) else None


# ------------------------------------------------------------------------------- built-in ones


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TrainLog(Callback):
    """Appends to `<run folder>/train.log`: the config at the start, one line per epoch, the result
    at the end; a resumed run appends to what its earlier attempts wrote. (A log line is appended,
    not written atomically: a crash loses at most the line being written.)"""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir.at(run_dir).train_log

    def write(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # no link
        with os.fdopen(fd, "a") as f:
            f.write(f"{_now()}  {line}\n")

    def on_fit_start(self, trainer: Trainer) -> None:
        c = trainer.config
        how = f"resuming at epoch {trainer.epoch + 1}" if trainer.epoch else "starting"
        self.write(f"{how}: {c.run_id} (pruner {c.pruner} {c.hparams}, model {c.model}, dataset "
                   f"{c.dataset}, seed {c.seed}, device {trainer.device}, {trainer.total_steps} steps)")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.write(epoch_line(row, trainer.total_epochs, trainer.eta_s())
                   + f"  lr {row['lr']:.4g}  train {duration(row['elapsed_s'])}")

    def on_fit_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.write(summary_line(record, trainer.run.path))


class Progress(Callback):
    """The epoch line on stderr (`echo`: when no progress bar shows it; in a job it lands in the
    job's log) and in `progress.json` for `bench status -v`."""

    def __init__(self, run_dir: Path, echo: bool = True) -> None:
        self.path, self.echo = RunDir.at(run_dir).progress, echo

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        line = epoch_line(row, trainer.total_epochs, trainer.eta_s())
        write_json(self.path, {"line": line, "epoch": row["epoch"] + 1, "epochs": trainer.total_epochs,
                               "updated_at": _now(), "unix_time": time.time()})
        if self.echo:
            print(f"{trainer.config.run_id}: {line}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- the summary


def _macs(record: dict[str, Any]) -> tuple[Any, Any]:
    """(dense, sparse) multiply-accumulates, under their current or their earlier names."""
    for prefix in ("macs", "flops"):
        if record.get(f"{prefix}_dense") is not None:
            return record[f"{prefix}_dense"], record.get(f"{prefix}_sparse")
    return None, None


def summary_line(record: dict[str, Any], run_dir: Path | str) -> str:
    """`ok  top1 0.9611  sparsity 0.9017  MACs 9.7x fewer  train 1m12s  runs/grda-...` for a
    finished run; the status and error for one that is not."""
    if record.get("status") == RunStatus.FAILED:
        return f"failed: {record.get('error')}  {run_dir}"
    dense, sparse = _macs(record)
    macs = f"{dense / sparse:.3g}x fewer" if dense and sparse else "-"
    train = record.get("train_time_s")
    return (f"{record.get('status')}  top1 {_fmt(record.get('top1'))}  "
            f"sparsity {_fmt(record.get('sparsity'))}  MACs {macs}  "
            f"train {'-' if train is None else duration(train)}  {run_dir}")
