"""Gather run folders into pandas: one row per run, and a long per-epoch history table.

    bench gather runs/digits-mlp -o results.parquet     # + results.history.parquet beside it

A run folder is any folder holding `result.json` or `config.json`; the folders given are searched
recursively for them. Rows are `result.json` flattened (`hparams.c`, `budget.epochs`, ...;
`layer_sparsity` and list values as JSON strings) plus `path`, the run folder. Fields follow
`bench.record.RunRecord`: a result written before a field existed gets that field's default.
Folders that cannot give a row (no result yet, truncated result.json, one without the identity
fields) are skipped and reported; a run_id
found in several folders keeps the one that finished last and is reported too.

Speed: files are read with plain `json` (by a thread pool with `workers` > 1, which pays off
only where each read waits on the network), rows are built as dicts and turned into
one DataFrame, and every history.csv is parsed in one `read_csv` call per distinct header.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import record as schema
from bench.errors import ConfigError
from bench.io import atomic_write
from bench.predictions import predictions_path, read_run_predictions
from bench.record import IDENTITY, METRICS, NESTED, PROVENANCE, STATUSES
from bench.runs import FILES, RunStatus

RESULT, CONFIG, HISTORY = FILES["result"], FILES["config"], FILES["history"]
HISTORY_IDENTITY = ("run_id", "pruner", "model", "dataset", "seed")


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Duplicate:
    run_id: str
    kept: str
    dropped: tuple[str, ...]


@dataclass
class Gathered:
    """What `gather` found: the runs table, the history table and what it left out, and why."""

    runs: pd.DataFrame
    history: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # bench.predictions

    def report(self, limit: int = 20) -> str:
        """Human-readable summary of the runs and of every skipped folder and duplicate."""
        counts = self.runs["status"].value_counts() if len(self.runs) else pd.Series(dtype=int)
        lines = [
            f"gathered {len(self.runs)} runs ("
            + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in STATUSES)
            + f"), {len(self.history)} history rows, {len(self.predictions)} with per-example predictions; "
            f"skipped {len(self.skipped)} folders, "
            f"{len(self.duplicates)} duplicate run_ids"
        ]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped[:limit]]
        lines += [
            f"  duplicate {d.run_id}: kept {d.kept} (newest finished_at), dropped {', '.join(d.dropped)}"
            for d in self.duplicates[:limit]
        ]
        hidden = max(len(self.skipped) - limit, 0) + max(len(self.duplicates) - limit, 0)
        if hidden:
            lines.append(f"  ... and {hidden} more")
        versions = self.code_versions()
        if len(versions) > 1:
            lines.append(
                f"  warning: these runs come from {len(versions)} code version(s): "
                + ", ".join(f"{v}: {n} runs" for v, n in versions.items())
                + "; retrain the stale ones with `bench sweep FILE --force` (or `bench run ... --force`)"
            )
        return "\n".join(lines)

    def code_versions(self) -> dict[str, int]:
        """How many runs each code version (git commit, with or without uncommitted changes) made."""
        if self.runs.empty or "git_sha" not in self.runs:
            return {}
        sha = self.runs["git_sha"].fillna("unknown commit").astype(str).str.slice(0, 10)
        dirty = self.runs.get("git_dirty", pd.Series(None, index=self.runs.index)) == True  # noqa: E712
        labels = sha + np.where(dirty, " (uncommitted changes)", "")
        return {str(k): int(v) for k, v in labels.value_counts().items()}


# ------------------------------------------------------------------------------------ reading


def _probe(folder: str, history: bool = False) -> tuple[str, Any]:
    """('row', (flat dict, history.csv bytes or None)) | ('skip', reason) | ('dirs', subfolders)."""
    try:
        with open(os.path.join(folder, RESULT), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if os.path.exists(os.path.join(folder, CONFIG)):
            return "skip", "no result.json yet (not started, running or killed)"
        try:
            with os.scandir(folder) as it:
                return "dirs", [e.path for e in it if e.is_dir() and not e.name.startswith(".")]
        except OSError as e:
            return "skip", f"unreadable folder ({e.strerror})"
    except OSError as e:
        return "skip", f"unreadable result.json ({e.strerror})"
    try:
        record = json.loads(raw)
    except ValueError:
        return "skip", "result.json is truncated or not JSON"
    problem = schema.problems(record)
    if problem:
        return "skip", problem
    record = schema.with_defaults(record)  # a result older than a field gets its default
    return "row", (_flatten(record, folder), _read_history(folder) if history else None)


def _flatten(record: dict[str, Any], folder: str) -> dict[str, Any]:
    # comprehensions, not a helper per value: this runs for every field of every run
    nested = (dict, list)
    row = {k: _encode(v) if type(v) in nested else v for k, v in record.items() if k not in NESTED}
    for key in NESTED:
        row.update({f"{key}.{k}": _encode(v) if type(v) in nested else v for k, v in record[key].items()})
    row["path"] = folder
    return row


_encode = json.JSONEncoder(sort_keys=True).encode  # nested values (layer_sparsity, lists) as JSON text


def _scan(dirs: Iterable[str | Path], pool: ThreadPoolExecutor | None,
          history: bool) -> tuple[list[tuple[dict, bytes | None]], list[Skipped]]:
    """Breadth-first over the folders: each level is probed in turn, or in parallel by `pool`."""
    level = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"gather: {d}: no such folder")
        level.append(str(d))
    rows: list[tuple[dict, bytes | None]] = []
    skipped: list[Skipped] = []
    seen: set[tuple[int, int]] = set()
    while level:
        level = [d for d in dict.fromkeys(level) if _first_visit(d, seen)]  # each folder once
        nxt: list[str] = []
        if pool is None:  # on a local disk threads only add GIL hand-offs (10k folders: 2 s vs 4 s)
            probed: Iterable[tuple[str, Any]] = (_probe(d, history) for d in level)
        else:  # a task per chunk of folders, not per folder: fewer hand-offs
            chunks = [level[i : i + 64] for i in range(0, len(level), 64)]
            probed = itertools.chain.from_iterable(pool.map(_probe_all, chunks, [history] * len(chunks)))
        for folder, (kind, value) in zip(level, probed, strict=True):
            if kind == "row":
                rows.append(value)
            elif kind == "skip":
                skipped.append(Skipped(folder, value))
            else:
                nxt.extend(value)
        level = sorted(nxt)
    return rows, skipped


def _first_visit(folder: str, seen: set[tuple[int, int]]) -> bool:
    """True the first time a folder is reached, by its identity on disk (device, inode), not its
    path: symbolic links to folders, even in cycles, are followed once."""
    try:
        st = os.stat(folder)
    except OSError:
        return True  # _probe reports it
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _probe_all(folders: list[str], history: bool) -> list[tuple[str, Any]]:
    return [_probe(f, history) for f in folders]


def _read_history(folder: str) -> bytes | None:
    try:
        with open(os.path.join(folder, HISTORY), "rb") as f:
            return f.read()
    except OSError:
        return None


# ------------------------------------------------------------------------------------ tables


def _order(columns: Iterable[str]) -> list[str]:
    cols = list(columns)
    head = [c for c in ("run_id", "pruner", "model", "dataset", "seed", "status") if c in cols]
    hparams = sorted(c for c in cols if c.startswith("hparams."))
    metrics = [c for c in METRICS if c in cols]
    budget = sorted(c for c in cols if c.startswith("budget."))
    tail = [c for c in ("config_hash", *PROVENANCE, "path") if c in cols]
    known = set(head + hparams + metrics + budget + tail)
    return head + hparams + metrics + budget + tail + sorted(c for c in cols if c not in known)


def _runs_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows)
    df = df[_order(df.columns)]
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
    # Parquet needs one type per column: a hyperparameter that is a number for one pruner and a
    # string for another is stored as JSON text.
    for col in df.columns[[dt == object for dt in df.dtypes]]:  # noqa: E721 (pandas dtypes)
        types = set(df[col].dropna().map(type))
        if len(types) > 1 and not types <= {int, float}:
            df[col] = df[col].map(lambda v: None if v is None or v != v else json.dumps(v))
    return df


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, list[Duplicate]]:
    """Keep, per run_id, the row that finished last (ties: the later path)."""
    df = df.sort_values(["finished_at", "path"], na_position="first", kind="stable")
    dup = df[df["run_id"].duplicated(keep=False)]
    report = [
        Duplicate(run_id, paths.iloc[-1], tuple(paths.iloc[:-1]))
        for run_id, paths in dup.groupby("run_id")["path"]
    ]
    kept = df.drop_duplicates("run_id", keep="last")
    return kept.sort_values(["dataset", "model", "pruner", "run_id"]).reset_index(drop=True), report


def _history_frame(runs: pd.DataFrame, blobs: list[bytes | None]) -> tuple[pd.DataFrame, list[Skipped]]:
    """Every history.csv in one long table, the run's identity columns first.

    Files with the same header are concatenated and parsed by one `read_csv` (one call per file
    would take seconds for thousands of runs); each row's run is known from the files' line
    counts. A group that does not parse is read file by file, and unreadable files are skipped.
    """
    groups: dict[bytes, tuple[list[int], list[bytes], list[int]]] = defaultdict(lambda: ([], [], []))
    for i, blob in enumerate(blobs):
        header, _, body = (blob or b"").partition(b"\n")
        body = body.strip(b"\r\n")
        if not body:
            continue
        if b"\n\n" in body or b"\n\r\n" in body:  # blank lines would throw the line counts off
            body = b"\n".join(line for line in body.splitlines() if line.strip())
        idx, bodies, counts = groups[header.strip()]
        idx.append(i)
        bodies.append(body)
        counts.append(body.count(b"\n") + 1)
    frames, codes, skipped = [], [], []
    for header, (idx, bodies, counts) in groups.items():
        try:
            df = pd.read_csv(io.BytesIO(header + b"\n" + b"\n".join(bodies)))
            if len(df) != sum(counts):
                raise ValueError("line count mismatch")
            frames.append(df)
            codes.append(np.repeat(idx, counts))
        except (ValueError, pd.errors.ParserError):
            for i, body in zip(idx, bodies, strict=True):
                try:
                    frames.append(pd.read_csv(io.BytesIO(header + b"\n" + body)))
                    codes.append(np.full(len(frames[-1]), i))
                except (ValueError, pd.errors.ParserError) as e:
                    skipped.append(Skipped(runs["path"].iat[i], f"history.csv unreadable ({e}); run kept"))
    cols = list(HISTORY_IDENTITY)
    if not frames:
        return pd.DataFrame(columns=[*cols, "epoch"]), skipped
    ident = runs[cols].astype({c: "category" for c in cols if c != "seed"})  # small, fast to filter
    ident = ident.iloc[np.concatenate(codes)].reset_index(drop=True)
    hist = pd.concat(frames, ignore_index=True)
    return pd.concat([ident, hist.drop(columns=[c for c in cols if c in hist.columns])], axis=1), skipped


# ------------------------------------------------------------------------------------ API


def _gather_predictions(runs: pd.DataFrame) -> tuple[dict[str, dict[str, np.ndarray]], list[Skipped]]:
    found, skipped = {}, []
    for run_id, folder, status in runs[["run_id", "path", "status"]].itertuples(index=False):
        if status != RunStatus.OK:
            continue
        got = read_run_predictions(folder)
        if isinstance(got, str):
            skipped.append(Skipped(folder, got))
        elif got is not None:
            found[run_id] = got
    return found, skipped


def gather(*dirs: str | Path, history: bool = True, workers: int = 1, predictions: bool = True) -> Gathered:
    """Every run folder under `dirs`: the runs table (one row per run_id), the per-epoch history
    (empty if `history` is False), the per-example predictions of the ok runs that stored them
    (unless `predictions` is False) and the folders skipped and duplicates dropped. `workers` > 1
    reads folders in that many threads (for network filesystems)."""
    if workers < 1:
        raise ConfigError(f"gather: workers = {workers}; expected an integer >= 1")
    if workers == 1:
        found, skipped = _scan(dirs, None, history)
    else:
        with ThreadPoolExecutor(workers) as pool:
            found, skipped = _scan(dirs, pool, history)
    if not found:
        return Gathered(pd.DataFrame(columns=_order(IDENTITY)), pd.DataFrame(columns=list(HISTORY_IDENTITY)),
                        skipped, [])
    runs, duplicates = _dedupe(_runs_frame([row for row, _ in found]))
    preds, bad_preds = _gather_predictions(runs) if predictions else ({}, [])
    if not history:
        no_history = pd.DataFrame(columns=list(HISTORY_IDENTITY))
        return Gathered(runs, no_history, skipped + bad_preds, duplicates, preds)
    blob = {row["path"]: b for row, b in found}
    hist, bad = _history_frame(runs, [blob[p] for p in runs["path"]])
    return Gathered(runs, hist, skipped + bad + bad_preds, duplicates, preds)


def _warn(g: Gathered) -> None:
    if g.skipped or g.duplicates:
        warnings.warn(g.report(), stacklevel=3)


def _tables(dirs: tuple[str | Path, ...], history: bool) -> pd.DataFrame:
    """Gathered run folders, plus the saved tables of the `dirs` that are a results parquet file or
    a folder holding one (a board folder) and no run folders."""
    saved, folders = [], []
    for d in dirs:
        p = Path(d)
        if p.is_dir() and (p / "results.parquet").is_file() and gather(p, history=False).runs.empty:
            p = p / "results.parquet"
        if p.is_file() and p.suffix == ".parquet":
            runs, hist = read(p)
            if history and hist is None:
                raise ConfigError(f"{p}: no history table beside it ({history_path(p).name})")
            saved.append(hist if history else runs)
        else:
            folders.append(d)
    frames = saved
    if folders or not saved:
        g = gather(*folders, history=history)
        _warn(g)
        frames = [g.history if history else g.runs, *saved]
    frames = [f for f in frames if len(f)] or frames[:1]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def load(*dirs: str | Path) -> pd.DataFrame:
    """The runs table (one row per run, `bench.record.RunRecord` fields flattened) of every run
    folder under `dirs`; a results parquet file, or a board folder holding one, is read as it is.
    Warns about skipped folders and duplicates.

    >>> from bench.results import load
    >>> runs = load("runs/digits-mlp")                    # run folders, searched recursively
    >>> board = load("leaderboards/digits-mlp")           # a board: its results.parquet
    >>> board.groupby("pruner")["top1"].mean()            # doctest: +SKIP
    """
    return _tables(dirs, history=False)


def load_history(*dirs: str | Path) -> pd.DataFrame:
    """The per-epoch history of every run under `dirs`: run_id, pruner, model, dataset (categorical
    columns), seed, then the history.csv columns (epoch, step, loss, top1, sparsity, lr, elapsed_s);
    a board folder or results parquet gives the history table saved beside it.

    >>> hist = load_history("leaderboards/digits-mlp")
    >>> hist.pivot_table(index="epoch", columns="pruner", values="sparsity")   # doctest: +SKIP
    """
    return _tables(dirs, history=True)


def history_path(results: str | Path) -> Path:
    """`x/results.parquet` -> `x/results.history.parquet`."""
    p = Path(results)
    return p.with_name(p.name.removesuffix(".parquet") + ".history.parquet")


def write(g: Gathered, path: str | Path, history: bool = True) -> list[Path]:
    """Write the runs table to `path`, the history (if `history`) and the per-example predictions
    (if any) beside it, together: every file is written in full under a temporary name first,
    then all are renamed into place; a companion file left from an earlier gather that this one
    does not write is removed, so that no table ever sits beside another gather's."""
    path = Path(path)
    parts: list[tuple[Path, Any]] = [(path, lambda f: g.runs.to_parquet(f, index=False))]
    if history:
        parts.append((history_path(path), lambda f: g.history.to_parquet(f, index=False)))
    if g.predictions:
        flat = {f"{run_id}.{k}": a for run_id, arrays in g.predictions.items() for k, a in arrays.items()}
        parts.append((predictions_path(path), lambda f: np.savez_compressed(f, **flat)))
    staged = []
    try:
        for target, write_to in parts:
            tmp = target.with_name(f".{target.name}.gather-tmp")
            atomic_write(tmp, write_to)
            staged.append((tmp, target))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)
    written = [target for _, target in staged]
    for stale in (history_path(path), predictions_path(path)):
        if stale not in written and stale.is_file():
            stale.unlink()
    return written


