"""`bench calibrate`: find the value of a pruner's sparsity knob that reaches a target sparsity.

gRDA, STR and VD do not take a target sparsity: it follows from a hyperparameter, which the
pruner class declares as `sparsity_knob` (name, search range, log/linear scale, direction).
The search has two phases, each a secant search of logit(sparsity) in the knob's scale (regula
falsi once the target is bracketed, steps by the last known slope until then):

1. search runs on a shortened budget (`search_fraction` of the epochs), to within tolerance/2;
2. full-budget runs, starting from phase 1's answer with phase 1's slope, until one is within
   tolerance (or `full_runs` are spent). Sparsity depends on the budget (gRDA's threshold
   grows with the step count), so only a full-budget run is ever the answer.

Search runs live in a temporary folder (deleted) unless `search_dir` is given; the answer's run
folder is copied into `out` like any `bench run`, next to the JSON record of the search
(`calibration-*.json`, read back by `load_calibrations`: a board shows what landing cost).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import RunConfig, add_run_flags, parse_sets
from bench.errors import ConfigError
from bench.io import read_json, write_json
from bench.pruner import SparsityKnob
from bench.registry import PRUNERS
from bench.run.job import run
from bench.runs import FILES, RunStatus
from bench.spec import config_from_args
from bench.validate import check_config, check_out, check_out_files

LOGIT_CLIP = 1e-3  # sparsity 0 or 1 (saturated) counts as 0.001 or 0.999

# ------------------------------------------------------------------------------ knob scale


def _to_u(knob: SparsityKnob, value: float) -> float:
    """The search coordinate: log10 or linear, oriented so that sparsity grows with it."""
    u = math.log10(value) if knob.scale == "log" else value
    return u if knob.increasing else -u


def _from_u(knob: SparsityKnob, u: float) -> float:
    u = u if knob.increasing else -u
    return 10**u if knob.scale == "log" else u


def knob_of(pruner: str) -> SparsityKnob:
    """The pruner's declared sparsity knob (ConfigError naming the pruners that have one)."""
    knob = PRUNERS.get(pruner, "pruner").sparsity_knob
    if knob is None:
        with_knob = [n for n, cls in PRUNERS.items() if cls.sparsity_knob is not None]
        hint = " (it takes `--set sparsity=...` directly)" if "sparsity" in _fields(pruner) else ""
        raise ConfigError(
            f"pruner {pruner!r} has no sparsity knob to calibrate{hint}; "
            f"pruners with one: {', '.join(with_knob)}"
        )
    return knob


def _fields(pruner: str) -> list[str]:
    return [f.name for f in dataclasses.fields(PRUNERS.get(pruner).Hparams)]


# ---------------------------------------------------------------------------------- search


def _logit(s: float) -> float:
    """Sparsity on the logit scale, where its curve against a log knob is close to a line."""
    if math.isnan(s):
        return math.inf
    s = min(max(s, LOGIT_CLIP), 1 - LOGIT_CLIP)
    return math.log(s / (1 - s))


def secant_search(
    evaluate: Callable[[float], float],
    u0: float,
    bounds: tuple[float, float],
    target: float,
    tol: float,
    max_runs: int,
    slope: float | None = None,
) -> list[tuple[float, float]]:
    """Evaluate points u (sparsity increasing in u, within `bounds`) until one is within `tol`
    of `target` or `max_runs` are spent; returns every (u, sparsity) in order.

    Works on logit(sparsity). Once the target is bracketed: regula falsi with the Illinois
    modification (the end that stayed twice has its residual halved, so a curved function
    cannot stall one end). Until then: a step by the latest slope estimate (`slope`, in logit
    per unit of u, to start with) but no further than the bound, or halfway to the bound while
    there is no estimate. A NaN (a run that did not finish) counts as overshooting.
    """
    lo, hi = bounds
    goal = _logit(target)
    below: tuple[float, float] | None = None  # (u, residual) of the bracket's ends
    above: tuple[float, float] | None = None
    points: list[tuple[float, float]] = []
    last_side = None
    u = u0
    for _ in range(max_runs):
        s = evaluate(u)
        points.append((u, s))
        if abs(s - target) <= tol:
            break
        r = _logit(s) - goal
        side = "below" if r < 0 else "above"
        if side == "below":
            below, lo = (u, r), u
        else:
            above, hi = (u, r), u
        if hi - lo < 1e-9:
            break
        if below and above:
            if side == last_side:  # Illinois: the other end stayed twice
                if side == "below":
                    above = (above[0], above[1] / 2)
                else:
                    below = (below[0], below[1] / 2)
            t = -below[1] / (above[1] - below[1])
            u = below[0] + t * (above[0] - below[0]) if 0 < t < 1 else (lo + hi) / 2
        else:
            if len(points) >= 2:
                slope = _slope(*points[-2:]) or slope
            edge = hi if r < 0 else lo
            if slope and math.isfinite(r):
                u = min(max(u - r / slope, lo), hi)  # beyond the bracket: its edge (is it reachable?)
            else:
                u = (u + edge) / 2
        last_side = side
    return points


