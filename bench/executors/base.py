"""The executor interface, the job every executor runs, and the job records status reads.

An executor runs sweep cells somewhere (this machine, a SLURM cluster) through submitit. Each is
one module of this package defining a subclass of `Executor`: its `Options` dataclass (whose
fields become CLI flags of `bench sweep` and `bench board`), how it validates them, submits
cells, and tells whether the jobs it started are alive. `bench.executors` finds every module.

A job is a `RunJob`, a `submitit.helpers.Checkpointable`: on preemption or timeout submitit
requeues it (its `checkpoint()` returns a DelayedSubmission of itself) and `bench.run.job.run`
resumes each cell from its last epoch checkpoint, so the final result equals an uninterrupted
run's. For each cell the executor writes `out/.jobs/<run_id>.json`: the job that last ran it.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import submitit

from bench.config import RunConfig
from bench.io import read_json, write_json

if TYPE_CHECKING:
    from bench.estimate import Estimate

MAX_TIMEOUTS = 10  # requeues after a time limit before submitit gives up (preemptions do not count)


@dataclass(frozen=True)
class NoOptions:
    """This executor has no options."""


class Executor(ABC):
    """Where cells run. Subclasses set `name`, `Options` and implement the abstract methods."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    waits: ClassVar[bool] = True  # `bench sweep` waits for the cells by default
    poll_s: ClassVar[float] = 5.0  # seconds between status checks while waiting
    stops_with_sweep: ClassVar[bool] = False  # `bench sweep` interrupted while waiting cancels its jobs
    runs_here: ClassVar[bool] = False  # its jobs train on this machine: data and devices checked here

    def __init__(self, options: Any, tasks: int = 1) -> None:
        """`options`: a validated `Options`; `tasks` > 1: each run is that many torch.distributed
        processes (one GPU each, or CPU processes on gloo)."""
        self.options = options
        self.tasks = tasks

    # -- submitting --------------------------------------------------------------------------
    @abstractmethod
    def submit(self, cells: list[RunConfig], out: Path, name: str) -> list[submitit.Job]:
        """Start jobs for `cells` (none is done, running or pending) and `record_jobs` them."""

    @abstractmethod
    def lanes(self, n_cells: int) -> int:
        """How many cells run at once (for the dry run's wall-time estimate)."""

    def cell_threads(self, n_cells: int) -> int | None:
        """The torch threads each cell runs with on a CPU when `n_cells` run here (the dry run
        times its probes with as many); None: not known here (another machine's)."""
        return None

    def dry_run_check(self, est: Estimate) -> list[str]:
        """Lines the dry run adds for this executor (limits the cells may hit); raises ConfigError
        for a sweep whose cells cannot finish under this executor's limits."""
        return []

    def check_cells(self, cells: list[RunConfig]) -> None:
        """Raise ConfigError for cells this executor cannot run as configured (before anything is
        written or submitted; the dry run calls it too). Default: any cell runs."""
        return None

    # -- job states: class methods, since `bench status` has only the job records ------------
    @classmethod
    @abstractmethod
    def job_states(cls, records: list[dict[str, Any]]) -> dict[str, str]:
        """`job_key(record)` -> scheduler state (PENDING, RUNNING, ..., or how it ended)."""

    @classmethod
    def job_key(cls, record: dict[str, Any]) -> str:
        return str(record.get("job_id"))

    @classmethod
    @abstractmethod
    def activity(cls, run_dir: Path, record: dict[str, Any], state: str) -> str:
        """'pending' or 'running' for a cell whose job is alive (state in ALIVE)."""


# Scheduler states of a job that is still queued or running; anything else has ended.
ALIVE = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
})


def record_jobs(out: Path, executor: str, jobs: Sequence[submitit.Job], groups: Sequence[list[RunConfig]],
                extra: Sequence[dict[str, Any]] | None = None) -> None:
    """`out/.jobs/<run_id>.json` for each cell of each job's group: the job that runs it now, and
    the ones that ran it before."""
    now = time.time()
    for i, (job, group) in enumerate(zip(jobs, groups, strict=True)):
        for config in group:
            path = out / ".jobs" / f"{config.run_id}.json"
            old = read_json(path)
            old = old if isinstance(old, dict) else {}  # a corrupt record is replaced
            write_json(path, {
                "run_id": config.run_id,
                "executor": executor,
                "job_id": job.job_id,
                "submitted_ts": now,
                "logs": str(job.paths.stdout.parent),
                "earlier_jobs": [*_list(old.get("earlier_jobs")), old["job_id"]] if "job_id" in old else [],
                **(extra[i] if extra else {}),
            })


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class RunJob(submitit.helpers.Checkpointable):
    """A submitit job: runs its cells one after another (each resumes from its checkpoint).

    With several tasks every task joins one torch.distributed group (NCCL on GPU, gloo on CPU)
    and the trainer shards each batch across them. A cell that raises, even before training
    (a pruner name its process cannot resolve, say), is recorded as `failed` with the error.
    """

    def __init__(self, configs: list[RunConfig], out: str | Path, threads: int | None = None,
                 run_ids: list[str] | None = None) -> None:
        self.configs, self.out, self.threads = list(configs), str(out), threads
        # computed where the names resolved, so a failure to resolve them here can be recorded
        self.run_ids = run_ids or [c.run_id for c in self.configs]

    def __call__(self) -> list[dict[str, Any]]:
        import torch
        import torch.distributed as dist

        from bench.run.distributed import init_group
        from bench.run.job import record_failure, run

        torch.set_num_threads(self.threads or len(os.sched_getaffinity(0)))
        distributed = submitit.JobEnvironment().num_tasks > 1
        if distributed:
            env = submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False, overwrite=True
            )
            if torch.cuda.is_available():  # a site that shows each task only its own GPU: device 0
                torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
            init_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            results, errors = [], []
            for config, run_id in zip(self.configs, self.run_ids, strict=True):
                try:
                    results.append(run(config, self.out))
                except Exception as e:  # recorded in the run's result.json; go on with the next cell
                    record_failure(config, Path(self.out) / run_id, e)
                    errors.append(f"{run_id}: {type(e).__name__}: {e}")
            if errors:
                raise RuntimeError(f"{len(errors)} run(s) failed: " + "; ".join(errors))
            return results
        finally:
            if distributed:
                dist.destroy_process_group()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption or timeout: requeue this same job. `run` then returns
        the finished cells at once and resumes the others from their last epoch checkpoint."""
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
