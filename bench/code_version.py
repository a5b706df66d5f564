"""The version of the code a run trained with, beyond the harness's git commit: the sha256 of the
source file of its pruner and of every plugin module (`--import`, entry points) that registered
its model or data set. A finished result (or a checkpoint) whose hashes differ from the current
code's is stale: the run trains anew, and the old result is kept as `--force` keeps it."""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.registry import DATASETS, MODELS, PRUNERS

BUILTIN_TOP = ("bench", "baselines")  # packages of the harness itself (its git_sha covers them)


def code_hashes(config: RunConfig) -> dict[str, str]:
    """{module name: sha256 of its source file} for the run's pruner and for each plugin module
    that registered the run's model or data set."""
    entries = [(PRUNERS.get(config.pruner), True), (MODELS.get(config.model).build, False),
               (DATASETS.get(config.dataset).load, False)]
    out = {}
    for entry, always in entries:
        module = sys.modules.get(getattr(entry, "__module__", "") or "")
        if module is None or (not always and module.__name__.split(".")[0] in BUILTIN_TOP):
            continue
        path = _source_file(entry, module)
        if path is not None:
            out[module.__name__] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _source_file(entry: Any, module: Any) -> Path | None:
    try:
        name = inspect.getsourcefile(entry) or getattr(module, "__file__", None)
    except TypeError:  # a built-in without a source file
        name = getattr(module, "__file__", None)
    return Path(name) if name and Path(name).is_file() else None


def changed(stored: dict[str, Any] | None, config: RunConfig) -> bool:
    """Whether a result or checkpoint written with `stored` code hashes is stale for the current
    code. One written before hashes were recorded (None) is not: it keeps its result."""
    return stored is not None and stored != code_hashes(config)
