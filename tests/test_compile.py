"""`--compile`: the training step runs torch.compile'd, the record says so, and the run's identity
(and so its folder and checkpoint) is the uncompiled run's."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from bench.config import Budget, RunConfig
from bench.run.build import build
from bench.run.trainer import Trainer
from bench.validate import check_config


def _compiler_missing() -> str | None:
    """Why torch.compile cannot run here (its CPU backend writes C++ and needs a compiler), or None."""
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler for torch.compile's CPU backend"
    return None


def test_compile_is_run_level():
    plain = check_config(RunConfig(pruner="grda", budget=Budget(epochs=1), device="cpu"))
    compiled = dataclasses.replace(plain, compile=True)
    assert compiled.run_id == plain.run_id and compiled.config_hash == plain.config_hash


@pytest.mark.skipif(_compiler_missing() is not None, reason=str(_compiler_missing()))
def test_a_compiled_step_runs_and_matches_the_plain_step(tmp_path):
    config = check_config(RunConfig(pruner="grda", budget=Budget(epochs=1, batch_size=16), device="cpu",
                                    compile=True))
    steps = {}
    for compile_ in (False, True):
        tr = Trainer(build(dataclasses.replace(config, compile=compile_)), tmp_path / str(compile_))
        assert isinstance(tr.net, torch._dynamo.eval_frame.OptimizedModule) == compile_
        x, y = next(iter(tr.data.train_batches(16, 0, 0)))
        steps[compile_] = (tr.train_step(x, y).item(), [p.detach().clone() for p in tr.model.parameters()])
    assert steps[True][0] == pytest.approx(steps[False][0], rel=1e-5)
    for a, b in zip(steps[True][1], steps[False][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_sweep_file_switches_compile_on_for_its_cells(tmp_path):
    from bench.errors import ConfigError
    from bench.spec import load_sweep

    f = tmp_path / "s.toml"
    body = '[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n[pruners.grda]\n'
    f.write_text(f'name = "c"\ncompile = true\n{body}')
    assert [c.compile for c in load_sweep(f).cells] == [True]
    f.write_text(f'name = "c"\ncompile = "sometimes"\n{body}')
    with pytest.raises(ConfigError, match="compile = 'sometimes': expected true or false"):
        load_sweep(f)
