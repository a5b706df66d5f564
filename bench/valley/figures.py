"""The valley's figures: one pair's path, and a board's loss along the path for every pruner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.errors import ConfigError

if TYPE_CHECKING:
    from bench.valley.analysis import Valley


def _figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files, never windows
    matplotlib.rcParams["svg.hashsalt"] = "prunebench"  # stable ids: the same figure gives the same SVG
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _save(fig: Any, path: str | Path) -> Path:
    """`path` (PNG) and an SVG beside it, each written atomically."""
    import matplotlib.pyplot as plt

    from bench.io import atomic_write

    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, metadata={"Software": None}))
    atomic_write(path.with_suffix(".svg"),
                 lambda f: fig.savefig(f, format="svg", metadata={"Date": None, "Creator": None}))
    plt.close(fig)
    return path


def plot_path(result: Valley, path: str | Path) -> Path:
    """Training loss and validation/test top-1 along the path (and the curve): PNG + SVG."""
    fig, (ax_loss, ax_acc) = _figure(1, 2, figsize=(10, 3.8))
    paths = [("straight", result.line, "-")]
    if result.curve is not None:
        paths.append(("Bezier", result.curve, "--"))
    for name, df, style in paths:
        ax_loss.plot(df["t"], df["loss"], style, marker=".", color="C0", label=name)
        ax_acc.plot(df["t"], df["val_top1"], style, marker=".", color="C1", label=f"{name}: validation")
        ax_acc.plot(df["t"], df["test_top1"], style, marker=".", color="C2", label=f"{name}: test")
    title = f"barrier {result.barrier:.3g}" + (
        f" (Bezier curve: {result.curve_barrier:.3g})" if result.curve is not None else "")
    ax_loss.set(xlabel="t (0: A, 1: B)", ylabel="training loss", title=title)
    ax_acc.set(xlabel="t (0: A, 1: B)", ylabel="top-1")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"A: {result.a}\nB: {result.b}", fontsize=9)
    return _save(fig, path)


def plot_board_paths(table: pd.DataFrame, paths: pd.DataFrame, level: float, path: str | Path,
                     title: str = "") -> Path:
    """Training loss along the straight path to the dense run, one line per pruner measured at
    `level` (its setting there; mean over seeds), from a board's valley table and paths: PNG + SVG."""
    import numpy as np

    from bench.plots import pruner_styles

    rows = table[np.isclose(table["level"], level) & table["barrier_mean"].notna()]
    if rows.empty:
        raise ConfigError(f"no measured paths at {100 * level:g}% sparsity to plot")
    styles = pruner_styles(rows["pruner"].unique())
    fig, ax = _figure(figsize=(6.5, 4))
    for r in rows.sort_values("pruner").itertuples(index=False):
        mine = paths[np.isclose(paths["level"], level) & (paths["pruner"] == r.pruner)
                     & (paths["setting"] == r.setting)]
        mean = mine.groupby("t")["loss"].mean()
        st = styles[r.pruner]
        ax.plot(mean.index, mean.values, color=st["color"], marker=st["marker"], ls=st["ls"],
                label=f"{r.pruner} ({100 * r.sparsity:.1f}% sparse)")
    ax.set(xlabel="t (0: pruned run, 1: dense run of its seed)", ylabel="training loss",
           title=f"{title}{': ' if title else ''}straight path to the dense model, {100 * level:g}% sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
