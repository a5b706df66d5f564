"""Evaluation of a model on the run's test set or validation split: top-1, top-5 and, when asked,
every example's predicted and true class (predictions.npz), in the data set's fixed order."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from bench.run.distributed import collective_device, gather_cat

if TYPE_CHECKING:
    from bench.run.trainer import Trainer


@torch.no_grad()
def evaluate(t: Trainer, model: nn.Module, split: str = "test", keep: bool = False,
             ) -> tuple[float, float, torch.Tensor | None]:
    """(top-1, top-5, predictions) of `model` on the test set, or on the validation split
    (`split="val"`). With several ranks each evaluates (and decodes) only its share of the split,
    with rank 0's buffers (BatchNorm statistics), and the counts are summed: one process's result.
    `keep`: predictions is a (2, examples) tensor of predicted and true classes, every rank's
    gathered in order (else None). The trainer's model is left in training mode."""
    model.eval()
    if t.world > 1:
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)
    correct1 = correct5 = total = 0
    k = min(5, t.data.num_classes)
    size = max(t.budget.batch_size, 256)
    shard = {"shard": (t.rank, t.world)} if t.world > 1 else {}
    batches = (t.data.val_batches if split == "val" else t.data.test_batches)(size, **shard)
    pred, true = [], []
    for x, y in batches:
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with t.autocast():
            top = model(x).topk(k, dim=1).indices
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += len(y)
        if keep:
            pred.append(top[:, 0].cpu())
            true.append(y.cpu())
    if t.world > 1:
        counts = torch.tensor([correct1, correct5, total], dtype=torch.int64, device=collective_device())
        torch.distributed.all_reduce(counts)
        correct1, correct5, total = counts.tolist()
    predictions = None
    if keep:
        empty = torch.zeros(0, dtype=torch.long)
        predictions = torch.stack([gather_cat(torch.cat(p) if p else empty, t.world) for p in (pred, true)])
    t.model.train()
    return correct1 / max(total, 1), correct5 / max(total, 1), predictions
