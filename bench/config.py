"""Run configuration: the shared training budget, one run's config, hparam parsing, identity.

`Budget` is shared by every pruner in a comparison; `RunConfig` is one cell of a sweep. Both are
frozen dataclasses whose fields carry help text (`metadata["help"]`), from which the CLI builds
its flags. `run_id` hashes only the fields that differ from their defaults, so adding a field
with a no-op default never renames existing runs. A field whose default changes what is trained
declares `legacy`, the value runs written before it existed had: run_id hashes it whenever it
differs from that value, so new runs never take the names (and results) of old ones, and an old
config.json without the field reads back with the legacy value.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import ConfigError
from bench.schedules import SCHEDULES

RECIPES = ("shared", "paper")  # optimizer recipe tracks (see Budget.recipe)
PRECISIONS = ("fp32", "bf16")
MAX_VAL_FRACTION = 0.9  # of the training set held out for validation, at most
MAX_SEED = 2**30 - 1  # seeds in [0, MAX_SEED]: every generator seeded from (seed, epoch, rank) fits 64 bits
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")
FLOAT32_MAX = 3.4028234663852886e38  # user numbers become float32 tensor arithmetic: larger ones overflow


def hp(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and help text (shown by `bench list` and `--help`)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Budget:
    """The training budget every pruner in a comparison gets; fine-tuning happens inside it."""

    epochs: int = hp(60, "training epochs (the whole budget, fine-tuning included)")
    max_steps: int = hp(0, "optional cap on optimizer steps (0: epochs * steps per epoch)")
    batch_size: int = hp(32, "mini-batch size")
    lr: float = hp(0.1, "base learning rate")
    lr_schedule: str = hp(
        "constant",
        "constant | step (x gamma at milestones) | cosine | cifar (authors' gRDA schedule: "
        "constant for 50%, linear to 1% by 90%, held); see bench/schedules.py",
    )
    lr_milestones: tuple[float, ...] = hp((0.5, 0.75), "step schedule: fractions of the budget")
    lr_gamma: float = hp(0.1, "step schedule: lr factor at each milestone")
    momentum: float = hp(0.0, "SGD momentum for SGD-based pruners (gRDA uses none by design)")
    weight_decay: float = hp(
        0.0,
        "SGD weight decay for SGD-based pruners; on the paper track, when > 0, the weight decay of the "
        "methods whose papers train with SGD and momentum (they set it per data set and network; 0: "
        "their recipe's 5e-4)",
    )
    nesterov: bool = hp(
        False,
        "Nesterov momentum for the SGD recipes with momentum: the shared one, and on the paper track "
        "those of the methods whose papers train with SGD and momentum",
        legacy=False,  # runs from before it existed trained without; boards group them with new ones
    )
    augment: bool = hp(True, "the dataset's standard augmentation (CIFAR: pad 4 + crop, flip)")
    prune_first_last: bool = hp(True, "whether the first and last layers are prunable")
    val_fraction: float = hp(
        0.1,
        "fraction of the training set held out for validation (selection of settings), or a whole "
        "number >= 1: that many examples (e.g. 10000 on ImageNet); a fixed, class-stratified split of "
        "the data set, the same for every seed (0: train on all of it)",
        legacy=0.0,  # runs written before the split existed trained on the whole training set
    )
    recipe: str = hp(
        "shared",
        "optimizer recipe: shared (every pruner the budget's momentum and weight decay) | paper (each "
        "pruner its paper's optimizer; epochs, batches, lr schedule, data and evaluation stay shared)",
    )
    precision: str = hp(
        "fp32",
        "fp32 (TF32 matrix products on CUDA) | bf16 (autocast: bfloat16 forward, fp32 weights and "
        "optimizer state)",
    )
    init: str = hp(
        "",
        "start from trained weights, then prune and fine-tune within the budget: a finished run's folder "
        "(its final model), a state_dict file, or torchvision:NAME (torchvision's weights, from torch's "
        "hub cache; never downloaded); empty: from the seed's initialization (see bench/pretrained.py)",
    )
    init_sha256: str = hp("", "sha256 of the init's weights file (set from init by bench.validate."
                          "check_config): the run's identity", computed=True)

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "budget.epochs", self.epochs, "must be > 0")
        _check(self.max_steps >= 0, "budget.max_steps", self.max_steps, "must be >= 0")
        _check(self.batch_size > 0, "budget.batch_size", self.batch_size, "must be > 0")
        _check(self.lr > 0, "budget.lr", self.lr, "must be > 0")
        _check(
            self.lr_schedule in SCHEDULES,
            "budget.lr_schedule",
            self.lr_schedule,
            f"valid choices: {', '.join(SCHEDULES)}",
        )
        _check(
            all(0 < m < 1 for m in self.lr_milestones),
            "budget.lr_milestones",
            self.lr_milestones,
            "each must be in (0, 1)",
        )
        _check(0 < self.lr_gamma <= 1, "budget.lr_gamma", self.lr_gamma, "must be in (0, 1]")
        _check(0 <= self.momentum < 1, "budget.momentum", self.momentum, "must be in [0, 1)")
        _check(self.weight_decay >= 0, "budget.weight_decay", self.weight_decay, "must be >= 0")
        _check(0 <= self.val_fraction < 1 or float(self.val_fraction).is_integer(), "budget.val_fraction",
               self.val_fraction, "must be a fraction in [0, 1) or a whole number of examples >= 1")
        # a fraction near 1 leaves a class (or the whole training set) without an example
        _check(not MAX_VAL_FRACTION < self.val_fraction < 1, "budget.val_fraction", self.val_fraction,
               f"a fraction above {MAX_VAL_FRACTION} leaves next to nothing to train on; valid: a fraction "
               f"in [0, {MAX_VAL_FRACTION}] or a whole number of examples >= 1")
        _check(self.recipe in RECIPES, "budget.recipe", self.recipe, f"valid choices: {', '.join(RECIPES)}")
        _check(self.precision in PRECISIONS, "budget.precision", self.precision,
               f"valid choices: {', '.join(PRECISIONS)}")
        _check(isinstance(self.init, str), "budget.init", self.init, "expected a path or torchvision:NAME")
        _check(bool(self.init) or not self.init_sha256, "budget.init_sha256", self.init_sha256,
               "set only with budget.init")


@dataclass(frozen=True)
class RunConfig:
    """One run: a pruner with its hyperparameters, a model, a dataset, a budget and a seed."""

    pruner: str = "dense"
    model: str = "mlp"
    dataset: str = "digits"
    hparams: dict[str, Any] = field(default_factory=dict)  # resolved: every field of the pruner's Hparams
    budget: Budget = field(default_factory=Budget)
    seed: int = hp(0, "the run's seed: initialization, data order, the model's own randomness")
    data_dir: str = hp("data", "where on-disk datasets live (not part of the run's identity)")
    device: str = hp("auto", "auto | cpu | cuda | cuda:N (cuda:N: one process only)")
    loggers: tuple[str, ...] = hp((), "also log to an experiment tracker, repeatable: tensorboard | wandb | "
                                  "mlflow (not part of the run's identity)", flag="--logger")
    deterministic: bool = hp(False, "deterministic algorithms: bit-exact resumes on CUDA, slower")
    threads: int = hp(1, "torch CPU threads of a CPU run (0: torch's default, all cores); recorded, "
                         "not part of the run's identity")
    compile: bool = hp(False, "torch.compile the training forward (faster GPU steps after a compile of "
                              "a minute or so); recorded, not part of the run's identity")
    checkpoint_every_s: float = hp(0.0, "checkpoint at an epoch's end only once this many seconds of "
                                        "training passed since the last checkpoint (0: every epoch; the "
                                        "last epoch always): short epochs skip most of the writes, a resumed "
                                        "run redoes at most that much; not part of the run's identity")

    def __post_init__(self) -> None:
        if self.data_dir == "":  # "" (configs and sweep files written before the default was named)
            object.__setattr__(self, "data_dir", RunConfig.data_dir)
        _check(
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED,
            "seed", self.seed, f"expected an integer in [0, {MAX_SEED}]",
        )
        _check(isinstance(self.device, str) and DEVICE_RE.fullmatch(self.device) is not None,
               "device", self.device, "valid choices: auto, cpu, cuda, cuda:N")
        _check(isinstance(self.threads, int) and not isinstance(self.threads, bool) and self.threads >= 0,
               "threads", self.threads, "expected an integer >= 0 (0: torch's default)")
        every = self.checkpoint_every_s
        _check(isinstance(every, int | float) and not isinstance(every, bool) and every >= 0,
               "checkpoint_every_s", every, "expected a number of seconds >= 0 (0: every epoch)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        budget = {**legacy_values(Budget), **d.get("budget", {})}  # an old config: what it trained with
        if "lr_milestones" in budget:
            budget["lr_milestones"] = tuple(budget["lr_milestones"])
        return cls(**{**d, "budget": Budget(**budget), "loggers": tuple(d.get("loggers", ()))})

    @functools.cached_property  # computed once: a status poll asks every cell's, every second
    def run_id(self) -> str:
        """`<pruner>-<model>-<dataset>-s<seed>-<hash of the non-default fields>`."""
        from bench.registry import PRUNERS

        hp_defaults = dataclasses.asdict(PRUNERS.get(self.pruner).Hparams())
        identity = {
            "pruner": self.pruner,
            "model": self.model,
            "dataset": self.dataset,
            "seed": self.seed,
            "hparams": {k: v for k, v in self.hparams.items() if hp_defaults.get(k) != v},
            # a pretrained start: its weights' identity (init_sha256) names the run, not their path
            "budget": {k: v for k, v in _non_default(self.budget).items() if k != "init"},
        }
        if self.device != "auto":
            identity["device"] = self.device
        if self.deterministic:
            identity["deterministic"] = True
        return f"{self.pruner}-{self.model}-{self.dataset}-s{self.seed}-{stable_hash(identity)[:10]}"

    def identity(self, run_id: str | None = None) -> dict[str, Any]:
        """The identity fields of this run's record (see bench.record); `run_id` given: the names
        need not resolve (a job recording why it could not resolve them)."""
        return {
            "run_id": run_id or self.run_id,
            "config_hash": self.config_hash,
            "pruner": self.pruner,
            "model": self.model,
            "dataset": self.dataset,
            "seed": self.seed,
            "hparams": self.hparams,
            "budget": self.to_dict()["budget"],
        }

    @functools.cached_property
    def config_hash(self) -> str:
        """Hash of the whole resolved config (except where and how it runs: RUN_ONLY), defaults included."""
        d = self.to_dict()
        for name in RUN_ONLY:
            d.pop(name)
        d["budget"].pop("init")  # where the init's weights lie; their identity is init_sha256
        for key in ("init_sha256", "nesterov"):  # at their default: configs from before they existed
            if not d["budget"][key]:             # keep their hash (and their checkpoints resume)
                d["budget"].pop(key)
        return stable_hash(d)


# how a run is carried out, not what it trains
RUN_ONLY = ("data_dir", "loggers", "threads", "compile", "checkpoint_every_s")


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def legacy_values(cls: type) -> dict[str, Any]:
    """Fields that declare `legacy`: the value runs written before the field existed had."""
    return {f.name: f.metadata["legacy"] for f in dataclasses.fields(cls) if "legacy" in f.metadata}


def _non_default(dc: Any) -> dict[str, Any]:
    """The fields of `dc` that differ from their default, or from their legacy value if they declare one."""
    reference = {**dataclasses.asdict(type(dc)()), **legacy_values(type(dc))}
    return {
        f.name: getattr(dc, f.name)
        for f in dataclasses.fields(dc)
        if getattr(dc, f.name) != reference[f.name]
    }


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r}: {why}")


# --------------------------------------------------------------------------- parsing user values


def coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert a user value (a CLI string or a TOML scalar) to a field's declared type.

    Raises ConfigError naming `name` and what was expected.
    """
    tp = _resolve(annotation)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{name} = {value!r}: valid choices: {', '.join(map(str, choices))}")
        return value
    if origin in (tuple, list):
        (item, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in re.split(r"[,\s]+", value.strip()) if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} = {value!r}: expected a list")
        return tuple(coerce(v, item, name) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name} = {value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name} = {value!r}: expected an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} = {value!r}: expected an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r}: expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
            raise ConfigError(f"{name} = {value!r}: expected a number") from None
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise ConfigError(f"{name} = {value!r}: expected a finite number (not inf or nan) of "
                              f"magnitude at most {FLOAT32_MAX:.4g}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r}: expected a string")
        return value
    return value


