"""Leaderboards from a gathered results table: Markdown (renders on GitHub), CSV and figures.

    bench leaderboard results.parquet -o leaderboards/NAME/
    bench board leaderboards/NAME          # bench.board: run NAME/sweep.toml, gather, write it there

One section per (dataset, model, recipe track, budget). Its main table has a row per pruner and
setting (the pruner's hyperparameters that vary within the section) with means over seeds and
their 95% confidence intervals (Student t: mean ± t(0.975, n-1) s / sqrt(n)); cost columns are
ratios of means to the `dense` rows of the same section.

Selection uses validation, reporting uses test. Each run records the top-1 of its final model on
a validation split held out of the training set (`val_top1`) and on the test set (`top1`).
Accuracy at matched sparsity: each pruner's points are its per-setting seed means; its Pareto
front keeps the points that no other point of the pruner beats on both sparsity and validation
top-1. The value at a target sparsity is read off the front: linearly interpolated between the two
front points around the target, and below the least sparse front point, that point (a model at
least as sparse and as accurate exists). The same weights applied to each seed's test top-1 give
per-seed test values at the target, hence the mean, its interval and paired tests. The pruner has
runs "around" a target when the target lies in [its least sparse run - TOLERANCE, its sparsest
front point + TOLERANCE]; elsewhere the cell stays blank: nothing is extrapolated beyond the
sparsest run, nor claimed below the least sparse one. TOLERANCE (0.5 points) lets a method run at
90% that measures 89.97% count at 90%. Runs without a validation split (results written before
it existed) are selected on test top-1 and marked so.

Significance: at each target the pruners are ranked by validation top-1; the leader is marked
best only where a paired t-test (two-sided, on the per-seed differences of test top-1 over the
seeds both have: runs sharing a seed share the initialisation and data order) finds it better than
the runner-up at level ALPHA; otherwise the leader and every pruner not significantly worse than
it are marked tied. No correction for multiple comparisons is made.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import record, results
from bench.config import Budget, legacy_values
from bench.errors import ConfigError
from bench.io import read_json, write_text
from bench.markdown import table
from bench.record import is_loaded
from bench.stats import paired_t, t_halfwidth

TARGETS = (0.80, 0.90, 0.95, 0.98, 0.99)  # matched-sparsity levels (fractions of zero weights)
TOLERANCE = 0.005  # how far (absolute fraction) beyond its front a pruner still counts at a target
CONFIDENCE = 0.95  # of every interval
ALPHA = 0.05  # significance level of the paired tests
SECTION = ["dataset", "model", "recipe", "budget"]
SETTING = [*SECTION, "pruner", "setting"]
# what a table needs to make a board; other run-record metrics missing from it are unknown (NaN)
REQUIRED = ("run_id", "pruner", "model", "dataset", "seed", "status", "top1", "sparsity")
MEASURES = (
    "top1",
    "val_top1",
    "select_top1",
    "sparsity",
    "macs_reduction",
    "speedup_best",
    "train_compute_multiplier",
    "train_time_s",
    "peak_tensor_bytes",
    "state_bytes",
)
COSTS = {
    "train_time_s": "time_vs_dense",
    "peak_tensor_bytes": "memory_vs_dense",
    "state_bytes": "state_vs_dense",
}  # measure -> its ratio to dense
BUDGET_SHOWN = ("epochs", "batch_size", "lr", "lr_schedule")  # always in the budget label
BUDGET_OWN_COLUMN = ("recipe",)  # budget fields with a column (and section) of their own, not in the label
PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "leaderboards" / "published.csv"
PUBLISHED_COLUMNS = ("dataset", "model", "pruner", "setting", "sparsity", "top1", "source", "published")
MIB = 2**20
NOT_VALIDATED = "†"  # marks values selected on test top-1 (runs without a validation split)
LOADED = "‡"  # marks times measured on a loaded machine
NO_TEST = "too few shared seeds"  # a paired test needs two seeds both pruners completed


# ------------------------------------------------------------------------------------ tables


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _per_distinct_row(
    df: pd.DataFrame, cols: list[str], label: Callable[[pd.DataFrame], pd.Series]
) -> pd.Series:
    """`label` computed on the distinct rows of `df[cols]` only and spread back to every row: the
    labels are row-wise Python, and 10,000 runs have a few dozen distinct settings."""
    codes = df.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()  # numbered in first-seen order
    first = np.unique(codes, return_index=True)[1]
    return pd.Series(label(df.iloc[first][cols]).to_numpy()[codes], index=df.index, dtype=object)


def _budget_labels(df: pd.DataFrame) -> pd.Series:
    """`epochs=60 batch_size=32 lr=0.1 lr_schedule=constant` plus every budget field that is not
    at its default in some row, so that two different budgets never share a label."""
    defaults = {
        k: json.dumps(list(v)) if isinstance(v, tuple) else _fmt_value(v)
        for k, v in dataclasses.asdict(Budget()).items()
    }  # tuples are JSON text in the table
    cols = [c for c in df.columns if c.startswith("budget.") and c[7:] not in BUDGET_OWN_COLUMN]
    if not cols:
        return pd.Series("-", index=df.index)

    def labels(budgets: pd.DataFrame) -> pd.Series:
        text = {c: budgets[c].map(_fmt_value) for c in cols}
        shown = [c for c in cols if c[7:] in BUDGET_SHOWN or (text[c] != defaults.get(c[7:])).any()]
        order = {f"budget.{k}": i for i, k in enumerate(BUDGET_SHOWN)}
        shown.sort(key=lambda c: (order.get(c, len(order)), c))
        if not shown:
            return pd.Series("-", index=budgets.index)
        return pd.DataFrame({c: c[7:] + "=" + text[c] for c in shown}).agg(" ".join, axis=1)

    return _per_distinct_row(df, cols, labels)


def _settings(df: pd.DataFrame) -> pd.Series:
    """Per row, the hyperparameters that vary within its (section, pruner): `c=0.02, mu=0.6`."""
    hp = [c for c in df.columns if c.startswith("hparams.")]
    if not hp or df.empty:
        return pd.Series("-", index=df.index, dtype=str)

    def settings(rows: pd.DataFrame) -> pd.Series:  # the distinct rows vary exactly as all rows do
        varies = rows.groupby([*SECTION, "pruner"])[hp].transform("nunique") > 1
        parts = pd.DataFrame(
            {c: np.where(varies[c], c[8:] + "=" + rows[c].map(_fmt_value), "") for c in hp}, index=rows.index
        )
        return parts.agg(lambda r: ", ".join(p for p in r if p) or "-", axis=1)

    return _per_distinct_row(df, [*SECTION, "pruner", *hp], settings)


def _hparams_json(df: pd.DataFrame) -> pd.Series:
    hp = [c for c in df.columns if c.startswith("hparams.")]

    def as_json(r: pd.Series) -> str:
        return json.dumps({k[8:]: v for k, v in r.dropna().to_dict().items()}, sort_keys=True, default=str)

    return _per_distinct_row(df, hp, lambda rows: rows.agg(as_json, axis=1))


def _fill_budget(df: pd.DataFrame) -> None:
    """Budget fields a run predates take the value it trained with: the field's legacy value if it
    declares one (a result from before the validation split: `val_fraction` 0), else its default."""
    defaults = {**dataclasses.asdict(Budget()), **legacy_values(Budget)}
    for key in (*legacy_values(Budget), *BUDGET_OWN_COLUMN):
        col = f"budget.{key}"
        df[col] = df[col].fillna(defaults[key]) if col in df.columns else defaults[key]


def prepare(runs: pd.DataFrame, where: str = "results") -> pd.DataFrame:
    """Check a gathered table and add `recipe`, `budget`, `setting`, `hparams`, `select_top1` (what
    selection uses: validation top-1, or test top-1 for a run without a validation split),
    `validated` and `macs_reduction`; rows are sorted (dense first, then by pruner and
    hyperparameter values)."""
    missing = [c for c in REQUIRED if c not in runs.columns]
    if missing:
        raise ConfigError(
            f"{where}: missing column(s) {', '.join(missing)}; expected a table written by "
            f"`bench gather` (columns {', '.join(REQUIRED)}, hparams.*, budget.*)"
        )
    df = runs.copy()
    for old, new in record.RENAMED.items():  # tables holding results written under an older field name
        if old in df.columns:
            df[new] = df.pop(old) if new not in df.columns else df[new].fillna(df.pop(old))
    for col in record.METRICS:  # a table gathered before a metric existed: that metric unknown
        if col not in df.columns:
            df[col] = np.nan
    _fill_budget(df)
    df["recipe"] = df["budget.recipe"].astype(str)
    df["budget"] = _budget_labels(df)
    hp = sorted(c for c in df.columns if c.startswith("hparams."))
    df = (
        df.assign(_rank=df["pruner"] != "dense")
        .sort_values(
            ["dataset", "model", "recipe", "budget", "_rank", "pruner", *hp, "seed"],
            kind="stable",
            na_position="last",
        )
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
    ok = df["status"] == "ok"
    df["setting"] = pd.Series("-", index=df.index, dtype=str)
    if ok.any():
        df.loc[ok, "setting"] = _settings(df[ok])
    df["hparams"] = _hparams_json(df) if hp else "{}"
    df["validated"] = df["val_top1"].notna()
    df["select_top1"] = df["val_top1"].where(df["validated"], df["top1"]).astype(float)
    df["macs_reduction"] = df["macs_dense"] / df["macs_sparse"]
    # recomputed from the recorded load averages where there are some (one definition: record.is_loaded)
    loads = [c for c in ("load_avg_before", "load_avg_after", "cpu_count") if c in df.columns]
    if len(loads) == 3:
        again = pd.Series([is_loaded(*r) for r in df[loads].itertuples(index=False)], index=df.index)
        df["loaded"] = again.where(again.notna(), df["loaded"])  # no loads recorded: the run's own flag
    df["loaded"] = df["loaded"].astype("boolean").fillna(False).astype(bool)
    return df


# ---------------------------------------------------------------------------------- statistics


def paired_test(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    """(mean of a - b, two-sided p of the paired t-test, pairs) over the seeds (index) both have.
    p is NaN with fewer than two pairs, or when every difference is zero."""
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    n = len(both)
    if n == 0:
        return np.nan, np.nan, 0
    diff = both.iloc[:, 0] - both.iloc[:, 1]
    if n < 2 or (diff == 0).all():
        return float(diff.mean()), np.nan, n
    return float(diff.mean()), paired_t(diff.to_numpy()).p, n


def dense_reference(ok: pd.DataFrame) -> pd.DataFrame:
    """Per section, the mean train time, peak tensor memory and state bytes of its `dense` runs."""
    dense = ok[ok["pruner"] == "dense"].groupby(SECTION)[list(COSTS)].mean()
    return dense.rename(columns=lambda c: f"dense_{c}").reset_index()


def relative_to_dense(ok: pd.DataFrame) -> pd.DataFrame:
    """Each run's cost measures divided by the dense means of its section (NaN without dense)."""
    df = ok.merge(dense_reference(ok), on=SECTION, how="left")
    for col, rel in COSTS.items():
        df[rel] = df[col] / df[f"dense_{col}"]
    return df


