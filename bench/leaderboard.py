"""Leaderboards from a gathered results table: Markdown (renders on GitHub), CSV and figures.

    bench leaderboard results.parquet -o leaderboards/NAME/
    bench board leaderboards/NAME          # bench.board: run NAME/sweep.toml, gather, write it there

One section per (dataset, model, budget). Its main table has a row per pruner and setting (the
pruner's hyperparameters that vary within the section) with mean ± std over seeds; cost columns
are ratios of means to the `dense` rows of the same section.

Accuracy at matched sparsity: each pruner's points are its per-setting seed means; its Pareto
front keeps the points that no other point of the pruner beats on both sparsity and top-1. The
top-1 at a target sparsity is read off the front: linearly interpolated between the two front
points around the target, and below the least sparse front point, that point's top-1 (a model at
least as sparse and as accurate exists). The pruner has runs "around" a target when the target
lies in [its least sparse run - TOLERANCE, its sparsest front point + TOLERANCE]; elsewhere the
cell stays blank: nothing is extrapolated beyond the sparsest run, nor claimed below the least
sparse one. TOLERANCE (0.5 points) lets a method run at 90% that measures 89.97% count at 90%.
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
from bench.config import Budget
from bench.errors import ConfigError
from bench.io import write_text
from bench.markdown import table

TARGETS = (0.80, 0.90, 0.95, 0.98)  # matched-sparsity levels (fractions of zero weights)
TOLERANCE = 0.005  # how far (absolute fraction) beyond its front a pruner still counts at a target
SECTION = ["dataset", "model", "budget"]
SETTING = [*SECTION, "pruner", "setting"]
# what a table needs to make a board; other run-record metrics missing from it are unknown (NaN)
REQUIRED = ("run_id", "pruner", "model", "dataset", "seed", "status", "top1", "sparsity")
MEASURES = ("top1", "sparsity", "flops_reduction", "train_time_s", "peak_memory_bytes", "state_bytes")
COSTS = {"train_time_s": "time_vs_dense", "peak_memory_bytes": "memory_vs_dense",
         "state_bytes": "state_vs_dense"}  # measure -> its ratio to dense
BUDGET_SHOWN = ("epochs", "batch_size", "lr", "lr_schedule")  # always in the budget label
PUBLISHED_CSV = Path(__file__).resolve().parent.parent / "leaderboards" / "published.csv"
PUBLISHED_COLUMNS = ("dataset", "model", "pruner", "setting", "sparsity", "top1", "source", "published")
MIB = 2**20


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
    defaults = {k: json.dumps(list(v)) if isinstance(v, tuple) else _fmt_value(v)
                for k, v in dataclasses.asdict(Budget()).items()}  # tuples are JSON text in the table
    cols = [c for c in df.columns if c.startswith("budget.")]
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


def prepare(runs: pd.DataFrame, where: str = "results") -> pd.DataFrame:
    """Check a gathered table and add `budget`, `setting`, `hparams` and `flops_reduction`; rows
    are sorted (dense first, then by pruner and hyperparameter values)."""
    missing = [c for c in REQUIRED if c not in runs.columns]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {', '.join(missing)}; expected a table written by "
                          f"`bench gather` (columns {', '.join(REQUIRED)}, hparams.*, budget.*)")
    df = runs.copy()
    for col in record.METRICS:  # a table gathered before a metric existed: that metric unknown
        if col not in df.columns:
            df[col] = np.nan
    df["budget"] = _budget_labels(df)
    hp = sorted(c for c in df.columns if c.startswith("hparams."))
    df = df.assign(_rank=df["pruner"] != "dense").sort_values(
        ["dataset", "model", "budget", "_rank", "pruner", *hp, "seed"], kind="stable", na_position="last"
    ).drop(columns="_rank").reset_index(drop=True)
    ok = df["status"] == "ok"
    df["setting"] = pd.Series("-", index=df.index, dtype=str)
    if ok.any():
        df.loc[ok, "setting"] = _settings(df[ok])
    df["hparams"] = _hparams_json(df) if hp else "{}"
    df["flops_reduction"] = df["flops_dense"] / df["flops_sparse"]
    return df


def dense_reference(ok: pd.DataFrame) -> pd.DataFrame:
    """Per section, the mean train time, peak memory and state bytes of its `dense` runs."""
    dense = ok[ok["pruner"] == "dense"].groupby(SECTION)[list(COSTS)].mean()
    return dense.rename(columns=lambda c: f"dense_{c}").reset_index()


def relative_to_dense(ok: pd.DataFrame) -> pd.DataFrame:
    """Each run's cost measures divided by the dense means of its section (NaN without dense)."""
    df = ok.merge(dense_reference(ok), on=SECTION, how="left")
    for col, rel in COSTS.items():
        df[rel] = df[col] / df[f"dense_{col}"]
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (section, pruner, setting) over its ok runs: `seeds`, `<measure>_mean`/`_std`
    (sample std) and the cost ratios of means to the section's dense rows."""
    ok = df[df["status"] == "ok"]
    g = ok.groupby(SETTING, sort=False)
    stats = g[list(MEASURES)].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    summary = pd.concat([g["hparams"].first(), g.size().rename("seeds"), stats], axis=1).reset_index()
    summary = summary.merge(dense_reference(ok), on=SECTION, how="left")
    for col, rel in COSTS.items():
        summary[rel] = summary[f"{col}_mean"] / summary.pop(f"dense_{col}")
    return summary


