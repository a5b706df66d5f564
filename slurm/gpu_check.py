"""GPU check: a few minutes on one GPU that exercise what a CPU cannot, in one table and one JSON.

    srun --gres=gpu:1 --cpus-per-task=16 python slurm/gpu_check.py --json gpu_check.json

Each check (`--only NAME ...` runs some) reports `ok`, `FAIL` (something is wrong: the exit
status is 1) or `skipped` with the reason; on a machine without CUDA the CUDA checks are skipped
and the others run, on the CPU and smaller, so the script and its test run anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import metrics
from bench.callbacks import Callback
from bench.config import Budget, RunConfig
from bench.data import TensorData
from bench.grda import GRDA
from bench.io import load_checkpoint
from bench.perf.timing import time_calls
from bench.registry import MODELS
from bench.run.build import build
from bench.run.job import run
from bench.run.result import now
from bench.run.trainer import Trainer
from bench.runs import Backend, BackendStatus, RunDir
from bench.validate import check_config


@dataclass(frozen=True)
class Check:
    name: str
    needs_cuda: bool
    what: str
    fn: Callable[[argparse.Namespace], dict[str, Any]]


CHECKS: dict[str, Check] = {}


def check(name: str, needs_cuda: bool, what: str) -> Callable:
    def register(fn: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable:
        CHECKS[name] = Check(name, needs_cuda, what, fn)
        return fn
    return register


class Failed(Exception):
    """A check that ran and found something wrong (its entry says what)."""

    def __init__(self, why: str, result: dict[str, Any]) -> None:
        super().__init__(why)
        self.result = result


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------- resume


class _StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.epoch == 1:
            raise KeyboardInterrupt  # the job killed after its first checkpoint


# first: a deterministic run needs cuBLAS configured before its first use in this process
@check("resume_bit_identical", False, "a deterministic run() interrupted after epoch 1 and resumed "
       "ends bit-identical to an uninterrupted one (resnet20 on the GPU; mlp on a CPU)")
def resume_bit_identical(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    config = check_config(RunConfig(
        pruner="grda", model="resnet20" if cuda else "mlp", dataset="synthetic" if cuda else "digits",
        device=_device(), deterministic=True, budget=Budget(epochs=2, batch_size=128)))
    with tempfile.TemporaryDirectory() as tmp:
        whole = run(config, Path(tmp) / "whole")
        rd = RunDir(Path(tmp) / "resumed", config.run_id)
        rd.create()
        try:
            Trainer(config, rd, callbacks=[_StopAfterFirstEpoch()]).fit(now())
        except KeyboardInterrupt:
            pass
        resumed = run(config, rd.out)
        a = load_checkpoint(RunDir(Path(tmp) / "whole", config.run_id).checkpoint)["model"]
        b = load_checkpoint(rd.checkpoint)["model"]
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = {"model": config.model, "resumed": resumed["resumed"], "weights_identical": identical,
           "top1": [whole["top1"], resumed["top1"]]}
    out["summary"] = f"{config.model}: resumed={resumed['resumed']}, weights identical={identical}"
    if not (identical and resumed["resumed"] and whole["top1"] == resumed["top1"]):
        raise Failed("the resumed run differs from the uninterrupted one", out)
    return out


# ------------------------------------------------------------------------------ training step


@check("resnet50_step", True, "ResNet-50 training step (Trainer.train_step, batch 256, synthetic "
       "224x224) in fp32 (TF32) and bf16 autocast, channels-last: median ms, images/s, peak memory")
def resnet50_step(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        budget = Budget(epochs=1, batch_size=256, momentum=0.9, precision=precision)
        config = check_config(RunConfig(pruner="dense", model="resnet50", dataset="synthetic",
                                        device="cuda", budget=budget))
        x = torch.randn(256, 3, 224, 224, device="cuda")
        y = torch.randint(0, 1000, (256,), device="cuda")
        data = TensorData(x, y, x[:256], y[:256], 1000)
        with tempfile.TemporaryDirectory() as tmp:
            tr = Trainer(build(config, data=data), Path(tmp))
            for _ in range(3):
                tr.train_step(x, y)
            metrics.reset_peak_memory(tr.device)
            step = lambda tr=tr, x=x, y=y: tr.train_step(x, y)  # noqa: E731
            ms = statistics.median(time_calls(step, args.steps, tr.device))
            out[precision] = {"median_ms": ms, "images_per_s": 256 / ms * 1e3,
                              "peak_memory_bytes": metrics.peak_memory(tr.device),
                              "channels_last": tr.channels_last}
    out["bf16_speedup"] = out["fp32"]["median_ms"] / out["bf16"]["median_ms"]
    out["summary"] = (f"fp32 {out['fp32']['images_per_s']:.0f} img/s, bf16 {out['bf16']['images_per_s']:.0f} "
                      f"img/s ({out['bf16_speedup']:.2f}x)")
    return out


@check("optimizer_step", True, "gRDA's optimizer step (foreach and per-tensor shrink) against "
       "SGD-momentum on ResNet-50's parameters; foreach and per-tensor bit-identical")
def optimizer_step(args: argparse.Namespace) -> dict[str, Any]:
    dev = torch.device("cuda")
    model = MODELS.get("resnet50").build(1000).to(dev)
    init = [p.detach() for p in model.parameters()]
    grads = [torch.randn_like(p) * 0.01 for p in init]

    def params() -> list[torch.Tensor]:
        ps = [p.clone().requires_grad_() for p in init]
        for p, g in zip(ps, grads, strict=True):
            p.grad = g
        return ps

    opts = {"sgd_momentum": torch.optim.SGD(params(), lr=0.1, momentum=0.9, foreach=True),
            "grda_foreach": GRDA(params(), lr=0.1, c=0.005, mu=0.55, foreach=True),
            "grda_per_tensor": GRDA(params(), lr=0.1, c=0.005, mu=0.55, foreach=False)}
    out: dict[str, Any] = {"tensors": len(init)}
    for name, opt in opts.items():
        time_calls(opt.step, 5, dev)
        out[f"{name}_ms"] = statistics.median(time_calls(opt.step, args.steps, dev))
    a = opts["grda_foreach"].param_groups[0]["params"]
    b = opts["grda_per_tensor"].param_groups[0]["params"]
    out["foreach_equals_per_tensor"] = all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    out["summary"] = (f"gRDA {out['grda_foreach_ms']:.2f} ms vs SGD-momentum "
                      f"{out['sgd_momentum_ms']:.2f} ms; per-tensor {out['grda_per_tensor_ms']:.2f} ms")
    if not out["foreach_equals_per_tensor"]:
        raise Failed("gRDA's foreach and per-tensor steps differ", out)
    return out


# ---------------------------------------------------------------------------------- two ranks

RANK_PRUNERS = ("set", "random_gradual")


def _rank_config(pruner: str, device: str) -> RunConfig:
    return check_config(RunConfig(pruner=pruner, model="mlp", dataset="digits", device=device,
                                  budget=Budget(epochs=3, batch_size=64)))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def rank_worker(rank: int, store: str, out: str, device: str) -> None:
    """One of two ranks (a gloo group, both on one device): trains every RANK_PRUNERS run and
    writes digests of its masks and weights."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                                         timeout=timedelta(minutes=5))
    try:
        digests = {}
        for pruner in RANK_PRUNERS:
            config = _rank_config(pruner, device)
            run_dir = Path(out) / pruner / config.run_id
            run_dir.mkdir(parents=True, exist_ok=True)
            tr = Trainer(config, run_dir)
            tr.fit(now())
            masks = tr.pruner.state_dict().get("masks", {})
            digests[pruner] = {"masks": _digest(masks), "weights": _digest(tr.model.state_dict()),
                               "sparsity": tr.history[-1]["sparsity"]}
        Path(out, f"rank{rank}.json").write_text(json.dumps(digests))
    finally:
        torch.distributed.destroy_process_group()


