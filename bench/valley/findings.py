"""The README's valley findings: for every built board, each pruner's barrier and the share of its
distance to its dense model in the dense model's top Hessian directions (over the same share for
random directions), at a few levels, read from the boards' valley.csv."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from bench.markdown import table
from bench.valley.board import TABLE_FILE

FINDING_LEVELS = (0.90, 0.98)
NOT_A_PAIR = "°"  # the pruner's runs are not a fixed-batch pair with their dense run (IMP's rounds)


def barrier_text(mean: float, ci: float) -> str:
    """A barrier with its 95% interval over seeds, clipped at 0 (a barrier is never negative)."""
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(ci):
        return f"{mean:.3g}"
    return f"{mean:.3g} [{max(mean - ci, 0.0):.3g}, {mean + ci:.3g}]"


def ratio_text(fraction: float, random_fraction: float) -> str:
    ok = np.isfinite(fraction) and np.isfinite(random_fraction) and random_fraction > 0
    return f"{fraction / random_fraction:.1f}x" if ok else "n/a"


def findings_table(
    boards: Iterable[str | Path], levels: tuple[float, ...] = FINDING_LEVELS, relative_to: str | Path = "."
) -> str:
    """One table per board with a valley.csv: a row per pruner (sorted by its barrier at the first
    level; pruners the comparison does not apply to last), the barrier and the top-k fraction over
    random's at each level."""
    parts = []
    for board in map(Path, boards):
        path = board / TABLE_FILE
        if not path.is_file():
            continue
        v = pd.read_csv(path, dtype={"note": str, "setting": str})
        link = board.resolve().relative_to(Path(relative_to).resolve()).as_posix()
        for (dataset, model, recipe), sec in v.groupby(["dataset", "model", "recipe"], sort=True):
            first = sec[np.isclose(sec["level"], levels[0])].set_index("pruner")["barrier_mean"]
            order = sorted(sec["pruner"].unique(), key=lambda p: (not np.isfinite(first.get(p, np.nan)),
                                                                  first.get(p, np.inf), p))
            rows, marked = [], False
            for pruner in order:
                cells = []
                for level in levels:
                    r = sec[(sec["pruner"] == pruner) & np.isclose(sec["level"], level)]
                    if r.empty:
                        cells += ["-", "-"]
                        continue
                    r = r.iloc[0]
                    cells += [barrier_text(r["barrier_mean"], r["barrier_ci"]),
                              ratio_text(r["fraction_mean"], r["random_fraction"])]
                note = " ".join(sec.loc[sec["pruner"] == pruner, "note"].dropna().astype(str))
                pair = "not a fixed-batch pair" in note
                marked |= pair
                rows.append([pruner + (f" {NOT_A_PAIR}" if pair else ""), *cells])
            seeds = int(sec["seeds"].max())
            header = ["pruner"]
            for level in levels:
                header += [f"barrier at {100 * level:g}%", f"top-k fraction / random, {100 * level:g}%"]
            parts.append(f"[`{board.name}`]({link}/) ({dataset}, {model}, {recipe} track, {seeds} seeds):\n\n"
                         + table(rows, header)
                         + (f"\n\n{NOT_A_PAIR} not a fixed-batch pair (it rewinds and retrains): read its "
                            "numbers as a distance, not as the paper's test.\n" if marked else ""))
    return "\n".join(parts)
