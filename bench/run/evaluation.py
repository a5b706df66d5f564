"""Evaluation of a model on the run's test set or validation split: top-1, top-5 and, when asked,
every example's predicted and true class (predictions.npz), in the data set's fixed order. It needs
only what `bench.run.build.build` made (data, batch size, device, precision, memory format), so a
finished run's model is evaluated as its run evaluated it without a Trainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.run.distributed import collective_device, gather_cat

if TYPE_CHECKING:
    from bench.run.build import Built


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The budget's precision for forward passes: bf16 autocast, or fp32 (a no-op)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(built: Built, model: nn.Module, split: str = "test", keep: bool = False, rank: int = 0,
             world: int = 1) -> tuple[float, float, torch.Tensor | None]:
    """(top-1, top-5, predictions) of `model` on the test set, or on the validation split
    (`split="val"`). With several ranks each evaluates (and decodes) only its share of the split,
    with rank 0's buffers (BatchNorm statistics), and the counts are summed: one process's result.
    `keep`: predictions is a (2, examples) tensor of predicted and true classes, every rank's
    gathered in order (else None). `model` is left in eval mode."""
    model.eval()
    if world > 1:
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)
    correct1 = correct5 = total = 0
    data, budget = built.data, built.config.budget
    k = min(5, data.num_classes)
    size = max(budget.batch_size, 256)
    shard = {"shard": (rank, world)} if world > 1 else {}
    batches = (data.val_batches if split == "val" else data.test_batches)(size, **shard)
    pred, true = [], []
    for x, y in batches:
        if built.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(built.device, budget.precision):
            top = model(x).topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += len(y)
        if keep:
            pred.append(top[:, 0].cpu())
            true.append(y.cpu())
    if world > 1:
        counts = torch.tensor([correct1, correct5, total], dtype=torch.int64, device=collective_device())
        torch.distributed.all_reduce(counts)
        correct1, correct5, total = counts.tolist()
    predictions = None
    if keep:
        empty = torch.zeros(0, dtype=torch.long)
        predictions = torch.stack([gather_cat(torch.cat(p) if p else empty, world) for p in (pred, true)])
    return correct1 / max(total, 1), correct5 / max(total, 1), predictions
