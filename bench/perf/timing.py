"""Timing primitives: device-synchronized calls and blocks, interleaved round-robin rounds, and
their summaries (medians, ratios paired by round); `check` turns a number into a PASS/MISS target."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from bench import metrics

Rounds = list[list[float]]  # one block's timings (ms), per round


def time_calls(fn: Callable[[], object], n: int, device: torch.device) -> list[float]:
    """Milliseconds of each of `n` calls of `fn`, device-synchronized (CUDA events on a GPU)."""
    if device.type == "cuda":
        pairs = []
        for _ in range(n):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in pairs]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_block(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call of `fn`, synchronized with the device before and after."""
    metrics.synchronize(device)
    t0 = time.perf_counter()
    fn()
    metrics.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def round_robin(
    blocks: Mapping[str, Callable[[], list[float]]], rounds: int, min_seconds: float = 0.0, warmup: int = 1,
) -> dict[str, Rounds]:
    """Run every block once per round, rotating the order, for at least `rounds` rounds and
    `min_seconds`; the first `warmup` rounds are discarded. Returns each block's timings by round."""
    names = list(blocks)
    out: dict[str, Rounds] = {n: [] for n in names}
    r, started = 0, time.perf_counter()
    while r < warmup + rounds or time.perf_counter() - started < min_seconds:
        if r == warmup:
            started = time.perf_counter()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times = blocks[name]()
            if r >= warmup:
                out[name].append(times)
        r += 1
    return out


def summary(rounds: Rounds) -> dict[str, float]:
    """Median and quartiles (ms) of all of a block's timings."""
    times = [t for r in rounds for t in r]
    q = np.percentile(np.asarray(times), [25, 50, 75])
    return {"median_ms": float(q[1]), "p25_ms": float(q[0]), "p75_ms": float(q[2]), "n": len(times)}


def ratio(a: Rounds, b: Rounds) -> float:
    """Time of `a` over time of `b`, paired by round: the median over rounds of the ratio of their
    medians in that round, so that the machine's load drifting between rounds cancels out."""
    return statistics.median(statistics.median(x) / statistics.median(y) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class Check:
    """One target: a measured value against a bound (or a property that must hold)."""

    name: str
    value: float | bool
    target: str
    passed: bool


def check(name: str, value: float | bool, op: str, bound: float | None = None) -> Check:
    """`value op bound` (op: <=, >=, ==), or `value` itself with op "true"; NaN never passes."""
    if op == "true":
        return Check(name, bool(value), "true", bool(value))
    assert bound is not None
    ok = {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]
    return Check(name, float(value), f"{op} {bound:g}", bool(ok) and math.isfinite(value))
