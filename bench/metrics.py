"""What a run measures: sparsity, multiply-accumulates, memory, timing conditions, and provenance."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# ------------------------------------------------------------------------------------ sparsity


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def layer_label(name: str, module: nn.Module) -> str:
    """A readable key for a conv/linear layer: its module path and what it maps, e.g.
    `1 (linear 64->256)`, `features.0 (conv 3->64, 3x3)` (a Sequential's paths are bare numbers)."""
    w = module.weight
    if isinstance(module, nn.Conv2d):
        return f"{name} (conv {w.shape[1] * module.groups}->{w.shape[0]}, {'x'.join(map(str, w.shape[2:]))})"
    return f"{name} (linear {w.shape[1]}->{w.shape[0]})"


def param_counts(model: nn.Module) -> dict[str, Any]:
    """The sizes sparsity is measured against: each conv/linear weight's size, all parameters."""
    return {
        "layers": {n: m.weight.numel() for n, m in weight_layers(model)},
        "params": sum(p.numel() for p in model.parameters()),
    }


@torch.no_grad()
def sparsity_stats(model: nn.Module, dense: dict[str, Any] | None = None,
                   masks: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Zeros among conv/linear weights (`sparsity`) and among all parameters (`sparsity_all`, the
    gRDA paper's measure), per layer (keyed by `layer_label`), and the counts behind them.

    Sizes come from `dense` (`param_counts` of the model before training) when given, so that
    weights removed by structured pruning count like zeros; by default, from `model` itself.
    """
    dense = dense or param_counts(model)
    masks = masks or {}  # a layer here counts its mask's kept entries, zero or not (Pruner.reported_masks)
    weight_nonzero = {n: int(m.weight.count_nonzero()) for n, m in weight_layers(model)}
    layer_nonzero = {n: int(masks[n].count_nonzero()) if n in masks else c for n, c in weight_nonzero.items()}
    labels = {n: layer_label(n, m) for n, m in weight_layers(model)}  # a layer removed keeps its path
    w_total = sum(dense["layers"].values())
    w_zero = w_total - sum(layer_nonzero.values())
    all_nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    all_nonzero += sum(layer_nonzero[n] - weight_nonzero[n] for n in masks if n in weight_nonzero)
    return {
        "sparsity": w_zero / max(w_total, 1),
        "sparsity_all": 1 - all_nonzero / max(dense["params"], 1),
        "layer_sparsity": {labels.get(n, n): (t - layer_nonzero.get(n, 0)) / t
                           for n, t in dense["layers"].items()},
        "nonzero_params": all_nonzero,
        "total_params": sum(p.numel() for p in model.parameters()),
        "params_dense": dense["params"],
    }


# ------------------------------------------------------------------------ multiply-accumulates


@torch.no_grad()
def macs(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> tuple[float, float]:
    """(dense, sparse) conv/linear multiply-accumulates of one forward pass of one example, from
    torch-pruning's per-layer op counter; sparse weights each layer's count by its density.

    Only conv/linear layers are counted, in both: they are the operations a zero weight removes.
    Batch norm, activations and pooling would stay in the sparse count of an unstructured model
    and understate its reduction; a model with channels removed counts its smaller layers."""
    was_training = model.training
    model.eval()
    example = torch.zeros((1, *input_shape), device=device)
    _, _, layer_macs, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    model.train(was_training)
    dense = sparse = 0.0
    for _, m in weight_layers(model):
        count = float(layer_macs.get(m, 0))
        dense += count
        sparse += count * float(m.weight.count_nonzero()) / m.weight.numel()
    return dense, sparse


# ---------------------------------------------------------------------------- training compute

TRAIN_PASSES = 3  # forward + backward (input and weight gradients) ~ 3x the forward MACs


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> dict[str, float]:
    """Forward multiply-accumulates of one example in each conv/linear layer, by module name."""
    was_training = model.training
    model.eval()
    example = torch.zeros((1, *input_shape), device=device)
    _, _, per_module, _ = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    model.train(was_training)
    return {n: float(per_module.get(m, 0)) for n, m in weight_layers(model)}


def step_macs(dense: float, layers: dict[str, float], densities: dict[str, float]) -> float:
    """Training MACs of one example in one step: 3x the forward MACs, each layer named in
    `densities` counted at that density of its dense MACs (`layers`), the rest dense."""
    forward = dense + sum(layers[n] * (d - 1.0) for n, d in densities.items())
    return TRAIN_PASSES * forward


def training_compute(train_macs: float, dense: float, budget_examples: int) -> dict[str, float]:
    """`train_macs` and its multiplier over one dense training run of the budget's examples."""
    dense_run = TRAIN_PASSES * dense * budget_examples
    multiplier = train_macs / dense_run if dense_run else 0.0
    return {"train_macs": train_macs, "train_compute_multiplier": multiplier}


# -------------------------------------------------------------------------------------- memory


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(
    model: nn.Module, optimizer: torch.optim.Optimizer, extra: Iterable[torch.Tensor] = ()
) -> int:
    """Exact bytes of parameters, gradients, optimizer state and pruner state: the memory
    comparison that holds on any machine."""
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    opt_state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return tensor_bytes(params) + tensor_bytes(grads) + tensor_bytes(opt_state) + tensor_bytes(extra)


class TensorMemory(TorchDispatchMode):
    """Bytes of live tensor storage while active, and their peak (`current`, `peak`).

    Counts the storages of `existing` (the state alive when it starts: parameters, gradients,
    optimizer and pruner state) and of every tensor an operation returns while it is active,
    forward and backward included; a storage counts until its last tracked tensor is freed. Used
    on CPU, where no allocator keeps a peak: it measures the training's own tensors, apart from
    the interpreter, the libraries and the data set (which process RSS lumps together). Tracking
    costs Python work per operation: use it over a few steps only."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch would wrap `__torch_dispatch__` in a guard that imports torch._dynamo on the first
        # tracked op (~1 s of a small run's start-up); around a compiled step: `CompiledTensorMemory`
        return False

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.current = self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage address -> [bytes, tracked tensors using it]
        self._tracked: dict[int, weakref.ref] = {}  # id(tensor) -> weak reference, to track each once
        for t in existing:
            self._track(t)

    def _track(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor):
            return
        ref = self._tracked.get(id(t))
        if ref is not None and ref() is t:
            return
        storage = t.untyped_storage()
        address = storage.data_ptr()
        if address == 0:  # empty
            return
        entry = self._storages.get(address)
        if entry is None:
            entry = self._storages[address] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        self._tracked[id(t)] = weakref.ref(t)
        weakref.finalize(t, self._release, address, id(t))

    def _release(self, address: int, key: int) -> None:
        self._tracked.pop(key, None)
        entry = self._storages.get(address)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._storages[address]
                self.current -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # torch's signature
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._track(t)
        return out


class CompiledTensorMemory(TensorMemory):
    """`TensorMemory` around a torch.compile'd step: torch's guard keeps dynamo from tracing the
    tracking itself."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return True

    __torch_dispatch__ = TensorMemory.__torch_dispatch__  # declared here: torch wraps it in the guard


def reset_peak_memory(device: torch.device) -> None:
    """Start peak-memory tracking now (so that importing torch or loading data is not counted)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> int:
    """CUDA: the allocator's max allocated bytes; CPU: the process's peak resident memory."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- provenance


def git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def git_dirty() -> bool | None:
    """Whether the harness's tracked files differ from its commit (None outside a git checkout):
    a result from a dirty tree may not be reproducible from `git_sha` alone."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                             capture_output=True, text=True, timeout=10, check=True)
        return bool(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(device: torch.device) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "torch_version": torch.__version__,
        **{f"{n.replace('-', '_')}_version": _version(n) for n in ("torchvision", "torch-pruning", "numpy")},
        "git_sha": git_sha(),
        "git_dirty": git_dirty(),
        "slurm_job_id": slurm_job_id(),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _version(distribution: str) -> str | None:
    """The installed version of a package that shapes a result, None if it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def slurm_job_id() -> str | None:
    """`ARRAYJOB_TASK` inside an array task, the job id inside a plain job, None outside SLURM."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID")
