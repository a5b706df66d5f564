"""Where a sweep's cells stand, from the out folder alone: each cell's result.json and the live
state of the job that last ran it (`.jobs/<run_id>.json`), so `bench status DIR` and a
re-submission agree on what is done, running, pending, failed or stopped. A cell whose job ended
without a result (killed, cancelled, node failure, out of memory, time limit) is `stopped`, not
waited on: re-running the sweep resubmits it and it resumes from its checkpoint. A cell whose run
raised is `failed` (its result.json says why) and is resubmitted only with --retry-failed.
A result.json or job record that is not what the harness writes counts as absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench import executors, registry
from bench.callbacks import read_progress
from bench.code_version import changed as code_changed
from bench.config import Budget, RunConfig
from bench.errors import ConfigError, clip
from bench.io import read_json
from bench.record import finished, problems
from bench.runs import RunDir, RunStatus

MANIFEST = "sweep.json"

ACTIVE = ("running", "pending")
STATES = ("done", "running", "pending", "failed", "stopped", "diverged", "changed", "missing")
UNFINISHED = ("failed", "stopped")  # states that make `bench sweep` and `bench status` exit 1


@dataclass(frozen=True)
class CellStatus:
    """Where one cell stands: done | running | pending | failed (its run raised) | stopped (its
    job ended without a result) | diverged | changed (finished, but its pruner's or plugin's
    source file changed since) | missing (never submitted)."""

    config: RunConfig
    state: str
    job_id: str | None = None
    job_state: str | None = None  # the scheduler's word: PENDING, RUNNING, CANCELLED, ...
    reason: str = ""


def cell_statuses(out: Path, cells: list[RunConfig]) -> list[CellStatus]:
    """The state of every cell, from its result.json and the live state of its last job."""
    records = {c.run_id: read_job(out / ".jobs" / f"{c.run_id}.json") for c in cells}
    # job states first, results second: a job that ends in between has written its result
    job_states = executors.job_states([r for r in records.values() if r])
    statuses = []
    for c in cells:
        result = read_result(out / c.run_id)
        rec = records[c.run_id]
        job_id = rec.get("job_id") if rec else None
        job_state = job_states.get(executors.job_key(rec)) if job_id else None
        status = result.get("status")
        stale = status in (RunStatus.OK, RunStatus.DIVERGED) and code_changed(result.get("code_hashes"), c)
        resubmitted = job_state in executors.ALIVE and _after(rec, result, RunDir.at(out / c.run_id).result)
        if stale and resubmitted:  # training anew
            state, reason = executors.activity(out / c.run_id, rec, job_state), ""
        elif stale:
            state, reason = "changed", ("its pruner's or plugin's source changed since: re-running trains "
                                        "it anew")
        elif status in (RunStatus.OK, RunStatus.DIVERGED):
            state, reason = ("done" if status == RunStatus.OK else "diverged"), ""
        elif job_state in executors.ALIVE:
            state, reason = executors.activity(out / c.run_id, rec, job_state), ""
        elif status == RunStatus.FAILED:
            state, reason = "failed", str(result.get("error", ""))
        elif rec:
            state = "stopped"
            reason = (f"job {job_id} ended ({job_state or 'state unknown'}) without a result; re-running "
                      "the sweep resumes it from its checkpoint")
        else:
            state, reason = "missing", ""
        statuses.append(CellStatus(c, state, job_id, job_state, reason))
    return statuses


def _after(job: dict[str, Any] | None, result: dict[str, Any], path: Path) -> bool:
    """Whether `job` was submitted after `result` (stored at `path`) was written, so it is not the
    job that wrote it, which may linger a moment after writing it. finished_at has whole seconds:
    a resubmission within the same second is told by the file's own time."""
    try:
        submitted = float(job["submitted_ts"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        if submitted > path.stat().st_mtime:
            return True
    except OSError:
        pass
    try:
        return submitted > datetime.fromisoformat(result["finished_at"]).timestamp() + 1
    except (KeyError, TypeError, ValueError):
        return False


def read_result(run_dir: Path) -> dict[str, Any]:
    """The run's result.json if it is a valid record (see bench.record.problems), else {}."""
    r = read_json(RunDir.at(run_dir).result)
    return r if problems(r) is None else {}


def read_job(path: Path) -> dict[str, Any] | None:
    """A `.jobs/<run_id>.json` record, or None if missing or not one the harness writes."""
    r = read_json(path)
    ok = isinstance(r, dict) and isinstance(r.get("job_id"), str | int) and not isinstance(r["job_id"], bool)
    return r if ok else None


def read_manifest(out: Path, required: bool = True) -> tuple[dict[str, Any], list[RunConfig]]:
    """The out folder's manifest and its cells. Raises ConfigError naming the file if it is
    missing (unless not `required`: then ({}, [])) or is not a manifest the harness writes."""
    path = out / MANIFEST
    if not path.exists() and not required:
        return {}, []
    manifest = read_json(path)
    if manifest is None and not path.exists():
        raise ConfigError(
            f"{out}: no {MANIFEST} here; is it a sweep's out folder? (`bench sweep FILE --out DIR` writes it)"
        )
    try:
        if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), list):
            raise ValueError("not a JSON object with a list of cells")
        imports = manifest.get("imports", [])
        if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
            raise ValueError("imports is not a list of module names")
    except ValueError as e:
        raise ConfigError(f"{path}: not a sweep manifest the harness can read ({e}); move it away and "
                          "re-run `bench sweep FILE --out DIR` to write a new one") from None
    try:
        cells = [RunConfig.from_dict({k: v for k, v in d.items() if k != "run_id"})
                 for d in manifest["cells"]]
    except (ValueError, TypeError, AttributeError, KeyError) as e:  # ConfigError is a ValueError
        raise ConfigError(
            f"{path}: not a sweep manifest the harness can read ({type(e).__name__}: {e}); move it away "
            "and re-run `bench sweep FILE --out DIR` to write a new one"
        ) from None
    check_plugins(path, imports, cells)
    return manifest, cells


