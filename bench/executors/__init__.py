"""Executors: where sweep cells run. One module per backend (`local`, `slurm`), each defining an
`Executor` subclass (see `base.py`); this package finds them, so a new executor is one new file.

The CLI flag group of `bench sweep` and `bench board` comes from here: `--executor` with the
registered names, `--gpus`, and every executor's option fields (`--parallel`, `--profile`, ...).
An option given to an executor that does not take it is refused, naming the executor that does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from bench.config import add_dataclass_flags, build_dataclass
from bench.errors import ConfigError
from bench.executors.base import ALIVE, Executor

__all__ = ["ALIVE", "DEFAULT", "Executor", "activity", "add_flags", "create", "executors", "from_args",
           "job_key", "job_states"]

DEFAULT = "local"
_registry: dict[str, type[Executor]] = {}


def executors() -> dict[str, type[Executor]]:
    """Every executor class, by name (the modules of this package are imported once)."""
    if not _registry:
        for info in pkgutil.iter_modules(__path__):
            if info.name == "base" or info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, Executor) and obj is not Executor and obj.name:
                    _registry[obj.name] = obj
    return dict(sorted(_registry.items()))


def get(name: str) -> type[Executor]:
    found = executors()
    if name not in found:
        raise ConfigError(f"executor = {name!r}: valid choices: {', '.join(found)}")
    return found[name]


def create(name: str = DEFAULT, options: dict[str, Any] | None = None, gpus: int = 0) -> Executor:
    """A validated executor: unknown options (or options of another executor) and bad values
    raise ConfigError naming the option and the valid choices."""
    cls = get(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if gpus < 0:
        raise ConfigError(f"gpus = {gpus}: must be >= 0")
    own = {f.name for f in dataclasses.fields(cls.Options)}
    for key in options:
        if key not in own:
            owners = [n for n, c in executors().items() if key in _option_names(c)]
            where = f"an option of --executor {' / '.join(owners)}" if owners else "not an executor option"
            raise ConfigError(f"{key} = {options[key]!r}: {where}, not of --executor {name}")
    return cls(build_dataclass(cls.Options, options, f"executor {name}"), max(1, gpus))


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The executor flag group shared by `bench sweep` and `bench board`."""
    found = executors()
    group = parser.add_argument_group("where the cells run")
    described = "; ".join(f"{n}: {c.description}" for n, c in found.items())
    group.add_argument("--executor", default=DEFAULT, metavar="{" + ",".join(found) + "}",
                       help=f"{described} (default: {DEFAULT})")
    group.add_argument("--gpus", type=int, default=0,
                       help="N > 1: each run uses N tasks with torch.distributed (N GPUs; N CPU processes on "
                       "gloo without a GPU)")
    seen: set[str] = set()
    for name, cls in found.items():
        fields = [f for f in dataclasses.fields(cls.Options) if f.name not in seen]
        seen.update(f.name for f in fields)
        add_dataclass_flags(group, cls.Options, prefix=f"{name}: ", fields=fields)


def from_args(args: argparse.Namespace) -> Executor:
    """The executor `add_flags` flags ask for, validated."""
    options = {k: getattr(args, k, None) for c in executors().values() for k in _option_names(c)}
    return create(args.executor, options, args.gpus)


# -- job states of `.jobs` records, whatever executor wrote them ------------------------------


def job_key(record: dict[str, Any]) -> str:
    return (_of(record) or Executor).job_key(record)


def job_states(records: list[dict[str, Any]]) -> dict[str, str]:
    """`job_key` -> scheduler state, for the jobs of `.jobs/<run_id>.json` records. A record that
    names no executor known here gets no state (its job counts as ended): no scheduler is asked."""
    by_executor: dict[type[Executor], list[dict[str, Any]]] = {}
    for r in records:
        if (cls := _of(r)) is not None:
            by_executor.setdefault(cls, []).append(r)
    states: dict[str, str] = {}
    for cls, group in by_executor.items():
        states.update(cls.job_states(group))
    return states


def activity(run_dir: Path, record: dict[str, Any], state: str) -> str:
    cls = _of(record)
    return "running" if cls is None else cls.activity(run_dir, record, state)


def _option_names(cls: type[Executor]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls.Options)}


def _of(record: dict[str, Any]) -> type[Executor] | None:
    """The executor that wrote a job record, or None when it names none known here."""
    return executors().get(str(record.get("executor")))
