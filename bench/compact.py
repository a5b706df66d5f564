"""Physically remove all-zero channels, turning a structured sparsity pattern into a smaller dense
model (real speed-ups instead of theoretical ones).

A channel can only go if removing it leaves the output unchanged, i.e. it is zero after every
layer that produces it: torch-pruning's dependency graph couples the layers that must lose the
same channel (a conv, its BN, every branch of a residual sum, the next layers' inputs), and a
channel of such a group is removed only if every producer in the group outputs zero for it:

- conv / linear: its weight rows (and bias) are zero;
- BatchNorm: it maps zero to zero (beta = 0, and gamma = 0 or running mean = 0), so a channel
  whose BN still adds a constant (conv weights zeroed, BN left alone) is kept;
- groups holding any other layer with parameters (LayerNorm, PReLU, ...) are left alone.

Call it on effective weights (a pruner's `finalize(model)`), not on reparameterized layers. The
model's output layers are never shrunk, and each group keeps at least one channel.
"""

from __future__ import annotations

import copy
import math

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as F

_WEIGHT_ROWS = (  # producers whose output channel i is zero when weight row i (and bias i) is
    F.prune_conv_out_channels,
    F.prune_linear_out_channels,
    F.prune_depthwise_conv_out_channels,
    F.prune_depthwise_conv_in_channels,
)
_CONSUMERS = (F.prune_conv_in_channels, F.prune_linear_in_channels)


@torch.no_grad()
def remove_zero_channels(model: nn.Module, example_input: torch.Tensor, check: bool = True) -> nn.Module:
    """A copy of `model` without its all-zero channels; `model` is not modified.

    `example_input` (a batch on the model's device) is used to trace the dependency graph and,
    with `check`, to verify that the compact model computes the same outputs in eval mode
    (raises RuntimeError otherwise, e.g. after an activation that does not map 0 to 0).
    """
    compact = copy.deepcopy(model)
    was_training = model.training
    compact.eval()
    _, groups = _groups(compact, example_input)
    for group in groups:
        dead = _dead_channels(group)
        if len(dead) == len(group[0].idxs):
            dead = dead[1:]  # a layer needs at least one channel; a zero one changes nothing
        if dead:
            group.prune(idxs=dead)
    if check:
        model.eval()
        before, after = model(example_input), compact(example_input)
        model.train(was_training)
        if before.shape != after.shape or not torch.allclose(before, after, rtol=1e-4, atol=1e-5):
            diff = float((before - after).abs().max()) if before.shape == after.shape else math.inf
            raise RuntimeError(
                f"remove_zero_channels: the compact model's outputs differ from the original's (max abs "
                f"difference {diff:.3g}); some removed channel was not zero after every layer that uses it"
            )
    compact.train(was_training)
    return compact


@torch.no_grad()
def zero_random_channels(
    model: nn.Module, example_input: torch.Tensor, fraction: float, seed: int = 0,
) -> int:
    """Zero `fraction` of the channels of every prunable channel group of `model` in place (conv /
    linear rows and biases, BN gamma and beta), the pattern a structured pruner leaves behind.
    For benchmarks and tests. Returns the number of channel groups touched."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    touched = 0
    _, groups = _groups(model, example_input)
    for group in groups:
        n = len(group[0].idxs)
        k = int(n * fraction)
        if k == 0:
            continue
        chosen = set(torch.randperm(n, generator=gen)[:k].tolist())
        for item in group:
            fn, layer = item.dep.pruning_fn, item.dep.layer
            if fn in _CONSUMERS or not isinstance(layer, nn.Module):
                continue
            local = [i for i, r in zip(item.idxs, item.root_idxs, strict=True) if r in chosen]
            if fn in _WEIGHT_ROWS or fn == F.prune_batchnorm_out_channels:
                for t in (getattr(layer, "weight", None), getattr(layer, "bias", None)):
                    if t is not None:
                        _rows(layer, t, fn)[local] = 0
        touched += 1
    return touched


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The conv/linear layers whose output is the model's output (never shrunk)."""
    outputs: dict[nn.Module, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: outputs.__setitem__(mod, out))
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            result = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    results = result if isinstance(result, list | tuple) else [result]
    return [m for m, out in outputs.items() if any(out is r for r in results)]


# ------------------------------------------------------------------------------------ internals


def _groups(model: nn.Module, example_input: torch.Tensor) -> tuple[tp.DependencyGraph, object]:
    ignored = output_layers(model, example_input)
    was_training = model.training
    with torch.enable_grad():  # the graph is traced through autograd
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    model.train(was_training)  # tracing switches to eval mode
    return dg, dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear))


def _rows(layer: nn.Module, t: torch.Tensor, fn: object) -> torch.Tensor:
    """`t` viewed with the pruned channel first (transposed convs keep outputs in dim 1)."""
    if t.dim() > 1 and getattr(layer, "transposed", False) and fn in _WEIGHT_ROWS:
        return t.transpose(0, 1)
    return t


def _zero_output(layer: nn.Module, fn: object, idxs: list[int]) -> torch.Tensor | None:
    """Per channel in `idxs`: does this producer output zero for it? None: not a known producer."""
    if fn in _WEIGHT_ROWS:
        zero = (_rows(layer, layer.weight, fn)[idxs].flatten(1) == 0).all(1)
        if getattr(layer, "bias", None) is not None:
            zero &= layer.bias[idxs] == 0
        return zero.cpu()
    if fn == F.prune_batchnorm_out_channels:
        bn: nn.modules.batchnorm._BatchNorm = layer  # type: ignore[assignment]
        zero = torch.ones(len(idxs), dtype=torch.bool)
        out0 = torch.zeros(len(idxs))
        if bn.running_mean is not None:  # eval mode: (0 - mean) / sqrt(var + eps) * gamma + beta
            out0 = (-bn.running_mean[idxs] / torch.sqrt(bn.running_var[idxs] + bn.eps)).cpu()
        if bn.affine:
            out0 = out0 * bn.weight[idxs].cpu() + bn.bias[idxs].cpu()
            zero &= bn.bias[idxs].cpu() == 0  # train mode (batch statistics) maps zero to beta
        return zero & (out0 == 0)
    return None


def _dead_channels(group: tp.Group) -> list[int]:
    """Root indices of the channels that every producer in the group outputs as zero."""
    n = len(group[0].idxs)
    dead = torch.ones(n, dtype=torch.bool)
    for item in group:
        fn, layer = item.dep.pruning_fn, item.dep.layer
        if fn in _CONSUMERS:
            continue
        zero = _zero_output(layer, fn, list(item.idxs))
        if zero is None:
            if isinstance(layer, nn.Module) and any(True for _ in layer.parameters(recurse=False)):
                return []  # a layer we cannot reason about (LayerNorm, PReLU, ...): keep everything
            continue  # parameter-free op (add, ReLU, reshape, concat): zero in, zero out
        roots = item.root_idxs
        if roots is None or any(r is None for r in roots):
            return []
        dead[torch.tensor(roots, dtype=torch.long)[~zero]] = False
    return torch.nonzero(dead).flatten().tolist()
