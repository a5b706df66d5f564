"""`nm`: N:M structured sparsity by magnitude (Mishra et al. 2021, NVIDIA ASP; Zhou et al. 2021).

In every group of M consecutive weights along a layer's input (reduction) dimension (for a conv,
the input channels at each kernel position), at most N are non-zero: the N of largest |w|
(2:4: half of every pruned layer). Layers whose input size M does not divide are left dense, as
ASP does; an M that divides no prunable layer is refused (`m` named) before training starts.
`mode = "oneshot"` (the ASP recipe): dense training up to `prune_at`, one 2:4 cut, fine-tuning
with the mask fixed. `mode = "gradual"`: GMP's cubic schedule (and its start, end,
every) taken to the groups: at sparsity s_t each group keeps max(N, round(M (1 - s_t))) weights,
reaching N:M at the end. `finalize` verifies the pattern on the evaluated weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from baselines._mask import check_choice
from baselines.gmp import GMPPruner
from bench.config import hp
from bench.errors import ConfigError
from bench.pruner import PruningSchedule, ScheduleHparams, register_pruner

MODES = ("oneshot", "gradual")


def grouped(w: torch.Tensor, m: int) -> torch.Tensor:
    """A view-compatible copy of `w` with the reduction dimension last, split into groups of m."""
    if w.dim() == 4:  # conv (out, in, kh, kw) -> (out, kh, kw, in)
        w = w.permute(0, 2, 3, 1)
    return w.reshape(-1, m)


def ungrouped(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 4:
        out, cin, kh, kw = shape
        return g.reshape(out, kh, kw, cin).permute(0, 3, 1, 2)
    return g.reshape(shape)


def nm_mask(w: torch.Tensor, keep: int, m: int) -> torch.Tensor:
    """Keep the `keep` largest |w| of every group of m along the reduction dimension."""
    g = grouped(w.detach().abs(), m)
    mask = torch.zeros_like(g, dtype=torch.bool)
    mask.scatter_(1, g.topk(keep, dim=1).indices, True)
    return ungrouped(mask, w.shape).contiguous()


def nm_pattern_holds(w: torch.Tensor, n: int, m: int) -> bool:
    """Every group of m consecutive input weights of `w` has at most n non-zeros."""
    return bool((grouped(w, m).count_nonzero(dim=1) <= n).all())


def groupable(w: torch.Tensor, m: int) -> bool:
    return w.dim() in (2, 4) and w.shape[1] % m == 0


@dataclass(frozen=True)
class NMHparams(ScheduleHparams):  # start, end, every: GMP's schedule, for the gradual mode
    n: int = hp(2, "non-zeros kept per group (N of N:M)")
    m: int = hp(4, "group size along the input dimension (M of N:M)")
    mode: Literal["oneshot", "gradual"] = hp(
        "oneshot", "oneshot: ASP (dense, one cut, fine-tune); gradual: GMP's schedule"
    )
    prune_at: float = hp(0.5, "oneshot: when to cut, as a fraction of the budget's steps")

    def __post_init__(self) -> None:
        if not 1 <= self.n < self.m:
            raise ValueError(f"n = {self.n!r}: must be in [1, m)")
        check_choice("mode", self.mode, MODES)
        if not 0 < self.prune_at < 1:
            raise ValueError(f"prune_at = {self.prune_at!r}: must be in (0, 1)")
        super().__post_init__()

    # GMP's schedule reads these
    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m

    @property
    def initial_sparsity(self) -> float:
        return 0.0


@register_pruner("nm")
class NMPruner(GMPPruner):
    """N:M sparsity (2:4 default) by magnitude: one-shot with fine-tuning (ASP) or gradual (GMP)."""

    Hparams = NMHparams

    def prepare(self, model: nn.Module) -> nn.Module:
        model = super().prepare(model)
        inputs = {n: m.weight.shape[1] for n, m in self.layers.items()}
        self.layers = {n: m for n, m in self.layers.items() if groupable(m.weight, self.hp.m)}
        if not self.layers:
            sizes = ", ".join(f"{n} ({k})" for n, k in inputs.items()) or "none"
            raise ConfigError(f"pruners.nm: m = {self.hp.m}: divides the input size of no prunable "
                              f"layer, so nothing would be pruned; the layers' input sizes: {sizes}")
        return model

    def make_schedule(self) -> PruningSchedule:
        if self.hp.mode == "oneshot":
            return PruningSchedule.one_shot_at(self.hp.prune_at, self.ctx.total_steps)
        return super().make_schedule()

    def masks_at(self, sparsity: float) -> dict[str, torch.Tensor]:
        h = self.hp
        keep = max(h.n, round(h.m * (1 - sparsity)))
        return {n: nm_mask(w, keep, h.m) for n, w in self.weights().items()}

    def finalize(self, model: nn.Module) -> nn.Module:
        h = self.hp
        if self.masks and all(d <= h.n / h.m + 1e-9 for d in self.densities.values()):  # final cut made
            bad = [n for n, w in self.weights().items() if not nm_pattern_holds(w, h.n, h.m)]
            if bad:
                raise RuntimeError(f"nm: the {h.n}:{h.m} pattern is broken in {', '.join(bad)}")
        return model
