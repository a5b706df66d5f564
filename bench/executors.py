"""Where sweep cells run, through submitit, and how to tell whether their jobs are alive.

- local: submitit's LocalExecutor. A few long-lived jobs (one per core by default, with
  torch threads = cores / jobs), each running its share of the cells one after another, so
  parallelism stays bounded without a scheduler and `--no-wait` can return at once.
- slurm: submitit's SlurmExecutor. The whole submission is ONE job array (one `sbatch`), one
  task per cell, with the resources of a profile from `slurm/profiles/NAME.toml`.

A job is a `submitit.helpers.Checkpointable`: on preemption or timeout submitit requeues it
(its `checkpoint()` returns a DelayedSubmission of itself) and `bench.train.run` resumes each
cell from its last epoch checkpoint, so the final result equals an uninterrupted run's.
"""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

from bench.config import RunConfig, _check, build_dataclass, hp
from bench.errors import ConfigError
from bench.io import read_json, write_json

EXECUTORS = ("local", "slurm")
PROFILE_DIR = Path("slurm") / "profiles"
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # the local executor's default (2 min) would kill long sweeps
MAX_TIMEOUTS = 10  # requeues after a time limit before submitit gives up (preemptions do not count)
# Scheduler states of a job that is still queued or running; anything else has ended.
ALIVE = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
    }
)
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED", "STOPPED"})


# ------------------------------------------------------------------------------------ profiles


@dataclass(frozen=True)
class Profile:
    """One cluster's resources for every array task (the keys of slurm/profiles/NAME.toml)."""

    partition: str | None = hp(None, "--partition")
    gpus_per_node: int = hp(0, "--gpus-per-node (with --gpus N > 1: N per task group)")
    cpus_per_task: int = hp(1, "--cpus-per-task; also the job's torch threads")
    mem_gb: float | None = hp(None, "--mem in GB")
    timeout_min: int = hp(60, "--time in minutes, >= 2 (submitit signals USR2 90 s before the limit)")
    array_parallelism: int = hp(256, "array tasks running at once (the %N of --array)")
    account: str | None = hp(None, "--account")
    qos: str | None = hp(None, "--qos")
    constraint: str | None = hp(None, "--constraint")

    def __post_init__(self) -> None:
        _check(self.gpus_per_node >= 0, "gpus_per_node", self.gpus_per_node, "must be >= 0")
        _check(self.cpus_per_task >= 1, "cpus_per_task", self.cpus_per_task, "must be >= 1")
        _check(self.mem_gb is None or self.mem_gb > 0, "mem_gb", self.mem_gb, "must be > 0")
        _check(
            self.timeout_min >= 2,
            "timeout_min",
            self.timeout_min,
            "must be >= 2 (submitit signals USR2 90 s before the time limit)",
        )
        _check(self.array_parallelism >= 1, "array_parallelism", self.array_parallelism, "must be >= 1")
        for key in ("partition", "account", "qos", "constraint"):
            value = getattr(self, key)
            # submitit shell-quotes each #SBATCH value, but a newline would still end the comment
            # line and put the rest of the value on a line of its own, which the job's shell runs
            _check(
                value is None or value.isprintable(),
                key,
                value,
                "must be printable characters on one line (it is written into the sbatch script)",
            )


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ./slurm/profiles, then the repository's."""
    dirs = [Path.cwd() / PROFILE_DIR, Path(__file__).resolve().parents[1] / PROFILE_DIR]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def profile_names() -> list[str]:
    return sorted({p.stem for d in profile_dirs() for p in d.glob("*.toml")})


