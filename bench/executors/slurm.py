"""`slurm`: submitit's SlurmExecutor. A whole submission is ONE job array (one `sbatch`), one task
per cell, with the resources of a profile from `slurm/profiles/NAME.toml` (`--profile NAME`, or
a path). Profiles are validated before anything is submitted. Liveness: squeue is the authority
on jobs that are alive; sacct says how the others ended.
"""

from __future__ import annotations

import dataclasses
import getpass
import math
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.slurm.slurm import SlurmInfoWatcher

from bench.config import RunConfig, _check, build_dataclass, hp
from bench.errors import ConfigError
from bench.executors.base import ALIVE, MAX_TIMEOUTS, Executor, RunJob, record_jobs

if TYPE_CHECKING:
    from bench.estimate import CellTime, Estimate

PROFILE_DIR = Path("slurm") / "profiles"
USR2_LEAD_S = 90  # submitit asks SLURM for USR2 this long before the time limit, then requeues
MAX_MEM_GB = 2**20  # 1 PiB: more is a typo (and overflows SLURM's megabyte count)
WAITING = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SUSPENDED", "STOPPED"})


@dataclass(frozen=True)
class SlurmOptions:
    profile: str | None = hp(None, "SLURM profile: NAME (slurm/profiles/NAME.toml) or a .toml path")


class Slurm(Executor):
    name = "slurm"
    description = "a SLURM cluster: one job array per submission, resources from a profile"
    Options = SlurmOptions
    waits = False  # return once the array is queued; `bench status DIR --wait` follows it
    poll_s = 5.0

    def __init__(self, options: SlurmOptions, tasks: int = 1) -> None:
        super().__init__(options, tasks)
        self.profile = load_profile(options.profile)

    def lanes(self, n_cells: int) -> int:
        return max(1, min(self.profile.array_parallelism, n_cells))

    def submit(self, cells: list[RunConfig], out: Path, name: str) -> list[submitit.Job]:
        if not cells:
            return []
        check_folder(out.absolute())
        groups = [[c] for c in cells]
        ex = submitit.SlurmExecutor(out.absolute() / ".submitit" / "%j", max_num_timeout=MAX_TIMEOUTS)
        ex.update_parameters(**slurm_parameters(self.profile, name, self.tasks))
        with ex.batch():  # one sbatch for the whole array
            jobs = [ex.submit(RunJob(g, out, self.profile.cpus_per_task)) for g in groups]
        record_jobs(out, self.name, jobs, groups)
        return jobs

    def check_cells(self, cells: list[RunConfig]) -> None:
        """A requeued run resumes from its last checkpoint: one written less often than a run
        lasts (`checkpoint_every_s`) would make every requeue start over."""
        usable = self.profile.timeout_min * 60 - USR2_LEAD_S
        for every in sorted({c.checkpoint_every_s for c in cells}):
            if every >= usable:
                raise ConfigError(
                    f"checkpoint_every_s = {every:g}: a run of profile {self.options.profile} trains at "
                    f"most {usable} s before it is requeued (time limit {self.profile.timeout_min} min, "
                    f"less {USR2_LEAD_S} s), so it would never checkpoint before its time runs out; valid "
                    f"choices: 0 (every epoch) up to below {usable}")

    def dry_run_check(self, est: Estimate) -> list[str]:
        """Refuse (ConfigError) a sweep whose longest cell cannot finish within the profile's time
        limit x (1 + MAX_TIMEOUTS) runs; a probe timed on another kind of device than the
        profile's is not checked: the note says the step time that would fit."""
        p, runs, notes = self.profile, 1 + MAX_TIMEOUTS, []
        where = (f"profile {self.options.profile} (time limit {p.timeout_min} min x {runs} runs: the "
                 f"first and {MAX_TIMEOUTS} requeues)")
        for label, cell in sorted(est.cells.items(), key=lambda kv: -kv[1].total_s):
            gpu = p.gpus_per_node > 0
            allowed = max_step_s(cell.epochs, cell.steps_per_epoch, p.timeout_min, cell.setup_s)
            fits_if = f"it fits if a step takes at most {allowed:.3g} s"
            if cell.timed_on != "finished runs" and (cell.timed_on == "cuda") != gpu:
                notes.append(f"{label}: timed on {cell.timed_on}, not on the profile's "
                             f"{'GPUs' if gpu else 'CPUs'}, so not checked against {where}: {fits_if} "
                             "there (a dry run on such a node checks it)")
                continue
            # a probe times one device; with --gpus N assume N times as fast: refuse only what cannot fit
            speedup = self.tasks if cell.timed_on != "finished runs" else 1
            n = segments(cell, p.timeout_min, speedup)
            if n is None or n > runs:
                need = "an epoch does not fit in one run" if n is None else f"it needs {n} runs"
                raise ConfigError(
                    f"{label}: a cell needs about {cell.total_s / speedup / 3600:.3g} h ({cell.epochs} "
                    f"epochs of {cell.epoch_s / speedup:.3g} s, timed on {cell.timed_on}), more than "
                    f"{where} allows: {need}. {fits_if[0].upper()}{fits_if[1:]}; use a profile with a "
                    "longer time limit, more GPUs (--gpus N), bf16, or a smaller budget"
                )
            if n > 1:
                notes.append(f"{label}: about {n} runs of {p.timeout_min} min (requeued {n - 1} time(s), "
                             "resuming)")
        return notes

    @classmethod
    def job_states(cls, records: list[dict[str, Any]]) -> dict[str, str]:
        ids = {str(r["job_id"]) for r in records if r.get("job_id")}
        return slurm_states(ids) if ids else {}

    @classmethod
    def activity(cls, run_dir: Path, record: dict[str, Any], state: str) -> str:
        return "pending" if state in WAITING else "running"


