"""`random_gradual`: Gale et al.'s (2019) random pruning, grown on GMP's cubic schedule.

Same begin, end and frequency as `gmp` (its schedule and hyperparameters), but at each update
the new zeros are chosen at random instead of by magnitude. `mode = "cumulative"`
(Gale's `random_cumulative`): the new zeros are added to the current mask, so a pruned weight
stays pruned; `"independent"` (`random_independent`): a fresh random mask at each update (a
weight pruned earlier may return, restarting from zero). Random numbers come from the global
RNG, which the run's seed and checkpoints determine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from baselines._mask import check_choice, keep_masks
from baselines.gmp import GMPHparams, GMPPruner
from bench.config import hp
from bench.pruner import register_pruner

MODES = ("cumulative", "independent")


@dataclass(frozen=True)
class RandomGradualHparams(GMPHparams):
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

    @property
    def regrows(self) -> bool:  # type: ignore[override]
        return self.hp.mode == "independent"

    def masks_at(self, sparsity: float) -> dict[str, torch.Tensor]:
        scores = {n: torch.rand_like(w) for n, w in self.weights().items()}
        if self.hp.mode == "cumulative":  # the pruned stay pruned: they score below every kept one
            for name, mask in self.masks.items():
                scores[name].masked_fill_(~mask, -1.0)
        return keep_masks(scores, sparsity, self.hp.scope)
