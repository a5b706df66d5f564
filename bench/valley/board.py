"""A board's valley: for each pruner at the sparsity levels, its runs against the dense run of their
section, seed and optimizer family (barrier and Hessian top-k fraction, with intervals over seeds),
written beside the board as valley.csv (+ valley-paths.csv, the loss along each path) and read back
by `bench board --no-run`, so a board rebuilds byte-identically without its run folders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.board.cells import TOLERANCE
from bench.board.prepare import SECTION
from bench.errors import ConfigError
from bench.io import write_text
from bench.markdown import table
from bench.runs import RunStatus
from bench.stats import clip_interval
from bench.valley.analysis import HESSIAN_EXAMPLES, RANDOM_DRAWS, TOP_K, Valley, measure_pair
from bench.valley.endpoints import Endpoint, load_endpoint, read_run
from bench.valley.hessian import hessian_eigs
from bench.valley.path import training_batches

LEVELS = (0.90, 0.95, 0.98)  # the sparsity levels a board's valley table reports
# the recipe track measured when a board has it (one Hessian per dense run: a second track would
# double the cost); a board without it has every section measured
TRACK = "paper"
FIGURE_LEVEL = 0.90  # the level of the board's path figure
POINTS = 11  # points on each path (fewer than `bench valley`'s: a board measures hundreds)
TABLE_FILE, PATHS_FILE = "valley.csv", "valley-paths.csv"
TABLE = [*SECTION, "level", "pruner", "setting", "seeds", "sparsity", "barrier_mean", "barrier_ci",
         "fraction_mean", "fraction_ci", "random_fraction", "note"]
PATHS = [*SECTION, "level", "pruner", "setting", "seed", "t", "loss", "val_top1", "test_top1"]
TEXT = [*SECTION, "pruner", "setting", "note"]  # string columns (empty, never NaN, when read back)


def measured_recipes(recipes: Any) -> list[str]:
    """The recipe tracks of a board whose sections get a valley table: TRACK if it has it, else all."""
    recipes = sorted(set(recipes))
    return [TRACK] if TRACK in recipes else recipes


def chosen_settings(df: pd.DataFrame, levels: tuple[float, ...] = LEVELS,
                    tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per section (of `measured_recipes`), level and pruner (dense aside) the setting whose mean
    sparsity over its ok runs is nearest the level, if within `tolerance`: columns SECTION, level,
    pruner, setting, sparsity."""
    tracks = measured_recipes(df["recipe"])
    ok = df[(df["status"] == RunStatus.OK) & (df["pruner"] != "dense") & df["recipe"].isin(tracks)]
    keys = [*SECTION, "pruner", "setting"]
    means = ok.groupby(keys, sort=True, dropna=False)["sparsity"].mean().reset_index()
    rows = []
    for level in levels:
        near = means[(means["sparsity"] - level).abs() <= tolerance + 1e-12]
        near = near.assign(gap=(near["sparsity"] - level).abs()).sort_values([*keys[:-1], "gap"])
        rows.append(near.drop_duplicates([*SECTION, "pruner"]).drop(columns="gap").assign(level=level))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*keys, "sparsity"])
    return out[[*SECTION, "level", "pruner", "setting", "sparsity"]]


def _same(a: Any, b: Any) -> bool:
    return (pd.isna(a) and pd.isna(b)) or a == b


def _dense_run(dense: pd.DataFrame, run: dict[str, Any]) -> dict[str, Any]:
    """The dense run of `run`'s section, seed and optimizer family (one with its exact budget first)."""
    mine = dense[[all(_same(d[k], run[k]) for k in (*SECTION, "seed", "optimizer_family"))
                  for d in dense.to_dict(orient="records")]]
    family = run["optimizer_family"] if isinstance(run["optimizer_family"], str) else "unrecorded"
    if mine.empty:
        raise ConfigError(f"no dense run of this section with seed {run['seed']} and optimizer family "
                          f"{family}")
    if len(mine) > 1:
        budget = read_run(run["folder"])[0].budget
        exact = mine[[read_run(p)[0].budget == budget for p in mine["folder"]]]
        mine = exact if len(exact) == 1 else mine
    if len(mine) > 1:
        raise ConfigError(f"{len(mine)} dense runs of this section match seed {run['seed']} and optimizer "
                          f"family {family} ({', '.join(mine['run_id'])})")
    return mine.iloc[0].to_dict()


