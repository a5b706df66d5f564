"""bench.board and bench.plots: tables, measured cells, significance, published rows, figures,
golden Markdown. Regenerate the golden file on purpose with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench import cli, record, results
from bench import stats as bench_stats
from bench.board import markdown
from bench.board.cells import matched_cells
from bench.board.prepare import prepare
from bench.board.published import load_published
from bench.board.significance import verdicts
from bench.board.summary import ok_runs, summarize
from bench.board.write import BEGIN, END, findings_table, tables, write_leaderboard
from bench.calibrate import load_calibrations
from bench.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
SWEEPS = sorted(LEADERBOARDS.glob("*/sweep.toml"))
MIB = 2**20


def row(run_id: str, pruner: str, seed: int, top1: float | None, sparsity: float,
        hp: dict[str, Any] | None = None, *, dataset: str = "digits", model: str = "mlp", status: str = "ok",
        time: float = 10.0, memory: float = 100 * MIB, state: float = 1000.0,
        epochs: int = 60, val: float | None = None, recipe: str = "shared",
        loaded: bool = False, family: str = "sgd") -> dict[str, Any]:
    """One gathered row, with the columns the leaderboard reads; `hp`: the hyperparameters; `val`:
    validation top-1 (default: the test top-1)."""
    return {
        "run_id": run_id, "pruner": pruner, "model": model, "dataset": dataset, "seed": seed,
        "status": status,
        **{f"hparams.{k}": v for k, v in (hp or {}).items()},
        "top1": top1, "val_top1": top1 if val is None else val, "sparsity": sparsity, "macs_dense": 1000.0,
        "macs_sparse": 1000.0 * (1 - sparsity), "num_test": 360,
        "train_time_s": time, "peak_tensor_bytes": memory, "state_bytes": state, "loaded": loaded,
        "budget.epochs": epochs, "budget.batch_size": 32, "budget.lr": 0.1, "budget.lr_schedule": "constant",
        "budget.momentum": 0.0, "budget.val_fraction": 0.1, "budget.recipe": recipe,
        "git_sha": "0123456789abcdef", "device": "cpu (x86_64, 2 cores)",
        "torch_version": "2.14.1", "slurm_job_id": None, "optimizer_family": family,
    }


def old_row(*args: Any, **kw: Any) -> dict[str, Any]:
    """A row gathered from a result written before the validation split, recipes and MACs names."""
    r = row(*args, **kw)
    r["flops_dense"], r["flops_sparse"] = r.pop("macs_dense"), r.pop("macs_sparse")
    for key in ("val_top1", "num_test", "peak_tensor_bytes", "loaded", "budget.val_fraction",
                "budget.recipe", "optimizer_family"):
        del r[key]
    return r


def golden_runs() -> pd.DataFrame:
    """A fixed small results table: two sections, repeated seeds, a diverged and a failed run."""
    rows = [
        row("d0", "dense", 0, 0.970, 0.0, time=10.0, memory=100 * MIB),
        row("d1", "dense", 1, 0.960, 0.0, time=12.0, memory=120 * MIB),
        row("g0", "grda", 0, 0.965, 0.80, {"c": 0.01, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g1", "grda", 1, 0.955, 0.82, {"c": 0.01, "mu": 0.6}, time=13.0, memory=110 * MIB, state=2000.0),
        row("g2", "grda", 0, 0.950, 0.95, {"c": 0.02, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g3", "grda", 1, 0.940, 0.96, {"c": 0.02, "mu": 0.6}, time=11.0, memory=110 * MIB, state=2000.0),
        row("g4", "grda", 2, None, 0.50, {"c": 0.02, "mu": 0.6}, status="diverged"),
        row("m0", "magnitude", 0, 0.950, 0.90, {"sparsity": 0.9}),
        row("m1", "magnitude", 0, 0.900, 0.95, {"sparsity": 0.95}),
        row("m2", "magnitude", 1, None, 0.0, {"sparsity": 0.95}, status="failed"),
        old_row("i0", "grda", 0, 0.7324, 0.9159, {"c": 0.005, "mu": 0.55}, dataset="imagenet",
                model="resnet50", time=3600.0),
        old_row("i1", "dense", 0, 0.6871, 0.0, dataset="imagenet", model="resnet50", time=3000.0),
        old_row("i2", "grda", 0, 0.7314, 0.8728, {"c": 0.005, "mu": 0.51}, dataset="imagenet",
                model="resnet50", time=3600.0),
    ]
    return pd.DataFrame(rows)


def golden_published() -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": "imagenet", "model": "resnet50", "pruner": "grda", "setting": "c=0.005, mu=0.55",
         "sparsity": 0.9159, "top1": 0.7324, "source": "Chao et al. 2020", "published": True,
         "note": "sparsity over all parameters"},
        {"dataset": "cifar10", "model": "vgg16_nobn", "pruner": "dense", "setting": "SGD", "sparsity": 0.0,
         "top1": 0.9082, "source": "Chao et al. 2020", "published": True, "note": ""},
    ])


def render(runs: pd.DataFrame, **kw: Any) -> str:
    """The board Markdown of a runs table (every table computed once, as write_leaderboard does)."""
    df, summary, matched = tables(runs)
    return markdown.render(df, summary, matched, **kw)


# ------------------------------------------------------------------------------ summary, own dense


def test_costs_and_drop_against_own_dense_hand_computed() -> None:
    df = prepare(pd.DataFrame([
        row("d0", "dense", 0, 0.92, 0.0, time=10.0, memory=100.0, state=1000.0),
        row("d1", "dense", 1, 0.90, 0.0, time=14.0, memory=140.0, state=1000.0, loaded=True),
        row("g0", "grda", 0, 0.90, 0.9, time=15.0, memory=150.0, state=2000.0),
        row("g1", "grda", 1, 0.89, 0.9, time=12.0, memory=150.0, state=2000.0),
        row("x0", "grda", 0, 0.9, 0.9, time=15.0, dataset="other"),  # no dense in its section
    ]))
    s = summarize(df).set_index(["dataset", "pruner"])
    # times: quiet runs only on both sides (dense's loaded run 14 s is compared with nothing)
    assert s.loc[("digits", "grda"), "time_vs_dense"] == pytest.approx(13.5 / 10.0)
    assert s.loc[("digits", "dense"), "train_time_s_mean"] == pytest.approx(10.0)
    assert s.loc[("digits", "grda"), "memory_vs_dense"] == pytest.approx(150.0 / 120.0)
    assert s.loc[("digits", "grda"), "state_vs_dense"] == pytest.approx(2.0)
    assert np.isnan(s.loc[("other", "grda"), "time_vs_dense"])
    # drop: per seed 0.92 - 0.90 and 0.90 - 0.89, mean 0.015
    assert s.loc[("digits", "grda"), "drop_vs_dense_mean"] == pytest.approx(0.015)
    assert np.isnan(s.loc[("other", "grda"), "drop_vs_dense_mean"])
    assert s.loc[("digits", "grda"), "macs_reduction_mean"] == pytest.approx(10.0)
    assert s.loc[("digits", "dense"), "loaded_runs"] == 1 and s.loc[("digits", "grda"), "loaded_runs"] == 0


def test_each_row_is_measured_against_the_dense_model_of_its_optimizer_family() -> None:
    rows = [row(f"s{i}", "dense", i, 0.95, 0.0, {"optimizer": "sgd"}, family="sgd") for i in range(2)]
    rows += [row(f"a{i}", "dense", i, 0.98, 0.0, {"optimizer": "adam"}, family="adam") for i in range(2)]
    rows += [row(f"v{i}", "vd", i, 0.97, 0.9, family="adam") for i in range(2)]
    rows += [row(f"g{i}", "grda", i, 0.94, 0.9, family="sgd") for i in range(2)]
    s = summarize(prepare(pd.DataFrame(rows))).set_index(["pruner", "setting"])
    assert s.loc[("vd", "-"), "drop_vs_dense_mean"] == pytest.approx(0.01)  # against dense Adam, not SGD
    assert s.loc[("grda", "-"), "drop_vs_dense_mean"] == pytest.approx(0.01)
    assert list(s.loc["dense"].index) == ["optimizer=adam", "optimizer=sgd"]  # a dense row per family
    md = render(pd.DataFrame(rows))
    assert "| shared | vd | - | 2 | 1.00 ± 0.00 | adam | 97.00 ± 0.00 |" in md


def test_optimizer_family_of_old_runs_is_read_off_their_optimizer() -> None:
    from bench.board.prepare import family_of

    assert family_of("SGD(lr=0.1)") == "sgd" and family_of("GRDA(lr=0.1, c=0.01, mu=0.6)") == "sgd"
    assert family_of("SGD(lr=0.1, momentum=0.9, weight_decay=0.0005)") == "sgd_momentum"
    assert family_of("Adam(lr=0.001, betas=(0.9, 0.999))") == "adam" and family_of(None) is None


def test_settings_name_only_the_varying_hparams_and_sort_numerically() -> None:
    df = prepare(pd.DataFrame([
        row(f"g{i}", "grda", 0, 0.9, 0.9, {"c": c, "mu": 0.6, "prune_all": True})
        for i, c in enumerate((0.02, 0.005, 0.01))
    ] + [row("m", "magnitude", 0, 0.9, 0.9, {"sparsity": 0.9}), row("d", "dense", 0, 0.9, 0.0)]))
    s = summarize(df)
    assert list(s["pruner"]) == ["dense", "grda", "grda", "grda", "magnitude"]
    assert list(s["setting"]) == ["-", "c=0.005", "c=0.01", "c=0.02", "-"]
    assert s.loc[1, "hparams"] == '{"c": 0.005, "mu": 0.6, "prune_all": true}'


def test_budgets_make_separate_sections() -> None:
    df = prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0), row("b", "dense", 0, 0.8, 0.0, epochs=5)]))
    assert sorted(df["budget"]) == ["epochs=5 batch_size=32 lr=0.1 lr_schedule=constant",
                                    "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant"]
    df = prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0) | {"budget.momentum": 0.9}]))
    assert df["budget"].item() == "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant momentum=0.9"
    df = prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0), old_row("b", "dense", 0, 0.9, 0.0)]))
    assert sorted(df["budget"]) == ["epochs=60 batch_size=32 lr=0.1 lr_schedule=constant val_fraction=0",
                                    "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant val_fraction=0.1"]
    df = prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0),
                               row("b", "dense", 0, 0.9, 0.0, recipe="paper")]))
    assert list(df["recipe"]) == ["paper", "shared"] and df["budget"].nunique() == 1


def test_missing_columns_and_empty_tables_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"res\.parquet: missing column\(s\) top1"):
        prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0)]).drop(columns="top1"), "res.parquet")
    with pytest.raises(ConfigError, match=r"res\.parquet: the runs table has no rows"):
        prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0)]).iloc[:0], "res.parquet")


# ------------------------------------------------------------------------------ cells are runs


def cell_of(rows: list[dict], pruner: str, target: float) -> pd.Series:
    df = prepare(pd.DataFrame(rows))
    m = matched_cells(summarize(df), targets=(0.8, 0.9, 0.95))
    return m[(m["pruner"] == pruner) & np.isclose(m["target"], target)].iloc[0]


def test_cell_is_chosen_on_validation_with_ties_broken_by_sparsity_never_by_test() -> None:
    rows = [row(f"x{i}", "gmp", i, 0.90, 0.900, {"sparsity": 0.9}, val=0.97) for i in range(3)]
    # y: the best on test, worse on validation
    rows += [row(f"y{i}", "gmp", i, 0.99, 0.902, {"sparsity": 0.902}, val=0.95) for i in range(3)]
    assert cell_of(rows, "gmp", 0.9)["setting"] == "sparsity=0.9"
    rows += [row(f"z{i}", "gmp", i, 0.80, 0.904, {"sparsity": 0.904}, val=0.97) for i in range(3)]  # val tie
    c = cell_of(rows, "gmp", 0.9)
    assert c["setting"] == "sparsity=0.904" and c["on_level"]
    assert c["sparsity_mean"] == pytest.approx(0.904) and c["top1_mean"] == pytest.approx(0.80)


def test_a_setting_that_misses_its_level_is_shown_with_its_sparsity_and_marked() -> None:
    rows = [row(f"v{i}", "vd", i, 0.98, 0.8223, val=0.98) for i in range(2)]
    c = cell_of(rows, "vd", 0.8)
    assert not c["on_level"] and c["sparsity_mean"] == pytest.approx(0.8223)
    md = render(pd.DataFrame(rows))
    assert "98.00 ± 0.00 ° at 82.23%" in md
    df = prepare(pd.DataFrame(rows))
    m = matched_cells(summarize(df), targets=(0.8, 0.9))
    assert list(m["target"]) == [0.8]  # shown once, at its nearest level, never extrapolated


def test_intervals_never_leave_0_to_100() -> None:
    lo, hi = bench_stats.clip_interval([0.99, 0.02], [0.05, 0.05])
    assert list(lo) == pytest.approx([0.94, 0.0]) and list(hi) == pytest.approx([1.0, 0.07])
    rows = [row(f"a{i}", "gmp", i, t, 0.9, val=0.9) for i, t in enumerate((1.0, 0.97, 1.0))]
    c = cell_of(rows, "gmp", 0.9)
    assert c["top1_high"] == 1.0 and 0 <= c["top1_low"] < c["top1_mean"]
    assert f"[{100 * c['top1_low']:.2f}, 100.00]" in render(pd.DataFrame(rows))


# ------------------------------------------------------------------------------ significance


def level_table(tops: dict[str, list[float]], vals: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pruners at 90% sparsity over len(seeds) seeds; validation means set the ranking."""
    rows = [row(f"{p}{i}", p, i, t, 0.9, val=vals[p]) for p, ts in tops.items() for i, t in enumerate(ts)]
    df = prepare(pd.DataFrame(rows))
    return df, matched_cells(summarize(df), targets=(0.9,))


