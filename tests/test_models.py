"""Every registered model builds, runs a forward pass on its declared input shape, and refuses
datasets it does not fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.errors import ConfigError
from bench.registry import DATASETS, MODELS


def _classes(info) -> int:
    return info.classes[0] if info.classes else 10


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_shape(name: str) -> None:
    info = MODELS.get(name)
    n = _classes(info)
    batch = 1 if name == "resnet50" else 2  # resnet50 at 224x224 is the slow one (~1 s on CPU)
    torch.manual_seed(0)
    model = info.build(n).eval()
    assert any(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    assert info.description, "the builder needs a docstring (shown by `bench list`)"
    for shape in info.input_shapes:
        with torch.no_grad():
            y = model(torch.randn(batch, *shape))
        assert y.shape == (batch, n)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS.names())
def test_check_fits(name: str) -> None:
    info = MODELS.get(name)
    info.check_fits("some-dataset", info.input_shapes[0], _classes(info))  # its own shape fits
    shapes = {d: DATASETS.get(d).input_shape for d in DATASETS.names()}
    wrong = [d for d, s in shapes.items() if s is not None and tuple(s) not in info.input_shapes]
    assert wrong, f"every registered dataset fits {name}?"
    ds = DATASETS.get(wrong[0])
    with pytest.raises(ConfigError) as err:
        info.check_fits(ds.name, ds.input_shape, ds.num_classes)
    assert repr(name) in str(err.value) and repr(ds.name) in str(err.value)


def test_resnet20_refuses_digits() -> None:
    ds = DATASETS.get("digits")
    with pytest.raises(ConfigError, match=r"'resnet20'.*'digits'.*\(3, 32, 32\).*\(1, 8, 8\)"):
        MODELS.get("resnet20").check_fits("digits", ds.input_shape, ds.num_classes)


def test_known_sizes() -> None:
    """Parameter counts of the reference architectures (10 classes)."""
    def params(name: str) -> int:
        return sum(p.numel() for p in MODELS.get(name).build(10).parameters())

    assert params("lenet300_100") == 266_610
    assert params("lenet5") == 431_080
    assert params("lenet5_classic") == 61_706  # LeCun et al. 1998 (with 32x32 inputs): 61,706
    assert params("resnet20") == 272_474  # 0.27M (projection shortcuts add ~2k)
    assert params("vgg16") == 14_724_042
