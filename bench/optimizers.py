"""torch.optim's optimizers without the `torch._dynamo` import they trigger.

torch.optim (2.x) wraps `Optimizer.add_param_group`, `zero_grad`, `state_dict` and
`load_state_dict` in `torch._disable_dynamo`, and each built-in `step` in
`_use_grad_for_differentiable`; both run `import torch._dynamo` (which imports torch._inductor)
on their first call, only so that `torch.compile` does not trace into them. On a 2-core CPU that
import takes about as long as `import torch` itself: most of a small run's start-up. The harness
compiles models (`--compile`), never an optimizer, so these classes call the same methods
undecorated: the same code, the same updates to the bit, without the import. (On a torch whose
methods are not wrapped, `inspect.unwrap` returns them unchanged.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch


class EagerOptimizer(torch.optim.Optimizer):
    """A `torch.optim.Optimizer` whose bookkeeping methods skip the torch._dynamo guard; a
    subclass writes its own `step` (as gRDA does) or takes a built-in one with `eager_step`."""

    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)
    load_state_dict = inspect.unwrap(torch.optim.Optimizer.load_state_dict)


def eager_step(cls: type[torch.optim.Optimizer]) -> Callable[..., Any]:
    """`cls.step` without its torch._dynamo guard: gradients off during the update, as the guard
    sets them (`differentiable` optimizers keep them on)."""
    step = inspect.unwrap(cls.step)

    def _step(self: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            return step(self, closure)

    _step.__doc__ = step.__doc__
    return _step


class SGD(EagerOptimizer, torch.optim.SGD):
    """`torch.optim.SGD`, without the torch._dynamo import."""

    step = eager_step(torch.optim.SGD)


class Adam(EagerOptimizer, torch.optim.Adam):
    """`torch.optim.Adam`, without the torch._dynamo import."""

    step = eager_step(torch.optim.Adam)
