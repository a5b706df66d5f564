"""Time `bench gather` on many synthetic run folders (target: 10,000 folders in <= 5 s).

    .venv/bin/python tests/perf_gather.py [N] [--keep DIR]

Writes N complete run folders (result.json + 60-epoch history.csv + config.json, as bench.run
leaves them) into a temporary folder, then times `results.gather` + `results.write` in this
process, and the whole `bench gather` command (Python start-up and imports included) as a
subprocess. Not collected by pytest (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_results import HISTORY_HEADER, fake_result

from bench import results


def populate(root: Path, n: int, epochs: int = 60) -> None:
    rows = "\n".join(f"{e},{45 * (e + 1)},{1 / (e + 1):.6f},0.9,{e / epochs:.6f},0.1,{e * 0.05:.3f}"
                     for e in range(epochs))
    history = f"{HISTORY_HEADER}\n{rows}\n"
    for i in range(n):
        pruner = ("dense", "grda", "magnitude")[i % 3]
        rec = fake_result(f"{pruner}-mlp-digits-s{i % 3}-{i:010x}", pruner=pruner, seed=i % 3,
                          top1=0.9 + (i % 7) / 100, sparsity=(i % 10) / 10)
        d = root / f"sweep{i % 4}" / rec["run_id"]
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"run_id": rec["run_id"]}))
        (d / "history.csv").write_text(history)
        (d / "result.json").write_text(json.dumps(rec, indent=2, sort_keys=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=10_000)
    ap.add_argument("--keep", help="write the folders here and keep them (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        t0 = time.perf_counter()
        populate(root / "runs", args.n)
        print(f"wrote {args.n} run folders in {time.perf_counter() - t0:.1f} s")
        for attempt in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            g = results.gather(root / "runs")
            t1 = time.perf_counter()
            results.write(g, root / "results.parquet")
            t2, c2 = time.perf_counter(), time.process_time()
            print(f"[{attempt}] gather: {t1 - t0:.2f} s ({len(g.runs)} runs, {len(g.history)} history rows), "
                  f"write parquet: {t2 - t1:.2f} s, total {t2 - t0:.2f} s wall, {c2 - c0:.2f} s CPU")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.cli", "gather", str(root / "runs"), "-o",
                        str(root / "cli.parquet")], check=True, capture_output=True)
        print(f"`bench gather` command, start-up and imports included: {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
