"""`bench perf --startup`: what a user waits for before a small run trains, as whole processes.

Interleaved repeats of `python -c "import torch"` and of a 1-epoch digits `bench run` (dense MLP),
each a fresh interpreter; the ratio is paired by repeat (the median of per-repeat ratios), so the
load of a shared machine drifting between repeats cancels out. The run also reports which heavy
modules it imported (none of HEAVY is needed for a digits run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torchvision", "torch._dynamo", "torch._inductor", "sklearn", "pandas", "scipy")
_PROBE = "import sys; from bench.cli import main; main(sys.argv[1:]); " \
         f"print('heavy:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"


def run_args(pruner: str = "dense") -> list[str]:
    """The `bench` arguments of a 1-epoch digits run of `pruner` (a new run each time: --force)."""
    return ["run", "--pruner", pruner, "--model", "mlp", "--dataset", "digits", "--epochs", "1", "--quiet",
            "--force"]


def _wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def heavy_imports(out: str, pruner: str = "dense") -> list[str]:
    """The HEAVY modules a 1-epoch digits `bench run` of `pruner` imports, in a fresh interpreter."""
    cmd = [sys.executable, "-c", _PROBE, *run_args(pruner), "--out", out]
    out_lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    listed = next(line for line in reversed(out_lines) if line.startswith("heavy:"))
    return [m for m in listed.removeprefix("heavy:").split(",") if m]


def measure_startup(repeats: int = 7) -> dict[str, object]:
    """Seconds (medians) of `import torch` and of the digits run as processes, and their ratio."""
    with tempfile.TemporaryDirectory() as out:
        run = [sys.executable, "-m", "bench.cli", *run_args(), "--out", out]
        torch_only = [sys.executable, "-c", "import torch"]
        _wall(run)  # warm-up: the file cache, the digits split in the user cache
        pairs = []
        for r in range(repeats):  # alternate which goes first
            if r % 2:
                t_run, t_torch = _wall(run), _wall(torch_only)
            else:
                t_torch, t_run = _wall(torch_only), _wall(run)
            pairs.append((t_run, t_torch))
        heavy = heavy_imports(out)
    return {
        "repeats": repeats,
        "bench_run_s": statistics.median(a for a, _ in pairs),
        "import_torch_s": statistics.median(b for _, b in pairs),
        "ratio": statistics.median(a / b for a, b in pairs),
        "heavy_imports": heavy,
    }


def cmd_startup(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    m = measure_startup(args.repeats)
    print(f"1-epoch digits `bench run` {m['bench_run_s']:.2f} s, `python -c \"import torch\"` "
          f"{m['import_torch_s']:.2f} s (medians of {m['repeats']} interleaved repeats): "
          f"ratio {m['ratio']:.2f} (target <= 1.5)")
    print(f"heavy modules the run imported: {', '.join(m['heavy_imports']) or 'none'} "  # type: ignore[arg-type]
          f"(of {', '.join(HEAVY)})")
    return 0