def _slope(a: tuple[float, float], b: tuple[float, float]) -> float | None:
    """logit(sparsity) per unit of u between two points, if positive."""
    (u1, s1), (u2, s2) = sorted((a, b))
    if u1 == u2:
        return None
    slope = (_logit(s2) - _logit(s1)) / (u2 - u1)
    return slope if 0 < slope < math.inf else None


def _short_budget(config: RunConfig, fraction: float) -> RunConfig:
    b = config.budget
    short = dataclasses.replace(
        b, epochs=max(1, round(b.epochs * fraction)), max_steps=math.ceil(b.max_steps * fraction)
    )
    return dataclasses.replace(config, budget=short)


def calibrate(
    config: RunConfig,
    target: float,
    out: str | Path,
    tolerance: float = 0.01,
    search_fraction: float = 0.25,
    search_runs: int = 8,
    full_runs: int = 4,
    search_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    quiet: bool = False,
) -> dict[str, Any]:
    """Search `config.pruner`'s sparsity knob for `target`; returns (and writes to `out`) the record.
    `quiet`: no line per trial (`log`) nor per epoch of its run."""
    _check(target, tolerance, search_fraction, search_runs, full_runs)
    config = check_config(config)
    if quiet:
        log = _discard
    knob = knob_of(config.pruner)
    bounds = tuple(sorted((_to_u(knob, knob.low), _to_u(knob, knob.high))))
    out = Path(out)
    name = f"calibration-{config.pruner}-{config.model}-{config.dataset}-s{config.seed}-{target:g}.json"
    check_out_files(out, [name], "--out")  # the record, before the search (not lost after it)
    trials: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as tmp:
        runs_dir = Path(search_dir) if search_dir is not None else Path(tmp)

        def evaluator(base: RunConfig, phase: str) -> Callable[[float], float]:
            def evaluate(u: float) -> float:
                value = float(f"{_from_u(knob, u):.4g}")  # readable hparams (and run ids)
                cfg = check_config(dataclasses.replace(base, hparams={**base.hparams, knob.name: value}))
                with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
                    r = run(cfg, runs_dir)  # quiet: its epoch lines (train.log keeps them)
                trials.append({
                    "phase": phase, "value": value, "sparsity": r["sparsity"], "top1": r["top1"],
                    "status": r["status"], "epochs": cfg.budget.epochs, "run_id": r["run_id"],
                    "steps": r.get("steps", 0), "train_macs": r.get("train_macs", 0.0),
                })
                log(f"calibrate {config.pruner} [{phase}, {cfg.budget.epochs} epochs] {knob.name}={value:g}: "
                    f"{r['status']}, sparsity {r['sparsity']:.4f}, top1 {r['top1']}")
                # a run that did not finish counts as overshooting (NaN compares as "not below")
                return r["sparsity"] if r["status"] == RunStatus.OK else math.nan

            return evaluate

        u0, slope = (bounds[0] + bounds[1]) / 2, None
        if search_fraction < 1:
            short = _short_budget(config, search_fraction)
            points = secant_search(evaluator(short, "search"), u0, bounds, target, tolerance / 2, search_runs)
            points = [p for p in points if not math.isnan(p[1])]
            if points:
                u0 = min(points, key=lambda p: abs(p[1] - target))[0]
                below = [p for p in points if p[1] < target]
                above = [p for p in points if p[1] >= target]
                slope = _slope(max(below), min(above)) if below and above else None
        secant_search(evaluator(config, "full"), u0, bounds, target, tolerance, full_runs, slope)

        full = [t for t in trials if t["phase"] == "full" and t["status"] == RunStatus.OK]
        if not full:
            raise RuntimeError(f"calibrate {config.pruner}: no full-budget run finished (see the log above)")
        best = min(full, key=lambda t: abs(t["sparsity"] - target))
        final = dataclasses.replace(config, hparams={**config.hparams, knob.name: best["value"]})
        run_dir = _publish(runs_dir / best["run_id"], out, final)

    record = {
        "pruner": config.pruner, "model": config.model, "dataset": config.dataset, "seed": config.seed,
        "target": target, "tolerance": tolerance, "knob": dataclasses.asdict(knob),
        "budget": dataclasses.asdict(config.budget), "search_fraction": search_fraction,
        "trials": trials, "value": best["value"], "hparams": final.hparams,
        "sparsity": best["sparsity"], "top1": best["top1"], "run_id": best["run_id"],
        "run_dir": str(run_dir), "within_tolerance": abs(best["sparsity"] - target) <= tolerance,
        "cost": search_cost(trials),
    }
    record["record"] = str(out / name)
    write_json(record["record"], record)
    return record


