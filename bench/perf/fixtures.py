"""Fixtures `bench perf` measures on: run folders shaped like `bench run`'s, for `bench gather`."""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.config import Budget, RunConfig
from bench.registry import PRUNERS
from bench.run.job import run
from bench.runs import FILES, RunDir
from bench.validate import check_config


def make_run_folders(root: Path, n: int, epochs: int = 60) -> None:
    """`n` run folders shaped like `bench run`'s (result.json, config.json, history.csv with
    `epochs` rows), copied from one real short run with varied pruner, hyperparameters, seed and
    metrics. A throwaway fixture: written plainly, since 3n fsyncs (bench.io) would dominate."""
    with tempfile.TemporaryDirectory() as tmp:
        template = run(check_config(RunConfig(pruner="grda", budget=Budget(epochs=1))), tmp)
        header = RunDir(Path(tmp), template["run_id"]).history.read_text().splitlines()[0].split(",")
    rng = random.Random(0)
    pruners = PRUNERS.names()

    def files(i: int) -> tuple[Path, dict[str, str]]:
        k = len(pruners)
        pruner, seed, setting = pruners[i % k], (i // k) % 5, i // (5 * k) % 4
        hparams = dataclasses.asdict(PRUNERS.get(pruner).Hparams())
        first_float = next((k for k, v in hparams.items() if isinstance(v, float)), None)
        if first_float:
            hparams[first_float] *= 1 + setting
        run_id = f"{pruner}-mlp-digits-s{seed}-{i:010x}"
        top1, sparsity = rng.uniform(0.8, 0.98), 0.0 if pruner == "dense" else rng.uniform(0.5, 0.99)
        record = {**template, "run_id": run_id, "config_hash": f"{i:064x}", "pruner": pruner, "seed": seed,
                  "hparams": hparams, "top1": top1, "top5": min(1.0, top1 + 0.01), "sparsity": sparsity,
                  "sparsity_all": sparsity * 0.99, "macs_sparse": template["macs_dense"] * (1 - sparsity),
                  "train_time_s": rng.uniform(3, 8), "step_time_ms": rng.uniform(0.5, 2)}
        rows = [",".join(header)] + [
            ",".join(str(v) for v in (e, (e + 1) * 45, rng.uniform(0.1, 2), top1, sparsity * e / epochs, 0.1,
                                      e * 0.1)[: len(header)])
            for e in range(epochs)
        ]
        return root / run_id, {
            FILES["result"]: json.dumps(record, indent=2, sort_keys=True),
            FILES["config"]: json.dumps({"run_id": run_id, "pruner": pruner, "seed": seed,
                                         "hparams": hparams}),
            FILES["history"]: "\n".join(rows) + "\n",
        }

    def write(item: tuple[Path, dict[str, str]]) -> None:
        folder, texts = item
        folder.mkdir(parents=True)
        for name, text in texts.items():
            (folder / name).write_text(text)

    with ThreadPoolExecutor(16) as pool:  # file creation is I/O-bound
        list(pool.map(write, (files(i) for i in range(n))))
