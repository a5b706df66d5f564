"""A pruner, a model and a data set of my own: `--import my_methods.py` makes them work everywhere
a built-in one does (`bench list`, `run`, `sweep` locally and on SLURM, `calibrate`, `board`)."""

from dataclasses import dataclass

import torch
from torch import nn

from baselines._mask import MaskPruner, keep_masks
from bench.config import hp
from bench.data import TensorData, register_dataset
from bench.models import register_model
from bench.pruner import register_pruner


@dataclass(frozen=True)
class LateMagnitudeHparams:
    sparsity: float = hp(0.5, "fraction of each layer's weights removed before the last epoch")


@register_pruner("late_magnitude")
class LateMagnitude(MaskPruner):
    """Per-layer magnitude pruning before the last epoch, which then fine-tunes the survivors."""

    Hparams = LateMagnitudeHparams

    def end_epoch(self, epoch: int) -> None:
        if epoch == self.budget.epochs - 2:
            scores = {name: w.detach().abs() for name, w in self.weights().items()}
            self.set_masks(keep_masks(scores, self.hp.sparsity, "layer"))


@register_model("tiny_cnn", input_shapes=((1, 8, 8),))
def tiny_cnn(num_classes: int) -> nn.Module:
    """Two 3x3 convolutions and a linear classifier, for 1x8x8 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, num_classes),
    )


@register_dataset("blobs", input_shape=(1, 8, 8), num_classes=3)
def blobs(root: str, device: torch.device, augment: bool, input_shape, num_classes) -> TensorData:
    """Three Gaussian blobs of 8x8 images, 600 for training and 150 for testing (no files)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(750) % 3
    x = centers[y] + 0.8 * torch.randn(750, 1, 8, 8, generator=g)
    return TensorData(x[:600], y[:600], x[600:], y[600:], num_classes=3).to(device)
