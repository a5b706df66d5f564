"""`rigl`: Rigging the Lottery (Evci, Gale, Menick, Castro & Elsen, ICML 2020).

Sparse from step 0: each prunable layer starts with a random mask at its ERK density (see
`erk_densities`), so that all layers together hold 1 - `sparsity` of the weights. Every dT
optimizer steps t < T_end (= `end` of the budget), after the step, in every layer:

    k = floor(f(t) * active),   f(t) = alpha / 2 * (1 + cos(pi * t / T_end))
    drop the k active weights of smallest |w|;
    grow the k connections inactive after the drop with the largest |dense gradient| of that
    step (a just-dropped one may come straight back, as in the paper's Algorithm 1 and the
    reference code; it then keeps its weight); the newly active start at 0, and so does their
    optimizer state.

The layer's count never changes, so neither does the sparsity. The dense gradient costs one
dense backward pass on the update steps (counted in `extra_macs`: f_D - f_S per example, as in
the paper's FLOP count); every other pass runs at the layer's density.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from baselines._mask import MaskPruner, check_choice, check_sparsity, erk_densities, random_masks
from bench import metrics
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, PrunerInfo, register_pruner

DISTRIBUTIONS = ("erk", "er", "uniform")


def layer_densities(shapes: dict[str, torch.Size], density: float, distribution: str) -> dict[str, float]:
    """ERK, Erdos-Renyi (kernel dims left out) or uniform layer densities averaging `density`."""
    if distribution == "uniform":
        return {n: density for n in shapes}
    return erk_densities(shapes, density, kernel=distribution == "erk")


@torch.no_grad()
def drop_and_grow(
    mask: torch.Tensor, drop_scores: torch.Tensor, grow_scores: torch.Tensor, k: int
) -> torch.Tensor:
    """The mask with the k active entries of lowest `drop_scores` dropped, then the k entries
    inactive after the drop (the just-dropped included) of highest `grow_scores` grown."""
    flat = mask.flatten()
    k = min(k, int(flat.sum()))
    if k <= 0:
        return mask
    drop = torch.where(flat, drop_scores.flatten(), torch.inf).topk(k, largest=False).indices
    new = flat.clone()
    new[drop] = False
    grow = torch.where(new, -torch.inf, grow_scores.flatten()).topk(k).indices
    new[grow] = True
    return new.view_as(mask)


@dataclass(frozen=True)
class RigLHparams:
    sparsity: float = hp(0.9, "overall sparsity of the prunable weights, held from step 0, in [0, 1)")
    distribution: Literal["erk", "er", "uniform"] = hp(
        "erk", "layer densities: erk (Evci et al.), er (Erdos-Renyi), uniform (every layer at `sparsity`)"
    )
    alpha: float = hp(0.3, "initial drop fraction; f(t) = alpha/2 * (1 + cos(pi t / T_end))")
    delta_t: int = hp(100, "optimizer steps between connectivity updates (ImageNet: 100)")
    end: float = hp(0.75, "T_end: no update from this fraction of the budget's steps on")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha = {self.alpha!r}: must be in [0, 1]")
        if not self.delta_t >= 1:
            raise ValueError(f"delta_t = {self.delta_t!r}: must be >= 1")
        if not 0 < self.end <= 1:
            raise ValueError(f"end = {self.end!r}: must be in (0, 1]")


class SparseFromStart(MaskPruner):
    """Random masks at the method's layer densities from step 0 (RigL, SET); `update_layers`
    drops and grows in every layer at once. The initial masks come from the generator of step 0
    (the same on every rank)."""

    info = PrunerInfo(regrows=True, randomized=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        shapes = {n: w.shape for n, w in self.weights().items()}
        dens = layer_densities(shapes, 1 - self.hp.sparsity, self.hp.distribution)
        device = next(iter(self.weights().values())).device
        self.set_masks(random_masks(dens, shapes, device, self.rng(0, "init")))
        self.macs = (metrics.layer_macs(model, self.ctx.input_shape, torch.device(device))
                     if self.ctx.input_shape else {})
        return model

    def update_layers(
        self,
        count: Callable[[str], int],
        drop_scores: Callable[[str], torch.Tensor],
        grow_scores: Callable[[str], torch.Tensor],
    ) -> None:
        masks = {}
        for name in self.layers:
            masks[name] = drop_and_grow(self.masks[name], drop_scores(name), grow_scores(name), count(name))
        self.set_masks(masks)  # zeroes the dropped weights; the grown were masked, so they are 0


@register_pruner("rigl")
class RigLPruner(SparseFromStart):
    """RigL: ERK-sparse from the start; drop by |w|, grow by |dense gradient| every dT steps."""

    Hparams = RigLHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained

    def prepare(self, model: nn.Module) -> nn.Module:
        self.t_end = self.hp.end * self.ctx.total_steps
        self.grads: dict[str, torch.Tensor] = {}
        return super().prepare(model)

    def is_update(self, t: int) -> bool:
        return t % self.hp.delta_t == 0 and 0 < t < self.t_end

    def drop_fraction(self, t: int) -> float:
        return self.hp.alpha / 2 * (1 + math.cos(math.pi * t / self.t_end))

    def after_backward(self, step: int) -> None:
        if self.is_update(step + 1):  # keep the dense gradient before the mask hides it
            self.grads = {n: w.grad.detach().abs() for n, w in self.weights().items()}
            self.extra_macs += self.budget.batch_size * sum(
                self.macs.get(n, 0.0) * (1 - d) for n, d in self.densities.items())
        super().after_backward(step)

    def after_step(self, step: int) -> None:
        t = step + 1
        if self.is_update(t):
            f = self.drop_fraction(t)
            self.update_layers(lambda n: int(f * self.densities[n] * self.masks[n].numel()),
                               lambda n: self.layers[n].weight.detach().abs(), lambda n: self.grads[n])
            self.grads = {}