def board_valley(df: pd.DataFrame, root: str | Path, levels: tuple[float, ...] = LEVELS,
                 points: int = POINTS, top_k: int = TOP_K, hessian_examples: int = HESSIAN_EXAMPLES,
                 draws: int = RANDOM_DRAWS, confidence: float = 0.95,
                 tolerance: float = TOLERANCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The valley of a prepared board table (bench.board.prepare) whose run folders are under `root`:
    each ok run of `chosen_settings` against its dense run (`_dense_run`). Returns (table, paths):
    per section, level, pruner and setting the mean barrier and top-k fraction over seeds with
    their `confidence` Student-t half-widths, the random directions' fraction and a note where the
    comparison does not apply or failed (it never aborts); `paths`: the straight path of every
    measured run. Each dense run (and its Hessian) is loaded once."""
    from bench.stats import t_halfwidth

    root = Path(root)
    ok = df[df["status"] == RunStatus.OK]
    chosen = chosen_settings(df, levels, tolerance)
    dense = ok[ok["pruner"] == "dense"]
    dense = dense.assign(folder=[str(_folder(r, root)) for r in dense.to_dict(orient="records")])
    data_cache: dict[tuple, Any] = {}
    b_cache: dict[str, tuple[Endpoint, Any, Any] | Exception] = {}

    def dense_end(folder: str) -> tuple[Endpoint, Any, Any]:
        if folder not in b_cache:
            try:
                config = read_run(folder)[0]
                key = (config.dataset, config.model, config.data_dir, config.budget.val_fraction)
                b, data_cache[key] = load_endpoint(folder, data_cache.get(key))
                eigs = None
                if top_k and b.model is not None:
                    sample = training_batches(data_cache[key], b.config.seed, hessian_examples)
                    eigs = hessian_eigs(b.model, sample, top_k)
                b_cache[folder] = (b, data_cache[key], eigs)
            except Exception as e:  # a dense run that cannot be measured is a note
                b_cache[folder] = e
        cached = b_cache[folder]
        if isinstance(cached, Exception):
            raise cached
        return cached

    per_run, paths = [], []
    for c in chosen.to_dict(orient="records"):
        runs = ok[(ok["pruner"] == c["pruner"]) & (ok["setting"] == c["setting"])
                  & np.logical_and.reduce([ok[k] == c[k] for k in SECTION])]
        for r in runs.to_dict(orient="records"):
            base = {**{k: c[k] for k in (*SECTION, "level", "pruner", "setting")}, "seed": r["seed"]}
            try:
                r["folder"] = str(_folder(r, root))
                b, data, eigs = dense_end(_dense_run(dense, r)["folder"])
                a, _ = load_endpoint(r["folder"], data)
                v = measure_pair(a, b, data, points, top_k, hessian_examples=hessian_examples, draws=draws,
                                 eigs=eigs)
            except Exception as e:  # a pair that cannot be measured shows why
                reason = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
                per_run.append({**base, "sparsity": r["sparsity"], "note": f"not measured: {reason}"})
                continue
            per_run.append({**base, **_measured(v), "sparsity": r["sparsity"]})
            if v.line is not None:
                paths.append(v.line.assign(**base))
    if not per_run:
        return pd.DataFrame(columns=TABLE), pd.DataFrame(columns=PATHS)
    runs_table = pd.DataFrame(per_run)
    for col in ("barrier", "fraction", "random_fraction", "sparsity"):
        runs_table[col] = pd.to_numeric(runs_table.get(col), errors="coerce")
    g = runs_table.groupby([*SECTION, "level", "pruner", "setting"], sort=True, dropna=False)
    out = g.agg(seeds=("seed", "nunique"), sparsity=("sparsity", "mean"), barrier_mean=("barrier", "mean"),
                barrier_sd=("barrier", "std"), n=("barrier", "count"), fraction_mean=("fraction", "mean"),
                fraction_sd=("fraction", "std"), random_fraction=("random_fraction", "mean"),
                note=("note", lambda s: "; ".join(sorted({x for x in s if isinstance(x, str)}))),
                ).reset_index()
    out["barrier_ci"] = t_halfwidth(out["barrier_sd"], out["n"], confidence)
    out["fraction_ci"] = t_halfwidth(out["fraction_sd"], out["n"], confidence)
    line = pd.concat(paths, ignore_index=True)[PATHS] if paths else pd.DataFrame(columns=PATHS)
    return out[TABLE], line


def _measured(v: Valley) -> dict[str, Any]:
    return {"barrier": v.barrier, "fraction": v.fraction,
            "random_fraction": float(np.mean(v.random)) if v.random else math.nan,
            "note": "; ".join(v.notes) or None}


def _folder(r: dict[str, Any], root: Path) -> Path:
    """A run's folder: its recorded path if it still exists, else `root/<run_id>` or one below it."""
    recorded = Path(str(r.get("path") or ""))
    if recorded.name and (recorded / "result.json").is_file():
        return recorded
    direct = root / str(r["run_id"])
    if direct.is_dir():
        return direct
    found = next(root.rglob(str(r["run_id"])), None)
    if found is None:
        raise ConfigError(f"run {r['run_id']}: no folder under {root}")
    return found


# ------------------------------------------------------------------------------- files


def write_valley(out: str | Path, valleys: pd.DataFrame, paths: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
    """valley.csv and valley-paths.csv into `out`; returns them as read back (what a board shows, so
    that a rebuild from the files is identical)."""
    out = Path(out)
    write_text(out / TABLE_FILE, valleys[TABLE].to_csv(index=False, float_format="%.6g"))
    write_text(out / PATHS_FILE, paths[PATHS].to_csv(index=False, float_format="%.6g"))
    found = read_valley(out)
    assert found is not None  # just written
    return found


def read_valley(directory: str | Path) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """A board's valley.csv and valley-paths.csv (None without valley.csv); ConfigError naming the
    file when one is not a valley table."""
    directory = Path(directory)
    if not (directory / TABLE_FILE).is_file():
        return None
    found = []
    for name, columns in ((TABLE_FILE, TABLE), (PATHS_FILE, PATHS)):
        path = directory / name
        if not path.is_file():
            raise ConfigError(f"{path}: missing beside {directory / TABLE_FILE}; rebuild the board from "
                              "its runs (bench board without --no-run)")
        frame = pd.read_csv(path, dtype={c: str for c in TEXT}, keep_default_na=False,
                            na_values={c: [""] for c in columns if c not in TEXT})
        missing = set(columns) - set(frame.columns)
        if missing:
            raise ConfigError(f"{path}: not a valley table (no {', '.join(sorted(missing))}); rebuild the "
                              "board from its runs (bench board without --no-run)")
        found.append(frame[columns])
    return found[0], found[1]


# ------------------------------------------------------------------------------- Markdown


def board_markdown(valleys: pd.DataFrame) -> str:
    """A valley table in Markdown: mean ± half-width over seeds, "n/a" with the reason where the
    comparison does not apply or was not measured. An interval that would leave the quantity's range
    (a barrier is >= 0, a fraction within [0, 1]) is shown clipped, as `mean [low, high]`."""

    def pm(mean: float, ci: float, fmt: str, high: float) -> str:
        if pd.isna(mean):
            return "n/a"
        if pd.isna(ci):
            return format(mean, fmt)
        if mean - ci >= 0 and mean + ci <= high:
            return f"{format(mean, fmt)} ± {format(ci, fmt)}"
        low_, high_ = clip_interval(mean, ci, 0.0, high)
        return f"{format(mean, fmt)} [{format(float(low_), fmt)}, {format(float(high_), fmt)}]"

    rows = [[f"{100 * r.level:g}%", r.pruner, r.setting, r.seeds,
             "-" if pd.isna(r.sparsity) else f"{100 * r.sparsity:.1f}%",
             pm(r.barrier_mean, r.barrier_ci, ".3g", math.inf),
             pm(r.fraction_mean, r.fraction_ci, ".3g", 1.0),
             "-" if pd.isna(r.random_fraction) else f"{r.random_fraction:.3g}",
             r.note if isinstance(r.note, str) else ""]
            for r in valleys.sort_values(["level", "pruner", "setting"]).itertuples(index=False)]
    header = ["level", "pruner", "setting", "seeds", "sparsity", "barrier", "top-k fraction",
              "random directions", "note"]
    return table(rows, header, right=header[3:8])


def section_markdown(valleys: pd.DataFrame, figures: dict[tuple[str, ...], str] | None = None,
                     recipes: Any = (), top_k: int = TOP_K, hessian_examples: int = HESSIAN_EXAMPLES,
                     points: int = POINTS) -> str:
    """The board README's "Valley" section: what is measured and how to read it, then per board
    section its table and figure (`figures`: section key -> PNG name; `recipes`: the board's
    recipe tracks, to say which were measured)."""
    levels = sorted(valleys["level"].unique()) if len(valleys) else list(LEVELS)
    shown = ", ".join(f"{100 * x:g}%" for x in levels)
    out = ["## Valley", "",
           f"Is each pruned model in the valley of the dense model trained from its initialization on the "
           f"same mini-batches (the dense run of its section, seed and optimizer family), at {shown} "
           f"sparsity (the setting of each pruner within ±{100 * TOLERANCE:g} points of the level)? "
           f"*barrier*: the highest training loss on the straight line from the pruned to the dense "
           f"model ({points} points, batch norm recomputed) above the chord between their losses; 0 "
           f"means one valley holds both. *top-k fraction*: the share of the squared distance "
           f"between the two models that lies in the span of the top-{top_k} eigenvectors of the "
           f"dense model's training-loss Hessian ({hessian_examples} training examples); read it "
           f"against *random directions*, the same share for random directions (about {top_k} / "
           f"number of parameters): near it, the two models differ only in directions that leave "
           f"the training loss flat (the gRDA paper's claim for gRDA); far above it, they differ "
           f"along the sharpest directions. Mean ± 95% interval over seeds (clipped to the "
           f"quantity's range, shown as mean [low, high]: a barrier is never below 0); n/a with the reason "
           f"where the comparison does not apply (a changed architecture) or could not be measured."
           + _tracks_sentence(recipes), ""]
    if valleys.empty:
        return "\n".join([*out, "No pruner landed within the tolerance of these levels.", ""])
    for key, rows in valleys.groupby(SECTION, sort=True):
        dataset, model, recipe, budget = key
        out += [f"### {dataset} / {model} · {recipe} recipe", "", f"Budget: `{budget}`", "",
                board_markdown(rows), ""]
        name = (figures or {}).get(key)
        if name:
            out += [f"![training loss on the straight path to the dense model]({name}) "
                    f"([SVG]({name.removesuffix('.png')}.svg))", ""]
    return "\n".join(out)


def _tracks_sentence(recipes: Any) -> str:
    recipes = sorted(set(recipes))
    measured = measured_recipes(recipes)
    if len(measured) == len(recipes):
        return ""
    return (f" Measured on the {', '.join(measured)} recipe track only, which keeps it to seconds on a "
            f"board (one Hessian per dense run); `bench valley A B` measures any pair of runs.")
