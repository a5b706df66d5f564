"""Checks before anything runs: names, hyperparameters, model/dataset fit, data present, the
device exists here, the out folder can be written.

Everything here runs before anything is created or submitted (bad input exits 2 naming the
field and the valid choices); nothing here trains or loads data.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.config import RunConfig, build_dataclass
from bench.errors import ConfigError, clip
from bench.registry import DATASETS, MODELS, PRUNERS
from bench.runs import check_path_text


def resolve_hparams(config: RunConfig) -> RunConfig:
    """Validate the pruner's hyperparameters and fill in the defaults (raises ConfigError)."""
    cls = PRUNERS.get(config.pruner, "pruner")
    hp = build_dataclass(cls.Hparams, config.hparams, f"pruners.{config.pruner}")
    return dataclasses.replace(config, hparams=dataclasses.asdict(hp))


def check_config(config: RunConfig) -> RunConfig:
    """Everything that can be checked without loading data or training: names, hyperparameters,
    model/dataset fit. Returns the config with resolved hyperparameters."""
    config = resolve_hparams(config)
    config = _with_init_identity(config)
    check_loggers(config.loggers)
    model = MODELS.get(config.model, "model")
    dataset = DATASETS.get(config.dataset, "dataset")
    if dataset.input_shape is not None:
        model.check_fits(config.dataset, dataset.input_shape, dataset.num_classes)
    count = config.budget.val_fraction
    if count >= 1 and dataset.num_train is not None and count >= dataset.num_train:
        raise ConfigError(f"budget.val_fraction = {count:.0f}: a count of examples must be below "
                          f"{config.dataset}'s {dataset.num_train:,} training examples (or a fraction < 1)")
    return config


def _with_init_identity(config: RunConfig) -> RunConfig:
    """A pretrained start's weights named by their sha256 (budget.init_sha256: the run's identity);
    ConfigError naming where they must be if they are not there."""
    b = config.budget
    if not b.init or b.init_sha256:
        return config
    from bench import pretrained  # torch: only for a pretrained start

    return dataclasses.replace(config, budget=dataclasses.replace(b, init_sha256=pretrained.sha256(b.init)))


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
        info.check(config.data_dir)


def check_devices(configs: Sequence[RunConfig], tasks: int) -> None:
    """`--gpus N` > 1 puts each rank on its own device (the job's local rank): a config naming one
    device (`cuda:N`) would put every rank on it. Raises ConfigError naming the device field."""
    pinned = sorted({c.device for c in configs if c.device.startswith("cuda:")})
    if tasks > 1 and pinned:
        raise ConfigError(
            f"device = {pinned[0]!r} with --gpus {tasks}: each rank uses its own GPU; valid choices "
            "with --gpus > 1: auto, cuda, cpu"
        )


def check_device_here(device: str, where: str = "--device") -> None:
    """Raise ConfigError unless `device` (auto | cpu | cuda | cuda:N) exists on this machine: for
    what trains here (`bench run`, a local sweep). Imports torch, so only those call it."""
    import torch  # not at the top: sweep parsing and --help must not import torch

    if device in ("auto", "cpu"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        here = f"cuda:0 to cuda:{count - 1}" if count else "none: CUDA is not available here"
        raise ConfigError(f"{where} = {device!r}: no such device on this machine; valid: auto, cpu "
                          f"(CUDA devices here: {here})")


def check_out(path: str | Path, key: str) -> Path:
    """Raise ConfigError (naming `key`, e.g. --out) unless `path` is, or can become, a writable
    folder: not a file, printable on one line (paths go into sbatch scripts), with a writable
    nearest existing folder. Creates nothing."""
    path = Path(path)
    text = str(path)
    if not text or not text.isprintable():
        raise ConfigError(f"{key} = {text!r}: must be a non-empty path of printable characters on one line")
    check_path_text(path, key)  # '%': a job launcher's placeholder
    check_name_lengths(path, key)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link
            raise ConfigError(f"{key} = {text!r}: {existing} is a broken symbolic link")
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"{key} = {text!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key} = {text!r}: {existing} is not writable")
    return path


def check_out_file(path: str | Path, key: str) -> Path:
    """Raise ConfigError (naming `key`, e.g. --json) unless a file can be written at `path`: not
    a folder, in a folder that is, or can become, writable (see `check_out`). Creates nothing."""
    path = Path(path)
    check_name_lengths(path, key)
    if path.is_dir():
        raise ConfigError(f"{key} = {str(path)!r}: is a folder; give a file name in it, e.g. "
                          f"{path / 'report.json'}")
    check_out(path.parent, key)
    return path


# the files `bench leaderboard` writes into its folder whatever the data (bench.board.write; the
# figures' names depend on the sections); a board adds its tables and valley files
LEADERBOARD_FILES = ("README.md", "leaderboard.csv", "matched_sparsity.csv")


def check_out_files(folder: str | Path, names: Iterable[str], key: str) -> Path:
    """Raise ConfigError (naming `key` and the path) unless `folder` is, or can become, a writable
    folder (see `check_out`) in which each of `names` can be written as a file: not a folder nor
    a symbolic link there, not too long a name. For the names a command writes, before its work.
    Creates nothing; returns `folder` as a Path."""
    folder = check_out(folder, key)
    for name in names:
        path = folder / name
        check_name_lengths(path, key)
        if path.is_symlink():
            raise ConfigError(f"{key} = {str(folder)!r}: {path} is a symbolic link where this command "
                              "writes a file; it writes through no link (remove it)")
        if path.is_dir():
            raise ConfigError(f"{key} = {str(folder)!r}: {path} is a folder where this command writes a "
                              f"file; move it away or choose another {key}")
    return folder


def check_name_lengths(path: Path, key: str) -> None:
    """Raise ConfigError if a component of `path`, or `path` itself, is longer than the file
    system allows (found out otherwise only when the first file is written, after the work)."""
    existing = path
    while not os.path.isdir(existing) and existing != existing.parent:  # isdir: False on a too-long name
        existing = existing.parent
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    long = next((part for part in path.parts if len(os.fsencode(part)) > name_max), None)
    if long is not None:
        raise ConfigError(f"{key} = {clip(str(path))!r}: the name {clip(long)!r} is {len(os.fsencode(long))} "
                          f"bytes long; at most {name_max} fit here")
    # a run folder and its files go below it: leave them room
    if len(os.fsencode(str(path.absolute()))) > path_max - 256:
        raise ConfigError(f"{key} = {clip(str(path))!r}: the path is too long; at most about "
                          f"{path_max - 256} bytes leave room for the files written below it")