@check("rank_masks", False, "2 ranks on one device (gloo; the GPU if any) train `set` and "
       "`random_gradual` for 3 epochs: masks and weights identical on both ranks")
def rank_masks(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        store = str(Path(tmp) / "store")
        procs = [subprocess.Popen([sys.executable, __file__, "--rank-worker", str(r), store, tmp, _device()],
                                  env=env) for r in range(2)]
        codes = [p.wait(timeout=600) for p in procs]
        if any(codes):
            raise Failed(f"rank exit codes {codes}", {"exit_codes": codes})
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(2)]
    out: dict[str, Any] = {"device": _device(), "ranks": ranks}
    same = {p: ranks[0][p] == ranks[1][p] for p in RANK_PRUNERS}
    out["identical"] = same
    out["summary"] = ", ".join(f"{p}: {'identical' if ok else 'DIFFERENT'}" for p, ok in same.items())
    if not all(same.values()):
        raise Failed("the ranks trained different models", out)
    return out


# ------------------------------------------------------------------------------------------ 2:4


@check("nm_2to4", True, "the 2:4 speed-up backend on a ResNet-50 pruned 2:4 the way `nm` prunes "
       "(float16 against a float16 dense model): status, speed-up, max |logit difference|")
def nm_2to4(args: argparse.Namespace) -> dict[str, Any]:
    from baselines.nm import groupable, nm_mask
    from bench.inference import BACKENDS, measure_speedup

    torch.manual_seed(0)
    model = MODELS.get("resnet50").build(1000).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and groupable(m.weight, 4):
                m.weight.mul_(nm_mask(m.weight, 2, 4))
    x = torch.randn(256, 3, 224, 224)
    data = TensorData(x[:8], torch.zeros(8, dtype=torch.long), x, torch.randint(0, 1000, (256,)), 1000)
    backends = {b.value: BACKENDS[b.value] for b in (Backend.DENSE, Backend.SEMI_STRUCTURED)}
    f = measure_speedup(model, data, "cuda", batch_size=256, backends=backends, max_check_examples=256)
    key = f"speedup_{Backend.SEMI_STRUCTURED.key}"
    out = {k.removeprefix("speedup_"): v for k, v in f.items()
           if k.startswith(key) or k == "speedup_dense_ms"}
    out["summary"] = (f"{f[f'{key}_status']}: {f[key] or 0:.2f}x at batch 256, "
                      f"{f[f'{key}_b1'] or 0:.2f}x at batch 1, "
                      f"max |diff| {f[f'{key}_max_abs_diff']}")
    if f[f"{key}_status"] != BackendStatus.OK:
        raise Failed(f"2:4 backend {f[f'{key}_status']}: {f[f'{key}_reason']}", out)
    return out