def _discard(line: str) -> None:
    """A quiet calibrate's log."""


def search_cost(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """What landing on the target cost: runs, optimizer steps and training MACs over all trials
    (a method that takes its sparsity directly costs one run)."""
    return {
        "runs": len(trials),
        "steps": sum(t.get("steps", 0) for t in trials),
        "train_macs": sum(t.get("train_macs", 0.0) for t in trials),
    }


CALIBRATION_COLUMNS = ["dataset", "model", "pruner", "recipe", "target", "knob", "value", "sparsity",
                       "within_tolerance", "runs", "steps", "budgets"]


def _calibration_row(path: Path) -> dict[str, Any]:
    r = read_json(path)
    if not isinstance(r, dict):
        raise ConfigError(f"{path}: not a calibration record (a JSON object); remake it with "
                          "`bench calibrate` or remove it")
    cost, trials, knob = r.get("cost"), r.get("trials", []), r.get("knob")
    fields = {"cost.runs": (cost or {}).get("runs") if isinstance(cost, dict) else None,
              "cost.steps": (cost or {}).get("steps") if isinstance(cost, dict) else None,
              "target": r.get("target"), "sparsity": r.get("sparsity")}
    bad = [k for k, v in fields.items() if isinstance(v, bool) or not isinstance(v, int | float)]
    if bad or not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
        raise ConfigError(f"{path}: malformed calibration record (field(s) {', '.join(bad) or 'trials'} "
                          "missing or not numbers); remake it with `bench calibrate` or remove it")
    full = [t for t in trials if t.get("phase") == "full" and isinstance(t.get("steps"), int | float)
            and t["steps"] > 0]
    budget_steps = full[-1]["steps"] if full else None
    return {
        "dataset": r.get("dataset"), "model": r.get("model"), "pruner": r.get("pruner"),
        "recipe": (r.get("budget") or {}).get("recipe", "shared"), "target": r["target"],
        "knob": knob.get("name") if isinstance(knob, dict) else knob,
        "value": r.get("value"), "sparsity": r["sparsity"], "within_tolerance": r.get("within_tolerance"),
        "runs": cost["runs"], "steps": cost["steps"],
        "budgets": cost["steps"] / budget_steps if budget_steps else math.nan,
    }


def load_calibrations(folder: str | Path) -> Any:
    """The calibration records in `folder` (calibration-*.json) as a DataFrame, one row each: what
    landing a knob pruner on each target sparsity cost (runs, optimizer steps, in budgets: steps /
    the steps of its full-budget run). A malformed record is a ConfigError naming the file."""
    import pandas as pd

    rows = [_calibration_row(p) for p in sorted(Path(folder).glob("calibration-*.json"))]
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


def _publish(src: Path, out: Path, config: RunConfig) -> Path:
    """Put the answer's run folder into `out`: copied (then renamed into place) unless `out`
    already holds that run, in which case `run` finishes or returns it there."""
    dest = out / src.name
    if dest.resolve() == src.resolve():
        return dest
    if dest.exists():
        run(config, out)
        return dest
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{src.name}."))
    shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(FILES["lock_file"]))
    os.replace(tmp, dest)
    return dest


