"""`channel`: structured magnitude pruning of whole channels (filters / neurons), physically removed.

Dense training until `prune_at` of the budget; then torch-pruning's dependency graph removes the
lowest-norm channel groups (`GroupMagnitudeImportance`: the p-norm over every coupled weight
of a channel, so a conv filter goes with its BN and the next layer's input slice), the same
fraction of channels in every prunable layer; the rest of the budget fine-tunes the smaller
network (a new optimizer: the momentum of the removed tensors has no meaning any more).

`sparsity` counts weights, not channels: the channel fraction is found by bisection so that the
conv/linear weights left are closest to (1 - sparsity) of the dense model's. The run's reported
`sparsity` is measured against the dense model's sizes, so removed weights count as zeros.
The classifier's outputs (the classes) are never pruned; with `prune_first_last = false` the
first layer's outputs are not either.

Checkpoints: the pruner's state is torch-pruning's pruning history (layer name, out/in, channel
indices); on resume it is replayed on the freshly built dense model before the weights load.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from baselines._mask import check_sparsity
from bench.config import hp
from bench.metrics import weight_layers
from bench.pruner import SGD_MOMENTUM_WD, Pruner, PrunerInfo, PruningSchedule, register_pruner

BISECTION_STEPS = 10  # channel-fraction resolution ~1e-3: under one channel of a 1000-channel layer


def conv_linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for _, m in weight_layers(model))


@dataclass(frozen=True)
class ChannelHparams:
    sparsity: float = hp(0.9, "fraction of the dense model's conv/linear weights removed, in [0, 1)")
    prune_at: float = hp(0.5, "when to prune, as a fraction of the budget's steps (the rest fine-tunes)")
    norm: int = hp(2, "p of the group p-norm that ranks channels (1: Li et al. 2017's filter L1 norm)")

    def __post_init__(self) -> None:
        check_sparsity("sparsity", self.sparsity)
        if not 0 < self.prune_at < 1:
            raise ValueError(f"prune_at = {self.prune_at!r}: must be in (0, 1)")
        if self.norm not in (1, 2):
            raise ValueError(f"norm = {self.norm!r}: valid choices: 1, 2")


@register_pruner("channel")
class ChannelPruner(Pruner):
    """Structured channel pruning (torch-pruning), removed at `prune_at`, then fine-tuning."""

    Hparams = ChannelHparams
    paper_recipe = SGD_MOMENTUM_WD
    info = PrunerInfo(changes_architecture=True, scheduled=True)

    def prepare(self, model: nn.Module) -> nn.Module:
        self.model = model
        self.schedule = PruningSchedule.one_shot_at(self.hp.prune_at, self.ctx.total_steps)
        self.dense_weights = conv_linear_weights(model)
        self.history: list[list[Any]] = []  # torch-pruning's [layer name, out-channels?, indices]
        return model

    def _example(self, model: nn.Module) -> torch.Tensor:
        return torch.zeros((1, *self.ctx.input_shape), device=next(model.parameters()).device)

    def _ignored(self, model: nn.Module) -> list[nn.Module]:
        """Layers whose outputs stay: the non-prunable ones and the classifier."""
        prunable = {id(m) for _, m in self.prunable(model)}
        layers = [m for _, m in weight_layers(model)]
        return [m for m in layers if id(m) not in prunable] + layers[-1:]

    def _tp_pruner(self, model: nn.Module, fraction: float) -> tp.pruner.BasePruner:
        return tp.pruner.BasePruner(
            model, self._example(model), importance=tp.importance.GroupMagnitudeImportance(p=self.hp.norm),
            pruning_ratio=fraction, ignored_layers=self._ignored(model),
        )

    def _removed(self, fraction: float) -> float:
        """Fraction of the dense conv/linear weights that pruning `fraction` of the channels removes."""
        trial = copy.deepcopy(self.model)
        self._tp_pruner(trial, fraction).step()
        return 1 - conv_linear_weights(trial) / self.dense_weights

    def choose_fraction(self) -> float:
        """The channel fraction whose weight reduction is closest to `sparsity` (bisection: the
        reduction grows with the fraction)."""
        target = self.hp.sparsity
        ignored = {id(m) for m in self._ignored(self.model)}
        narrowest = min((m.weight.shape[0] for _, m in weight_layers(self.model) if id(m) not in ignored),
                        default=1)
        # the most that leaves every layer a channel (torch-pruning skips a layer it would empty)
        lo, hi = 0.0, max(0.0, 1 - 1 / narrowest - 1e-6)
        removed_hi = self._removed(hi)
        if removed_hi < target:
            raise ValueError(
                f"channel: sparsity = {target}: unreachable, leaving one channel per prunable layer "
                f"removes {removed_hi:.1%} of the weights"
            )
        removed_lo = 0.0
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            removed = self._removed(mid)
            if removed < target:
                lo, removed_lo = mid, removed
            else:
                hi, removed_hi = mid, removed
        return lo if target - removed_lo < removed_hi - target else hi

    def after_step(self, step: int) -> None:
        if self.schedule.is_update(step + 1):
            training = self.model.training
            pruner = self._tp_pruner(self.model, self.choose_fraction())
            pruner.step()
            self.model.train(training)  # torch-pruning's tracing leaves the model in eval mode
            # plain lists of ints and strings: checkpoints load with weights_only=True
            self.history = [[n, bool(out), [int(i) for i in ix]] for n, out, ix in pruner.pruning_history()]
            self.model_changed = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["history"] and not self.history:  # rebuild the pruned architecture
            training = self.model.training
            graph = tp.DependencyGraph().build_dependency(self.model, self._example(self.model))
            graph.load_pruning_history(state["history"])
            self.model.train(training)
            self.history = state["history"]
            self.model_changed = True
