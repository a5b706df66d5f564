"""One run as a job: lock its folder, train (or resume, or return the finished result), then
measure the final model's inference speed-up and write the result.

`run(config, out)` is a plain, picklable function (a submitit job calls it). Its folder
`out/<run_id>/` (bench.runs.RunDir) holds config.json, history.csv, checkpoint.pt, train.log,
progress.json and, when done, predictions.npz and result.json.
Calling it again on the same folder resumes from the last checkpoint, or returns the finished
result. A resumed run ends with exactly the result of an uninterrupted one on a CPU, and on CUDA
with `deterministic` (otherwise cuDNN/cuBLAS may pick non-deterministic kernels and the results
differ in the last bits, then drift): the batches are a function of (seed, epoch), and the
model's own randomness (dropout, VD's noise) of (seed, epoch, rank), reseeded at each epoch.

Under torch.distributed (several ranks, one device each) rank 0 holds the run-folder lock and
writes the files.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import loggers, metrics
from bench.callbacks import Callback, Progress, TrainLog
from bench.code_version import changed as code_changed
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.inference import measure_trained
from bench.io import atomic_write, read_json, remove_temporaries, write_json, write_text
from bench.record import RunRecord, finished
from bench.run.checkpoint import BadCheckpoint
from bench.run.distributed import collective_device, dist_info, resolve_device, set_threads
from bench.run.result import now
from bench.run.trainer import Trainer
from bench.runs import RunDir, RunStatus
from bench.validate import check_config

LOCK_POLL_S = 1.0  # how often the ranks of a run waiting for its folder's lock try again


def run(config: RunConfig, out: str | Path, progress: bool = False, force: bool = False) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run; returns the result record.

    `progress`: a progress bar; without it, one line per epoch on stderr (a job's log). Either
    way the run writes `train.log` and `progress.json`, and calls the loggers `config.loggers`
    names (bench.loggers).

    Holds an exclusive lock on the run folder, so two sweeps sharing a folder never train the
    same run twice at once: the second waits (saying which process holds it), then returns the
    first one's result. With several ranks, rank 0 takes the lock and tells the others, trying
    again every `LOCK_POLL_S` seconds: no rank waits in a collective for longer than that.
    `force`: train again from scratch even if finished (earlier results are kept, numbered:
    `RunDir.retire`). A finished result written by other code (its pruner's or a plugin's source
    file changed: bench.code_version) is retired the same way and the run trains anew.
    """
    config = check_config(config)
    rd = RunDir(Path(out), config.run_id)
    rd.check_no_links()
    rank, world = dist_info()  # several ranks (DistributedDataParallel): only rank 0 writes
    if world > 1 and config.device.startswith("cuda:"):
        raise ConfigError(f"device = {config.device!r} with {world} ranks: each rank uses its own GPU; "
                          "valid choices with several ranks: auto, cuda, cpu")
    done = read_json(rd.result)
    if world == 1 and not force and finished(done) and not code_changed(done.get("code_hashes"), config):
        return done
    rd.create()
    with rd.lock() if world == 1 else _ranks_lock(rd, rank):
        if rank == 0:
            remove_temporaries(rd.path)  # of writes killed midway; under the lock, no writer is left
            if force:
                rd.retire()
        done = read_json(rd.result)  # finished while we waited for the lock?
        if world > 1:  # rank 0 decides, under the lock, for every rank
            box = [done]
            torch.distributed.broadcast_object_list(box, src=0)
            done = box[0]
        if finished(done) and code_changed(done.get("code_hashes"), config):
            # its pruner's or plugin's source changed since: train anew, keeping the old result
            if rank == 0:
                print(f"{rd.path}: the source of its pruner or plugin changed since its result; training "
                      f"anew (the old result is kept as {rd.retire()[0].name})", file=sys.stderr)
            done = None
        if finished(done):
            return done
        if rank == 0:
            write_json(rd.config, {**config.to_dict(), "run_id": config.run_id,
                                   "config_hash": config.config_hash})
        started = now()
        if resolve_device(config.device).type == "cpu":  # a run's own threads (recorded: torch_threads)
            set_threads(config.threads)
        try:
            try:
                trainer = Trainer(config, rd, progress, callbacks=_callbacks(config, rd, rank, progress))
                record = trainer.fit(started)
            except BadCheckpoint as e:  # recompute: set the checkpoint aside, start from scratch
                if rank == 0:
                    print(f"{e}; training from scratch (the checkpoint is kept as {e.kept})", file=sys.stderr)
                trainer = Trainer(config, rd, progress, callbacks=_callbacks(config, rd, rank, progress))
                record = trainer.fit(started)
            if rank != 0:
                return record
            rd.check_present()  # a folder deleted mid-run: no result without its config and lock
            record = {**record, **_speedup(trainer, record)}
            write_predictions(rd, trainer.predictions)
            return write_json(rd.result, record)
        except Exception as e:
            if rank == 0 and rd.path.is_dir():
                write_text(rd.traceback, traceback.format_exc())
                record_failure(config, rd.path, e, started)
            raise