def load_profile(profile: str | Path | Profile | None) -> Profile:
    """A profile by name (slurm/profiles/NAME.toml) or path; unknown keys and bad values raise
    ConfigError naming the file, the key and the valid keys."""
    if isinstance(profile, Profile):
        return profile
    available = ", ".join(profile_names()) or "(none found)"
    if profile is None:
        raise ConfigError(f"--executor slurm needs --profile NAME; available: {available}")
    name = str(profile)
    if name.endswith(".toml") or os.sep in name:
        path = Path(name)
    else:
        path = next(
            (d / f"{name}.toml" for d in profile_dirs() if (d / f"{name}.toml").is_file()),
            PROFILE_DIR / f"{name}.toml",
        )
    try:
        data = tomllib.loads(path.read_text())
    except OSError:
        raise ConfigError(f"--profile {name}: no such profile ({path}); available: {available}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return build_dataclass(Profile, data, str(path))


def slurm_parameters(profile: Profile, name: str, tasks: int = 1) -> dict[str, Any]:
    """SlurmExecutor parameters (sbatch flags) for a profile; `tasks` > 1: torch.distributed
    tasks on one node, one GPU each if the profile has GPUs."""
    params: dict[str, Any] = {
        "job_name": f"bench-{name}",
        "time": profile.timeout_min,
        "cpus_per_task": profile.cpus_per_task,
        "array_parallelism": profile.array_parallelism,
        # requeue-able whatever the site's JobRequeue default: submitit requeues on timeout
        "additional_parameters": {"requeue": True},
    }
    if tasks > 1:
        params["ntasks_per_node"] = tasks
    gpus = tasks if tasks > 1 and profile.gpus_per_node else profile.gpus_per_node
    if gpus:
        params["gpus_per_node"] = gpus
    if profile.mem_gb is not None:  # submitit's own conversion: whole GB, else MB
        gb = profile.mem_gb
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key) is not None:
            params[key] = getattr(profile, key)
    return params


