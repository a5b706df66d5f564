"""Every output path is checked before the work, and nothing is written outside the output folder:
a `%` anywhere in an output's absolute path (submitit would expand it), symbolic links where a
sweep or an export writes, a folder where a command writes a file (calibration record, board and
leaderboard files, exported model). Each gives exit 2 with one line naming the path, and nothing
written. Also: a sweep waiting for another submission into its folder says who holds the lock.

One tiny finished run (mlp on digits, one epoch) and its gathered table are built once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli, runs, sweep
from bench.errors import ConfigError
from bench.runs import RunDir, live_holder
from bench.spec import load_sweep
from bench.validate import LEADERBOARD_FILES
from bench.valley.board import PATHS_FILE, TABLE_FILE

REPO = Path(__file__).resolve().parents[1]
SWEEP = ('name = "tiny"\n[budget]\nepochs = 1\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
         "[pruners.dense]\n")
RUN_FLAGS = ["--pruner", "dense", "--model", "mlp", "--dataset", "digits", "--epochs", "1"]
BOARD_TABLES = ("results.parquet", "results.history.parquet", "results.predictions.npz")


def files(folder: Path) -> list[str]:
    """Every entry under `folder` (links not followed), relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def one_error(capsys, *words: str) -> str:
    """The command's stderr: one error line, naming each of `words`, and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """root/ holding board/tiny/sweep.toml, runs/tiny/<run_id>/ (one finished run, the sweep's one
    cell) and results.parquet (its gathered table)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "board" / "tiny").mkdir(parents=True)
    (root / "board" / "tiny" / "sweep.toml").write_text(SWEEP)
    assert cli.main(["run", *RUN_FLAGS, "--quiet", "--out", str(root / "runs" / "tiny")]) == 0
    assert cli.main(["gather", str(root / "runs" / "tiny"), "-o", str(root / "results.parquet")]) == 0
    return root


def run_dir(root: Path) -> Path:
    (path,) = (root / "runs" / "tiny").glob("dense-*")
    return path


# -- '%' in the working directory --------------------------------------------------------------


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_a_percent_in_the_working_directory_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys, command):
    here = tmp_path / "c%j"
    here.mkdir()
    (here / "s.toml").write_text(SWEEP)
    monkeypatch.chdir(here)
    argv = ["sweep", "s.toml", "--out", "o"] if command == "sweep" else ["run", *RUN_FLAGS, "--out", "o"]

    assert cli.main(argv) == 2

    one_error(capsys, "--out = 'o'", str(here / "o"), "submitit", "%j")
    assert files(tmp_path) == ["c%j", "c%j/s.toml"]  # no out folder, no folder with the job id


# -- links where a sweep writes ------------------------------------------------------------------


@pytest.mark.parametrize("name", [".jobs", ".submitit", ".sweep.lock", "RUN"])
def test_a_link_where_a_sweep_writes_is_refused_before_anything_is_written_or_submitted(
        tmp_path, capsys, name):
    (tmp_path / "s.toml").write_text(SWEEP)
    (tmp_path / "outside").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (cell,) = load_sweep(tmp_path / "s.toml").cells
    link = out / name.replace("RUN", cell.run_id)  # RUN: the cell's run folder
    link.symlink_to(Path("..") / "outside")

    assert cli.main(["sweep", str(tmp_path / "s.toml"), "--out", str(out)]) == 2

    one_error(capsys, str(link), "symbolic link")
    assert files(tmp_path / "outside") == []
    assert files(out) == [link.name]  # no manifest, no job record, nothing submitted


def test_the_sweep_lock_is_never_opened_through_a_link(tmp_path):
    (tmp_path / "target").write_text("")
    (tmp_path / ".sweep.lock").symlink_to(tmp_path / "target")
    with pytest.raises(ConfigError, match="symbolic link"), sweep._locked(tmp_path):
        pass
    assert (tmp_path / "target").read_text() == ""


