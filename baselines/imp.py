"""`imp`: iterative magnitude pruning with rewinding, the lottery ticket procedure (Frankle &
Carbin, ICLR 2019; Frankle, Dziugaite, Roy & Carbin, ICML 2020).

Rounds: train; prune p = `rate` of the remaining prunable weights by magnitude (globally, or
per layer); rewind every surviving parameter (and buffer) to its value at step k of the first
round (k = 0: the original lottery ticket) with fresh optimizer state; retrain. After R rounds
the sparsity is 1 - (1 - p)^R; R = ceil(log(1 - s) / log(1 - p)) rounds reach the target s,
the last one cut to exactly s. The R + 1 training segments replay one round's lr schedule each
(the first from step 0, the others from k to the round's end).

Compute: by default (`full_budget = false`) the segments share the one budget (rounds of
L = T / (1 + R (1 - k/L)) steps, equal compute with the other pruners); with `full_budget`,
every round is a full budget T as in the papers, and the run takes T + R (T - k) steps
(`budget_multiplier` in the result). Each segment trains at its mask's density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from baselines._mask import SCOPES, MaskPruner, check_choice, check_sparsity, keep_masks
from bench.config import hp
from bench.pruner import SGD_MOMENTUM_WD, register_pruner
from bench.schedules import lr_factor


@dataclass(frozen=True)
class IMPHparams:
    sparsity: float = hp(0.9, "final sparsity of the prunable weights, in [0, 1)")
    rate: float = hp(0.2, "fraction p of the remaining weights pruned each round (papers: 0.2)")
    rewind: float = hp(0.0, "rewind point k, as a fraction of a round's steps (0: the lottery ticket)")
    scope: Literal["global", "layer"] = hp(
        "global", "global: one magnitude threshold per round (deep nets); layer: every layer alike (LeNet)"
    )
    full_budget: bool = hp(
        False, "every round a full budget (the papers: R + 1 budgets) instead of sharing one"
    )

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not 0 < self.rate < 1:
            raise ValueError(f"rate = {self.rate!r}: must be in (0, 1)")
        if not 0 <= self.rewind < 1:
            raise ValueError(f"rewind = {self.rewind!r}: must be in [0, 1)")
        check_choice("scope", self.scope, SCOPES)

    @property
    def rounds(self) -> int:
        """R: the pruning rounds that reach `sparsity` at `rate` per round."""
        if self.sparsity == 0:
            return 0
        return math.ceil(math.log(1 - self.sparsity) / math.log(1 - self.rate) - 1e-9)


@register_pruner("imp")
class IMPPruner(MaskPruner):
    """IMP with rewinding: train, prune 20% of the rest by |w|, rewind to step k, retrain; R rounds."""

    Hparams = IMPHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained
    same_data_order = False  # rewinds its weights and retrains: its final weights saw other batches

    def prepare(self, model: nn.Module) -> nn.Module:
        h, T, R = self.hp, self.ctx.total_steps, self.hp.rounds
        # L; shared budget: the last segment takes the rounding rest
        self.round_steps = T if h.full_budget else max(1, int(T / (1 + R * (1 - h.rewind))))
        self.k = min(round(h.rewind * self.round_steps), self.round_steps - 1)
        # the steps (done) at which rounds 1..R prune and rewind
        self.prune_at = [self.round_steps + i * (self.round_steps - self.k) for i in range(R)]
        self.snapshot: dict[str, torch.Tensor] = {}
        model = super().prepare(model)
        if self.k == 0:
            self.take_snapshot()
        return model

    def train_steps(self) -> int:
        if not self.hp.full_budget:
            return self.ctx.total_steps
        L = self.ctx.total_steps
        return L + self.hp.rounds * (L - min(round(self.hp.rewind * L), L - 1))

    def take_snapshot(self) -> None:
        self.snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def position(self, t: int) -> int:
        """Steps t done overall -> position within its round's lr schedule."""
        if t < self.round_steps or not self.prune_at:
            return t
        return self.k + (t - self.round_steps) % (self.round_steps - self.k)

    def round_sparsity(self, r: int) -> float:
        return min(1 - (1 - self.hp.rate) ** r, self.hp.sparsity) if r < self.hp.rounds else self.hp.sparsity

    def after_backward(self, step: int) -> None:
        factor = lr_factor(self.budget, min(self.position(step) / self.round_steps, 1.0))
        for group in self.optimizer.param_groups:  # every round replays one round's schedule
            group["lr"] = group["initial_lr"] * factor  # the recipe's lr, as the trainer's set_lr keeps it
        super().after_backward(step)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        t = step + 1
        if t == self.k and not self.snapshot:
            self.take_snapshot()
        if t in self.prune_at:
            r = self.prune_at.index(t) + 1
            scores = {n: w.detach().abs() for n, w in self.weights().items()}
            for n, m in self.masks.items():  # the pruned stay pruned
                scores[n].masked_fill_(~m, -1.0)
            masks = keep_masks(scores, self.round_sparsity(r), self.hp.scope)
            self.model.load_state_dict(self.snapshot)  # rewind (in place: the optimizer keeps its tensors)
            self.optimizer.state.clear()
            self.set_masks(masks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "snapshot": dict(self.snapshot)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = next(self.model.parameters()).device
        self.snapshot = {k: v.to(device) for k, v in state["snapshot"].items()}

    def state_tensors(self):  # type: ignore[override]
        yield from self.masks.values()
        yield from self.snapshot.values()
