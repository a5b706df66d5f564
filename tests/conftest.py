"""Fixtures shared by the test modules: the single-node SLURM test cluster, a fresh user cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import registry
from bench.io import read_json

REPO = Path(__file__).resolve().parents[1]


def slurm_unavailable() -> str | None:
    """Why the test cluster cannot be started here, or None when it can (SLURM installed, or
    installable: root with apt-get)."""
    if os.environ.get("PRUNEBENCH_NO_SLURM") == "1":
        return "PRUNEBENCH_NO_SLURM=1: SLURM tests disabled"
    if shutil.which("sbatch") or (os.geteuid() == 0 and shutil.which("apt-get")):
        return None
    return ("SLURM is not installed and cannot be installed here (slurm/cluster/start.sh needs root and "
            "apt-get); set PRUNEBENCH_NO_SLURM=1 to skip these tests silently")


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory) -> None:
    """No test reads a dry-run probe or data split cached by the user or an earlier session."""
    os.environ["PRUNEBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def start_cluster() -> str | None:
    """Start the test cluster (slurm/cluster/start.sh, idempotent; it installs SLURM where missing).
    Returns why the SLURM tests must skip: SLURM was missing and its install failed (apt-get with
    no network); None once the cluster is up. A start that fails where SLURM is installed raises."""
    installed = shutil.which("sbatch") is not None
    p = subprocess.run(
        ["bash", "slurm/cluster/start.sh"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if p.returncode == 0:
        return None
    if not installed and shutil.which("sbatch") is None:
        last = (p.stderr.strip() or p.stdout.strip() or "no output").splitlines()[-1]
        return (f"SLURM is not installed and slurm/cluster/start.sh could not install it (exit "
                f"{p.returncode}: {last}); set PRUNEBENCH_NO_SLURM=1 to skip these tests silently")
    raise RuntimeError(f"slurm/cluster/start.sh failed ({p.returncode}):\n{p.stdout}\n{p.stderr[-3000:]}")


@pytest.fixture(scope="session")
def cluster() -> None:
    """Starts the test cluster and leaves it running; skips, saying why, where SLURM is neither
    installed nor installable, or was missing and could not be installed (`start_cluster`)."""
    if why := slurm_unavailable() or start_cluster():
        pytest.skip(why)


@pytest.fixture
def cleanup():
    """Cancels the jobs a test submitted (by id), whatever happens to the test."""
    outs: list[Path] = []
    yield outs
    for out in outs:
        ids = {r["job_id"] for r in map(read_json, (out / ".jobs").glob("*.json")) if r}
        if ids:
            subprocess.run(["scancel", *sorted(ids)], capture_output=True)


@pytest.fixture
def plugin_env(monkeypatch):
    """The plugin list reaches job processes through the environment, and a plugin's entries stay
    in the registries of this process: restore both afterwards (other tests list names)."""
    monkeypatch.setenv(registry.PLUGINS_ENV, "")
    registries = (registry.PRUNERS, registry.MODELS, registry.DATASETS)
    registry.populate()  # built-in modules import once per process: their entries must be in `saved`
    saved = [dict(r._entries) for r in registries]
    modules = set(sys.modules)
    yield
    for r, entries in zip(registries, saved, strict=True):
        r._entries = entries
    for name in set(sys.modules) - modules:
        if name.startswith("prunebench_plugin_"):
            del sys.modules[name]
