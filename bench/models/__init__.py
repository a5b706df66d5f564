"""Models, one family per module; each registers its builders with `@register_model("name", ...)`
(the registry imports a module when one of the names it declares is asked for: keep heavy imports,
such as torchvision, inside the builder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bench.errors import ConfigError
from bench.registry import MODELS


@dataclass(frozen=True)
class ModelInfo:
    name: str
    build: Callable[[int], nn.Module]  # num_classes -> model
    input_shapes: tuple[tuple[int, ...], ...]  # accepted (C, H, W) input shapes
    classes: tuple[int, ...] | None  # accepted numbers of classes; None: any
    description: str = ""

    def check_fits(self, dataset: str, input_shape: tuple[int, ...], num_classes: int) -> None:
        """Refuse a model/dataset pair that does not fit, naming both."""
        if tuple(input_shape) not in self.input_shapes:
            raise ConfigError(
                f"model {self.name!r} does not fit dataset {dataset!r}: it takes inputs of shape "
                f"{' or '.join(map(str, self.input_shapes))}, the dataset gives {tuple(input_shape)}"
            )
        if self.classes is not None and num_classes not in self.classes:
            raise ConfigError(
                f"model {self.name!r} does not fit dataset {dataset!r}: it has "
                f"{'/'.join(map(str, self.classes))} classes, the dataset {num_classes}"
            )


def register_model(
    name: str, input_shapes: tuple[tuple[int, ...], ...], classes: tuple[int, ...] | None = None
):
    def wrap(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        MODELS.register(name, ModelInfo(name, build, input_shapes, classes, (build.__doc__ or "").strip()))
        return build

    return wrap
