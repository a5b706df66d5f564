"""`bench compare A B`: two pruners, two settings or two run sets, paired by seed.

A and B each select runs. A selector is either a path (run folders, a results parquet file or a
board folder: that whole run set) or a filter on the runs of `--in` (default `runs/`):
`grda` (a pruner), `grda:c=0.02,mu=0.6` (a pruner and hyperparameters), `pruner=gmp,sparsity=0.9`,
`budget.epochs=30`. A key that names a hyperparameter is one (`c` means `hparams.c`,
`sparsity` the target of gmp, not the measured sparsity); any other key is a column of the runs
table. Values are TOML (`0.02`, `"layer"`, `true`).

Only finished runs (status ok) take part. Runs are paired by (model, dataset, seed): on each side
at most one run per pair, so a selector that matches several settings is refused with the
settings it matched. For each metric (test and validation top-1, sparsity, train time, training
peak memory, process peak RSS, state bytes) the table gives both means over the pairs and the
mean difference A - B with its 95% interval and the paired t-test's p-value (bench.stats.paired_t):

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

import pandas as pd

from bench.errors import ConfigError
from bench.markdown import table
from bench.results import load
from bench.spec import parse_value
from bench.stats import PairedT, paired_t

PAIR_KEYS = ("model", "dataset", "seed")
# metric column -> (label, unit scale, format) for the table
METRICS: dict[str, tuple[str, float, str]] = {
    "top1": ("test top-1", 1.0, ".4f"),
    "val_top1": ("validation top-1", 1.0, ".4f"),
    "sparsity": ("sparsity", 1.0, ".4f"),
    "train_time_s": ("train time (s)", 1.0, ".4g"),
    "peak_tensor_bytes": ("training peak memory (MiB)", 2.0**-20, ".4g"),
    "peak_memory_bytes": ("process peak RSS (MiB)", 2.0**-20, ".4g"),
    "state_bytes": ("state (MiB)", 2.0**-20, ".4g"),
}


@dataclass(frozen=True)
class MetricDiff:
    """One metric over the pairs: both means and the paired difference A - B."""

    metric: str
    a_mean: float
    b_mean: float
    diff: PairedT


@dataclass(frozen=True)
class Comparison:
    """What `compare` found: the two selectors, the paired runs and one `MetricDiff` per metric."""

    a: str
    b: str
    pairs: pd.DataFrame  # model, dataset, seed, run_id_a, run_id_b, <metric>_a, <metric>_b
    metrics: list[MetricDiff]

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
            "metrics": {m.metric: {"a_mean": _num(m.a_mean), "b_mean": _num(m.b_mean),
                                   **{k: _num(v) for k, v in asdict(m.diff).items()}}
                        for m in self.metrics},
        }

    def markdown(self) -> str:
        """The comparison as a Markdown table (one row per metric); values in the units of the
        labels, the difference being A - B."""
        rows = []
        for m in self.metrics:
            label, scale, fmt = METRICS[m.metric]
            d = m.diff

            def f(x: float, scale: float = scale, fmt: str = fmt) -> str:
                return "-" if math.isnan(x) else format(x * scale, fmt)

            rows.append([label, f(m.a_mean), f(m.b_mean), f(d.mean), f"[{f(d.low)}, {f(d.high)}]",
                         "-" if math.isnan(d.p) else f"{d.p:.3g}", d.n])
        level = self.metrics[0].diff.level if self.metrics else 0.95
        header = ["metric", "A", "B", "A - B", f"{level:.0%} interval", "p (paired t)", "pairs"]
        return table(rows, header, right=header[1:])


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


def _side(runs: pd.DataFrame, selector: str) -> pd.DataFrame:
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    if ok.empty:
        raise ConfigError(f"{selector!r}: no finished (status ok) runs")
    return select(ok, selector)


# ---------------------------------------------------------------------------------- comparing


def compare(runs: pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame], a: str, b: str,
            level: float = 0.95) -> Comparison:
    """Compare the runs `a` selects with those `b` selects, paired by (model, dataset, seed).

    `runs`: one runs table both selectors filter, or a pair of tables (A's, B's) for two run sets
    (then a selector may be `"all"`, or `""`, for the whole set). Raises ConfigError when a side
    selects nothing or no pair has both sides.

    >>> runs = pd.DataFrame({"pruner": ["grda"] * 3 + ["gmp"] * 3, "model": "mlp", "dataset": "digits",
    ...     "seed": [0, 1, 2] * 2, "run_id": list("abcdef"), "status": "ok",
    ...     "top1": [0.97, 0.96, 0.98, 0.95, 0.95, 0.96]})
    >>> c = compare(runs, "grda", "gmp")
    >>> round(c.metric("top1").diff.mean, 4), c.metric("top1").diff.n
    (0.0167, 3)
    """
    ra, rb = runs if isinstance(runs, tuple) else (runs, runs)
    side_a = ra if a in ("", "all") else _side(ra, a)
    side_b = rb if b in ("", "all") else _side(rb, b)
    for sel, side in ((a, side_a), (b, side_b)):
        if side.duplicated(list(PAIR_KEYS)).any():
            raise ConfigError(f"{sel or 'the run set'}: several runs per (model, dataset, seed), from "
                              f"the settings {_settings(side)}; select one, e.g. grda:c=0.02,mu=0.6")
    metrics = [m for m in METRICS if m in side_a.columns and m in side_b.columns]
    keep = [*PAIR_KEYS, "run_id", *metrics]
    pairs = side_a[keep].merge(side_b[keep], on=list(PAIR_KEYS), suffixes=("_a", "_b"))
    if pairs.empty:
        def seen(s: pd.DataFrame) -> str:
            return ", ".join(f"{m}/{d}/seed {s}" for m, d, s in s[list(PAIR_KEYS)].itertuples(index=False))
        raise ConfigError(f"no (model, dataset, seed) has runs on both sides: A ({a}) has {seen(side_a)}; "
                          f"B ({b}) has {seen(side_b)}")
    pairs = pairs.sort_values(list(PAIR_KEYS)).reset_index(drop=True)
    diffs = []
    for m in metrics:
        both = pairs[[f"{m}_a", f"{m}_b"]].astype(float).dropna()
        diffs.append(MetricDiff(m, float(both[f"{m}_a"].mean()) if len(both) else math.nan,
                                float(both[f"{m}_b"].mean()) if len(both) else math.nan,
                                paired_t((both[f"{m}_a"] - both[f"{m}_b"]).tolist(), level)))
    return Comparison(a, b, pairs, diffs)


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
        result = compare((load(args.a), load(args.b)), "all", "all", args.level)
        result = Comparison(args.a, args.b, result.pairs, result.metrics)
    else:
        runs = load(*args.runs_in)
        if runs.empty:
            raise ConfigError(f"compare: no runs under {', '.join(args.runs_in)} (set --in)")
        result = compare(runs, args.a, args.b, args.level)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(f"A: {result.a}\nB: {result.b}\npaired by {', '.join(PAIR_KEYS)}: {len(result.pairs)} pairs\n")
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
    p.set_defaults(func=cmd_compare)

