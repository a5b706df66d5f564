"""`bench export`: the final pruned model as safetensors (+ ONNX); loading it back gives the run's
test top-1."""

from __future__ import annotations

import pytest

from bench import cli
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.export import export, load_model
from bench.run.job import run
from bench.validate import check_config


@pytest.mark.parametrize(("pruner", "hparams"), [("grda", {"c": 0.02}), ("magnitude", {"sparsity": 0.8,
                                                                                        "prune_at": 0.5}),
                                                   ("str", {})])
def test_export_round_trip_gives_the_same_top1(tmp_path, pruner, hparams):
    config = check_config(RunConfig(pruner=pruner, hparams=hparams, budget=Budget(epochs=2)))
    record = run(config, tmp_path)
    w = export(tmp_path / record["run_id"])
    assert w["top1_loaded"] == record["top1"]
    model = load_model(w["safetensors"])  # a plain registered model: no masks or parametrizations
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if hasattr(m, "weight"))
    total = sum(m.weight.numel() for m in model.modules() if hasattr(m, "weight"))
    assert zeros / total == pytest.approx(record["sparsity"], abs=1e-6)
    import onnx

    onnx.checker.check_model(onnx.load(w["onnx"]))


def test_cli_export_and_refusals(tmp_path, capsys):
    record = run(check_config(RunConfig(budget=Budget(epochs=1))), tmp_path)
    run_dir = tmp_path / record["run_id"]
    assert cli.main(["export", str(run_dir), "--out", str(tmp_path / "x"), "--no-onnx"]) == 0
    out = capsys.readouterr().out
    assert f"loaded back: test top-1 {record['top1']:.4f} (equals the run's" in out
    assert (tmp_path / "x" / "model.safetensors").is_file() and not (tmp_path / "x" / "model.onnx").exists()
    assert cli.main(["export", str(tmp_path / "nope")]) == 2
    assert "no readable config.json" in capsys.readouterr().err
    (run_dir / "checkpoint.pt").unlink()
    assert cli.main(["export", str(run_dir)]) == 2
    assert "no checkpoint.pt" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no prunebench metadata"):
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
        load_model(tmp_path / "plain.safetensors")
