"""The training loop and evaluation of one run; nothing else. The pieces come from
`bench.run.build`, the checkpoint from `bench.run.checkpoint`, the record from `bench.run.record`.

Each epoch: the training batches (every pruner hook in the protocol's order), then the validation
top-1 of the pruner's evaluated model, its sparsity and ||w||_2 / ||w||_1 (history.csv); a
checkpoint. The test set is evaluated once, at the end. Under torch.distributed (several ranks,
one device each) every rank loads and evaluates only its share of each batch and of the test set.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench import metrics
from bench.callbacks import Callback
from bench.config import RunConfig
from bench.pretrained import starter
from bench.pruner import mask_optimizer_state
from bench.run import checkpoint, evaluation, history
from bench.run.build import Built, build
from bench.run.distributed import dist_info, max_over_ranks, rank_seed, sync_batchnorm
from bench.run.memory import MEMORY_STEPS, tracked_step
from bench.run.result import run_record
from bench.runs import RunDir, RunStatus
from bench.schedules import lr_factor

STEP_TIME_WINDOW = 2000  # step times kept for the median (the most recent ones)


class Trainer:
    def __init__(self, setup: RunConfig | Built, run_dir: str | Path, progress: bool = False,
                 callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        """`setup`: a config (built here) or what `bench.run.build.build` made of one; `run_dir`:
        the run folder (RunDir or path); `callbacks`: see bench.callbacks (called by `fit`)."""
        built = setup if isinstance(setup, Built) else build(setup, init=starter(setup.budget))
        self.built, self.config, self.budget = built, built.config, built.config.budget
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
        self.progress, self.callbacks = progress, list(callbacks)
        self.rank, self.world = dist_info()
        self.device, self.data, self.model = built.device, built.data, built.model
        self.pruner, self.optimizer, self.context = built.pruner, built.optimizer, built.context
        self.steps_per_epoch, self.total_steps = built.steps_per_epoch, built.total_steps
        # epochs this run trains: the budget's, or more where the pruner trains longer (IMP's rounds)
        self.total_epochs = max(self.budget.epochs, math.ceil(self.total_steps / self.steps_per_epoch))
        self.channels_last = built.channels_last
        self.net = wrap(self.model, self.world, self.device, self.config.compile)  # what a step calls
        self.epoch, self.step, self.samples, self.train_time, self.train_macs = 0, 0, 0, 0.0, 0.0
        # this epoch's correct training predictions, and its examples (train_top1)
        self.correct, self.epoch_samples = torch.zeros((), dtype=torch.int64, device=self.device), 0
        self.peak_before = 0  # the peak memory of the segments before a resume (bytes)
        self.saved_train_time = 0.0  # train_time at the last checkpoint
        self.history: list[dict[str, Any]] = []
        self.step_times: deque[float] = deque(maxlen=STEP_TIME_WINDOW)
        self.tensor_peak: int | None = None  # CPU: peak live tensor bytes over MEMORY_STEPS
        self.load_before: float | None = None  # the machine's load when training (re)started
        self.predictions: dict[str, torch.Tensor] = {}  # the final evaluation's, per split

    def peak_memory(self) -> int:
        """The run's peak memory so far (bytes): over the segments before a resume and, with several
        ranks, the largest rank's. Every rank calls it."""
        return max_over_ranks(max(self.peak_before, metrics.peak_memory(self.device)), self.world)

    def rebuild_optimizer(self) -> torch.optim.Optimizer:
        """A new optimizer after the pruner replaced the model's parameters (structured pruning)."""
        self.pruner.model_changed = False
        self.optimizer = self.pruner.make_optimizer(self.model)
        self.net = wrap(self.model, self.world, self.device, self.config.compile)
        self.set_lr()
        return self.optimizer

    def autocast(self) -> torch.autocast:
        """The budget's precision for forward passes: bf16 autocast, or fp32 (a no-op)."""
        return evaluation.autocast(self.device, self.budget.precision)

    def set_lr(self) -> float:
        """Each parameter group's initial lr (the budget's, or the recipe's own) times the schedule's
        factor at this step; returns the budget's lr at this step."""
        factor = lr_factor(self.budget, self.pruner.lr_progress(self.step))
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor
        return self.budget.lr * factor

    def train_epoch(self, steps: int | None = None) -> float:
        """This epoch's batches until the run's step budget ends, or exactly the next `steps` of them
        (timing may go past the budget; the pruners' schedules stay the budget's); returns the mean
        task loss. Step times are kept in `step_times` (ms)."""
        dev, b, cuda = self.device, self.budget, self.device.type == "cuda"
        self.model.train()
        loss_sum, n, events = torch.zeros((), device=dev), 0, []
        stop = self.total_steps if steps is None else self.step + steps
        self.correct.zero_()
        first = self.samples
        metrics.synchronize(dev)
        t_epoch = time.perf_counter()
        shard = {"shard": (self.rank, self.world)} if self.world > 1 else {}
        batches = self.data.train_batches(b.batch_size, self.epoch, self.config.seed, **shard)
        for i, (x, y) in enumerate(batches):
            if self.step >= stop:
                break
            # with several ranks, x is this rank's slice of a global batch of this many examples
            n_left = self.data.num_train - i * b.batch_size
            global_batch = min(b.batch_size, n_left) if self.world > 1 else None
            if not cuda and self.step in MEMORY_STEPS:
                loss_sum += tracked_step(self, x, y, global_batch)
            elif cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                loss_sum += self.train_step(x, y, global_batch)
                end.record()
                events.append((start, end))
            else:
                t0 = time.perf_counter()
                loss_sum += self.train_step(x, y, global_batch)
                self.step_times.append((time.perf_counter() - t0) * 1e3)
            n += 1
        if self.world > 1:  # every rank logs (and checks divergence on) the same global loss
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= self.world
            torch.distributed.all_reduce(self.correct)
        metrics.synchronize(dev)
        self.train_time += time.perf_counter() - t_epoch
        self.step_times.extend(s.elapsed_time(e) for s, e in events)
        self.epoch_samples = self.samples - first
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
            logits = self.net(x)
            if self.world > 1:
                # each rank has a disjoint slice of the global batch; DDP averages gradients over
                # ranks, so a slice's summed loss is scaled to make that average the global mean
                loss = F.cross_entropy(logits, y, reduction="sum") * (self.world / n_batch)
            else:
                loss = F.cross_entropy(logits, y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        reg = self.pruner.regularizer(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if reg is None else loss + reg).backward()
        self.update()
        self.step += 1
        self.samples += n_batch
        self.train_macs += n_batch * metrics.step_macs(
            self.built.macs_dense, self.built.layer_macs, self.pruner.compute_densities())
        return loss.detach()

    def update(self) -> None:
        """The half of a step after `backward`: `after_backward`, the optimizer step, `after_step`
        (after each, the optimizer state of `masked_weights` zeroed), a new optimizer if needed."""
        self.pruner.after_backward(self.step)
        if self.pruner.updates(self.step):
            mask_optimizer_state(self.optimizer, self.pruner.masked_weights())
            self.optimizer.step()
        self.pruner.after_step(self.step)
        mask_optimizer_state(self.optimizer, self.pruner.masked_weights())
        if self.pruner.model_changed:
            self.rebuild_optimizer()

    def evaluate(self, model: nn.Module, split: str = "test", keep: bool = False) -> tuple[float, float]:
        """(top-1, top-5) of `model` on the test set or the validation split (bench.run.evaluation);
        `keep`: also keep every example's predicted and true class in `predictions[split]`."""
        top1, top5, predictions = evaluation.evaluate(self.built, model, split, keep, self.rank, self.world)
        self.model.train()  # `model` may be the trained model itself
        if predictions is not None:
            self.predictions[split] = predictions
        return top1, top5

    def eta_s(self) -> float | None:
        """Seconds left, from this process's wall time per epoch so far (None before an epoch)."""
        done = self.epoch - self._fit_start_epoch
        if done <= 0:
            return None
        return (time.perf_counter() - self._fit_start_time) / done * (self.total_epochs - self.epoch)

    def seed_epoch(self) -> None:
        """Seed this rank's own randomness for the current epoch from (seed, epoch, rank)."""
        torch.manual_seed(rank_seed(self.config.seed, self.epoch, self.rank))

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def fit(self, started: str) -> dict[str, Any]:
        """Train (from the last checkpoint, if any) to the end of the budget; returns the record."""
        resumed = checkpoint.resume(self)  # the last checkpoint of this config, if any
        self._fit_start_epoch, self._fit_start_time = self.epoch, time.perf_counter()
        self.call("on_fit_start")
        metrics.reset_peak_memory(self.device)
        self.load_before = metrics.load_average()
        status, diverged_epoch = RunStatus.OK, None
        epochs = self.total_epochs
        bar = tqdm(total=epochs, initial=self.epoch, disable=not self.progress or self.rank != 0,
                   unit="epoch", desc=self.config.run_id, leave=True)
        while self.epoch < epochs and self.step < self.total_steps:
            self.seed_epoch()
            loss = self.train_epoch()
            self.pruner.end_epoch(self.epoch)
            if not math.isfinite(loss):
                status, diverged_epoch = RunStatus.DIVERGED, self.epoch
                self.history.append(history.epoch_row(self, loss, None))
                self.epoch += 1
                self.call("on_epoch_end", self.history[-1])
                break
            self.history.append(history.epoch_row(self, loss, self.pruner.finalize(self.model)))
            self.epoch += 1
            if checkpoint.due(self):
                checkpoint.save(self)  # every rank calls it
                history.write(self)
            self.call("on_epoch_end", self.history[-1])
            bar.update(1)
            row = self.history[-1]
            bar.set_postfix({k: f"{row[k]:.3f}" for k in ("loss", "train_top1", "val_top1", "sparsity")
                             if row[k] is not None})
        bar.close()
        history.write(self)
        record = run_record(self, status, diverged_epoch, started, resumed)
        self.call("on_fit_end", record)
        return record


def wrap(model: nn.Module, world: int, device: torch.device, compile_: bool) -> nn.Module:
    """What the training step calls: the model, under DistributedDataParallel when several ranks
    train together (it averages gradients; BatchNorm synchronised on GPUs: `sync_batchnorm`),
    compiled with `compile_` (the step's forward and backward; the saved model unchanged)."""
    net = nn.parallel.DistributedDataParallel(sync_batchnorm(model, device)) if world > 1 else model
    return torch.compile(net) if compile_ else net
