"""Crash-safe files: everything the harness writes goes to a temporary name in the same folder and
is renamed into place, so a crash never leaves half a file; readers treat unreadable files as
missing."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; results are shared with the team (a cluster's group), so give the
# final file the mode an ordinary `open()` would
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if _disk_full(e, path.parent):
            raise OSError(errno.ENOSPC, "disk full", str(path)) from None
        raise
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, path.parent)  # before the partial file is removed and frees space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, "disk full", str(path)) from None
        raise


def _disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space: ENOSPC, or (torch reports a full disk as
    an internal writer error) no space left in `folder`."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, RuntimeError):
        return False
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20  # under 1 MiB left


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (`.<name>.<random>.tmp`) that writes killed midway left in
    `folder`; only for a caller that knows no write into it is in progress (it holds its lock)."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _json_safe(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null (a diverged run's loss, for instance)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> Any:
    """Write `obj` as JSON; returns what a reader will get back (tuples as lists, NaN as None)."""
    data = json.dumps(_json_safe(obj), indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda f: f.write(data))
    return json.loads(data)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def read_json(path: str | Path) -> Any | None:
    """The parsed file, or None if it is missing, truncated or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    import torch  # here, not at the top: reading results must not pay for importing torch

    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint, or None if missing or unreadable (truncated: recompute from scratch).

    Loaded with `weights_only=True`: a checkpoint can never run code.
    """
    import torch

    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or corrupt: treat as absent
        return None
