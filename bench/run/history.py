"""history.csv: one row per epoch, written by rank 0 after each epoch.

Columns: epoch, step, loss (mean training loss), train_top1 (top-1 on the epoch's training
batches, as trained), val_top1 (the validation split, the pruner's evaluated model), sparsity,
w_l2_l1 (||w||_2 / ||w||_1 of the network's weights, the gRDA paper's Figure 2: see
`l2_l1_ratio`), lr, elapsed_s (training seconds so far). The test set is not evaluated per epoch:
only at the end.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench import metrics
from bench.io import write_text

if TYPE_CHECKING:
    from bench.run.trainer import Trainer


def epoch_row(t: Trainer, loss: float, evaluated: nn.Module | None) -> dict[str, Any]:
    """The row of the epoch just trained (`evaluated`: the pruner's evaluated model; None after
    divergence: no evaluation then)."""
    done = evaluated is not None
    return {
        "epoch": t.epoch,
        "step": t.step,
        "loss": loss,
        "train_top1": int(t.correct) / t.epoch_samples if done and t.epoch_samples else None,
        "val_top1": t.evaluate(evaluated, "val")[0] if done and t.data.num_val else None,
        "sparsity": metrics.sparsity_stats(evaluated, t.built.dense_counts,
                                          t.pruner.reported_masks())["sparsity"] if done else None,
        "w_l2_l1": l2_l1_ratio(evaluated) if done else None,
        "lr": t.optimizer.param_groups[0]["lr"],
        "elapsed_s": t.train_time,
    }


def write(t: Trainer) -> None:
    """history.csv from the trainer's rows (rank 0; nothing before the first epoch)."""
    if t.rank != 0 or not t.history:
        return
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for row in t.history for k in row))  # a resumed run's old rows too
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(t.history)
    write_text(t.run.history, buf.getvalue())


def l2_l1_ratio(model: nn.Module) -> float:
    """||w||_2 / ||w||_1 over every parameter of `model`, taken as one vector (it grows as weights
    become sparse); NaN when every weight is zero.

    The history passes the pruner's evaluated model (`Pruner.finalize`): the network as it computes,
    masks applied and reparameterizations folded into plain layers, so its parameters are exactly
    the network's weights (every conv/linear weight and bias, every normalization scale and shift)
    and never a pruner's own variables (VD's log sigma^2, STR's dense weights v and thresholds s).
    For pruners whose `finalize` returns the trained model itself, that is the trained model's
    parameters."""
    with torch.no_grad():
        params = [p.detach().float() for p in model.parameters()]
        l1 = sum(p.abs().sum() for p in params)
        l2 = torch.sqrt(sum(p.pow(2).sum() for p in params))
        return float(l2 / l1) if float(l1) > 0 else float("nan")
