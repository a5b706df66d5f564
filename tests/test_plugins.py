"""A user's own pruner, model and data set, in a module of their own (`--import`), work where the
built-in ones do: `bench list`, a local sweep, a sweep on the SLURM test cluster, `bench status`
with the same `--import` (a results folder's manifest names its modules, never imports them: see
test_results_folder_is_data.py). A job whose process cannot resolve a
name records its run as failed, with the error."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import submitit

from bench import cli, registry
from bench.config import RunConfig
from bench.executors.base import RunJob
from bench.io import read_json

PLUGIN = Path(__file__).parent / "plugins" / "my_methods.py"
README = Path(__file__).resolve().parents[1] / "README.md"



def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(f"""
name = "mine-{uuid.uuid4().hex[:8]}"
[budget]
epochs = 8
batch_size = 32
[grid]
models = ["tiny_cnn"]
datasets = ["blobs"]
[pruners.late_magnitude]
sparsity = 0.5
[pruners.dense]
""")
    return path


def results(out: Path) -> list[dict]:
    return sorted((read_json(p) for p in out.glob("*/result.json")), key=lambda r: r["pruner"])


def test_the_readme_shows_the_tested_plugin_module():
    assert PLUGIN.read_text().strip() in README.read_text()


def test_list_shows_plugin_entries(plugin_env, capsys):
    assert cli.main(["list", "--import", str(PLUGIN)]) == 0
    out = capsys.readouterr().out
    assert "late_magnitude" in out and "tiny_cnn" in out and "blobs" in out


def test_unknown_plugin_module_is_bad_input(plugin_env, tmp_path, capsys):
    assert cli.main(["list", "--import", str(tmp_path / "nowhere.py")]) == 2
    assert "nowhere.py" in capsys.readouterr().err


def test_out_of_tree_pruner_in_a_local_sweep(plugin_env, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(["sweep", str(sweep_file(tmp_path)), "--import", str(PLUGIN), "--out", str(out)]) == 0
    dense, mine = results(out)
    assert (dense["status"], mine["status"]) == ("ok", "ok")
    assert (mine["pruner"], mine["model"], mine["dataset"]) == ("late_magnitude", "tiny_cnn", "blobs")
    assert mine["sparsity"] == pytest.approx(0.5, abs=0.01) and mine["top1"] > 0.9
    monkeypatch.setenv(registry.PLUGINS_ENV, "")  # a fresh shell
    assert cli.main(["status", str(out), "--import", str(PLUGIN)]) == 0
    assert "done 2" in capsys.readouterr().out


@pytest.mark.slurm
def test_out_of_tree_pruner_on_the_slurm_test_cluster(cluster, plugin_env, tmp_path, cleanup, capsys):
    out = tmp_path / "out"
    cleanup.append(out)
    args = ["sweep", str(sweep_file(tmp_path)), "--import", str(PLUGIN), "--out", str(out),
            "--executor", "slurm", "--profile", "local-test"]
    assert cli.main(args) == 0
    assert cli.main(["status", str(out), "--wait", "--poll", "1"]) == 0
    dense, mine = results(out)
    assert (dense["status"], mine["status"]) == ("ok", "ok")
    assert mine["slurm_job_id"] and mine["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_a_job_that_cannot_resolve_a_name_records_the_run_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(submitit, "JobEnvironment", lambda: type("Env", (), {"num_tasks": 1}))
    config = RunConfig(pruner="not_imported_here", hparams={"sparsity": 0.5}, seed=3)
    with pytest.raises(RuntimeError, match="1 run"):
        RunJob([config], tmp_path, threads=1, run_ids=["not_imported_here-mlp-digits-s3-0123456789"])()
    result = read_json(tmp_path / "not_imported_here-mlp-digits-s3-0123456789" / "result.json")
    assert result["status"] == "failed" and "unknown pruner 'not_imported_here'" in result["error"]
    assert (result["pruner"], result["seed"]) == ("not_imported_here", 3)
    assert result["hparams"] == {"sparsity": 0.5}
