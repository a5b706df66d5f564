"""`snip`: single-shot network pruning by connection sensitivity (Lee, Ajanthan & Torr, ICLR 2019).

At initialization, on one mini-batch (the run's first batch): s_j = |g_j * w_j| / sum |g * w|,
with g = dL/dw of the task loss; the top 1 - `sparsity` of the prunable weights by s are kept
(one global cut), and the rest of the budget trains with the mask fixed. The first batch's
gradient only scores: that step updates nothing (`updates` is False for it). Training runs at
the mask's density; the dense scoring pass is counted in `extra_macs`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines._mask import MaskPruner, check_sparsity, keep_masks
from bench import metrics
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, register_pruner


@dataclass(frozen=True)
class SNIPHparams:
    sparsity: float = hp(0.9, "fraction of the prunable weights removed at initialization, in [0, 1)")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)


@register_pruner("snip")
class SNIPPruner(MaskPruner):
    """SNIP: keep the top |g * w| at initialization (one batch, one global cut), mask fixed."""

    Hparams = SNIPHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        if step == 0:
            scores = {n: (w.grad * w).abs() for n, w in self.weights().items()}
            total = sum(s.sum() for s in scores.values())
            self.set_masks(keep_masks({n: s / total for n, s in scores.items()}, self.hp.sparsity, "global"))
            if self.ctx.input_shape:  # the trainer counts this step at the mask's density: count it dense
                device = next(iter(scores.values())).device
                macs = metrics.layer_macs(self.model, self.ctx.input_shape, device)
                self.extra_macs += metrics.TRAIN_PASSES * self.budget.batch_size * sum(
                    macs[n] * (1 - d) for n, d in self.densities.items())
            return
        super().after_backward(step)

    def updates(self, step: int) -> bool:
        return step != 0  # the scoring batch trains nothing