def pareto_front(points: pd.DataFrame, x: str = "sparsity", y: str = "top1") -> pd.DataFrame:
    """The points no other point beats on both `x` and `y` (higher is better for both; of equal
    points one is kept), sorted by `x`: along the front, `y` falls as `x` rises."""
    p = points.dropna(subset=[x, y]).sort_values([x, y], ascending=False, kind="stable")
    best_so_far = p[y].cummax().shift(fill_value=-np.inf)
    return p[p[y] > best_so_far].sort_values(x)


def interpolate(front: pd.DataFrame, targets: tuple[float, ...] = TARGETS, tolerance: float = TOLERANCE,
                lowest: float | None = None, x: str = "sparsity", y: str = "top1") -> np.ndarray:
    """`y` at each target `x` on the front: linear between front points, flat below the least
    sparse one (a sparser point is at least as accurate); NaN for targets not around the runs,
    i.e. outside [`lowest` (the least sparse run; default: the front's) - tolerance, the sparsest
    front point + tolerance]."""
    xs, ys = front[x].to_numpy(float), front[y].to_numpy(float)
    t = np.asarray(targets, float)
    if len(xs) == 0:
        return np.full(len(t), np.nan)
    lo = xs[0] if lowest is None else min(lowest, xs[0])
    around = (t >= lo - tolerance) & (t <= xs[-1] + tolerance)
    return np.where(around, np.interp(t, xs, ys), np.nan)  # np.interp holds the end values flat


def _points(summary: pd.DataFrame) -> pd.DataFrame:
    pts = summary[summary["pruner"] != "dense"]
    return pts.rename(columns={"sparsity_mean": "sparsity", "top1_mean": "top1"})


def target_column(t: float) -> str:
    return f"at_{100 * t:g}"