def _most_common(values: pd.Series) -> str | None:
    counts = values.dropna().value_counts()
    return str(counts.index[0]) if len(counts) else None


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (section, pruner, setting) over its ok runs: `seeds`, `<measure>_mean`/`_std`
    (sample std)/`_ci` (half-width of the 95% t interval), `validated` (every run has a validation
    top-1), `loaded_runs`, `num_test`, and the cost ratios of means to the section's dense rows."""
    ok = df[df["status"] == "ok"]
    g = ok.groupby(SETTING, sort=False)
    stats_ = g[list(MEASURES)].agg(["mean", "std", "count"])
    for m in MEASURES:
        stats_[(m, "ci")] = t_halfwidth(stats_[(m, "std")], stats_[(m, "count")])
    stats_ = stats_.drop(columns=[(m, "count") for m in MEASURES])
    stats_.columns = [f"{m}_{s}" for m, s in stats_.columns]
    extra = pd.concat(
        [
            g["hparams"].first(),
            g.size().rename("seeds"),
            g["validated"].all(),
            g["loaded"].sum().rename("loaded_runs"),
            g["num_test"].max(),
            g["speedup_best_backend"].agg(_most_common).rename("speedup_backend"),
        ],
        axis=1,
    )
    summary = pd.concat([extra, stats_], axis=1).reset_index()
    summary = summary.merge(dense_reference(ok), on=SECTION, how="left")
    for col, rel in COSTS.items():
        summary[rel] = summary[f"{col}_mean"] / summary.pop(f"dense_{col}")
    return summary