def test_one_test_image_at_every_seed_is_not_significant() -> None:
    n = 360
    correct_b = np.ones(n, bool)
    correct_b[7] = False  # b misses one image a gets right, at every seed
    df, cells = level_table({"a": [1.0] * 5, "b": [1 - 1 / n] * 5}, {"a": 0.99, "b": 0.98})
    preds = {f"a{i}": np.ones(n, bool) for i in range(5)} | {f"b{i}": correct_b for i in range(5)}
    m = verdicts(cells, ok_runs(df), preds).set_index("pruner")
    assert m.loc["b", "method"] == "seeds × examples bootstrap"
    assert m.loc["b", "diff_vs_leader"] == pytest.approx(1 / n)
    assert m.loc["b", "p_holm"] > 0.05 and list(m["mark"]) == ["tied", "tied"]
    # over seeds alone the same table has no spread: no test, never "p = 0"
    m = verdicts(cells, ok_runs(df)).set_index("pruner")
    assert np.isnan(m.loc["b", "p_vs_leader"]) and list(m["mark"]) == ["tied", "tied"]
    assert bench_stats.paired_t([0.01, 0.01, 0.01]).p != 0


def test_the_leader_that_beats_one_pruner_but_not_another_is_not_best() -> None:
    a = [0.95, 0.96, 0.97, 0.98, 0.99]
    b = [0.94, 0.97, 0.95, 1.00, 0.98]  # within noise of a
    c = [0.80, 0.81, 0.79, 0.80, 0.82]  # far below
    df, cells = level_table({"a": a, "b": b, "c": c}, {"a": 0.99, "b": 0.98, "c": 0.90})
    m = verdicts(cells, ok_runs(df)).sort_values("rank")
    assert list(m["pruner"]) == ["a", "b", "c"] and list(m["mark"]) == ["tied", "tied", ""]
    summary = markdown.verdict_text(m)
    assert summary == "no significant best; tied: a, b"


