"""One run under the shared budget: build, train, checkpoint every epoch, measure, record.

`run(config, out)` is a plain, picklable function (a submitit job calls it). Its folder
`out/<run_id>/` holds config.json, history.csv, checkpoint.pt, train.log, progress.json and, when
done, result.json.
Calling it again on the same folder resumes from the last checkpoint, or returns the finished
result. A resumed run ends with exactly the result of an uninterrupted one on a CPU, and on CUDA
with `deterministic` (otherwise cuDNN/cuBLAS may pick non-deterministic kernels and the results
differ in the last bits, then drift): the batches are a function of (seed, epoch), and the
model's own randomness (dropout, VD's noise) of (seed, epoch, rank), reseeded at each epoch.

Under torch.distributed (several ranks, one device each) every rank loads and evaluates only its
share of each batch and of the test set; rank 0 holds the run-folder lock and writes the files.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import math
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench import loggers, metrics
from bench.callbacks import Callback, Progress, TrainLog
from bench.config import RunConfig
from bench.data import Data
from bench.errors import ConfigError
from bench.inference import measure_trained
from bench.io import load_checkpoint, read_json, remove_temporaries, save_checkpoint, write_json, write_text
from bench.pruner import RunContext
from bench.record import RunRecord, finished, is_loaded
from bench.registry import DATASETS, MODELS, PRUNERS
from bench.schedules import lr_factor
from bench.validate import check_config

STEP_TIME_WINDOW = 2000  # step times kept for the median (the most recent ones)
# CPU: the training steps whose live tensors are tracked for peak_tensor_bytes (the first steps
# after optimizer state exists); they are left out of the step times (tracking slows them)
MEMORY_STEPS = range(2, 5)
LOCK_POLL_S = 1.0  # how often the ranks of a run waiting for its folder's lock try again


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA if present, else CPU. `auto` and `cuda` mean this process's current CUDA
    device, which a multi-rank job sets to its local rank's (bench.executors.base.RunJob)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)  # a CUDA device where there is none: callers check before using it


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank `rank`'s own randomness (dropout, noise) in `epoch`: distinct per rank."""
    return (seed * 1_000_003 + epoch) * 10_007 + rank + 1


