"""A gathered runs table made ready for a board: checked, sectioned, labelled.

One section per (dataset, model, recipe track, budget); within it a row per pruner and setting
(the pruner's hyperparameters that vary within the section).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench import record
from bench.config import Budget, legacy_values
from bench.errors import ConfigError
from bench.record import is_loaded
from bench.runs import RunStatus

SECTION = ["dataset", "model", "recipe", "budget"]
SETTING = [*SECTION, "pruner", "setting"]
# what a table needs to make a board; other run-record metrics missing from it are unknown (NaN)
REQUIRED = ("run_id", "pruner", "model", "dataset", "seed", "status", "top1", "sparsity")
BUDGET_SHOWN = ("epochs", "batch_size", "lr", "lr_schedule")  # always in the budget label
BUDGET_OWN_COLUMN = ("recipe",)  # budget fields with a column (and section) of their own, not in the label
OPTIMIZER_FAMILIES = ("sgd", "sgd_momentum", "adam")


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _per_distinct_row(
    df: pd.DataFrame, cols: list[str], label: Callable[[pd.DataFrame], pd.Series]
) -> pd.Series:
    """`label` computed on the distinct rows of `df[cols]` only and spread back to every row: the
    labels are row-wise Python, and 10,000 runs have a few dozen distinct settings."""
    codes = df.groupby(cols, dropna=False, sort=False).ngroup().to_numpy()  # numbered in first-seen order
    first = np.unique(codes, return_index=True)[1]
    return pd.Series(label(df.iloc[first][cols]).to_numpy()[codes], index=df.index, dtype=object)


def _budget_labels(df: pd.DataFrame) -> pd.Series:
    """`epochs=60 batch_size=32 lr=0.1 lr_schedule=constant` plus every budget field that is not
    at its default in some row, so that two different budgets never share a label."""
    defaults = {
        k: json.dumps(list(v)) if isinstance(v, tuple) else _fmt_value(v)
        for k, v in dataclasses.asdict(Budget()).items()
    }  # tuples are JSON text in the table
    cols = [c for c in df.columns if c.startswith("budget.") and c[7:] not in BUDGET_OWN_COLUMN]
    if not cols:
        return pd.Series("-", index=df.index)

    def labels(budgets: pd.DataFrame) -> pd.Series:
        text = {c: budgets[c].map(_fmt_value) for c in cols}
        shown = [c for c in cols if c[7:] in BUDGET_SHOWN or (text[c] != defaults.get(c[7:])).any()]
        order = {f"budget.{k}": i for i, k in enumerate(BUDGET_SHOWN)}
        shown.sort(key=lambda c: (order.get(c, len(order)), c))
        if not shown:
            return pd.Series("-", index=budgets.index)
        return pd.DataFrame({c: c[7:] + "=" + text[c] for c in shown}).agg(" ".join, axis=1)

    return _per_distinct_row(df, cols, labels)


def _settings(df: pd.DataFrame) -> pd.Series:
    """Per row, the hyperparameters that vary within its (section, pruner): `c=0.02, mu=0.6`."""
    hp = [c for c in df.columns if c.startswith("hparams.")]
    if not hp or df.empty:
        return pd.Series("-", index=df.index, dtype=str)

    def settings(rows: pd.DataFrame) -> pd.Series:  # the distinct rows vary exactly as all rows do
        varies = rows.groupby([*SECTION, "pruner"])[hp].transform("nunique") > 1
        parts = pd.DataFrame(
            {c: np.where(varies[c], c[8:] + "=" + rows[c].map(_fmt_value), "") for c in hp}, index=rows.index
        )
        return parts.agg(lambda r: ", ".join(p for p in r if p) or "-", axis=1)

    return _per_distinct_row(df, [*SECTION, "pruner", *hp], settings)


def _hparams_json(df: pd.DataFrame) -> pd.Series:
    hp = [c for c in df.columns if c.startswith("hparams.")]

    def as_json(r: pd.Series) -> str:
        return json.dumps({k[8:]: v for k, v in r.dropna().to_dict().items()}, sort_keys=True, default=str)

    return _per_distinct_row(df, hp, lambda rows: rows.agg(as_json, axis=1))


def _fill_budget(df: pd.DataFrame) -> None:
    """Budget fields a run predates take the value it trained with: the field's legacy value if it
    declares one (a result from before the validation split: `val_fraction` 0), else its default."""
    defaults = {**dataclasses.asdict(Budget()), **legacy_values(Budget)}
    for key in (*legacy_values(Budget), *BUDGET_OWN_COLUMN):
        col = f"budget.{key}"
        df[col] = df[col].fillna(defaults[key]) if col in df.columns else defaults[key]


def family_of(optimizer: Any) -> str | None:
    """The optimizer family of a run recorded before `optimizer_family` existed, from its optimizer
    text (`SGD(lr=0.1, momentum=0.9, ...)`, `GRDA(...)`, `Adam(...)`); None if it says nothing."""
    if not isinstance(optimizer, str) or not optimizer:
        return None
    name, _, args = optimizer.partition("(")
    name = name.strip().lower()
    if name.startswith("adam"):
        return "adam"
    if name == "grda":
        return "sgd"
    if name == "sgd":
        momentum = next(
            (a.split("=", 1)[1] for a in args.rstrip(")").split(", ") if a.startswith("momentum=")), "0"
        )
        try:
            return "sgd_momentum" if float(momentum) else "sgd"
        except ValueError:
            return None
    return None


def prepare(runs: pd.DataFrame, where: str = "results") -> pd.DataFrame:
    """Check a gathered table and add `recipe`, `budget`, `setting`, `hparams`, `select_top1` (what
    selection uses: validation top-1, or test top-1 for a run without a validation split),
    `validated`, `macs_reduction`, `hardware`, `optimizer_family` (recorded, else read off `optimizer`) and
    `loaded` (recomputed by the one rule, bench.record.is_loaded); rows are sorted (dense first,
    then by pruner and hyperparameter values)."""
    missing = [c for c in REQUIRED if c not in runs.columns]
    if missing:
        raise ConfigError(
            f"{where}: missing column(s) {', '.join(missing)}; expected a table written by "
            f"`bench gather` (columns {', '.join(REQUIRED)}, hparams.*, budget.*)"
        )
    if runs.empty:
        raise ConfigError(f"{where}: the runs table has no rows; gather finished runs into it first")
    df = runs.copy()
    for old, new in record.RENAMED.items():  # tables holding results written under an older field name
        if old in df.columns:
            df[new] = df.pop(old) if new not in df.columns else df[new].fillna(df.pop(old))
    for col in (*record.METRICS, *record.PROVENANCE):  # a table gathered before a field existed: unknown
        if col not in df.columns:
            df[col] = np.nan
    _fill_budget(df)
    df["recipe"] = df["budget.recipe"].astype(str)
    df["budget"] = _budget_labels(df)
    hp = sorted(c for c in df.columns if c.startswith("hparams."))
    df = (
        df.assign(_rank=df["pruner"] != "dense")
        .sort_values(
            ["dataset", "model", "recipe", "budget", "_rank", "pruner", *hp, "seed"],
            kind="stable",
            na_position="last",
        )
        .drop(columns="_rank")
        .reset_index(drop=True)
    )
    ok = df["status"] == RunStatus.OK
    df["setting"] = pd.Series("-", index=df.index, dtype=str)
    if ok.any():
        df.loc[ok, "setting"] = _settings(df[ok])
    df["hparams"] = _hparams_json(df) if hp else "{}"
    df["validated"] = df["val_top1"].notna()
    df["select_top1"] = df["val_top1"].where(df["validated"], df["top1"]).astype(float)
    df["macs_reduction"] = df["macs_dense"] / df["macs_sparse"]
    df["hardware"] = hardware(df)
    family = df["optimizer_family"].astype(object)
    df["optimizer_family"] = family.where(family.notna(), df["optimizer"].map(family_of))
    df["loaded"] = loaded(df)
    return df


def loaded(runs: pd.DataFrame) -> pd.Series:
    """Per run, whether it was timed on a loaded machine: the one rule (bench.record.is_loaded) on
    its recorded load averages, else the run's own flag, else False."""
    cols = ["load_avg_before", "load_avg_after", "cpu_count"]
    table = runs.reindex(columns=cols)
    again = pd.Series([is_loaded(*r) for r in table.itertuples(index=False)], index=runs.index, dtype=object)
    own = runs["loaded"] if "loaded" in runs.columns else pd.Series(None, index=runs.index, dtype=object)
    flag = again.where(again.notna(), own)  # no loads recorded: the run's own flag
    return flag.astype("boolean").fillna(False).astype(bool)


def hardware(df: pd.DataFrame) -> pd.Series:
    """What a run's costs were measured on: `<gpus>x <GPU type>` (one H100 and four differ), or
    `cpu`. Cost ratios divide only by dense runs on the same hardware."""
    gpus = df["gpus"].astype(object).where(df["gpus"].notna(), 1)
    label = [f"{int(n)}x {t}" if isinstance(t, str) else "cpu"
             for n, t in zip(gpus, df["gpu_type"], strict=True)]
    return pd.Series(label, index=df.index, dtype=object)


def in_section(t: pd.DataFrame, key: tuple[str, ...], budget: bool = True) -> pd.DataFrame:
    """The rows of `t` in section `key`; `budget=False`: of its dataset and model only (published rows)."""
    mask = (t["dataset"] == key[0]) & (t["model"] == key[1])
    return t[mask & (t["recipe"] == key[2]) & (t["budget"] == key[3])] if budget else t[mask]
