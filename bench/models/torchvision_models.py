"""ImageNet models from torchvision (random init): `resnet50`. torchvision (which imports
torch._dynamo) is imported when a model is built, not when the registry lists this one."""

from __future__ import annotations

from torch import nn

from bench.models import register_model


@register_model("resnet50", input_shapes=((3, 224, 224),))
def resnet50(num_classes: int) -> nn.Module:
    """torchvision ResNet-50 (ImageNet, 224x224), 25.6M params, random init."""
    import torchvision

    return torchvision.models.resnet50(weights=None, num_classes=num_classes)
