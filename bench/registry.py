"""One registry per kind of component (pruner, model, dataset), and plugin loading.

Entries register themselves with a decorator when their module is imported. `populate()` imports
every module of the built-in packages (`bench.grda`, the method under test; every module of
`baselines/`, `bench/models/` and `bench/data/` whose name does not start with `_`), then the
plugins: the modules named by `--import` (`load_plugins`) and those of the `prunebench.plugins`
entry-point group. So a new method, model or data set is one new file, and a user's own module
works everywhere a built-in one does. Unknown names raise `ConfigError` listing the valid
choices (the CLI turns that into exit status 2).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from bench.errors import ConfigError

T = TypeVar("T")

BUILTIN_MODULES = ("bench.grda",)
BUILTIN_PACKAGES = ("baselines", "bench.models", "bench.data")  # every public module registers
ENTRY_POINT_GROUP = "prunebench.plugins"
PLUGINS_ENV = "PRUNEBENCH_IMPORT"  # os.pathsep-separated plugin modules, inherited by job processes
_populated = False


def populate() -> None:
    """Import every module that registers entries, built-in and plugin (idempotent)."""
    global _populated
    if _populated:
        return
    _populated = True
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    for name in BUILTIN_PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{name}.{info.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(f"plugin entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP}): "
                              f"{type(e).__name__}: {e}") from None
    load_plugins(loaded_plugins())


def loaded_plugins() -> list[str]:
    """The plugin modules given to `load_plugins` in this process or a parent (via PLUGINS_ENV)."""
    return [m for m in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if m]


def load_plugins(modules: Sequence[str]) -> None:
    """Import the user's modules (`pkg.module` or a path to a `.py` file) so that their entries
    register; remembered in PLUGINS_ENV, so that every job process started from here (local or
    SLURM: submitit's jobs inherit the environment) imports them too."""
    names = [str(Path(m).resolve()) if m.endswith(".py") else m for m in modules]
    for name in names:
        _import_plugin(name)
    env = list(dict.fromkeys([*loaded_plugins(), *names]))
    if env:
        os.environ[PLUGINS_ENV] = os.pathsep.join(env)


def _import_plugin(name: str) -> None:
    try:
        if name.endswith(".py"):
            key = "prunebench_plugin_" + Path(name).stem
            if key in sys.modules:
                return
            spec = importlib.util.spec_from_file_location(key, name)
            if spec is None or spec.loader is None or not Path(name).is_file():
                raise ConfigError(f"--import {name}: no such file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())  # `bench` (a console script) lacks the cwd
            importlib.import_module(name)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"--import {name}: cannot import it ({type(e).__name__}: {e})") from None


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=3)
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    def get(self, name: str, field: str | None = None) -> T:
        populate()
        if name not in self._entries:
            where = f"{field}: " if field else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        populate()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]


PRUNERS: Registry = Registry("pruner")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
