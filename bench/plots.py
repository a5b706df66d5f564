"""Leaderboard figures (seaborn on matplotlib's Agg backend: no display needed).

Each function takes tidy tables built by `bench.leaderboard`, writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are files, never windows

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from bench.io import atomic_write

DPI = 110


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    # no version stamp in the PNG: the same figure gives the same bytes across matplotlib versions
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight",
                                             metadata={"Software": None}))
    plt.close(fig)
    return path


def accuracy_sparsity(
    points: pd.DataFrame, fronts: pd.DataFrame, path: str | Path,
    published: pd.DataFrame | None = None, dense_top1: float | None = None, title: str = "",
) -> Path:
    """Per-setting seed means (dots) and each pruner's Pareto front (circled, joined; dotted where
    it holds flat below its least sparse point); published rows as crosses; dense SGD as a dashed
    line. Tables hold `pruner`, `sparsity`, `top1` as fractions."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    order = sorted(set(points["pruner"]) | set(published["pruner"] if published is not None else []))
    palette = dict(zip(order, sns.color_palette("tab10", len(order)), strict=True))
    pct = lambda df: df.assign(sparsity=100 * df["sparsity"], top1=100 * df["top1"])  # noqa: E731
    sns.scatterplot(data=pct(points), x="sparsity", y="top1", hue="pruner", palette=palette, s=40, alpha=0.6,
                    legend=False, ax=ax)
    lowest = pct(points).groupby("pruner")["sparsity"].min()
    for pruner, front in pct(fronts).groupby("pruner"):
        ax.plot(front["sparsity"], front["top1"], color=palette[pruner], lw=1.5, marker="o", ms=9,
                mfc="none")
        # the front holds flat down to the least sparse run (what matched sparsity reads off)
        first = front.iloc[0]
        ax.plot([lowest[pruner], first["sparsity"]], [first["top1"]] * 2, color=palette[pruner], lw=1, ls=":")
    handles = [Line2D([], [], color=palette[p], marker="o", ls="", label=p) for p in order]
    if published is not None and len(published):
        pub = pct(published)
        ax.scatter(pub["sparsity"], pub["top1"], c=[palette[p] for p in pub["pruner"]], marker="x", s=50)
        handles.append(Line2D([], [], color="black", marker="x", ls="", label="published"))
    if dense_top1 is not None:
        ax.axhline(100 * dense_top1, color="grey", ls="--", lw=1)
        handles.append(Line2D([], [], color="grey", ls="--", label="dense SGD (this budget)"))
    ax.set(xlabel="sparsity (% zero weights)", ylabel="top-1 (%)", title=title)
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    return _save(fig, path)


def sparsity_epochs(history: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Sparsity against epoch, one line per setting (mean over seeds), coloured by pruner.
    `history` holds `pruner`, `setting`, `epoch`, `sparsity` (fraction)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    mean = (history.groupby(["pruner", "setting", "epoch"], as_index=False)["sparsity"].mean()
            .assign(sparsity=lambda d: 100 * d["sparsity"]))
    mean["line"] = mean["pruner"] + " " + mean["setting"]
    sns.lineplot(data=mean, x="epoch", y="sparsity", hue="pruner", units="line", estimator=None,
                 hue_order=sorted(mean["pruner"].unique()), lw=1.2, ax=ax)
    ax.set(xlabel="epoch", ylabel="sparsity (% zero weights)", title=title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def cost_vs_dense(runs: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Per pruner: train time, peak memory and state bytes of each run relative to the mean of
    the dense runs (bars: mean, whiskers: sd). `runs` holds `pruner` and the three `*_vs_dense`."""
    measures = {"time_vs_dense": "train time", "memory_vs_dense": "peak memory",
                "state_vs_dense": "state bytes"}
    long = runs.melt(id_vars="pruner", value_vars=list(measures), var_name="measure", value_name="ratio")
    long["measure"] = long["measure"].map(measures)
    g = sns.catplot(data=long, kind="bar", x="pruner", y="ratio", col="measure", errorbar="sd",
                    order=sorted(long["pruner"].unique()), col_order=list(measures.values()),
                    height=3.2, aspect=1.1, sharey=False, color="tab:blue")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.tick_params(axis="x", rotation=45)
    g.set_axis_labels("", "relative to dense SGD")
    g.set_titles("{col_name}")
    if title:
        g.figure.suptitle(title)
    return _save(g.figure, path)