def _check(target: float, tolerance: float, fraction: float, search_runs: int, full_runs: int) -> None:
    if not 0 < target < 1:
        raise ConfigError(f"--target = {target!r}: must be in (0, 1)")
    if not 0 < tolerance < 1:
        raise ConfigError(f"--tolerance = {tolerance!r}: must be in (0, 1)")
    if not 0 < fraction <= 1:
        raise ConfigError(f"--search-fraction = {fraction!r}: must be in (0, 1]")
    if search_runs < 1 or full_runs < 1:
        raise ConfigError(f"--search-runs = {search_runs}, --full-runs = {full_runs}: each must be >= 1")


# ------------------------------------------------------------------------------------- CLI


def cmd_calibrate(args: argparse.Namespace) -> int:
    _check(args.target, args.tolerance, args.search_fraction, args.search_runs, args.full_runs)
    knob = knob_of(args.pruner)
    if knob.name in parse_sets(args.sets):
        raise ConfigError(f"--set {knob.name}: that is the knob calibrate searches; leave it unset")
    config = config_from_args(args)
    check_out(args.out, "--out")  # before the search, not after it
    if args.search_dir is not None:
        check_out(args.search_dir, "--search-dir")
    record = calibrate(
        config, args.target, args.out, args.tolerance, args.search_fraction, args.search_runs,
        args.full_runs, args.search_dir, quiet=not args.verbose,
    )
    keys = ("pruner", "target", "value", "hparams", "sparsity", "top1", "within_tolerance", "run_id")
    summary = {"knob": knob.name, **{k: record[k] for k in keys}, **record["cost"]}
    if args.json:
        print(json.dumps({**summary, "record": record["record"]}, indent=2))
        print(f"run folder: {record['run_dir']}", file=sys.stderr)
    else:
        print(result_line(record, knob.name))
    if not record["within_tolerance"]:
        print(f"bench calibrate: missed the target sparsity {record['target']:g} +- {record['tolerance']:g}: "
              f"the nearest value found, {knob.name}={record['value']:g}, gives sparsity "
              f"{record['sparsity']:.4f} ({record['run_dir']}); widen the knob's search with more "
              "--full-runs / --search-runs, or accept it with a larger --tolerance", file=sys.stderr)
        return 1
    return 0


def result_line(record: dict[str, Any], knob: str) -> str:
    """`grda c=0.0123: sparsity 0.9012 (target 0.9), test top-1 93.21%, 6 runs -> runs/<run_id>`."""
    top1 = "n/a" if record["top1"] is None else f"{100 * record['top1']:.2f}%"
    return (f"{record['pruner']} {knob}={record['value']:g}: sparsity {record['sparsity']:.4f} (target "
            f"{record['target']:g}), test top-1 {top1}, {record['cost']['runs']} runs -> {record['run_dir']}")


def configure(p: argparse.ArgumentParser) -> None:
    add_run_flags(p)
    p.add_argument("--target", type=float, required=True, help="target sparsity, in (0, 1)")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="accepted |sparsity - target| (default 0.01)")
    p.add_argument("--search-fraction", type=float, default=0.25,
                   help="budget fraction of the search runs; 1: full-budget runs only (default 0.25)")
    p.add_argument("--search-runs", type=int, default=8, help="most short-budget search runs (default 8)")
    p.add_argument("--full-runs", type=int, default=4, help="most full-budget runs (default 4)")
    p.add_argument("--out", default="runs", help="where the answer's run folder and the JSON record go")
    p.add_argument("--search-dir", default=None,
                   help="keep every search run here (default: a temporary folder, deleted)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="a line per trial and per epoch of its run on stderr (default: only the result)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (knob, value, sparsity, top-1, cost, record file) instead "
                   "of one line")
    p.set_defaults(func=cmd_calibrate)
