"""Overrides: `--set KEY.PATH=VALUE` (and `~KEY.PATH`), one grammar for `bench run`, `bench sweep`,
`bench board` and `bench calibrate`. A sweep's overrides change its parsed TOML document before it
is validated (`apply_overrides`, used by bench.spec.load_sweep), with TOML value syntax, so a
paper-scale sweep can be smoke-tested without editing it:

    load_sweep("leaderboards/cifar10-vgg16/sweep.toml",
               ["budget.epochs=1", "pruners.grda.c=0.01", "grid.seeds=[0]", "~pruners.imp"])

A single run's (`run_overrides`, `config_from_args`) set its pruner's hyperparameters and budget
keys.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tomllib
import typing
from typing import Any

from bench.config import Budget, RunConfig, coerce, dataclass_from_args, run_level_from_args
from bench.errors import ConfigError
from bench.validate import check_config

BUDGET_KEYS = tuple(f.name for f in dataclasses.fields(Budget))


def parse_value(text: str) -> Any:
    """A TOML value (`1`, `0.01`, `[0, 1]`, `"x"`, `true`); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of a parsed sweep document with each override applied, in order:

    - `KEY.PATH=VALUE` sets a key (VALUE in TOML syntax: `budget.epochs=1`, `pruners.grda.c=0.01`,
      `pruners.gmp.lr=[0.05, 0.1]`, `grid.seeds=[0]`, `grid.models=["mlp"]`); the tables on the
      path are created if missing (`pruners.snip.sparsity=0.9` adds snip);
    - `~KEY.PATH` removes a key or table (`~pruners.imp` drops a pruner; `~budget.momentum` brings
      back the default); it must exist.

    A key under an array of tables (`[[pruners.grda]]`) is set in (or removed from) each of its
    tables. Unknown keys are left to the validation that follows, which names the valid ones."""
    data = copy.deepcopy(data)
    for item in overrides:
        remove = item.strip().startswith("~")
        key, sep, value = item.strip().removeprefix("~").partition("=")
        parts = [p.strip() for p in key.strip().split(".")]
        if remove == bool(sep) or not all(parts):
            raise ConfigError(
                f"--set {item!r}: expected KEY.PATH=VALUE to set a key or ~KEY.PATH to remove one "
                "(e.g. --set budget.epochs=1, --set ~pruners.imp)"
            )
        tables: list[Any] = [data]
        for depth, part in enumerate(parts[:-1]):
            nxt = []
            for t in tables:
                child = t.get(part) if remove else t.setdefault(part, {})
                if isinstance(child, list) and child and all(isinstance(c, dict) for c in child):
                    nxt += child
                elif isinstance(child, dict):
                    nxt.append(child)
                elif not (remove and child is None):
                    where = ".".join(parts[: depth + 1])
                    raise ConfigError(f"--set {item!r}: {where} = {child!r} is not a table")
            tables = nxt
        if remove:
            holders = [t for t in tables if parts[-1] in t]
            if not holders:
                parent = ".".join(parts[:-1])
                keys = sorted({k for t in tables for k in t})
                where = f"{parent} has" if parent else "the sweep file has"
                have = ", ".join(keys) or "(none)"
                raise ConfigError(f"--set {item!r}: no such key to remove; {where}: {have}")
            for t in holders:
                del t[parts[-1]]
            continue
        for t in tables:
            t[parts[-1]] = parse_value(value.strip())
    return data


def run_overrides(
    sets: list[str] | tuple[str, ...], pruner: str, budget: Budget
) -> tuple[dict[str, str], Budget]:
    """`--set` of `bench run` and `bench calibrate` in the sweep files' grammar, for their one
    run: `budget.KEY=VALUE` a budget key (over its flag), `pruners.<its pruner>.KEY=VALUE` or the
    short `KEY=VALUE` a hyperparameter of its pruner. Returns (hyperparameters as given, each
    field's type converts them; `budget` with the budget keys set); raises ConfigError naming the
    override and the valid forms or choices."""
    hparams: dict[str, str] = {}
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(Budget)
    for item in sets:
        key, sep, value = item.partition("=")
        parts = [p.strip() for p in key.strip().split(".")]
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. --set c=0.02, --set budget.lr=0.05)")
        if len(parts) == 1:
            hparams[parts[0]] = value.strip()
        elif len(parts) == 3 and parts[:2] == ["pruners", pruner]:
            hparams[parts[2]] = value.strip()
        elif len(parts) == 2 and parts[0] == "budget" and parts[1] in BUDGET_KEYS:
            where = f"--set budget.{parts[1]}"
            changes[parts[1]] = coerce(parse_value(value.strip()), hints[parts[1]], where)
            budget_check(parts[1], where)(changes[parts[1]])
        else:
            raise ConfigError(
                f"--set {item!r}: a run takes KEY=VALUE or pruners.{pruner}.KEY=VALUE (a hyperparameter "
                f"of its pruner) or budget.KEY=VALUE (valid budget keys: {', '.join(BUDGET_KEYS)})"
            )
    return hparams, dataclasses.replace(budget, **changes)


def budget_check(key: str, where: str) -> Any:
    def check(value: Any) -> None:  # range checks, one field at a time to report them all
        try:
            Budget(**{key: value})
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"budget.{key}", where, 1)) from None

    return check


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated RunConfig (hyperparameters resolved) from `add_run_flags` flags."""
    hparams, budget = run_overrides(args.sets, args.pruner, dataclass_from_args(Budget, args, "budget"))
    config = RunConfig(
        pruner=args.pruner,
        model=args.model,
        dataset=args.dataset,
        hparams=hparams,
        budget=budget,
        **run_level_from_args(args),
    )
    return check_config(config)