def segments(cell: CellTime, timeout_min: int, speedup: float = 1.0) -> int | None:
    """Runs of `timeout_min` a cell needs (None: not one epoch fits in a run). A run checkpoints at
    epoch ends, so each run does the whole epochs that fit after setup and before the signal."""
    epoch_s = cell.epoch_s / speedup
    usable = timeout_min * 60 - USR2_LEAD_S - cell.setup_s
    per_run = math.floor(usable / epoch_s) if epoch_s > 0 else cell.epochs
    return math.ceil(cell.epochs / per_run) if per_run >= 1 else None


def max_step_s(epochs: int, steps_per_epoch: int, timeout_min: int, setup_s: float = 0.0) -> float:
    """The longest step (seconds, one global batch) with which `epochs` epochs finish within
    `timeout_min` x (1 + MAX_TIMEOUTS) runs."""
    per_run = math.ceil(epochs / (1 + MAX_TIMEOUTS))
    return (timeout_min * 60 - USR2_LEAD_S - setup_s) / per_run / max(steps_per_epoch, 1)


# ------------------------------------------------------------------------------------ profiles


# sbatch options a profile sets through its own keys, and those the harness sets itself
PROFILE_OWNED = {"partition": "partition", "gpus-per-node": "gpus_per_node", "cpus-per-task": "cpus_per_task",
                 "mem": "mem_gb", "time": "timeout_min", "account": "account", "qos": "qos",
                 "constraint": "constraint"}
HARNESS_OWNED = ("array", "job-name", "output", "error", "open-mode", "signal", "requeue", "ntasks-per-node",
                 "nodes", "wckey")


