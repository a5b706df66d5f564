"""`dense`: no pruning, the reference row; one row per optimizer family a board compares.

`optimizer` picks the recipe: "recipe" (default) the track's (the budget's settings on the shared
track, SGD with momentum and weight decay on the paper track); "sgd" plain SGD at the budget's
lr (no momentum, no weight decay: what gRDA with c = 0 is); "sgd_momentum" the shared recipe if
it has momentum, else the pruning papers' (momentum 0.9, weight decay 5e-4); "adam" the recipe
of the Adam-trained methods (VD: Adam, lr 1e-3, no weight decay). Each pruned run is compared
with the dense run of its `optimizer_family`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from baselines._mask import check_choice
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, OptimizerRecipe, Pruner, register_pruner

OPTIMIZERS = ("recipe", "sgd", "sgd_momentum", "adam")
ADAM = OptimizerRecipe("adam", lr=1e-3)  # VD's (the authors' code)


@dataclass(frozen=True)
class DenseHparams:
    optimizer: Literal["recipe", "sgd", "sgd_momentum", "adam"] = hp(
        "recipe", "recipe: the track's optimizer; sgd: no momentum or decay (gRDA's family); "
        "sgd_momentum: momentum and weight decay; adam: VD's Adam"
    )

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)


@register_pruner("dense")
class Dense(Pruner):
    """No pruning: the dense reference, trained with the track's or a named optimizer."""

    Hparams = DenseHparams
    paper_recipe = SGD_MOMENTUM_WD  # the dense baseline of the pruning papers

    def optimizer_recipe(self) -> OptimizerRecipe:
        choice = self.hp.optimizer
        if choice == "sgd":
            return OptimizerRecipe("sgd")
        if choice == "sgd_momentum":
            shared = OptimizerRecipe.shared(self.budget)
            return shared if shared.momentum > 0 else SGD_MOMENTUM_WD
        if choice == "adam":
            return ADAM
        return super().optimizer_recipe()
