"""Measuring along a path between two weight vectors: training loss and validation/test top-1 at
each point (batch norm recomputed), the barrier, and the quadratic Bezier curve of Garipov et al."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.config import RunConfig

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.data import Data

BATCH = 512  # evaluation batch size

Batches = list[tuple["torch.Tensor", "torch.Tensor"]]


def training_batches(data: Data, seed: int, examples: int | None = None, size: int = BATCH) -> Batches:
    """A fixed sample of the training set (its first `examples` in the order of `seed`'s epoch 0;
    None: all of it), in batches of `size`; unaugmented when `data` was loaded that way."""
    out: Batches = []
    left = data.num_train if examples is None else min(examples, data.num_train)
    for x, y in data.train_batches(size, 0, seed):
        if left <= 0:
            break
        out.append((x[:left], y[:left]))
        left -= len(y)
    return out


def flat(model: nn.Module) -> torch.Tensor:
    from torch.nn.utils import parameters_to_vector

    return parameters_to_vector(model.parameters()).detach().clone()


def recompute_bn(model: nn.Module, batches: Batches) -> None:
    """Batch-norm running statistics recomputed over `batches` (no-op without BN): the mean is the
    exact mean over their examples, the variance the example-weighted mean of the batch variances
    (as Garipov et al.'s `bn_update`)."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
    model.train()
    seen = 0
    with torch.no_grad():
        for x, _ in batches:
            for m in bns:  # weight of this batch in the running average: its share of the examples
                m.momentum = len(x) / (seen + len(x))
            model(x)
            seen += len(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def measure(model: nn.Module, train: Batches, data: Data) -> dict[str, float]:
    """Training loss (mean cross-entropy over `train`) and validation and test top-1 of `model`."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        loss = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in train)
        out["loss"] = loss / sum(len(y) for _, y in train)
        for split, batches in (("val_top1", data.val_batches(BATCH)),
                               ("test_top1", data.test_batches(BATCH))):
            hits = total = 0
            for x, y in batches:
                hits += int((model(x).argmax(1) == y).sum())
                total += len(y)
            out[split] = hits / total if total else math.nan
    return out


def walk(model: nn.Module, weights: Iterable[tuple[float, torch.Tensor]], train: Batches,
         data: Data) -> pd.DataFrame:
    """`measure` at each (t, flat weights), batch norm recomputed: columns t, loss, val_top1, test_top1."""
    from torch.nn.utils import vector_to_parameters

    rows = []
    for t, w in weights:
        vector_to_parameters(w, model.parameters())
        recompute_bn(model, train)
        rows.append({"t": t, **measure(model, train, data)})
    return pd.DataFrame(rows)


def line(w_a: torch.Tensor, w_b: torch.Tensor, points: int) -> list[tuple[float, torch.Tensor]]:
    """Evenly spaced points of the straight path, the ends exactly w_a and w_b."""
    import torch

    ts = np.linspace(0.0, 1.0, points)
    return [(float(t), torch.lerp(w_a, w_b, float(t))) for t in ts]


def barrier(path: pd.DataFrame) -> float:
    """max over the path of loss(t) minus the chord between the end losses (0: no barrier)."""
    t, loss = path["t"].to_numpy(), path["loss"].to_numpy()
    chord = (1 - t) * loss[0] + t * loss[-1]
    return float(max(0.0, (loss - chord).max()))


def bezier(w_a: torch.Tensor, theta: torch.Tensor, w_b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) ** 2 * w_a + 2 * t * (1 - t) * theta + t**2 * w_b


def fit_bezier(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, data: Data, config: RunConfig,
               epochs: int) -> torch.Tensor:
    """The control point of a quadratic Bezier curve from w_a to w_b (Garipov et al. 2018): starts
    at the midpoint, trained by SGD (the run's lr, batch size and momentum, constant lr) on the loss
    at one uniformly drawn t per mini-batch; data order and t draws from the run's seed."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    b = config.budget
    names, shapes = layout(model)
    buffers = dict(model.named_buffers())
    theta = ((w_a + w_b) / 2).requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=b.lr, momentum=b.momentum)
    g = torch.Generator().manual_seed(config.seed)
    model.train()
    for epoch in range(epochs):
        for x, y in data.train_batches(b.batch_size, epoch, config.seed):
            t = float(torch.rand((), generator=g))
            params = unflat(bezier(w_a, theta, w_b, t), names, shapes)
            loss = F.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return theta.detach()


def layout(model: nn.Module) -> tuple[list[str], list[torch.Size]]:
    named = list(model.named_parameters())
    return [n for n, _ in named], [p.shape for _, p in named]


def unflat(w: torch.Tensor, names: list[str], shapes: list[torch.Size]) -> dict[str, torch.Tensor]:
    sizes = [math.prod(s) for s in shapes]
    return {n: c.view(s) for n, c, s in zip(names, w.split(sizes), shapes, strict=True)}
