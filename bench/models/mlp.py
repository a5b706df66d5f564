"""Fully connected networks: `mlp` (digits)."""

from __future__ import annotations

from torch import nn

from bench.models import register_model


@register_model("mlp", input_shapes=((1, 8, 8),))
def mlp(num_classes: int) -> nn.Module:
    """3-layer MLP 64-256-128-classes with ReLU (digits)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )
