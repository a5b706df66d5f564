"""Measured speed-up of resnet20 pruned by the channel pruner and by an unstructured one.

    OMP_NUM_THREADS=1 .venv/bin/python tests/perf_speedup.py [--device cpu] [--steps 6] [--keep DIR]

Trains resnet20 on synthetic data for a few steps (the accuracy is beside the point: the speed of
the final model's shapes and zeros is) with `dense`, `channel` at 50/90% and `magnitude` at
50/90/98%, and prints what each run recorded (`bench.inference`): per backend the speed-up over
the dense reference at batch 1 and at the throughput batch, and the theoretical (MACs) one. What
it should show: the channel pruner's compact model is faster in proportion to its MACs; sparse
kernels lose at 50% and win only at high sparsity. Not collected by pytest (timings, not tests).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from bench.config import Budget, RunConfig
from bench.inference import BACKENDS, backend_key
from bench.run.job import run

CELLS = [("dense", {}), ("channel", {"sparsity": 0.5}), ("channel", {"sparsity": 0.9}),
         *(("magnitude", {"sparsity": s}) for s in (0.5, 0.9, 0.98))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=6, help="training steps per run (pruning at half)")
    ap.add_argument("--keep", default=None, help="keep the run folders here")
    args = ap.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="perf_speedup."))
    budget = Budget(epochs=1, max_steps=args.steps, batch_size=32, momentum=0.9)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    head = "| pruner | sparsity | theoretical | " + " | ".join(f"{b} b1 / b{{B}}" for b in BACKENDS)
    head += " | best (b{B}) |"
    lines = []
    for pruner, hp in CELLS:
        r = run(RunConfig(pruner, "resnet20", "synthetic", hp, budget, device=args.device), out)
        cells = []
        for b in BACKENDS:
            k = backend_key(b)
            status = r[f"speedup_{k}_status"]
            cells.append(f"{r[f'speedup_{k}_b1']:.2f}x / {r[f'speedup_{k}']:.2f}x" if status == "ok"
                         else status.replace("_", " "))
        lines.append(f"| {pruner} | {r['sparsity']:.0%} | {r['speedup_theoretical']:.2f}x | "
                     + " | ".join(cells) + f" | {r['speedup_best_backend']} {r['speedup_best']:.2f}x |")
        dense_ms = (f"dense {r['speedup_dense_ms_b1']:.2f} ms (b1), "
                    f"{r['speedup_dense_ms']:.0f} ms (b{r['speedup_batch']})")
        print(f"{r['run_id']}: {dense_ms}, reference {r['speedup_reference']}, "
              f"repeats {r['speedup_repeats']}, measured in {r['speedup_time_s']:.1f} s", flush=True)
    print()
    print(head.replace("{B}", str(r["speedup_batch"])))
    print("|" + "---|" * (head.count("|") - 1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
