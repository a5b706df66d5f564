"""Readable run folders: `bench status -v` shows each cell's hyperparameters, and per-layer
sparsity names its layers."""

from __future__ import annotations

import uuid

from bench import cli
from bench.io import read_json


def test_status_verbose_shows_hyperparameters_and_layers_are_named(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_text(f"""
name = "readable-{uuid.uuid4().hex[:8]}"
[budget]
epochs = 1
lr = 0.05
[grid]
models = ["mlp"]
datasets = ["digits"]
[pruners.magnitude]
sparsity = 0.5
""")
    out = tmp_path / "out"
    assert cli.main(["sweep", str(sweep), "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(out), "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    settings = [line.strip() for line in lines if line.strip().startswith("hparams ")]
    assert len(settings) == 1 and "sparsity=0.5" in settings[0]
    assert settings[0].endswith("| budget epochs=1 lr=0.05")  # the keys off the default budget

    (result,) = (read_json(p) for p in out.glob("*/result.json"))
    assert list(result["layer_sparsity"]) == ["1 (linear 64->256)", "3 (linear 256->128)",
                                              "5 (linear 128->10)"]
