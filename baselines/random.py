"""`random`: a static random mask drawn at initialization, fixed throughout: the sanity floor.

Not Gale et al.'s random pruning (that is `random_gradual`, on GMP's schedule). Every prunable
layer loses exactly `sparsity` of its weights, chosen uniformly at random with the generator of
step 0 (seeded from the run's seed): the same seed gives the same mask, on every rank. Sparse
from the first step, so it trains at its density.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from baselines._mask import MaskPruner, check_sparsity, keep_masks
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, PrunerInfo, register_pruner


@dataclass(frozen=True)
class RandomHparams:
    sparsity: float = hp(0.9, "fraction of every prunable layer's weights removed at random, in [0, 1)")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)


@register_pruner("random")
class RandomPruner(MaskPruner):
    """Static random mask drawn at initialization (seeded by the run), fixed throughout training."""

    Hparams = RandomHparams
    paper_recipe = SGD_MOMENTUM_WD
    info = PrunerInfo(randomized=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        gen = self.rng(0, "init")
        scores = {n: torch.rand(w.shape, device=w.device, generator=gen) for n, w in self.weights().items()}
        self.set_masks(keep_masks(scores, self.hp.sparsity, "layer"))
        return model
