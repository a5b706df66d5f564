"""Rows of a gathered runs table for the board tests: what `bench gather` gives, with the columns
a board reads."""

from __future__ import annotations

from typing import Any

import pandas as pd

MIB = 2**20


def row(run_id: str, pruner: str, seed: int, top1: float | None, sparsity: float,
        hp: dict[str, Any] | None = None, *, dataset: str = "digits", model: str = "mlp", status: str = "ok",
        time: float = 10.0, memory: float = 100 * MIB, state: float = 1000.0,
        epochs: int = 60, val: float | None = None, recipe: str = "shared",
        loaded: bool = False, family: str = "sgd") -> dict[str, Any]:
    """One gathered row, with the columns the leaderboard reads; `hp`: the hyperparameters; `val`:
    validation top-1 (default: the test top-1)."""
    return {
        "run_id": run_id, "pruner": pruner, "model": model, "dataset": dataset, "seed": seed,
        "status": status,
        **{f"hparams.{k}": v for k, v in (hp or {}).items()},
        "top1": top1, "val_top1": top1 if val is None else val, "sparsity": sparsity, "macs_dense": 1000.0,
        "macs_sparse": 1000.0 * (1 - sparsity), "num_test": 360,
        "train_time_s": time, "peak_tensor_bytes": memory, "state_bytes": state, "loaded": loaded,
        "budget.epochs": epochs, "budget.batch_size": 32, "budget.lr": 0.1, "budget.lr_schedule": "constant",
        "budget.momentum": 0.0, "budget.val_fraction": 0.1, "budget.recipe": recipe,
        "git_sha": "0123456789abcdef", "device": "cpu (x86_64, 2 cores)",
        "torch_version": "2.14.1", "slurm_job_id": None, "optimizer_family": family,
    }


def old_row(*args: Any, **kw: Any) -> dict[str, Any]:
    """A row gathered from a result written before the validation split, recipes and MACs names."""
    r = row(*args, **kw)
    r["flops_dense"], r["flops_sparse"] = r.pop("macs_dense"), r.pop("macs_sparse")
    for key in ("val_top1", "num_test", "peak_tensor_bytes", "loaded", "budget.val_fraction",
                "budget.recipe", "optimizer_family"):
        del r[key]
    return r


def golden_runs() -> pd.DataFrame:
    """A fixed small results table: two sections, repeated seeds, a diverged and a failed run."""
    rows = [
        row("d0", "dense", 0, 0.970, 0.0, time=10.0, memory=100 * MIB),
        row("d1", "dense", 1, 0.960, 0.0, time=12.0, memory=120 * MIB),
        row("g0", "grda", 0, 0.965, 0.80, {"c": 0.01, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g1", "grda", 1, 0.955, 0.82, {"c": 0.01, "mu": 0.6}, time=13.0, memory=110 * MIB, state=2000.0),
        row("g2", "grda", 0, 0.950, 0.95, {"c": 0.02, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g3", "grda", 1, 0.940, 0.96, {"c": 0.02, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g4", "grda", 2, None, 0.50, {"c": 0.02, "mu": 0.6}, status="diverged"),
        row("m0", "magnitude", 0, 0.950, 0.90, {"sparsity": 0.9}),
        row("m1", "magnitude", 0, 0.900, 0.95, {"sparsity": 0.95}),
        row("m2", "magnitude", 1, None, 0.0, {"sparsity": 0.95}, status="failed"),
        old_row("i0", "grda", 0, 0.7324, 0.9159, {"c": 0.005, "mu": 0.55}, dataset="imagenet",
                model="resnet50", time=3600.0),
        old_row("i1", "dense", 0, 0.6871, 0.0, dataset="imagenet", model="resnet50", time=3000.0),
        old_row("i2", "grda", 0, 0.7314, 0.8728, {"c": 0.005, "mu": 0.51}, dataset="imagenet",
                model="resnet50", time=3600.0),
    ]
    return pd.DataFrame(rows)


def golden_published() -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": "imagenet", "model": "resnet50", "pruner": "grda", "setting": "c=0.005, mu=0.55",
         "sparsity": 0.9159, "top1": 0.7324, "source": "Chao et al. 2020", "published": True,
         "note": "sparsity over all parameters"},
        {"dataset": "cifar10", "model": "vgg16_nobn", "pruner": "dense", "setting": "SGD", "sparsity": 0.0,
         "top1": 0.9082, "source": "Chao et al. 2020", "published": True, "note": ""},
    ])
