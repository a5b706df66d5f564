"""CIFAR ResNets of He et al. 2016 (sec. 4.2): `resnet20`, `resnet32`, `resnet56`.

Three stages of 16/32/64 channels with n basic blocks each (depth 6n + 2). Shortcuts that change
shape use a 1x1 conv + BN projection (option B) rather than zero-padding (option A), so the
model is plain conv/BN layers that dependency-graph pruners (torch-pruning) can follow.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.models import register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He init of the convs, as in the paper
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


_CIFAR = ((3, 32, 32),)


@register_model("resnet20", input_shapes=_CIFAR)
def resnet20(num_classes: int) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016), 0.27M params, projection shortcuts."""
    return CifarResNet(20, num_classes)


@register_model("resnet32", input_shapes=_CIFAR)
def resnet32(num_classes: int) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2016), 0.46M params, projection shortcuts."""
    return CifarResNet(32, num_classes)


@register_model("resnet56", input_shapes=_CIFAR)
def resnet56(num_classes: int) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016), 0.85M params, projection shortcuts."""
    return CifarResNet(56, num_classes)
