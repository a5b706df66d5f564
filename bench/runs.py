"""A run folder (`<out>/<run_id>/`): its file names, its lock, and the rule that nothing written
through it leaves the output folder. Also the names a run record uses for its status and for the
inference speed-up backends.

Every module that reads or writes a run folder goes through `RunDir`, so a file name is written
once. Writes never follow a symbolic link: a run folder, or a file in it, that is a link is refused
(ConfigError naming the link) before anything is written, renamed, deleted or locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bench.errors import ConfigError


class RunStatus(StrEnum):
    """A run record's `status` (equal to the plain strings written in result.json)."""

    OK = "ok"
    DIVERGED = "diverged"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        """Final: re-running the config returns this record instead of training again."""
        return self is not RunStatus.FAILED


class Backend(StrEnum):
    """An inference speed-up backend. The value is its display name; `key` the name in record
    fields (`speedup_<key>`), where ':' is not allowed."""

    DENSE = "dense"
    COMPACT = "compact"
    SPARSE = "sparse"
    SEMI_STRUCTURED = "2:4"

    @property
    def key(self) -> str:
        return "2to4" if self is Backend.SEMI_STRUCTURED else self.value

    @classmethod
    def parse(cls, name: str) -> Backend:
        """A backend from its display name or its record key ("2:4" or "2to4")."""
        for b in cls:
            if name in (b.value, b.key):
                return b
        raise ConfigError(f"backend {name!r}: valid choices: {', '.join(b.value for b in cls)}")


class BackendStatus(StrEnum):
    """What an inference backend's check gave (`speedup_<key>_status`): timed only when OK."""

    OK = "ok"
    REFUSED = "refused"  # its outputs differ from the trained model's
    NOT_APPLICABLE = "not_applicable"
    FAILED = "failed"


# the files a run writes in its folder, by RunDir attribute: each name is written here only
FILES = {
    "config": "config.json", "result": "result.json", "history": "history.csv",
    "checkpoint": "checkpoint.pt", "bad_checkpoint": "checkpoint.bad.pt", "train_log": "train.log",
    "progress": "progress.json", "predictions": "predictions.npz", "traceback": "traceback.txt",
    "lock_file": ".lock",
}
RUN_FILES = tuple(FILES.values())
# Files a `--force` retrain keeps, numbered: result.replaced.json, result.replaced.2.json, ...
RETIRED = tuple(FILES[k] for k in ("result", "history", "traceback", "predictions"))
LOCK_MESSAGE_AFTER_S = 2.0  # how long to wait for a busy lock before saying who holds it


def check_path_text(path: str | Path, what: str = "--out") -> Path:
    """Refuse output paths the job launcher would rewrite: submitit expands `%j`, `%t`, ... in
    folder names, so a `%` would send the run's files to a folder no one looks in. The launcher
    gets the absolute path, so a `%` in the working directory counts too."""
    if "%" in str(path):
        raise ConfigError(f"{what} = {str(path)!r}: '%' is not allowed in output paths "
                          "(submitit expands it as a placeholder such as %j, the job id)")
    full = Path(path).absolute()
    if "%" in str(full):
        raise ConfigError(f"{what} = {str(path)!r}: its absolute path {str(full)!r} holds a '%', which "
                          f"submitit expands as a placeholder (%j: the job id); run from a folder whose "
                          f"path has no '%', or give {what} an absolute path without one")
    return Path(path)