@dataclass(frozen=True)
class Profile:
    """One cluster's resources for every array task (the keys of slurm/profiles/NAME.toml)."""

    partition: str | None = hp(None, "--partition")
    gpus_per_node: int = hp(0, "--gpus-per-node (with --gpus N > 1: N per task group)")
    cpus_per_task: int = hp(1, "--cpus-per-task; also the job's torch threads")
    mem_gb: float | None = hp(None, f"--mem in GB, from 1/1024 (1 MB) to {MAX_MEM_GB}")
    timeout_min: int = hp(60, "--time in minutes, >= 2 (submitit signals USR2 90 s before the limit)")
    array_parallelism: int = hp(256, "array tasks running at once (the %N of --array)")
    account: str | None = hp(None, "--account")
    qos: str | None = hp(None, "--qos")
    constraint: str | None = hp(None, "--constraint")
    setup: tuple[str, ...] = hp((), "shell lines each job runs before the run, in order (module load ..., "
                                "source .../conda.sh, conda activate ENV)")
    sbatch: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "any other sbatch option, a table of KEY = VALUE written as #SBATCH --KEY=VALUE (true: a "
                "bare --KEY), e.g. [sbatch] mail-type = \"END,FAIL\""})

    def __post_init__(self) -> None:
        _check(self.gpus_per_node >= 0, "gpus_per_node", self.gpus_per_node, "must be >= 0")
        _check(self.cpus_per_task >= 1, "cpus_per_task", self.cpus_per_task, "must be >= 1")
        # --mem=0 (a value that rounds down to 0 MB) would ask SLURM for the whole node's memory
        _check(self.mem_gb is None or 1 / 1024 <= self.mem_gb <= MAX_MEM_GB, "mem_gb", self.mem_gb,
               f"must be in [1/1024, {MAX_MEM_GB}] GB (at least 1 MB)")
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
        for i, line in enumerate(self.setup):
            _check(isinstance(line, str) and line.isprintable(), f"setup[{i}]", line,
                   "must be one line of shell, printable characters (it is written into the sbatch script)")
        _check(isinstance(self.sbatch, dict), "sbatch", self.sbatch, "expected a table of KEY = VALUE")
        for key, value in self.sbatch.items():
            owner = (f"the profile's {PROFILE_OWNED[key]}" if key in PROFILE_OWNED
                     else "the harness" if key in HARNESS_OWNED else None)
            _check(owner is None, f"sbatch.{key}", value,
                   f"set by {owner}; valid keys: any other sbatch option")
            _check(re.fullmatch(r"[a-z][a-z0-9-]*", key) is not None, f"sbatch.{key}", value,
                   "the key is an sbatch long option without its dashes, e.g. mail-type")
            _check(value is True or (isinstance(value, str | int | float) and not isinstance(value, bool)
                                     and str(value).isprintable()), f"sbatch.{key}", value,
                   "expected a one-line string or a number, or true for a bare flag (remove the key to leave "
                   "it off)")


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ./slurm/profiles, then the repository's."""
    dirs = [Path.cwd() / PROFILE_DIR, Path(__file__).resolve().parents[2] / PROFILE_DIR]
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
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a profile is TOML; valid keys: "
                          f"{', '.join(f.name for f in dataclasses.fields(Profile))})") from None
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if isinstance(data.get("setup"), str):  # one line as a string: not split into words
        raise ConfigError(f"{path}: setup = {data['setup']!r}: expected a list of lines, e.g. "
                          f"setup = [{data['setup']!r}]")
    return build_dataclass(Profile, data, str(path))


def check_folder(folder: Path) -> None:
    """An out folder goes into the sbatch script (#SBATCH --output, the command line): a newline
    in it would end the #SBATCH block and run the rest as a command."""
    if not str(folder).isprintable():
        raise ConfigError(f"--out = {str(folder)!r}: must be printable characters on one line (it is "
                          "written into the sbatch script)")


def slurm_parameters(profile: Profile, name: str, tasks: int = 1) -> dict[str, Any]:
    """SlurmExecutor parameters (sbatch flags) for a profile; `tasks` > 1: torch.distributed
    tasks on one node, one GPU each if the profile has GPUs."""
    params: dict[str, Any] = {
        "job_name": f"bench-{name}",
        "time": profile.timeout_min,
        "cpus_per_task": profile.cpus_per_task,
        "array_parallelism": profile.array_parallelism,
        # requeue-able whatever the site's JobRequeue default: submitit requeues on timeout
        "additional_parameters": {"requeue": True, **profile.sbatch},
        # SLURM 22.05-23.02's srun does not inherit sbatch's --cpus-per-task: without it each task
        # is bound to one core and the data loader gets one worker
        "srun_args": [f"--cpus-per-task={profile.cpus_per_task}"],
    }
    if profile.setup:
        params["setup"] = list(profile.setup)
    if tasks > 1:
        params["ntasks_per_node"] = tasks
    gpus = tasks if tasks > 1 and profile.gpus_per_node else profile.gpus_per_node
    if gpus:
        params["gpus_per_node"] = gpus
    if profile.mem_gb is not None:  # submitit's own conversion: whole GB, else MB
        gb = profile.mem_gb
        params["mem"] = f"{int(gb)}GB" if gb == int(gb) else f"{math.ceil(gb * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(profile, key) is not None:
            params[key] = getattr(profile, key)
    return params


def sbatch_script(profile: Profile, name: str, folder: str | Path, n_cells: int, tasks: int = 1) -> str:
    """The sbatch script submitit writes for `n_cells` cells (an array when more than one) under
    this profile: the same parameters and command as `submit`, without a cluster."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = Path(folder).expanduser().absolute()
    check_folder(folder)
    # SlurmExecutor._submitit_command_str
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(
        command=command,
        folder=folder,
        map_count=n_cells if n_cells > 1 else None,
        **slurm_parameters(profile, name, tasks),
    )



# ----------------------------------------------------------------------------------- job states


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
