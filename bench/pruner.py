"""The Pruner protocol: every method, gRDA included, has this shape.

A pruner is built with its hyperparameters, the shared budget and a frozen `RunContext` (steps,
steps per epoch, training-set size, input shape, device, seed), and acts on training only through
these hooks, called by `bench.run.trainer.Trainer` in this order:

    model = pruner.prepare(model)              once, before the optimizer (e.g. reparameterize)
    opt = pruner.make_optimizer(model)         once (again when a hook set `model_changed`)
    per step:  lr = recipe lr * schedule(pruner.lr_progress(step))
               loss = task_loss + pruner.regularizer(model)
               loss.backward(); pruner.after_backward(step)
               if pruner.updates(step): mask_optimizer_state(opt, pruner.masked_weights()); opt.step()
               pruner.after_step(step); mask_optimizer_state(opt, pruner.masked_weights())
    per epoch: pruner.end_epoch(epoch)
    eval:      pruner.finalize(model) -> the model to evaluate and count (effective weights)

`finalize` must not disturb training (it is also called at every epoch's evaluation): return
`model` itself or a copy. An `after_step` that replaces the model's parameters (structured
pruning) or rewinds them (IMP) sets `self.model_changed = True`; the trainer then builds a new
optimizer with `make_optimizer` (the old optimizer state is dropped). `updates(step)` False
skips that step's optimizer update (SNIP's scoring batch); `lr_progress(step)` is where in the
lr schedule a step is (IMP replays one round's schedule per round). A pruner that masks
weights (sets them to zero and keeps them there) returns them from `masked_weights()`, each with
its mask, once after every change; the trainer then zeroes the masked entries of every
per-parameter state tensor of the optimizer (`mask_optimizer_state`: SGD's momentum, Adam's
moments, ...), so a masked weight with a masked gradient stays exactly zero under any optimizer.
Pruners never hold the optimizer, set its lr or clear its state themselves. On resume the
trainer loads the pruner's state before the model's, so `load_state_dict` can first rebuild the
changed architecture (and set `model_changed` for a matching optimizer).

Facts about a method (does it regrow connections, is it its own optimizer, does it change the
architecture, does it draw random numbers, is it driven by a pruning schedule) are one frozen
`PrunerInfo` per class (`info`; `info_for(hparams)` where a setting changes one). "When to
prune" of the schedule-driven methods is one `PruningSchedule` (begin, end, every, GMP's cubic
sparsity ramp), separate from how each method scores weights; the gradual ones declare its
hyperparameters by deriving their `Hparams` from `ScheduleHparams`. Random draws come from
`rng(step)`, a generator seeded from (run seed, step): every rank draws the same masks. Which
layers may be pruned is one policy for all (`prunable_parameters`, `layer_coverage`).

Hyperparameters live in a
frozen dataclass `Hparams` whose fields carry help text; a pruner registers with
`@register_pruner("name")` in a module of `baselines/` (or of a plugin). A pruner whose sparsity
follows from a hyperparameter declares it as `sparsity_knob`, which `bench calibrate` searches
for a target sparsity.

Optimizer recipe: with the budget's `recipe = "shared"` every pruner trains with the budget's
optimizer settings (`OptimizerRecipe.shared`); with `recipe = "paper"` each pruner uses its
class attribute `paper_recipe`, the optimizer its paper trained with (None: it has none of its
own, and keeps the shared one); the SGD-momentum papers' recipe takes its weight decay and
Nesterov from the budget when it sets them (`OptimizerRecipe.on`). Either way `make_optimizer`
builds `self.optimizer_recipe()`; a pruner that builds its own optimizer (gRDA) or parameter
groups (STR) reads it from there. The recipe builds `bench.optimizers.SGD`/`Adam` (torch's,
without the torch._dynamo import torch.optim triggers); an optimizer of one's own subclasses
`bench.optimizers.EagerOptimizer` for the same start-up.
Epochs, batches, the lr schedule (it scales each parameter group's own initial lr), data and
evaluation are shared by both tracks.

Training compute (`bench.metrics.step_macs`): after every step the trainer asks
`compute_densities()` for the density each prunable layer computed with (default: none given,
all dense; a sparse-from-start method returns its mask densities), and adds `extra_macs` (MACs
spent outside the training steps: scoring passes, dense gradients) at the end. `train_steps()`
is how many optimizer steps the method runs for the budget's `ctx.total_steps` (default: those;
IMP with a full budget per round: more). `optimizer_family` names the dense model a run is
compared with ("sgd", "sgd_momentum", "adam"), derived from `optimizer_recipe()`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from bench import optimizers
from bench.config import Budget, hp
from bench.registry import PRUNERS


@dataclass(frozen=True)
class RunContext:
    """What a pruner may know about the run it trains, fixed before `prepare`."""

    total_steps: int = 0  # optimizer steps in the budget
    steps_per_epoch: int = 0
    num_train: int = 0  # training examples
    input_shape: tuple[int, ...] = ()  # one example's shape
    num_classes: int = 0
    device: str = "cpu"
    seed: int = 0  # the run's seed: pruner random draws derive from it (the same on every rank)


@dataclass(frozen=True)
class PrunerInfo:
    """What a method is, for tests, boards and the trainer to read instead of guessing."""

    regrows: bool = False  # a pruned connection may return (RigL, SET)
    own_optimizer: bool = False  # the method is its optimizer (gRDA) or needs its own (VD)
    changes_architecture: bool = False  # parameters are removed or replaced (channel pruning)
    randomized: bool = False  # draws random numbers (from `Pruner.rng`)
    scheduled: bool = False  # masks follow a `PruningSchedule` (when to prune)


@dataclass(frozen=True)
class ScheduleHparams:
    """The hyperparameters of a gradual `PruningSchedule`, declared once for every pruner on it
    (`gmp`, `random_gradual`, `nm`'s gradual mode): its `Hparams` derive from this class. The
    defaults are Gale et al.'s ResNet-50 schedule (start 40k, end 76k, every 2k of 128k steps).
    RigL's and SET's `delta_t`/`end` are not one: their sparsity is constant from step 0, and
    those time drop-and-regrow updates, not a sparsity ramp."""

    start: float = hp(0.3125, "first mask update t0, as a fraction of the budget's steps")
    end: float = hp(0.59375, "last mask update (s_t = s_f from then on), as a fraction of the steps")
    every: float = hp(0.015625, "interval dt between mask updates, as a fraction of the steps")

    def __post_init__(self) -> None:
        if not 0 <= self.start < 1:
            raise ValueError(f"start = {self.start!r}: must be in [0, 1)")
        if not self.start < self.end <= 1:
            raise ValueError(f"end = {self.end!r}: must be in (start, 1]")
        if not 0 < self.every <= self.end - self.start:
            raise ValueError(f"every = {self.every!r}: must be in (0, end - start]")

    def pruning_schedule(self, total: int) -> PruningSchedule:
        """The schedule over `total` optimizer steps."""
        return PruningSchedule(self.start, self.end, self.every, total)


@dataclass(frozen=True)
class PruningSchedule:
    """When a schedule-driven pruner updates its masks, and to which sparsity (Zhu & Gupta 2017).

    `begin`, `end`, `every` are fractions of `total` optimizer steps. Updates happen after
    t = t0, t0 + dt, ..., t0 + n*dt steps (the last one at or before `end`); with `begin == end`
    there is one update (one-shot pruning, after at least one step). The sparsity at t is GMP's cubic ramp
    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3, held at s_f after the last update.
    """

    begin: float
    end: float
    every: float
    total: int

    @property
    def one_shot(self) -> bool:
        return self.begin == self.end

    @property
    def t0(self) -> int:
        """Steps done at the first update (one-shot: at least one step)."""
        t0 = round(self.begin * self.total)
        return max(1, t0) if self.one_shot else t0

    @property
    def dt(self) -> int:
        return max(1, round(self.every * self.total))

    @property
    def n(self) -> int:
        """Updates after the first (one-shot: none; gradual: at least one)."""
        if self.one_shot:
            return 0
        return max(1, (round(self.end * self.total) - self.t0) // self.dt)

    def is_update(self, t: int) -> bool:
        """Whether the masks change after `t` optimizer steps."""
        return self.t0 <= t <= self.t0 + self.n * self.dt and (t - self.t0) % self.dt == 0

    def sparsity(self, t: int, final: float, initial: float = 0.0) -> float:
        """s_t after t steps (the cubic ramp; `final` from the last update on)."""
        if self.one_shot:
            return final if t >= self.t0 else initial
        progress = min(max((t - self.t0) / (self.n * self.dt), 0.0), 1.0)
        return final + (initial - final) * (1 - progress) ** 3

    @classmethod
    def one_shot_at(cls, at: float, total: int) -> PruningSchedule:
        """A single update after `at` of the `total` steps."""
        return cls(at, at, 1.0, total)


OPTIMIZER_FAMILIES = ("sgd", "sgd_momentum", "adam")


@dataclass(frozen=True)
class OptimizerRecipe:
    """An optimizer and its settings; `lr` None: the budget's lr (the schedule scales it either way)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = None
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0  # coupled (added to the gradient), as torch's SGD and Adam do
    # the budget's `weight_decay` (when > 0) and `nesterov` replace this recipe's (see `on`)
    per_budget: bool = False

    @classmethod
    def shared(cls, budget: Budget) -> OptimizerRecipe:
        """The shared track: SGD with the budget's lr, momentum, weight decay and Nesterov (without
        momentum Nesterov is plain SGD, which torch spells nesterov=False)."""
        return cls("sgd", None, budget.momentum, budget.nesterov and budget.momentum > 0, budget.weight_decay)

    def on(self, budget: Budget) -> OptimizerRecipe:
        """This recipe as it trains under `budget`: a `per_budget` recipe takes the budget's weight
        decay when it sets one (> 0) and its Nesterov; any other recipe is itself."""
        if not self.per_budget:
            return self
        return dataclasses.replace(self, weight_decay=budget.weight_decay or self.weight_decay,
                                   nesterov=budget.nesterov and self.momentum > 0, per_budget=False)

    @property
    def family(self) -> str:
        """"sgd" (no momentum), "sgd_momentum" or "adam": which dense model a run compares with."""
        if self.optimizer == "adam":
            return "adam"
        return "sgd_momentum" if self.momentum > 0 else "sgd"

    def build(self, params: Any, budget: Budget) -> torch.optim.Optimizer:
        """The optimizer over `params` (tensors or parameter groups, as torch.optim takes them),
        with this recipe `on(budget)`."""
        r = self.on(budget)
        lr = budget.lr if r.lr is None else r.lr
        # torch.optim's classes without their torch._dynamo import (bench.optimizers)
        if r.optimizer == "adam":  # fused: one kernel per tensor (several times the foreach speed on CPU)
            return optimizers.Adam(params, lr=lr, weight_decay=r.weight_decay, fused=True)
        return optimizers.SGD(params, lr=lr, momentum=r.momentum, nesterov=r.nesterov,
                              weight_decay=r.weight_decay, foreach=True)


# The recipe of the SGD-trained pruning papers (Zhu & Gupta 2017, Gale et al. 2019, Kusupati et al.
# 2020, Evci et al. 2020, Lee et al. 2019, Frankle et al. 2020): momentum 0.9 with weight decay.
# Their weight decay (and Nesterov) depends on the data set and network, so the budget states it
# (`weight_decay`, `nesterov`: a sweep file's [budget], or a pruner's own table); unset, 5e-4
# without Nesterov, the usual CIFAR-scale value.
SGD_MOMENTUM_WD = OptimizerRecipe("sgd", momentum=0.9, weight_decay=5e-4, per_budget=True)


@dataclass(frozen=True)
class NoHparams:
    """This pruner has no hyperparameters."""


@dataclass(frozen=True)
class SparsityKnob:
    """The hyperparameter a pruner's final sparsity follows from, and its search range."""

    name: str
    low: float
    high: float
    scale: Literal["log", "linear"] = "log"
    increasing: bool = True  # sparsity grows with the value


@torch.no_grad()
def mask_optimizer_state(optimizer: torch.optim.Optimizer,
                         masked: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Multiply every per-parameter state tensor of each weight in `masked` (those shaped like the
    weight: momentum, Adam's exp_avg and exp_avg_sq, ...) by its mask, in one multi-tensor op."""
    states, factors = [], []
    for w, mask in masked:
        for value in optimizer.state.get(w, {}).values():
            if torch.is_tensor(value) and value.shape == w.shape:
                states.append(value)
                factors.append(mask)
    if states:
        torch._foreach_mul_(states, factors)


def register_pruner(name: str):
    def wrap(cls: type[Pruner]) -> type[Pruner]:
        cls.name = name
        return PRUNERS.register(name, cls)

    return wrap


def prunable_parameters(model: nn.Module, include_first_last: bool = True) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every conv/linear layer whose weight may be pruned, in order.

    Reparameterized layers (torch.nn.utils.parametrize) count like plain ones. The one
    layer-coverage rule of every pruner (see `layer_coverage`).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not include_first_last and len(layers) > 2:
        layers = layers[1:-1]
    return layers


def layer_coverage(budget: Budget) -> str:
    """The layer-coverage policy every pruner follows under `budget`, in words (for boards)."""
    if budget.prune_first_last:
        return ("every conv/linear layer is prunable, the first and last included; each method "
                "splits the sparsity between layers its own way (uniform, ERK, global or learnt)")
    return ("the first and last conv/linear layers stay dense for every method (weights and, for "
            "gRDA, biases); channel pruning keeps their channels, so the last layer only loses the "
            "inputs of channels removed before it")


class Pruner:
    """Base class: dense SGD training with no-op hooks. Subclasses override what they need."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type] = NoHparams
    sparsity_knob: ClassVar[SparsityKnob | None] = None
    paper_recipe: ClassVar[OptimizerRecipe | None] = None  # the optimizer of the pruner's paper
    info: ClassVar[PrunerInfo] = PrunerInfo()

    def __init__(self, hparams: Any, budget: Budget, ctx: RunContext) -> None:
        self.hp = hparams
        self.budget = budget
        self.ctx = ctx
        self.model_changed = False  # see the module docstring; reset by the trainer
        self.extra_macs = 0.0  # MACs spent outside the training steps (checkpoint it if it grows)

    @classmethod
    def info_for(cls, hparams: Any) -> PrunerInfo:
        """The method's facts under these hyperparameters (default: the class's `info`)."""
        return cls.info

    # -- hooks -------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        self.model = model
        return model

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.optimizer_recipe().build(model.parameters(), self.budget)

    def regularizer(self, model: nn.Module) -> torch.Tensor | None:
        return None

    def after_backward(self, step: int) -> None:
        pass

    def updates(self, step: int) -> bool:
        """Whether the optimizer updates the weights at this step (default: always)."""
        return True

    def lr_progress(self, step: int) -> float:
        """Where this step is in the lr schedule, in [0, 1] (default: steps done / steps run)."""
        return min(step / max(1, self.train_steps()), 1.0)

    def after_step(self, step: int) -> None:
        pass

    def masked_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, mask) of every weight whose mask changed since the last call, the mask in the
        weight's dtype (0: masked): the trainer zeroes those entries of the weight's optimizer
        state after `after_backward` (before the update) and after `after_step`. Default: none."""
        return []

    def end_epoch(self, epoch: int) -> None:
        pass

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def reported_masks(self) -> dict[str, torch.Tensor] | None:
        """Per layer (by module name), the mask whose kept entries count as weights even where they
        are zero (a connection regrown at 0 that never moved); None: sparsity counts zeros."""
        return None

    # -- training compute ---------------------------------------------------------------------
    def compute_densities(self) -> dict[str, float]:
        """Per prunable layer (by name), the fraction of its dense MACs the last step computed
        with (forward and backward); a layer left out computes dense. Default: all dense."""
        return {}

    def train_steps(self) -> int:
        """Optimizer steps this method runs for a budget of `ctx.total_steps` (default: those)."""
        return self.ctx.total_steps

    # -- state (checkpointed with the run) ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def state_tensors(self) -> Iterator[torch.Tensor]:
        """Tensors the pruner keeps besides the model and optimizer (masks...), for state_bytes."""
        return iter(())

    # -- helpers ------------------------------------------------------------------------------
    def optimizer_recipe(self) -> OptimizerRecipe:
        """The optimizer settings of the budget's recipe track (see the module docstring)."""
        if self.budget.recipe == "paper" and self.paper_recipe is not None:
            return self.paper_recipe.on(self.budget)
        return OptimizerRecipe.shared(self.budget)

    @property
    def optimizer_family(self) -> str:
        """The family of `optimizer_recipe()` ("sgd", "sgd_momentum", "adam"): the dense model
        this run is compared with."""
        return self.optimizer_recipe().family

    def rng(self, step: int, purpose: str = "") -> torch.Generator:
        """A generator seeded from (run seed, step, purpose) on the run's device: identical on every
        rank, independent of the global (per-rank) random stream and of other purposes' draws."""
        # hashed: a plain seed*K + step would replay the stream that initialised the model (seed 0, step 0)
        key = f"pruner-rng:{self.ctx.seed}:{step}:{purpose}".encode()
        key = hashlib.blake2b(key, digest_size=8).digest()
        gen = torch.Generator(device=self.ctx.device)
        gen.manual_seed(int.from_bytes(key, "little") >> 1)
        return gen

    def prunable(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return prunable_parameters(model, self.budget.prune_first_last)

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str]]:
        """(name, default, help) of every hyperparameter."""
        return [(f.name, f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls.Hparams)]

