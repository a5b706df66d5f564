"""One registry per kind of component (pruner, model, dataset).

Entries register themselves with a decorator; `populate()` imports every package that holds
entries, so a lookup always sees the full set. Unknown names raise `ConfigError` listing the
valid choices (the CLI turns that into exit status 2).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from bench.errors import ConfigError

T = TypeVar("T")

# Packages whose modules register entries on import (their __init__ imports every module).
_ENTRY_PACKAGES = ("bench.pruner", "bench.grda", "bench.models", "bench.data", "baselines")
_populated = False


def populate() -> None:
    """Import every module that registers entries (idempotent)."""
    global _populated
    if _populated:
        return
    _populated = True
    for name in _ENTRY_PACKAGES:
        importlib.import_module(name)


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
