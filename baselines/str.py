"""`str`: soft threshold reparameterization (Kusupati et al., ICML 2020).

Every prunable weight becomes w = sign(v) * relu(|v| - sigmoid(s)), with v the trained tensor
and s one learnable scalar per layer, initialised to `s_init`. It is a
`torch.nn.utils.parametrize` parametrization, so `module.weight` is the effective (sparse)
weight everywhere: forward, evaluation, sparsity and FLOP counts. The original tensor lives at
`module.parametrizations.weight.original` and s at `module.parametrizations.weight[0].s`.

Sparsity is not set directly: the threshold sigmoid(s) rises as weight decay pulls s towards 0
against the task loss. The paper decays every parameter, s included, with one weight decay
(ResNet-50: 3.05e-5, s_init = -3200). Here v and the other parameters get the shared budget's
`weight_decay` (like every SGD pruner) and s gets its own `s_weight_decay`, the method's
sparsity knob; the paper's setting is `s_weight_decay` = the budget's `weight_decay`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, Pruner, SparsityKnob, register_pruner


class SoftThreshold(nn.Module):
    """The STR parametrization of one weight tensor: sign(v) * relu(|v| - sigmoid(s))."""

    def __init__(self, s_init: float, device: torch.device | None = None) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(float(s_init), device=device))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # (v - clamp(v, -t, t) is the same to the bit, but clamp with tensor bounds is ~7x slower on a CPU)
        return torch.sign(v) * F.relu(v.abs() - torch.sigmoid(self.s))


@dataclass(frozen=True)
class STRHparams:
    s_init: float = hp(-5.0, "initial threshold parameter s of every layer (threshold sigmoid(s))")
    s_weight_decay: float = hp(
        0.04, "weight decay on s, the sparsity knob (larger: sparser; 0.04: ~90% on digits-mlp)"
    )

    def __post_init__(self) -> None:
        if not self.s_weight_decay >= 0:
            raise ValueError(f"s_weight_decay = {self.s_weight_decay!r}: must be >= 0")


@register_pruner("str")
class STRPruner(Pruner):
    """Soft threshold reparameterization: learnable per-layer thresholds, trained with SGD."""

    Hparams = STRHparams
    sparsity_knob: ClassVar[SparsityKnob] = SparsityKnob("s_weight_decay", 1e-4, 1.0, "log")
    # the paper's SGD with momentum and weight decay; the thresholds' own decay is `s_weight_decay`
    paper_recipe = SGD_MOMENTUM_WD

    def prepare(self, model: nn.Module) -> nn.Module:
        for _, m in self.prunable(model):
            parametrize.register_parametrization(m, "weight", SoftThreshold(self.hp.s_init, m.weight.device))
        self.model = model
        return model

    def thresholds(self, model: nn.Module) -> list[nn.Parameter]:
        return [m.parametrizations.weight[0].s for _, m in self.prunable(model)]

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        s_ids = {id(s) for s in self.thresholds(model)}
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in s_ids]},
            {"params": self.thresholds(model), "weight_decay": self.hp.s_weight_decay},
        ]
        return self.optimizer_recipe().build(groups, self.budget)

    def finalize(self, model: nn.Module) -> nn.Module:
        """A plain copy whose weights are the effective ones (no parametrizations)."""
        plain = copy.deepcopy(model)
        for _, m in self.prunable(plain):
            # A deep copy shares its dynamically created Parametrized* class with the original, and
            # removing a parametrization deletes the property from that class: give the copy its own.
            cls = type(m)
            m.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return plain
