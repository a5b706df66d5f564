"""Sweep files: a TOML grid of runs under one training budget, parsed and validated into a
`SweepSpec` whose cells are `RunConfig`s with resolved hyperparameters. Nothing here runs.

    name = "digits-demo"         # default out folder: runs/<name>
    max_cells = 10000            # optional: the most cells the grid may ask for (default 10000)
    data_dir = "/path/to/data"   # optional: RunConfig's run-level fields (SWEEP_LEVEL: data_dir,
    device = "cuda"              # device, loggers, deterministic, compile, checkpoint_every_s), for
    loggers = ["tensorboard"]    # every cell; types, defaults and help: the fields' (`bench run --help`)
    [budget]                     # bench.config.Budget fields, shared by every cell
    epochs = 30
    [grid]
    models = ["mlp"]
    datasets = ["digits"]
    seeds = [0, 1, 2]            # default [0]
    [pruners.grda]               # a list is a grid axis, a scalar is fixed
    c = [0.01, 0.02]
    mu = 0.6
    [pruners.gmp]
    sparsity = 0.9
    lr = [0.05, 0.1]             # a budget key under a pruner: that pruner's own value (or axis)
    [pruners.dense]              # no keys: one cell per (model, dataset, seed)

cells = models x datasets x seeds x (for each pruner table, the product of its list-valued keys
and of the [budget] lists it does not set itself); `[[pruners.grda]]` (an array of tables) adds
several such tables for one pruner. Identical cells (same run_id) run once. Every error in a file
is reported at once, each naming file, table and key.

Budget keys as axes: a list in [budget] (`lr = [0.05, 0.1]`) runs every pruner at each value; a
budget key in a pruner's table replaces [budget]'s for that pruner (tuning its lr, epochs or weight
decay with as many settings as another pruner's knob). On the paper track `weight_decay` (when > 0)
and `nesterov` are those of the methods whose papers train with SGD and momentum (the papers set
them per data set and network: bench.pruner.SGD_MOMENTUM_WD): [budget] states a board's, a
pruner's table that of a paper with its own. The keys of SECTION_BUDGET_KEYS define what
is compared (the recipe track, the validation split, augmentation, the layers that may be pruned,
the arithmetic): a list of them in [budget] gives one board section per value, and a pruner table
may not set them. A pruner's settings are its distinct (hyperparameters, budget) pairs
(`SweepSpec.settings_per_pruner`, the board's tuning count).

Overrides (`--set`, one grammar for `bench run`, `bench sweep` and `bench board`) change a parsed
file before it is validated: bench.overrides.

The number of cells is counted from the axes before anything is expanded: a few bytes of TOML can
ask for millions of cells, which `max_cells` refuses before they cost time or memory.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import tomllib
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import MAX_SEED, SWEEP_LEVEL, Budget, RunConfig, coerce, run_level_value
from bench.errors import ConfigError
from bench.overrides import BUDGET_KEYS, apply_overrides, budget_check
from bench.overrides import config_from_args as config_from_args  # re-exported: callers import it here
from bench.overrides import parse_value as parse_value
from bench.overrides import run_overrides as run_overrides
from bench.registry import DATASETS, MODELS, PRUNERS
from bench.validate import check_config, check_data, check_loggers

TOP_KEYS = ("name", "max_cells", *SWEEP_LEVEL, "budget", "grid", "pruners")
GRID_KEYS = ("models", "datasets", "seeds")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME = 100  # characters: the name is a folder name (255 bytes at most) and a SLURM job name
MAX_CELLS = 10_000  # the default of `max_cells`
# budget keys that define what is compared, the same for every pruner of a board section
SECTION_BUDGET_KEYS = ("recipe", "val_fraction", "augment", "prune_first_last", "precision")
# budget keys a pruner table may set (its own value or axis): counted as tuning by the board
TUNABLE_BUDGET_KEYS = tuple(k for k in BUDGET_KEYS if k not in SECTION_BUDGET_KEYS)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, validated sweep: every cell is a RunConfig with resolved hyperparameters."""

    name: str
    budget: Budget
    cells: list[RunConfig]
    path: Path
    source: str = ""  # the TOML text, kept in the out folder's manifest
    overrides: tuple[str, ...] = ()  # the `--set KEY=VALUE` applied to it, in order
    # budget keys tuned in this sweep (a list in [budget] or set under a pruner): part of a
    # pruner's setting, not of its board section
    tuned: tuple[str, ...] = ()

    def per_pruner(self) -> Counter[str]:
        return Counter(c.pruner for c in self.cells)

    def section_budget(self, cell: RunConfig) -> Budget:
        """`cell`'s budget with its tuned keys at the sweep's base values: the budget of its
        board section, the same for every pruner compared in it."""
        return dataclasses.replace(cell.budget, **{k: getattr(self.budget, k) for k in self.tuned})

    def settings_per_pruner(self) -> dict[str, int]:
        """Per pruner, how many settings it was tuned over: its distinct (hyperparameters, tuned
        budget keys) over its cells; models, datasets, seeds and sections (recipe track...) aside.
        The board's tuning count."""
        seen: dict[str, set[str]] = {}
        for c in self.cells:
            key = repr((sorted(c.hparams.items()), [getattr(c.budget, k) for k in self.tuned]))
            seen.setdefault(c.pruner, set()).add(key)
        return {p: len(v) for p, v in seen.items()}