# ------------------------------------------------------------------------------------- loader


def _jpeg_tree(root: Path, n: int) -> None:
    """n ImageNet-sized JPEGs (500x375, noise: no cheap decode) in two classes, train and val."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for i in range(n if split == "train" else 2):
            folder = root / "imagenet" / split / f"n{i % 2:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (375, 500, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.JPEG", quality=90)


@check("loader_throughput", False, "ImageNet loader (decode, random-resized crop, flip) with this "
       "job's CPUs: images/s over --loader-s seconds; ImageNet under --data-dir, else generated JPEGs")
def loader_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from bench.data.imagenet import default_workers, job_cpus, load_imagenet

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_dir
        if not (Path(root) / "imagenet" / "train").is_dir():
            root = tmp
            _jpeg_tree(Path(tmp), args.loader_images)
        data = load_imagenet(root, torch.device(_device()), True)
        batch, images, epoch = 64, 0, 0
        start = None
        while True:
            for x, _ in data.train_batches(batch, epoch, 0):
                if start is None:  # the first batch includes starting the workers
                    start = time.perf_counter()
                    continue
                images += len(x)
                if time.perf_counter() - start > args.loader_s:
                    break
            epoch += 1
            if start is not None and (time.perf_counter() - start > args.loader_s or epoch > 50):
                break
        metrics.synchronize(torch.device(_device()))
        elapsed = time.perf_counter() - start
    rate = images / max(elapsed, 1e-9)
    out = {"images_per_s": rate, "workers": default_workers(), "cpus": job_cpus(), "images": images,
           "source": "imagenet" if root == args.data_dir else "generated JPEGs"}
    out["images_per_s_per_worker"] = rate / out["workers"]  # what sizes a profile's cpus_per_task
    out["summary"] = (f"{rate:.0f} img/s with {out['workers']} workers ({out['cpus']} CPUs), "
                      f"{out['images_per_s_per_worker']:.0f} img/s per worker")
    return out


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    epilog = "checks:\n" + "\n".join(
        f"  {c.name:<22}{'(CUDA) ' if c.needs_cuda else ''}{c.what}" for c in CHECKS.values())
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    p.add_argument("--steps", type=int, default=20, help="timed steps per step measurement")
    p.add_argument("--data-dir", default="data", help="where ImageNet is, for loader_throughput")
    p.add_argument("--loader-s", type=float, default=30.0, help="seconds loader_throughput reads")
    p.add_argument("--loader-images", type=int, default=256, help="generated JPEGs when there is no ImageNet")
    p.add_argument("--rank-worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank_worker:
        rank, store, out, device = args.rank_worker
        rank_worker(int(rank), store, out, device)
        return 0
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {"device": metrics.device_name(torch.device(_device())),
                              "torch": torch.__version__, "checks": {}}
    for c in CHECKS.values():
        if args.only and c.name not in args.only:
            continue
        t0 = time.perf_counter()
        if c.needs_cuda and not cuda:
            entry = {"status": "skipped", "summary": "needs CUDA; none here"}
        else:
            try:
                entry = {"status": "ok", **c.fn(args)}
            except Failed as e:
                entry = {"status": "FAIL", **e.result, "summary": str(e)}
            except Exception as e:  # a check that crashes is a failed check; the others still run
                entry = {"status": "FAIL", "summary": f"{type(e).__name__}: {e}"}
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        report["checks"][c.name] = entry
    print(f"{report['device']}, torch {report['torch']}")
    print(f"{'check':<22} {'status':<8} {'s':>6}  result")
    for name, e in report["checks"].items():
        print(f"{name:<22} {e['status']:<8} {e['seconds']:>6}  {e['summary']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return int(any(e["status"] == "FAIL" for e in report["checks"].values()))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