def sbatch_script(profile: Profile, name: str, folder: str | Path, n_cells: int, tasks: int = 1) -> str:
    """The sbatch script submitit writes for `n_cells` cells (an array when more than one) under
    this profile: the same parameters and command as `submit`, without a cluster."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(folder).expanduser().absolute()
    # SlurmExecutor._submitit_command_str
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(
        command=command,
        folder=folder,
        map_count=n_cells if n_cells > 1 else None,
        **slurm_parameters(profile, name, tasks),
    )


# ----------------------------------------------------------------------------------------- jobs


class RunJob(submitit.helpers.Checkpointable):
    """A submitit job: runs its cells one after another (each resumes from its checkpoint).

    With several tasks (`tasks_per_node` > 1) every task joins one torch.distributed group
    (NCCL on GPU, gloo on CPU) and the trainer shards each batch across them.
    """

    def __init__(self, configs: list[RunConfig], out: str | Path, threads: int | None = None) -> None:
        self.configs, self.out, self.threads = list(configs), str(out), threads

    def __call__(self) -> list[dict[str, Any]]:
        import torch
        import torch.distributed as dist

        from bench.train import run

        torch.set_num_threads(self.threads or len(os.sched_getaffinity(0)))
        distributed = submitit.JobEnvironment().num_tasks > 1
        if distributed:
            env = submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False, overwrite=True
            )
            if torch.cuda.is_available():
                torch.cuda.set_device(env.local_rank)
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        try:
            results, errors = [], []
            for config in self.configs:
                try:
                    results.append(run(config, self.out))
                except Exception as e:  # recorded in the run's result.json; go on with the next cell
                    errors.append(f"{config.run_id}: {type(e).__name__}: {e}")
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


def local_devices() -> tuple[int, int]:
    """(CPU cores this process may use, CUDA devices)."""
    import torch

    return len(os.sched_getaffinity(0)), torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_parallelism(tasks: int = 1) -> int:
    """Default number of local jobs at once: one per GPU group, else one per `tasks` cores."""
    cores, gpus = local_devices()
    return max(1, (gpus or cores) // tasks)


def submit(
    cells: list[RunConfig],
    out: Path,
    executor: str,
    profile: Profile | None,
    name: str,
    tasks: int = 1,
    parallel: int | None = None,
) -> list[submitit.Job]:
    """Submit `cells` and record, for each, its job in `out/.jobs/<run_id>.json`."""
    if not cells:
        return []
    folder = out.absolute() / ".submitit" / "%j"
    assignments: list[list[RunConfig]]
    if executor == "local":
        cores, n_gpus = local_devices()
        lanes = min(parallel or local_parallelism(tasks), len(cells))
        assignments = [cells[i::lanes] for i in range(lanes)]
        threads = max(1, cores // (lanes * tasks))
        ex = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
        jobs = []
        for i, lane in enumerate(assignments):
            gpus = tuple((i * tasks + k) % n_gpus for k in range(tasks)) if n_gpus else ()
            # submitit sets CUDA_VISIBLE_DEVICES from these: each local job gets its own GPU(s)
            ex.update_parameters(
                timeout_min=LOCAL_TIMEOUT_MIN,
                tasks_per_node=tasks,
                gpus_per_node=len(gpus),
                visible_gpus=gpus,
            )
            jobs.append(ex.submit(RunJob(lane, out, threads)))
    else:
        assert profile is not None
        assignments = [[c] for c in cells]
        ex = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
        ex.update_parameters(**slurm_parameters(profile, name, tasks))
        with ex.batch():  # one sbatch for the whole array
            jobs = [ex.submit(RunJob(a, out, profile.cpus_per_task)) for a in assignments]
    now = time.time()
    for job, group in zip(jobs, assignments, strict=True):
        job_id = job.job_id
        start = _start_ticks(int(job_id)) if executor == "local" else None
        for config in group:
            path = out / ".jobs" / f"{config.run_id}.json"
            old = read_json(path) or {}
            write_json(
                path,
                {
                    "run_id": config.run_id,
                    "executor": executor,
                    "job_id": job_id,
                    "start_ticks": start,
                    "submitted_ts": now,
                    "logs": str(job.paths.stdout.parent),
                    "earlier_jobs": [*old.get("earlier_jobs", []), old["job_id"]] if "job_id" in old else [],
                },
            )
    return jobs


# ----------------------------------------------------------------------------------- job states


def job_key(record: dict[str, Any]) -> str:
    """A job's identity: its id, and for a local job (a pid) also the process's start time."""
    if record.get("executor") == "local":
        return f"{record.get('job_id')}@{record.get('start_ticks')}"
    return str(record.get("job_id"))


def job_states(records: list[dict[str, Any]]) -> dict[str, str]:
    """`job_key` -> scheduler state for the jobs of `.jobs` records (local: RUNNING or EXITED)."""
    states: dict[str, str] = {}
    slurm_ids = set()
    for r in records:
        if r.get("executor") == "local":
            states[job_key(r)] = "RUNNING" if _local_alive(r) else "EXITED"
        elif r.get("job_id"):
            slurm_ids.add(str(r["job_id"]))
    if slurm_ids:
        states.update(slurm_states(slurm_ids))
    return states


def slurm_states(job_ids: set[str]) -> dict[str, str]:
    """squeue says which jobs are alive (the controller's view); sacct how the others ended."""
    live = _command(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"])
    states = {}
    for line in live.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in job_ids:
            states[job_id] = state
    ended = job_ids - set(states)
    if ended:
        mains = sorted({j.split("_")[0] for j in ended})
        info = SlurmInfoWatcher().read_info(
            _command(["sacct", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(mains)])
        )
        for job_id in ended:
            state = info.get(job_id, {}).get("State") or "UNKNOWN"
            state = state.split()[0]  # "CANCELLED by 0"
            # squeue is the authority on liveness; sacct can lag behind a job that just ended
            states[job_id] = state if state not in ALIVE else "ENDED"
    return states


def _command(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", "") or e
        raise ConfigError(
            f"cannot query SLURM job states ({cmd[0]}: {str(detail).strip()}); is the "
            "cluster up? (test cluster: bash slurm/cluster/start.sh)"
        ) from None


def cell_activity(run_dir: Path, record: dict[str, Any], job_state: str) -> str:
    """'pending' or 'running' for a cell whose job is alive."""
    if record.get("executor") != "local":
        return "pending" if job_state in WAITING else "running"
    # a local job runs its cells in turn: a cell is running once its job wrote its config.json
    try:
        started = (run_dir / "config.json").stat().st_mtime >= record.get("submitted_ts", 0) - 1
    except OSError:
        started = False
    return "running" if started else "pending"


def _start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): a pid with another start is another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _local_alive(record: dict[str, Any]) -> bool:
    pid = int(record["job_id"])
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