# ------------------------------------------------------------------------------------- parsing


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Parse and validate a sweep file, with `overrides` (`KEY.PATH=TOML value`, see
    `apply_overrides`) applied first; raises ConfigError listing every problem in it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the sweep file: {e}") from None
    return sweep_from_toml(text, path, overrides)


def sweep_from_toml(text: str, path: str | Path = "sweep.toml",
                    overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    spec = sweep_from_dict(apply_overrides(data, overrides), path, text)
    return dataclasses.replace(spec, overrides=tuple(overrides))


def sweep_from_dict(data: dict[str, Any], path: str | Path = "sweep.toml", source: str = "") -> SweepSpec:
    """Validate a parsed sweep document and expand it into cells."""
    path = Path(path)
    errors: list[str] = []
    _unknown_keys(data, TOP_KEYS, "", errors)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
        errors.append(
            f"name = {name!r}: must be a string of 1 to {MAX_NAME} letters, digits, '.', '_' or '-' "
            "(it names the default out folder runs/<name>)"
        )
    max_cells = data.get("max_cells", MAX_CELLS)
    if not isinstance(max_cells, int) or isinstance(max_cells, bool) or max_cells < 1:
        errors.append(f"max_cells = {max_cells!r}: expected an integer >= 1")
        max_cells = MAX_CELLS
    run_level = _parse_run_level(data, errors)
    budget_axes = _parse_budget(data.get("budget", {}), errors)
    grid = _parse_grid(data.get("grid"), errors)
    raw_budget = data.get("budget") if isinstance(data.get("budget"), dict) else {}
    settings = _parse_pruners(data.get("pruners"), grid, budget_axes, raw_budget, max_cells, errors)
    if not errors:
        _check_fits(grid, errors)
    if errors:
        raise ConfigError(_format(path, errors))

    cells: dict[str, RunConfig] = {}
    for (pruner, hparams, budget), model, dataset, seed in itertools.product(
        settings, grid["models"], grid["datasets"], grid["seeds"]
    ):
        config = RunConfig(
            pruner=pruner,
            model=model,
            dataset=dataset,
            hparams=hparams,
            budget=budget,
            seed=seed,
            **run_level,
        )
        try:
            config = check_config(config)
        except ConfigError as e:  # the checks above should have caught it; name the cell anyway
            errors.append(f"[pruners.{pruner}] {e} (cell {model}/{dataset}/seed {seed})")
            continue
        cells.setdefault(config.run_id, config)
    if errors:
        raise ConfigError(_format(path, list(dict.fromkeys(errors))))
    base = Budget(**{k: v[0] for k, v in budget_axes.items()})  # each [budget] axis at its first value
    varied = {k for _, _, b in settings for k in TUNABLE_BUDGET_KEYS if getattr(b, k) != getattr(base, k)}
    tuned = tuple(k for k in TUNABLE_BUDGET_KEYS if k in varied)
    return SweepSpec(name=name, budget=base, cells=list(cells.values()), path=path, source=source,
                     tuned=tuned)


def _format(path: Path, errors: list[str]) -> str:
    lines = [f"{path}: {e}" for e in errors]
    if len(lines) == 1:
        return lines[0]
    return f"{len(lines)} errors in {path}:\n  " + "\n  ".join(lines)


def _parse_run_level(data: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    """The SWEEP_LEVEL keys the file sets (RunConfig fields: their types, checks and defaults are
    the field declarations'), each converted and checked; the unset ones keep RunConfig's default."""
    values: dict[str, Any] = {}
    for key in SWEEP_LEVEL:
        if key not in data:
            continue
        try:
            values[key] = run_level_value(key, data[key], key)
            if key == "loggers":
                check_loggers(values[key])
        except ConfigError as e:
            errors.append(str(e))
            values.pop(key, None)
    return values


def _unknown_keys(table: dict[str, Any], valid: tuple[str, ...], where: str, errors: list[str]) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        prefix = f"{where} " if where else ""
        errors.append(
            f"{prefix}unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(valid) or '(none)'}"
        )


def _axis(value: Any, hint: Any) -> list[Any] | None:
    """A key's values: a list is an axis, except for a list-typed field (`lr_milestones`), whose
    axis is a list of lists. None for an empty axis."""
    list_typed = typing.get_origin(hint) in (tuple, list)
    nested = isinstance(value, list) and bool(value) and all(isinstance(v, list) for v in value)
    if isinstance(value, list) and (not list_typed or nested or not value):
        return value or None
    return [value]


def _coerce_axis(values: list[Any], hint: Any, where: str, errors: list[str],
                 check: Any = None) -> list[Any] | None:
    """The values coerced to the field's type, duplicates dropped; None (errors noted) if any is bad.
    `check(value)` raises ConfigError for a value out of range."""
    coerced, ok = [], True
    for v in values:
        try:
            c = coerce(v, hint, where)
            if check is not None:
                check(c)
            coerced.append(c)
        except ConfigError as e:
            errors.append(str(e))
            ok = False
    return list(dict.fromkeys(coerced)) if ok else None


def _parse_budget(table: Any, errors: list[str]) -> dict[str, list[Any]]:
    """[budget] as axes: key -> its values (one for a scalar), each checked."""
    if not isinstance(table, dict):
        errors.append(f"[budget] must be a table of Budget fields, got {table!r}")
        return {}
    hints = typing.get_type_hints(Budget)
    _unknown_keys(table, BUDGET_KEYS, "[budget]", errors)
    axes: dict[str, list[Any]] = {}
    for key, value in table.items():
        if key not in BUDGET_KEYS:
            continue
        where = f"[budget] {key}"
        values = _axis(value, hints[key])
        if values is None:
            errors.append(f"{where} = []: an axis must not be empty")
            continue
        coerced = _coerce_axis(values, hints[key], where, errors, budget_check(key, where))
        if coerced is not None:
            axes[key] = coerced
    return axes


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _parse_grid(table: Any, errors: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {"models": [], "datasets": [], "seeds": [0]}
    if table is None:
        errors.append('[grid] missing; e.g. [grid] models = ["mlp"], datasets = ["digits"]')
        return grid
    if not isinstance(table, dict):
        errors.append(f"[grid] must be a table with keys {', '.join(GRID_KEYS)}, got {table!r}")
        return grid
    _unknown_keys(table, GRID_KEYS, "[grid]", errors)
    for key, registry in (("models", MODELS), ("datasets", DATASETS)):
        if key not in table:
            errors.append(f"[grid] {key}: missing; valid choices: {', '.join(registry.names())}")
            continue
        names = _as_list(table[key])
        if not names:
            errors.append(f"[grid] {key} = []: must not be empty")
        for name in names:
            if not isinstance(name, str) or name not in registry.names():
                errors.append(
                    f"[grid] {key} = {name!r}: unknown {registry.kind}; "
                    f"valid choices: {', '.join(registry.names())}"
                )
            elif name not in grid[key]:
                grid[key].append(name)
    if "seeds" in table:
        seeds = _as_list(table["seeds"])
        grid["seeds"] = []
        if not seeds:
            errors.append("[grid] seeds = []: must not be empty")
        for seed in seeds:
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
                errors.append(f"[grid] seeds = {seed!r}: expected an integer in [0, {MAX_SEED}]")
            elif seed not in grid["seeds"]:
                grid["seeds"].append(seed)
    return grid


def _parse_pruners(
    table: Any, grid: dict[str, list[Any]], budget_axes: dict[str, list[Any]], raw_budget: dict[str, Any],
    max_cells: int, errors: list[str],
) -> list[tuple[str, dict[str, Any], Budget]]:
    """(pruner, hparams, budget) for every setting in the grid: each table's product of its list
    values and of the [budget] axes it does not set itself.

    The cells are counted from the axes' lengths first; more than `max_cells` is an error, and
    nothing is expanded."""
    if not isinstance(table, dict) or not table:
        errors.append(
            "[pruners] needs at least one [pruners.NAME] table; valid names: " + ", ".join(PRUNERS.names())
        )
        return []
    tables_by_pruner: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
    for name, entry in table.items():
        if name not in PRUNERS.names():
            errors.append(
                f"[pruners.{name}]: unknown pruner {name!r}; valid choices: " + ", ".join(PRUNERS.names())
            )
            continue
        if isinstance(entry, dict):
            tables = [(f"[pruners.{name}]", entry)]
        elif isinstance(entry, list) and entry and all(isinstance(t, dict) for t in entry):
            tables = [(f"[[pruners.{name}]] #{i + 1}", t) for i, t in enumerate(entry)]
        else:
            errors.append(
                f"[pruners.{name}] must be a table ([pruners.{name}]) or an array of tables "
                f"([[pruners.{name}]]), got {entry!r}"
            )
            continue
        tables_by_pruner.append((name, tables))
    per_setting = len(grid["models"]) * len(grid["datasets"]) * len(grid["seeds"])
    n_cells = per_setting * sum(
        _settings_count({**raw_budget, **t}) for _, tables in tables_by_pruner for _, t in tables
    )
    if n_cells > max_cells:
        errors.append(
            f"the grid asks for up to {n_cells:,} cells, more than max_cells = {max_cells:,}; to run "
            f"it, set max_cells = {n_cells} at the top of the file"
        )
        return []
    settings: list[tuple[str, dict[str, Any], Budget]] = []
    for name, tables in tables_by_pruner:
        for where, t in tables:
            settings += [(name, hp, b) for hp, b in _expand_table(name, t, where, budget_axes, errors)]
    return settings


def _settings_count(table: dict[str, Any]) -> int:
    """How many settings a pruner table (merged over [budget]) expands into: the product of its
    axes' distinct values (an upper bound when a value appears twice under different spellings)."""
    n = 1
    for value in table.values():
        if isinstance(value, list) and value and not all(isinstance(v, list) for v in value):
            n *= len({repr(v) for v in value})
        elif isinstance(value, list) and value:
            n *= len(value)
    return n


def _expand_table(
    pruner: str, table: dict[str, Any], where: str, budget_axes: dict[str, list[Any]], errors: list[str]
) -> list[tuple[dict[str, Any], Budget]]:
    """A pruner table's settings: its hyperparameter axes x its budget axes (its own budget keys
    replacing [budget]'s)."""
    cls = PRUNERS.get(pruner).Hparams
    fields = tuple(f.name for f in dataclasses.fields(cls))
    hints = typing.get_type_hints(cls)
    budget_hints = typing.get_type_hints(Budget)
    n_errors = len(errors)
    axes: dict[str, list[Any]] = {}
    own_budget: dict[str, list[Any]] = {}
    for key, value in table.items():
        if key in fields:
            hint, check, into = hints[key], None, axes
        elif key in SECTION_BUDGET_KEYS:
            errors.append(
                f"{where} {key}: set it in [budget]: it is the same for every pruner of a section "
                f"(budget keys a pruner may set: {', '.join(TUNABLE_BUDGET_KEYS)})"
            )
            continue
        elif key in BUDGET_KEYS:
            hint, check, into = budget_hints[key], budget_check(key, f"{where} {key}"), own_budget
        elif key in GRID_KEYS:
            errors.append(f"{where} {key}: set it in [grid] (shared by every pruner)")
            continue
        else:
            _unknown_keys({key: value}, fields + TUNABLE_BUDGET_KEYS, where, errors)
            continue
        values = _axis(value, hint)
        if values is None:
            errors.append(f"{where} {key} = []: an axis must not be empty")
            continue
        coerced = _coerce_axis(values, hint, f"{where} {key}", errors, check)
        if coerced is not None:  # the keys with bad values are left out of the checks across keys below
            into[key] = coerced
    combos = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    for hp in combos:
        try:
            cls(**hp)
        except (ConfigError, ValueError, TypeError) as e:
            msg = str(e)
            if not any(msg.startswith(f"{k} ") for k in hp):  # a check across keys: name the cell
                msg += f" (with {', '.join(f'{k} = {v!r}' for k, v in hp.items())})"
            errors.append(f"{where} {msg}")
    merged = budget_axes | own_budget
    budgets = []
    for combo in itertools.product(*merged.values()):
        values = dict(zip(merged, combo, strict=True))
        try:
            budgets.append(Budget(**values))
        except ConfigError as e:  # a check across budget keys
            errors.append(f"{where} {e} (with {', '.join(f'{k} = {v!r}' for k, v in values.items())})")
    if len(errors) != n_errors:
        return []
    return [(hp, b) for hp in combos for b in dict.fromkeys(budgets)]


def _check_fits(grid: dict[str, list[Any]], errors: list[str]) -> None:
    for model, dataset in itertools.product(grid["models"], grid["datasets"]):
        info = DATASETS.get(dataset)
        if info.input_shape is None:
            continue
        try:
            MODELS.get(model).check_fits(dataset, info.input_shape, info.num_classes)
        except ConfigError as e:
            errors.append(f"[grid] {e} (every model runs on every dataset: use one sweep file per family)")


def check_local_data(spec: SweepSpec) -> None:
    """Local jobs run here, so missing dataset files are bad input (exit 2) found before anything
    is written or submitted. Not for SLURM (the files need only be on the cluster's nodes) nor
    for the dry run (it estimates with stand-in data)."""
    errors = []
    for cell in {(c.dataset, c.data_dir): c for c in spec.cells}.values():
        try:
            check_data(cell)
        except ConfigError as e:
            errors.append(f"data_dir = {cell.data_dir!r}: {e}")
    if errors:
        raise ConfigError(_format(spec.path, errors))
