"""bench.leaderboard and bench.plots: tables, matched sparsity, published rows, figures, golden
Markdown. Regenerate the golden file on purpose with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench import cli, leaderboard, results
from bench import stats as bench_stats
from bench.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
SWEEPS = sorted(LEADERBOARDS.glob("*/sweep.toml"))
MIB = 2**20


def row(run_id: str, pruner: str, seed: int, top1: float | None, sparsity: float,
        hp: dict[str, Any] | None = None, *, dataset: str = "digits", model: str = "mlp", status: str = "ok",
        time: float = 10.0, memory: float = 100 * MIB, state: float = 1000.0,
        epochs: int = 60, val: float | None = None, recipe: str = "shared",
        loaded: bool = False) -> dict[str, Any]:
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
        "torch_version": "2.14.1", "slurm_job_id": None,
    }


def old_row(*args: Any, **kw: Any) -> dict[str, Any]:
    """A row gathered from a result written before the validation split, recipes and MACs names."""
    r = row(*args, **kw)
    r["flops_dense"], r["flops_sparse"] = r.pop("macs_dense"), r.pop("macs_sparse")
    for key in ("val_top1", "num_test", "peak_tensor_bytes", "loaded", "budget.val_fraction",
                "budget.recipe"):
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


# ------------------------------------------------------------------------------ Pareto, matching


def test_pareto_front_hand_computed() -> None:
    pts = pd.DataFrame({
        "name": ["A", "B", "C", "D", "E", "F", "G"],
        "sparsity": [0.50, 0.80, 0.70, 0.90, 0.95, 0.95, 0.50],
        "top1": [0.95, 0.93, 0.90, 0.93, 0.85, 0.80, 0.95],
    })
    # B is dominated by D (same top-1, sparser), C by B, F by E (same sparsity), G duplicates A
    front = leaderboard.pareto_front(pts)
    assert list(front["name"]) == ["A", "D", "E"]
    assert front["top1"].is_monotonic_decreasing and front["sparsity"].is_monotonic_increasing


def test_matched_sparsity_interpolation_hand_computed() -> None:
    front = pd.DataFrame({"sparsity": [0.50, 0.90, 0.95], "top1": [0.95, 0.93, 0.85]})
    got = leaderboard.interpolate(front, (0.45, 0.496, 0.80, 0.90, 0.93, 0.954, 0.98))
    # 0.80 lies 3/4 of the way from 0.50 to 0.90: 0.95 + 0.75 * (0.93 - 0.95) = 0.935;
    # 0.93: 0.93 + 0.6 * (0.85 - 0.93) = 0.882; 0.954 is within 0.005 of the last point: 0.85;
    # 0.45 and 0.98 are outside [0.495, 0.955]: blank; 0.496 holds the first point
    np.testing.assert_allclose(got, [np.nan, 0.95, 0.935, 0.93, 0.882, 0.85, np.nan])
    # below the least sparse front point the front holds flat, down to the least sparse run
    lone = pd.DataFrame({"sparsity": [0.96], "top1": [0.97]})
    got = leaderboard.interpolate(lone, (0.8, 0.9, 0.98), lowest=0.85)
    np.testing.assert_allclose(got, [np.nan, 0.97, np.nan])


def test_matched_sparsity_uses_per_setting_seed_means() -> None:
    df = leaderboard.prepare(pd.DataFrame([
        # seed means: c=0.01 -> 0.95 @ 0.80, c=0.02 -> 0.90 @ 0.95
        row("a0", "grda", 0, 0.96, 0.78, {"c": 0.01}), row("a1", "grda", 1, 0.94, 0.82, {"c": 0.01}),
        row("b0", "grda", 0, 0.90, 1.00, {"c": 0.02}), row("b1", "grda", 1, 0.90, 0.90, {"c": 0.02}),
        row("m0", "magnitude", 0, 0.97, 0.90, {"sparsity": 0.9}),
    ]))
    m = leaderboard.matched_sparsity(df).set_index(["pruner", "target"])["top1_mean"]
    assert m.loc[("grda", 0.80)] == pytest.approx(0.95)
    assert m.loc[("grda", 0.90)] == pytest.approx(0.95 - 2 / 3 * 0.05)
    assert m.loc[("grda", 0.95)] == pytest.approx(0.90)
    assert ("grda", 0.98) not in m.index and ("magnitude", 0.80) not in m.index
    assert m.loc[("magnitude", 0.90)] == pytest.approx(0.97)
    assert "dense" not in m.index.get_level_values("pruner")


# ------------------------------------------------------------------------------ summary table


def test_relative_to_dense_hand_computed() -> None:
    df = leaderboard.prepare(pd.DataFrame([
        row("d0", "dense", 0, 0.9, 0.0, time=10.0, memory=100.0, state=1000.0),
        row("d1", "dense", 1, 0.9, 0.0, time=14.0, memory=140.0, state=1000.0, loaded=True),
        row("g0", "grda", 0, 0.9, 0.9, time=15.0, memory=150.0, state=2000.0),
        row("g1", "grda", 1, 0.9, 0.9, time=12.0, memory=150.0, state=2000.0),
        row("x0", "grda", 0, 0.9, 0.9, time=15.0, dataset="other"),  # no dense in its section
    ]))
    s = leaderboard.summarize(df).set_index(["dataset", "pruner"])
    assert s.loc[("digits", "grda"), "time_vs_dense"] == pytest.approx(13.5 / 12.0)
    assert s.loc[("digits", "grda"), "memory_vs_dense"] == pytest.approx(150.0 / 120.0)
    assert s.loc[("digits", "grda"), "state_vs_dense"] == pytest.approx(2.0)
    assert s.loc[("digits", "dense"), "time_vs_dense"] == pytest.approx(1.0)
    assert np.isnan(s.loc[("other", "grda"), "time_vs_dense"])
    assert s.loc[("digits", "grda"), "train_time_s_std"] == pytest.approx(np.std([15.0, 12.0], ddof=1))
    assert s.loc[("digits", "grda"), "macs_reduction_mean"] == pytest.approx(10.0)
    assert s.loc[("digits", "dense"), "loaded_runs"] == 1 and s.loc[("digits", "grda"), "loaded_runs"] == 0
    per_run = leaderboard.relative_to_dense(df[df["status"] == "ok"]).set_index("run_id")
    assert per_run.loc["g1", "time_vs_dense"] == pytest.approx(1.0)


def test_settings_name_only_the_varying_hparams_and_sort_numerically() -> None:
    df = leaderboard.prepare(pd.DataFrame([
        row(f"g{i}", "grda", 0, 0.9, 0.9, {"c": c, "mu": 0.6, "prune_all": True})
        for i, c in enumerate((0.02, 0.005, 0.01))
    ] + [row("m", "magnitude", 0, 0.9, 0.9, {"sparsity": 0.9}), row("d", "dense", 0, 0.9, 0.0)]))
    s = leaderboard.summarize(df)
    assert list(s["pruner"]) == ["dense", "grda", "grda", "grda", "magnitude"]
    assert list(s["setting"]) == ["-", "c=0.005", "c=0.01", "c=0.02", "-"]
    assert s.loc[1, "hparams"] == '{"c": 0.005, "mu": 0.6, "prune_all": true}'


def test_budgets_make_separate_sections() -> None:
    df = pd.DataFrame([row("a", "dense", 0, 0.9, 0.0), row("b", "dense", 0, 0.8, 0.0, epochs=5)])
    df = leaderboard.prepare(df)
    assert sorted(df["budget"]) == ["epochs=5 batch_size=32 lr=0.1 lr_schedule=constant",
                                    "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant"]
    # a non-default field is shown too; an old run (no validation split) trained with val_fraction 0
    df = leaderboard.prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0) | {"budget.momentum": 0.9}]))
    assert df["budget"].item() == "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant momentum=0.9"
    df = leaderboard.prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0),
                                           old_row("b", "dense", 0, 0.9, 0.0)]))
    assert sorted(df["budget"]) == ["epochs=60 batch_size=32 lr=0.1 lr_schedule=constant val_fraction=0",
                                    "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant val_fraction=0.1"]
    # the recipe is a column and a section of its own, never part of the budget label
    df = leaderboard.prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0), row("b", "dense", 0, 0.9, 0.0,
                                                                              recipe="paper")]))
    assert list(df["recipe"]) == ["paper", "shared"] and df["budget"].nunique() == 1


def test_missing_columns_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"res\.parquet: missing column\(s\) top1"):
        leaderboard.prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0)]).drop(columns="top1"),
                            "res.parquet")


# ------------------------------------------------------------------------------ published rows


def test_published_rows_load_and_show_for_matching_sections() -> None:
    pub = leaderboard.load_published()
    assert pub["published"].all()
    keys = set(zip(pub["dataset"], pub["model"], strict=True))
    assert keys == {("imagenet", "resnet50"), ("cifar10", "vgg16_nobn"), ("cifar10", "wrn28_10"),
                    ("cifar100", "wrn28_10"), ("mnist", "lenet300_100")}
    grda = pub[(pub["dataset"] == "imagenet") & (pub["pruner"] == "grda")].set_index("setting")
    assert grda.loc["c=0.005, mu=0.55", "top1"] == pytest.approx(0.7324)
    assert grda.loc["c=0.005, mu=0.55", "sparsity"] == pytest.approx(0.9159)
    assert set(pub["pruner"]) == {"dense", "grda", "str", "gmp", "vd", "random_gradual"}

    md = leaderboard.render(leaderboard.prepare(golden_runs()), pub)
    imagenet = md[md.index("## imagenet / resnet50"):]
    assert "### Published" in imagenet and "| grda | c=0.005, mu=0.55 | 91.59 | 73.24 |" in imagenet
    assert "| random_gradual | sparsity=0.98 | 98.00 | 43.99 |" in imagenet
    digits = md[md.index("## digits / mlp"):md.index("## imagenet")]
    assert "### Published" not in digits


def test_bad_published_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "pub.csv"
    bad.write_text("dataset,model,pruner,setting,sparsity,top1,source,published\n"
                   "imagenet,resnet50,grda,-,91.59,0.7324,x,True\n")
    with pytest.raises(ConfigError, match=r"pub\.csv: data row 1, column sparsity = 91\.59: expected a"):
        leaderboard.load_published(bad)
    bad.write_text("dataset,model,sparsity\n")
    with pytest.raises(ConfigError, match=r"pub\.csv: missing column\(s\) pruner, setting, top1"):
        leaderboard.load_published(bad)


# ------------------------------------------------------------------------------ Markdown, files


def test_markdown_matches_golden_file(tmp_path: Path) -> None:
    readme = leaderboard.write_leaderboard(golden_runs(), tmp_path, published=golden_published(),
                                           title="Leaderboard: golden", plots=False, note="A fixed table.")
    md = readme.read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(md)
    assert md == GOLDEN.read_text(), "leaderboard Markdown changed; if on purpose, rerun with UPDATE_GOLDEN=1"
    # the same input renders the same bytes; the CSVs hold the same rows
    again = leaderboard.write_leaderboard(golden_runs().sample(frac=1, random_state=0), tmp_path / "again",
                                          published=golden_published(), title="Leaderboard: golden",
                                          plots=False, note="A fixed table.")
    assert again.read_text() == md
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(table) == 8 and set(table.columns) >= {"top1_mean", "top1_ci", "seeds", "time_vs_dense"}
    matched = pd.read_csv(tmp_path / "matched_sparsity.csv")
    assert len(matched) == 5 and set(matched.columns) >= {"top1_ci", "p_vs_leader", "mark", "settings"}


def test_hand_written_readme_text_survives_regeneration(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n")
    leaderboard.write_leaderboard(golden_runs(), tmp_path, plots=False, title="first")
    leaderboard.write_leaderboard(golden_runs().iloc[:4], tmp_path, plots=False, title="second")
    md = (tmp_path / "README.md").read_text()
    intro = "# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n\n"
    assert md.startswith(intro + leaderboard.BEGIN + "\n# second\n")
    assert md.endswith(leaderboard.END + "\n") and md.count(leaderboard.BEGIN) == 1 and "# first" not in md


def test_matched_values_and_ties_in_markdown() -> None:
    md = leaderboard.render(leaderboard.prepare(golden_runs()))
    # grda's front: seed means 0.960 @ 0.81 and 0.945 @ 0.955 (the diverged run left out); at 90%:
    # 0.960 - 0.015 * 0.09 / 0.145 = 0.95069; at 95%: 0.960 - 0.015 * 0.14 / 0.145 = 0.94552; 80%
    # lies below its least sparse run (0.81 - 0.005): blank. magnitude: 0.95 @ 0.90, 0.90 @ 0.95, one
    # seed each: no shared seeds to test, so the leaders are tied. Half-width of two seeds 0.005
    # apart: t(0.975, 1) * 0.00707 / sqrt(2) = 12.706 * 0.005 = 6.35 points.
    assert "| shared | grda | 2 |  | *95.07 ± 6.35* (tied) | *94.55 ± 6.35* (tied) |  |  |" in md
    assert "| shared | magnitude | 2 |  | *95.00* (tied) | *90.00* (tied) |  |  |" in md
    assert "- **90%**: grda leads on validation (test top-1 95.07%); not significantly different from " \
           "magnitude (too few shared seeds). No significant best: the leaders are tied." in md


FIVE_SEEDS = range(5)


def significance_table(b_top1: list[float]) -> pd.DataFrame:
    """Three pruners at 90% sparsity, five seeds; a leads on validation, b and c follow."""
    a_top1 = [0.95, 0.96, 0.97, 0.98, 0.99]
    c_top1 = [0.80, 0.81, 0.79, 0.80, 0.82]
    rows = [row(f"{p}{i}", p, i, t, 0.9, {"sparsity": 0.9}, val=v)
            for p, tops, v in (("a", a_top1, 0.99), ("b", b_top1, 0.98), ("c", c_top1, 0.90))
            for i, t in zip(FIVE_SEEDS, tops, strict=True)]
    return leaderboard.prepare(pd.DataFrame(rows))


def test_intervals_and_paired_significance_hand_computed() -> None:
    from scipy import stats

    # a - b per seed: 0.05, 0.04, 0.04, 0.05, 0.02: mean 0.04, sample sd sqrt(6e-4 / 4) = 0.0122474,
    # t = 0.04 / (0.0122474 / sqrt 5) = 7.3030 with 4 degrees of freedom: p = 2 * P(T4 > 7.3030)
    m = leaderboard.matched_sparsity(significance_table([0.90, 0.92, 0.93, 0.93, 0.97]), targets=(0.9,))
    m = m.set_index("pruner")
    assert list(m.sort_values("rank").index) == ["a", "b", "c"]  # ranked on validation
    assert m.loc["b", "diff_vs_leader"] == pytest.approx(0.04)
    assert m.loc["b", "p_vs_leader"] == pytest.approx(2 * stats.t.sf(7.3030, 4), rel=1e-4)
    assert m.loc["b", "p_vs_leader"] < 0.01 and m.loc["b", "pairs"] == 5
    # a: mean 0.97, sd 0.0158114; half-width t(0.975, 4) = 2.776445 * 0.0158114 / sqrt 5 = 0.0196324
    assert m.loc["a", "top1_mean"] == pytest.approx(0.97)
    assert m.loc["a", "top1_ci"] == pytest.approx(2.776445 * 0.0158114 / 5**0.5, rel=1e-5)
    assert bench_stats.t_halfwidth(0.02, 3) == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-6)
    assert list(m.sort_values("rank")["mark"]) == ["best", "", ""]
    # b within noise of a (differences 0.01, -0.01, 0.02, -0.02, 0.01: p = 0.80): a and b tied, c not
    m = leaderboard.matched_sparsity(significance_table([0.94, 0.97, 0.95, 1.00, 0.98]), targets=(0.9,))
    assert list(m.sort_values("rank")["mark"]) == ["tied", "tied", ""]
    text = " ".join(leaderboard.significance_text(m, (0.9,)))
    assert "a leads on validation" in text and "significantly better than c (by 16.60 points" in text
    assert "not significantly different from b (p = 0.7" in text and "the leaders are tied" in text


def test_selection_uses_validation_not_test() -> None:
    # two grda settings at the same sparsity: x is better on validation, y on test
    rows = [row(f"x{i}", "grda", i, 0.90, 0.9, {"c": 0.01}, val=0.97) for i in FIVE_SEEDS]
    rows += [row(f"y{i}", "grda", i, 0.97, 0.9, {"c": 0.02}, val=0.93) for i in FIVE_SEEDS]
    df = leaderboard.prepare(pd.DataFrame(rows))
    m = leaderboard.matched_sparsity(df, targets=(0.9,))
    assert m["top1_mean"].item() == pytest.approx(0.90) and m["validated"].item()  # x's test top-1
    front = leaderboard.fronts(leaderboard.summarize(df))
    assert list(front["setting"]) == ["c=0.01"]
    # without validation top-1 (old results) the same table selects on test, and says so
    old = leaderboard.prepare(pd.DataFrame(rows).drop(columns="val_top1"))
    m = leaderboard.matched_sparsity(old, targets=(0.9,))
    assert m["top1_mean"].item() == pytest.approx(0.97) and not m["validated"].item()
    assert "97.00 ± 0.00 †" in leaderboard.render(old, targets=(0.9,))


def test_old_result_files_load_and_are_shown_as_not_validation_selected(tmp_path: Path) -> None:
    import json

    run = tmp_path / "grda-old"
    run.mkdir()
    result = {k: v for k, v in row("grda-old", "grda", 0, 0.95, 0.9, {"c": 0.02}).items()
              if not k.startswith(("hparams.", "budget.", "val_top1", "macs_", "num_test", "peak_tensor"))}
    result |= {"config_hash": "x", "hparams": {"c": 0.02}, "budget": {"epochs": 60}, "state_bytes": 1000,
               "flops_dense": 1000.0, "flops_sparse": 100.0}
    (run / "result.json").write_text(json.dumps(result))
    runs = results.load(tmp_path)
    assert runs["macs_dense"].item() == 1000.0 and runs["macs_sparse"].item() == 100.0  # renamed on load
    assert runs["val_top1"].isna().all()
    df = leaderboard.prepare(runs)
    assert not df["validated"].any() and (df["budget.val_fraction"] == 0).all()
    assert "| shared | grda | 1 |  | 95.00 † |" in leaderboard.render(df)


def test_palette_is_fixed_by_the_registry_and_shared_by_every_figure(tmp_path: Path, monkeypatch) -> None:
    from bench import plots

    assert plots.pruner_palette(["grda"])["grda"] == plots.pruner_palette(["grda", "zzz_plugin"])["grda"]
    seen = []
    for name in ("accuracy_sparsity", "sparsity_epochs", "cost_vs_dense"):
        real = getattr(plots, name)

        def spy(*args, _real=real, **kw):
            seen.append(next(a for a in args if isinstance(a, dict)))
            return _real(*args, **kw)
        monkeypatch.setattr(plots, name, spy)
    runs = golden_runs()
    history = pd.DataFrame([{"run_id": r.run_id, "pruner": r.pruner, "model": r.model, "dataset": r.dataset,
                             "seed": r.seed, "epoch": 0, "sparsity": r.sparsity, "top1": r.top1}
                            for r in runs.itertuples()])
    leaderboard.write_leaderboard(runs, tmp_path, history, golden_published(), plots=True)
    assert len(seen) >= 5 and all(p == seen[0] for p in seen)


def test_plots_are_written_as_png_and_linked(tmp_path: Path) -> None:
    runs = golden_runs()
    ok = runs[runs["status"] != "failed"]
    history = pd.DataFrame([
        {"run_id": r.run_id, "pruner": r.pruner, "model": r.model, "dataset": r.dataset, "seed": r.seed,
         "epoch": e, "sparsity": r.sparsity * (e + 1) / 4, "top1": r.top1}
        for r in ok.itertuples() for e in range(4)
    ])
    readme = leaderboard.write_leaderboard(runs, tmp_path, history, golden_published(), plots=True)
    md = readme.read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [f"{section}-{fig}.png" for section in ("digits-mlp", "imagenet-resnet50")
                    for fig in ("accuracy-compression", "accuracy-sparsity", "cost", "sparsity-epoch")]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in md
        svg = (tmp_path / name).with_suffix(".svg")
        assert svg.read_text().lstrip().startswith("<?xml") and f"]({svg.name})" in md


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
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ sweeps, board


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.parent.name for p in SWEEPS])
def test_committed_sweeps_validate(sweep: Path) -> None:
    from bench.sweep import load_sweep

    spec = load_sweep(sweep)
    assert spec.name == sweep.parent.name
    assert "dense" in spec.per_pruner() and "grda" in spec.per_pruner()
    assert (sweep.parent / "README.md").is_file()


def test_committed_sweeps_dry_run(capsys, monkeypatch) -> None:
    """Every committed sweep validates and dry-runs, with an estimate for every group. The digits
    one is probed for real; the others with a stand-in probe or, for the paper-scale models, from
    their MACs, so that what is tested is the file and the dry run, not this CPU."""
    from bench import estimate

    digits = LEADERBOARDS / "digits-mlp" / "sweep.toml"
    assert cli.main(["sweep", str(digits), "--dry-run"]) == 0
    assert "nothing was submitted or written" in capsys.readouterr().out
    monkeypatch.setattr(estimate, "_probe", lambda config, steps: (5.0, 0.1, 1000, "stand-in probe"))
    for sweep in SWEEPS:
        assert cli.main(["sweep", str(sweep), "--dry-run"]) == 0, sweep
        out = capsys.readouterr().out
        assert "nothing was submitted or written" in out and "no estimate" not in out, sweep


def test_committed_digits_board_is_what_its_results_table_gives(tmp_path: Path) -> None:
    """The committed leaderboard's tables are generated from its committed runs, not edited."""
    from bench.sweep import load_sweep

    board = LEADERBOARDS / "digits-mlp"
    runs, history = results.read(board / "results.parquet")
    assert sorted(runs["run_id"]) == sorted(c.run_id for c in load_sweep(board / "sweep.toml").cells)
    assert (runs["status"] == "ok").all()
    leaderboard.write_leaderboard(runs, tmp_path, history, leaderboard.load_published(), plots=False)
    for name in ("leaderboard.csv", "matched_sparsity.csv"):
        assert (tmp_path / name).read_text() == (board / name).read_text(), name


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


