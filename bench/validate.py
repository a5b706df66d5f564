"""Checks that need the registries: names, hyperparameters, model/dataset fit, data present.

Everything here runs before anything is created or submitted (bad input exits 2 naming the
field and the valid choices); nothing here trains or loads data.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from collections.abc import Sequence

from bench.config import Budget, RunConfig, build_dataclass, dataclass_from_args, parse_sets
from bench.errors import ConfigError
from bench.registry import DATASETS, MODELS, PRUNERS


def resolve_hparams(config: RunConfig) -> RunConfig:
    """Validate the pruner's hyperparameters and fill in the defaults (raises ConfigError)."""
    cls = PRUNERS.get(config.pruner, "pruner")
    hp = build_dataclass(cls.Hparams, config.hparams, f"pruners.{config.pruner}")
    return dataclasses.replace(config, hparams=dataclasses.asdict(hp))


def check_config(config: RunConfig) -> RunConfig:
    """Everything that can be checked without loading data or training: names, hyperparameters,
    model/dataset fit. Returns the config with resolved hyperparameters."""
    config = resolve_hparams(config)
    check_loggers(config.loggers)
    model = MODELS.get(config.model, "model")
    dataset = DATASETS.get(config.dataset, "dataset")
    if dataset.input_shape is not None:
        model.check_fits(config.dataset, dataset.input_shape, dataset.num_classes)
    return config


def check_loggers(names: tuple[str, ...]) -> None:
    """Raise ConfigError for a logger that does not exist or whose package is not installed."""
    from bench.loggers import LOGGERS  # a table of names; imports no tracker

    for name in names:
        info = LOGGERS.get(name)
        if info is None:
            raise ConfigError(f"loggers = {name!r}: unknown logger; valid choices: {', '.join(LOGGERS)}")
        if importlib.util.find_spec(info.package) is None:
            raise ConfigError(f"loggers = {name!r}: the {info.package!r} package is not installed; "
                              f"pip install 'prunebench[{info.extra}]'")


def check_data(config: RunConfig) -> None:
    """Raise ConfigError (naming the dataset, the path and how to get the files) if the dataset's
    files are not under the data dir; reads nothing. `bench run` and a local sweep call it before
    any folder is created; a job that meets missing files records the run as failed."""
    info = DATASETS.get(config.dataset, "dataset")
    if info.check is not None:
        info.check(config.data_dir or "data")


def check_devices(configs: Sequence[RunConfig], tasks: int) -> None:
    """`--gpus N` > 1 puts each rank on its own device (the job's local rank): a config naming one
    device (`cuda:N`) would put every rank on it. Raises ConfigError naming the device field."""
    pinned = sorted({c.device for c in configs if c.device.startswith("cuda:")})
    if tasks > 1 and pinned:
        raise ConfigError(
            f"device = {pinned[0]!r} with --gpus {tasks}: each rank uses its own GPU; valid choices "
            "with --gpus > 1: auto, cuda, cpu"
        )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated RunConfig (hyperparameters resolved) from `add_run_flags` flags."""
    config = RunConfig(
        pruner=args.pruner,
        model=args.model,
        dataset=args.dataset,
        hparams=parse_sets(args.sets),
        budget=dataclass_from_args(Budget, args, "budget"),
        seed=args.seed,
        data_dir=args.data_dir,
        device=args.device,
        loggers=tuple(args.loggers),
        deterministic=getattr(args, "deterministic", False),
    )
    return check_config(config)
