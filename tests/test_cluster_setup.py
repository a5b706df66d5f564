"""A SLURM profile's setup lines and extra sbatch options reach the generated sbatch script; bad
ones are refused naming the key and what is valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.executors import slurm

GOLDEN = Path(__file__).parent / "golden" / "sbatch_setup.sh"
SETUP = ["module load cuda/12.4", "source ~/miniconda3/etc/profile.d/conda.sh", "conda activate prunebench"]
PROFILE = f"""
partition = "gpu"
gpus_per_node = 1
cpus_per_task = 4
timeout_min = 120
setup = {SETUP!r}
[sbatch]
mail-type = "END,FAIL"
exclusive = true
nice = 10
"""


def _profile(tmp_path: Path, text: str) -> slurm.Profile:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return slurm.load_profile(str(path))


def test_setup_lines_and_sbatch_options_in_the_script(tmp_path):
    """UPDATE_GOLDEN=1 rewrites the golden file."""
    folder = tmp_path / "runs" / "demo" / ".submitit" / "%j"
    script = slurm.sbatch_script(_profile(tmp_path, PROFILE), "demo", folder, 3)
    script = script.replace(str(tmp_path), "<TMP>").replace(slurm.shlex.quote(sys.executable), "<PYTHON>")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(script)
    assert script == GOLDEN.read_text()
    lines = script.splitlines()
    assert {"#SBATCH --mail-type=END,FAIL", "#SBATCH --exclusive", "#SBATCH --nice=10"} <= set(lines)
    setup = lines.index("# setup")
    assert lines[setup + 1:setup + 4] == SETUP
    assert setup < lines.index("# command")  # before the run


@pytest.mark.parametrize(("text", "message"), [
    ('setup = "module load cuda"', "setup = 'module load cuda': expected a list of lines"),
    ('setup = ["module load a\\nrm -rf x"]', "setup[0]"),
    ("[sbatch]\ntime = 30", "sbatch.time = 30: set by the profile's timeout_min"),
    ('[sbatch]\narray = "0-3"', "sbatch.array = '0-3': set by the harness"),
    ("[sbatch]\nexclusive = false", "true for a bare flag"),
    ('[sbatch]\n"--mail-type" = "END"', "without its dashes"),
    ('setups = ["x"]', "unknown key(s) setups; valid keys: partition, "),
])
def test_bad_setup_or_sbatch_options_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        _profile(tmp_path, text)
    assert message in str(e.value)
    if "valid keys" in message:
        assert "setup, sbatch" in str(e.value)


@pytest.mark.parametrize("installed_before", [False, True])
def test_a_failed_slurm_install_skips_and_a_failed_start_raises(monkeypatch, installed_before):
    """No network for apt-get: SLURM stays missing, the SLURM tests skip naming the failure; where
    SLURM was installed, a failed start is an error."""
    import conftest

    failed = subprocess.CompletedProcess([], 100, "", "E: Unable to fetch some archives\n")
    monkeypatch.setattr(conftest.subprocess, "run", lambda *a, **k: failed)
    sbatch = "/usr/bin/sbatch" if installed_before else None
    monkeypatch.setattr(conftest.shutil, "which", lambda name: sbatch)
    if installed_before:
        with pytest.raises(RuntimeError, match=r"start.sh failed \(100\)"):
            conftest.start_cluster()
    else:
        why = conftest.start_cluster()
        assert why is not None and "could not install it (exit 100: E: Unable to fetch some archives)" in why