def test_a_sweep_waiting_for_another_submission_says_who_holds_the_lock(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(runs, "LOCK_MESSAGE_AFTER_S", 0.0)  # one lock mechanism for runs and sweeps
    code = ("import sys, time\nfrom pathlib import Path\nfrom bench.sweep import _locked\n"
            "with _locked(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(1.5)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with sweep._locked(tmp_path):  # waits until the holder lets go
            assert holder.wait(timeout=60) == 0
            assert (tmp_path / ".sweep.lock").read_text() == f"{os.getpid()}\n"
    finally:
        holder.kill()
        holder.wait()
    assert f"waiting for another submission into this folder (PID {holder.pid})" in capfd.readouterr().err


def test_a_lock_file_its_holder_has_not_written_yet_names_no_holder(tmp_path):
    rd = RunDir(tmp_path, "r")
    rd.create()
    rd.lock_file.write_text("")  # created, PID not written yet
    assert rd.holder() is None and live_holder(rd.lock_file) is None
    rd.lock_file.write_text(f"{os.getpid()}\n")
    assert rd.holder() == live_holder(rd.lock_file) == os.getpid()


# -- a folder where a command writes a file --------------------------------------------------------


def test_a_folder_at_the_calibration_record_stops_calibrate_before_the_search(tmp_path, capsys):
    record = tmp_path / "cal" / "calibration-grda-mlp-digits-s0-0.9.json"
    record.mkdir(parents=True)
    argv = ["calibrate", "--pruner", "grda", "--model", "mlp", "--dataset", "digits", "--epochs", "1",
            "--target", "0.9", "--search-fraction", "1", "--full-runs", "1", "--out", str(tmp_path / "cal")]

    assert cli.main(argv) == 2

    one_error(capsys, str(record), "is a folder")
    assert files(tmp_path / "cal") == [record.name]  # no run folder: the search never started


@pytest.mark.parametrize("name", LEADERBOARD_FILES)
def test_a_folder_at_a_leaderboard_file_stops_leaderboard_before_writing(finished, tmp_path, capsys, name):
    (tmp_path / "lb" / name).mkdir(parents=True)

    assert cli.main(["leaderboard", str(finished / "results.parquet"), "-o", str(tmp_path / "lb"),
                     "--no-plots"]) == 2

    one_error(capsys, "-o = ", str(tmp_path / "lb" / name), "is a folder")
    assert files(tmp_path / "lb") == [name]


def test_leaderboard_checks_every_file_it_writes(finished, tmp_path):
    assert cli.main(["leaderboard", str(finished / "results.parquet"), "-o", str(tmp_path / "lb"),
                     "--no-plots"]) == 0
    assert files(tmp_path / "lb") == sorted(LEADERBOARD_FILES)


def board_argv(root: Path, out: Path) -> list[str]:
    return ["board", str(root / "board" / "tiny"), "--runs", str(root / "runs"), "--no-run", "--no-plots",
            "--out", str(out)]


@pytest.mark.parametrize("name", [*LEADERBOARD_FILES, *BOARD_TABLES, TABLE_FILE, PATHS_FILE])
def test_a_folder_at_a_board_file_stops_board_before_the_work(finished, tmp_path, capsys, name):
    (tmp_path / "X" / name).mkdir(parents=True)

    assert cli.main(board_argv(finished, tmp_path / "X")) == 2

    one_error(capsys, "--out = ", str(tmp_path / "X" / name), "is a folder")
    assert files(tmp_path / "X") == [name]


def test_board_checks_every_file_it_writes(finished, tmp_path):
    assert cli.main(board_argv(finished, tmp_path / "X")) == 0
    assert files(tmp_path / "X") == sorted([*LEADERBOARD_FILES, *BOARD_TABLES, TABLE_FILE, PATHS_FILE])


# -- export ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "model.onnx"])
def test_a_folder_at_an_exported_file_stops_export_before_the_work(finished, tmp_path, capsys, name):
    (tmp_path / "ex" / name).mkdir(parents=True)

    assert cli.main(["export", str(run_dir(finished)), "--out", str(tmp_path / "ex"), "--no-check"]) == 2

    one_error(capsys, str(tmp_path / "ex" / name), "is a folder")
    assert files(tmp_path / "ex") == [name]


@pytest.mark.parametrize("link", ["export", "export/model.safetensors"])
def test_export_writes_through_no_link_in_the_run_folder(finished, tmp_path, capsys, link):
    (outside := tmp_path / "outside").mkdir()
    run = tmp_path / "run"  # a copy of the finished run, so the shared one stays untouched
    run.mkdir()
    for f in run_dir(finished).iterdir():
        if f.is_file():
            (run / f.name).write_bytes(f.read_bytes())
    path = run / link
    path.parent.mkdir(exist_ok=True)
    path.symlink_to(outside / path.name if link != "export" else outside)

    assert cli.main(["export", str(run), "--no-onnx", "--no-check"]) == 2

    one_error(capsys, str(path), "symbolic link")
    assert files(outside) == []