def test_holm_decision_on_a_fixed_table_matches_a_hand_computation() -> None:
    from scipy import stats

    a = [0.95, 0.96, 0.97, 0.98, 0.99]
    b = [0.90, 0.92, 0.93, 0.93, 0.97]  # a - b: 0.05 0.04 0.04 0.05 0.02
    c = [0.93, 0.93, 0.96, 0.96, 0.96]  # a - c: 0.02 0.03 0.01 0.02 0.03
    df, cells = level_table({"a": a, "b": b, "c": c}, {"a": 0.99, "b": 0.98, "c": 0.97})
    m = verdicts(cells, ok_runs(df)).set_index("pruner")
    # b: mean 0.04, sd sqrt(6e-4 / 4), t = 7.3030 (4 df); c: mean 0.022, sd 0.0083666, t = 5.8797
    p_b, p_c = 2 * stats.t.sf(7.3030, 4), 2 * stats.t.sf(5.8797, 4)
    assert m.loc["b", "p_vs_leader"] == pytest.approx(p_b, rel=1e-4)
    assert m.loc["c", "p_vs_leader"] == pytest.approx(p_c, rel=1e-4)
    # Holm: the smaller p (b's, 0.00187) times 2, then the larger (c's, 0.00419) times 1, made monotone
    assert m.loc["b", "p_holm"] == pytest.approx(2 * p_b, rel=1e-4)
    assert m.loc["c", "p_holm"] == pytest.approx(max(2 * p_b, p_c), rel=1e-4)
    assert list(m.sort_values("rank")["mark"]) == ["best", "", ""]  # both below 0.05 after correction
    assert bench_stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_bootstrap_finds_a_real_difference_and_never_reports_p_zero() -> None:
    rng = np.random.default_rng(0)
    d = (rng.random((5, 2000)) < 0.06).astype(float) - (rng.random((5, 2000)) < 0.01)
    t = bench_stats.paired_bootstrap(d, replicates=2000)
    assert t.p < 0.01 and t.p > 0 and t.low < t.mean < t.high
    same = bench_stats.paired_bootstrap(np.zeros((3, 50)))
    assert same.p == 1.0 and same.mean == 0.0