def check_plugins(path: Path, imports: list[str], cells: list[RunConfig]) -> None:
    """Raise ConfigError saying which `--import` to add when the cells name pruners, models or
    data sets that no imported module registers and the manifest lists modules not imported.

    The manifest's modules are never imported from here: a results folder is data, and looking at
    one someone else wrote (`bench status`, `bench sweep --out`, `bench board --runs`) must not
    run their code. A trust flag (import the manifest's modules when asked) was the alternative;
    it was not chosen because the `--import` the user types names the very module that runs, so
    the user sees what they trust, where a flag would vouch for whatever the folder lists now.
    """
    missing = [m for m in imports if m not in registry.loaded_plugins()]
    if not missing:
        return  # an unknown name is then reported, with the valid choices, where it is resolved
    known = {
        "pruner": set(registry.PRUNERS.names()),
        "model": set(registry.MODELS.names()),
        "dataset": set(registry.DATASETS.names()),
    }
    unknown = sorted({f"{kind} {getattr(c, kind)!r}" for c in cells for kind in known
                      if getattr(c, kind) not in known[kind]})
    if unknown:
        flags = " ".join(f"--import {shlex.quote(m)}" for m in missing)
        raise ConfigError(
            f"{path} names {', '.join(clip(u) for u in unknown[:5])}{' ...' if len(unknown) > 5 else ''}, "
            f"registered by modules it lists but that are never imported from a results folder; "
            f"if you trust them, add {clip(flags, 400)}"
        )


def wait_for(
    out: Path, cells: list[RunConfig], poll_s: float, progress: bool = True, jobs: list[Any] = ()
) -> list[CellStatus]:
    """Poll until no cell is running or pending (dead jobs count as failed), with a progress bar."""
    bar = tqdm(total=len(cells), disable=not progress, unit="run", desc="sweep")
    try:
        while True:
            for job in jobs:  # reap finished local jobs (else they linger as zombies)
                job.done()
            statuses = cell_statuses(out, cells)
            counts = Counter(s.state for s in statuses)
            bar.n = len(cells) - counts["running"] - counts["pending"]
            bar.set_postfix({k: v for k, v in counts.items() if v}, refresh=True)
            if not counts["running"] and not counts["pending"]:
                return statuses
            time.sleep(poll_s)
    finally:
        bar.close()