def matched_sparsity(summary: pd.DataFrame, targets: tuple[float, ...] = TARGETS,
                     tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per (section, pruner), top-1 at each target sparsity on the pruner's Pareto front of
    per-setting seed means (columns `at_80`, ...). Dense is left out (it has no sparsity)."""
    cols = [target_column(t) for t in targets]
    rows = [
        (*key, *interpolate(pareto_front(pts), targets, tolerance, pts["sparsity"].min()))
        for key, pts in _points(summary).groupby([*SECTION, "pruner"], sort=False)
    ]
    return pd.DataFrame(rows, columns=[*SECTION, "pruner", *cols])


def fronts(summary: pd.DataFrame) -> pd.DataFrame:
    """Every pruner's Pareto front (points = per-setting seed means), one table."""
    parts = [pareto_front(p) for _, p in _points(summary).groupby([*SECTION, "pruner"], sort=False)]
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
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; "
                          f"expected columns {', '.join(PUBLISHED_COLUMNS)}")
    for col in ("sparsity", "top1"):
        values = pd.to_numeric(pub[col], errors="coerce")
        bad = pub.index[values.isna() | (values < 0) | (values > 1)]
        if len(bad):
            raise ConfigError(f"{path}: data row {bad[0] + 1}, column {col} = {pub.loc[bad[0], col]}: "
                              "expected a fraction in [0, 1]")
        pub[col] = values
    pub["setting"] = pub["setting"].fillna("-")
    return pub.sort_values(["dataset", "model", "pruner", "sparsity", "setting"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------- markdown


def _in_section(t: pd.DataFrame, key: tuple[str, str, str], budget: bool = True) -> pd.DataFrame:
    mask = (t["dataset"] == key[0]) & (t["model"] == key[1])
    return t[mask & (t["budget"] == key[2])] if budget else t[mask]


def _pm(mean: pd.Series, std: pd.Series, fmt: str, scale: float = 1.0) -> pd.Series:
    """`mean ± std` (a single seed, whose std is NaN, shows the mean only; NaN mean: blank)."""
    def one(m: float, s: float) -> str:
        if pd.isna(m):
            return ""
        return f"{m * scale:{fmt}}" + ("" if pd.isna(s) else f" ± {s * scale:{fmt}}")
    return pd.Series([one(m, s) for m, s in zip(mean, std, strict=True)], index=mean.index, dtype=str)


def _num(values: pd.Series, fmt: str, scale: float = 1.0) -> pd.Series:
    return values.map(lambda v: "" if pd.isna(v) else f"{v * scale:{fmt}}").astype(str)


def _main_table(s: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "pruner": s["pruner"], "setting": s["setting"], "seeds": s["seeds"].astype(str),
        "top-1 %": _pm(s["top1_mean"], s["top1_std"], ".2f", 100),
        "sparsity %": _pm(s["sparsity_mean"], s["sparsity_std"], ".2f", 100),
        "FLOPs reduction ×": _pm(s["flops_reduction_mean"], s["flops_reduction_std"], ".2f"),
        "train time s": _pm(s["train_time_s_mean"], s["train_time_s_std"], ".1f"),
        "time vs dense": _num(s["time_vs_dense"], ".2f"),
        "peak memory MiB": _pm(s["peak_memory_bytes_mean"], s["peak_memory_bytes_std"], ".0f", 1 / MIB),
        "memory vs dense": _num(s["memory_vs_dense"], ".2f"),
        "state vs dense": _num(s["state_vs_dense"], ".2f"),
    })
    return table(t, right=set(t.columns) - {"pruner", "setting"})


def _matched_table(m: pd.DataFrame, targets: tuple[float, ...]) -> str:
    t = pd.DataFrame({"pruner": m["pruner"]})
    for target in targets:
        text = _num(m[target_column(target)], ".2f", 100)
        best = text[text != ""].astype(float).max() if (text != "").any() else None
        t[f"top-1 % at {100 * target:g}%"] = [f"**{v}**" if v and float(v) == best else v for v in text]
    return table(t, right=set(t.columns) - {"pruner"})


def _published_table(p: pd.DataFrame) -> str:
    t = pd.DataFrame({
        "pruner": p["pruner"], "setting": p["setting"], "sparsity %": _num(p["sparsity"], ".2f", 100),
        "top-1 %": _num(p["top1"], ".2f", 100), "source": p["source"].fillna("").astype(str),
    })
    if "note" in p.columns:
        t["note"] = p["note"].fillna("").astype(str)
    return table(t, right={"sparsity %", "top-1 %"})


def _provenance(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    parts = [", ".join(f"{int(counts.get(s, 0))} {s}" for s in results.STATUSES) + " runs"]
    for col, label, short in (("git_sha", "git", 7), ("device", "device", None),
                              ("torch_version", "torch", None)):
        if col in runs.columns:
            values = sorted({str(v)[:short] for v in runs[col].dropna()})
            parts.append(f"{label} {', '.join(values) or 'unknown'}")
    if "slurm_job_id" in runs.columns:
        jobs = runs["slurm_job_id"].dropna()
        parts.append(f"SLURM jobs {len(set(jobs))}" if len(jobs) else "no SLURM")
    return " · ".join(parts)


INTRO = (
    "Top-1 and sparsity in %, mean ± std over seeds (sample std; a single seed shows the mean). "
    "Sparsity: zero conv/linear weights. FLOPs reduction: dense / sparse multiply-accumulates of one "
    "forward pass. *vs dense*: ratio of means to the `dense` (SGD) rows of the same dataset, model and "
    "budget; state = parameters, gradients, optimizer and pruner state in bytes. Setting: the "
    "hyperparameters that vary within a pruner. Failed and diverged runs are counted, not averaged."
)


def _matched_note(targets: tuple[float, ...], tolerance: float) -> str:
    return (
        f"Each pruner's top-1 at {', '.join(f'{100 * t:g}' for t in targets)}% sparsity, read off its "
        "accuracy–sparsity Pareto front (points: per-setting seed means; linear between front points, "
        "flat below the least sparse one). Blank where the pruner has no runs around the level: below "
        f"its least sparse run or beyond its sparsest run by more than {100 * tolerance:g} points "
        "(no extrapolation). Best per column in bold."
    )


def render(df: pd.DataFrame, published: pd.DataFrame | None = None, title: str = "Leaderboard",
           figures: dict[tuple[str, str, str], list[tuple[str, str]]] | None = None, note: str = "",
           targets: tuple[float, ...] = TARGETS, tolerance: float = TOLERANCE) -> str:
    """The leaderboard Markdown for a prepared table (see `prepare`); deterministic."""
    summary = summarize(df)
    matched = matched_sparsity(summary, targets, tolerance)
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    out += [INTRO, ""]
    for key, runs in df.groupby(SECTION, sort=True):
        dataset, model, budget = key
        out += [f"## {dataset} / {model}", "", f"Budget: `{budget}` · {_provenance(runs)}", ""]
        s = _in_section(summary, key)
        out += [_main_table(s) if len(s) else "No finished runs.", ""]
        m = _in_section(matched, key)
        if len(m):
            out += ["### Accuracy at matched sparsity", "", _matched_note(targets, tolerance), "",
                    _matched_table(m, targets), ""]
        if published is not None:
            p = _in_section(published, key, budget=False)
            if len(p):
                out += ["### Published", "", _published_table(p), ""]
        if figures and figures.get(key):
            out += ["### Figures", ""] + [f"![{alt}]({name})" for alt, name in figures[key]] + [""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------- writing


def _slugs(df: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    keys = df[SECTION].drop_duplicates().sort_values(SECTION)
    slugs, seen = {}, {}
    for dataset, model, budget in keys.itertuples(index=False):
        base = f"{dataset}-{model}"
        seen[base] = seen.get(base, 0) + 1
        slugs[(dataset, model, budget)] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return slugs


def _figures(df: pd.DataFrame, history: pd.DataFrame | None, published: pd.DataFrame | None,
             out: Path) -> dict[tuple[str, str, str], list[tuple[str, str]]]:
    from bench import plots

    summary = summarize(df)
    front = fronts(summary)
    ok = relative_to_dense(df[df["status"] == "ok"])
    figs: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    for key, slug in _slugs(df).items():
        title = f"{key[0]} / {key[1]}"
        runs, items = _in_section(ok, key), []
        if runs.empty:
            continue
        pts = _points(_in_section(summary, key))
        dense = runs.loc[runs["pruner"] == "dense", "top1"]
        pub = None if published is None else _in_section(published, key, budget=False)
        if len(pts) or (pub is not None and len(pub)):
            name = f"{slug}-accuracy-sparsity.png"
            plots.accuracy_sparsity(pts, _in_section(front, key), out / name, pub,
                                    dense.mean() if len(dense) else None, title)
            items.append(("accuracy vs sparsity", name))
        if history is not None and len(history):
            hist = history.merge(runs[["run_id", "pruner", "setting"]], on=["run_id", "pruner"])
            if len(hist):
                name = f"{slug}-sparsity-epoch.png"
                plots.sparsity_epochs(hist, out / name, title)
                items.append(("sparsity vs epoch", name))
        if runs["time_vs_dense"].notna().any():
            name = f"{slug}-cost.png"
            plots.cost_vs_dense(runs, out / name, title)
            items.append(("train time and memory relative to dense SGD", name))
        figs[key] = items
    return figs


def write_leaderboard(runs: pd.DataFrame, out: str | Path, history: pd.DataFrame | None = None,
                      published: pd.DataFrame | None = None, title: str | None = None, plots: bool = True,
                      note: str = "", where: str = "results") -> Path:
    """Write README.md, leaderboard.csv, matched_sparsity.csv and (with `plots`) PNGs into `out`;
    returns the README path."""
    out = Path(out)
    df = prepare(runs, where)
    out.mkdir(parents=True, exist_ok=True)
    figures = _figures(df, history, published, out) if plots else None
    summary = summarize(df)
    write_text(out / "leaderboard.csv", summary.to_csv(index=False, float_format="%.6g"))
    matched = matched_sparsity(summary)
    write_text(out / "matched_sparsity.csv", matched.to_csv(index=False, float_format="%.6g"))
    readme = out / "README.md"
    md = render(df, published, title or f"Leaderboard: {out.resolve().name}", figures, note)
    write_text(readme, _merge_readme(readme, md))
    return readme


BEGIN = "<!-- generated by bench leaderboard: edits between these markers are overwritten -->"
END = "<!-- end of bench leaderboard -->"


def _merge_readme(path: Path, generated: str) -> str:
    """The generated block between markers; text outside them in an existing README is kept (a
    hand-written description above the table survives `bench board`)."""
    old = path.read_text() if path.is_file() else ""
    if BEGIN in old and END in old:
        before, after = old[: old.index(BEGIN)], old[old.index(END) + len(END):].lstrip("\n")
    else:
        before, after = old, ""
    before = before.rstrip("\n") + "\n\n" if before.strip() else ""
    return f"{before}{BEGIN}\n{generated}{END}\n" + (f"\n{after}" if after.strip() else "")


# ------------------------------------------------------------------------------------ CLI


def cmd_leaderboard(args: argparse.Namespace) -> int:
    runs, history = results.read(args.results)
    published = load_published(args.published) if args.published != "none" else None
    readme = write_leaderboard(runs, args.output, history, published, args.title, plots=not args.no_plots,
                               note=f"Generated by `bench leaderboard` from `{Path(args.results).name}`.",
                               where=str(args.results))
    print(f"wrote {readme}", file=sys.stderr)
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="runs table from `bench gather` (its .history.parquet is used if there)")
    p.add_argument("-o", "--output", required=True, help="folder for README.md, CSV and PNG files")
    p.add_argument("--title", help="Markdown title (default: Leaderboard: <output folder name>)")
    p.add_argument("--published", default=None,
                   help="published rows CSV (default: leaderboards/published.csv; 'none' to leave them out)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=cmd_leaderboard)
