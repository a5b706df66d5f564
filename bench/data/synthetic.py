"""Random inputs and labels of any shape, for benchmarks (takes the model's input shape)."""

from __future__ import annotations

import torch

from bench.data import TensorData, register_dataset


@register_dataset("synthetic", input_shape=None, num_classes=None)
def load_synthetic(
    root: str, device: torch.device, augment: bool, input_shape: tuple[int, ...], num_classes: int,
    num_train: int = 2048, num_test: int = 512,
) -> TensorData:
    """Gaussian inputs in the model's input shape with random labels (timing only)."""
    g = torch.Generator().manual_seed(0)
    def make(n):
        x = torch.randn((n, *input_shape), generator=g)
        return x.to(device), torch.randint(0, num_classes, (n,), generator=g).to(device)
    return TensorData(*make(num_train), *make(num_test), num_classes)
