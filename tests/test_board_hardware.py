"""Memory and state ratios on the board divide by dense runs on the same hardware: the same GPU type
and count (a run on four H100s against a dense run on one would credit it with three more GPUs)."""

from __future__ import annotations

import pandas as pd
import pytest
from board_rows import row

from bench.board.prepare import prepare
from bench.board.summary import summarize


def on(r: dict, gpus: int | None, gpu_type: str | None) -> dict:
    return {**r, "gpus": gpus, "gpu_type": gpu_type}


def test_time_and_memory_ratios_use_the_dense_runs_of_the_same_gpu_type_and_count() -> None:
    rows = [
        on(row("d1", "dense", 0, 0.9, 0.0, time=100.0, memory=100.0), 1, "NVIDIA H100"),
        on(row("d4", "dense", 0, 0.9, 0.0, {"x": 1}, time=30.0, memory=40.0), 4, "NVIDIA H100"),
        on(row("g4", "grda", 0, 0.9, 0.9, time=45.0, memory=60.0), 4, "NVIDIA H100"),
        on(row("s1", "set", 0, 0.9, 0.9, time=150.0, memory=50.0), 1, "NVIDIA H100"),
        on(row("r1", "rigl", 0, 0.9, 0.9, time=150.0), 1, "NVIDIA A100"),  # no dense on an A100
        on(row("c", "gmp", 0, 0.9, 0.9, time=20.0), None, None),  # a CPU run: no dense on a CPU
    ]
    df = prepare(pd.DataFrame(rows))
    labels = df.set_index("run_id").loc[["d1", "d4", "c"], "hardware"]
    assert list(labels) == ["1x NVIDIA H100", "4x NVIDIA H100", "cpu"]
    s = summarize(df).set_index("pruner")
    assert s.loc["grda", "memory_vs_dense"] == pytest.approx(60.0 / 40.0)  # 4 GPUs against 4
    assert s.loc["set", "memory_vs_dense"] == pytest.approx(50.0 / 100.0)  # 1 against 1
    assert s.loc["set", "hardware"] == "1x NVIDIA H100"
    assert pd.isna(s.loc["rigl", "memory_vs_dense"]) and pd.isna(s.loc["gmp", "memory_vs_dense"])
    assert s["time_vs_dense"].isna().all()  # times: the timing phase's only, never the runs' wall times
    assert s.loc["grda", "drop_vs_dense_mean"] == pytest.approx(0.0)  # accuracy is not per hardware
