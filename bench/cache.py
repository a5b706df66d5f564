"""The user's on-disk cache: results that are slow to compute, cheap to keep and a pure function
of their key (the dry run's probe measurements, the digits split). It lives in $PRUNEBENCH_CACHE,
else $XDG_CACHE_HOME/prunebench, else ~/.cache/prunebench; deleting it only costs time. Entries
are written atomically; an unreadable or unwritable cache is treated as empty."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "PRUNEBENCH_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prunebench"


def _write_atomic(path: Path, write: Callable[[Any], None], suffix: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # a read-only home: the value is recomputed next time


def cached_arrays(name: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored under `name` (a file name that encodes the whole key), computing and
    storing them on a miss."""
    path = cache_dir() / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, or torn by a crash: recomputed and replaced
    arrays = compute()
    _write_atomic(path, lambda fh: np.savez(fh, **arrays), ".npz")
    return arrays


def read_json(name: str) -> dict[str, Any]:
    """The JSON object stored under `name` ({} when absent or unreadable)."""
    try:
        value = json.loads((cache_dir() / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(name: str, value: dict[str, Any]) -> None:
    _write_atomic(cache_dir() / f"{name}.json", lambda fh: fh.write(json.dumps(value, indent=1).encode()),
                  ".json")
