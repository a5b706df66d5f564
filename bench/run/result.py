"""The record of a trained run (bench.record.RunRecord), read off its trainer after `fit`: the
final evaluation (test and validation, with every example's prediction kept), sparsity, MACs,
timing, memory and provenance. Nothing here trains, measures speed-ups or writes files."""

from __future__ import annotations

from datetime import UTC, datetime
from statistics import median, quantiles
from typing import TYPE_CHECKING, Any

import torch

from bench import metrics
from bench.code_version import code_hashes
from bench.record import RunRecord, is_loaded
from bench.runs import RunStatus

if TYPE_CHECKING:
    from bench.run.trainer import Trainer

# the torch optimizer settings that say how it computes, not what: left out of its description
IMPLEMENTATION_KEYS = {"maximize", "foreach", "capturable", "differentiable", "fused", "eps",
                       "decoupled_weight_decay", "dampening", "initial_lr", "params"}
FIRST_KEYS = ("lr", "momentum", "nesterov", "betas", "weight_decay")  # shown first, in this order


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_record(t: Trainer, status: str, diverged_epoch: int | None, started: str, resumed: bool,
               ) -> dict[str, Any]:
    """The run's result record (a dict, as result.json holds it); the final model's predictions
    stay in `t.predictions` (rank 0 has every rank's)."""
    b, built = t.budget, t.built
    load_after = metrics.load_average()
    final = t.pruner.finalize(t.model)
    ok = status == RunStatus.OK
    top1, top5 = t.evaluate(final, keep=True) if ok else (None, None)
    val_top1 = t.evaluate(final, "val", keep=True)[0] if ok and t.data.num_val else None
    _, macs_sparse = metrics.macs(final, t.data.input_shape, t.device)
    provenance = metrics.provenance(t.device)
    times = list(t.step_times)
    peak = t.peak_memory()  # the last collective: the other ranks do not wait for what follows
    return RunRecord(
        **t.config.identity(),
        status=status,
        diverged_epoch=diverged_epoch,
        top1=top1,
        val_top1=val_top1,
        top5=top5,
        **metrics.sparsity_stats(final, built.dense_counts, t.pruner.reported_masks()),
        macs_dense=built.macs_dense,
        macs_sparse=macs_sparse,
        num_train=t.data.num_train,
        num_val=t.data.num_val,
        num_test=t.data.num_test,
        epochs_completed=t.epoch,
        steps=t.step,
        samples_seen=t.samples,
        train_time_s=t.train_time,
        step_time_ms=median(times) if times else None,
        step_time_iqr_ms=_iqr(times),
        loaded=is_loaded(t.load_before, load_after, provenance["cpu_count"]),
        peak_memory_bytes=peak,
        peak_tensor_bytes=peak if t.device.type == "cuda" else t.tensor_peak,
        state_bytes=metrics.state_bytes(t.model, t.optimizer, t.pruner.state_tensors()),
        resumed=resumed,
        optimizer=describe_optimizer(t.optimizer),
        optimizer_family=getattr(t.pruner, "optimizer_family", None),
        code_hashes=code_hashes(t.config),
        load_avg_before=t.load_before,
        load_avg_after=load_after,
        **metrics.training_compute(
            t.train_macs + t.pruner.extra_macs, built.macs_dense,
            min(b.epochs * t.data.num_train, built.budget_steps * b.batch_size),
        ),
        budget_multiplier=t.total_steps / built.budget_steps,
        **provenance,
        gpu_type=torch.cuda.get_device_name(t.device) if t.device.type == "cuda" else None,
        gpus=t.world,
        precision=b.precision,
        compiled=t.config.compile,
        started_at=started,
        finished_at=now(),
    ).to_dict()


def _iqr(times: list[float]) -> float | None:
    """Interquartile range of the step times (None for fewer than two)."""
    if len(times) < 2:
        return None
    q1, _, q3 = quantiles(times, n=4)
    return q3 - q1


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """`SGD(lr=0.1, momentum=0.9, weight_decay=0.0005)`: the optimizer and the settings of its first
    parameter group that are not zero (lr: the initial one); every setting the optimizer declares
    in its defaults counts, except how it computes (IMPLEMENTATION_KEYS)."""
    group = optimizer.param_groups[0]
    keys = [k for k in FIRST_KEYS if k in group]
    keys += [k for k in optimizer.defaults if k not in keys and k not in IMPLEMENTATION_KEYS and k in group]
    values = {k: group.get("initial_lr", group["lr"]) if k == "lr" else group[k] for k in keys}
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
                      if v is not None and not isinstance(v, torch.Tensor) and v not in (0, 0.0, False))
    return f"{type(optimizer).__name__}({shown})"

