"""The live-tensor peak of a run's training step on the CPU (`peak_tensor_bytes`), where no
allocator reports one: a few early steps are run with their tensors tracked, and left out of the
step times (tracking slows them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bench import metrics

if TYPE_CHECKING:
    from bench.run.trainer import Trainer

# the training steps whose live tensors are tracked: the first ones after optimizer state exists
MEMORY_STEPS = range(2, 5)


def tracked_step(t: Trainer, x: torch.Tensor, y: torch.Tensor, global_batch: int | None = None,
                 ) -> torch.Tensor:
    """`t.train_step` with its live tensors tracked: raises `t.tensor_peak` to the step's peak."""
    opt_state = (v for st in t.optimizer.state.values() for v in st.values() if torch.is_tensor(v))
    params = list(t.model.parameters())
    existing = (*params, *(p.grad for p in params if p.grad is not None), *t.model.buffers(),
                *opt_state, *t.pruner.state_tensors(), t.correct)
    mode = metrics.CompiledTensorMemory if t.config.compile else metrics.TensorMemory
    with mode(existing) as memory:
        loss = t.train_step(x, y, global_batch)
    t.tensor_peak = max(t.tensor_peak or 0, memory.peak)
    return loss
