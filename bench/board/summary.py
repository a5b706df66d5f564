"""A board's summary, computed once and passed on: one row per (section, pruner, setting) over its
ok runs, with means, intervals over seeds, and each row against its own dense model.

Its own dense model: the `dense` runs of the same section trained with the same optimizer family
(`optimizer_family`: plain SGD, SGD with momentum, Adam), joined seed by seed. A pruner trained with
Adam is measured against a dense model trained with Adam, not against one trained by plain SGD.
"""

from __future__ import annotations

import pandas as pd

from bench import record
from bench.board.prepare import SECTION, SETTING
from bench.stats import t_halfwidth

COSTS = {
    "train_time_s": "time_vs_dense",
    "peak_tensor_bytes": "memory_vs_dense",
    "state_bytes": "state_vs_dense",
}  # measure -> its ratio to the row's own dense
REFERENCE = [*SECTION, "optimizer_family"]  # what a row shares with its dense reference
COST_REFERENCE = [*REFERENCE, "hardware"]  # and for cost ratios: the same GPU type and count
# averaged over seeds: what selection uses, and every board column that is a per-run quantity
NOT_AVERAGED = (
    "optimizer_family",
    "timed_step_ms",
    *COSTS.values(),
)  # board columns that are no per-run number
MEASURES = ("select_top1", *(s.name for s in record.BOARD if s.name not in NOT_AVERAGED))


def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The ok runs of a prepared table, each with `drop_vs_dense` (the test top-1 of the dense runs of
    its section, optimizer family and seed, minus its own) and `quiet_time_s` (its train time when it
    was timed on a quiet machine; a loaded time is never compared with a quiet one)."""
    ok = df[df["status"] == "ok"].copy()
    dense = (
        ok[ok["pruner"] == "dense"]
        .groupby([*REFERENCE, "seed"], dropna=False)["top1"]
        .mean()
        .rename("dense_top1")
        .reset_index()
    )
    ok = ok.merge(dense, on=[*REFERENCE, "seed"], how="left")
    ok["drop_vs_dense"] = ok.pop("dense_top1") - ok["top1"]
    ok["quiet_time_s"] = ok["train_time_s"].where(~ok["loaded"])
    return ok


def _dense_reference(ok: pd.DataFrame) -> pd.DataFrame:
    """Per (section, optimizer family, hardware), the mean quiet train time, peak tensor memory and
    state of its dense runs."""
    dense = ok[ok["pruner"] == "dense"].groupby(COST_REFERENCE, dropna=False)
    ref = pd.concat(
        [
            dense["quiet_time_s"].mean().rename("dense_train_time_s"),
            dense["peak_tensor_bytes"].mean().rename("dense_peak_tensor_bytes"),
            dense["state_bytes"].mean().rename("dense_state_bytes"),
        ],
        axis=1,
    )
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
    top-1), `loaded_runs`, `num_test`, `optimizer_family`, `hardware`, and the cost ratios of means to
    its own dense rows on the same hardware (times: quiet runs on both sides, else NaN).
    `train_time_s` is over the row's quiet runs when it has any (else over all, and `loaded_runs` ==
    `seeds` marks it). `timings`: timing-phase records (bench.board.timing.load_timings); where a row
    has a quiet one, `timed_step_ms` and `time_vs_dense` (with `time_vs_dense_low`/`_high`) come
    from it, and a loaded one is never used."""
    ok = ok_runs(df)
    quiet_any = ok.groupby(SETTING, sort=False)["quiet_time_s"].transform("count") > 0
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
            g["quiet_time_s"].mean().rename("quiet_time_s"),
            g["speedup_best_backend"].agg(_most_common).rename("speedup_backend"),
        ],
        axis=1,
    )
    summary = pd.concat([extra, stats_], axis=1).reset_index()
    summary = summary.merge(_dense_reference(ok), on=COST_REFERENCE, how="left")
    summary["time_vs_dense"] = summary.pop("quiet_time_s") / summary.pop("dense_train_time_s")
    for col in ("peak_tensor_bytes", "state_bytes"):
        summary[COSTS[col]] = summary[f"{col}_mean"] / summary.pop(f"dense_{col}")
    return _with_timings(summary, ok, timings)


def _with_timings(summary: pd.DataFrame, ok: pd.DataFrame, timings: pd.DataFrame | None) -> pd.DataFrame:
    summary = summary.assign(
        timed_step_ms=float("nan"), time_vs_dense_low=float("nan"), time_vs_dense_high=float("nan")
    )
    if timings is None or timings.empty:
        return summary
    quiet = timings[~timings["timing_loaded"]].drop(columns="pruner")
    timed = ok[[*SETTING, "run_id"]].merge(quiet, on="run_id").groupby(SETTING, sort=False).first()
    if timed.empty:
        return summary
    # the timing phase replaces the run-time ratio and the placeholders: never both side by side
    placeholders = ["time_vs_dense", "time_vs_dense_low", "time_vs_dense_high", "timed_step_ms"]
    summary = summary.drop(columns=placeholders)
    summary = summary.merge(
        timed[["timed_step_ms", "timed_vs_dense", "timed_vs_dense_low", "timed_vs_dense_high"]].reset_index(),
        on=SETTING,
        how="left",
    )
    summary = summary.rename(
        columns={
            "timed_vs_dense": "time_vs_dense",
            "timed_vs_dense_low": "time_vs_dense_low",
            "timed_vs_dense_high": "time_vs_dense_high",
        }
    )
    dense = summary["pruner"] == "dense"
    summary.loc[dense, ["time_vs_dense", "time_vs_dense_low", "time_vs_dense_high"]] = 1.0
    return summary
