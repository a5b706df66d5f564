"""LeNets for MNIST as used in the pruning literature: `lenet300_100` and `lenet5` (Caffe)."""

from __future__ import annotations

from torch import nn

from bench.models import register_model


@register_model("lenet300_100", input_shapes=((1, 28, 28),))
def lenet300_100(num_classes: int) -> nn.Module:
    """LeNet-300-100: fully connected 784-300-100-classes with ReLU (MNIST)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


@register_model("lenet5", input_shapes=((1, 28, 28),))
def lenet5(num_classes: int) -> nn.Module:
    """LeNet-5-Caffe: conv 20@5x5, pool, conv 50@5x5, pool, fc 800-500-classes (MNIST)."""
    # Caffe's prototxt has no ReLU after the convs; the VD/L0 reference code (and most PyTorch
    # ports used for pruning) has one, so we follow them.
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),  # 20 x 12 x 12
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),  # 50 x 4 x 4
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )
