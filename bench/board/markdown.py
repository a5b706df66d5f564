"""A board's Markdown (renders on GitHub): the reader's summary first, then per section its main
table (columns from bench.record.BOARD), the matched-sparsity cells, which differences are
significant, the cost of calibration, published rows and figures. Deterministic."""

from __future__ import annotations

import json

import pandas as pd

from bench import results
from bench.board.cells import TARGETS, TOLERANCE
from bench.board.prepare import SECTION, in_section
from bench.board.significance import ALPHA, BOOTSTRAP, method_note
from bench.config import Budget
from bench.markdown import table
from bench.record import BOARD, LOAD_FACTOR, SHOWN
from bench.runs import RunStatus

NOT_VALIDATED = "†"  # marks values selected on test top-1 (runs without a validation split)
OFF_LEVEL = "°"  # marks a cell whose setting missed the level: its measured sparsity is shown
LEFT = {"recipe", "pruner", "setting", "optimizer"}

INTRO = (
    "Values: mean ± half-width of the 95% confidence interval over seeds (Student t; a single seed "
    "shows the mean; accuracy intervals are clipped to [0, 100]). Settings are selected on validation "
    "top-1 (a fixed split held out of the training set); the test top-1 of what was selected is "
    "reported. *vs dense* and *drop vs own dense*: against the `dense` rows of the same section trained "
    "with the same optimizer family. Setting: the hyperparameters that vary within a pruner. Failed and "
    f"diverged runs are counted, not averaged. {NOT_VALIDATED}: selected on test top-1 (runs without a "
    "validation split)."
)


def pm(
    mean: float, half: float, fmt: str, scale: float = 1.0, clip: tuple[float, float] | None = None
) -> str:
    """`mean ± half` (NaN half: the mean alone; NaN mean: blank); with `clip`, the interval as
    `mean [low, high]` within the clip range."""
    if pd.isna(mean):
        return ""
    text = f"{mean * scale:{fmt}}"
    if pd.isna(half):
        return text
    if clip is not None and (mean - half < clip[0] or mean + half > clip[1]):
        lo, hi = max(mean - half, clip[0]), min(mean + half, clip[1])
        return f"{text} [{lo * scale:{fmt}}, {hi * scale:{fmt}}]"
    return f"{text} ± {half * scale:{fmt}}"


def _column(s: pd.DataFrame, name: str) -> pd.Series:
    shown = SHOWN[name]
    if name not in s.columns and f"{name}_mean" not in s.columns:
        return pd.Series("", index=s.index)
    if not shown.interval or name not in {c.removesuffix("_mean") for c in s.columns if c.endswith("_mean")}:
        col = s[name] if name in s.columns else s[f"{name}_mean"]
        return col.map(lambda v: str(v) if shown.fmt == "" and pd.notna(v) else shown.format(v))
    clip = (0.0, 1.0) if shown.unit == "%" else None
    return pd.Series(
        [
            pm(m, h, shown.fmt, shown.scale, clip)
            for m, h in zip(s[f"{name}_mean"], s[f"{name}_ci"], strict=True)
        ],
        index=s.index,
    )


def main_table(s: pd.DataFrame) -> str:
    """One row per pruner and setting; columns: recipe, pruner, setting, seeds, then bench.record.BOARD."""
    t = pd.DataFrame(
        {
            "recipe": s["recipe"],
            "pruner": s["pruner"],
            "setting": s["setting"],
            "seeds": s["seeds"].astype(str),
        }
    )
    for shown in BOARD:
        t[shown.header] = _column(s, shown.name)
    speed = SHOWN["speedup_best"].header
    backend = s["speedup_backend"].fillna("").astype(str).str.replace("2to4", "2:4")
    t[speed] = t[speed].where((t[speed] == "") | (backend == ""), t[speed] + " (" + backend + ")")
    ratio, low, high = (s.get(c) for c in ("time_vs_dense", "time_vs_dense_low", "time_vs_dense_high"))
    if low is not None and low.notna().any():  # from the timing phase: its interval over rounds
        timed = pd.Series(
            [
                f"{r:.2f} [{lo:.2f}, {hi:.2f}]" if pd.notna(lo) else t
                for r, lo, hi, t in zip(ratio, low, high, t[SHOWN["time_vs_dense"].header], strict=True)
            ],
            index=s.index,
        )
        t[SHOWN["time_vs_dense"].header] = timed
    return table(t, right=set(t.columns) - LEFT)


def cell_text(r: pd.Series) -> str:
    """`97.70 ± 0.12` (bold: best; *…* (tied)); off-level cells carry their sparsity and a mark."""
    half = (r["top1_high"] - r["top1_low"]) / 2 if r["seeds"] > 1 else float("nan")
    text = pm(r["top1_mean"], half, ".2f", 100)
    if r["top1_high"] - r["top1_mean"] != r["top1_mean"] - r["top1_low"] and r["seeds"] > 1:
        text = f"{100 * r['top1_mean']:.2f} [{100 * r['top1_low']:.2f}, {100 * r['top1_high']:.2f}]"
    text = {"best": f"**{text}**", "tied": f"*{text}* (tied)"}.get(r["mark"], text)
    if not r["on_level"]:
        text += f" {OFF_LEVEL} at {100 * r['sparsity_mean']:.2f}%"
    return text + ("" if r["validated"] else f" {NOT_VALIDATED}")


def matched_table(m: pd.DataFrame, targets: tuple[float, ...]) -> str:
    pruners = list(dict.fromkeys(m.sort_values("pruner", kind="stable")["pruner"]))
    t = pd.DataFrame(
        {
            "recipe": m["recipe"].iat[0],
            "pruner": pruners,
            "settings": [str(m.loc[m["pruner"] == p, "settings"].iat[0]) for p in pruners],
        }
    )
    for target in targets:
        cells = {r["pruner"]: cell_text(r) for _, r in m[m["target"] == target].iterrows()}
        t[f"top-1 % at {100 * target:g}%"] = [cells.get(p, "") for p in pruners]
    return table(t, right=set(t.columns) - {"recipe", "pruner"})


def matched_note(tolerance: float) -> str:
    return (
        "Each pruner's test top-1 at each sparsity level (mean and 95% interval over seeds): the setting "
        f"whose mean measured sparsity is within {100 * tolerance:g} points of the level, chosen on "
        "validation top-1 (ties: the sparser), never on test. A pruner with no setting within the "
        f"tolerance shows its nearest setting, at the level nearest to it, with its measured sparsity "
        f"({OFF_LEVEL}); such a cell takes no part in the tests. Nothing is interpolated. *settings*: how "
        "many settings the pruner was tuned over. " + method_note()
    )


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def significance_text(
    m: pd.DataFrame, targets: tuple[float, ...] = TARGETS, alpha: float = ALPHA
) -> list[str]:
    """In words, per level of one section: the leader, each difference to it with its Holm-adjusted p."""
    lines = []
    for target in targets:
        cell = m[(m["target"] == target) & m["on_level"]].sort_values("rank")
        level = f"{100 * target:g}%"
        if len(cell) < 2:
            lines.append(
                f"- **{level}**: "
                + (
                    f"only {cell['pruner'].iat[0]} is on this level; nothing to compare."
                    if len(cell)
                    else "no pruner is on this level."
                )
            )
            continue
        lead = cell.iloc[0]
        parts = []
        for _, r in cell.iloc[1:].iterrows():
            if pd.isna(r["p_holm"]):
                why = "too few shared seeds" if r["pairs"] < 2 else "the same difference at every seed"
                parts.append(f"{r['pruner']}: no test ({why}; per-example predictions would allow one)")
                continue
            verdict = "significant" if r["p_holm"] < alpha else "not significant"
            parts.append(
                f"{r['pruner']} {100 * r['diff_vs_leader']:+.2f} [{100 * r['diff_low']:+.2f}, "
                f"{100 * r['diff_high']:+.2f}], Holm {_p(r['p_holm'])}, {verdict}"
                + ("" if r["method"] == BOOTSTRAP else f" ({r['method']})")
            )
        verdict = (
            "It is significantly the best."
            if lead["mark"] == "best"
            else "No significant best: tied with the leader: "
            + (", ".join(cell.loc[(cell["mark"] == "tied") & (cell["rank"] > 1), "pruner"]) or "none")
            + "."
        )
        lines.append(
            f"- **{level}**: {lead['pruner']} leads on validation (test top-1 "
            f"{100 * lead['top1_mean']:.2f}%); leader minus each other pruner, in points: "
            + "; ".join(parts)
            + f". {verdict}"
        )
    return lines


def verdict_text(level: pd.DataFrame, compact: bool = False) -> str:
    """One level of one section for a reader: the best pruner with its interval, or "no significant
    best", and the pruners tied with the leader (`compact`: how many)."""
    on = level[level["on_level"]].sort_values("rank")
    if on.empty:
        return "no pruner on this level"
    lead = on.iloc[0]
    mean, low, high = (100 * lead[c] for c in ("top1_mean", "top1_low", "top1_high"))
    interval = f"{mean:.2f}% [{low:.2f}, {high:.2f}]" if lead["seeds"] > 1 else f"{mean:.2f}% (one seed)"
    if lead["mark"] == "best":
        return f"**{lead['pruner']}** {interval}"
    if len(on) == 1:
        return f"{lead['pruner']} {interval} (alone on this level)"
    tied = on.loc[on["mark"] == "tied", "pruner"].tolist()
    if compact:  # `compact`: the README's one-line cell
        return f"no significant best (validation leader {lead['pruner']}, {len(tied)} tied)"
    return f"no significant best; tied: {', '.join(tied)}"


def reader_summary(m: pd.DataFrame, targets: tuple[float, ...]) -> list[str]:
    """The board's opening lines: per section and level, the best pruner or "no significant best"."""
    if m.empty:
        return []
    out = [
        "## Summary",
        "",
        "Per level, the pruner that beats every other one on test top-1 after "
        "correction (mean [95% interval]), or *no significant best* and the pruners tied with the "
        "validation leader. Method: see *Accuracy at matched sparsity* below; each difference: "
        "*Which differences are significant*.",
        "",
    ]
    for key, sec in m.groupby(SECTION, sort=True):
        out.append(f"- **{key[0]} / {key[1]} · {key[2]} recipe**")
        out += [
            f"  - {100 * t:g}%: {verdict_text(sec[sec['target'] == t])}"
            for t in targets
            if (sec["target"] == t).any()
        ]
    return [*out, ""]


def _provenance(runs: pd.DataFrame) -> str:
    counts = runs["status"].value_counts()
    parts = [", ".join(f"{int(counts.get(s, 0))} {s}" for s in results.STATUSES) + " runs"]
    for col, label, short in (
        ("git_sha", "git", 7),
        ("device", "device", None),
        ("torch_version", "torch", None),
    ):
        if col in runs.columns:
            values = sorted({str(v)[:short] for v in runs[col].dropna()})
            parts.append(f"{label} {', '.join(values) or 'unknown'}")
    if "slurm_job_id" in runs.columns:
        jobs = runs["slurm_job_id"].dropna()
        parts.append(f"SLURM jobs {len(set(jobs))}" if len(jobs) else "no SLURM")
    return " · ".join(parts)


def _run_times(runs: pd.DataFrame) -> str:
    """The accuracy runs' wall times, as provenance: they shared the machine, so no column uses them."""
    ok = runs[runs["status"] == RunStatus.OK]
    times = ok["train_time_s"].dropna()
    if times.empty:
        return ""
    loaded = int(ok["loaded"].sum())
    return (
        f"Accuracy runs' train wall time: median {times.median():.1f} s per run (range {times.min():.1f}-"
        f"{times.max():.1f} s; {loaded} of {len(ok)} on a loaded machine, 1-minute load above "
        f"{LOAD_FACTOR:g} per core). Provenance only: accuracy runs may share a machine, so these times "
        "are compared with nothing."
    )


def _budget(runs: pd.DataFrame) -> Budget:
    """The budget fields a section's text needs (its runs share one budget)."""
    first = runs.iloc[0]
    given = {}
    for key in ("momentum", "weight_decay", "prune_first_last"):
        value = first.get(f"budget.{key}")
        if value is not None and not (isinstance(value, float) and value != value):
            given[key] = bool(value) if key == "prune_first_last" else float(value)
    return Budget(**given)


def section_header(runs: pd.DataFrame) -> list[str]:
    """What a section's runs share, in words: the recipe track and its optimizers, the layer-coverage
    policy every pruner follows, and the accuracy runs' wall times (provenance)."""
    from bench.pruner import layer_coverage
    from bench.registry import PRUNERS
    from bench.tracks import describe_track

    budget = _budget(runs)
    ok = runs[(runs["status"] == RunStatus.OK) & runs["pruner"].isin(PRUNERS.names())]
    ok = ok.drop_duplicates(["pruner", "hparams"])  # a plugin's pruner not loaded here is left out
    pruners = [(p, json.loads(h)) for p, h in zip(ok["pruner"], ok["hparams"], strict=True)]
    lines = [
        describe_track(str(runs["recipe"].iat[0]), pruners, budget),
        f"Layer coverage: {layer_coverage(budget)}.",
        _run_times(runs),
    ]
    return [line for line in lines if line]


