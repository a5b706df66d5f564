"""slurm/gpu_check.py runs on a machine without CUDA: the CPU parts measure, the CUDA parts say why
they were skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_and_skips_cuda_parts_without_a_gpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "slurm" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--steps", "2", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    steps = report["resnet20_step"]
    assert set(steps) == {"fp32", "bf16"} and all(s["median_ms"] > 0 for s in steps.values())
    assert report["bf16_speedup"] > 0
    if not torch.cuda.is_available():
        assert set(report["skipped"]) == {"optimizer_step", "two_ranks"}
        assert "skipped two_ranks: needs 2 GPUs, found 0" in capsys.readouterr().out