def configure_backends(config: RunConfig, device: torch.device) -> None:
    """Process-wide numerics for this run: deterministic algorithms or not; TF32 matrix products
    for fp32 on CUDA (bf16 autocast needs none)."""
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(config.deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not config.deterministic
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def dist_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised (a multi-task job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


REPLACED = ("result.json", "history.csv", "traceback.txt")  # kept as <stem>.replaced<suffix> by --force


def run(config: RunConfig, out: str | Path, progress: bool = False, force: bool = False) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run; returns the result record.

    `progress`: a progress bar; without it, one line per epoch on stderr (a job's log). Either
    way the run writes `train.log` and `progress.json`, and calls the loggers `config.loggers`
    names (bench.loggers).

    Holds an exclusive lock on the run folder, so two sweeps sharing a folder never train the
    same run twice at once: the second waits, then returns the first one's result. With several
    ranks, rank 0 takes the lock and tells the others, trying again every `LOCK_POLL_S` seconds:
    no rank waits in a collective for longer than that, whatever the first run's length. `force`: train again
    from scratch even if finished (the old result is kept, see `retire`).
    """
    config = check_config(config)
    run_dir = Path(out) / config.run_id
    rank, world = dist_info()  # several ranks (DistributedDataParallel): only rank 0 writes
    if world > 1 and config.device.startswith("cuda:"):
        raise ConfigError(f"device = {config.device!r} with {world} ranks: each rank uses its own GPU; "
                          "valid choices with several ranks: auto, cuda, cpu")
    done = read_json(run_dir / "result.json")
    if world == 1 and not force and finished(done):
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir) if world == 1 else _ranks_lock(run_dir, rank):
        if rank == 0:
            remove_temporaries(run_dir)  # of writes killed midway; under the lock, no writer is left
            if force:
                _retire(run_dir)
        done = read_json(run_dir / "result.json")  # finished while we waited for the lock?
        if world > 1:  # rank 0 decides, under the lock, for every rank
            box = [done]
            torch.distributed.broadcast_object_list(box, src=0)
            done = box[0]
        if finished(done):
            return done
        if rank == 0:
            write_json(
                run_dir / "config.json",
                {**config.to_dict(), "run_id": config.run_id, "config_hash": config.config_hash},
            )
        started = _now()
        try:
            def callbacks() -> list[Callback]:
                if rank != 0:
                    return []
                return [TrainLog(run_dir), Progress(run_dir, echo=not progress),
                        *loggers.create(config.loggers, run_dir)]

            try:
                return Trainer(config, run_dir, progress, callbacks=callbacks()).fit(started)
            except BadCheckpoint as e:  # recompute: set the checkpoint aside, start from scratch
                print(f"{e}; training from scratch (the checkpoint is kept as {e.kept})", file=sys.stderr)
                return Trainer(config, run_dir, progress, callbacks=callbacks()).fit(started)
        except Exception as e:
            if rank == 0:
                write_text(run_dir / "traceback.txt", traceback.format_exc())
                record_failure(config, run_dir, e, started)
            raise


def retire(run_dir: Path) -> None:
    """Make a finished run train again from scratch (`--force`): under its lock, its result.json,
    history.csv and traceback.txt are renamed to `<stem>.replaced<suffix>` (kept, never lost) and
    its checkpoint removed."""
    if not run_dir.is_dir():
        return
    with run_lock(run_dir):
        _retire(run_dir)


def _retire(run_dir: Path) -> None:
    for name in REPLACED:
        path = run_dir / name
        if path.exists():
            path.replace(path.with_name(f"{path.stem}.replaced{path.suffix}"))
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)


class BadCheckpoint(RuntimeError):
    """A checkpoint that loads but cannot be restored (keys missing, wrong shapes): it is set aside
    as `checkpoint.bad.pt` (`kept`) and the run starts from scratch."""

    def __init__(self, path: Path, why: str) -> None:
        self.kept = path.with_name("checkpoint.bad.pt")
        with contextlib.suppress(OSError):  # another rank set it aside already
            path.replace(self.kept)
        super().__init__(f"{path}: cannot resume from it ({why})")


def record_failure(config: RunConfig, run_dir: Path, error: BaseException, started: str | None = None,
                   ) -> None:
    """Write a `failed` result for `error` into `run_dir`, unless this error was recorded already.

    Works without resolving the config's names (the run folder is given): a job whose process
    cannot import a plugin pruner still leaves a record saying why."""
    if getattr(error, "_bench_recorded", False):
        return
    identity = config.identity(run_id=run_dir.name)
    try:
        provenance = metrics.provenance(resolve_device(config.device))
    except Exception:  # a device that does not exist here must not hide the error itself
        provenance = metrics.provenance(torch.device("cpu"))
    failure = RunRecord(
        **identity, status="failed", error=f"{type(error).__name__}: {error}",
        started_at=started or _now(), finished_at=_now(), **provenance,
    )
    write_json(run_dir / "result.json", failure.to_dict())
    with contextlib.suppress(OSError):
        TrainLog(run_dir).write(f"failed: {failure.error}")
    error._bench_recorded = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `run_dir/.lock`, released when the process dies."""
    with open(run_dir / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _ranks_lock(run_dir: Path, rank: int) -> Iterator[None]:
    """The run-folder lock for a group of ranks: rank 0 tries it without blocking and broadcasts
    whether it got it; all ranks wait `LOCK_POLL_S` and try again together until it has."""
    with open(run_dir / ".lock", "a") if rank == 0 else contextlib.nullcontext() as f:
        while True:
            got = torch.zeros(1, dtype=torch.int64, device=_collective_device())
            if rank == 0:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got += 1
                except BlockingIOError:
                    pass
            torch.distributed.broadcast(got, src=0)
            if got.item():
                break
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            if rank == 0:
                fcntl.flock(f, fcntl.LOCK_UN)


def _collective_device() -> torch.device:
    """Where tensors of a collective live: NCCL needs them on the rank's GPU."""
    nccl = torch.distributed.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, progress: bool, data: Data | None = None,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        """`data`: already loaded data to train on instead of `config.dataset` (the estimate's probe);
        `callbacks`: see bench.callbacks (called by `fit`)."""
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.callbacks = list(callbacks)
        self.budget = b = config.budget
        self.rank, self.world = dist_info()
        self.device = resolve_device(config.device)
        configure_backends(config, self.device)
        model_info = MODELS.get(config.model)
        self.data: Data = data if data is not None else DATASETS.get(config.dataset).load(
            config.data_dir or "data",
            self.device,
            b.augment,
            model_info.input_shapes[0],
            (model_info.classes or (10,))[0],
        )
        self.data = self.data.holdout(b.val_fraction)  # a fixed split of the data set; trains on the rest
        model_info.check_fits(config.dataset, self.data.input_shape, self.data.num_classes)
        torch.manual_seed(config.seed)
        model = model_info.build(self.data.num_classes).to(self.device)
        self.macs_dense, _ = metrics.macs(model, self.data.input_shape, self.device)
        self.dense_counts = metrics.param_counts(model)  # sparsity counts removed weights as zeros
        self.layer_macs = metrics.layer_macs(model, self.data.input_shape, self.device)

        self.steps_per_epoch = math.ceil(self.data.num_train / b.batch_size)
        self.total_steps = b.epochs * self.steps_per_epoch
        if b.max_steps:
            self.total_steps = min(self.total_steps, b.max_steps)
        self.context = RunContext(
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            num_train=self.data.num_train,
            input_shape=tuple(self.data.input_shape),
            num_classes=self.data.num_classes,
            device=str(self.device),
            seed=config.seed,
        )
        pruner_cls = PRUNERS.get(config.pruner)
        self.pruner = pruner_cls(pruner_cls.Hparams(**config.hparams), b, self.context)
        self.model = self.pruner.prepare(model)
        self.budget_steps, self.total_steps = self.total_steps, self.pruner.train_steps()
        # NHWC: what cuDNN's fastest convolution kernels (tensor cores) read without transposing
        self.channels_last = self.device.type == "cuda" and any(
            isinstance(m, nn.Conv2d) for m in self.model.modules()
        )
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self.pruner.make_optimizer(self.model)
        self.net = self.wrap(self.model)  # what the training step calls: DDP over ranks, or the model

        self.epoch, self.step, self.samples, self.train_time, self.train_macs = 0, 0, 0, 0.0, 0.0
        self.peak_before = 0  # the peak memory of the segments before a resume (bytes)
        self.history: list[dict[str, Any]] = []
        self.step_times: deque[float] = deque(maxlen=STEP_TIME_WINDOW)
        self.tensor_peak: int | None = None  # CPU: peak live tensor bytes over MEMORY_STEPS
        self.load_before: float | None = None  # the machine's load when training (re)started

    # -- checkpoint -------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save(self) -> None:
        """Every rank calls it (it gathers each rank's RNG state and the peak memory); rank 0 writes."""
        rng = [self._rng_state()]
        if self.world > 1:
            rng = [None] * self.world
            torch.distributed.all_gather_object(rng, self._rng_state())
        peak = self.peak_memory()
        if self.rank != 0:
            return
        save_checkpoint(
            self.checkpoint_path,
            {
                "config_hash": self.config.config_hash,
                "epoch": self.epoch,
                "step": self.step,
                "samples": self.samples,
                "train_time": self.train_time,
                "train_macs": self.train_macs,
                "step_times": list(self.step_times),
                "tensor_peak": self.tensor_peak,
                "history": self.history,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "pruner": self.pruner.state_dict(),
                "rng": rng,  # one {"cpu", "cuda"} per rank, by rank
                "peak_memory_bytes": peak,
            },
        )

    def _rng_state(self) -> dict[str, torch.Tensor | None]:
        cuda = self.device.type == "cuda"
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None}

    def peak_memory(self) -> int:
        """The run's peak memory so far (bytes): over the segments before a resume and, with several
        ranks, the largest rank's. Every rank calls it."""
        peak = max(self.peak_before, metrics.peak_memory(self.device))
        if self.world > 1:
            t = torch.tensor([peak], dtype=torch.int64, device=_collective_device())
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            peak = int(t.item())
        return peak

    def seed_epoch(self) -> None:
        """Seed this rank's own randomness for the current epoch from (seed, epoch, rank)."""
        torch.manual_seed(rank_seed(self.config.seed, self.epoch, self.rank))

    CHECKPOINT_KEYS = ("config_hash", "epoch", "step", "samples", "train_time", "step_times", "history",
                       "model", "optimizer", "pruner")  # required; the others have defaults

    def resume(self) -> bool:
        """Restore the last checkpoint, if it is this config's; False if there is none. Raises
        BadCheckpoint (which sets it aside) for one that loads but cannot be restored: the
        trainer may be half restored then, so the caller starts over with a new one."""
        ckpt = load_checkpoint(self.checkpoint_path)
        if not isinstance(ckpt, dict) or ckpt.get("config_hash") != self.config.config_hash:
            return False
        missing = [k for k in self.CHECKPOINT_KEYS if k not in ckpt]
        if missing:
            raise BadCheckpoint(self.checkpoint_path, f"it lacks {', '.join(missing)}")
        try:
            self._restore(ckpt)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise BadCheckpoint(self.checkpoint_path, f"{type(e).__name__}: {e}") from None
        return True

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.pruner.load_state_dict(ckpt["pruner"])  # first: it may rebuild a pruned architecture
        if self.pruner.model_changed:
            self.rebuild_optimizer()
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        # Each rank restores its own state if the writer had that rank. A rank the writer did not
        # have keeps a fresh state, and states of ranks gone are dropped: every epoch reseeds from
        # (seed, epoch, rank), so the epochs that follow are those of a run with this many ranks.
        states = ckpt.get("rng") or []
        if self.rank < len(states):
            torch.set_rng_state(states[self.rank]["cpu"])
            if self.device.type == "cuda" and states[self.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(states[self.rank]["cuda"], self.device)
        self.peak_before = ckpt.get("peak_memory_bytes") or 0
        self.epoch, self.step, self.samples = ckpt["epoch"], ckpt["step"], ckpt["samples"]
        self.train_time, self.history = ckpt["train_time"], ckpt["history"]
        self.train_macs = ckpt.get("train_macs", 0.0)
        self.step_times.extend(ckpt["step_times"])
        self.tensor_peak = ckpt.get("tensor_peak")

    # -- loop -------------------------------------------------------------------------------
    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """A new optimizer after the pruner replaced the model's parameters (structured pruning)."""
        self.pruner.model_changed = False
        self.optimizer = self.pruner.make_optimizer(self.model)
        self.net = self.wrap(self.model)
        self.set_lr()
        return self.optimizer

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel when several ranks train together: it averages gradients."""
        return nn.parallel.DistributedDataParallel(model) if self.world > 1 else model

    def autocast(self) -> torch.autocast:
        """The budget's precision for forward passes: bf16 autocast, or fp32 (a no-op)."""
        bf16 = self.budget.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _shard(self) -> dict[str, Any]:
        """Keyword for the data's batches: this rank's share under torch.distributed."""
        return {"shard": (self.rank, self.world)} if self.world > 1 else {}

    def set_lr(self) -> float:
        """Each parameter group's initial lr (the budget's, or the recipe's own) times the schedule's
        factor at this step; returns the budget's lr at this step."""
        factor = lr_factor(self.budget, self.pruner.lr_progress(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
        return self.budget.lr * factor

    def train_epoch(self, max_steps: int | None = None, past_budget: bool = False) -> float:
        """One epoch's batches (at most `max_steps` of them, and never past the step budget unless
        `past_budget`: perf times as many steps as it needs); returns the mean task loss. Step
        times are kept in `step_times` (ms)."""
        dev = self.device
        self.model.train()
        loss_sum = torch.zeros((), device=dev)
        n = 0
        limit = math.inf if past_budget else self.total_steps
        stop = limit if max_steps is None else min(limit, self.step + max_steps)
        cuda = dev.type == "cuda"
        events: list[tuple[Any, Any]] = []
        metrics.synchronize(dev)
        t_epoch = time.perf_counter()
        b = self.budget
        batches = self.data.train_batches(b.batch_size, self.epoch, self.config.seed, **self._shard())
        for i, (x, y) in enumerate(batches):
            if self.step >= stop:
                break
            # with several ranks, x is this rank's slice of a global batch of this many examples
            n_left = self.data.num_train - i * b.batch_size
            global_batch = min(b.batch_size, n_left) if self.world > 1 else None
            if not cuda and self.step in MEMORY_STEPS:
                loss_sum += self.tracked_step(x, y, global_batch)
                n += 1
                continue
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            else:
                t0 = time.perf_counter()
            loss_sum += self.train_step(x, y, global_batch)
            if cuda:
                end.record()
                events.append((start, end))
            else:
                self.step_times.append((time.perf_counter() - t0) * 1e3)
            n += 1
        if self.world > 1:  # every rank logs (and checks divergence on) the same global loss
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= self.world
        metrics.synchronize(dev)
        self.train_time += time.perf_counter() - t_epoch
        self.step_times.extend(s.elapsed_time(e) for s, e in events)
        return (loss_sum / max(n, 1)).item()

    def train_step(self, x: torch.Tensor, y: torch.Tensor, global_batch: int | None = None) -> torch.Tensor:
        """One optimizer step on a global batch, every pruner hook in the protocol's order; returns
        the detached task loss. The step API perf and the dry-run estimate time. `x, y`: the whole
        global batch, or (`global_batch` given, several ranks) this rank's slice of one that size."""
        self.set_lr()
        if self.world > 1 and global_batch is None:
            global_batch = len(y)
            x, y = x.tensor_split(self.world)[self.rank], y.tensor_split(self.world)[self.rank]
        n_batch = global_batch or len(y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            if self.world > 1:
                # each rank has a disjoint slice of the global batch; DDP averages gradients over
                # ranks, so a slice's summed loss is scaled to make that average the global mean
                loss = F.cross_entropy(self.net(x), y, reduction="sum") * (self.world / n_batch)
            else:
                loss = F.cross_entropy(self.model(x), y)
        reg = self.pruner.regularizer(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if reg is None else loss + reg).backward()
        self.update()
        self.step += 1
        self.samples += n_batch
        self.train_macs += n_batch * metrics.step_macs(
            self.macs_dense, self.layer_macs, self.pruner.compute_densities())
        return loss.detach()

    def tracked_step(self, x: torch.Tensor, y: torch.Tensor, global_batch: int | None = None) -> torch.Tensor:
        """`train_step` with its live tensors tracked (CPU): raises `tensor_peak` to the step's peak."""
        opt_state = (v for st in self.optimizer.state.values() for v in st.values() if torch.is_tensor(v))
        params = list(self.model.parameters())
        existing = (*params, *(p.grad for p in params if p.grad is not None), *self.model.buffers(),
                    *opt_state, *self.pruner.state_tensors())
        with metrics.TensorMemory(existing) as memory:
            loss = self.train_step(x, y, global_batch)
        self.tensor_peak = max(self.tensor_peak or 0, memory.peak)
        return loss

    def update(self) -> None:
        """The half of a step after `backward`: the pruner's `after_backward`, the optimizer step,
        `after_step`, and a new optimizer if the pruner changed the model."""
        self.pruner.after_backward(self.step)
        if self.pruner.updates(self.step):
            self.optimizer.step()
        self.pruner.after_step(self.step)
        if self.pruner.model_changed:
            self.rebuild_optimizer()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> tuple[float, float]:
        """(top-1, top-5) on the test set, or on the validation split (`split="val"`, evaluated whole
        by every rank). With several ranks each evaluates its share of the test set, with rank 0's
        buffers (BatchNorm statistics), and the counts are summed: one process's result."""
        model.eval()
        if self.world > 1:
            for buf in model.buffers():
                torch.distributed.broadcast(buf, src=0)
        correct1 = correct5 = total = 0
        k = min(5, self.data.num_classes)
        size = max(self.budget.batch_size, 256)
        val = split == "val"
        batches = self.data.val_batches(size) if val else self.data.test_batches(size, **self._shard())
        for x, y in batches:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                top = model(x).topk(k, dim=1).indices
            correct1 += int((top[:, 0] == y).sum())
            correct5 += int((top == y[:, None]).any(dim=1).sum())
            total += len(y)
        if self.world > 1 and not val:
            counts = torch.tensor([correct1, correct5, total], dtype=torch.int64, device=_collective_device())
            torch.distributed.all_reduce(counts)
            correct1, correct5, total = counts.tolist()
        self.model.train()
        return correct1 / max(total, 1), correct5 / max(total, 1)

    def eta_s(self) -> float | None:
        """Seconds left, from this process's wall time per epoch so far (None before an epoch)."""
        done = self.epoch - self._fit_start_epoch
        if done <= 0:
            return None
        return (time.perf_counter() - self._fit_start_time) / done * (self.budget.epochs - self.epoch)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def fit(self, started: str) -> dict[str, Any]:
        resumed = self.resume()
        self._fit_start_epoch, self._fit_start_time = self.epoch, time.perf_counter()
        self._call("on_fit_start")
        metrics.reset_peak_memory(self.device)
        self.load_before = metrics.load_average()
        status, diverged_epoch = "ok", None
        epochs = max(self.budget.epochs, math.ceil(self.total_steps / self.steps_per_epoch))
        bar = tqdm(
            total=epochs,
            initial=self.epoch,
            disable=not self.progress or self.rank != 0,
            unit="epoch",
            desc=self.config.run_id,
            leave=True,
        )
        while self.epoch < epochs and self.step < self.total_steps:
            self.seed_epoch()
            loss = self.train_epoch()
            self.pruner.end_epoch(self.epoch)
            if not math.isfinite(loss):
                status, diverged_epoch = "diverged", self.epoch
                self.history.append(self._epoch_row(loss, None, None))
                self.epoch += 1
                self._call("on_epoch_end", self.history[-1])
                break
            evaluated = self.pruner.finalize(self.model)
            top1, _ = self.evaluate(evaluated)
            sparsity = metrics.sparsity_stats(evaluated, self.dense_counts)["sparsity"]
            self.history.append(self._epoch_row(loss, top1, sparsity))
            self.epoch += 1
            self.save()
            if self.rank == 0:
                self._write_history()
            self._call("on_epoch_end", self.history[-1])
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss:.3f}", top1=f"{top1:.3f}", sparsity=f"{self.history[-1]['sparsity']:.3f}"
            )
        bar.close()
        if self.rank == 0:
            self._write_history()
        record = self._record(status, diverged_epoch, started, resumed)
        self._call("on_fit_end", record)
        return record

    def _epoch_row(self, loss: float, top1: float | None, sparsity: float | None) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "loss": loss,
            "top1": top1,
            "sparsity": sparsity,
            "lr": self.optimizer.param_groups[0]["lr"],
            "elapsed_s": self.train_time,
        }

    def _write_history(self) -> None:
        if not self.history:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.history[0]))
        writer.writeheader()
        writer.writerows(self.history)
        write_text(self.run_dir / "history.csv", buf.getvalue())

    def _record(self, status: str, diverged_epoch: int | None, started: str, resumed: bool) -> dict[str, Any]:
        load_after = metrics.load_average()
        final = self.pruner.finalize(self.model)
        top1, top5 = self.evaluate(final) if status == "ok" else (None, None)
        val_top1 = self.evaluate(final, "val")[0] if status == "ok" and self.data.num_val else None
        sparsity = metrics.sparsity_stats(final, self.dense_counts)
        _, macs_sparse = metrics.macs(final, self.data.input_shape, self.device)
        provenance = metrics.provenance(self.device)
        times = list(self.step_times)
        cuda = self.device.type == "cuda"
        peak = self.peak_memory()  # the last collective: the other ranks do not wait for what follows
        speedup: dict[str, Any] = {}
        if status == "ok" and self.rank == 0:  # measured inference speed-up per backend (bench.inference)
            build = MODELS.get(self.config.model).build
            speedup = measure_trained(final, self.data, self.device, lambda: build(self.data.num_classes),
                                      (self.macs_dense, macs_sparse))
        record = RunRecord(
            **self.config.identity(),
            status=status,
            diverged_epoch=diverged_epoch,
            top1=top1,
            val_top1=val_top1,
            top5=top5,
            **sparsity,
            macs_dense=self.macs_dense,
            macs_sparse=macs_sparse,
            num_train=self.data.num_train,
            num_val=self.data.num_val,
            num_test=self.data.num_test,
            epochs_completed=self.epoch,
            steps=self.step,
            samples_seen=self.samples,
            train_time_s=self.train_time,
            step_time_ms=median(times) if times else None,
            step_time_iqr_ms=_iqr(times),
            loaded=is_loaded(self.load_before, load_after, provenance["cpu_count"]),
            peak_memory_bytes=peak,
            peak_tensor_bytes=peak if cuda else self.tensor_peak,
            state_bytes=metrics.state_bytes(self.model, self.optimizer, self.pruner.state_tensors()),
            resumed=resumed,
            optimizer=describe_optimizer(self.optimizer),
            load_avg_before=self.load_before,
            load_avg_after=load_after,
            **metrics.training_compute(
                self.train_macs + self.pruner.extra_macs, self.macs_dense,
                min(self.budget.epochs * self.data.num_train, self.budget_steps * self.budget.batch_size),
            ),
            budget_multiplier=self.total_steps / self.budget_steps,
            **speedup,
            **provenance,
            gpu_type=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None,
            gpus=self.world,
            precision=self.budget.precision,
            started_at=started,
            finished_at=_now(),
        ).to_dict()
        return write_json(self.run_dir / "result.json", record) if self.rank == 0 else record


def _iqr(times: list[float]) -> float | None:
    """Interquartile range of the step times (None for fewer than two)."""
    if len(times) < 2:
        return None
    q1, _, q3 = quantiles(times, n=4)
    return q3 - q1


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """`SGD(lr=0.1, momentum=0.9, weight_decay=0.0005)`: the optimizer and the settings of its first
    parameter group that differ from none (lr: the initial one)."""
    group = optimizer.param_groups[0]
    keys = ("lr", "momentum", "nesterov", "betas", "weight_decay", "c", "mu")
    values = {k: group.get("initial_lr", group["lr"]) if k == "lr" else group[k] for k in keys if k in group}
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
                      if v not in (0, 0.0, False))
    return f"{type(optimizer).__name__}({shown})"
