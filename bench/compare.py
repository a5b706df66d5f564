"""`bench compare A B`: two pruners, two settings or two run sets, paired by seed.

A and B each select runs. A selector is either a path (run folders, a results parquet file or a
board folder: that whole run set) or a filter on the runs of `--in` (default `runs/`):
`grda` (a pruner), `grda:c=0.02,mu=0.6` (a pruner and hyperparameters), `pruner=gmp,sparsity=0.9`,
`budget.epochs=30`. A key that names a hyperparameter is one (`c` means `hparams.c`,
`sparsity` the target of gmp, not the measured sparsity); any other key is a column of the runs
table. Values are TOML (`0.02`, `"layer"`, `true`).

Only finished runs (status ok) take part; how many others were left out is said. Runs are paired
by (model, dataset, seed): on each side at most one run per pair, so a selector that matches
several settings is refused with the settings it matched; pairs whose budgets differ are refused
unless `--unequal-budgets` is given. For each metric (the run-record fields declared `compare`:
test and validation top-1, sparsity, train time, training peak memory, process peak RSS, state;
labels and units from bench.record) the table gives both means over the pairs and the mean
difference A - B with its 95% interval and p-value: for test top-1, where every paired run stored
its per-example predictions, the two-level bootstrap over seeds and test examples
(bench.stats.paired_bootstrap, as the boards use); otherwise the paired t-test over seeds
(bench.stats.paired_t):

    bench compare grda:c=0.01648 gmp:sparsity=0.9 --in runs/digits-mlp
    bench compare leaderboards/digits-mlp runs/my-rerun --json

    >>> from bench.compare import compare
    >>> from bench.results import load
    >>> c = compare(load("leaderboards/digits-mlp"), "grda:c=0.02,mu=0.6", "gmp:sparsity=0.9")
    >>> c.metric("top1").diff.p                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.board.prepare import loaded
from bench.errors import ConfigError, clip
from bench.markdown import table
from bench.predictions import read_predictions, read_run_predictions
from bench.record import COMPARED, SHOWN
from bench.results import load
from bench.runs import RunStatus
from bench.spec import parse_value
from bench.stats import PairedBootstrap, PairedT, paired_bootstrap, paired_t

PAIR_KEYS = ("model", "dataset", "seed")
TIMED = ("train_time_s",)  # compared over quiet pairs only: a loaded machine's times say nothing
METRICS = tuple(s.name for s in COMPARED)  # labels, units and formats: bench.record.SHOWN


@dataclass(frozen=True)
class MetricDiff:
    """One metric over the pairs: both means and the paired difference A - B (`test` names how)."""

    metric: str
    a_mean: float
    b_mean: float
    diff: PairedT | PairedBootstrap
    test: str = "paired t over seeds"


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the two selectors, the paired runs and one `MetricDiff` per metric."""

    a: str
    b: str
    pairs: pd.DataFrame  # model, dataset, seed, run_id_a, run_id_b, <metric>_a, <metric>_b
    metrics: list[MetricDiff]
    left_out: int = 0  # runs of the run sets not taking part: not finished with status ok

    def metric(self, name: str) -> MetricDiff:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(f"{name!r}: not compared; compared: {', '.join(m.metric for m in self.metrics)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: selectors, pairs (run ids) and per metric the means, difference, interval, p."""
        return {
            "a": self.a,
            "b": self.b,
            "paired_by": list(PAIR_KEYS),
            "pairs": self.pairs[[*PAIR_KEYS, "run_id_a", "run_id_b"]].to_dict(orient="records"),
            "left_out": self.left_out,
            "metrics": {m.metric: {"a_mean": _num(m.a_mean), "b_mean": _num(m.b_mean), "test": m.test,
                                   "n": m.diff.n if isinstance(m.diff, PairedT) else m.diff.seeds,
                                   **{k: _num(v) for k, v in asdict(m.diff).items()}}
                        for m in self.metrics},
        }

    def markdown(self) -> str:
        """The comparison as a Markdown table (one row per metric); values in the units of the
        labels, the difference being A - B."""
        rows = []
        for m in self.metrics:
            shown, d = SHOWN[m.metric], m.diff

            def f(x: float, shown: Any = shown) -> str:
                return "-" if math.isnan(x) else shown.format(x)

            rows.append([shown.header, f(m.a_mean), f(m.b_mean), f(d.mean), f"[{f(d.low)}, {f(d.high)}]",
                         "-" if math.isnan(d.p) else f"{d.p:.3g}", m.test])
        level = self.metrics[0].diff.level if self.metrics else 0.95
        header = ["metric", "A", "B", "A - B", f"{level:.0%} interval", "p", "test"]
        return table(rows, header, right=header[1:-1])


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


# ---------------------------------------------------------------------------------- selecting


def select(runs: pd.DataFrame, selector: str) -> pd.DataFrame:
    """The rows of `runs` that `selector` names (see the module docstring); raises ConfigError
    naming the key and its valid choices when a key or value matches nothing."""
    head, _, rest = selector.partition(":")
    terms = [t for t in (rest.split(",") if "=" not in head else selector.split(",")) if t.strip()]
    if "=" not in head:
        terms.insert(0, f"pruner={head}")
    out = runs
    for term in terms:
        key, sep, value = (s.strip() for s in term.partition("="))
        if not sep or not key:
            raise ConfigError(f"selector {selector!r}: {term!r} is not KEY=VALUE")
        column = f"hparams.{key}" if f"hparams.{key}" in runs.columns else key  # `sparsity`: the knob
        if column not in runs.columns:
            hp = sorted(c.removeprefix("hparams.") for c in runs.columns if c.startswith("hparams."))
            raise ConfigError(f"selector {selector!r}: unknown key {key!r}; valid keys: pruner, model, "
                              f"dataset, seed, budget.<field>, and hyperparameters {', '.join(hp)}")
        want = parse_value(value)
        col = out[column]
        numeric = isinstance(want, int | float) and not isinstance(want, bool)
        if numeric and pd.api.types.is_numeric_dtype(col):
            mask = (col - want).abs() <= 1e-12 * max(1.0, abs(want))
        else:
            mask = col.astype(str) == str(want)
        if not mask.any():
            seen = ", ".join(sorted(map(str, out[column].dropna().unique()))) or "(none)"
            raise ConfigError(f"selector {selector!r}: no run has {column} = {want!r}; valid choices: {seen}")
        out = out[mask]
    return out


def _settings(df: pd.DataFrame) -> str:
    hp = [c for c in df.columns if c.startswith("hparams.") and df[c].nunique(dropna=True) > 1]
    cols = ["pruner", *hp]
    return "; ".join(", ".join(f"{c.removeprefix('hparams.')}={v}" for c, v in zip(cols, row, strict=True))
                     for row in df[cols].drop_duplicates().itertuples(index=False))


def _ok(runs: pd.DataFrame, what: str) -> pd.DataFrame:
    ok = runs[runs["status"] == RunStatus.OK] if "status" in runs.columns else runs
    if ok.empty:
        raise ConfigError(f"{what}: no finished (status ok) runs among its {len(runs)}" if len(runs) else
                          f"{what}: no runs to compare")
    return ok


def _budget_problem(pairs: pd.DataFrame) -> str | None:
    """The budget fields on which some pair's runs differ, with an example, or None."""
    fields = sorted(c.removesuffix("_a") for c in pairs.columns
                    if c.startswith("budget.") and c.endswith("_a") and f"{c.removesuffix('_a')}_b" in pairs)
    out = []
    for f in fields:
        a, b = pairs[f"{f}_a"].astype(str), pairs[f"{f}_b"].astype(str)
        if (a != b).any():
            i = int(np.argmax((a != b).to_numpy()))
            out.append(f"{f.removeprefix('budget.')} ({a.iat[i]} vs {b.iat[i]})")
    return ", ".join(out) or None


def _predictions_of(runs: pd.DataFrame, sources: tuple[str, ...]) -> dict[str, np.ndarray]:
    """run_id -> per test example, whether the run was right: from the run folders (`path`) that
    still exist, and the predictions file beside any results table among `sources`."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for src in sources:
        p = Path(src)
        table_file = p / "results.parquet" if p.is_dir() else p
        if table_file.suffix == ".parquet":
            found |= read_predictions(table_file)
    if "path" in runs.columns:
        for run_id, folder in runs[["run_id", "path"]].itertuples(index=False):
            if run_id not in found and isinstance(folder, str) and Path(folder).is_dir():
                got = read_run_predictions(folder)
                if isinstance(got, dict):
                    found[run_id] = got
    return {k: a["test_pred"] == a["test_true"] for k, a in found.items() if "test_pred" in a}


def _top1_bootstrap(pairs: pd.DataFrame, correct: dict[str, np.ndarray],
                    level: float) -> PairedBootstrap | None:
    ids = list(zip(pairs["run_id_a"], pairs["run_id_b"], strict=True))
    if not ids or not all(a in correct and b in correct for a, b in ids):
        return None
    rows = [correct[a].astype(float) - correct[b].astype(float) for a, b in ids]
    if len({len(r) for r in rows}) != 1:
        return None
    return paired_bootstrap(np.stack(rows), level=level)


# ---------------------------------------------------------------------------------- comparing


def compare(runs: pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame], a: str, b: str,
            level: float = 0.95, unequal_budgets: bool = False,
            correct: dict[str, np.ndarray] | None = None) -> Comparison:
    """Compare the ok runs `a` selects with those `b` selects, paired by (model, dataset, seed).

    `runs`: one runs table both selectors filter, or a pair of tables (A's, B's) for two run sets
    (then a selector may be `"all"`, or `""`, for the whole set). Raises ConfigError when a side
    selects nothing, no pair has both sides, or (unless `unequal_budgets`) a pair's budgets differ.
    `correct`: run_id -> per test example, whether it was right (bench.predictions), for the
    seeds-and-examples test of test top-1.

    >>> runs = pd.DataFrame({"pruner": ["grda"] * 3 + ["gmp"] * 3, "model": "mlp", "dataset": "digits",
    ...     "seed": [0, 1, 2] * 2, "run_id": list("abcdef"), "status": "ok",
    ...     "top1": [0.97, 0.96, 0.98, 0.95, 0.95, 0.96]})
    >>> c = compare(runs, "grda", "gmp")
    >>> round(c.metric("top1").diff.mean, 4), c.metric("top1").diff.n
    (0.0167, 3)
    """
    ra, rb = runs if isinstance(runs, tuple) else (runs, runs)
    ok_a, ok_b = _ok(ra, f"A ({a or 'all'})"), _ok(rb, f"B ({b or 'all'})")
    left_out = len(ra) - len(ok_a) + (len(rb) - len(ok_b) if isinstance(runs, tuple) else 0)
    side_a = ok_a if a in ("", "all") else select(ok_a, a)
    side_b = ok_b if b in ("", "all") else select(ok_b, b)
    for name, sel, side in (("A", a, side_a), ("B", b, side_b)):
        if side.empty:  # each term matches some run, but no ok run matches them all
            raise ConfigError(f"{name} ({sel}): no finished (status ok) run matches all of it; "
                              f"settings there are: {clip(_settings(ok_a if name == 'A' else ok_b), 400)}")
    for sel, side in ((a, side_a), (b, side_b)):
        if side.duplicated(list(PAIR_KEYS)).any():
            raise ConfigError(f"{sel or 'the run set'}: several runs per (model, dataset, seed), from "
                              f"the settings {_settings(side)}; select one, e.g. grda:c=0.02,mu=0.6")
    metrics = [m for m in METRICS if m in side_a.columns and m in side_b.columns]
    budget = [c for c in side_a.columns if c.startswith("budget.") and c in side_b.columns]
    keep = [*PAIR_KEYS, "run_id", "loaded", *metrics, *budget]
    side_a, side_b = side_a.assign(loaded=loaded(side_a)), side_b.assign(loaded=loaded(side_b))
    pairs = side_a[keep].merge(side_b[keep], on=list(PAIR_KEYS), suffixes=("_a", "_b"))
    if pairs.empty:
        def seen(s: pd.DataFrame) -> str:
            return ", ".join(f"{m}/{d}/seed {s}" for m, d, s in s[list(PAIR_KEYS)].itertuples(index=False))
        raise ConfigError(f"no (model, dataset, seed) has runs on both sides: A ({a}) has {seen(side_a)}; "
                          f"B ({b}) has {seen(side_b)}")
    pairs = pairs.sort_values(list(PAIR_KEYS)).reset_index(drop=True)
    problem = _budget_problem(pairs)
    if problem and not unequal_budgets:
        raise ConfigError(f"A and B trained under different budgets: {problem}; a difference between them "
                          "is not the pruners'. Pass --unequal-budgets to compare them anyway")
    diffs = []
    quiet = ~(pairs["loaded_a"] | pairs["loaded_b"])
    for m in metrics:
        used = pairs[quiet] if m in TIMED else pairs
        both = used[[f"{m}_a", f"{m}_b"]].astype(float).dropna()
        means = [float(both[c].mean()) if len(both) else math.nan for c in (f"{m}_a", f"{m}_b")]
        boot = _top1_bootstrap(pairs, correct or {}, level) if m == "top1" else None
        if boot is not None:
            diffs.append(MetricDiff(m, *means, boot, "seeds × examples bootstrap"))
            continue
        test = "paired t over seeds"
        if m in TIMED and not quiet.all():
            test += f", quiet pairs only ({int((~quiet).sum())} loaded left out)"
        diffs.append(MetricDiff(m, *means, paired_t((both[f"{m}_a"] - both[f"{m}_b"]).tolist(), level), test))
    return Comparison(a, b, pairs, diffs, left_out)


# ----------------------------------------------------------------------------------------- CLI


def _is_path(selector: str) -> bool:
    return Path(selector).exists()


def cmd_compare(args: argparse.Namespace) -> int:
    if not 0 < args.level < 1:
        raise ConfigError(f"--level = {args.level!r}: must be in (0, 1), e.g. 0.95")
    if _is_path(args.a) or _is_path(args.b):
        if not (_is_path(args.a) and _is_path(args.b)):
            raise ConfigError(f"compare: {args.a!r} and {args.b!r}: give two run sets (paths) or two "
                              "selectors of the runs in --in, not one of each")
        sides = []
        for path in (args.a, args.b):
            runs = load(path)
            if runs.empty:
                raise ConfigError(f"compare: no runs under {path}")
            sides.append(runs)
        both = pd.concat(sides, ignore_index=True)
        result = compare((sides[0], sides[1]), "all", "all", args.level, args.unequal_budgets,
                         _predictions_of(both, (args.a, args.b)))
        result = Comparison(args.a, args.b, result.pairs, result.metrics, result.left_out)
    else:
        runs = load(*args.runs_in)
        if runs.empty:
            raise ConfigError(f"compare: no runs under {', '.join(args.runs_in)} (set --in)")
        result = compare(runs, args.a, args.b, args.level, args.unequal_budgets,
                         _predictions_of(runs, tuple(args.runs_in)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(f"A: {result.a}\nB: {result.b}\npaired by {', '.join(PAIR_KEYS)}: {len(result.pairs)} pairs")
        if result.left_out:
            print(f"left out {result.left_out} run(s) not finished with status ok")
        print()
        print(result.markdown())
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A",
                   help="a run set (path) or a selector: grda | grda:c=0.02,mu=0.6 | pruner=gmp")
    p.add_argument("b", metavar="B", help="the same, for the other side")
    p.add_argument("--in", dest="runs_in", nargs="+", default=["runs"], metavar="PATH",
                   help="run folders, results parquet or board folders the selectors filter (default: runs)")
    p.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the intervals (default 0.95)")
    p.add_argument("--json", action="store_true", help="the comparison as JSON")
    p.add_argument("--unequal-budgets", action="store_true",
                   help="compare pairs whose training budgets differ (refused by default)")
    p.set_defaults(func=cmd_compare)