# ------------------------------------------------------------------------------ matched sparsity


def pareto_front(points: pd.DataFrame, x: str = "sparsity", y: str = "top1") -> pd.DataFrame:
    """The points no other point beats on both `x` and `y` (higher is better for both; of equal
    points one is kept), sorted by `x`: along the front, `y` falls as `x` rises."""
    p = points.dropna(subset=[x, y]).sort_values([x, y], ascending=False, kind="stable")
    best_so_far = p[y].cummax().shift(fill_value=-np.inf)
    return p[p[y] > best_so_far].sort_values(x)


def interpolate(
    front: pd.DataFrame,
    targets: tuple[float, ...] = TARGETS,
    tolerance: float = TOLERANCE,
    lowest: float | None = None,
    x: str = "sparsity",
    y: str = "top1",
) -> np.ndarray:
    """`y` at each target `x` on the front: linear between front points, flat below the least
    sparse one (a sparser point is at least as accurate); NaN for targets not around the runs,
    i.e. outside [`lowest` (the least sparse run; default: the front's) - tolerance, the sparsest
    front point + tolerance]."""
    xs = front[x].to_numpy(float)
    out = []
    for t in targets:
        w = front_weights(xs, t, tolerance, lowest)
        out.append(np.nan if w is None else sum(wi * front[y].iat[i] for i, wi in w))
    return np.asarray(out, float)


def front_weights(
    xs: np.ndarray, target: float, tolerance: float = TOLERANCE, lowest: float | None = None
) -> list[tuple[int, float]] | None:
    """How the value at `target` is read off a front with sparsities `xs` (ascending): (index, weight)
    pairs, or None when the target is not around the runs (see `interpolate`)."""
    if len(xs) == 0:
        return None
    lo = xs[0] if lowest is None else min(lowest, xs[0])
    if not lo - tolerance <= target <= xs[-1] + tolerance:
        return None
    if target <= xs[0]:
        return [(0, 1.0)]
    if target >= xs[-1]:
        return [(len(xs) - 1, 1.0)]
    j = int(np.searchsorted(xs, target, side="right"))
    w = (target - xs[j - 1]) / (xs[j] - xs[j - 1])
    return [(j - 1, 1 - w), (j, w)]


def _points(summary: pd.DataFrame) -> pd.DataFrame:
    """The non-dense settings as points: `sparsity`, `select` (selection top-1) and `top1` (test) means."""
    pts = summary[summary["pruner"] != "dense"]
    return pts.rename(
        columns={"sparsity_mean": "sparsity", "select_top1_mean": "select", "top1_mean": "top1"}
    )


def target_column(t: float) -> str:
    return f"at_{100 * t:g}"