def test_words_and_summary_name_the_method_and_the_verdict() -> None:
    a = [0.95, 0.96, 0.97, 0.98, 0.99]
    rows = [row(f"a{i}", "a", i, t, 0.9, val=0.99) for i, t in enumerate(a)]
    rows += [row(f"b{i}", "b", i, t - 0.1 + 0.01 * (i % 2), 0.9, val=0.9) for i, t in enumerate(a)]
    md = render(pd.DataFrame(rows))
    assert md.index("## Summary") < md.index("## digits / mlp")
    assert "  - 90%: **a** 97.00% [" in md
    assert "Holm-adjusted" in md and "resamples seeds, then test examples" in md
    assert "- **90%**: a leads on validation (test top-1 97.00%); leader minus each other pruner, in " \
           "points: b +9.60 [" in md
    assert "significant (seeds-only t-test). It is significantly the best." in md


# ------------------------------------------------------------------------------ published rows


def test_published_rows_load_and_show_for_matching_sections() -> None:
    pub = load_published()
    assert pub["published"].all()
    keys = set(zip(pub["dataset"], pub["model"], strict=True))
    assert keys == {("imagenet", "resnet50"), ("cifar10", "vgg16_nobn"), ("cifar10", "wrn28_10"),
                    ("cifar100", "wrn28_10"), ("mnist", "lenet300_100")}
    md = render(golden_runs(), published=pub)
    imagenet = md[md.index("## imagenet / resnet50"):]
    assert "### Published" in imagenet and "| grda | c=0.005, mu=0.55 | 91.59 | 73.24 |" in imagenet
    digits = md[md.index("## digits / mlp"):md.index("## imagenet")]
    assert "### Published" not in digits


