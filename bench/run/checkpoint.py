"""A run's checkpoint: what is saved each epoch, how a trainer resumes from it, and the final model
of a finished run (`load_model`), restored in the one order that works for every pruner: the
pruner's state first (it may rebuild a pruned architecture), then the weights."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bench.code_version import changed as code_changed
from bench.code_version import code_hashes
from bench.config import RunConfig
from bench.data import Data
from bench.errors import ConfigError
from bench.io import load_checkpoint, read_json, save_checkpoint
from bench.pruner import Pruner
from bench.run.build import Built, build
from bench.run.distributed import max_over_ranks
from bench.runs import RunDir

if TYPE_CHECKING:
    from bench.run.trainer import Trainer

REQUIRED = ("config_hash", "epoch", "step", "samples", "train_time", "step_times", "history",
            "model", "optimizer", "pruner")  # the others have defaults
TYPES = {"epoch": int, "step": int, "samples": int, "train_time": (int, float), "step_times": list,
         "history": list, "model": dict, "optimizer": dict, "pruner": dict}


class BadCheckpoint(RuntimeError):
    """A checkpoint that loads but cannot be restored (keys missing, wrong shapes): it is set aside
    as `checkpoint.bad.pt` (`kept`; by rank 0 only, `set_aside`) and the run starts from scratch."""

    def __init__(self, path: Path, why: str, set_aside: bool = True) -> None:
        self.kept = RunDir.at(path.parent).bad_checkpoint
        if set_aside:
            with contextlib.suppress(OSError):  # a folder deleted meanwhile
                path.replace(self.kept)
        super().__init__(f"{path}: cannot resume from it ({why})")


def restore_weights(pruner: Pruner, model: nn.Module, ckpt: dict[str, Any]) -> None:
    """The pruner's state, then the model's weights."""
    pruner.load_state_dict(ckpt["pruner"])
    model.load_state_dict(ckpt["model"])


def due(trainer: Trainer) -> bool:
    """Whether the epoch that just ended checkpoints: the run's last one always; the others every
    epoch (`checkpoint_every_s` 0, or several ranks, which must agree without talking), else once
    that many seconds of training passed since the last checkpoint."""
    t, every = trainer, trainer.config.checkpoint_every_s
    last = t.epoch >= t.total_epochs or t.step >= t.total_steps  # the end of `fit`'s loop
    return last or not every or t.world > 1 or t.train_time - t.saved_train_time >= every


def save(trainer: Trainer) -> None:
    """Every rank calls it (it gathers each rank's RNG state and the peak memory); rank 0 writes."""
    trainer.saved_train_time = trainer.train_time
    rng = [_rng_state(trainer.device)]
    if trainer.world > 1:
        rng = [None] * trainer.world
        torch.distributed.all_gather_object(rng, _rng_state(trainer.device))
    peak = trainer.peak_memory()
    if trainer.rank != 0:
        return
    trainer.run.check_present(config=False)  # a folder deleted mid-run is not made again without its config
    save_checkpoint(trainer.run.checkpoint, {
        "config_hash": trainer.config.config_hash,
        "code_hashes": code_hashes(trainer.config),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "samples": trainer.samples,
        "train_time": trainer.train_time,
        "train_macs": trainer.train_macs,
        "step_times": list(trainer.step_times),
        "tensor_peak": trainer.tensor_peak,
        "history": trainer.history,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "pruner": trainer.pruner.state_dict(),
        "rng": rng,  # one {"cpu", "cuda"} per rank, by rank
        "peak_memory_bytes": peak,
    })


def _rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    cuda = device.type == "cuda"
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if cuda else None}


def resume(trainer: Trainer) -> bool:
    """Restore the last checkpoint into `trainer`, if it is this config's and was written by the
    same pruner and plugin code (bench.code_version); False if there is none.
    Raises BadCheckpoint (which sets it aside) for one that loads but cannot be restored: the
    trainer may be half restored then, so the caller starts over with a new one.

    With several ranks every rank takes the same branch, or they would set up different
    DistributedDataParallel wrappers and hang: rank 0 alone decides whether there is a checkpoint
    of this config and whether it is complete, and broadcasts that; the ranks then restore it and
    agree (a MAX over ranks) whether every one succeeded; rank 0 sets a bad one aside only then,
    when no rank is still reading it."""
    path, rank, world = trainer.run.checkpoint, trainer.rank, trainer.world
    ckpt = load_checkpoint(path) if rank == 0 else None
    verdict: str | None = _verdict(ckpt, trainer.config) if rank == 0 else None
    if world > 1:
        box = [verdict]
        torch.distributed.broadcast_object_list(box, src=0)
        verdict = box[0]
    if verdict == "none":
        return False
    if verdict != "ok":
        raise BadCheckpoint(path, str(verdict), set_aside=rank == 0)
    why = None
    try:
        _restore(trainer, ckpt if rank == 0 else load_checkpoint(path))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        why = f"{type(e).__name__}: {e}"
    if world > 1:
        failed = max_over_ranks(int(why is not None), world)
        if failed and why is None:
            why = "another rank could not restore it"
    if why is not None:
        raise BadCheckpoint(path, why, set_aside=rank == 0)
    return True


