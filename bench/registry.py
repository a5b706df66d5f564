"""One registry per kind of component (pruner, model, dataset), and plugin loading.

Entries register themselves with a decorator (`@register_pruner("name")`, `@register_model`,
`@register_dataset`) when their module is imported. The built-in modules (`bench.grda`, the method
under test, and every module of `baselines/`, `bench/models/` and `bench/data/` whose name does
not start with `_`) are imported lazily: the registry reads their source once for the names their
decorators declare (a string literal as the first argument) and imports a module only when one of
its entries is asked for. So a digits run never imports torchvision, and a new method, model or
data set is still one new file. A module that declares no literal name is imported whenever the
full list of names is needed; an unknown name imports everything before it is refused.

Plugins are imported eagerly: the modules named by `--import` (`load_plugins`, remembered in
PLUGINS_ENV for job processes) and those of the `prunebench.plugins` entry-point group. Unknown
names raise `ConfigError` listing the valid choices (the CLI turns that into exit status 2).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from bench.errors import ConfigError

T = TypeVar("T")

# kind -> built-in modules or packages (every public module of a package) that register entries
BUILTIN_SOURCES: dict[str, tuple[str, ...]] = {
    "pruner": ("bench.grda", "baselines"),
    "model": ("bench.models",),
    "dataset": ("bench.data",),
}
ENTRY_POINT_GROUP = "prunebench.plugins"
PLUGINS_ENV = "PRUNEBENCH_IMPORT"  # os.pathsep-separated plugin modules, inherited by job processes
_plugins_loaded = False
_builtin_depth = 0  # > 0 while the registry imports a built-in module: a plugin's entry then wins


def _builtin_modules(source: str) -> list[tuple[str, Path]]:
    """(module name, source file) of `source` itself, or of every public module of the package."""
    spec = importlib.util.find_spec(source)
    if spec is None or spec.origin is None:
        raise ImportError(f"built-in module {source!r} not found")
    if not spec.submodule_search_locations:
        return [(source, Path(spec.origin))]
    return sorted(
        (f"{source}.{path.stem}", path)
        for folder in spec.submodule_search_locations
        for path in Path(folder).glob("*.py")
        if not path.stem.startswith("_")
    )


def declared_names(path: Path) -> list[str]:
    """The names a module's `@register_*("name", ...)` decorators declare, read from its source
    ([] if it cannot be read: the module is then imported whenever all names are needed)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and deco.args and isinstance(deco.args[0], ast.Constant)
                        and isinstance(deco.args[0].value, str)
                        and getattr(deco.func, "id", getattr(deco.func, "attr", "")).startswith("register")):
                    names.append(deco.args[0].value)
    return names


def _import_builtin(module: str) -> None:
    global _builtin_depth
    if module in sys.modules:
        return
    _builtin_depth += 1
    try:
        importlib.import_module(module)
    finally:
        _builtin_depth -= 1


def load_entry_points() -> None:
    """Import plugin modules: the entry-point group's and PLUGINS_ENV's (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(f"plugin entry point {ep.name} = {ep.value!r} ({ENTRY_POINT_GROUP}): "
                              f"{type(e).__name__}: {e}") from None
    load_plugins(loaded_plugins())


def populate() -> None:
    """Import every module that registers entries, built-in and plugin (idempotent)."""
    for registry in (PRUNERS, MODELS, DATASETS):
        registry.import_all()


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
    """Entries of one kind by name; the built-in modules of `BUILTIN_SOURCES[kind]` are imported
    when first needed (see the module's docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        old = self._entries.get(name)
        if old is not None and old is not entry:
            if _builtin_depth:  # a plugin registered this name before its built-in was imported
                warnings.warn(f"{self.kind} {name!r}: a plugin's entry replaces the built-in one",
                              stacklevel=3)
                return entry
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=3)
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    @functools.cached_property
    def _declared(self) -> dict[str, list[str]]:
        """Built-in module -> the names it declares ([] for one that declares none literally)."""
        return {module: declared_names(path)
                for source in BUILTIN_SOURCES.get(self.kind, ())
                for module, path in _builtin_modules(source)}

    def _load(self, name: str) -> None:
        """Import what can register `name`: plugins, then its declaring module, then everything."""
        load_entry_points()
        for module, names in self._declared.items():
            if name in self._entries:
                return
            if name in names:
                _import_builtin(module)
        if name not in self._entries:
            self.import_all()

    def import_all(self) -> None:
        load_entry_points()
        for module in self._declared:
            _import_builtin(module)

    def get(self, name: str, field: str | None = None) -> T:
        if name not in self._entries:
            self._load(name)
        if name not in self._entries:
            where = f"{field}: " if field else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            )
        return self._entries[name]

    def names(self) -> list[str]:
        """Every name, without importing the modules that declare theirs."""
        load_entry_points()
        for module, names in self._declared.items():
            if not names:
                _import_builtin(module)
        return sorted({*self._entries, *(n for names in self._declared.values() for n in names)})

    def items(self) -> list[tuple[str, T]]:
        self.import_all()
        return [(n, self._entries[n]) for n in sorted(self._entries)]


PRUNERS: Registry = Registry("pruner")
MODELS: Registry = Registry("model")
DATASETS: Registry = Registry("dataset")
