"""`gmp`: gradual magnitude pruning with the cubic schedule of Zhu & Gupta (2017).

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3,   t in {t0, t0 + dt, ..., t0 + n*dt}

where t counts optimizer steps done. Every dt steps the masks are recomputed from the current
weight magnitudes at sparsity s_t. Pruned weights are exactly zero and have the lowest
magnitude, so they stay pruned as s_t grows. `start`, `end` and `every` are fractions of the
budget's steps; the defaults are Gale et al.'s ResNet-50 schedule (start 40k, end 76k, every 2k
of 128k steps) scaled to the budget. After the last update the mask is fixed (fine-tuning).
When to prune is `bench.pruner.PruningSchedule` (its hyperparameters: `ScheduleHparams`); how to
score is `masks_at`, the masks of a given sparsity, which the subclasses on the same schedule
(`random_gradual`, `nm`) replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from baselines._mask import SCOPES, MaskPruner, check_choice, check_sparsity, keep_masks
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, PrunerInfo, PruningSchedule, ScheduleHparams, register_pruner


@dataclass(frozen=True)
class GMPHparams(ScheduleHparams):  # start, end, every: the schedule's, declared there
    sparsity: float = hp(0.9, "final sparsity s_f of the prunable weights, in [0, 1)")
    initial_sparsity: float = hp(0.0, "sparsity s_i at the first update (Zhu & Gupta: 0)")
    scope: Literal["global", "layer"] = hp(
        "layer", "layer: every layer pruned to s_t (Zhu & Gupta); global: one threshold over all"
    )

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not 0 <= self.initial_sparsity <= self.sparsity:
            raise ValueError(f"initial_sparsity = {self.initial_sparsity!r}: must be in [0, sparsity]")
        super().__post_init__()
        check_choice("scope", self.scope, SCOPES)


@register_pruner("gmp")
class GMPPruner(MaskPruner):
    """Gradual magnitude pruning, cubic schedule (Zhu & Gupta 2017), masks recomputed every dt."""

    Hparams = GMPHparams
    paper_recipe = SGD_MOMENTUM_WD
    info = PrunerInfo(scheduled=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        self.schedule = self.make_schedule()
        return super().prepare(model)

    def make_schedule(self) -> PruningSchedule:
        return self.hp.pruning_schedule(self.ctx.total_steps)

    def target_sparsity(self, t: int) -> float:
        """s_t after t steps (s_i before t0, s_f after the last update)."""
        return self.schedule.sparsity(t, self.hp.sparsity, self.hp.initial_sparsity)

    def is_update(self, t: int) -> bool:
        return self.schedule.is_update(t)

    def masks_at(self, sparsity: float) -> dict[str, torch.Tensor]:
        """The masks of an update to `sparsity`: the largest |w| kept."""
        scores = {n: w.detach().abs() for n, w in self.weights().items()}
        return keep_masks(scores, sparsity, self.hp.scope)

    def after_step(self, step: int) -> None:
        t = step + 1
        if self.is_update(t):
            self.set_masks(self.masks_at(self.target_sparsity(t)))
