"""`synflow`: iterative synaptic flow pruning, data-free (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020).

Before training, on a float64 copy of the model with every parameter replaced by |theta| and
BN in eval mode, one all-ones input of the data's shape: R = sum of the outputs, score
= (dR/dw) * w. For k = 1..n (n = `rounds`, 100 in the paper) the scores are recomputed with the
current mask applied and the prunable weights pruned to density d^(k/n) globally (exponential
schedule, d = 1 - `sparsity`); pruned weights stay pruned. The real model (signs untouched)
then trains with the mask fixed, at its density. The n scoring passes (one example each,
forward + backward, dense) are counted in `extra_macs`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from baselines._mask import MaskPruner, check_sparsity, keep_masks
from bench import metrics
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, register_pruner


def synflow_masks(
    model: nn.Module, names: list[str], input_shape: tuple[int, ...], sparsity: float, rounds: int
) -> dict[str, torch.Tensor]:
    """SynFlow's masks of the layers `names` of `model` (left untouched) at `sparsity`."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    weights = {n: net.get_submodule(n).weight for n in names}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=next(iter(weights.values())).device)
    for k in range(1, rounds + 1):
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(masks[n])
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()
        with torch.no_grad():  # pruned weights score -1: below every live one, so they stay out
            scores = {n: (w.grad * w).masked_fill(~masks[n], -1.0) for n, w in weights.items()}
        masks = keep_masks(scores, 1 - (1 - sparsity) ** (k / rounds), "global")
    return masks


@dataclass(frozen=True)
class SynFlowHparams:
    sparsity: float = hp(0.9, "fraction of the prunable weights removed before training, in [0, 1)")
    rounds: int = hp(100, "scoring rounds n of the exponential schedule (paper: 100)")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not self.rounds >= 1:
            raise ValueError(f"rounds = {self.rounds!r}: must be >= 1")


@register_pruner("synflow")
class SynFlowPruner(MaskPruner):
    """SynFlow: data-free iterative |dR/dw * w| scores, exponential schedule; mask fixed in training."""

    Hparams = SynFlowHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained

    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        shape = self.ctx.input_shape
        self.set_masks(synflow_masks(model, list(self.layers), shape, self.hp.sparsity, self.hp.rounds))
        dense, _ = metrics.macs(model, shape, next(model.parameters()).device)
        self.extra_macs = metrics.TRAIN_PASSES * dense * self.hp.rounds
        return model
