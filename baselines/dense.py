"""`dense`: plain SGD with the budget's momentum and weight decay, the reference row."""

from __future__ import annotations

from bench.pruner import SGD_MOMENTUM_WD, Pruner, register_pruner


@register_pruner("dense")
class Dense(Pruner):
    """Plain SGD with the budget's momentum and weight decay: the reference row."""

    paper_recipe = SGD_MOMENTUM_WD  # the dense baseline of the pruning papers
