"""LeNets for 28x28 grey images (MNIST, Fashion-MNIST) as used in the pruning literature:
`lenet300_100`, `lenet5` (the Caffe variant, 20-50-500) and `lenet5_classic` (LeCun et al. 1998,
6-16-120-84)."""

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


@register_model("lenet5_classic", input_shapes=((1, 28, 28),))
def lenet5_classic(num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun 1998): conv 6@5x5 pad 2, pool, conv 16@5x5, pool, fc 400-120-84-classes (62k)."""
    # 28x28 inputs are padded by 2 to the original 32x32; ReLU and max pooling, as modern ports do
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 6 x 14 x 14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 5 x 5
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )
