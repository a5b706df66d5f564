"""The code a run trained with is part of its provenance: the hash of its pruner's source file and
of each plugin module that registered its model or data set. A result (or checkpoint) written by
other code is not reused: the run trains anew and the old result is kept."""

from __future__ import annotations

import json
import shutil
import uuid

from test_plugins import PLUGIN

from bench import cli
from bench.io import read_json


def test_editing_a_plugin_pruner_trains_the_run_anew(plugin_env, tmp_path, capsys):
    plugin = tmp_path / f"my_methods_{uuid.uuid4().hex[:8]}.py"  # a module no earlier test imported
    shutil.copy(PLUGIN, plugin)
    out = tmp_path / "runs"
    argv = ["run", "--import", str(plugin), "--pruner", "late_magnitude", "--model", "tiny_cnn",
            "--dataset", "blobs", "--epochs", "2", "--out", str(out), "--quiet", "--json"]

    def run() -> tuple[dict, str]:
        assert cli.main(argv) == 0
        captured = capsys.readouterr()
        return json.loads(captured.out), captured.err

    first, _ = run()
    hashes = first["code_hashes"]
    assert set(hashes) == {f"prunebench_plugin_{plugin.stem}"}  # its pruner, model and data set: one file
    folder = out / first["run_id"]
    again, err = run()
    assert again == first and "training anew" not in err  # same code: the cached result
    assert not (folder / "result.replaced.json").exists()

    plugin.write_text(plugin.read_text() + "\n# tuned\n")
    second, err = run()
    assert "changed since its result; training anew" in err
    assert second["code_hashes"] != hashes and second["run_id"] == first["run_id"]
    assert read_json(folder / "result.replaced.json") == first  # the old result is kept
    assert read_json(folder / "result.json") == second


def test_a_builtin_pruner_records_its_own_source_file(tmp_path, capsys):
    assert cli.main(["run", "--pruner", "magnitude", "--epochs", "1", "--out", str(tmp_path), "--quiet",
                     "--json"]) == 0
    hashes = json.loads(capsys.readouterr().out)["code_hashes"]
    assert list(hashes) == ["baselines.magnitude"]  # built-in model and data set: the git sha covers them


def test_a_sweep_retrains_the_cells_whose_plugin_changed(plugin_env, tmp_path, capsys):
    plugin = tmp_path / f"my_methods_{uuid.uuid4().hex[:8]}.py"  # a module no earlier test imported
    shutil.copy(PLUGIN, plugin)
    sweep = tmp_path / "mine.toml"
    sweep.write_text(f"""
name = "mine-{uuid.uuid4().hex[:8]}"
[budget]
epochs = 1
[grid]
models = ["tiny_cnn"]
datasets = ["blobs"]
[pruners.late_magnitude]
sparsity = 0.5
""")
    out = tmp_path / "out"
    argv = ["sweep", str(sweep), "--import", str(plugin), "--out", str(out)]
    assert cli.main(argv) == 0
    (folder,) = (p.parent for p in out.glob("*/result.json"))
    first = read_json(folder / "result.json")

    plugin.write_text(plugin.read_text() + "\n# tuned\n")
    capsys.readouterr()
    assert cli.main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "changed 1" in shown
    assert "retrain the changed ones (the old results are kept) with: bench sweep" in shown
    assert cli.main(argv) == 0  # resubmits the changed cell: it trains anew
    assert read_json(folder / "result.replaced.json") == first
    assert read_json(folder / "result.json")["code_hashes"] != first["code_hashes"]
    assert cli.main(["status", str(out)]) == 0
    assert "done 1" in capsys.readouterr().out
