"""`set`: Sparse Evolutionary Training (Mocanu et al., Nature Communications 2018).

Erdos-Renyi sparse layers from step 0 (random masks at the densities of `rigl`'s "er"
distribution, all layers together at 1 - `sparsity`). After each epoch but the last, in every
layer: remove the fraction zeta of the positive active weights closest to zero (the smallest)
and zeta of the negative ones (the largest), and regrow as many connections at random positions
inactive after the removal (a just-removed one may return, as in RigL's implementation of SET,
keeping its weight); new connections start at 0 (RigL's implementation). The count per layer
never changes, so neither does the mask's sparsity (a regrown weight that never moves from 0,
e.g. on an input that is always 0, is counted as a zero by the run's sparsity). Every pass runs
at the layer's density. The
draws after epoch e come from the generator of the step that ends it: the same on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from baselines._mask import check_choice, check_sparsity
from baselines.rigl import DISTRIBUTIONS, SparseFromStart
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, register_pruner


@dataclass(frozen=True)
class SETHparams:
    sparsity: float = hp(0.9, "overall sparsity of the prunable weights, held from step 0, in [0, 1)")
    distribution: Literal["erk", "er", "uniform"] = hp(
        "er", "layer densities: er (Erdos-Renyi, Mocanu et al.), erk, uniform"
    )
    zeta: float = hp(0.3, "fraction of the positive and of the negative active weights replaced each epoch")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        if not 0 <= self.zeta < 1:
            raise ValueError(f"zeta = {self.zeta!r}: must be in [0, 1)")


@register_pruner("set")
class SETPruner(SparseFromStart):
    """SET: Erdos-Renyi sparse from the start; after each epoch the weights nearest zero are
    replaced by random new connections."""

    Hparams = SETHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained

    def reported_masks(self) -> dict[str, torch.Tensor]:
        # regrown connections start at 0; on inputs that are always 0 (digits' border pixels) they
        # never move: they are still connections of the sparse network, so sparsity is the mask's
        return self.masks

    def end_epoch(self, epoch: int) -> None:
        if epoch >= self.budget.epochs - 1:
            return
        zeta = self.hp.zeta
        drops: dict[str, torch.Tensor] = {}
        for name, w in self.weights().items():
            w, mask = w.detach(), self.masks[name]
            pos, neg = mask & (w > 0), mask & (w <= 0)
            k_pos, k_neg = int(zeta * int(pos.sum())), int(zeta * int(neg.sum()))
            drop = torch.zeros_like(mask)
            flat = drop.view(-1)
            if k_pos:
                flat[torch.where(pos, w, torch.inf).flatten().topk(k_pos, largest=False).indices] = True
            if k_neg:
                flat[torch.where(neg, w, -torch.inf).flatten().topk(k_neg).indices] = True
            drops[name] = drop
        # drop_and_grow drops the lowest-scoring active entries: the chosen ones score 0, the rest 1
        gen = self.rng((epoch + 1) * self.ctx.steps_per_epoch, "regrow")
        self.update_layers(lambda n: int(drops[n].sum()), lambda n: (~drops[n]).float(),
                           lambda n: torch.rand(self.masks[n].shape, device=self.masks[n].device,
                                                generator=gen))
