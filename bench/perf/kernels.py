"""Kernel table: at which sparsity do torch's sparse matrix products beat dense on this machine?

Standard layer shapes as matrix products W (out x in*k*k) @ X (in*k*k x columns): ResNet-50's
3x3 convolutions of each stage and a 1x1 expansion (columns = output pixels x images, im2col), and
a transformer's 768 -> 3072 linear layer (columns = tokens). Each at batch 1 and a large batch,
from 50% to 99% sparsity:

- `dense`: torch.mm on the dense weight, zeros included (what a masked model runs);
- `csr`: unstructured zeros (uniformly random), the weight in CSR;
- `bsr`: the same sparsity in whole 16x16 blocks (zeros structured as BSR wants), in BSR;
- `2:4` (CUDA only; row at 50%): the weight 2:4 sparse in torch's semi-structured form, float16,
  against dense float16.

Times are interleaved medians (`bench.inference.interleaved_timings`); a speed-up is dense time
over sparse time (median of the ratios within a round). The crossover of a shape and batch is
the lowest sparsity from which on every higher one the sparse format beats dense. `bench perf
--kernels` prints the table (`cmd_kernels`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bench.inference import interleaved_timings
from bench.run.distributed import resolve_device


@dataclass(frozen=True)
class Shape:
    name: str
    out: int  # weight rows
    inner: int  # weight columns (in channels x kernel area)
    columns: int  # product columns per example (output pixels, or 1 token)
    large_batch: int  # examples in the large batch


SHAPES = (
    Shape("resnet50 conv2 3x3 64>64 @56x56", 64, 64 * 9, 56 * 56, 16),
    Shape("resnet50 conv3 3x3 128>128 @28x28", 128, 128 * 9, 28 * 28, 16),
    Shape("resnet50 conv4 3x3 256>256 @14x14", 256, 256 * 9, 14 * 14, 16),
    Shape("resnet50 conv5 3x3 512>512 @7x7", 512, 512 * 9, 7 * 7, 16),
    Shape("resnet50 conv4 1x1 256>1024 @14x14", 1024, 256, 14 * 14, 16),
    Shape("transformer linear 768>3072", 3072, 768, 1, 256),
)
QUICK_SHAPES = (Shape("tiny conv 3x3 8>16 @4x4", 16, 72, 16, 2), Shape("tiny linear 32>64", 64, 32, 1, 4))
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
BLOCK = 16
FORMATS = ("csr", "bsr", "2:4")


def _unstructured(out: int, inner: int, sparsity: float, g: torch.Generator) -> torch.Tensor:
    return torch.randn(out, inner, generator=g) * (torch.rand(out, inner, generator=g) >= sparsity)


def _blocks(out: int, inner: int, sparsity: float, g: torch.Generator) -> torch.Tensor | None:
    """`sparsity` of the weight zero in whole BLOCK x BLOCK blocks (None: shape not divisible)."""
    if out % BLOCK or inner % BLOCK:
        return None
    nb = (out // BLOCK) * (inner // BLOCK)
    keep = torch.zeros(nb, dtype=torch.bool)
    keep[torch.randperm(nb, generator=g)[: max(1, round(nb * (1 - sparsity)))]] = True
    mask = keep.view(out // BLOCK, inner // BLOCK).repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)
    return torch.randn(out, inner, generator=g) * mask


def _two_four(out: int, inner: int, g: torch.Generator) -> torch.Tensor:
    w = torch.randn(out, inner // 4, 4, generator=g)
    w[..., torch.randperm(4, generator=g)[:2]] = 0  # the same two of every four: still 2:4
    return w.view(out, inner)


@torch.no_grad()
def kernel_table(
    device: torch.device | str = "cpu", shapes: tuple[Shape, ...] = SHAPES,
    sparsities: tuple[float, ...] = SPARSITIES, repeats: int = 7, budget_s: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per (shape, batch, sparsity): median ms of dense and of each format that applies
    (None otherwise), and the speed-ups over dense."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    rows = []
    for shape in shapes:
        for batch in (1, shape.large_batch):
            x = torch.randn(shape.inner, shape.columns * batch, generator=g).to(device)
            for sparsity in sparsities:
                w = _unstructured(shape.out, shape.inner, sparsity, g).to(device)
                blocks = _blocks(shape.out, shape.inner, sparsity, g)
                with warnings.catch_warnings():  # "sparse CSR support is in beta"
                    warnings.simplefilter("ignore", UserWarning)
                    calls = {"dense": lambda w=w, x=x: torch.mm(w, x),
                             "csr": lambda s=w.to_sparse_csr(), x=x: torch.mm(s, x)}
                    if blocks is not None:
                        bsr = blocks.to(device).to_sparse_bsr((BLOCK, BLOCK))
                        calls["bsr"] = lambda s=bsr, x=x: torch.mm(s, x)
                    t = interleaved_timings(calls, device, repeats, budget_s)
                row: dict[str, Any] = {"shape": shape.name, "batch": batch, "sparsity": sparsity,
                                       "dense_ms": t.ms("dense")}
                for fmt in FORMATS:
                    row[f"{fmt}_ms"] = t.ms(fmt) if fmt in calls else None
                    row[f"{fmt}_x"] = t.speedup(fmt) if fmt in calls else None
                if sparsity == 0.5 and device.type == "cuda":
                    row.update(_two_four_row(shape, x, g, device, repeats, budget_s))
                rows.append(row)
    return rows


def _two_four_row(shape: Shape, x: torch.Tensor, g: torch.Generator, device: torch.device,
                  repeats: int, budget_s: float) -> dict[str, Any]:
    """2:4 semi-structured (float16) against dense float16, F.linear as the kernels want it."""
    try:
        w = _two_four(shape.out, shape.inner, g).to(device, torch.float16)
        xt = x.t().contiguous().to(torch.float16)  # (columns, inner)
        semi = torch.sparse.to_sparse_semi_structured(w)
        calls = {"dense": lambda: F.linear(xt, w), "2:4": lambda: F.linear(xt, semi)}
        t = interleaved_timings(calls, device, repeats, budget_s)
    except Exception as e:  # unsupported shape or GPU: the table says so rather than failing
        return {"2:4_ms": None, "2:4_x": None, "2:4_error": f"{type(e).__name__}: {e}"[:200]}
    return {"2:4_ms": t.ms("2:4"), "2:4_x": t.speedup("2:4"), "2:4_dense_fp16_ms": t.ms("dense")}


def crossovers(rows: list[dict[str, Any]], fmt: str = "csr") -> dict[tuple[str, int], float | None]:
    """Per (shape, batch): the lowest sparsity from which `fmt` beats dense at every higher
    sparsity measured (None: not even at the highest)."""
    out: dict[tuple[str, int], float | None] = {}
    for key in dict.fromkeys((r["shape"], r["batch"]) for r in rows):
        points = sorted((r["sparsity"], r[f"{fmt}_x"]) for r in rows if (r["shape"], r["batch"]) == key)
        best = None
        for sparsity, x in reversed(points):
            if x is None or x <= 1:
                break
            best = sparsity
        out[key] = best
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: the table, then the crossover sparsity per shape and batch for CSR and BSR."""
    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.3g}"

    def x(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}x"

    has_24 = any(r.get("2:4_ms") is not None for r in rows)
    head = "| layer | batch | sparsity | dense ms | CSR ms | CSR | BSR16 ms | BSR16 |"
    head += " 2:4 fp16 |" if has_24 else ""
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['shape']} | {r['batch']} | {r['sparsity']:.0%} | {ms(r['dense_ms'])} | "
                f"{ms(r['csr_ms'])} | {x(r['csr_x'])} | {ms(r['bsr_ms'])} | {x(r['bsr_x'])} |")
        lines.append(line + (f" {x(r.get('2:4_x'))} |" if has_24 else ""))
    csr, bsr = crossovers(rows, "csr"), crossovers(rows, "bsr")
    lines += ["", "Crossover: the sparsity from which the sparse format beats dense (at every higher one):",
              "",
              "| layer | batch | CSR (unstructured) | BSR16 (16x16 blocks) |", "|---|---|---|---|"]
    for (shape, batch), c in csr.items():
        b = bsr[(shape, batch)]
        lines.append(f"| {shape} | {batch} | {'never' if c is None else f'{c:.0%}'} | "
                     f"{'never' if b is None else f'{b:.0%}'} |")
    return "\n".join(lines)


def cmd_kernels(args: argparse.Namespace) -> int:
    """`bench perf --kernels`: print the markdown table (the hook the perf command calls)."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = resolve_device(getattr(args, "device", "auto") or "auto")
    quick = getattr(args, "quick", False)
    rows = kernel_table(device, QUICK_SHAPES if quick else SHAPES, (0.5, 0.9) if quick else SPARSITIES,
                        repeats=3 if quick else 7, budget_s=0.05 if quick else 1.0)
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}",
          file=sys.stderr)
    print(format_table(rows))
    return 0
