"""Shared machinery of the unstructured mask pruners (`magnitude`, `gmp`, `random`, `rigl`, ...).

A pruner of this kind keeps one boolean mask per prunable weight. Installing masks zeroes the
masked weights and hands them to the trainer (`masked_weights`), which zeroes every per-parameter
optimizer state tensor of their shape (SGD's momentum, Adam's exp_avg and exp_avg_sq, ...); from
then on their gradients are masked after every backward pass. With a zero weight, a zero
gradient and zero state, the update of SGD (momentum and coupled weight decay included) and of
Adam is exactly zero, so masked weights stay exactly zero without a second pass over the weights
after each step. The gradient masking is one multi-tensor multiply by float copies of the masks
(bool masks take torch's per-tensor path).

Masks keep the highest-scoring weights (|w| for magnitude pruning, uniform noise for random
pruning), per layer or globally over all prunable weights, removing round(sparsity * n) like
`torch.nn.utils.prune`'s unstructured methods. A masked layer computes at its mask's density
(`compute_densities`, for the training-compute count): sparse kernels skip the masked weights.
`erk_densities` gives the Erdos-Renyi(-Kernel) layer densities of the sparse-from-start methods.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from bench.pruner import Pruner

Scope = Literal["global", "layer"]
SCOPES = ("global", "layer")


def check_sparsity(name: str, value: float) -> None:
    """The shared validation of a target sparsity hyperparameter."""
    if not 0 <= value < 1:
        raise ValueError(f"{name} = {value!r}: must be in [0, 1)")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} = {value!r}: valid choices: {', '.join(choices)}")


def _keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    flat = scores.flatten()
    n_keep = flat.numel() - round(sparsity * flat.numel())
    keep = torch.zeros_like(flat, dtype=torch.bool)
    # top-k of the kept side: at high sparsity several times faster than of the pruned side
    keep[flat.topk(n_keep, sorted=False).indices] = True
    return keep.view_as(scores)


@torch.no_grad()
def keep_masks(scores: dict[str, torch.Tensor], sparsity: float, scope: Scope) -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) removing the lowest-scoring `sparsity` of the entries of every
    layer (`scope="layer"`) or of all layers together (`scope="global"`)."""
    if scope == "layer":
        return {n: _keep_top(s, sparsity) for n, s in scores.items()}
    keep = _keep_top(torch.cat([s.flatten() for s in scores.values()]), sparsity)
    parts = keep.split([s.numel() for s in scores.values()])
    return {n: m.view_as(s) for (n, s), m in zip(scores.items(), parts, strict=True)}


def erk_densities(shapes: dict[str, torch.Size], density: float, kernel: bool = True) -> dict[str, float]:
    """Per-layer densities averaging `density` over all weights: layer l gets eps * (sum of its
    dims) / (product of its dims) (Erdos-Renyi; with `kernel`, the kernel dims count too: ERK,
    Evci et al. 2020), eps chosen to hit `density`; layers that would exceed 1 are dense and
    the rest rescaled (RigL's `get_sparsities`)."""
    total = sum(math.prod(s) for s in shapes.values())
    raw = {n: sum(s if kernel else s[:2]) / math.prod(s if kernel else s[:2]) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * total - sum(math.prod(shapes[n]) for n in dense)
        eps = budget / sum(raw[n] * math.prod(shapes[n]) for n in shapes if n not in dense)
        over = {n for n in shapes if n not in dense and eps * raw[n] > 1}
        if not over:
            return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}
        dense |= over


def random_masks(
    densities: dict[str, float], shapes: dict[str, torch.Size], device: Any, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Uniformly random masks keeping round(density * n) entries of each layer, drawn from `gen`."""
    scores = {n: torch.rand(shapes[n], device=device, generator=gen) for n in shapes}
    return {n: _keep_top(s, 1 - densities[n]) for n, s in scores.items()}


class MaskPruner(Pruner):
    """Base of the mask pruners: SGD with the budget's settings, plus fixed-shape binary masks."""

    def prepare(self, model: nn.Module) -> nn.Module:
        self.model = model
        self.layers: dict[str, nn.Module] = dict(self.prunable(model))
        self.masks: dict[str, torch.Tensor] = {}
        self.float_masks: list[torch.Tensor] = []  # the masks as the weights' dtype, in `masks` order
        self.densities: dict[str, float] = {}
        self.masks_changed = False  # masks installed since the trainer last asked (`masked_weights`)
        return model

    def weights(self) -> dict[str, torch.Tensor]:
        return {n: m.weight for n, m in self.layers.items()}

    @torch.no_grad()
    def set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Install masks: zero the masked weights (the trainer zeroes their optimizer state)."""
        self._use_masks(masks)
        torch._foreach_mul_([self.layers[n].weight for n in masks], self.float_masks)
        self.masks_changed = True

    def masked_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every masked weight with its float mask, once after `set_masks` (it replaces all masks)."""
        if not self.masks_changed:
            return []
        self.masks_changed = False
        return [(self.layers[n].weight, m) for n, m in zip(self.masks, self.float_masks, strict=True)]

    def _use_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """The masks and what follows from them (float copies, densities), computed once."""
        self.masks = masks
        dtypes = {n: self.layers[n].weight.dtype for n in masks}
        self.float_masks = [m.to(dtypes[n]) for n, m in masks.items()]
        counts = torch.stack([m.sum() for m in masks.values()]).tolist() if masks else []  # one sync
        self.densities = {n: c / m.numel() for (n, m), c in zip(masks.items(), counts, strict=True)}

    @torch.no_grad()
    def after_backward(self, step: int) -> None:
        if self.masks:
            torch._foreach_mul_([self.layers[n].weight.grad for n in self.masks], self.float_masks)

    def compute_densities(self) -> dict[str, float]:
        return self.densities

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks), "extra_macs": self.extra_macs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._use_masks({n: m.to(self.layers[n].weight.device) for n, m in state["masks"].items()})
        self.masks_changed = False  # the checkpointed optimizer state is masked already
        self.extra_macs = state.get("extra_macs", 0.0)

    def state_tensors(self) -> Iterator[torch.Tensor]:
        yield from self.masks.values()
        yield from self.float_masks
