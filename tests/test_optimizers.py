"""bench.optimizers: torch.optim's SGD and Adam without the torch._dynamo import, the same updates
to the bit, and everything else a torch optimizer does (state dicts, schedulers, hooks)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bench import optimizers


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g)) for shape in ((5, 7), (7,), (3, 5))]


def _train(cls: type[torch.optim.Optimizer], steps: int = 5, **kwargs: object) -> list[torch.Tensor]:
    params = _params()
    opt = cls(params, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(("name", "kwargs"), [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, foreach=False)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-4, fused=True)),
    ("Adam", dict(lr=1e-3)),
])
def test_updates_match_torch_optim_to_the_bit(name: str, kwargs: dict) -> None:
    ours = _train(getattr(optimizers, name), **kwargs)
    theirs = _train(getattr(torch.optim, name), **kwargs)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_state_dict_round_trip_resumes_the_same_trajectory() -> None:
    full = _train(optimizers.SGD, steps=6, lr=0.1, momentum=0.9)
    params = _params()
    opt = optimizers.SGD(params, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    saved = opt.state_dict()
    resumed = optimizers.SGD(params, lr=0.1, momentum=0.9)
    resumed.load_state_dict(saved)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        resumed.step()
    for a, b in zip(full, params, strict=True):
        assert torch.equal(a, b.detach())
    resumed.zero_grad()
    assert all(p.grad is None for p in params)


def test_schedulers_and_step_hooks_work() -> None:
    params = _params()
    opt = optimizers.Adam(params, lr=1.0)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    assert calls == [1] and opt.param_groups[0]["lr"] == 0.5


def test_building_stepping_and_saving_never_imports_torch_dynamo() -> None:
    code = """
import sys, torch
from bench import optimizers
p = [torch.nn.Parameter(torch.ones(3))]
for cls, kw in ((optimizers.SGD, dict(lr=0.1, momentum=0.9)), (optimizers.Adam, dict(fused=True))):
    o = cls(p, **kw)
    p[0].grad = torch.ones(3)
    o.step()
    o.zero_grad()
    o.load_state_dict(o.state_dict())
assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'
"""
    subprocess.run([sys.executable, "-c", code], check=True)
