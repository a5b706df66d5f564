"""Pretrained starts (`budget.init`, `--init`): a run starts from trained weights instead of its
seed's initialization, then prunes and fine-tunes within its budget. The weights come from

- a run folder: its final model (bench.run.checkpoint.load_model; masks applied), identified by
  the sha256 of that model's tensors (not of checkpoint.pt, which also holds timings: a run
  retrained bit for bit names the same fine-tuning runs);
- a file holding a state_dict (or a whole saved model, or one of this harness's checkpoints);
- `torchvision:NAME`: torchvision's default weights for NAME, read from torch's hub cache
  (`$TORCH_HOME/hub/checkpoints`) when present there; never downloaded.

The weights file's sha256 is part of the run's identity (`budget.init_sha256`), not its path: the
same weights moved elsewhere name the same run, other weights at the same path another one.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import ConfigError
from bench.run.checkpoint import load_model
from bench.runs import FILES

TORCHVISION = "torchvision:"
CHECKPOINT = FILES["checkpoint"]  # a run folder's


def weights_file(spec: str) -> Path:
    """The file that holds the weights `spec` names (ConfigError naming where they must be)."""
    if spec.startswith(TORCHVISION):
        return _torchvision_file(spec.removeprefix(TORCHVISION))
    path = Path(spec)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise ConfigError(f"budget.init = {spec!r}: a folder without {CHECKPOINT}; expected a finished "
                              "run's folder, a state_dict file or torchvision:NAME")
        return path / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"budget.init = {spec!r}: no such file or folder; expected a finished run's "
                          "folder, a state_dict file or torchvision:NAME")
    return path


def _torchvision_file(name: str) -> Path:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        raise ConfigError(f"budget.init = {TORCHVISION}{name}: torchvision has no weights for {name!r}; "
                          "valid choices: torchvision.models.list_models()") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise ConfigError(f"budget.init = {TORCHVISION}{name}: its weights are not in torch's hub cache and "
                          f"are never downloaded here; put {Path(weights.url).name} (from {weights.url}) at "
                          f"{path} (or set TORCH_HOME to where it is)")
    return path


def sha256(spec: str) -> str:
    """sha256 of the weights `spec` names (ConfigError if there are none): of a run folder's final
    model's tensors, else of the weights file."""
    path = weights_file(spec)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return _run_sha256(*key) if _is_run_folder(spec, path) else _file_sha256(*key)


def _is_run_folder(spec: str, path: Path) -> bool:
    return path.name == CHECKPOINT and path.parent == Path(spec)


@functools.lru_cache(maxsize=32)
def _run_sha256(path: str, mtime_ns: int, size: int) -> str:  # the cache key: the checkpoint as it is now
    _, model = load_model(Path(path).parent, device="cpu")
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        digest.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:  # the cache key: the file as it is now
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def starter(budget: Any) -> Callable[[nn.Module], None] | None:
    """For bench.run.build's `init`: what loads `budget.init`'s weights into a new model (None: a
    start from the seed's initialization)."""
    if not budget.init:
        return None
    return functools.partial(load_into, spec=budget.init, expected_sha256=budget.init_sha256)


def load_into(model: nn.Module, spec: str, expected_sha256: str) -> None:
    """Copy the weights `spec` names into `model` (on its device). Every tensor must fit, except,
    for torchvision weights, a classifier whose number of classes differs (it keeps the seed's
    initialization: fine-tuning learns it). ConfigError if the file changed since the run was
    configured (its sha256 is the run's identity) or the weights do not fit the model."""
    found = sha256(spec)
    if found != expected_sha256:
        raise ConfigError(f"budget.init = {spec!r}: its weights changed since the run was configured "
                          f"(sha256 {found[:12]}, the run's budget.init_sha256 {expected_sha256[:12]}); "
                          "configure the run again to start from the new ones")
    state = _state_dict(spec)
    own = model.state_dict()
    if spec.startswith(TORCHVISION):
        state = {k: v for k, v in state.items() if k not in own or v.shape == own[k].shape}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if (missing and not spec.startswith(TORCHVISION)) or unexpected or wrong:
        raise ConfigError(f"budget.init = {spec!r}: its weights do not fit the run's model ("
                          + "; ".join(f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                                      for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                         ("other shape", wrong)) if keys) + ")")
    model.load_state_dict(state, strict=False)


def _state_dict(spec: str) -> dict[str, torch.Tensor]:
    path = weights_file(spec)
    if _is_run_folder(spec, path):  # its final model
        _, model = load_model(path.parent, device="cpu")
        return model.state_dict()
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"budget.init = {spec!r}: not a state_dict torch can load "
                          f"({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "config_hash" in obj:
        obj = obj["model"]  # one of this harness's checkpoints: the model it was training
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"budget.init = {spec!r}: expected a state_dict (a mapping of names to tensors)")
    return obj
