"""Matched-sparsity cells are runs: at each level, per pruner, one of its settings as measured.

A cell reports the setting whose mean measured sparsity landed within TOLERANCE of the level,
chosen on validation top-1 (ties broken by the higher sparsity, never by test top-1), at its
measured sparsity. A pruner with no setting within the tolerance shows, at the level its nearest
setting is closest to, that setting with its own sparsity, marked off-level (`on_level` False):
it takes no part in the significance tests of that level. Nothing is interpolated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.board.prepare import SECTION
from bench.stats import clip_interval

TARGETS = (0.80, 0.90, 0.95, 0.98, 0.99)  # matched-sparsity levels (fractions of zero weights)
TOLERANCE = 0.005  # how far (absolute fraction) a setting's mean sparsity may be from its level
COLUMNS = [
    *SECTION,
    "target",
    "pruner",
    "setting",
    "settings",
    "on_level",
    "seeds",
    "sparsity_mean",
    "top1_mean",
    "top1_low",
    "top1_high",
    "select_mean",
    "validated",
    "optimizer_family",
]


def pick(
    settings: pd.DataFrame, target: float, targets: tuple[float, ...] = TARGETS, tolerance: float = TOLERANCE
) -> tuple[pd.Series, bool] | None:
    """The summary row of one pruner's `settings` that stands for it at `target`, and whether it
    is on the level (within `tolerance`); None when it has nothing there (no setting within the
    tolerance, and none whose nearest level is `target`)."""
    s = settings.dropna(subset=["sparsity_mean", "select_top1_mean"])
    if s.empty:
        return None
    near = s[(s["sparsity_mean"] - target).abs() <= tolerance + 1e-12]
    if len(near):  # best validation, then the sparser, then a stable order
        best = near.sort_values(
            ["select_top1_mean", "sparsity_mean", "setting"], ascending=[False, False, True], kind="stable"
        )
        return best.iloc[0], True
    levels = np.asarray(targets, float)
    nearest_level = levels[np.abs(s["sparsity_mean"].to_numpy()[:, None] - levels).argmin(axis=1)]
    mine = s[nearest_level == target].assign(_gap=lambda x: (x["sparsity_mean"] - target).abs())
    if mine.empty:
        return None
    best = mine.sort_values(
        ["_gap", "select_top1_mean", "setting"], ascending=[True, False, True], kind="stable"
    )
    return best.iloc[0].drop("_gap"), False


def matched_cells(
    summary: pd.DataFrame, targets: tuple[float, ...] = TARGETS, tolerance: float = TOLERANCE
) -> pd.DataFrame:
    """Per (section, target, pruner other than dense): the setting picked (see `pick`), its seeds,
    measured sparsity, test top-1 mean with its 95% interval over seeds clipped to [0, 1], and the
    validation mean it was chosen on. Columns: COLUMNS."""
    rows = []
    pts = summary[summary["pruner"] != "dense"]
    for key, settings in pts.groupby([*SECTION, "pruner"], sort=False):
        for t in targets:
            got = pick(settings, t, targets, tolerance)
            if got is None:
                continue
            r, on_level = got
            low, high = clip_interval(r["top1_mean"], np.nan_to_num(r["top1_ci"]))
            rows.append(
                (
                    *key[:-1],
                    t,
                    key[-1],
                    r["setting"],
                    len(settings),
                    on_level,
                    int(r["seeds"]),
                    r["sparsity_mean"],
                    r["top1_mean"],
                    float(low),
                    float(high),
                    r["select_top1_mean"],
                    bool(r["validated"]),
                    r["optimizer_family"],
                )
            )
    return pd.DataFrame(rows, columns=COLUMNS)
