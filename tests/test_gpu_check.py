"""slurm/gpu_check.py runs on a machine without CUDA: the checks a CPU can run measure, the CUDA
ones say why they were skipped; `--help` lists every check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "slurm" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # its dataclass looks its module up
    spec.loader.exec_module(gpu_check)
    return gpu_check


def test_help_lists_every_check(capsys):
    gpu_check = load_gpu_check()
    with pytest.raises(SystemExit):
        gpu_check.main(["--help"])
    out = capsys.readouterr().out
    for name in ("resnet50_step", "optimizer_step", "rank_masks", "nm_2to4", "resume_bit_identical",
                 "loader_throughput"):
        assert name in out and name in gpu_check.CHECKS


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_gpu_check_runs_the_cpu_checks_and_skips_the_cuda_ones(tmp_path, capsys):
    gpu_check = load_gpu_check()
    code = gpu_check.main(["--json", str(tmp_path / "r.json"), "--loader-s", "1", "--loader-images", "8",
                           "--data-dir", str(tmp_path / "none")])
    report = json.loads((tmp_path / "r.json").read_text())["checks"]
    out = capsys.readouterr().out
    for name, c in gpu_check.CHECKS.items():
        assert name in out
        if c.needs_cuda:
            assert report[name]["status"] == "skipped" and "needs CUDA" in report[name]["summary"]
    assert report["resume_bit_identical"]["status"] == "ok"
    assert report["resume_bit_identical"]["weights_identical"]
    assert report["loader_throughput"]["images_per_s"] > 0
    assert report["loader_throughput"]["source"] == "generated JPEGs"
    # set and random_gradual: identical masks and weights on both ranks
    assert report["rank_masks"]["status"] == "ok", report["rank_masks"]["summary"]
    assert code == 0
