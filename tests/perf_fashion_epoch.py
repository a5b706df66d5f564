"""An epoch of LeNet-300-100 on Fashion-MNIST through the Trainer vs a bare PyTorch loop.

    OMP_NUM_THREADS=1 .venv/bin/python tests/perf_fashion_epoch.py [--rounds 9] [--batch-size 128]

Both train the same model (same initial weights) with the same optimizer (the dense pruner's,
as the budget sets it) on the same tensors: the Trainer's own uint8 training split on the device,
each batch gathered by a random permutation and normalized as it is drawn. The Trainer's epoch is
`train_epoch` (every pruner hook of the dense pruner, lr schedule, step timing, loss kept on the
device); the bare loop is randperm, index, normalize, forward, cross-entropy, zero_grad, backward,
step. The two alternate, one epoch each, for `--rounds` rounds after one warm-up epoch each;
prints the median of each and their ratio (target: at most 1.05). Times are this process's CPU
time: with one thread, an epoch's wall time on a quiet core, and steadier than wall time on a
shared machine. Needs the Fashion-MNIST files (the Debian package or --data-dir). Not collected
by pytest (timings, not tests).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.config import Budget, RunConfig
from bench.run.trainer import Trainer


def bare_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x_train: torch.Tensor,
               y_train: torch.Tensor, mean: float, std: float, batch_size: int, g: torch.Generator) -> float:
    """One epoch of the textbook loop; returns its time in seconds."""
    t0 = time.process_time()
    model.train()
    order = torch.randperm(len(x_train), generator=g)
    for i in range(0, len(x_train), batch_size):
        idx = order[i : i + batch_size]
        x = (x_train[idx].float().div_(255) - mean) / std
        loss = F.cross_entropy(model(x), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--data-dir", default="data")
    args = ap.parse_args()
    torch.set_num_threads(1)

    budget = Budget(epochs=args.rounds + 1, batch_size=args.batch_size, lr=0.05)
    config = RunConfig(pruner="dense", model="lenet300_100", dataset="fashion_mnist", data_dir=args.data_dir,
                       budget=budget, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp), progress=False)
        data = trainer.data
        model = copy.deepcopy(trainer.model)
        assert isinstance(trainer.optimizer, torch.optim.SGD), trainer.optimizer
        same = {k: trainer.optimizer.defaults[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
        opt = torch.optim.SGD(model.parameters(), **same)
        mean, std = data._mean.item(), data._std.item()
        g = torch.Generator().manual_seed(0)
        trainer_s, bare_s = [], []
        for r in range(args.rounds + 1):  # round 0 warms both up (and holds the Trainer's memory probe)
            trainer.seed_epoch()
            t0 = time.process_time()
            trainer.train_epoch(steps=trainer.steps_per_epoch)
            trainer.pruner.end_epoch(trainer.epoch)
            t = time.process_time() - t0
            trainer.epoch += 1
            b = bare_epoch(model, opt, data.x_train, data.y_train, mean, std, args.batch_size, g)
            print(f"round {r}{' (warm-up)' if r == 0 else ''}: trainer {t:.3f} s, bare {b:.3f} s")
            if r:
                trainer_s.append(t)
                bare_s.append(b)
    t, b = statistics.median(trainer_s), statistics.median(bare_s)
    print(f"LeNet-300-100, Fashion-MNIST, {data.num_train} training images, batch {args.batch_size}, "
          "1 thread, "
          f"median of {args.rounds} interleaved epochs (CPU s): trainer {t:.3f}, bare loop {b:.3f}, "
          f"ratio {t / b:.3f}")


if __name__ == "__main__":
    main()
