"""The dry run times the loader alone as well as the steps: a loader whose prefetch queue hides it
from a few timed steps, then falls behind, makes the dry run refuse a sweep it cannot finish."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from bench import cli, loader_probe
from bench.data import TensorData

PREFETCHED, SLOW_S = 10, 0.04  # batches served at once (a full queue), then seconds per batch


@pytest.fixture
def slow_loader(monkeypatch):
    """Every data set held in memory loads like a loader that cannot keep up: its first batches
    come from a full prefetch queue, the rest take SLOW_S each."""
    fast = TensorData.train_batches

    def train_batches(self, *args, **kw):
        for i, batch in enumerate(fast(self, *args, **kw)):
            if i >= PREFETCHED:
                time.sleep(SLOW_S)
            yield batch

    monkeypatch.setattr(TensorData, "train_batches", train_batches)
    monkeypatch.setattr(loader_probe, "LOADER_BATCHES", 3 * PREFETCHED)


def _sweep(tmp: Path, epochs: int) -> Path:
    f = tmp / "s.toml"
    f.write_text(f'name = "feed"\ndevice = "cpu"\n[budget]\nepochs = {epochs}\n[grid]\nmodels = ["mlp"]\n'
                 'datasets = ["digits"]\n[pruners.grda]\n')
    return f


def test_the_loader_is_timed_in_steady_state(slow_loader):
    data = TensorData(torch.randn(4000, 3), torch.zeros(4000, dtype=torch.long), torch.randn(4, 3),
                      torch.zeros(4, dtype=torch.long), 2)
    lt = loader_probe.time_loader(data, 32, seed=0, cpus=4)
    assert lt.batches == 3 * PREFETCHED and lt.workers == 3
    assert 0.8 * SLOW_S < lt.s_per_batch < 3 * SLOW_S  # not the queue's instant batches


def test_dry_run_refuses_a_sweep_whose_loader_cannot_keep_up(tmp_path, capsys, slow_loader):
    profile = tmp_path / "short.toml"
    profile.write_text("timeout_min = 2\ncpus_per_task = 1\n")
    argv = ["sweep", str(_sweep(tmp_path, 300)), "--dry-run", "--out", str(tmp_path / "out"),
            "--executor", "slurm", "--profile", str(profile)]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert "the loader sets the pace" in captured.out and "grda/mlp/digits" in captured.err
    assert not (tmp_path / "out").exists()


def test_the_same_sweep_passes_with_a_loader_that_keeps_up(tmp_path, capsys):
    profile = tmp_path / "short.toml"
    profile.write_text("timeout_min = 2\ncpus_per_task = 1\n")
    argv = ["sweep", str(_sweep(tmp_path, 300)), "--dry-run", "--out", str(tmp_path / "out"),
            "--executor", "slurm", "--profile", str(profile)]
    assert cli.main(argv) == 0
    assert "keeps up" in capsys.readouterr().out
