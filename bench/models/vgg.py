"""VGG-16 for CIFAR: `vgg16` (with BN) and `vgg16_nobn` (the gRDA paper's variant)."""

from __future__ import annotations

from torch import nn

from bench.models import register_model

# VGG configuration "D"; "M" is a 2x2 max pool. Five pools take 32x32 down to 1x1x512.
_CFG_D: list[int | str] = [
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
]


def _features(batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _CFG_D:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        assert isinstance(v, int)
        layers.append(nn.Conv2d(in_ch, v, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_ch = v
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> nn.Module:
    # MSR init of the convs as in the reference CIFAR VGG code: N(0, 2 / (k * k * out_channels))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


_CIFAR = ((3, 32, 32),)


@register_model("vgg16", input_shapes=_CIFAR)
def vgg16(num_classes: int) -> nn.Module:
    """VGG-16 with BN for CIFAR: 13 conv-BN-ReLU layers, classifier 512-classes."""
    return _init(nn.Sequential(_features(batch_norm=True), nn.Flatten(), nn.Linear(512, num_classes)))


@register_model("vgg16_nobn", input_shapes=_CIFAR)
def vgg16_nobn(num_classes: int) -> nn.Module:
    """VGG-16 without BN (gRDA paper / classic vgg-cifar): classifier 512-512-512-classes, dropout 0.5."""
    classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )
    return _init(nn.Sequential(_features(batch_norm=False), nn.Flatten(), classifier))