def test_calibration_cost_is_shown_per_pruner_and_target(tmp_path: Path) -> None:
    """A board folder's calibration records become the 'Cost of landing on a sparsity' table: runs,
    steps, and steps in units of the full-budget run; unreadable records are skipped."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    record = {"dataset": "digits", "model": "mlp", "pruner": "grda", "target": 0.9, "value": 0.0165,
              "knob": {"name": "c", "low": 1e-4, "high": 1.0}, "sparsity": 0.8988, "within_tolerance": True,
              "budget": {"recipe": "shared"}, "cost": {"runs": 9, "steps": 12300, "train_macs": 1.0},
              "trials": [{"phase": "search", "steps": 600}, {"phase": "full", "steps": 2460}]}
    (folder / "calibration-grda-0.9.json").write_text(json.dumps(record))
    (folder / "calibration-broken.json").write_text("{")
    cal = leaderboard.load_calibrations(folder)
    assert len(cal) == 1 and cal.loc[0, "knob"] == "c" and cal.loc[0, "budgets"] == pytest.approx(5.0)
    runs = golden_runs()
    md = leaderboard.render(leaderboard.prepare(runs), calibrations=cal)
    section = md[md.index("## digits / mlp"):]
    assert "### Cost of landing on a sparsity" in section
    assert "| grda | 90 | c = 0.0165 | 89.88 | yes | 9 | 12300 | 5.00 |" in section


def test_text_says_when_the_validation_leader_is_significantly_worse_on_test() -> None:
    """a leads on validation, b is ahead on test in every seed: the words must not call that a tie."""
    m = leaderboard.matched_sparsity(significance_table([0.97, 0.98, 0.99, 0.995, 1.0]), targets=(0.9,))
    (line,) = leaderboard.significance_text(m, targets=(0.9,))
    assert "significantly worse on test than b" in line and "not significantly different from b" not in line
    assert "No significant best" in line
