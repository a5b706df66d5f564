"""Learning-rate schedules: one table of functions, `name -> factor(budget, progress)`.

`progress` is the fraction of the budget's steps done, in [0, 1]; the factor multiplies the
budget's base lr. A new schedule is one new function in `SCHEDULES`; `Budget.lr_schedule` is
validated against its keys. No torch here: validating a sweep must stay light.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Schedule = Callable[[Any, float], float]  # (budget, progress) -> lr factor


def constant(budget: Any, progress: float) -> float:
    return 1.0


def step(budget: Any, progress: float) -> float:
    """x `lr_gamma` at each of `lr_milestones` (fractions of the budget)."""
    return budget.lr_gamma ** sum(progress >= m for m in budget.lr_milestones)


def cosine(budget: Any, progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * progress))


def cifar(budget: Any, progress: float) -> float:
    """The gRDA authors' CIFAR scripts: constant to 50%, linear to 1% at 90%, then held."""
    if progress < 0.5:
        return 1.0
    return 1.0 - 0.99 * min((progress - 0.5) / 0.4, 1.0)


SCHEDULES: dict[str, Schedule] = {"constant": constant, "step": step, "cosine": cosine, "cifar": cifar}


def lr_factor(budget: Any, progress: float) -> float:
    """The lr multiplier of `budget.lr_schedule` at `progress`."""
    return SCHEDULES[budget.lr_schedule](budget, progress)