def _verdict(ckpt: object, config: RunConfig) -> str:
    """Rank 0's reading of a checkpoint: "none" (absent, unreadable, another config's, or written by
    other pruner or plugin code: start over), "ok", or why it cannot be resumed from."""
    if not isinstance(ckpt, dict) or ckpt.get("config_hash") != config.config_hash:
        return "none"
    if code_changed(ckpt.get("code_hashes"), config):
        return "none"
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        return f"it lacks {', '.join(missing)}"
    wrong = [k for k, kind in TYPES.items() if not isinstance(ckpt[k], kind) or isinstance(ckpt[k], bool)]
    if wrong:  # restored as they are, they would fail the run later, far from here
        return f"{', '.join(wrong)} of the wrong type"
    return "ok"


def _restore(t: Trainer, ckpt: dict[str, Any]) -> None:
    restore_weights(t.pruner, t.model, ckpt)
    if t.pruner.model_changed:  # a pruned architecture: an optimizer over its parameters
        t.rebuild_optimizer()
    t.optimizer.load_state_dict(ckpt["optimizer"])
    for group in t.optimizer.param_groups:  # load_state_dict checks no shapes: the first step would fail
        for p in group["params"]:
            for key, v in t.optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                    raise ValueError(f"optimizer state {key!r} of shape {tuple(v.shape)} for a parameter "
                                     f"of shape {tuple(p.shape)}")
    # Each rank restores its own state if the writer had that rank. A rank the writer did not
    # have keeps a fresh state, and states of ranks gone are dropped: every epoch reseeds from
    # (seed, epoch, rank), so the epochs that follow are those of a run with this many ranks.
    states = ckpt.get("rng") or []
    if t.rank < len(states):
        torch.set_rng_state(states[t.rank]["cpu"])
        if t.device.type == "cuda" and states[t.rank]["cuda"] is not None:
            torch.cuda.set_rng_state(states[t.rank]["cuda"], t.device)
    t.peak_before = ckpt.get("peak_memory_bytes") or 0
    t.epoch, t.step, t.samples = ckpt["epoch"], ckpt["step"], ckpt["samples"]
    t.train_time, t.history = ckpt["train_time"], ckpt["history"]
    t.saved_train_time = t.train_time
    t.train_macs = ckpt.get("train_macs", 0.0)
    t.step_times.extend(ckpt["step_times"])
    t.tensor_peak = ckpt.get("tensor_peak")


def stored_config(run_dir: str | Path) -> RunConfig:
    """The RunConfig in a run folder's config.json (ConfigError if there is none)."""
    rd = RunDir.at(run_dir)
    stored = read_json(rd.config)
    if not isinstance(stored, dict):
        raise ConfigError(f"{rd.path}: no readable config.json; is it a run folder (runs/<run_id>)?")
    known = {f.name for f in dataclasses.fields(RunConfig)}
    try:
        return RunConfig.from_dict({k: v for k, v in stored.items() if k in known})
    except (TypeError, ValueError, AttributeError) as e:  # ConfigError is a ValueError
        raise ConfigError(f"{rd.config}: not a run's config.json ({type(e).__name__}: {e})") from None


def load_built(run_dir: str | Path, device: str | None = None, data: Data | None = None,
               ) -> tuple[Built, nn.Module]:
    """A finished run rebuilt (its data loaded, or `data`) with its last checkpoint's weights, and
    its final model (the pruner's `finalize`: the model its result was evaluated on), in eval mode.
    `device` (default: the run's own) may differ from the one it trained on."""
    rd = RunDir.at(run_dir)
    config = stored_config(rd.path)
    built = build(dataclasses.replace(config, device=device or config.device), data=data)
    ckpt = load_checkpoint(rd.checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("config_hash") != config.config_hash:
        raise ConfigError(f"{rd.path}: no checkpoint.pt of this run's config to rebuild its final model from")
    try:
        restore_weights(built.pruner, built.model, ckpt)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise ConfigError(f"{rd.checkpoint}: cannot restore the run's model from it "
                          f"({type(e).__name__}: {e})") from None
    return built, built.pruner.finalize(built.model).eval()


def load_model(run_dir: str | Path, device: str | None = None) -> tuple[RunConfig, nn.Module]:
    """(config, final model) of a finished run: masks applied, eval mode, on `device` (default:
    the run's own)."""
    built, model = load_built(run_dir, device)
    return built.config, model