def _callbacks(config: RunConfig, rd: RunDir, rank: int, progress: bool) -> list[Callback]:
    if rank != 0:
        return []
    return [TrainLog(rd.path), Progress(rd.path, echo=not progress), *loggers.create(config.loggers, rd.path)]


def _speedup(trainer: Trainer, record: dict[str, Any]) -> dict[str, Any]:
    """The final model's measured inference speed-up per backend (bench.inference), after
    training; none for a run that did not end ok."""
    if record["status"] != RunStatus.OK:
        return {}
    final = trainer.pruner.finalize(trainer.model)
    return measure_trained(final, trainer.data, trainer.device, trainer.built.dense_model,
                           (record["macs_dense"], record["macs_sparse"]))


def write_predictions(rd: RunDir, predictions: dict[str, torch.Tensor]) -> None:
    """predictions.npz: int16 `val_pred`, `val_true`, `test_pred`, `test_true` (predicted and true
    class per example, in the data set's fixed order; empty arrays for a split the run has not:
    no validation split). Read by bench.predictions."""
    if not predictions:
        return
    empty = torch.zeros(2, 0, dtype=torch.long)
    arrays = {f"{split}_{name}": predictions.get(split, empty)[i].numpy().astype(np.int16)
              for split in ("val", "test") for i, name in enumerate(("pred", "true"))}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write(rd.predictions, lambda f: f.write(buf.getvalue()))


def retire(run_dir: Path) -> None:
    """Make a finished run train again from scratch (`--force`), under its lock: see RunDir.retire."""
    rd = RunDir.at(run_dir)
    if not rd.path.is_dir() or rd.path.is_symlink():
        rd.check_no_links()
        return
    with rd.lock():
        rd.retire()


def record_failure(config: RunConfig, run_dir: Path, error: BaseException, started: str | None = None,
                   ) -> None:
    """Write a `failed` result for `error` into `run_dir`, unless this error was recorded already.
    With several ranks only rank 0 writes (another rank's error, written after it, would replace
    rank 0's record); the others' errors are in their own task logs.

    Works without resolving the config's names (the run folder is given): a job whose process
    cannot import a plugin pruner still leaves a record saying why."""
    if getattr(error, "_bench_recorded", False) or dist_info()[0] != 0:
        return
    rd = RunDir.at(run_dir)
    identity = config.identity(run_id=rd.run_id)
    try:
        provenance = metrics.provenance(resolve_device(config.device))
    except Exception:  # a device that does not exist here must not hide the error itself
        provenance = metrics.provenance(torch.device("cpu"))
    failure = RunRecord(
        **identity, status=RunStatus.FAILED, error=f"{type(error).__name__}: {error}",
        started_at=started or now(), finished_at=now(), **provenance,
    )
    write_json(rd.result, failure.to_dict())
    with contextlib.suppress(OSError):
        TrainLog(rd.path).write(f"failed: {failure.error}")
    error._bench_recorded = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def _ranks_lock(rd: RunDir, rank: int) -> Iterator[None]:
    """The run-folder lock for a group of ranks: rank 0 tries it without blocking and broadcasts
    whether it got it; all ranks wait `LOCK_POLL_S` and try again together until it has."""
    fd = rd.open_lock() if rank == 0 else None
    try:
        while True:
            got = torch.zeros(1, dtype=torch.int64, device=collective_device())
            if fd is not None and rd.try_lock(fd):
                got += 1
            torch.distributed.broadcast(got, src=0)
            if got.item():
                break
            time.sleep(LOCK_POLL_S)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock
