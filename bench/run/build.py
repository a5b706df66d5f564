"""Everything a run trains with, built from its config in one place: the data (with its
validation split), the model, the pruner, the optimizer, the RunContext and the dense MACs.
Training, export, speed-up, perf, the dry-run estimate and the GPU check all call `build`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from bench import metrics
from bench.config import RunConfig
from bench.data import Data
from bench.pruner import Pruner, RunContext
from bench.registry import DATASETS, MODELS, PRUNERS
from bench.run.distributed import configure_backends, resolve_device


@dataclass
class Built:
    """One run's pieces, before training. `model` is what the pruner prepared (the trained one);
    `steps_per_epoch` and `budget_steps` follow from the budget, `total_steps` from the pruner
    (IMP's full-budget rounds train several budgets)."""

    config: RunConfig
    device: torch.device
    data: Data
    model: nn.Module
    pruner: Pruner
    optimizer: torch.optim.Optimizer
    context: RunContext
    macs_dense: float
    dense_counts: dict[str, int]
    layer_macs: dict[str, float]
    steps_per_epoch: int
    budget_steps: int
    total_steps: int
    channels_last: bool = field(default=False)

    def dense_model(self) -> nn.Module:
        """A new, untrained dense model of the run's architecture (the speed-up's reference)."""
        return MODELS.get(self.config.model).build(self.data.num_classes)


def load_data(config: RunConfig, device: torch.device) -> Data:
    """The run's data set on `device`, with the budget's validation split held out."""
    b, model_info = config.budget, MODELS.get(config.model)
    data = DATASETS.get(config.dataset).load(
        config.data_dir, device, b.augment, model_info.input_shapes[0], (model_info.classes or (10,))[0],
    )
    return data.holdout(b.val_fraction)  # a fixed split of the data set; trains on the rest


def build(config: RunConfig, data: Data | None = None, device: torch.device | None = None) -> Built:
    """Build a run from its config. `data`: already loaded data to use instead of the config's
    data set (the estimate's probe); `device`: instead of the config's (a speed-up elsewhere).
    Seeds torch with the run's seed before the model is made: the same config, the same weights."""
    device = device or resolve_device(config.device)
    configure_backends(config, device)
    model_info = MODELS.get(config.model)
    data = load_data(config, device) if data is None else data.holdout(config.budget.val_fraction)
    model_info.check_fits(config.dataset, data.input_shape, data.num_classes)
    torch.manual_seed(config.seed)
    model = model_info.build(data.num_classes).to(device)
    macs_dense, _ = metrics.macs(model, data.input_shape, device)
    dense_counts = metrics.param_counts(model)  # sparsity counts removed weights as zeros
    layer_macs = metrics.layer_macs(model, data.input_shape, device)

    b = config.budget
    steps_per_epoch = math.ceil(data.num_train / b.batch_size)
    budget_steps = b.epochs * steps_per_epoch
    if b.max_steps:
        budget_steps = min(budget_steps, b.max_steps)
    context = RunContext(
        total_steps=budget_steps,
        steps_per_epoch=steps_per_epoch,
        num_train=data.num_train,
        input_shape=tuple(data.input_shape),
        num_classes=data.num_classes,
        device=str(device),
        seed=config.seed,
    )
    pruner_cls = PRUNERS.get(config.pruner)
    pruner = pruner_cls(pruner_cls.Hparams(**config.hparams), b, context)
    model = pruner.prepare(model)
    # NHWC: what cuDNN's fastest convolution kernels (tensor cores) read without transposing
    channels_last = device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return Built(
        config=config, device=device, data=data, model=model, pruner=pruner,
        optimizer=pruner.make_optimizer(model), context=context, macs_dense=macs_dense,
        dense_counts=dense_counts, layer_macs=layer_macs, steps_per_epoch=steps_per_epoch,
        budget_steps=budget_steps, total_steps=pruner.train_steps(), channels_last=channels_last,
    )
