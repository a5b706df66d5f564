"""`magnitude`: dense training, one-shot magnitude pruning to a target sparsity, fine-tuning.

The budget's steps are split at `prune_at`: dense SGD before, then the smallest-magnitude
weights (globally over all prunable weights, or per layer) are removed at once, and the rest
of the budget fine-tunes with the mask fixed. Both phases use the budget's optimizer settings
and schedule, so the run costs exactly the shared budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from baselines._mask import SCOPES, MaskPruner, check_choice, check_sparsity, keep_masks
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, PrunerInfo, PruningSchedule, register_pruner


@dataclass(frozen=True)
class MagnitudeHparams:
    sparsity: float = hp(0.9, "target fraction of zero weights among the prunable weights, in [0, 1)")
    prune_at: float = hp(0.5, "when to prune, as a fraction of the budget's steps (the rest fine-tunes)")
    scope: Literal["global", "layer"] = hp(
        "global", "global: one magnitude threshold over all prunable weights; layer: each layer to `sparsity`"
    )

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not 0 < self.prune_at < 1:
            raise ValueError(f"prune_at = {self.prune_at!r}: must be in (0, 1)")
        check_choice("scope", self.scope, SCOPES)


@register_pruner("magnitude")
class MagnitudePruner(MaskPruner):
    """One-shot magnitude pruning at `prune_at` of the budget, then fine-tuning with a fixed mask."""

    Hparams = MagnitudeHparams
    paper_recipe = SGD_MOMENTUM_WD
    info = PrunerInfo(scheduled=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        self.schedule = PruningSchedule.one_shot_at(self.hp.prune_at, self.ctx.total_steps)
        return super().prepare(model)

    def after_step(self, step: int) -> None:
        if self.schedule.is_update(step + 1):
            scores = {n: w.detach().abs() for n, w in self.weights().items()}
            self.set_masks(keep_masks(scores, self.hp.sparsity, self.hp.scope))