def _resolve(annotation: Any) -> Any:
    """`X | None` -> X; annotations come resolved from `typing.get_type_hints`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate `cls` from user values: unknown keys, wrong types and out-of-range values all
    raise ConfigError naming `where.key` and the valid choices."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "(none)"
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {valid}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


# ------------------------------------------------------------------------ flags from dataclasses


def add_dataclass_flags(group: Any, cls: type, prefix: str = "", fields: Sequence[Any] | None = None) -> None:
    """One `--flag` per field of `cls` (or of `fields`) on a parser or argument group; defaults
    are None so an unset flag never overrides anything."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls) if fields is None else fields:
        default = f.default if f.default is not dataclasses.MISSING else None
        choices = (
            typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        )
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=_flag_help(f"{prefix}{f.metadata.get('help', '')}", default, choices),
        )


def _flag_help(text: str, default: Any, choices: Sequence[str] | None) -> str:
    """Help text with its default (a None default: the text says what unset means) and choices,
    %-escaped for argparse."""
    notes = ([] if default in (None, "") else [f"default: {default}"]) + ([f"choices: {', '.join(choices)}"]
                                                                     if choices else [])
    return (text + (f" ({'; '.join(notes)})" if notes else "")).replace("%", "%%")


def dataclass_from_args(cls: type, args: argparse.Namespace, where: str) -> Any:
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if getattr(args, f.name, None) is not None
    }
    return build_dataclass(cls, values, where)


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE (e.g. --set c=0.02)")
        out[key.strip()] = value.strip()
    return out


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that define one run: pruner, model, dataset, hyperparameters, budget, seed."""
    parser.add_argument("--pruner", default="dense", help="pruner name (see `bench list`)")
    parser.add_argument("--model", default="mlp", help="model name (see `bench list`)")
    parser.add_argument("--dataset", default="digits", help="dataset name (see `bench list`)")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pruner hyperparameter (KEY or pruners.PRUNER.KEY) or a budget key (budget.KEY), TOML "
        "value syntax, repeatable: --set c=0.02 --set mu=0.6 --set budget.momentum=0.9",
    )
    add_run_level_flags(parser)
    add_dataclass_flags(parser.add_argument_group("budget (shared by every pruner in a comparison)"), Budget,
                        fields=[f for f in dataclasses.fields(Budget) if not f.metadata.get("computed")])


# the RunConfig fields that are flags of `bench run` (the others: --pruner, --model, --dataset, --set)
RUN_LEVEL = ("seed", "data_dir", "device", "loggers", "deterministic", "threads", "compile",
             "checkpoint_every_s")
# the RUN_LEVEL fields a sweep file sets at its top, for every cell (seed: the grid's `seeds`
# axis; threads: the executor's, from the cores it gives each cell)
SWEEP_LEVEL = tuple(k for k in RUN_LEVEL if k not in ("seed", "threads"))


def add_run_level_flags(parser: argparse.ArgumentParser, names: Sequence[str] = RUN_LEVEL) -> None:
    """One flag per RUN_LEVEL field of RunConfig (or per one of `names`), from its declaration
    (help, default, type): a bool is a switch, a tuple a repeatable flag; unset flags are None
    (the field's default)."""
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name not in names:
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        help_ = f"{f.metadata['help']} (default: {f.default!r})".replace("%", "%%")
        if hints[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_)
        elif typing.get_origin(hints[f.name]) is tuple:
            parser.add_argument(flag, dest=f.name, action="append", default=None, metavar="NAME", help=help_)
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_)


def run_level_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The RUN_LEVEL fields given on the command line, converted to their declared types and
    checked (ConfigError naming the flag for a value that does not convert or is out of range)."""
    return {name: run_level_value(name, getattr(args, name), "--" + name.replace("_", "-"))
            for name in RUN_LEVEL if getattr(args, name, None) is not None}


def run_level_value(name: str, value: Any, where: str) -> Any:
    """A user value of the RunConfig field `name` (a flag's string, a sweep file's TOML value),
    converted to its declared type and range-checked by RunConfig's own checks; ConfigError
    naming `where` and what is valid."""
    value = coerce(value, typing.get_type_hints(RunConfig)[name], where)
    try:
        RunConfig(**{name: value})
    except ConfigError as e:
        raise ConfigError(str(e).replace(name, where, 1)) from None
    return value
