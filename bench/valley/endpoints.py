"""The two ends of a valley: finished runs loaded as models in the dense model's parameter space,
and the choice of runs (a folder, a selector, or the dense run of A's seed and budget)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.compare import select
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.io import read_json
from bench.runs import RunDir, RunStatus

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.data import Data


@dataclass
class Endpoint:
    """One finished run: its folder, config, result record and final model in the dense model's
    parameter space (None when that does not apply; `note` says why)."""

    run_dir: Path
    config: RunConfig
    result: dict[str, Any]
    model: nn.Module | None = None
    note: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.result.get("run_id") or self.run_dir.name)


def read_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """A finished run folder's config and result; ConfigError unless it is one with a checkpoint."""
    run_dir, rd = Path(run_dir), RunDir.at(run_dir)
    result = read_json(rd.result)
    if not isinstance(result, dict) or not rd.config.is_file():
        raise ConfigError(f"{run_dir}: no readable config.json and result.json; is it a run folder "
                          "(runs/<run_id>)?")
    if result.get("status") != RunStatus.OK:
        raise ConfigError(f"{run_dir}: the run's status is {result.get('status')!r}; only finished (ok) runs")
    if not rd.checkpoint.is_file():
        raise ConfigError(f"{run_dir}: no checkpoint.pt, so no final weights")
    return read_config(run_dir), result


def load_data(config: RunConfig, device: torch.device) -> Data:
    """The run's data set and validation split, without augmentation (the loss is measured on the
    training examples as they are)."""
    from bench.registry import DATASETS, MODELS

    info = MODELS.get(config.model)
    data = DATASETS.get(config.dataset).load(config.data_dir or "data", device, False, info.input_shapes[0],
                                             (info.classes or (10,))[0])
    return data.holdout(config.budget.val_fraction)


def load_final_model(run_dir: Path, config: RunConfig, data: Data) -> nn.Module:
    """The run's final model as it was evaluated (the pruner's `finalize`: masks applied), eval mode,
    on the run's device (`config.device`). The one place that reads a checkpoint."""
    from bench.run.checkpoint import load_built

    return load_built(run_dir, config.device, data=data)[1]


def load_endpoint(run_dir: str | Path, data: Data | None = None,
                  device: torch.device | None = None) -> tuple[Endpoint, Data]:
    """A run's `Endpoint`, its model loaded into a fresh dense model (architecture differs: `note`)."""
    from bench.registry import MODELS
    from bench.run.distributed import resolve_device

    run_dir = Path(run_dir)
    config, result = read_run(run_dir)
    device = device or resolve_device("cpu")
    data = data or load_data(config, device)
    final = load_final_model(run_dir, config, data)
    dense = MODELS.get(config.model).build(data.num_classes).to(device)
    mine, want = final.state_dict(), dense.state_dict()

    def shape(state: dict[str, Any], key: str) -> str:
        return "x".join(map(str, state[key].shape)) if key in state else "absent"

    differ = [k for k in {**want, **mine} if shape(mine, k) != shape(want, k)]
    if differ:
        k = differ[0]
        return Endpoint(run_dir, config, result, None, f"not applicable: {config.pruner} changes the "
                        f"architecture ({k}: {shape(mine, k)}, dense {shape(want, k)})"), data
    dense.load_state_dict(mine)
    return Endpoint(run_dir, config, result, dense.eval()), data


def data_order_note(a: Endpoint, b: Endpoint) -> str | None:
    """Why A and B did not see the same mini-batches in the same order (None: they did)."""
    from bench.registry import PRUNERS

    whys = []
    if a.config.seed != b.config.seed:
        whys.append(f"seeds differ ({a.config.seed} vs {b.config.seed})")
    if a.config.budget != b.config.budget:
        whys.append("budgets differ")
    for e in (a, b):
        if e.result.get("budget_multiplier") not in (None, 1, 1.0):
            whys.append(f"{e.config.pruner} trains {e.result['budget_multiplier']:g}x the budget's steps")
        if not getattr(PRUNERS.get(e.config.pruner), "same_data_order", True):
            whys.append(f"{e.config.pruner} rewinds its weights and retrains")
    return "data order differs: " + "; ".join(whys) + " (not a fixed-batch pair)" if whys else None


def _one(runs: pd.DataFrame, selector: str, where: str) -> Path:
    ok = runs[runs["status"] == RunStatus.OK] if "status" in runs.columns else runs
    found = select(ok, selector) if not ok.empty else ok
    if found.empty:
        raise ConfigError(f"{selector!r}: no finished (status ok) run under {where}")
    if len(found) > 1:
        ids = ", ".join(found["run_id"].head(10))
        more = ", ..." if len(found) > 10 else ""
        raise ConfigError(f"{selector!r} matches {len(found)} runs under {where} ({ids}{more}); name one, "
                          "e.g. add seed=0 and the hyperparameters")
    return Path(found["path"].iat[0])


def resolve(selector: str, runs: Callable[[], pd.DataFrame], where: str) -> Path:
    """A run folder: `selector` itself when it is a path, else the one run it selects."""
    path = Path(selector)
    if path.exists():
        if not RunDir.at(path).result.is_file():
            raise ConfigError(f"{selector!r}: not a run folder (no result.json); give a run folder or a "
                              "selector such as grda:c=0.01648,seed=0")
        return path
    return _one(runs(), selector, where)


def dense_partner(a_dir: Path, runs: pd.DataFrame, where: str) -> Path:
    """The dense run of A's model, data set, seed and budget (and optimizer family, where recorded)."""
    config, result = read_run(a_dir)
    ok = runs[runs["status"] == RunStatus.OK] if "status" in runs.columns else runs
    ok = ok[(ok["pruner"] == "dense") & (ok["model"] == config.model) & (ok["dataset"] == config.dataset)
            & (ok["seed"] == config.seed)]
    ok = ok[[read_config(Path(p)).budget == config.budget for p in ok["path"]]]
    family = result.get("optimizer_family")
    if family and "optimizer_family" in ok.columns:
        ok = ok[ok["optimizer_family"] == family]
    want = (f"dense run of model {config.model}, data set {config.dataset}, seed {config.seed}, "
            f"A's budget" + (f" and optimizer family {family}" if family else ""))
    if ok.empty:
        raise ConfigError(f"B: no {want} under {where}; train one (bench run --pruner dense --model "
                          f"{config.model} --dataset {config.dataset} --seed {config.seed} and A's budget "
                          "flags) or give B")
    if len(ok) > 1:
        raise ConfigError(f"B: {len(ok)} runs match ({want}: {', '.join(ok['run_id'])}); give B")
    return Path(ok["path"].iat[0])


def read_config(run_dir: Path) -> RunConfig:
    config = read_json(RunDir.at(run_dir).config)
    if not isinstance(config, dict):
        raise ConfigError(f"{run_dir}: no readable config.json")
    return RunConfig.from_dict({k: v for k, v in config.items() if k not in ("run_id", "config_hash")})
