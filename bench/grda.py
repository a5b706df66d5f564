"""gRDA: generalized regularized dual averaging (Chao et al., NeurIPS 2020), the method under test.

Update, per parameter tensor, with accumulator `a` (starts as a copy of the initial weights):

    n += 1
    a <- a - lr * grad
    L += c * lr^(mu + 1/2) * (n^mu - (n-1)^mu)        (accumulation form: works under any schedule)
    w <- sign(a) * max(|a| - L, 0)                    (soft thresholding = F.softshrink(a, L))

With a constant lr this is the closed form L_n = c * sqrt(lr) * (n * lr)^mu.

Speed: the only state tensor per parameter is `a`. The step counter and threshold are Python
numbers kept in the param group (so they round-trip through `state_dict()` and need no
host-device sync). Two implementations of the shrink give the same weights to the bit:
- per tensor, `a.add_(grad, alpha=-lr)` then `softshrink(a, L, out=w)`, both on one tensor before
  the next, so the shrink reads `a` (and writes `w`) while they are in cache: no temporary, two
  kernels per parameter tensor; the default on a CPU, where a step is memory-bound (SGD with
  momentum makes two read-modify-write passes over its buffer and the weights); faster than
  accumulating every tensor first and shrinking afterwards (PERFORMANCE.md);
- `foreach`, the accumulation as one `_foreach_add_`, softshrink as `w = a + clamp(-a, -L, L)`
  (= a - clamp(a, -L, L)) in in-place multi-tensor ops on the weights (`_foreach_copy_`, `_neg_`,
  `_clamp_min_`, `_clamp_max_`, `_add_`): a fixed number of kernel launches whatever the number
  of parameter tensors, and no temporary; the default on CUDA, where a ResNet's 160 small tensors
  make the per-tensor loop launch-bound. (For a > L both
  give a - L, for a < -L a + L, else 0, in the same float arithmetic.)

`ReferenceGRDA` is the same rule written the way the authors' code is (a per-parameter loop):
the reference `GRDA` must match weight for weight (tests/test_grda.py) and `bench perf` times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from bench.config import hp
from bench.optimizers import EagerOptimizer
from bench.pruner import (
    OptimizerRecipe,
    Pruner,
    PrunerInfo,
    SparsityKnob,
    prunable_parameters,
    register_pruner,
)


class GRDA(EagerOptimizer):
    """gRDA optimizer. Per-group `c` and `mu`: a group with `c=0` is trained by plain dual
    averaging (= SGD without momentum) and never thresholded (e.g. BN and biases)."""

    def __init__(self, params: Iterable[Any], lr: float = 0.01, c: float = 0.005, mu: float = 0.55,
                 foreach: bool | None = None) -> None:
        """`foreach`: multi-tensor shrink (None: on CUDA parameters, not on CPU ones)."""
        _validate(lr, c, mu)
        # an option of the groups, as torch's own optimizers keep it: it survives deepcopy and pickling
        super().__init__(params, dict(lr=lr, c=c, mu=mu, foreach=foreach))
        for group in self.param_groups:
            _validate(group["lr"], group["c"], group["mu"])
            group.setdefault("step", 0)  # n, shared by the group's parameters
            group.setdefault("threshold", 0.0)  # L

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, c, mu = group["lr"], group["c"], group["mu"]
            n = group["step"] = group["step"] + 1
            group["threshold"] += c * lr ** (mu + 0.5) * (n**mu - (n - 1) ** mu)
            accs = []
            for p in params:
                state = self.state[p]
                if "accumulator" not in state:
                    state["accumulator"] = p.detach().clone(memory_format=torch.preserve_format)
                accs.append(state["accumulator"])
            grads = [p.grad for p in params]
            if params[0].is_sparse or any(g.is_sparse for g in grads):
                raise RuntimeError("GRDA does not support sparse gradients")
            threshold = group["threshold"]
            foreach = group["foreach"] if group.get("foreach") is not None else params[0].is_cuda
            if foreach:
                torch._foreach_add_(accs, grads, alpha=-lr)
                _foreach_softshrink(accs, threshold, params)
            else:  # both passes over one tensor before the next: the second reads `a` from cache
                for p, a, g in zip(params, accs, grads, strict=True):
                    a.add_(g, alpha=-lr)
                    torch._C._nn.softshrink(a, threshold, out=p)
        return loss


def _foreach_softshrink(accs: list[torch.Tensor], threshold: float, out: list[torch.Tensor]) -> None:
    """out <- softshrink(accs, threshold) = accs - clamp(accs, -threshold, threshold), in a fixed
    number of multi-tensor kernels, in place in `out`: no temporary the size of the parameters."""
    torch._foreach_copy_(out, accs)
    if threshold == 0:
        return
    # out = -clamp(a, -L, L) computed as clamp(-a, -L, L) (exact: negation and clamp commute), then
    # a + out: the float a - clamp(a) would give, the sign of zero included (never the -0 of
    # -(clamp(a) - a))
    torch._foreach_neg_(out)
    torch._foreach_clamp_min_(out, -threshold)
    torch._foreach_clamp_max_(out, threshold)
    torch._foreach_add_(out, accs)


def _validate(lr: float, c: float, mu: float) -> None:
    if not lr > 0:
        raise ValueError(f"GRDA: lr must be > 0, got {lr}")
    if not c >= 0:
        raise ValueError(f"GRDA: c must be >= 0, got {c}")
    if not 0 < mu < 1:
        raise ValueError(f"GRDA: mu must be in (0, 1), got {mu}")


class ReferenceGRDA(torch.optim.Optimizer):
    """gRDA written the way the authors' PyTorch code is (the module docstring's rule): a Python loop
    over parameters, per-parameter step counter on the host, threshold as a tensor on the device
    (moved there with `.to(p.device)` every step, a host-to-device copy that syncs on CUDA), and
    `torch.sign(a) * (|a| - L).clamp(min=0)` allocating a new weight tensor. Slow on purpose: the
    reference `GRDA` is checked against and `bench perf` times it against; never for training."""

    def __init__(self, params: Iterable[Any], lr: float, c: float, mu: float) -> None:
        super().__init__(params, dict(lr=lr, c=c, mu=mu))

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, c, mu = group["lr"], group["c"], group["mu"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["iter_num"] = torch.zeros(1)
                    state["accumulator"] = p.detach().clone()
                    state["l1_accumulation"] = torch.zeros(1, device=p.device)
                n, a = state["iter_num"], state["accumulator"]
                n.add_(1)
                a.add_(p.grad, alpha=-lr)
                lr_t = torch.tensor(lr)
                l1_diff = c * torch.pow(lr_t, mu + 0.5) * (torch.pow(n, mu) - torch.pow(n - 1, mu))
                state["l1_accumulation"] += l1_diff.to(p.device)
                new_a_l1 = torch.abs(a) - state["l1_accumulation"]
                p.data = torch.sign(a) * new_a_l1.clamp(min=0)


@dataclass(frozen=True)
class GRDAHparams:
    c: float = hp(0.005, "l1 strength; sparsity grows with c (paper: 0 < c <= 0.005 at ImageNet scale)")
    mu: float = hp(0.55, "threshold growth exponent, 0.5 < mu < 1 in theory; sparsity grows with mu")
    prune_all: bool = hp(
        True,
        "threshold every parameter, BN and biases included (the authors' setting), except the first "
        "and last layers' when budget.prune_first_last is false; false: only the prunable conv/linear "
        "weights, the rest get c=0",
    )

    def __post_init__(self) -> None:
        if not self.c >= 0:
            raise ValueError(f"c = {self.c!r}: must be >= 0")
        if not 0 < self.mu < 1:
            raise ValueError(f"mu = {self.mu!r}: must be in (0, 1)")


@register_pruner("grda")
class GRDAPruner(Pruner):
    """gRDA: sparse training with an l1 proximal optimizer, no retraining (lr from the budget)."""

    Hparams = GRDAHparams
    sparsity_knob: ClassVar[SparsityKnob] = SparsityKnob("c", 1e-4, 1.0, "log")
    paper_recipe = OptimizerRecipe()  # as published: plain SGD steps of the budget's lr, no momentum or decay
    info = PrunerInfo(own_optimizer=True)

    @property
    def optimizer_family(self) -> str:
        return "sgd"  # dual averaging without momentum or decay: gRDA with c = 0 is plain SGD

    def thresholded(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters gRDA thresholds: with `prune_all` every one but those of the layers the
        layer-coverage policy keeps dense; else the prunable conv/linear weights."""
        if not self.hp.prune_all:
            return [m.weight for _, m in self.prunable(model)]
        every = prunable_parameters(model)
        kept = {id(m) for _, m in every} - {id(m) for _, m in self.prunable(model)}
        dense = {id(p) for _, m in every if id(m) in kept for p in m.parameters()}
        return [p for p in model.parameters() if id(p) not in dense]

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        hp = self.hp
        ids = {id(p) for p in self.thresholded(model)}
        params = list(model.parameters())
        groups = [{"params": [p for p in params if id(p) in ids]},
                  {"params": [p for p in params if id(p) not in ids], "c": 0.0}]
        groups = [g for g in groups if g["params"]]
        # gRDA has no momentum or weight decay by design; the recipe gives only its lr
        recipe = self.optimizer_recipe()
        return GRDA(groups, lr=self.budget.lr if recipe.lr is None else recipe.lr, c=hp.c, mu=hp.mu)