def test_bad_published_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "pub.csv"
    bad.write_text("dataset,model,pruner,setting,sparsity,top1,source,published\n"
                   "imagenet,resnet50,grda,-,91.59,0.7324,x,True\n")
    with pytest.raises(ConfigError, match=r"pub\.csv: data row 1, column sparsity = 91\.59: expected a"):
        load_published(bad)
    bad.write_text("dataset,model,sparsity\n")
    with pytest.raises(ConfigError, match=r"pub\.csv: missing column\(s\) pruner, setting, top1"):
        load_published(bad)


# ------------------------------------------------------------------------------ columns, glossary


def test_board_headers_compare_labels_and_glossary_derive_from_the_record() -> None:
    from bench.compare import Comparison

    md = render(golden_runs())
    start = "| recipe | pruner | setting | seeds | "
    header = next(line for line in md.splitlines() if line.startswith(start))
    assert header == start + " | ".join(s.header for s in record.BOARD) + " |"
    glossary = record.glossary()
    assert all(f"- **{s.header}**: " in glossary for s in record.BOARD)
    assert len(glossary.splitlines()) == len(record.BOARD)
    runs = pd.DataFrame([row(f"{p}{i}", p, i, 0.9, 0.9) for p in ("a", "b") for i in range(2)])
    from bench.compare import compare

    c = compare(runs, "a", "b")
    assert isinstance(c, Comparison)
    labels = [line.split(" | ")[0].removeprefix("| ") for line in c.markdown().splitlines()[2:]]
    assert labels == [s.header for s in record.COMPARED if s.name in runs.columns]
    shared = {s.name for s in record.COMPARED} & {s.name for s in record.BOARD}
    assert shared and all(record.SHOWN[n].header in header for n in shared)


def test_the_readme_glossary_is_the_generated_one() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    begin = "<!-- column glossary: generated by bench.record.glossary() -->"
    end = "<!-- end of column glossary -->"
    if begin not in readme:
        pytest.skip("the README has no column glossary block yet")
    block = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert block.strip("\n") == record.glossary().strip("\n")


# ------------------------------------------------------------------------------ Markdown, files


def test_markdown_matches_golden_file(tmp_path: Path) -> None:
    readme = write_leaderboard(golden_runs(), tmp_path, published=golden_published(),
                               title="Leaderboard: golden", plots=False, note="A fixed table.")
    md = readme.read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(md)
    assert md == GOLDEN.read_text(), "leaderboard Markdown changed; if on purpose, rerun with UPDATE_GOLDEN=1"
    again = write_leaderboard(golden_runs().sample(frac=1, random_state=0), tmp_path / "again",
                              published=golden_published(), title="Leaderboard: golden", plots=False,
                              note="A fixed table.")
    assert again.read_text() == md
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(table) == 8 and set(table.columns) >= {"top1_mean", "top1_ci", "seeds", "time_vs_dense"}
    matched = pd.read_csv(tmp_path / "matched_sparsity.csv")
    assert set(matched.columns) >= {"top1_low", "top1_high", "p_holm", "mark", "settings", "on_level"}


def test_hand_written_readme_text_survives_and_bad_markers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n")
    write_leaderboard(golden_runs(), tmp_path, plots=False, title="first")
    write_leaderboard(golden_runs().iloc[:4], tmp_path, plots=False, title="second")
    md = (tmp_path / "README.md").read_text()
    intro = "# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n\n"
    assert md.startswith(intro + BEGIN + "\n# second\n")
    assert md.endswith(END + "\n") and md.count(BEGIN) == 1 and "# first" not in md
    write_leaderboard(golden_runs().iloc[:4], tmp_path, plots=False, title="second")
    assert (tmp_path / "README.md").read_text() == md  # no growth on rebuild
    (tmp_path / "README.md").write_text(f"intro\n{END}\nold\n{BEGIN}\n")
    with pytest.raises(ConfigError, match=r"README\.md: its generated-block markers .* end before begin"):
        write_leaderboard(golden_runs(), tmp_path, plots=False)
    (tmp_path / "README.md").write_bytes(b"caf\xe9\n")
    with pytest.raises(ConfigError, match=r"README\.md: not UTF-8 text \(byte 3\)"):
        write_leaderboard(golden_runs(), tmp_path, plots=False)
    assert (tmp_path / "README.md").read_bytes() == b"caf\xe9\n"