def records(statuses: list[CellStatus], out: Path) -> list[dict[str, Any]]:
    """result.json of each cell; for a cell without one, its identity, state and reason."""
    out_records = []
    for s in statuses:
        r = read_result(out / s.config.run_id)
        # a result left by an earlier attempt does not describe a cell that runs again or died
        failed_before = s.state == "failed" and r.get("status") != RunStatus.FAILED
        stale = s.state in (*ACTIVE, "stopped") or failed_before
        if not r or stale:
            r = {**s.config.identity(), "status": s.state, "job_id": s.job_id, "job_state": s.job_state}
            if s.reason:
                r["error"] = s.reason
        out_records.append(r)
    return out_records


def to_submit(statuses: list[CellStatus], retry_failed: bool = False, force: bool = False) -> list[RunConfig]:
    """Cells never submitted, stopped (they resume from their checkpoint) or changed (they train
    anew); failed ones with
    `retry_failed`; with `force`, done, diverged and failed ones too (to retrain from scratch).
    Never a running or pending one (so no run is ever trained twice at once)."""
    again = {"missing", "stopped", "changed"} | ({"failed"} if retry_failed or force else set())
    again |= {"done", "diverged"} if force else set()
    return [s.config for s in statuses if s.state in again]


def finished_result(out: Path | None, config: RunConfig) -> dict[str, Any] | None:
    """The cell's finished (ok or diverged) result in `out`, if there is one."""
    if out is None:
        return None
    r = read_json(RunDir(out, config.run_id).result)
    return r if finished(r) else None


# ----------------------------------------------------------------------------------------- CLI


def cmd_status(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    manifest, cells = read_manifest(out)
    statuses = wait_for(out, cells, args.poll, True) if args.wait else cell_statuses(out, cells)
    counts = Counter(s.state for s in statuses)
    sweeps = [s for s in manifest.get("sweeps", []) if isinstance(s, dict)]
    names = ", ".join(dict.fromkeys(str(s.get("name")) for s in sweeps))
    print(f"{out}: sweep {names or manifest.get('name')}, {len(cells)} cells")
    shown = [k for k in STATES if k != "changed" or counts[k]]  # changed: only when there are some
    print("  " + "   ".join(f"{k} {counts[k]}" for k in shown))
    jobs = Counter({s.job_id: s.job_state for s in statuses if s.job_state}.values())
    if jobs:
        print("  jobs: " + ", ".join(f"{k} {v}" for k, v in sorted(jobs.items())))
    for s in statuses:
        if args.verbose or s.state in UNFINISHED:
            job = f" job {s.job_id} ({s.job_state})" if s.job_id else ""
            print(f"  {s.state:<8} {s.config.run_id}{job}{': ' + s.reason if s.reason else ''}")
            if args.verbose:
                print(f"           {settings(s.config)}")
            line = read_progress(out / s.config.run_id) if args.verbose and s.state != "done" else None
            if line:
                print(f"           {line}")
    sets = "".join(f" --set {shlex.quote(o)}" for o in manifest.get("overrides", []))
    if counts["stopped"]:
        print(f"resume the stopped ones with: bench sweep {manifest.get('path')}{sets} --out {out}")
    if counts["changed"]:
        print(f"retrain the changed ones (the old results are kept) with: bench sweep {manifest.get('path')}"
              f"{sets} --out {out}")
    if counts["failed"]:
        print(f"resubmit the failed ones with: bench sweep {manifest.get('path')}{sets} --out {out} "
              "--retry-failed")
    return 1 if any(counts[k] for k in UNFINISHED) else 0


def settings(config: RunConfig) -> str:
    """A cell's hyperparameters in one line: the pruner's (all of them, resolved) and the budget
    keys that differ from the default budget, e.g. `hparams c=0.02 mu=0.6 | budget epochs=4`."""
    hparams = " ".join(f"{k}={v}" for k, v in config.hparams.items()) or "(none)"
    default = dataclasses.asdict(Budget())
    budget = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(config.budget).items()
                      if v != default[k] and k != "init_sha256") or "(default)"
    return f"hparams {hparams} | budget {budget}"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="the sweep's out folder")
    p.add_argument(
        "--wait", action="store_true", help="wait (with a progress bar) until nothing is left to run"
    )
    p.add_argument("--poll", type=float, default=5.0, help="seconds between checks with --wait")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="one line per cell with its hyperparameters, and the last epoch line (epoch k/N, "
                   "loss, top-1, sparsity, ETA) of each cell not done")
    p.set_defaults(func=cmd_status)
