"""A board's summary, computed once and passed on: one row per (section, pruner, setting) over its
ok runs, with means, intervals over seeds, and each row against its own dense model.

Its own dense model: the `dense` runs of the same section trained with the same optimizer family
(`optimizer_family`: plain SGD, SGD with momentum, Adam), joined seed by seed. A pruner trained with
Adam is measured against a dense model trained with Adam, not against one trained by plain SGD.

Times come from the timing phase alone (bench.board.timing): the accuracy runs share the machine,
so their wall times (`train_time_s`, kept as provenance) are never turned into a time ratio.
"""

from __future__ import annotations

import pandas as pd

from bench import record
from bench.board.prepare import SECTION, SETTING
from bench.runs import RunStatus
from bench.stats import t_halfwidth

COSTS = {
    "peak_tensor_bytes": "memory_vs_dense",
    "state_bytes": "state_vs_dense",
}  # measure -> its ratio to the row's own dense (times: the timing phase's, see _with_timings)
TIME_COLUMNS = ("timed_step_ms", "time_vs_dense", "time_vs_dense_low", "time_vs_dense_high")
REFERENCE = [*SECTION, "optimizer_family"]  # what a row shares with its dense reference
COST_REFERENCE = [*REFERENCE, "hardware"]  # and for cost ratios: the same GPU type and count
# averaged over seeds: what selection uses, and every board column that is a per-run quantity
NOT_AVERAGED = (
    "optimizer_family",
    "timed_step_ms",
    "time_vs_dense",
    *COSTS.values(),
)  # board columns that are no per-run number
# and the accuracy runs' own wall time: provenance (leaderboard.csv, the section header), no column
MEASURES = ("select_top1", "train_time_s", *(s.name for s in record.BOARD if s.name not in NOT_AVERAGED))


def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The ok runs of a prepared table, each with `drop_vs_dense`: the test top-1 of the dense runs of
    its section, optimizer family and seed, minus its own."""
    ok = df[df["status"] == RunStatus.OK].copy()
    dense = (
        ok[ok["pruner"] == "dense"]
        .groupby([*REFERENCE, "seed"], dropna=False)["top1"]
        .mean()
        .rename("dense_top1")
        .reset_index()
    )
    ok = ok.merge(dense, on=[*REFERENCE, "seed"], how="left")
    ok["drop_vs_dense"] = ok.pop("dense_top1") - ok["top1"]
    return ok


def _dense_reference(ok: pd.DataFrame) -> pd.DataFrame:
    """Per (section, optimizer family, hardware), the mean peak tensor memory and state of its dense
    runs."""
    dense = ok[ok["pruner"] == "dense"].groupby(COST_REFERENCE, dropna=False)
    ref = pd.concat([dense[col].mean().rename(f"dense_{col}") for col in COSTS], axis=1)
    return ref.reset_index()


def _one_hardware(values: pd.Series) -> str:
    """The hardware of a row's runs; `mixed` (no cost ratio) when they ran on different ones."""
    return str(values.iloc[0]) if values.nunique() == 1 else "mixed"


def _most_common(values: pd.Series) -> str | None:
    counts = values.dropna().value_counts()
    return str(counts.index[0]) if len(counts) else None


def summarize(df: pd.DataFrame, timings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (section, pruner, setting) over its ok runs: `seeds`, `<measure>_mean`/`_std`
    (sample std)/`_ci` (half-width of the 95% t interval), `validated` (every run has a validation
    top-1), `loaded_runs`, `num_test`, `optimizer_family`, `hardware`, and the memory and state
    ratios of means to its own dense rows on the same hardware. `train_time_s` (the accuracy runs'
    wall time, provenance) is over the row's quiet runs when it has any (else over all, and
    `loaded_runs` == `seeds` marks it). `timings`: timing-phase records
    (bench.board.timing.load_timings); `timed_step_ms` and `time_vs_dense` (with
    `time_vs_dense_low`/`_high`) come from a row's usable record (see `usable_timings`), else NaN."""
    ok = ok_runs(df)
    quiet = ok["train_time_s"].where(~ok["loaded"])
    quiet_any = quiet.groupby([ok[c] for c in SETTING], sort=False).transform("count") > 0
    ok["train_time_s"] = ok["train_time_s"].where(~quiet_any | ~ok["loaded"])
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
            g["optimizer_family"].first(),
            g["hardware"].agg(_one_hardware),
            g["speedup_best_backend"].agg(_most_common).rename("speedup_backend"),
        ],
        axis=1,
    )
    summary = pd.concat([extra, stats_], axis=1).reset_index()
    summary = summary.merge(_dense_reference(ok), on=COST_REFERENCE, how="left")
    for col, ratio in COSTS.items():
        summary[ratio] = summary[f"{col}_mean"] / summary.pop(f"dense_{col}")
    return _with_timings(summary, ok, timings)