@dataclass(frozen=True)
class RunDir:
    """The folder `out/run_id`, its files and its lock."""

    out: Path
    run_id: str

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        """The RunDir of an existing folder path (its last component is the run id)."""
        path = Path(path)
        return cls(path.parent, path.name)

    @property
    def path(self) -> Path:
        return self.out / self.run_id

    def file(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.file(FILES["config"]))
    result = property(lambda self: self.file(FILES["result"]))
    history = property(lambda self: self.file(FILES["history"]))
    checkpoint = property(lambda self: self.file(FILES["checkpoint"]))
    bad_checkpoint = property(lambda self: self.file(FILES["bad_checkpoint"]))
    train_log = property(lambda self: self.file(FILES["train_log"]))
    progress = property(lambda self: self.file(FILES["progress"]))
    predictions = property(lambda self: self.file(FILES["predictions"]))
    traceback = property(lambda self: self.file(FILES["traceback"]))
    lock_file = property(lambda self: self.file(FILES["lock_file"]))

    # -- staying inside -------------------------------------------------------------------
    def check_no_links(self) -> None:
        """ConfigError if the run folder or any entry in it is a symbolic link: a write, rename or
        delete through it could reach a file outside the output folder."""
        check_path_text(self.out)
        if self.path.is_symlink():
            raise ConfigError(f"{self.path} is a symbolic link; a run folder must be a real folder "
                              "inside the output folder (remove the link)")
        if self.path.is_dir():
            for entry in self.path.iterdir():
                if entry.is_symlink():
                    raise ConfigError(f"{entry} is a symbolic link; run folders hold no links "
                                      "(remove it, nothing is written through it)")
                if entry.name in RUN_FILES and entry.is_dir():  # the run would fail writing it
                    raise ConfigError(f"{entry} is a folder where the run writes a file; move it away")

    def create(self) -> Path:
        """Make the folder (and the output folder) after checking for links; returns the path."""
        self.check_no_links()
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path

    def check_present(self, config: bool = True) -> None:
        """A run folder removed while its run trained is not silently made again: raise instead
        (`config`: its config.json must be there too)."""
        if not self.path.is_dir() or (config and not self.config.is_file()):
            raise ConfigError(f"{self.path}: the run folder (or its config.json) disappeared while "
                              "the run was training; start the run again")

    # -- the lock -------------------------------------------------------------------------
    def open_lock(self) -> int:
        """A descriptor of the lock file, opened without following a link."""
        self.check_no_links()
        return open_lock_file(self.lock_file)

    def holder(self) -> int | None:
        """The PID written into the lock file by its last holder, if any."""
        return _written_pid(self.lock_file)

    @contextlib.contextmanager
    def lock(self, wait: bool = True) -> Iterator[None]:
        """An exclusive lock on the folder (flock on `.lock`, released when its holder dies, so a
        lock whose holder is gone is taken at once). A live holder: say its PID on stderr and wait
        (`wait`), or raise ConfigError naming it."""
        self.check_no_links()
        refused = (None if wait else f"{self.path} is locked by PID {{pid}}, which is still running it; "
                   "wait for it or stop that process")
        with hold_lock(self.lock_file, f"{self.path}: waiting for the run's lock, held by PID {{pid}} "
                       "(a run of the same config)", refused):
            yield

    def try_lock(self, fd: int) -> bool:
        return try_lock(fd)

    # -- --force --------------------------------------------------------------------------
    def retire(self) -> list[Path]:
        """Set a finished run aside so it trains again (caller holds the lock): each of RETIRED is
        renamed to the first free `<stem>.replaced[.N]<suffix>` (every earlier result kept), and
        the checkpoint removed. Returns the new names."""
        self.check_no_links()
        kept = []
        for name in RETIRED:
            src = self.file(name)
            if src.is_file():
                dst = self._numbered(src)
                src.replace(dst)
                kept.append(dst)
        self.checkpoint.unlink(missing_ok=True)
        return kept

    def _numbered(self, src: Path) -> Path:
        stem, suffix = src.stem, src.suffix
        n = 1
        while True:
            dst = src.with_name(f"{stem}.replaced{'' if n == 1 else f'.{n}'}{suffix}")
            if not dst.exists() and not dst.is_symlink():
                return dst
            n += 1

    def replaced_results(self) -> list[Path]:
        """Earlier results kept by `retire`, oldest first."""
        found = [p for p in self.path.glob("result.replaced*.json")]
        return sorted(found, key=lambda p: int(p.suffixes[-2][1:]) if len(p.suffixes) > 2 else 1)


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file at `path` (created if missing), opened without following a
    link: ConfigError naming a link there."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigError(f"{path} is a symbolic link; remove it") from None
        raise


def try_lock(fd: int) -> bool:
    """Take the exclusive flock on `fd` if no one holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextlib.contextmanager
def hold_lock(path: Path, waiting: str, refused: str | None = None) -> Iterator[None]:
    """An exclusive flock on the lock file at `path` (opened without following a link; released when
    its holder dies), with this process's PID written into it. While a live process holds it: after
    LOCK_MESSAGE_AFTER_S say `waiting` on stderr and keep waiting, or, given `refused`, raise
    ConfigError with it at once (both formatted with the holder's `{pid}`)."""
    fd = open_lock_file(path)
    try:
        start, told = time.monotonic(), False
        while not try_lock(fd):
            pid = live_holder(path) or "unknown"
            if refused is not None:
                raise ConfigError(refused.format(pid=pid))
            if not told and time.monotonic() - start >= LOCK_MESSAGE_AFTER_S:
                print(waiting.format(pid=pid), file=sys.stderr)
                told = True
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _written_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):  # IndexError: not written yet
        return int(path.read_text().split()[0])
    return None


def live_holder(path: Path) -> int | None:
    """The PID the last holder of the lock file at `path` wrote into it, if that process runs."""
    pid = _written_pid(path)
    return pid if pid is not None and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
