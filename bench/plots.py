"""Leaderboard figures (seaborn on matplotlib's Agg backend: no display needed).

Each function takes tidy tables built by `bench.board` and the styles from `pruner_styles`
(a colour, marker and line per pruner, the same in every figure), writes a PNG and an SVG beside it,
and returns the PNG's path. Error bars are 95% Student-t confidence intervals over seeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from scipy import stats

from bench import record
from bench.io import atomic_write

DPI = 110
CONFIDENCE = 0.95
matplotlib.rcParams["svg.hashsalt"] = "prunebench"  # stable ids: the same figure gives the same SVG


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
LINES = ("-", "--", "-.", ":")
DENSE_LINES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))  # one per dense model


DENSE_COLOR = (0.0, 0.0, 0.0)  # dense: black, apart from every pruner's hue


# after tab10's hues: navy, magenta, maroon, gold, mint, lime, teal, lavender (Trubetskoy's list of
# distinct colours), in an order that keeps each one far (RGB distance >= 0.25) from those before it
EXTRA_COLORS = ("#000075", "#f032e6", "#800000", "#ffe119", "#aaffc3", "#bfef45", "#469990", "#dcbeff")


def _palette(n: int) -> list[tuple[float, float, float]]:
    """`n` distinct colours: tab10's, then EXTRA_COLORS; beyond those, husl hues evenly spaced."""
    colours = [*sns.color_palette("tab10", 10), *map(to_rgb, EXTRA_COLORS)]
    return colours[:n] if n <= len(colours) else sns.color_palette("husl", n)


def pruner_styles(names: Iterable[str] = ()) -> dict[str, dict]:
    """Per pruner a colour, a marker and a line style, fixed by the registry's order (dense first,
    then every registered pruner by name), so a pruner looks the same in every figure of a board and
    across boards; `names` not registered (a plugin not loaded here, a published-only row) follow,
    sorted. Dense is black; every other pruner has a colour of its own (no two share one), and
    neighbours also differ in marker and line style."""
    from bench.registry import PRUNERS

    registered = PRUNERS.names()
    order = [n for n in registered if n != "dense"]
    order += sorted(set(names) - set(order) - {"dense"})
    hues = _palette(len(order))
    styles = {"dense": {"color": DENSE_COLOR, "marker": "o", "ls": "--"}}
    for i, name in enumerate(order):
        styles[name] = {
            "color": tuple(hues[i]),
            "marker": MARKERS[(i + 1) % len(MARKERS)],
            "ls": LINES[i % len(LINES)],
        }
    return styles


def _legend(ax: plt.Axes, styles: dict, shown: Iterable[str], extra: list | None = None) -> None:
    """One legend entry per pruner shown (colour, marker and line as drawn), outside the plot area."""
    handles = [
        Line2D([], [], color=styles[p]["color"], marker=styles[p]["marker"], ls=styles[p]["ls"], label=p)
        for p in styles
        if p in set(shown)
    ]
    ax.legend(
        handles=handles + (extra or []),
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
    )


def _save(fig: plt.Figure, path: str | Path) -> Path:
    """`path` (PNG) and the same figure as SVG beside it."""
    path = Path(path)
    fig.tight_layout()
    # no version or date stamps: the same figure gives the same bytes across matplotlib versions
    atomic_write(
        path,
        lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None}),
    )
    atomic_write(
        path.with_suffix(".svg"),
        lambda f: fig.savefig(f, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None}),
    )
    plt.close(fig)
    return path


def _halfwidth(values: pd.Series) -> float:
    """Half-width of the 95% Student-t interval of the mean of `values` (NaN for fewer than two)."""
    v = values.dropna()
    if len(v) < 2:
        return float("nan")
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


LEVEL_TICKS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)  # sparsity ticks of the accuracy axis


