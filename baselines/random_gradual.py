"""`random_gradual`: Gale et al.'s (2019) random pruning, grown on GMP's cubic schedule.

GMP's schedule and hyperparameters, but at each update the new zeros are chosen at random
instead of by magnitude, and by default the schedule of Gale et al.'s random rows: from the
first step (begin 0) to 40k of 128k steps (`end` 0.3125), every 2k (their 80% random run;
GMP's magnitude rows begin at 40k). `mode = "cumulative"` (Gale's `random_cumulative`): the new
zeros are added to the current mask, so a pruned weight stays pruned; `"independent"`
(`random_independent`): a fresh random mask at each update (a weight pruned earlier may
return, restarting from zero). The draws of the update after t steps come from a generator
seeded from (run seed, t): every rank draws the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from baselines._mask import check_choice, keep_masks
from baselines.gmp import GMPHparams, GMPPruner
from bench.config import hp
from bench.pruner import PrunerInfo, register_pruner

MODES = ("cumulative", "independent")


@dataclass(frozen=True)
class RandomGradualHparams(GMPHparams):
    start: float = hp(0.0, "first mask update, as a fraction of the budget's steps (Gale et al.'s random: 0)")
    end: float = hp(0.3125, "last mask update, a fraction of the steps (Gale et al.'s random: 40k of 128k)")
    mode: Literal["cumulative", "independent"] = hp(
        "cumulative",
        "cumulative: new random zeros join the mask; independent: a fresh random mask each update",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("mode", self.mode, MODES)


@register_pruner("random_gradual")
class RandomGradualPruner(GMPPruner):
    """Gale et al.'s random pruning: random masks on GMP's cubic schedule (cumulative by default)."""

    Hparams = RandomGradualHparams
    info = PrunerInfo(randomized=True, scheduled=True)

    @classmethod
    def info_for(cls, hparams: Any) -> PrunerInfo:
        return PrunerInfo(regrows=hparams.mode == "independent", randomized=True, scheduled=True)

    def after_step(self, step: int) -> None:
        t = step + 1
        if self.is_update(t):
            self.set_masks(self.masks_at(self.target_sparsity(t), t))

    def masks_at(self, sparsity: float, t: int = 0) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """Random masks at `sparsity`, drawn from the generator of step `t`."""
        gen = self.rng(t)
        scores = {n: torch.rand(w.shape, device=w.device, generator=gen) for n, w in self.weights().items()}
        if self.hp.mode == "cumulative":  # the pruned stay pruned: they score below every kept one
            for name, mask in self.masks.items():
                scores[name].masked_fill_(~mask, -1.0)
        return keep_masks(scores, sparsity, self.hp.scope)