def matched_per_seed(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    targets: tuple[float, ...] = TARGETS,
    tolerance: float = TOLERANCE,
) -> pd.DataFrame:
    """Per (section, pruner, target, seed): test and selection top-1 at the target, read off the
    pruner's validation Pareto front with the weights of its seed means (seeds that every setting
    involved completed). Columns: SECTION, pruner, settings (how many the pruner was tuned over),
    target, seed, top1, select, validated."""
    ok = df[df["status"] == "ok"]
    per_seed = {
        key: g.set_index("seed")[["top1", "select_top1"]] for key, g in ok.groupby(SETTING, sort=False)
    }
    rows = []
    for key, pts in _points(summary).groupby([*SECTION, "pruner"], sort=False):
        front = pareto_front(pts, y="select")
        xs, lowest = front["sparsity"].to_numpy(float), pts["sparsity"].min()
        for t in targets:
            weights = front_weights(xs, t, tolerance, lowest)
            if weights is None:
                continue
            parts = [(per_seed[(*key, front["setting"].iat[i])], w) for i, w in weights]
            seeds = sorted(set.intersection(*(set(p.index) for p, _ in parts)))
            value = sum(w * p.loc[seeds] for p, w in parts)
            validated = bool(front["validated"].iloc[[i for i, _ in weights]].all())
            rows += [
                (*key, len(pts), t, seed, value.at[seed, "top1"], value.at[seed, "select_top1"], validated)
                for seed in seeds
            ]
    return pd.DataFrame(
        rows, columns=[*SECTION, "pruner", "settings", "target", "seed", "top1", "select", "validated"]
    )


