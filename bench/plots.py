"""Leaderboard figures (seaborn on matplotlib's Agg backend: no display needed).

Each function takes tidy tables built by `bench.leaderboard` and a palette from `pruner_palette`
(one colour per pruner, the same in every figure of a board), writes a PNG and an SVG beside it,
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
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from scipy import stats

from bench import record
from bench.io import atomic_write

DPI = 110
CONFIDENCE = 0.95
matplotlib.rcParams["svg.hashsalt"] = "prunebench"  # stable ids: the same figure gives the same SVG


def pruner_palette(names: Iterable[str] = ()) -> dict[str, tuple[float, float, float]]:
    """One colour per pruner, fixed by the registry's order (dense first, then every registered
    pruner by name), so a pruner keeps its colour across the figures of a board and across boards;
    `names` not registered (a plugin not loaded here, a published-only row) follow, sorted."""
    from bench.registry import PRUNERS

    registered = PRUNERS.names()
    order = ["dense", *(n for n in registered if n != "dense")]
    order += sorted(set(names) - set(order))
    # tab20's ten saturated hues first, then their light partners: neighbours never share a hue
    tab20 = sns.color_palette("tab20", 20)
    hues = tab20[0::2] + tab20[1::2]
    colours = [hues[i % len(hues)] for i in range(len(order))]
    return dict(zip(order, colours, strict=True))


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


def accuracy_sparsity(
    points: pd.DataFrame,
    fronts: pd.DataFrame,
    path: str | Path,
    palette: dict,
    published: pd.DataFrame | None = None,
    dense: tuple[float, float] | None = None,
    title: str = "",
    log_density: bool = False,
) -> Path:
    """Test top-1 against sparsity: per-setting seed means with 95% CI bars (`top1_ci`), each pruner's
    validation Pareto front (circled, joined; dotted where it holds flat below its least sparse point),
    published rows as crosses and published dense rows as dash-dotted horizontal lines, dense SGD of
    this budget as a dashed line with its CI band. `log_density`: the x axis is the density (% of
    weights kept) on a log scale, sparser to the right, which spreads out the 95-99% range (the
    compression ratio is 100 / density). Tables hold `pruner`, `sparsity`, `top1` as fractions."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))

    def x(sparsity: pd.Series | float) -> pd.Series | float:
        return 100 * (1 - sparsity) if log_density else 100 * sparsity

    ci = points["top1_ci"] if "top1_ci" in points.columns else pd.Series(np.nan, index=points.index)
    for pruner, p in points.groupby("pruner", sort=True):
        ax.errorbar(
            x(p["sparsity"]),
            100 * p["top1"],
            yerr=100 * ci[p.index].fillna(0),
            fmt="o",
            ms=5,
            color=palette[pruner],
            alpha=0.7,
            capsize=2,
            lw=1,
        )
    lowest = points.groupby("pruner")["sparsity"].min()
    for pruner, front in fronts.groupby("pruner", sort=True):
        ax.plot(
            x(front["sparsity"]),
            100 * front["top1"],
            color=palette[pruner],
            lw=1.5,
            marker="o",
            ms=10,
            mfc="none",
        )
        # the front holds flat down to the least sparse run (what matched sparsity reads off)
        first = front.iloc[0]
        ax.plot(
            [x(lowest[pruner]), x(first["sparsity"])],
            [100 * first["top1"]] * 2,
            color=palette[pruner],
            lw=1,
            ls=":",
        )
    shown = set(points["pruner"])
    styles = [
        Line2D([], [], color="black", marker="o", ls="", label="setting: mean ± 95% CI over seeds"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            ms=10,
            mfc="none",
            lw=1.5,
            label="Pareto front (selected on validation)",
        ),
        Line2D([], [], color="black", ls=":", lw=1, label="front held flat below its least sparse point"),
    ]
    if published is not None and len(published):
        pub_dense = published[published["pruner"] == "dense"]
        pub = published[published["pruner"] != "dense"]
        if len(pub):
            ax.scatter(
                x(pub["sparsity"]), 100 * pub["top1"], c=[palette[p] for p in pub["pruner"]], marker="x", s=50
            )
            shown |= set(pub["pruner"])
            styles.append(Line2D([], [], color="black", marker="x", ls="", label="published"))
        for _, row in pub_dense.iterrows():
            ax.axhline(100 * row["top1"], color=palette["dense"], ls="-.", lw=1)
        if len(pub_dense):
            styles.append(Line2D([], [], color=palette["dense"], ls="-.", lw=1, label="published dense"))
    if dense is not None:
        mean, half = dense
        ax.axhline(100 * mean, color=palette["dense"], ls="--", lw=1)
        if not np.isnan(half):
            ax.axhspan(100 * (mean - half), 100 * (mean + half), color=palette["dense"], alpha=0.15, lw=0)
        styles.append(
            Line2D([], [], color=palette["dense"], ls="--", label="dense SGD, this budget (± 95% CI)")
        )
        shown.add("dense")
    if log_density:
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density (% of weights kept, log scale; compression = 100 / density)")
    else:
        ax.set_xlabel("sparsity (% zero weights)")
    ax.set(ylabel="test top-1 (%)", title=title)
    colours = [Patch(color=palette[p], label=p) for p in palette if p in shown]
    ax.legend(handles=colours + styles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def sparsity_epochs(history: pd.DataFrame, path: str | Path, palette: dict, title: str = "") -> Path:
    """Sparsity against epoch, one line per setting (mean over seeds), coloured by pruner.
    `history` holds `pruner`, `setting`, `epoch`, `sparsity` (fraction)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mean = (
        history.groupby(["pruner", "setting", "epoch"], as_index=False)["sparsity"]
        .mean()
        .assign(sparsity=lambda d: 100 * d["sparsity"])
    )
    mean["line"] = mean["pruner"] + " " + mean["setting"]
    order = [p for p in palette if p in set(mean["pruner"])]
    sns.lineplot(
        data=mean,
        x="epoch",
        y="sparsity",
        hue="pruner",
        units="line",
        estimator=None,
        hue_order=order,
        palette={p: palette[p] for p in order},
        lw=1.2,
        ax=ax,
        legend=False,
    )
    ax.legend(
        handles=[
            Line2D([], [], color=palette[p], label=f"{p} (a line per setting, mean over seeds)")
            for p in order
        ],
        fontsize=8,
        loc="lower right",
    )
    ax.set(xlabel="epoch", ylabel="sparsity (% zero weights)", title=title)
    return _save(fig, path)


def cost_vs_dense(runs: pd.DataFrame, path: str | Path, palette: dict, title: str = "") -> Path:
    """Per pruner: train time, training peak memory and state bytes of each run relative to the mean
    of the dense runs (bars: mean; whiskers: 95% Student-t CI over runs). `runs` holds `pruner` and
    the three `*_vs_dense`."""
    measures = {
        "time_vs_dense": "train time",
        "memory_vs_dense": "training peak memory",
        "state_vs_dense": "state bytes",
    }
    order = [p for p in palette if p in set(runs["pruner"])]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.6 * len(measures), 3.6))
    for ax, (col, label) in zip(axes, measures.items(), strict=True):
        g = runs.groupby("pruner")[col]
        means = g.mean().reindex(order)
        halves = g.apply(_halfwidth).reindex(order)
        ax.bar(range(len(order)), means, yerr=halves.fillna(0), capsize=3, color=[palette[p] for p in order])
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
        ax.set(title=label, ylabel="relative to dense SGD" if ax is axes[0] else "")
    fig.legend(
        handles=[
            Line2D([], [], color="black", marker="|", ls="", ms=10, label="95% CI over runs"),
            Line2D([], [], color="grey", ls="--", label="dense SGD = 1"),
        ],
        fontsize=8,
        loc="upper right",
    )
    if title:
        fig.suptitle(title)
    return _save(fig, path)


SPEEDUP_BACKENDS = tuple(b for b in record.SPEEDUP_BACKENDS if b != "dense")  # each measured against dense


def speedup_vs_theoretical(runs: pd.DataFrame, path: str | Path, palette: dict, title: str = "") -> Path:
    """Measured inference speed-up (dots) against the theoretical one (dense MACs / remaining MACs,
    crosses) over sparsity: one panel per backend that was measured, and one for the best backend
    per run; log scale, 1x dashed. `runs`: one row per run with the `speedup_*` fields."""
    from matplotlib.ticker import FuncFormatter

    cols = [b for b in SPEEDUP_BACKENDS if f"speedup_{b}" in runs and runs[f"speedup_{b}"].notna().any()]
    panels = [*cols, "best"]
    d = runs.assign(sparsity_pct=100 * runs["sparsity"])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True, squeeze=False,
                             dpi=DPI)
    for ax, panel in zip(axes[0], panels, strict=True):
        col = "speedup_best" if panel == "best" else f"speedup_{panel}"
        sns.scatterplot(data=d, x="sparsity_pct", y="speedup_theoretical", hue="pruner", palette=palette,
                        marker="X", s=40, alpha=0.5, legend=False, ax=ax)
        sns.scatterplot(data=d.dropna(subset=[col]), x="sparsity_pct", y=col, hue="pruner", palette=palette,
                        s=40, legend=panel == "best", ax=ax)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("inference speed-up over dense (x)")
        ax.set_title("best backend" if panel == "best" else f"{panel.replace('2to4', '2:4')} backend")
    axes[0][-1].legend(title="pruner (dot: measured, x: theoretical)", fontsize=7, title_fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.02, 1))
    if title:
        fig.suptitle(title)
    return _save(fig, path)
