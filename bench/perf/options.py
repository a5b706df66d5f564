"""What `bench perf` measures and how much: the suite names, the reference pruner, the sizes.
A leaf (no torch), so the CLI can be built without importing the suites."""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import RunConfig

SUITES = ("pruners", "optimizer", "harness", "compact")
REFERENCE = "dense"  # the pruner every ratio is taken against (SGD with the budget's momentum)
PERF_MOMENTUM = 0.9  # perf's default budget momentum: the baseline is SGD with momentum
SMALL_RUN = ("mlp", "digits")  # the README's main run, where harness overhead weighs most


@dataclass(frozen=True)
class Sizes:
    """How much to measure. Rounds are interleaved; one more, discarded, round warms up."""

    rounds: int = 7  # pruners suite: rounds of blocks
    train_steps: int = 4  # whole training steps per pruner per round
    opt_steps: int = 10  # optimizer/pruner steps alone per pruner per round
    memory_steps: int = 3  # training steps while peak memory is tracked
    big_params: str = "resnet18"  # optimizer suite: torchvision model whose shapes are used, or "model"
    big_rounds: int = 10
    big_steps: int = 5
    min_seconds: float = 5.0  # each interleaved comparison runs at least this long (after warm-up)
    loop_rounds: int = 10  # harness: Trainer vs bare loop
    loop_block_s: float = 1.0  # a block is a whole epoch, or about this long if an epoch is longer
    images: int = 50_000  # harness: CIFAR-shaped images for the data pipeline
    image_batch: int = 128
    tensor_repeats: int = 3  # epochs of the on-device pipeline (it is cheap; median)
    result_folders: int = 10_000  # harness: run folders for `bench gather` and the leaderboard
    result_repeats: int = 2
    compact_fraction: float = 0.5  # fraction of each channel group zeroed
    latency_rounds: int = 10
    latency_steps: int = 3


# For tests: every code path at tiny sizes (the numbers mean nothing).
QUICK = Sizes(rounds=1, train_steps=2, opt_steps=2, memory_steps=1, big_params="model", big_rounds=1,
              big_steps=2, min_seconds=0.0, loop_rounds=1, loop_block_s=0.0, images=512, tensor_repeats=1,
              result_folders=30, result_repeats=1, latency_rounds=1, latency_steps=1)


@dataclass(frozen=True)
class PerfOptions:
    configs: dict[str, RunConfig]  # pruner name -> validated config (REFERENCE first)
    suites: tuple[str, ...] = SUITES
    sizes: Sizes = Sizes()
    quick: bool = False