def read(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """A gathered runs table and its history (None if the history file is missing)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such results file (make one with `bench gather DIR -o {path}`)")
    try:
        runs = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise ConfigError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    missing = [c for c in ("run_id", "pruner", "model", "dataset", "seed", "status") if c not in runs.columns]
    if missing:
        raise ConfigError(f"{path}: not a runs table (no column(s) {', '.join(missing)}); make one with "
                          f"`bench gather DIR -o {path}`")
    if runs.empty:
        raise ConfigError(f"{path}: the runs table has no rows; gather finished runs into it with "
                          f"`bench gather DIR -o {path}`")
    hpath = history_path(path)
    if not hpath.is_file():
        return runs, None
    try:
        return runs, pd.read_parquet(hpath)
    except Exception as e:  # garbage in the history file: say which file, and how to remake it
        raise ConfigError(f"{hpath}: not a readable parquet file ({type(e).__name__}: {e}); remake it with "
                          f"`bench gather DIR -o {path}`") from None


# ------------------------------------------------------------------------------------ CLI


def check_output(path: str | Path) -> Path:
    """Raise ConfigError unless the table (and its history beside it) can be written at `path`."""
    from bench.validate import check_name_lengths

    path = Path(path)
    check_name_lengths(path, "-o")
    for p in (path, history_path(path), predictions_path(path)):
        if p.is_dir():
            raise ConfigError(f"-o {path}: {p} is a folder; give a file name, e.g. {p / 'results.parquet'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"-o {path}: {parent} is not a writable folder")
    return path


def cmd_gather(args: argparse.Namespace) -> int:
    check_output(args.output)
    g = gather(*args.dirs, history=not args.no_history, workers=args.workers)
    print(g.report(), file=sys.stderr)
    if g.runs.empty:
        raise ConfigError(f"gather: no finished runs under {', '.join(args.dirs)}")
    written = write(g, args.output, history=not args.no_history)
    print(f"wrote {' and '.join(map(str, written))}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR",
                   help="run folders or folders holding them (searched recursively)")
    p.add_argument("-o", "--output", default="results.parquet", help="runs table (default: results.parquet)")
    p.add_argument("--no-history", action="store_true", help="skip the per-epoch history (faster)")
    p.add_argument("--workers", type=int, default=1,
                   help="threads reading run folders: more helps only on network filesystems (default: 1)")
    p.set_defaults(func=cmd_gather)