def _test_size(runs: pd.DataFrame) -> str:
    sizes = sorted({int(n) for n in runs["num_test"].dropna()})
    return f"test set {', '.join(map(str, sizes))} examples" if sizes else "test-set size not recorded"


CALIBRATION_NOTE = (
    "What it cost to find each knob value above (`bench calibrate`, seed 0: a secant search on "
    "shortened runs, then full-budget runs until one lands within 0.5 points of the target): runs, "
    "optimizer steps, and those steps in units of one full-budget run; *landed*: within the tolerance "
    "(no: the closest it got; a pruner whose every near value prunes everything cannot land there). "
    "Every other pruner takes its target sparsity directly: one run."
)


def _num(values: pd.Series, fmt: str, scale: float = 1.0) -> pd.Series:
    return values.map(lambda v: "" if pd.isna(v) else f"{v * scale:{fmt}}").astype(str)


def calibration_table(c: pd.DataFrame) -> str:
    t = pd.DataFrame(
        {
            "pruner": c["pruner"],
            "target %": _num(c["target"], ".0f", 100),
            "knob": c["knob"].astype(str) + " = " + c["value"].map(lambda v: f"{v:.4g}"),
            "sparsity reached %": _num(c["sparsity"], ".2f", 100),
            "landed": c["within_tolerance"].map({True: "yes", False: "no"}).fillna(""),
            "runs": c["runs"].astype(str),
            "steps": c["steps"].astype(str),
            "cost × one run": _num(c["budgets"], ".2f"),
        }
    )
    return table(t, right=set(t.columns) - {"pruner", "knob", "landed"})


def published_table(p: pd.DataFrame) -> str:
    t = pd.DataFrame(
        {
            "pruner": p["pruner"],
            "setting": p["setting"],
            "sparsity %": _num(p["sparsity"], ".2f", 100),
            "top-1 %": _num(p["top1"], ".2f", 100),
            "source": p["source"].fillna("").astype(str),
        }
    )
    if "note" in p.columns:
        t["note"] = p["note"].fillna("").astype(str)
    return table(t, right={"sparsity %", "top-1 %"})


def render(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    matched: pd.DataFrame,
    published: pd.DataFrame | None = None,
    title: str = "Leaderboard",
    figures: dict[tuple[str, ...], list[tuple[str, str]]] | None = None,
    note: str = "",
    targets: tuple[float, ...] = TARGETS,
    tolerance: float = TOLERANCE,
    calibrations: pd.DataFrame | None = None,
    predictions_note: str = "",
    timing_note: str = "",
) -> str:
    """The board's Markdown from a prepared table, its summary and its matched cells with verdicts."""
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    out += reader_summary(matched, targets)
    out += [INTRO, ""]
    for extra in (predictions_note, timing_note):
        if extra:
            out += [extra, ""]
    for key, runs in df.groupby(SECTION, sort=True):
        dataset, model, recipe, budget = key
        out += [
            f"## {dataset} / {model} · {recipe} recipe · {_test_size(runs)}",
            "",
            f"Budget: `{budget}` · recipe `{recipe}` · {_provenance(runs)}",
            "",
        ]
        for line in section_header(runs):
            out += [line, ""]
        s = in_section(summary, key)
        out += [main_table(s) if len(s) else "No finished runs.", ""]
        m = in_section(matched, key)
        if len(m):
            out += [
                "### Accuracy at matched sparsity",
                "",
                matched_note(tolerance),
                "",
                matched_table(m, targets),
                "",
                "### Which differences are significant",
                "",
                *significance_text(m, targets),
                "",
            ]
        if calibrations is not None and len(calibrations):
            c = calibrations[
                (calibrations["dataset"] == dataset)
                & (calibrations["model"] == model)
                & (calibrations["recipe"] == recipe)
            ].sort_values(["pruner", "target"])
            if len(c):
                out += [
                    "### Cost of landing on a sparsity",
                    "",
                    CALIBRATION_NOTE,
                    "",
                    calibration_table(c),
                    "",
                ]
        if published is not None:
            p = in_section(published, key, budget=False)
            if len(p):
                out += ["### Published", "", published_table(p), ""]
        if figures and figures.get(key):
            out += ["### Figures", ""]
            out += [
                f"![{alt}]({name}) ([SVG]({name.removesuffix('.png')}.svg))" for alt, name in figures[key]
            ]
            out += [""]
    return "\n".join(out).rstrip() + "\n"
