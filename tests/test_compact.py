"""`bench.compact`: all-zero channels are removed physically and outputs stay the same."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench import metrics
from bench.compact import output_layers, remove_zero_channels, zero_random_channels
from bench.models.resnet_cifar import resnet20
from bench.registry import MODELS

CPU = torch.device("cpu")


def _size(name: str) -> int:
    info = MODELS.get(name)
    with torch.device("meta"):  # shapes only: no memory, no init
        return sum(p.numel() for p in info.build((info.classes or (10,))[0]).parameters())


SMALL = [n for n in MODELS.names() if _size(n) < 4.5e5]  # registered models small enough for unit tests


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    info = MODELS.get(name)
    torch.manual_seed(0)
    model = info.build((info.classes or (10,))[0]).eval()
    return model, torch.randn(4, *info.input_shapes[0])


def test_small_models_cover_convnets_and_mlps() -> None:
    assert {"mlp", "resnet20", "lenet5"} <= set(SMALL)


@pytest.mark.parametrize("name", SMALL)
def test_zeroed_channels_are_removed_and_outputs_unchanged(name: str) -> None:
    model, x = build(name)
    assert zero_random_channels(model, x, 0.5) > 0
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    compact = remove_zero_channels(model, x)
    assert params(compact) < params(model)
    dense_flops, _ = metrics.macs(model, tuple(x.shape[1:]), CPU)
    compact_flops, _ = metrics.macs(compact, tuple(x.shape[1:]), CPU)
    assert compact_flops < 0.5 * dense_flops  # half the channels: in and out of most layers
    with torch.no_grad():
        torch.testing.assert_close(compact(x), model(x), rtol=1e-4, atol=1e-5)
    for k, v in model.state_dict().items():  # the original is left alone
        assert torch.equal(v, snapshot[k]), k
    assert not compact.training
    assert output_layers(compact, x)[0].out_features == output_layers(model, x)[0].out_features


def test_nothing_zero_means_nothing_removed() -> None:
    model, x = build("resnet20")
    compact = remove_zero_channels(model, x)
    assert params(compact) == params(model)
    assert [m.out_channels for m in compact.modules() if isinstance(m, nn.Conv2d)] == \
        [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_a_channel_whose_batchnorm_adds_a_constant_is_kept() -> None:
    """Zero conv filters with BN left alone (beta != 0) still feed a constant: not removable."""
    torch.manual_seed(0)
    model = resnet20(10).eval()
    with torch.no_grad():
        model.layers[0].conv1.weight[:8] = 0
        model.layers[0].bn1.bias.fill_(0.3)
    x = torch.randn(2, 3, 32, 32)
    assert remove_zero_channels(model, x).layers[0].conv1.out_channels == 16
    with torch.no_grad():
        model.layers[0].bn1.bias[:8] = 0
        model.layers[0].bn1.weight[:8] = 0
    assert remove_zero_channels(model, x).layers[0].conv1.out_channels == 8


def test_output_layer_and_last_channel_are_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)).eval()
    with torch.no_grad():
        model[0].weight.zero_()  # every hidden unit dead
        model[0].bias.zero_()
        model[2].weight[1] = 0  # a zero logit row: still an output
        model[2].bias[1] = 0
    x = torch.randn(3, 6)
    compact = remove_zero_channels(model, x)
    assert compact[0].out_features == 1 and compact[2].out_features == 4
    torch.testing.assert_close(compact(x), model(x))


def test_removal_that_would_change_outputs_is_refused() -> None:
    """sigmoid(0) = 0.5: a zero unit before a sigmoid is not dead; the check catches it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4)).eval()
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[0].bias[:2] = 0
    with pytest.raises(RuntimeError, match="outputs differ"):
        remove_zero_channels(model, torch.randn(3, 6))
    assert remove_zero_channels(model, torch.randn(3, 6), check=False)[0].out_features == 3


def test_training_mode_is_kept() -> None:
    model, x = build("mlp")
    model.train()
    zero_random_channels(model, x, 0.25)
    assert remove_zero_channels(model, x).training and model.training