def usable_timings(ok: pd.DataFrame, timings: pd.DataFrame | None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The timing records a board may use, one row per ok run they stand for (SETTING, `run_id` and
    bench.board.timing.COLUMNS), and how many run rows were set aside and why: `loaded` (taken on a
    loaded machine) and `other_dense` (timed against a dense run that is not of the run's own
    optimizer family, or not among the board's ok runs)."""
    columns = [*SETTING, "run_id", "timed_step_ms", "timed_vs_dense", "timed_vs_dense_low",
               "timed_vs_dense_high", "timed_dense_step_ms", "dense_run_id"]
    if timings is None or timings.empty:
        return pd.DataFrame(columns=columns), {"loaded": 0, "other_dense": 0}
    mine = ok[[*SETTING, "run_id", "optimizer_family"]].merge(timings.drop(columns="pruner"), on="run_id")
    family = ok.set_index("run_id")["optimizer_family"]
    dense_family = mine["dense_run_id"].map(family[~family.index.duplicated()])
    own = dense_family.notna() & (dense_family == mine["optimizer_family"])
    loaded = mine["timing_loaded"].astype(bool)
    skipped = {"loaded": int(loaded.sum()), "other_dense": int((~loaded & ~own).sum())}
    return mine.loc[~loaded & own, columns], skipped


def _with_timings(summary: pd.DataFrame, ok: pd.DataFrame, timings: pd.DataFrame | None) -> pd.DataFrame:
    summary = summary.assign(**{c: float("nan") for c in TIME_COLUMNS})
    usable, _ = usable_timings(ok, timings)
    if usable.empty:
        return summary
    names = dict(zip(["timed_step_ms", "timed_vs_dense", "timed_vs_dense_low", "timed_vs_dense_high"],
                     TIME_COLUMNS, strict=True))  # a record's names -> the summary's
    timed = usable.groupby(SETTING, sort=False)[list(names)].first().rename(columns=names)
    summary = summary.drop(columns=list(TIME_COLUMNS)).merge(timed.reset_index(), on=SETTING, how="left")
    # a dense row that settings were timed against: ratio 1, its step time the median of those records
    dense_ms = usable.groupby("dense_run_id")["timed_dense_step_ms"].median()
    runs = ok[ok["pruner"] == "dense"].assign(ms=lambda d: d["run_id"].map(dense_ms)).dropna(subset="ms")
    ms = runs.groupby(SETTING, sort=False)["ms"].median().rename("dense_ms").reset_index()
    summary = summary.merge(ms, on=SETTING, how="left")
    dense = summary.pop("dense_ms")
    summary["timed_step_ms"] = summary["timed_step_ms"].fillna(dense)
    summary.loc[dense.notna(), ["time_vs_dense", "time_vs_dense_low", "time_vs_dense_high"]] = 1.0
    return summary


def timing_note(ok: pd.DataFrame, timings: pd.DataFrame | None, directory: str = "DIR") -> str:
    """Where a board's time columns come from, in words: the timing phase, or why they are empty."""
    usable, skipped = usable_timings(ok, timings)
    rerun = f"`bench board {directory} --time` on a quiet machine"
    why = []
    if skipped["loaded"]:
        why.append(f"{skipped['loaded']} run(s) have a timing record taken on a loaded machine")
    if skipped["other_dense"]:
        why.append(
            f"{skipped['other_dense']} run(s) have a timing record made against a dense model of another "
            "optimizer family"
        )
    aside = f" Not used: {'; '.join(why)}; rerun {rerun}." if why else ""
    runs = (
        " The accuracy runs' wall times (in each section's header) may share a machine and are "
        "compared with nothing."
    )
    if usable.empty:
        if timings is None or timings.empty:
            return (
                "Times: no timing phase on this board, so *timed step* and *time vs dense* are empty: "
                f"run {rerun}.{runs}"
            )
        return f"Times: no usable timing record, so *timed step* and *time vs dense* are empty.{aside}{runs}"
    return (
        f"Times: from the timing phase only (`bench board {directory} --time`): each setting's lowest "
        "seed timed serially against its own dense model (same optimizer family), interleaved over "
        "rounds; *time vs dense* is the median over rounds of the step-time ratio with its 95% interval "
        f"over rounds.{aside}{runs}"
    )
