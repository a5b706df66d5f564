"""A board's figures, one question each, as a list of specs: what a figure needs from a section,
and how it is drawn (bench.plots). A new figure is one new spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.board.prepare import SECTION, in_section
from bench.board.summary import ok_runs


@dataclass(frozen=True)
class Section:
    """What the figures of one board section draw from."""

    title: str
    runs: pd.DataFrame  # ok runs (bench.board.summary.ok_runs)
    summary: pd.DataFrame
    matched: pd.DataFrame
    history: pd.DataFrame | None
    published: pd.DataFrame | None


@dataclass(frozen=True)
class Figure:
    """`name`: file suffix; `alt`: the question it answers; `wanted`: whether the section has what it
    needs; `draw(section, path, styles)` writes the PNG (and SVG) at path."""

    name: str
    alt: str
    wanted: Callable[[Section], bool]
    draw: Callable[[Section, Path, dict], Path]


def _accuracy(s: Section, path: Path, styles: dict) -> Path:
    from bench import plots

    dense = s.summary[s.summary["pruner"] == "dense"]
    return plots.accuracy_sparsity(
        s.summary[s.summary["pruner"] != "dense"], s.matched, path, styles, s.published, dense, s.title
    )


def _sparsity_epochs(s: Section, path: Path, styles: dict) -> Path:
    from bench import plots

    hist = s.history.merge(s.runs[["run_id", "pruner", "setting"]], on=["run_id", "pruner"])
    return plots.sparsity_epochs(hist, path, styles, s.title)


def _speedup(s: Section, path: Path, styles: dict) -> Path:
    from bench import plots

    return plots.speedup_per_backend(s.runs, path, styles, s.title, s.matched)


def _cost(s: Section, path: Path, styles: dict) -> Path:
    from bench import plots

    return plots.cost_per_level(s.runs, s.matched, path, styles, s.title, s.summary)


FIGURES: tuple[Figure, ...] = (
    Figure(
        "accuracy-sparsity",
        "test top-1 against sparsity at the levels (log density axis)",
        lambda s: len(s.summary[s.summary["pruner"] != "dense"]) > 0,
        _accuracy,
    ),
    Figure(
        "sparsity-epoch",
        "how each pruner's sparsity grows over training (x: fraction of each run's training)",
        lambda s: (
            s.history is not None and len(s.history) > 0 and s.history["run_id"].isin(s.runs["run_id"]).any()
        ),
        _sparsity_epochs,
    ),
    Figure(
        "speedup",
        "measured inference speed-up per pruner and backend (median, 95% interval)",
        lambda s: s.runs["speedup_best"].notna().any(),
        _speedup,
    ),
    Figure(
        "cost",
        "training memory against own dense at each level (95% interval over seeds) and, where the board "
        "has a timing phase, step time against own dense (median and 95% interval over the timing rounds "
        "of each setting's lowest seed)",
        lambda s: bool(s.matched["on_level"].any()) and s.runs["peak_tensor_bytes"].notna().any(),
        _cost,
    ),
)


def slugs(df: pd.DataFrame) -> dict[tuple[str, ...], str]:
    keys = df[SECTION].drop_duplicates().sort_values(SECTION)
    out, seen = {}, {}
    for dataset, model, recipe, budget in keys.itertuples(index=False):
        base = f"{dataset}-{model}" + ("" if recipe == "shared" else f"-{recipe}")
        seen[base] = seen.get(base, 0) + 1
        out[(dataset, model, recipe, budget)] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return out


def draw_all(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    matched: pd.DataFrame,
    history: pd.DataFrame | None,
    published: pd.DataFrame | None,
    out: Path,
) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    """Every figure of every section into `out`; per section, (alt text, PNG name) of those drawn."""
    from bench import plots

    ok = ok_runs(df)
    names = set(df["pruner"]) | (set(published["pruner"]) if published is not None else set())
    styles = plots.pruner_styles(names)  # one colour and marker per pruner in every figure
    drawn: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for key, slug in slugs(df).items():
        runs = in_section(ok, key)
        if runs.empty:
            continue
        hist = (
            None if history is None or not len(history) else history[history["run_id"].isin(runs["run_id"])]
        )
        pub = None if published is None else in_section(published, key, budget=False)
        section = Section(
            f"{key[0]} / {key[1]} · {key[2]} recipe",
            runs,
            in_section(summary, key),
            in_section(matched, key) if len(matched) else matched,
            hist,
            pub,
        )
        drawn[key] = []
        for fig in FIGURES:
            if fig.wanted(section):
                name = f"{slug}-{fig.name}.png"
                fig.draw(section, out / name, styles)
                drawn[key].append((fig.alt, name))
    return drawn