def accuracy_sparsity(
    settings: pd.DataFrame,
    cells: pd.DataFrame,
    path: str | Path,
    styles: dict,
    published: pd.DataFrame | None = None,
    dense: pd.DataFrame | None = None,
    title: str = "",
) -> Path:
    """Test top-1 against sparsity on a log-density axis (ticks labelled with the sparsity levels),
    so that 80-99% spread evenly: every setting's seed mean as a small marker, the cell each pruner
    holds at each level circled and joined (its error bar: 95% interval over seeds), published rows
    as crosses, the dense models as dashed lines with their interval band. The y range is set from
    the points near dense; lower points sit on the bottom edge, marked by a downward triangle."""
    fig, ax = plt.subplots(figsize=(8, 4.8))

    def x(sparsity: pd.Series | float) -> pd.Series | float:
        return 100 * (1 - np.asarray(sparsity, float))

    tops = [settings["top1_mean"].max(), *([] if dense is None or dense.empty else dense["top1_mean"])]
    top = 100 * np.nanmax(tops)
    near = settings[settings["sparsity_mean"] >= 0.75]["top1_mean"].dropna()
    floor = 100 * (near.quantile(0.3) if len(near) else settings["top1_mean"].min())
    low = max(0.0, min(floor, top - 1.0) - 0.5, top - 8.0)  # the claims live within a few points of dense
    high = min(100.0, top + 0.5)
    for pruner, p in settings.groupby("pruner", sort=True):
        st = styles[pruner]
        y = 100 * p["top1_mean"]
        out = y < low
        ax.scatter(
            x(p.loc[~out, "sparsity_mean"]), y[~out], color=st["color"], marker=st["marker"], s=14, alpha=0.45
        )
        if out.any():
            ax.scatter(
                x(p.loc[out, "sparsity_mean"]),
                [low] * int(out.sum()),
                color=st["color"],
                marker="v",
                s=30,
                clip_on=False,
            )
    on = cells[cells["on_level"]] if len(cells) else cells
    for pruner, c in on.groupby("pruner", sort=True):
        st, c = styles[pruner], c.sort_values("sparsity_mean")
        y = 100 * c["top1_mean"]
        err = np.vstack([(y - 100 * c["top1_low"]).clip(lower=0), (100 * c["top1_high"] - y).clip(lower=0)])
        ax.errorbar(  # a cell below the axis leaves its line pointing down, and a triangle on the edge
            x(c["sparsity_mean"]),
            y,
            yerr=err,
            color=st["color"],
            marker=st["marker"],
            ls=st["ls"],
            ms=6,
            lw=1.3,
            capsize=2,
        )
    shown = set(settings["pruner"])
    extra = [
        Line2D([], [], color="black", marker="o", ms=3, ls="", alpha=0.45, label="a setting (seed mean)"),
        Line2D([], [], color="black", marker="o", ls="-", label="cell at a level ± 95% CI"),
        Line2D([], [], color="black", marker="v", ls="", label="below the axis"),
    ]
    if published is not None and len(published):
        pub = published[published["pruner"] != "dense"]
        if len(pub):
            ax.scatter(
                x(pub["sparsity"]),
                (100 * pub["top1"]).clip(low, high),
                c=[styles[p]["color"] for p in pub["pruner"]],
                marker="x",
                s=40,
            )
            shown |= set(pub["pruner"])
            extra.append(Line2D([], [], color="black", marker="x", ls="", label="published"))
    if dense is not None:  # one line per dense model (optimizer family), each its own style and label
        colour = styles["dense"]["color"]
        for ls, (_, d) in zip(DENSE_LINES, dense.sort_values("setting").iterrows(), strict=False):
            mean, half = d["top1_mean"], d["top1_ci"]
            ax.axhline(100 * mean, color=colour, ls=ls, lw=1)
            if not np.isnan(half):
                low_, high_ = 100 * max(mean - half, 0), 100 * min(mean + half, 1)
                ax.axhspan(low_, high_, color=colour, alpha=0.08, lw=0)
            family = d.get("optimizer_family")
            name = f"dense, {family}" if isinstance(family, str) else f"dense, {d['setting']}"
            extra.append(Line2D([], [], color=colour, ls=ls, label=f"{name} ± 95% CI"))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ticks = [t for t in LEVEL_TICKS if settings["sparsity_mean"].max() >= t - 0.3]
    ax.set_xticks([x(t) for t in ticks], [f"{100 * t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(low, high)
    ax.set(
        xlabel="sparsity (log density axis: each step keeps a fraction of the weights)",
        ylabel="test top-1 (%)",
        title=title,
    )
    ax.grid(axis="x", color="0.9")
    _legend(ax, styles, shown, extra)
    return _save(fig, path)


def sparsity_epochs(history: pd.DataFrame, path: str | Path, styles: dict, title: str = "") -> Path:
    """Sparsity against the fraction of training done, one line per setting (mean over seeds), in
    each pruner's colour and line style. The fraction is of each run's own epochs, so IMP, whose
    rounds each train a full budget, shares the axis with the one-budget methods. `history` holds
    `run_id`, `pruner`, `setting`, `epoch`, `sparsity` (fraction)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    h = history.assign(done=history["epoch"] + 1)
    h["done"] = h["done"] / h.groupby("run_id")["done"].transform("max")
    mean = h.groupby(["pruner", "setting", "done"], as_index=False)["sparsity"].mean()
    for (pruner, _), line in mean.groupby(["pruner", "setting"], sort=True):
        st = styles[pruner]
        ax.plot(
            100 * line["done"],
            100 * line["sparsity"],
            color=st["color"],
            ls=st["ls"],
            lw=1.2,
            marker=st["marker"],
            markevery=max(1, len(line) // 4),
            ms=4,
        )
    _legend(
        ax,
        styles,
        set(mean["pruner"]),
        [Line2D([], [], color="none", label="a line per setting, mean over seeds")],
    )
    ax.set(
        xlabel="training done (% of each run's epochs; IMP: all its rounds)",
        ylabel="sparsity (% zero weights)",
        title=title,
    )
    ax.set_xlim(0, 100)
    return _save(fig, path)


def _median_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Median and its distribution-free interval (order statistics of the binomial): no normal
    assumption, and no upward bias from taking a maximum."""
    v = np.sort(values[~np.isnan(values)])
    n = len(v)
    if n == 0:
        return np.nan, np.nan, np.nan
    lo_k, hi_k = stats.binom.ppf([(1 - confidence) / 2, (1 + confidence) / 2], n, 0.5).astype(int)
    return float(np.median(v)), float(v[max(lo_k - 1, 0)]), float(v[min(hi_k, n - 1)])


SPEEDUP_BACKENDS = tuple(b for b in record.SPEEDUP_BACKENDS if b != "dense")  # each measured against dense


def speedup_per_backend(
    runs: pd.DataFrame, path: str | Path, styles: dict, title: str = "", cells: pd.DataFrame | None = None
) -> Path:
    """Measured inference speed-up over dense per row and backend (markers): the median over the
    row's runs (its seeds) with a 95% distribution-free interval; a dashed line at 1x. Rows: each
    on-level cell of `cells` (level and pruner: the setting the board reports there), or without
    `cells` each pruner over all its runs. `runs`: one row per run with `speedup_<b>`."""
    from matplotlib.ticker import FuncFormatter

    backends = [b for b in SPEEDUP_BACKENDS if f"speedup_{b}" in runs and runs[f"speedup_{b}"].notna().any()]
    if cells is not None and len(cells) and cells["on_level"].any():
        on = cells[cells["on_level"]].sort_values(["target", "pruner"])
        rows = [
            (
                f"{100 * c.target:g}% {c.pruner}",
                c.pruner,
                runs[(runs["pruner"] == c.pruner) & (runs["setting"] == c.setting)],
            )
            for c in on.itertuples()
        ]
    else:
        rows = [
            (p, p, runs[runs["pruner"] == p]) for p in styles if p in set(runs["pruner"]) and p != "dense"
        ]
    fig, ax = plt.subplots(figsize=(8, 0.3 * max(len(rows), 4) + 1.2))
    shapes = dict(zip(backends, MARKERS, strict=False))
    for i, (_, pruner, r) in enumerate(rows):
        for j, b in enumerate(backends):
            med, lo, hi = _median_interval(r[f"speedup_{b}"].to_numpy(float))
            if np.isnan(med):
                continue
            y = i + (j - (len(backends) - 1) / 2) * 0.18
            ax.errorbar(
                [med],
                [y],
                xerr=[[med - lo], [hi - med]],
                color=styles[pruner]["color"],
                marker=shapes[b],
                ms=5,
                capsize=2,
                lw=1,
            )
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="inference speed-up over dense (median over runs, 95% interval)", title=title)
    ax.legend(
        handles=[
            Line2D([], [], color="black", marker=shapes[b], ls="", label=b.replace("2to4", "2:4"))
            for b in backends
        ],
        title="backend",
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
    )
    return _save(fig, path)


def cost_per_level(
    runs: pd.DataFrame,
    cells: pd.DataFrame,
    path: str | Path,
    styles: dict,
    title: str = "",
    summary: pd.DataFrame | None = None,
) -> Path:
    """At each level, each on-level cell's training peak memory against its own dense (per seed),
    mean with a 95% Student-t interval over seeds; and, where `summary` holds the timing phase's
    `time_vs_dense` with `_low`/`_high`, its step time against its own dense: the median over the
    timing rounds of the setting's lowest seed, with the 95% interval over those rounds. The
    accuracy runs' wall times are never drawn. 1 dashed."""
    timed = None
    if summary is not None and "time_vs_dense_low" in summary and summary["time_vs_dense_low"].notna().any():
        timed = summary.set_index(["pruner", "setting"])[
            ["time_vs_dense", "time_vs_dense_low", "time_vs_dense_high"]
        ]
    dense = runs[runs["pruner"] == "dense"].groupby(["optimizer_family", "seed"], dropna=False)[
        "peak_tensor_bytes"
    ].mean()
    panels = {"peak_tensor_bytes": "training peak vs own dense (95% interval over seeds)"}
    if timed is not None:
        panels["time"] = "step time vs own dense (timing phase: 95% interval over rounds)"
    on = cells[cells["on_level"]]
    levels = sorted(on["target"].unique())
    size = (5.5 * len(panels), 0.3 * max(len(on), 6) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=size, sharey=True, squeeze=False)
    labels = [f"{100 * t:g}% {p}" for t in levels for p in sorted(on.loc[on["target"] == t, "pruner"])]
    for ax, (col, label) in zip(axes[0], panels.items(), strict=True):
        for i, text in enumerate(labels):
            level, pruner = text.split(" ", 1)
            c = on[(on["pruner"] == pruner) & np.isclose(100 * on["target"], float(level[:-1]))].iloc[0]
            look = dict(color=styles[pruner]["color"], marker=styles[pruner]["marker"], capsize=2, ms=5)
            if col == "time":
                if (pruner, c["setting"]) in timed.index:
                    mid, lo, hi = timed.loc[(pruner, c["setting"])]
                    if not np.isnan(mid):
                        ax.errorbar([mid], [i], xerr=[[mid - lo], [hi - mid]], **look)
                continue
            r = runs[(runs["pruner"] == pruner) & (runs["setting"] == c["setting"])]
            ref = dense.reindex(pd.MultiIndex.from_arrays([r["optimizer_family"], r["seed"]])).to_numpy(float)
            ratio = r[col].to_numpy(float) / ref
            ratio = ratio[~np.isnan(ratio)]
            if len(ratio):
                half = _halfwidth(pd.Series(ratio))
                ax.errorbar([ratio.mean()], [i], xerr=None if np.isnan(half) else [[half]], **look)
        ax.axvline(1.0, color="grey", ls="--", lw=1)
        ax.set(xlabel=label)
    axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][0].set_title(title, loc="left")  # an axes title: tight_layout leaves it room
    return _save(fig, path)
