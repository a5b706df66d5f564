"""bench.leaderboard and bench.plots: tables, matched sparsity, published rows, figures, golden
Markdown. Regenerate the golden file on purpose with UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench import cli, leaderboard, results
from bench.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
SWEEPS = sorted(LEADERBOARDS.glob("*/sweep.toml"))
MIB = 2**20


def row(run_id: str, pruner: str, seed: int, top1: float | None, sparsity: float,
        hp: dict[str, Any] | None = None, *, dataset: str = "digits", model: str = "mlp", status: str = "ok",
        time: float = 10.0, memory: float = 100 * MIB, state: float = 1000.0,
        epochs: int = 60) -> dict[str, Any]:
    """One gathered row, with the columns the leaderboard reads; `hp`: the hyperparameters."""
    return {
        "run_id": run_id, "pruner": pruner, "model": model, "dataset": dataset, "seed": seed,
        "status": status,
        **{f"hparams.{k}": v for k, v in (hp or {}).items()},
        "top1": top1, "sparsity": sparsity, "flops_dense": 1000.0, "flops_sparse": 1000.0 * (1 - sparsity),
        "train_time_s": time, "peak_memory_bytes": memory, "state_bytes": state,
        "budget.epochs": epochs, "budget.batch_size": 32, "budget.lr": 0.1, "budget.lr_schedule": "constant",
        "budget.momentum": 0.0, "git_sha": "0123456789abcdef", "device": "cpu (x86_64, 2 cores)",
        "torch_version": "2.14.1", "slurm_job_id": None,
    }


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
        row("i0", "grda", 0, 0.7324, 0.9159, {"c": 0.005, "mu": 0.55}, dataset="imagenet", model="resnet50",
            time=3600.0),
        row("i1", "dense", 0, 0.6871, 0.0, dataset="imagenet", model="resnet50", time=3000.0),
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
    m = leaderboard.matched_sparsity(leaderboard.summarize(df)).set_index("pruner")
    assert m.loc["grda", "at_80"] == pytest.approx(0.95)
    assert m.loc["grda", "at_90"] == pytest.approx(0.95 - 2 / 3 * 0.05)
    assert m.loc["grda", "at_95"] == pytest.approx(0.90)
    assert np.isnan(m.loc["grda", "at_98"]) and np.isnan(m.loc["magnitude", "at_80"])
    assert m.loc["magnitude", "at_90"] == pytest.approx(0.97)
    assert "dense" not in m.index


# ------------------------------------------------------------------------------ summary table


def test_relative_to_dense_hand_computed() -> None:
    df = leaderboard.prepare(pd.DataFrame([
        row("d0", "dense", 0, 0.9, 0.0, time=10.0, memory=100.0, state=1000.0),
        row("d1", "dense", 1, 0.9, 0.0, time=14.0, memory=140.0, state=1000.0),
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
    assert s.loc[("digits", "grda"), "flops_reduction_mean"] == pytest.approx(10.0)
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
    # a non-default field is shown too
    df = leaderboard.prepare(pd.DataFrame([row("a", "dense", 0, 0.9, 0.0) | {"budget.momentum": 0.9}]))
    assert df["budget"].item() == "epochs=60 batch_size=32 lr=0.1 lr_schedule=constant momentum=0.9"


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
    assert set(pub["pruner"]) == {"dense", "grda", "str", "gmp", "vd", "random"}

    md = leaderboard.render(leaderboard.prepare(golden_runs()), pub)
    imagenet = md[md.index("## imagenet / resnet50"):]
    assert "### Published" in imagenet and "| grda | c=0.005, mu=0.55 | 91.59 | 73.24 |" in imagenet
    assert "| random | sparsity=0.98 | 98.00 | 43.99 |" in imagenet
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
    assert len(table) == 7 and set(table.columns) >= {"top1_mean", "top1_std", "seeds", "time_vs_dense"}
    assert len(pd.read_csv(tmp_path / "matched_sparsity.csv")) == 3


def test_hand_written_readme_text_survives_regeneration(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n")
    leaderboard.write_leaderboard(golden_runs(), tmp_path, plots=False, title="first")
    leaderboard.write_leaderboard(golden_runs().iloc[:4], tmp_path, plots=False, title="second")
    md = (tmp_path / "README.md").read_text()
    intro = "# CIFAR-10 / VGG16\n\nWhat this board reproduces.\n\n"
    assert md.startswith(intro + leaderboard.BEGIN + "\n# second\n")
    assert md.endswith(leaderboard.END + "\n") and md.count(leaderboard.BEGIN) == 1 and "# first" not in md


def test_best_matched_value_is_bold() -> None:
    md = leaderboard.render(leaderboard.prepare(golden_runs()))
    # grda's front: seed means 0.960 @ 0.81 and 0.945 @ 0.955 (the diverged run left out); at 90%:
    # 0.960 - 0.015 * 0.09 / 0.145 = 0.95069; at 95%: 0.960 - 0.015 * 0.14 / 0.145 = 0.94552; 80%
    # lies below its least sparse run (0.81 - 0.005): blank. magnitude: 0.95 @ 0.90, 0.90 @ 0.95
    assert "| grda |  | **95.07** | **94.55** |  |" in md
    assert "| magnitude |  | 95.00 | 90.00 |  |" in md


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
                    for fig in ("accuracy-sparsity", "cost", "sparsity-epoch")]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in md


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


def test_committed_sweeps_dry_run(capsys) -> None:
    for sweep in SWEEPS:
        assert cli.main(["sweep", str(sweep), "--dry-run"]) == 0, sweep
        assert "nothing was submitted or written" in capsys.readouterr().out


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
    assert "available: example-gpu, local-test" in err
    assert cli.main(["board", "leaderboards/tiny", "--executor", "slurm"]) == 2
    assert "needs --profile NAME; available: example-gpu, local-test" in capsys.readouterr().err
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