def matched_sparsity(
    df: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    targets: tuple[float, ...] = TARGETS,
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Per (section, target, pruner): test top-1 at the target (`top1_mean`, `top1_ci`, `seeds`), the
    selection top-1 it ranks by (`select_mean`), `settings`, `validated`, `rank`, and the verdict of
    the paired tests against the leader: `diff_vs_leader`, `p_vs_leader`, `pairs`, `mark` ("best":
    significantly better than the runner-up; "tied": among the leaders no test separates; "")."""
    summary = summarize(df) if summary is None else summary
    seeds = matched_per_seed(df, summary, targets, tolerance)
    cols = [
        *SECTION,
        "target",
        "pruner",
        "settings",
        "validated",
        "seeds",
        "top1_mean",
        "top1_ci",
        "select_mean",
        "rank",
        "diff_vs_leader",
        "p_vs_leader",
        "pairs",
        "mark",
    ]
    if seeds.empty:
        return pd.DataFrame(columns=cols)
    g = seeds.groupby([*SECTION, "target", "pruner"], sort=False)
    m = g.agg(
        settings=("settings", "first"),
        validated=("validated", "all"),
        seeds=("seed", "size"),
        top1_mean=("top1", "mean"),
        top1_std=("top1", "std"),
        select_mean=("select", "mean"),
    ).reset_index()
    m["top1_ci"] = t_halfwidth(m.pop("top1_std"), m["seeds"])
    parts = []
    by_cell = dict(tuple(seeds.groupby([*SECTION, "target"], sort=False)))
    for key, cell in m.groupby([*SECTION, "target"], sort=False):
        cell = cell.sort_values(["select_mean", "top1_mean"], ascending=False, kind="stable").copy()
        cell["rank"] = range(1, len(cell) + 1)
        leader = cell.iloc[0]
        per_seed = {p: v.set_index("seed")["top1"] for p, v in by_cell[key].groupby("pruner")}
        tests = [
            paired_test(per_seed[leader["pruner"]], per_seed[p])
            if p != leader["pruner"]
            else (np.nan, np.nan, 0)
            for p in cell["pruner"]
        ]
        cell["diff_vs_leader"], cell["p_vs_leader"], cell["pairs"] = map(list, zip(*tests, strict=True))
        worse = (cell["p_vs_leader"] < alpha) & (cell["diff_vs_leader"] > 0)  # significantly below the leader
        mark = [""] * len(cell)
        if len(cell) > 1:
            if worse.iloc[1]:
                mark[0] = "best"
            else:
                mark = ["tied" if i == 0 or not worse.iloc[i] else "" for i in range(len(cell))]
        cell["mark"] = mark
        parts.append(cell)
    return pd.concat(parts, ignore_index=True)[cols]


def fronts(summary: pd.DataFrame) -> pd.DataFrame:
    """Every pruner's validation Pareto front (points = per-setting seed means), one table."""
    parts = [
        pareto_front(p, y="select") for _, p in _points(summary).groupby([*SECTION, "pruner"], sort=False)
    ]
    return pd.concat(parts, ignore_index=True) if parts else _points(summary).iloc[:0]


# ---------------------------------------------------------------------------------- published


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """Published rows (dataset, model, pruner, setting, sparsity, top1 as fractions, source, ...).

    Without `path`, the repository's leaderboards/published.csv (none if it is not there)."""
    if path is None and not PUBLISHED_CSV.is_file():
        return pd.DataFrame(columns=list(PUBLISHED_COLUMNS))
    path = Path(path or PUBLISHED_CSV)
    try:
        pub = pd.read_csv(path, comment="#", skipinitialspace=True, dtype={"setting": str})
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the published rows ({e})") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in pub.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns {', '.join(PUBLISHED_COLUMNS)}"
        )
    for col in ("sparsity", "top1"):
        values = pd.to_numeric(pub[col], errors="coerce")
        bad = pub.index[values.isna() | (values < 0) | (values > 1)]
        if len(bad):
            raise ConfigError(
                f"{path}: data row {bad[0] + 1}, column {col} = {pub.loc[bad[0], col]}: "
                "expected a fraction in [0, 1]"
            )
        pub[col] = values
    pub["setting"] = pub["setting"].fillna("-")
    return pub.sort_values(["dataset", "model", "pruner", "sparsity", "setting"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------- markdown


def _in_section(t: pd.DataFrame, key: tuple[str, ...], budget: bool = True) -> pd.DataFrame:
    """The rows of `t` in section `key`; `budget=False`: of its dataset and model only (published rows)."""
    mask = (t["dataset"] == key[0]) & (t["model"] == key[1])
    return t[mask & (t["recipe"] == key[2]) & (t["budget"] == key[3])] if budget else t[mask]


def _pm(mean: pd.Series, half: pd.Series, fmt: str, scale: float = 1.0) -> pd.Series:
    """`mean ± half-width` (one seed, whose interval is NaN, shows the mean only; NaN mean: blank)."""

    def one(m: float, h: float) -> str:
        if pd.isna(m):
            return ""
        return f"{m * scale:{fmt}}" + ("" if pd.isna(h) else f" ± {h * scale:{fmt}}")

    return pd.Series([one(m, h) for m, h in zip(mean, half, strict=True)], index=mean.index, dtype=str)


def _num(values: pd.Series, fmt: str, scale: float = 1.0) -> pd.Series:
    return values.map(lambda v: "" if pd.isna(v) else f"{v * scale:{fmt}}").astype(str)


def _main_table(s: pd.DataFrame) -> str:
    time = _pm(s["train_time_s_mean"], s["train_time_s_ci"], ".1f")
    t = pd.DataFrame(
        {
            "recipe": s["recipe"],
            "pruner": s["pruner"],
            "setting": s["setting"],
            "seeds": s["seeds"].astype(str),
            "test top-1 %": _pm(s["top1_mean"], s["top1_ci"], ".2f", 100),
            "val top-1 %": _pm(s["val_top1_mean"], s["val_top1_ci"], ".2f", 100),
            "sparsity %": _pm(s["sparsity_mean"], s["sparsity_ci"], ".2f", 100),
            "MACs reduction ×": _pm(s["macs_reduction_mean"], s["macs_reduction_ci"], ".2f"),
            "measured speed-up ×": _speedup(s),
            "train compute × dense": _num(s["train_compute_multiplier_mean"], ".3g"),
            "train time s": time.where((s["loaded_runs"] == 0) | (time == ""), time + " " + LOADED),
            "time vs dense": _num(s["time_vs_dense"], ".2f"),
            "training peak MiB": _pm(s["peak_tensor_bytes_mean"], s["peak_tensor_bytes_ci"], ".3f", 1 / MIB),
            "memory vs dense": _num(s["memory_vs_dense"], ".2f"),
            "state MiB": _num(s["state_bytes_mean"], ".3f", 1 / MIB),
            "state vs dense": _num(s["state_vs_dense"], ".2f"),
        }
    )
    return table(t, right=set(t.columns) - {"recipe", "pruner", "setting"})


def _speedup(s: pd.DataFrame) -> pd.Series:
    """`mean ± ci (backend)`: the best backend's inference speed-up, the backend most often best."""
    text = _pm(s["speedup_best_mean"], s["speedup_best_ci"], ".2f")
    backend = s["speedup_backend"].fillna("").astype(str).str.replace("2to4", "2:4")
    return text.where((text == "") | (backend == ""), text + " (" + backend + ")")


def _matched_cell(r: pd.Series) -> str:
    text = _pm(pd.Series([r["top1_mean"]]), pd.Series([r["top1_ci"]]), ".2f", 100).iat[0]
    text = {"best": f"**{text}**", "tied": f"*{text}* (tied)"}.get(r["mark"], text)
    return text + ("" if r["validated"] else f" {NOT_VALIDATED}")


def _matched_table(m: pd.DataFrame, targets: tuple[float, ...]) -> str:
    pruners = list(dict.fromkeys(m.sort_values("pruner", kind="stable")["pruner"]))
    t = pd.DataFrame(
        {
            "recipe": m["recipe"].iat[0],
            "pruner": pruners,
            "settings": [str(m.loc[m["pruner"] == p, "settings"].iat[0]) for p in pruners],
        }
    )
    for target in targets:
        cells = {r["pruner"]: _matched_cell(r) for _, r in m[m["target"] == target].iterrows()}
        t[f"top-1 % at {100 * target:g}%"] = [cells.get(p, "") for p in pruners]
    return table(t, right=set(t.columns) - {"recipe", "pruner"})


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def significance_text(
    m: pd.DataFrame, targets: tuple[float, ...] = TARGETS, alpha: float = ALPHA
) -> list[str]:
    """In words, per target sparsity of one section: who leads and which differences to the leader
    are significant (paired t-tests on test top-1 over shared seeds, level `alpha`)."""
    lines = []
    for target in targets:
        cell = m[m["target"] == target].sort_values("rank")
        level = f"{100 * target:g}%"
        if len(cell) < 2:
            lines.append(
                f"- **{level}**: "
                + (
                    "only " + cell["pruner"].iat[0] + " has runs here; nothing to compare."
                    if len(cell)
                    else "no pruner has runs here."
                )
            )
            continue
        lead = cell.iloc[0]
        head = (
            f"- **{level}**: {lead['pruner']} leads on validation (test top-1 {100 * lead['top1_mean']:.2f}%)"
        )
        worse = [
            r for _, r in cell.iloc[1:].iterrows() if r["p_vs_leader"] < alpha and r["diff_vs_leader"] > 0
        ]
        better = [  # selected on validation, the leader can still lose on test
            r for _, r in cell.iloc[1:].iterrows() if r["p_vs_leader"] < alpha and r["diff_vs_leader"] < 0
        ]
        same = [r for _, r in cell.iloc[1:].iterrows() if not r["p_vs_leader"] < alpha]
        parts = []
        if worse:
            parts.append(
                "significantly better than "
                + ", ".join(
                    f"{r['pruner']} (by {100 * r['diff_vs_leader']:.2f} points, {_p(r['p_vs_leader'])})"
                    for r in worse
                )
            )
        if better:
            parts.append(
                "significantly worse on test than "
                + ", ".join(
                    f"{r['pruner']} (by {-100 * r['diff_vs_leader']:.2f} points, {_p(r['p_vs_leader'])})"
                    for r in better
                )
                + " (ranked below it on validation)"
            )
        if same:
            parts.append(
                "not significantly different from "
                + ", ".join(
                    f"{r['pruner']} ({_p(r['p_vs_leader']) if pd.notna(r['p_vs_leader']) else NO_TEST})"
                    for r in same
                )
            )
        verdict = (
            "It is significantly the best."
            if lead["mark"] == "best"
            else "No significant best: the leaders are tied."
        )
        lines.append(f"{head}; {'; '.join(parts)}. {verdict}")
    return lines


def _published_table(p: pd.DataFrame) -> str:
    t = pd.DataFrame(
        {
            "pruner": p["pruner"],
            "setting": p["setting"],
            "sparsity %": _num(p["sparsity"], ".2f", 100),
            "top-1 %": _num(p["top1"], ".2f", 100),
            "source": p["source"].fillna("").astype(str),
        }
    )
    if "note" in p.columns:
        t["note"] = p["note"].fillna("").astype(str)
    return table(t, right={"sparsity %", "top-1 %"})


def _provenance(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    parts = [", ".join(f"{int(counts.get(s, 0))} {s}" for s in results.STATUSES) + " runs"]
    for col, label, short in (
        ("git_sha", "git", 7),
        ("device", "device", None),
        ("torch_version", "torch", None),
    ):
        if col in runs.columns:
            values = sorted({str(v)[:short] for v in runs[col].dropna()})
            parts.append(f"{label} {', '.join(values) or 'unknown'}")
    if "slurm_job_id" in runs.columns:
        jobs = runs["slurm_job_id"].dropna()
        parts.append(f"SLURM jobs {len(set(jobs))}" if len(jobs) else "no SLURM")
    return " · ".join(parts)


def _test_size(runs: pd.DataFrame) -> str:
    sizes = sorted({int(n) for n in runs["num_test"].dropna()})
    return f"test set {', '.join(map(str, sizes))} examples" if sizes else "test-set size not recorded"


INTRO = (
    "Top-1, sparsity and costs: mean ± half-width of the 95% confidence interval over seeds (Student t: "
    "mean ± t(0.975, n−1)·s/√n; a single seed shows the mean). Settings are selected on validation top-1 "
    "(a fixed split held out of the training set); the test top-1 of what was selected is reported. "
    "Sparsity: zero conv/linear weights. MACs reduction: dense / sparse conv/linear multiply-accumulates of "
    "one forward pass. Training peak: the training's own peak tensor memory (CPU: live tensors over a window "
    "of training steps; CUDA: the allocator's peak); state: parameters, gradients, optimizer and pruner "
    "state in bytes. *vs dense*: ratio of means to the `dense` (SGD) rows of the same section. Setting: the "
    "hyperparameters that vary within a pruner. Failed and diverged runs are counted, not averaged. "
    f"{LOADED}: a run of the row was timed on a loaded machine (load average above 1.5 per core): its "
    f"time is not comparable. {NOT_VALIDATED}: selected on test top-1 (runs without a validation split)."
)


def _matched_note(targets: tuple[float, ...], tolerance: float, alpha: float) -> str:
    return (
        f"Each pruner's test top-1 at {', '.join(f'{100 * t:g}' for t in targets)}% sparsity (mean ± 95% CI "
        "over seeds), read off its accuracy–sparsity Pareto front on validation top-1 (points: per-setting "
        "seed means; linear between front points, flat below the least sparse one; each seed's test top-1 "
        "read with the same weights). Blank where the pruner has no runs around the level: below its least "
        f"sparse run or beyond its sparsest run by more than {100 * tolerance:g} points (no extrapolation). "
        "*settings*: how many settings the pruner was tuned over. Pruners are ranked by validation top-1; "
        "**bold**: the leader is better than the runner-up by a paired t-test (two-sided, level "
        f"{alpha:g}) on "
        "the per-seed differences of test top-1 (runs sharing a seed share initialisation and data order); "
        "*(tied)*: no such difference, the leader and every pruner not significantly worse than it. No "
        "correction for multiple comparisons."
    )


def _loaded_note(runs: pd.DataFrame) -> list[str]:
    n = int(runs.loc[runs["status"] == "ok", "loaded"].sum())
    return (
        [
            f"{LOADED} {n} run(s) of this section were timed on a loaded machine: compare their times with "
            "care.",
            "",
        ]
        if n
        else []
    )


def render(
    df: pd.DataFrame,
    published: pd.DataFrame | None = None,
    title: str = "Leaderboard",
    figures: dict[tuple[str, ...], list[tuple[str, str]]] | None = None,
    note: str = "",
    targets: tuple[float, ...] = TARGETS,
    tolerance: float = TOLERANCE,
    alpha: float = ALPHA,
    calibrations: pd.DataFrame | None = None,
) -> str:
    """The leaderboard Markdown for a prepared table (see `prepare`); deterministic. `calibrations`:
    `load_calibrations` rows, shown as the cost of landing on each target."""
    summary = summarize(df)
    matched = matched_sparsity(df, summary, targets, tolerance, alpha)
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    out += [INTRO, ""]
    for key, runs in df.groupby(SECTION, sort=True):
        dataset, model, recipe, budget = key
        out += [
            f"## {dataset} / {model} · {recipe} recipe · {_test_size(runs)}",
            "",
            f"Budget: `{budget}` · recipe `{recipe}` · {_provenance(runs)}",
            "",
        ]
        s = _in_section(summary, key)
        out += [_main_table(s) if len(s) else "No finished runs.", ""]
        out += _loaded_note(runs)
        m = _in_section(matched, key)
        if len(m):
            out += [
                "### Accuracy at matched sparsity",
                "",
                _matched_note(targets, tolerance, alpha),
                "",
                _matched_table(m, targets),
                "",
            ]
            out += ["### Which differences are significant", "", *significance_text(m, targets, alpha), ""]
        if calibrations is not None and len(calibrations):
            c = calibrations[(calibrations["dataset"] == dataset) & (calibrations["model"] == model)
                             & (calibrations["recipe"] == recipe)].sort_values(["pruner", "target"])
            if len(c):
                out += ["### Cost of landing on a sparsity", "", CALIBRATION_NOTE, "", _calibration_table(c),
                        ""]
        if published is not None:
            p = _in_section(published, key, budget=False)
            if len(p):
                out += ["### Published", "", _published_table(p), ""]
        if figures and figures.get(key):
            out += (
                ["### Figures", ""]
                + [
                    f"![{alt}]({name}) ([SVG]({Path(name).with_suffix('.svg')}))"
                    for alt, name in figures[key]
                ]
                + [""]
            )
    return "\n".join(out).rstrip() + "\n"


def loaded_runs(df: pd.DataFrame) -> int:
    """How many ok runs of a prepared table were timed on a loaded machine."""
    return int(df.loc[df["status"] == "ok", "loaded"].sum())


# ---------------------------------------------------------------------------------- calibration


def load_calibrations(folder: str | Path) -> pd.DataFrame:
    """The `bench calibrate` records in `folder` (calibration-*.json), one row each: what landing a
    knob pruner on each target sparsity cost (runs, optimizer steps, in budgets: steps / the steps
    of its full-budget run). Unreadable files are skipped."""
    rows = []
    for path in sorted(Path(folder).glob("calibration-*.json")):
        r = read_json(path)
        if not isinstance(r, dict) or not isinstance(r.get("cost"), dict):
            continue
        full = [t for t in r.get("trials", []) if t.get("phase") == "full" and t.get("steps")]
        budget_steps = full[-1]["steps"] if full else None
        knob = r.get("knob")
        rows.append({
            "dataset": r.get("dataset"), "model": r.get("model"), "pruner": r.get("pruner"),
            "recipe": (r.get("budget") or {}).get("recipe", "shared"), "target": r.get("target"),
            "knob": knob.get("name") if isinstance(knob, dict) else knob,
            "value": r.get("value"), "sparsity": r.get("sparsity"),
            "within_tolerance": r.get("within_tolerance"), "runs": r["cost"].get("runs"),
            "steps": r["cost"].get("steps"),
            "budgets": r["cost"]["steps"] / budget_steps if budget_steps else np.nan,
        })
    return pd.DataFrame(rows, columns=["dataset", "model", "pruner", "recipe", "target", "knob", "value",
                                       "sparsity", "within_tolerance", "runs", "steps", "budgets"])


def _calibration_table(c: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "pruner": c["pruner"], "target %": _num(c["target"], ".0f", 100),
        "knob": c["knob"] + " = " + c["value"].map(lambda v: f"{v:.4g}"),
        "sparsity reached %": _num(c["sparsity"], ".2f", 100),
        "landed": c["within_tolerance"].map({True: "yes", False: "no"}).fillna(""),
        "runs": c["runs"].astype(str), "steps": c["steps"].astype(str),
        "cost × one run": _num(c["budgets"], ".2f"),
    })
    return table(t, right=set(t.columns) - {"pruner", "knob", "landed"})


CALIBRATION_NOTE = (
    "What it cost to find each knob value above (`bench calibrate`, seed 0: a secant search on "
    "shortened runs, then full-budget runs until one lands within 0.5 points of the target): runs, "
    "optimizer steps, and those steps in units of one full-budget run; *landed*: within the tolerance "
    "(no: the closest it got; a pruner whose every near value prunes everything cannot land there). "
    "Every other pruner takes its target sparsity directly: one run."
)


# ---------------------------------------------------------------------------------- writing


def _slugs(df: pd.DataFrame) -> dict[tuple[str, ...], str]:
    keys = df[SECTION].drop_duplicates().sort_values(SECTION)
    slugs, seen = {}, {}
    for dataset, model, recipe, budget in keys.itertuples(index=False):
        base = f"{dataset}-{model}" + ("" if recipe == "shared" else f"-{recipe}")
        seen[base] = seen.get(base, 0) + 1
        slugs[(dataset, model, recipe, budget)] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return slugs


def _figures(
    df: pd.DataFrame, history: pd.DataFrame | None, published: pd.DataFrame | None, out: Path
) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    from bench import plots

    summary = summarize(df)
    front = fronts(summary)
    ok = relative_to_dense(df[df["status"] == "ok"])
    names = set(df["pruner"]) | (set(published["pruner"]) if published is not None else set())
    palette = plots.pruner_palette(names)  # one colour per pruner in every figure
    figs: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for key, slug in _slugs(df).items():
        title = f"{key[0]} / {key[1]} · {key[2]} recipe"
        runs, items = _in_section(ok, key), []
        if runs.empty:
            continue
        s = _in_section(summary, key)
        pts = _points(s)
        dense = s[s["pruner"] == "dense"]
        dense_ref = (dense["top1_mean"].iat[0], dense["top1_ci"].iat[0]) if len(dense) else None
        pub = None if published is None else _in_section(published, key, budget=False)
        if len(pts) or (pub is not None and len(pub)):
            for kind, log_density in (("accuracy-sparsity", False), ("accuracy-compression", True)):
                name = f"{slug}-{kind}.png"
                plots.accuracy_sparsity(
                    pts,
                    _in_section(front, key),
                    out / name,
                    palette,
                    pub,
                    dense_ref,
                    title,
                    log_density=log_density,
                )
                items.append((kind.replace("-", " vs "), name))
        if history is not None and len(history):
            hist = history.merge(runs[["run_id", "pruner", "setting"]], on=["run_id", "pruner"])
            if len(hist):
                name = f"{slug}-sparsity-epoch.png"
                plots.sparsity_epochs(hist, out / name, palette, title)
                items.append(("sparsity vs epoch", name))
        if runs["speedup_best"].notna().any():
            name = f"{slug}-speedup.png"
            plots.speedup_vs_theoretical(runs, out / name, palette, title)
            items.append(("measured inference speed-up against the theoretical (MACs) one", name))
        if runs["time_vs_dense"].notna().any():
            name = f"{slug}-cost.png"
            plots.cost_vs_dense(runs, out / name, palette, title)
            items.append(("train time and memory relative to dense SGD", name))
        figs[key] = items
    return figs


def write_leaderboard(
    runs: pd.DataFrame,
    out: str | Path,
    history: pd.DataFrame | None = None,
    published: pd.DataFrame | None = None,
    title: str | None = None,
    plots: bool = True,
    note: str = "",
    where: str = "results",
    calibrations: pd.DataFrame | None = None,
) -> Path:
    """Write README.md, leaderboard.csv, matched_sparsity.csv and (with `plots`) PNG and SVG figures
    into `out`; returns the README path. `calibrations`: see `render`."""
    out = Path(out)
    df = prepare(runs, where)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(df, history, published, out) if plots else None
    summary = summarize(df)
    write_text(out / "leaderboard.csv", summary.to_csv(index=False, float_format="%.6g"))
    matched = matched_sparsity(df, summary)
    write_text(out / "matched_sparsity.csv", matched.to_csv(index=False, float_format="%.6g"))
    readme = out / "README.md"
    md = render(df, published, title or f"Leaderboard: {out.resolve().name}", figures, note,
                calibrations=calibrations)
    write_text(readme, _merge_readme(readme, md))
    return readme


BEGIN = "<!-- generated by bench leaderboard: edits between these markers are overwritten -->"
END = "<!-- end of bench leaderboard -->"


def _merge_readme(path: Path, generated: str) -> str:
    """The generated block between markers; text outside them in an existing README is kept (a
    hand-written description above the table survives `bench board`)."""
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        before, after = old[: old.index(BEGIN)], old[old.index(END) + len(END) :].lstrip("\n")
    else:
        before, after = old, ""
    before = before.rstrip("\n") + "\n\n" if before.strip() else ""
    return f"{before}{BEGIN}\n{generated}{END}\n" + (f"\n{after}" if after.strip() else "")


# ------------------------------------------------------------------------------------ CLI


def cmd_leaderboard(args: argparse.Namespace) -> int:
    runs, history = results.read(args.results)
    published = load_published(args.published) if args.published != "none" else None
    readme = write_leaderboard(
        runs,
        args.output,
        history,
        published,
        args.title,
        plots=not args.no_plots,
        note=f"Generated by `bench leaderboard` from `{Path(args.results).name}`.",
        where=str(args.results),
    )
    print(f"wrote {readme}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="runs table from `bench gather` (its .history.parquet is used if there)")
    p.add_argument("-o", "--output", required=True, help="folder for README.md, CSV and PNG files")
    p.add_argument("--title", help="Markdown title (default: Leaderboard: <output folder name>)")
    p.add_argument(
        "--published",
        default=None,
        help="published rows CSV (default: leaderboards/published.csv; 'none' to leave them out)",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_leaderboard)