def test_old_result_files_load_and_are_shown_as_not_validation_selected(tmp_path: Path) -> None:
    run = tmp_path / "grda-old"
    run.mkdir()
    result = {k: v for k, v in row("grda-old", "grda", 0, 0.95, 0.9, {"c": 0.02}).items()
              if not k.startswith(("hparams.", "budget.", "val_top1", "macs_", "num_test", "peak_tensor",
                                   "optimizer_family"))}
    result |= {"config_hash": "x", "hparams": {"c": 0.02}, "budget": {"epochs": 60}, "state_bytes": 1000,
               "flops_dense": 1000.0, "flops_sparse": 100.0}
    (run / "result.json").write_text(json.dumps(result))
    runs = results.load(tmp_path)
    assert runs["macs_dense"].item() == 1000.0 and runs["macs_sparse"].item() == 100.0  # renamed on load
    df = prepare(runs)
    assert not df["validated"].any() and (df["budget.val_fraction"] == 0).all()
    assert "95.00 †" in render(runs)


def history_of(runs: pd.DataFrame) -> pd.DataFrame:
    ok = runs[runs["status"] != "failed"]
    return pd.DataFrame([
        {"run_id": r.run_id, "pruner": r.pruner, "model": r.model, "dataset": r.dataset, "seed": r.seed,
         "epoch": e, "sparsity": r.sparsity * (e + 1) / 4, "top1": r.top1}
        for r in ok.itertuples() for e in range(4)
    ])


def test_figures_are_written_linked_and_share_one_style_per_pruner(tmp_path: Path, monkeypatch) -> None:
    from bench import plots

    styles = plots.pruner_styles(["grda"])
    assert styles["grda"] == plots.pruner_styles(["grda", "zzz_plugin"])["grda"]
    looks = [(s["color"], s["marker"], s["ls"]) for s in plots.pruner_styles().values()]
    assert len(set(looks)) == len(looks)  # no two pruners drawn alike
    seen = []
    for name in ("accuracy_sparsity", "sparsity_epochs", "cost_per_level"):
        real = getattr(plots, name)

        def spy(*args, _real=real, **kw):
            seen.append(next(a for a in args if isinstance(a, dict)))
            return _real(*args, **kw)
        monkeypatch.setattr(plots, name, spy)
    runs = golden_runs()
    readme = write_leaderboard(runs, tmp_path, history_of(runs), golden_published(), plots=True)
    assert len(seen) >= 4 and all(p == seen[0] for p in seen)
    md = readme.read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["digits-mlp-accuracy-sparsity.png", "digits-mlp-cost.png",
                    "digits-mlp-sparsity-epoch.png", "imagenet-resnet50-accuracy-sparsity.png",
                    "imagenet-resnet50-sparsity-epoch.png"]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in md
        svg = (tmp_path / name).with_suffix(".svg")
        assert svg.read_text().lstrip().startswith("<?xml") and f"]({svg.name})" in md


def test_speedup_median_interval_is_distribution_free() -> None:
    from bench.plots import _median_interval

    med, lo, hi = _median_interval(np.arange(1.0, 21.0))
    assert med == 10.5 and lo < med < hi and 1.0 <= lo and hi <= 20.0


def test_leaderboard_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.parquet"
    results.write(results.Gathered(golden_runs(), pd.DataFrame()), path, history=False)
    assert cli.main(["leaderboard", str(path), "-o", str(tmp_path / "lb"), "--no-plots"]) == 0
    md = (tmp_path / "lb" / "README.md").read_text()
    assert "# Leaderboard: lb\n" in md and "### Published" in md  # the repository's published rows
    assert cli.main(["leaderboard", str(path), "-o", str(tmp_path / "lb2"), "--no-plots",
                     "--published", "none"]) == 0
    assert "### Published" not in (tmp_path / "lb2" / "README.md").read_text()
    capsys.readouterr()
    assert cli.main(["leaderboard", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "x")]) == 2
    assert "nope.parquet: no such results file" in capsys.readouterr().err
    broken = results.Gathered(golden_runs().drop(columns="sparsity"), pd.DataFrame())
    results.write(broken, path, history=False)
    assert cli.main(["leaderboard", str(path), "-o", str(tmp_path / "x")]) == 2
    assert "results.parquet: missing column(s) sparsity" in capsys.readouterr().err
    pd.DataFrame({"a": [1]}).to_parquet(path)
    assert cli.main(["leaderboard", str(path), "-o", str(tmp_path / "x")]) == 2
    assert "results.parquet: not a runs table (no column(s) run_id" in capsys.readouterr().err
    golden_runs().iloc[:0].to_parquet(path)
    assert cli.main(["leaderboard", str(path), "-o", str(tmp_path / "x")]) == 2
    assert "results.parquet: the runs table has no rows" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_findings_table_reads_the_committed_boards(tmp_path: Path) -> None:
    a = [0.95, 0.96, 0.97, 0.98, 0.99]
    rows = [row(f"a{i}", "a", i, t, 0.9, val=0.99) for i, t in enumerate(a)]
    rows += [row(f"b{i}", "b", i, t - 0.1 + 0.01 * (i % 2), 0.9, val=0.9) for i, t in enumerate(a)]
    write_leaderboard(pd.DataFrame(rows), tmp_path / "boards" / "one", plots=False)
    text = findings_table([tmp_path / "boards" / "one"], relative_to=tmp_path)
    lines = text.splitlines()
    assert lines[0] == "| board | recipe | 90% | 95% | 98% |"
    assert lines[2].startswith("| [one](boards/one/) | shared | **a** 97.00% [")
    assert lines[2].endswith("| no pruner on this level | no pruner on this level |")
