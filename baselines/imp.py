"""`imp`: iterative magnitude pruning with rewinding, the lottery ticket procedure (Frankle &
Carbin, ICLR 2019; Frankle, Dziugaite, Roy & Carbin, ICML 2020).

Rounds: train; prune p = `rate` of the remaining prunable weights by magnitude (globally, or
per layer); rewind every surviving parameter (and buffer) to its value at step k of the first
round with fresh optimizer state; retrain. After R rounds the sparsity is 1 - (1 - p)^R;
R = ceil(log(1 - s) / log(1 - p)) rounds reach the target s, the last one cut to exactly s.
The R + 1 training segments replay one round's lr schedule each (the first from step 0, the
others from k to the round's end).

Rewind point (`rewind`): "auto" (default) rewinds networks with convolutions to an early
iteration, k = `rewind_at` of a round (3%: Frankle et al. 2020 find that deeper networks at
standard learning rates only give matching subnetworks when rewound to an early point, e.g.
ResNet-20 on CIFAR-10 at about 2k of 63k iterations, ResNet-50 on ImageNet at about epoch 5 of
90; at k = 0 they do not), and networks without (LeNet-style MLPs) to initialization, k = 0,
the original lottery ticket (Frankle & Carbin 2019). "init" and "early" force one or the other.

Compute (`round_budget`): "full" (default, as in the papers): every round trains a full budget
T, so the run takes T + R (T - k) steps, `budget_multiplier` in the result (R + 1 budgets, less
the rewound part). "squeezed": the segments share the one budget (rounds of
L = T / (1 + R (1 - k/L)) steps, equal compute with the other pruners, but each round trains
only a fraction of a budget). Each segment trains at its mask's density.
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

REWINDS = ("auto", "init", "early")
ROUND_BUDGETS = ("full", "squeezed")


@dataclass(frozen=True)
class IMPHparams:
    sparsity: float = hp(0.9, "final sparsity of the prunable weights, in [0, 1)")
    rate: float = hp(0.2, "fraction p of the remaining weights pruned each round (papers: 0.2)")
    rewind: Literal["auto", "init", "early"] = hp(
        "auto", "auto: early (rewind_at) for networks with convolutions, init (k = 0) otherwise; "
        "init: the original lottery ticket; early: k = rewind_at of a round"
    )
    rewind_at: float = hp(0.03, "early rewind point k, a fraction of a round's steps (Frankle et al. 2020)")
    scope: Literal["global", "layer"] = hp(
        "global", "global: one magnitude threshold per round (deep nets); layer: every layer alike (LeNet)"
    )
    round_budget: Literal["full", "squeezed"] = hp(
        "full", "full: every round trains a full budget (the papers; R + 1 budgets in all); "
        "squeezed: all rounds share one budget"
    )

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not 0 < self.rate < 1:
            raise ValueError(f"rate = {self.rate!r}: must be in (0, 1)")
        check_choice("rewind", self.rewind, REWINDS)
        if not 0 <= self.rewind_at < 1:
            raise ValueError(f"rewind_at = {self.rewind_at!r}: must be in [0, 1)")
        check_choice("scope", self.scope, SCOPES)
        check_choice("round_budget", self.round_budget, ROUND_BUDGETS)

    @property
    def rounds(self) -> int:
        """R: the pruning rounds that reach `sparsity` at `rate` per round."""
        if self.sparsity == 0:
            return 0
        return math.ceil(math.log(1 - self.sparsity) / math.log(1 - self.rate) - 1e-9)


@register_pruner("imp")
class IMPPruner(MaskPruner):
    """IMP with rewinding: train, prune 20% of the rest by |w|, rewind to step k, retrain; R rounds
    (each a full budget by default)."""

    Hparams = IMPHparams
    paper_recipe = SGD_MOMENTUM_WD  # SGD with momentum and weight decay, as its paper trained
    same_data_order = False  # rewinds its weights and retrains: its final weights saw other batches
    k = 0  # the rewind step, set by `prepare` (before it, `train_steps` counts full rounds)

    def prepare(self, model: nn.Module) -> nn.Module:
        h, T, R = self.hp, self.ctx.total_steps, self.hp.rounds
        self.rewind_fraction = self.rewind_point(model)
        # L; squeezed: the last segment takes the rounding rest
        full = h.round_budget == "full"
        self.round_steps = T if full else max(1, int(T / (1 + R * (1 - self.rewind_fraction))))
        self.k = min(round(self.rewind_fraction * self.round_steps), self.round_steps - 1)
        # the steps (done) at which rounds 1..R prune and rewind
        self.prune_at = [self.round_steps + i * (self.round_steps - self.k) for i in range(R)]
        self.snapshot: dict[str, torch.Tensor] = {}
        model = super().prepare(model)
        if self.k == 0:
            self.take_snapshot()
        return model

    def rewind_point(self, model: nn.Module) -> float:
        """k as a fraction of a round: `rewind_at` for "early" (or "auto" on a network with
        convolutions), else 0."""
        rewind = self.hp.rewind
        if rewind == "auto":
            rewind = "early" if any(isinstance(m, nn.Conv2d) for m in model.modules()) else "init"
        return self.hp.rewind_at if rewind == "early" else 0.0

    def train_steps(self) -> int:
        if self.hp.round_budget == "squeezed":
            return self.ctx.total_steps
        L = self.ctx.total_steps
        return L + self.hp.rounds * (L - self.k)

    def lr_progress(self, step: int) -> float:
        """Every round replays one round's lr schedule."""
        return min(self.position(step) / self.round_steps, 1.0)

    def take_snapshot(self) -> None:
        self.snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def position(self, t: int) -> int:
        """Steps t done overall -> position within its round's lr schedule."""
        if t < self.round_steps or not self.prune_at:
            return t
        return self.k + (t - self.round_steps) % (self.round_steps - self.k)

    def round_sparsity(self, r: int) -> float:
        return min(1 - (1 - self.hp.rate) ** r, self.hp.sparsity) if r < self.hp.rounds else self.hp.sparsity

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
            self.model.load_state_dict(self.snapshot)  # rewind, in place
            self.set_masks(masks)
            self.model_changed = True  # the trainer builds a fresh optimizer (no state)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "snapshot": dict(self.snapshot)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        device = next(self.model.parameters()).device
        self.snapshot = {k: v.to(device) for k, v in state["snapshot"].items()}

    def state_tensors(self):  # type: ignore[override]
        yield from super().state_tensors()
        yield from self.snapshot.values()
