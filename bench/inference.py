"""Inference backends and the measured speed-up of one trained model over its dense form.

A pruned model is only faster if something executes the zeros away. Each backend turns the final
(evaluated) model into a model that torch runs in a different way:

- `dense`: the reference. The model as trained, or, when the pruner changed the architecture
  (structured pruning removes channels during training), the unpruned architecture, timed only;
- `compact`: all-zero channels physically removed (`bench.compact`, torch-pruning): a smaller
  dense model;
- `sparse`: every conv/linear layer at most `MAX_DENSITY` dense holds its weight in CSR, or in BSR
  where blocks pay (the non-zero blocks are at least half full); convolutions run as matrix
  products over unfolded inputs (im2col), the way torch can execute a sparse convolution;
- `2:4`: layers whose weights are 2:4 sparse run on PyTorch's semi-structured kernels
  (cuSPARSELt / CUTLASS), on CUDA only; elsewhere the backend is recorded as not applicable,
  with the reason. The kernels compute in half precision (float16), so this backend's model is
  the final model in float16, checked with a half-precision tolerance and timed against the
  dense model in float16 (a float32 reference would credit 2:4 with the speed of half precision).

`measure_speedup` first checks every backend's logits on the test set against the trained
model's (same top-1 accuracy, max |difference| within a tolerance): a backend that computes
something else is refused and never timed. Then it times the forward pass at batch 1 and at a
throughput batch: warm-up, an inner loop long enough for the clock, device synchronization
around each sample, backends interleaved (rotated each repeat, so drift and other processes hit
all of them alike); latencies are medians, speed-ups medians of the ratios within a round.
The fields it returns are plain JSON values that go into `result.json` as they are: the
`speedup_*` fields of the run record (`bench.record.RunRecord` documents them).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from statistics import median
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from bench import metrics, runs
from bench.compact import remove_zero_channels
from bench.runs import BackendStatus

MAX_DENSITY = 0.5  # a layer denser than this stays dense in `sparse` (see `bench perf --kernels`)
BSR_BLOCKS = (16, 8, 4)  # tried largest first; BSR when its stored entries are <= 2x the non-zeros
RTOL = 1e-3  # logits may differ by RTOL * max(1, max |logit|): float sums in another order
# float16 (10-bit mantissa) rounds each product and activation to ~5e-4 relative; over a deep
# network's layers that adds up to about 1e-2 of the largest logit, and near-ties may flip top-1
HALF_RTOL = 2e-2
HALF_TOP1_SLACK = 2e-3  # fraction of the checked examples whose top-1 may differ in float16
# cuSPARSELt / CUTLASS float16: the sparse operand's rows a multiple of 32, columns of 64
SEMI_ROWS, SEMI_COLS = 32, 64
CHECK_BYTES = 1 << 30  # test examples held for the output check: at most this many input bytes
SAMPLE_S = 2e-3  # a timing sample repeats the call until it lasts this long (timer resolution)


class NotApplicable(Exception):
    """A backend that does not apply to this model or device; the message says why."""


class Backend(Protocol):
    def __call__(self, model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
        """The model executed this way (eval mode; may reuse `model`, which is a copy); raises
        NotApplicable. `example`: one input on the device; `reference`: what `dense` times (the
        unpruned architecture, or the trained model itself)."""
        ...


# ------------------------------------------------------------------------------------ backends


class SparseMatmul(nn.Module):
    """A conv/linear layer as a sparse-weight matrix product: out = W @ X (+ bias).

    `weight` is (out, in * kh * kw) in CSR, BSR or 2:4 semi-structured form. For a convolution X
    holds the unfolded input patches (im2col), so the product is the convolution; groups must be 1.
    Unfolding copies the input kh*kw times, which alone costs more than torch's dense convolution
    (oneDNN / cuDNN never materialize it): sparse convolutions pay only when the product saved
    outweighs that copy, at high sparsity and wide layers (`bench perf --kernels` times products).
    """

    def __init__(
        self, layer: nn.Conv2d | nn.Linear, weight: torch.Tensor, semi_structured: bool = False,
    ) -> None:
        """`semi_structured`: `weight` is the (out, kh * kw * in) matrix of `nm_matrix` (columns
        kernel position first), used as F.linear's weight; else (out, in * kh * kw), CSR/BSR."""
        super().__init__()
        self.weight = weight  # a plain attribute: sparse layouts are not parameters to train
        self.bias = None if layer.bias is None else layer.bias.detach().clone()
        self.semi = semi_structured
        self.conv = None
        if isinstance(layer, nn.Conv2d):
            self.conv = dict(kernel_size=layer.kernel_size, dilation=layer.dilation,
                             padding=layer.padding, stride=layer.stride)
            self.out_channels = layer.out_channels

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, in) -> (rows, out)."""
        if self.semi:  # semi-structured kernels take the sparse operand as F.linear's weight
            return F.linear(x, self.weight)
        return torch.mm(self.weight, x.t().contiguous()).t()  # CSR/BSR @ dense: (out, rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            out = self._matmul(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
            return out if self.bias is None else out + self.bias
        n, _, h, w = x.shape
        kh, kw = self.conv["kernel_size"]
        (sh, sw), (ph, pw), (dh, dw) = self.conv["stride"], self.conv["padding"], self.conv["dilation"]
        oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        cols = F.unfold(x, **self.conv)  # (n, in*kh*kw, oh*ow)
        if self.semi:  # rows-major product: (n*oh*ow, kh*kw*in) -> (n*oh*ow, out)
            cols = cols.view(n, -1, kh * kw, oh * ow).transpose(1, 2)  # kernel position first, as nm_matrix
            out = self._matmul(cols.reshape(n, -1, oh * ow).transpose(1, 2).reshape(n * oh * ow, -1))
            out = out.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2).contiguous()
        else:  # one W @ cols per image: no transposed copies of the (large) unfolded input
            out = torch.stack([torch.mm(self.weight, c) for c in cols]).view(n, self.out_channels, oh, ow)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def _matrix(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _convertible(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros" \
        and not isinstance(layer.padding, str)


def sparse_format(w: torch.Tensor) -> torch.Tensor:
    """`w` (2-D) in BSR with the largest block whose stored entries are at most twice the
    non-zeros (blocks pay: structured zeros), else in CSR."""
    nnz = int(w.count_nonzero())
    for b in BSR_BLOCKS:
        if w.shape[0] % b or w.shape[1] % b:
            continue
        blocks = w.reshape(w.shape[0] // b, b, w.shape[1] // b, b).abs().sum((1, 3)).count_nonzero()
        if int(blocks) * b * b <= 2 * nnz:
            return w.to_sparse_bsr((b, b))
    return w.to_sparse_csr()


def _replace(model: nn.Module, convert: Callable[[str, nn.Module], nn.Module | None]) -> list[str]:
    """Replace in place every module for which `convert(name, module)` gives a new one."""
    done = []
    for name, module in list(model.named_modules()):
        new = convert(name, module)
        if new is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
            done.append(name)
    return done


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dense_backend(model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
    return model.eval()


def compact_backend(model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
    """Smaller than the reference: its all-zero channels removed, or already removed in training."""
    compact = remove_zero_channels(model.eval(), example, check=False)  # checked with the others
    if _params(compact) == _params(reference):
        raise NotApplicable("no all-zero channel to remove")
    return compact.eval()


def sparse_backend(model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
    sparse = model.eval()  # measure_speedup hands every backend its own copy
    formats: dict[str, int] = {}

    def convert(name: str, m: nn.Module) -> nn.Module | None:
        if not _convertible(m):
            return None
        w = _matrix(m)
        if int(w.count_nonzero()) > MAX_DENSITY * w.numel():
            return None
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            s = sparse_format(w)
        key = "csr" if s.layout == torch.sparse_csr else f"bsr{s.values().shape[-1]}"
        formats[key] = formats.get(key, 0) + 1
        return SparseMatmul(m, s)

    if not _replace(sparse, convert):
        raise NotApplicable(f"no conv/linear layer is at most {MAX_DENSITY:.0%} dense")
    sparse.sparse_formats = ",".join(f"{k}:{v}" for k, v in sorted(formats.items()))
    return sparse


def nm_matrix(layer: nn.Conv2d | nn.Linear) -> torch.Tensor:
    """The weight as an (out, reduction) matrix grouped the way the `nm` pruner groups it: for a
    convolution, input channels per kernel position ((out, kh, kw, in) flattened), so that a 3x3
    convolution pruned 2:4 has 2:4 rows."""
    w = layer.weight.detach()
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w


def is_2_4(w: torch.Tensor) -> bool:
    """Every group of 4 consecutive inputs of every output row has at most 2 non-zeros."""
    return w.shape[1] % 4 == 0 and bool((w.reshape(w.shape[0], -1, 4).count_nonzero(-1) <= 2).all())


class HalfPrecision(nn.Module):
    """A float16 model behind float32 inputs and outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def semi_structured_backend(model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
    device = example.device
    if device.type != "cuda":
        raise NotApplicable(
            "2:4 semi-structured kernels (torch.sparse.to_sparse_semi_structured: cuSPARSELt / "
            f"CUTLASS) run only on CUDA GPUs of compute capability >= 8.0; this device is {device.type}"
        )
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        raise NotApplicable(f"2:4 kernels need compute capability >= 8.0; this GPU has {major}.{minor}")
    semi = model.eval().half()  # the semi-structured kernels have no float32 path in cuSPARSELt
    skipped: list[str] = []

    def convert(name: str, m: nn.Module) -> nn.Module | None:
        if not qualifies_2_4(m):
            if _convertible(m):
                skipped.append(name)
            return None
        w = nm_matrix(m).contiguous()
        return SparseMatmul(m, torch.sparse.to_sparse_semi_structured(w), semi_structured=True)

    if not _replace(semi, convert):
        raise NotApplicable(f"no conv/linear weight is 2:4 sparse (grouped as `nm` groups it) with "
                            f"{SEMI_ROWS}k outputs and {SEMI_COLS}k inputs (not: {', '.join(skipped[:3])}"
                            f"{', ...' if len(skipped) > 3 else ''})")
    half = HalfPrecision(semi)
    # checked with float16's tolerance; timed against the dense model in float16
    half.tolerance = (HALF_RTOL, HALF_TOP1_SLACK)
    half.timing_reference = HalfPrecision(copy.deepcopy(reference).eval())
    half.sparse_formats = "float16, against the dense model in float16"
    return half


def qualifies_2_4(layer: nn.Module) -> bool:
    """A conv/linear layer the 2:4 kernels can run: its `nm_matrix` is 2:4 sparse and of a shape
    the float16 kernels take."""
    if not _convertible(layer):
        return False
    w = nm_matrix(layer)  # type: ignore[arg-type]
    return is_2_4(w) and w.shape[0] % SEMI_ROWS == 0 and w.shape[1] % SEMI_COLS == 0


BACKENDS: dict[str, Backend] = {  # by display name (runs.Backend), dense first
    runs.Backend.DENSE.value: dense_backend,
    runs.Backend.COMPACT.value: compact_backend,
    runs.Backend.SPARSE.value: sparse_backend,
    runs.Backend.SEMI_STRUCTURED.value: semi_structured_backend,
}


# ------------------------------------------------------------------------------------- fields

# the fields this returns are the `speedup_*` fields of bench.record.RunRecord; {b} is a backend's
# key there (`BACKEND_KEYS`)
BACKEND_KEYS = {b.value: b.key for b in runs.Backend}


def backend_key(name: str) -> str:
    """A backend's name in field names (`2:4` -> `2to4`)."""
    return BACKEND_KEYS.get(name, name.replace(":", "to"))


# ----------------------------------------------------------------------------------- measuring


class TestData(Protocol):
    input_shape: tuple[int, ...]

    def test_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """No TF32 while checking and timing: every backend computes in true float32 (the sparse
    kernels do), so outputs compare tightly and times compare like for like."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _logits(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([model(x) for x in batches])


@dataclass(frozen=True)
class Timings:
    """Interleaved timing samples: `samples[name][r]` is a call's seconds in round r."""

    samples: dict[str, list[float]]

    @property
    def repeats(self) -> int:
        return len(next(iter(self.samples.values())))

    def ms(self, name: str) -> float:
        """Median milliseconds per call."""
        return median(self.samples[name]) * 1e3

    def speedup(self, name: str, reference: str = runs.Backend.DENSE.value) -> float:
        """Median over rounds of reference time / `name`'s time in the same round: a burst of
        load from other processes slows both sides of a pair alike."""
        return median(a / b for a, b in zip(self.samples[reference], self.samples[name], strict=True))


def interleaved_timings(
    calls: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, budget_s: float,
    min_repeats: int = 3,
) -> Timings:
    """Time each of `calls` interleaved, `repeats` rounds.

    Each call is warmed up twice; a sample loops it until it lasts `SAMPLE_S` and is bracketed
    by device synchronization. Repeats shrink (to no fewer than `min_repeats`) to stay within
    `budget_s`; the order rotates every round.
    """
    inner, per_round = {}, 0.0
    for name, call in calls.items():
        call()
        metrics.synchronize(device)
        t0 = time.perf_counter()
        call()
        metrics.synchronize(device)
        once = max(time.perf_counter() - t0, 1e-7)
        inner[name] = max(1, math.ceil(SAMPLE_S / once))
        per_round += once * inner[name]
    repeats = max(min_repeats, min(repeats, int(budget_s / max(per_round, 1e-9))))
    names = list(calls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            call, k = calls[name], inner[name]
            metrics.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(k):
                call()
            metrics.synchronize(device)
            samples[name].append((time.perf_counter() - t0) / k)
    return Timings(samples)


def unpruned_reference(model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module | None:
    """The unpruned architecture (`build()`) if `model`'s parameter shapes differ from it (the
    pruner removed channels during training), else None: `model` itself is the reference."""
    fresh = build()
    shapes = {k: v.shape for k, v in fresh.state_dict().items()}
    if shapes == {k: v.shape for k, v in model.state_dict().items()}:
        return None
    return fresh


@torch.no_grad()
def measure_speedup(
    model: nn.Module,
    data: TestData,
    device: torch.device | str,
    *,
    dense_model: nn.Module | None = None,
    flops: tuple[float, float] | None = None,
    batch_size: int = 256,
    repeats: int = 9,
    budget_s: float = 2.0,
    max_check_examples: int = 10_000,
    rtol: float = RTOL,
    backends: Mapping[str, Backend] | None = None,
) -> dict[str, Any]:
    """The measured speed-up of `model` (the trained, evaluated model) per backend, as result fields.

    `data.test_batches` gives the examples for the output check (up to `max_check_examples`) and
    for timing (batch 1 and `batch_size`). `dense_model`: the unpruned architecture to time as the
    reference when `model` was physically shrunk during training (see `unpruned_reference`).
    `flops`: (dense MACs, remaining MACs) if already counted. `budget_s`: the timing budget per
    batch size; repeats shrink to stay within it (3 at least). `backends`: name -> builder,
    default `BACKENDS`; `dense` must be first. `model` is not modified.
    """
    started = time.perf_counter()
    device = torch.device(device)
    backends = dict(BACKENDS if backends is None else backends)
    if next(iter(backends)) != runs.Backend.DENSE:
        raise ValueError("measure_speedup: the first backend must be 'dense' (the reference)")
    model = copy.deepcopy(model).to(device).eval()
    example_bytes = 4 * math.prod(data.input_shape)
    limit = min(max_check_examples, max(batch_size, CHECK_BYTES // example_bytes))
    check: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    n = 0
    for x, y in data.test_batches(min(batch_size, limit)):
        x, y = x[: limit - n].to(device), y[: limit - n].to(device)
        check.append(x)
        labels.append(y)
        n += len(y)
        if n >= limit:
            break
    y_all = torch.cat(labels)
    first = torch.cat(check[: math.ceil(batch_size / len(check[0]))])[:batch_size]
    reps = math.ceil(batch_size / len(first))  # a test set smaller than the batch: repeated
    inputs = {"b1": first[:1], "batch": first.repeat(reps, *[1] * (first.dim() - 1))[:batch_size]}
    if flops is None:
        dense_flops = metrics.macs(dense_model or model, tuple(data.input_shape), device)[0]
        flops = (dense_flops, metrics.macs(model, tuple(data.input_shape), device)[1])

    fields: dict[str, Any] = {
        "speedup_device": str(device),
        "speedup_threads": torch.get_num_threads(),
        "speedup_batch": batch_size,
        "speedup_reference": "trained" if dense_model is None else "unpruned",
        "speedup_check_examples": len(y_all),
        "speedup_theoretical": flops[0] / flops[1] if flops[1] > 0 else None,
    }
    runnable: dict[str, nn.Module] = {}
    reference = model if dense_model is None else copy.deepcopy(dense_model).to(device).eval()
    with _full_precision():
        ref = _logits(model, check)
        correct = int((ref.argmax(1) == y_all).sum())
        scale = max(1.0, float(ref.abs().max()))
        for name, build in backends.items():
            key = backend_key(name)
            status, reason, diff = BackendStatus.OK, None, None
            try:
                if name == runs.Backend.DENSE and dense_model is not None:
                    built = reference
                    reason = "unpruned architecture (timed only; the outputs are the trained model's)"
                else:
                    built = build(copy.deepcopy(model), inputs["b1"], reference)
                    out = _logits(built, check)
                    diff = float((out - ref).abs().max()) if out.shape == ref.shape else math.inf
                    agree = int((out.argmax(1) == y_all).sum()) if out.shape == ref.shape else -1
                    reason = getattr(built, "sparse_formats", None)
                    b_rtol, slack = getattr(built, "tolerance", (rtol, 0.0))  # float16: looser
                    tol = b_rtol * scale
                    if diff > tol or abs(agree - correct) > slack * len(y_all):
                        status = BackendStatus.REFUSED
                        reason = (f"outputs differ from the trained model's: max |logit difference| "
                                  f"{diff:.3g} (tolerance {tol:.3g}), top-1 {agree}/{len(y_all)} vs "
                                  f"{correct}/{len(y_all)}")
            except NotApplicable as e:
                status, reason = BackendStatus.NOT_APPLICABLE, str(e)
            except Exception as e:  # a backend that cannot run this model is a result, not a crash
                status, reason = BackendStatus.FAILED, f"{type(e).__name__}: {e}"
            if status == BackendStatus.OK:
                runnable[name] = built
            elif name == runs.Backend.DENSE:
                raise RuntimeError(f"measure_speedup: the dense reference did not run: {reason}")
            fields.update({f"speedup_{key}_status": status.value, f"speedup_{key}_reason": reason,
                           f"speedup_{key}_max_abs_diff": diff})

        used = repeats
        for batch, suffix in (("b1", "_b1"), ("batch", "")):
            x = inputs[batch]
            calls = {name: (lambda m=m, x=x: m(x)) for name, m in runnable.items()}
            # a backend in another precision is timed against the dense model in that precision
            own = {n: f"{n} reference" for n, m in runnable.items() if hasattr(m, "timing_reference")}
            calls.update({own[name]: (lambda m=runnable[name].timing_reference, x=x: m(x)) for name in own})
            t = interleaved_timings(calls, device, repeats, budget_s)
            used = min(used, t.repeats)
            ratios = {name: t.speedup(name, own.get(name, runs.Backend.DENSE.value)) for name in runnable}
            for name in backends:
                key = backend_key(name)
                fields[f"speedup_{key}_ms{suffix}"] = t.ms(name) if name in runnable else None
                fields[f"speedup_{key}{suffix}"] = ratios.get(name)
            best = max(ratios, key=ratios.__getitem__)
            fields[f"speedup_best{suffix}"] = ratios[best]
            fields[f"speedup_best_backend{suffix}"] = best
    fields["speedup_repeats"] = used
    fields["speedup_time_s"] = time.perf_counter() - started
    return fields


def measure_trained(
    final: nn.Module, data: TestData, device: torch.device | str, build_unpruned: Callable[[], nn.Module],
    flops: tuple[float, float] | None = None, **options: Any,
) -> dict[str, Any]:
    """`measure_speedup` of a run's final model: timed against the unpruned architecture
    (`build_unpruned()`, on the CPU) when the pruner shrank the model during training. The global
    RNG is left as it was (building a model draws initial weights)."""
    with torch.random.fork_rng(devices=[]):
        reference = unpruned_reference(final, build_unpruned)
    return measure_speedup(final, data, device, dense_model=reference, flops=flops, **options)