# ------------------------------------------------------------------------------ sweeps, board


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.parent.name for p in SWEEPS])
def test_committed_sweeps_validate(sweep: Path) -> None:
    from bench.sweep import load_sweep

    spec = load_sweep(sweep)
    assert spec.name == sweep.parent.name
    assert "dense" in spec.per_pruner() and "grda" in spec.per_pruner()
    assert (sweep.parent / "README.md").is_file()


def test_committed_sweeps_dry_run(capsys, monkeypatch) -> None:
    """Every committed sweep validates and dry-runs. The digits one is probed for real; the
    paper-scale ones (each probe builds VGG16, WRN-28-10 or ResNet-50 on a CPU: minutes per file)
    with a stand-in probe, so that what is tested is the file and the dry run, not this CPU."""
    from bench import estimate

    digits = LEADERBOARDS / "digits-mlp" / "sweep.toml"
    assert cli.main(["sweep", str(digits), "--dry-run"]) == 0
    assert "nothing was submitted or written" in capsys.readouterr().out
    monkeypatch.setattr(estimate, "_probe", lambda config, steps: (5.0, 0.1, 1000, "stand-in probe"))
    for sweep in SWEEPS:
        assert cli.main(["sweep", str(sweep), "--dry-run"]) == 0, sweep
        out = capsys.readouterr().out
        assert "nothing was submitted or written" in out and "stand-in probe" in out, sweep


def tiny_board(tmp_path: Path, monkeypatch, sweep: str) -> Path:
    """leaderboards/tiny/ holding sweep.toml (`name = "tiny"` and `sweep`), tmp_path the working folder."""
    board = tmp_path / "leaderboards" / "tiny"
    board.mkdir(parents=True, exist_ok=True)
    (board / "sweep.toml").write_text(f'name = "tiny"\n{sweep}')
    monkeypatch.chdir(tmp_path)
    return board


GRID = '[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\nseeds = [0]\n'


