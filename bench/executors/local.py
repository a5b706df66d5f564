"""`local`: submitit's LocalExecutor on this machine (the default).

A few long-lived jobs (one per core, or per GPU, by default; torch threads = cores / jobs), each
running its share of the cells one after another: parallelism stays bounded without a scheduler,
and `--no-wait` can return at once. A job is a process; it is alive while that pid runs with the
start time recorded at submission (a recycled pid is another process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from bench.config import RunConfig, _check, hp
from bench.executors.base import MAX_TIMEOUTS, Executor, RunJob, record_jobs
from bench.runs import RunDir

LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # the local executor's default (2 min) would kill long sweeps


@dataclass(frozen=True)
class LocalOptions:
    parallel: int | None = hp(None, "jobs at once (default: one per GPU, else one per CPU core)")

    def __post_init__(self) -> None:
        _check(self.parallel is None or self.parallel >= 1, "parallel", self.parallel, "must be >= 1")


def local_devices() -> tuple[int, int]:
    """(CPU cores this process may use, CUDA devices)."""
    import torch

    return len(os.sched_getaffinity(0)), torch.cuda.device_count() if torch.cuda.is_available() else 0


class Local(Executor):
    name = "local"
    runs_here = True
    description = "this machine: submitit's LocalExecutor, a few jobs in parallel"
    Options = LocalOptions
    waits = True
    poll_s = 1.0
    stops_with_sweep = True  # its jobs are this process's children: Ctrl-C stops them too

    def lanes(self, n_cells: int) -> int:
        cores, gpus = local_devices()
        default = max(1, (gpus or cores) // self.tasks)
        return max(1, min(self.options.parallel or default, n_cells))

    def cell_threads(self, n_cells: int) -> int:
        return max(1, local_devices()[0] // (self.lanes(n_cells) * self.tasks))

    def submit(self, cells: list[RunConfig], out: Path, name: str) -> list[submitit.Job]:
        if not cells:
            return []
        n_gpus = local_devices()[1]
        lanes = self.lanes(len(cells))
        groups = balanced(cells, lanes)
        threads = self.cell_threads(len(cells))
        ex = submitit.LocalExecutor(out.absolute() / ".submitit" / "%j", max_num_timeout=MAX_TIMEOUTS)
        jobs = []
        for i, group in enumerate(groups):
            gpus = tuple((i * self.tasks + k) % n_gpus for k in range(self.tasks)) if n_gpus else ()
            # submitit sets CUDA_VISIBLE_DEVICES from these: each local job gets its own GPU(s)
            ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, tasks_per_node=self.tasks,
                                 gpus_per_node=len(gpus), visible_gpus=gpus)
            jobs.append(ex.submit(RunJob(group, out, threads)))
        starts = [{"start_ticks": _start_ticks(int(j.job_id))} for j in jobs]
        record_jobs(out, self.name, jobs, groups, starts)
        return jobs

    @classmethod
    def job_key(cls, record: dict[str, Any]) -> str:
        return f"{record.get('job_id')}@{record.get('start_ticks')}"

    @classmethod
    def job_states(cls, records: list[dict[str, Any]]) -> dict[str, str]:
        return {cls.job_key(r): "RUNNING" if _alive(r) else "EXITED" for r in records}

    @classmethod
    def activity(cls, run_dir: Path, record: dict[str, Any], state: str) -> str:
        # a local job runs its cells in turn: a cell is running once its job wrote its config.json
        try:
            started = RunDir.at(run_dir).config.stat().st_mtime >= record.get("submitted_ts", 0) - 1
        except OSError:
            started = False
        return "running" if started else "pending"


def balanced(cells: list[RunConfig], lanes: int) -> list[list[RunConfig]]:
    """The cells split into `lanes` jobs: longest first (by `budget_multiple`: IMP's full-budget
    rounds), each to the job with the least work so far, so that no job is left running the long
    cells alone at the end. Equal cells keep the sweep's order, dealt out in turn."""
    from bench.estimate import budget_multiple

    cost = {c.run_id: budget_multiple(c) for c in cells}
    groups: list[list[RunConfig]] = [[] for _ in range(lanes)]
    loads = [0.0] * lanes
    for c in sorted(cells, key=lambda c: -cost[c.run_id]):  # stable: the sweep's order among equals
        i = loads.index(min(loads))
        groups[i].append(c)
        loads[i] += cost[c.run_id]
    return groups


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): a pid with another start is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _alive(record: dict[str, Any]) -> bool:
    try:
        pid = int(record["job_id"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (macOS): the pid is all we have
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == record.get("start_ticks")
