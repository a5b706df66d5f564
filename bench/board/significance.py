"""Which differences at a matched-sparsity level are real: each pruner against the level's leader.

At each level of a section the on-level cells are ranked by validation top-1 (ties: the sparser,
then by name); the first is the leader. Each other pruner is compared with the leader by a paired
test of test top-1 over the seeds both completed: the two-level bootstrap over seeds and test
examples (bench.stats.paired_bootstrap) where every run involved stored its per-example
predictions, else the paired t-test over seeds alone (bench.stats.paired_t). The p-values of a
level are Holm-adjusted together. The leader is "best" only when it beats every other pruner
after correction; otherwise it and every pruner not significantly different from it are "tied",
whatever their variance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bench.board.prepare import SECTION, SETTING
from bench.stats import holm, paired_bootstrap, paired_t

ALPHA = 0.05  # family-wise level of each level's tests (Holm)
REPLICATES = 4000  # bootstrap resamples per test
BOOTSTRAP, SEEDS_ONLY = "seeds × examples bootstrap", "seeds-only t-test"
COLUMNS = [
    "rank",
    "diff_vs_leader",
    "diff_low",
    "diff_high",
    "p_vs_leader",
    "p_holm",
    "pairs",
    "method",
    "mark",
]


def method_note(alpha: float = ALPHA, replicates: int = REPLICATES) -> str:
    """The method, in the words a board's header uses."""
    return (
        "At each level the pruners on the level are ranked by validation top-1; the first is the leader. "
        "Each other pruner is compared with it on test top-1, paired by seed (runs sharing a seed share "
        "initialisation and data order): a two-level bootstrap that resamples seeds, then test examples of "
        f"the paired per-example correctness ({replicates} resamples; the test set is one sample shared by "
        "every seed), or, where runs stored no per-example predictions, a paired t-test over seeds only. "
        f"The p-values of a level are Holm-adjusted together (family-wise level {alpha:g}). **Bold**: the "
        "leader beats every other pruner after correction. *(tied)*: no significant best; the leader and "
        "every pruner not significantly different from it, whatever their variance."
    )


def paired(
    a: pd.DataFrame,
    b: pd.DataFrame,
    predictions: Mapping[str, np.ndarray] | None,
    replicates: int = REPLICATES,
) -> tuple[float, float, float, float, int, str]:
    """(mean A - B, interval low, high, p, pairs, method) of test top-1 over the seeds both have;
    `a`, `b`: run_id and top1 by seed; `predictions`: run_id -> per-example correctness (bool)."""
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return np.nan, np.nan, np.nan, np.nan, 0, ""
    ids = [(a.at[s, "run_id"], b.at[s, "run_id"]) for s in seeds]
    if predictions is not None and all(i in predictions for pair in ids for i in pair):
        rows = [
            predictions[x].astype(float) - predictions[y].astype(float)
            for x, y in ids
            if len(predictions[x]) == len(predictions[y])
        ]
        if len(rows) == len(ids) and len({len(r) for r in rows}) == 1:
            t = paired_bootstrap(np.stack(rows), replicates)
            return t.mean, t.low, t.high, t.p, len(seeds), BOOTSTRAP
    d = paired_t((a.loc[seeds, "top1"] - b.loc[seeds, "top1"]).to_numpy())
    return d.mean, d.low, d.high, d.p, len(seeds), SEEDS_ONLY


def decide(diff: np.ndarray, p_holm: np.ndarray, alpha: float = ALPHA) -> list[str]:
    """Marks for a level's on-level cells, leader first: "best" when every other pruner is
    significantly below it after correction; else "tied" for the leader and for every pruner not
    significantly different from it; "" for the rest."""
    n = len(diff)
    if n < 2:
        return [""] * n
    worse = (p_holm[1:] < alpha) & (diff[1:] > 0)
    if worse.all():
        return ["best"] + [""] * (n - 1)
    different = p_holm[1:] < alpha
    return ["tied"] + ["" if d else "tied" for d in different]


def verdicts(
    cells: pd.DataFrame,
    ok: pd.DataFrame,
    predictions: Mapping[str, np.ndarray] | None = None,
    alpha: float = ALPHA,
    replicates: int = REPLICATES,
) -> pd.DataFrame:
    """`cells` (bench.board.cells.matched_cells) with COLUMNS added: per on-level cell its rank,
    the paired difference to the leader (leader minus it) with interval, raw and Holm-adjusted p,
    pairs, the test used, and its mark (off-level cells: rank NaN, mark "off")."""
    runs = {
        key: g.drop_duplicates("seed").set_index("seed")[["run_id", "top1"]]
        for key, g in ok.groupby(SETTING, sort=False)
    }
    parts = []
    for _, level in cells.groupby([*SECTION, "target"], sort=False):
        on = (
            level[level["on_level"]]
            .sort_values(
                ["select_mean", "sparsity_mean", "pruner"], ascending=[False, False, True], kind="stable"
            )
            .copy()
        )
        off = level[~level["on_level"]].assign(rank=np.nan, mark="off", pairs=0, method="")
        on["rank"] = range(1, len(on) + 1)
        if len(on):
            lead = runs[tuple(on.iloc[0][SETTING])]
            tests = [(np.nan, np.nan, np.nan, np.nan, 0, "")] + [
                paired(lead, runs[tuple(r[SETTING])], predictions, replicates)
                for _, r in on.iloc[1:].iterrows()
            ]
            cols = ["diff_vs_leader", "diff_low", "diff_high", "p_vs_leader", "pairs", "method"]
            on[cols] = pd.DataFrame(tests, index=on.index, columns=cols)
            on["p_holm"] = np.r_[np.nan, holm(on["p_vs_leader"].to_numpy()[1:])]
            on["mark"] = decide(on["diff_vs_leader"].to_numpy(float), on["p_holm"].to_numpy(float), alpha)
        parts += [on, off]
    out = pd.concat(parts, ignore_index=True) if parts else cells.assign(**{c: [] for c in COLUMNS})
    for c in COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out