def test_board_rejects_bad_executor_and_profile_before_running(tmp_path: Path, monkeypatch, capsys) -> None:
    tiny_board(tmp_path, monkeypatch, f"[budget]\nepochs = 1\n{GRID}[pruners.dense]\n")
    assert cli.main(["board", "leaderboards/tiny", "--executor", "kubernetes"]) == 2
    assert "executor = 'kubernetes': valid choices: local, slurm" in capsys.readouterr().err
    assert cli.main(["board", "leaderboards/tiny", "--executor", "slurm", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--profile nope: no such profile (slurm/profiles/nope.toml)" in err
    assert "available: example-gpu, example-gpu-x4, local-test" in err
    assert cli.main(["board", "leaderboards/tiny", "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "needs --profile NAME; available: example-gpu, example-gpu-x4, local-test" in err
    mnist = '[grid]\nmodels = ["lenet300_100"]\ndatasets = ["mnist"]\n[pruners.dense]\n'
    tiny_board(tmp_path, monkeypatch, f'data_dir = "nowhere"\n{mnist}')
    assert cli.main(["board", "leaderboards/tiny"]) == 2
    assert "dataset 'mnist': files not found at 'nowhere/MNIST/raw'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["leaderboards", "sweep.toml", "tiny"]


@pytest.mark.slow
def test_board_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """Slow (~20 s): `bench board` on a 2-epoch dense + gRDA sweep through submitit's local executor."""
    pruners = "[pruners.dense]\n[pruners.grda]\nc = 0.02\nmu = [0.55, 0.7]\n"
    board = tiny_board(tmp_path, monkeypatch, f"[budget]\nepochs = 2\n{GRID}{pruners}")
    assert cli.main(["board", str(board.relative_to(tmp_path)), "--no-plots"]) == 0
    runs = pd.read_parquet(board / "results.parquet")
    assert sorted(runs["pruner"]) == ["dense", "grda", "grda"] and (runs["status"] == "ok").all()
    assert len(pd.read_parquet(board / "results.history.parquet")) == 6
    md = (board / "README.md").read_text()
    assert "bench board leaderboards/tiny" in md and "| grda | mu=0.55 | 1 |" in md
    assert (tmp_path / "runs" / "tiny").is_dir()


def test_loaded_means_more_than_one_and_a_half_runnable_processes_per_core() -> None:
    from bench.record import is_loaded

    assert is_loaded(2.5, 2.7, 2) is False  # a 2-core sweep with its own two one-thread jobs
    assert is_loaded(1.0, 3.2, 2) is True  # something else running on top of it
    assert is_loaded(None, None, 2) is None and is_loaded(5.0, None, None) is None


def test_calibration_cost_is_shown_and_a_malformed_record_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "calibration"
    folder.mkdir()
    rec = {"dataset": "digits", "model": "mlp", "pruner": "grda", "target": 0.9, "value": 0.0165,
           "knob": {"name": "c", "low": 1e-4, "high": 1.0}, "sparsity": 0.8988, "within_tolerance": True,
           "budget": {"recipe": "shared"}, "cost": {"runs": 9, "steps": 12300, "train_macs": 1.0},
           "trials": [{"phase": "search", "steps": 600}, {"phase": "full", "steps": 2460}]}
    (folder / "calibration-grda-0.9.json").write_text(json.dumps(rec))
    cal = load_calibrations(folder)
    assert len(cal) == 1 and cal.loc[0, "knob"] == "c" and cal.loc[0, "budgets"] == pytest.approx(5.0)
    section = render(golden_runs(), calibrations=cal)
    section = section[section.index("## digits / mlp"):]
    assert "### Cost of landing on a sparsity" in section
    assert "| grda | 90 | c = 0.0165 | 89.88 | yes | 9 | 12300 | 5.00 |" in section
    (folder / "calibration-broken.json").write_text(json.dumps(rec | {"cost": {"runs": "many"}}))
    with pytest.raises(ConfigError, match=r"calibration-broken\.json: malformed calibration record "
                                          r"\(field\(s\) cost\.runs, cost\.steps"):
        load_calibrations(folder)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-mlp-paper"])
def test_committed_digits_boards_rebuild_without_running(tmp_path: Path, name: str, capsys) -> None:
    """`bench board DIR --no-run` rebuilds a committed board from its results.parquet (no training)."""
    out = tmp_path / name
    assert cli.main(["board", str(LEADERBOARDS / name), "--no-run", "--no-plots",
                     "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0, capsys.readouterr().err
    md = (out / "README.md").read_text()
    assert md.count(BEGIN) == 1 and "## Summary" in md and "### Which differences are significant" in md
    matched = pd.read_csv(out / "matched_sparsity.csv")
    assert matched["top1_low"].min() >= 0 and matched["top1_high"].max() <= 1
    on = matched[matched["on_level"]]
    assert ((on["sparsity_mean"] - on["target"]).abs() <= 0.005 + 1e-9).all()


# ------------------------------------------------------------------------------ timing phase


def test_timing_phase_times_each_setting_against_dense_and_feeds_the_time_columns(tmp_path: Path) -> None:
    from bench.board import timing
    from bench.config import Budget, RunConfig

    budget = Budget(epochs=1, batch_size=32)
    cells = [RunConfig(pruner="dense", model="mlp", dataset="digits", seed=s, budget=budget) for s in (0, 1)]
    cells += [RunConfig(pruner="magnitude", model="mlp", dataset="digits", seed=s, budget=budget,
                        hparams={"sparsity": 0.9}) for s in (0, 1)]
    (config, run_ids, dense), = timing.settings(cells)
    assert config.seed == 0 and dense.pruner == "dense" and run_ids == [c.run_id for c in cells[2:]]
    written = timing.time_board(cells, tmp_path / "timing", steps=2, warmup=1, rounds=3)
    rec = json.loads(written[0].read_text())
    assert len(rec["ratio_per_round"]) == 3 and rec["step_ms"] > 0 and rec["dense_step_ms"] > 0
    t = timing.load_timings(tmp_path / "timing")
    assert list(t["run_id"]) == run_ids
    mid, lo, hi = timing._ratio_interval(rec["ratio_per_round"])
    assert lo <= mid <= hi and t["timed_vs_dense"].iat[0] == pytest.approx(mid)
    rows = [row(c.run_id, c.pruner, c.seed, 0.9, 0.0 if c.pruner == "dense" else 0.9,
                {"sparsity": 0.9} if c.pruner != "dense" else None, time=10.0 + 90 * (c.pruner != "dense"))
            for c in cells]
    s = summarize(prepare(pd.DataFrame(rows)), t.assign(timing_loaded=False)).set_index("pruner")
    assert s.loc["magnitude", "time_vs_dense"] == pytest.approx(mid)  # not the runs' 100 s / 10 s
    assert s.loc["dense", "time_vs_dense"] == 1.0
    s = summarize(prepare(pd.DataFrame(rows)), t.assign(timing_loaded=True)).set_index("pruner")
    assert s.loc["magnitude", "time_vs_dense"] == pytest.approx(10.0)  # a loaded record is never used
    (tmp_path / "timing" / "timing-bad.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"timing-bad\.json: malformed timing record"):
        timing.load_timings(tmp_path / "timing")
