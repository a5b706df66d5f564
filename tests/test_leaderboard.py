"""bench.board and bench.plots: tables, own-dense columns, published rows, figures, the CLI,
golden Markdown. Regenerate the golden file on purpose with UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from board_rows import golden_published, golden_runs, old_row, row

from bench import cli, record, results
from bench.board import markdown
from bench.board.prepare import prepare
from bench.board.published import load_published
from bench.board.summary import summarize
from bench.board.write import BEGIN, END, findings_table, tables, write_leaderboard
from bench.calibrate import load_calibrations
from bench.config import Budget
from bench.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
LEADERBOARDS = Path(__file__).resolve().parents[1] / "leaderboards"
SWEEPS = sorted(LEADERBOARDS.glob("*/sweep.toml"))


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
    # the runs' wall times are provenance (quiet runs where there are some), never a time ratio
    assert s["time_vs_dense"].isna().all()
    assert s.loc[("digits", "dense"), "train_time_s_mean"] == pytest.approx(10.0)
    assert s.loc[("digits", "grda"), "memory_vs_dense"] == pytest.approx(150.0 / 120.0)
    assert s.loc[("digits", "grda"), "state_vs_dense"] == pytest.approx(2.0)
    assert np.isnan(s.loc[("other", "grda"), "memory_vs_dense"])
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


def test_each_section_states_its_track_and_layer_coverage_and_imp_its_budget_multiplier() -> None:
    from bench.pruner import layer_coverage

    rows = [{**row(f"d{i}", "dense", i, 0.95, 0.0, recipe="paper", family="sgd_momentum"),
             "budget.prune_first_last": True} for i in range(2)]
    rows += [{**row(f"i{i}", "imp", i, 0.94, 0.9, {"sparsity": 0.9}, recipe="paper", family="sgd_momentum"),
              "budget.prune_first_last": True, "budget_multiplier": m} for i, m in enumerate((15.2, 15.6))]
    rows += [{**row(f"k{i}", "grda", i, 0.93, 0.9, recipe="paper"), "budget.prune_first_last": False}
             for i in range(2)]
    rows += [{**row(f"e{i}", "dense", i, 0.95, 0.0, recipe="paper"), "budget.prune_first_last": False}
             for i in range(2)]
    md = render(pd.DataFrame(rows))
    inner, every = md.split("\n## ")[2:4]  # two sections: first and last dense, every layer prunable
    assert "Recipe track `paper`: each method trains with its authors' optimizer: SGD, momentum 0.9, " \
           "weight decay 0.0005 for imp." in every
    assert f"Layer coverage: {layer_coverage(Budget())}." in every
    assert f"Layer coverage: {layer_coverage(Budget(prune_first_last=False))}." in inner
    assert "SGD, no momentum or weight decay for grda" in inner
    header = next(line for line in every.splitlines() if line.startswith("| recipe |")).split(" | ")
    imp = next(line for line in every.splitlines() if line.startswith("| paper | imp")).split(" | ")
    dense = next(line for line in every.splitlines() if line.startswith("| paper | dense")).split(" | ")
    column = header.index(record.SHOWN["budget_multiplier"].header)
    assert imp[column] == "15.4" and dense[column] == ""  # IMP's mean over seeds; unrecorded: blank


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
    assert begin in readme and end in readme, "the README's column glossary block is missing"
    block = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert block.strip("\n") == record.glossary().strip("\n")


def test_the_readme_findings_are_generated_from_every_built_board(monkeypatch) -> None:
    """The README's "What the boards find" table is `findings_table` of every committed board that
    has a runs table, as it is now (after rebuilding a board: `bench readme`)."""
    from bench.board.write import findings_table

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the table links the boards relative to the README
    readme = (root / "README.md").read_text()
    begin, end = "<!-- what the boards find -->", "<!-- end of what the boards find -->"
    assert begin in readme and end in readme
    built = sorted(str(p.parent.relative_to(root)) for p in (root / "leaderboards").glob("*/results.parquet"))
    assert built
    block = readme[readme.index(begin) + len(begin):readme.index(end)]
    assert block.strip("\n") == findings_table(built).strip("\n")


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


def test_committed_sweeps_dry_run(capsys, monkeypatch, tmp_path) -> None:
    """Every committed sweep validates and dry-runs, with an estimate for every group. The digits
    one is probed for real; the others with a stand-in probe or, for the paper-scale models, from
    their MACs, so that what is tested is the file and the dry run, not this CPU. Into empty out
    folders: runs a user made in the working tree's runs/ change what is left to run."""
    from bench import estimate

    digits = LEADERBOARDS / "digits-mlp" / "sweep.toml"
    assert cli.main(["sweep", str(digits), "--dry-run", "--out", str(tmp_path / "digits-mlp")]) == 0
    assert "nothing was submitted or written" in capsys.readouterr().out
    monkeypatch.setattr(estimate, "_probe", lambda c, steps, **kw: (5.0, 0.1, 1000, "stand-in probe"))
    for sweep in SWEEPS:
        out_dir = tmp_path / sweep.parent.name
        assert cli.main(["sweep", str(sweep), "--dry-run", "--out", str(out_dir)]) == 0, sweep
        out = capsys.readouterr().out
        assert "nothing was submitted or written" in out and "no estimate" not in out, sweep


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
def test_board_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    """Slow (~20 s): `bench board` on a 2-epoch dense + gRDA sweep through submitit's local executor."""
    pruners = "[pruners.dense]\n[pruners.grda]\nc = 0.02\nmu = [0.55, 0.7]\n"
    board = tiny_board(tmp_path, monkeypatch, f"[budget]\nepochs = 2\n{GRID}{pruners}")
    assert cli.main(["board", str(board.relative_to(tmp_path)), "--no-plots"]) == 0
    # what the board cost, phase by phase
    said = capsys.readouterr().err
    assert re.search(r"^board: runs [\d.]+ (s|min), gather [\d.]+ s, valley [\d.]+ (s|min), "
                     r"tables and figures [\d.]+ (s|min)$", said, re.M), said
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


@pytest.mark.parametrize("name", ["digits-mlp"])
def test_committed_digits_boards_rebuild_without_running(tmp_path: Path, name: str, capsys,
                                                        monkeypatch) -> None:
    """`bench board DIR --no-run` rebuilds a committed board from its results.parquet (no training),
    preparing the runs table once."""
    from bench.board import cli as board_cli
    from bench.board import prepare as prepare_module
    from bench.board import write

    calls = []

    def counted(*args, **kw):
        calls.append(1)
        return prepare_module.prepare(*args, **kw)

    monkeypatch.setattr(board_cli, "prepare", counted)
    monkeypatch.setattr(write, "prepare", counted)
    out = tmp_path / name
    assert cli.main(["board", str(LEADERBOARDS / name), "--no-run", "--no-plots",
                     "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0, capsys.readouterr().err
    assert len(calls) == 1
    md = (out / "README.md").read_text()
    assert md.count(BEGIN) == 1 and "## Summary" in md and "### Which differences are significant" in md
    matched = pd.read_csv(out / "matched_sparsity.csv")
    assert matched["top1_low"].min() >= 0 and matched["top1_high"].max() <= 1
    on = matched[matched["on_level"]]
    assert ((on["sparsity_mean"] - on["target"]).abs() <= 0.005 + 1e-9).all()


def test_bench_readme_rewrites_a_stale_findings_block_and_check_reports_it(tmp_path: Path, capsys) -> None:
    """After a board is rebuilt, `bench readme --check` names the stale block and exits 1 without
    writing; `bench readme` rewrites only the blocks, keeping the text around them."""
    from bench.readme import BLOCKS, block

    main = cli.main
    board = tmp_path / "leaderboards" / "digits-mlp"
    board.mkdir(parents=True)
    for name in ("results.parquet", "matched_sparsity.csv", "valley.csv"):  # what the blocks read
        (board / name).write_bytes((LEADERBOARDS / "digits-mlp" / name).read_bytes())
    readme = tmp_path / "README.md"
    stale = "\n\n".join(f"{begin}\nold\n{end}\nafter {name}" for name, begin, end, _ in BLOCKS)
    readme.write_text(f"intro\n\n{stale}\n")
    before = readme.read_text()
    assert main(["readme", str(readme), "--check"]) == 1
    assert "stale: column glossary, what the boards find, valley findings" in capsys.readouterr().err
    assert readme.read_text() == before
    assert main(["readme", str(readme)]) == 0
    text = readme.read_text()
    assert block(text, BLOCKS[1][1], BLOCKS[1][2]).startswith("| board | recipe |")
    assert "[digits-mlp](leaderboards/digits-mlp/)" in text and "after valley findings" in text
    assert "[`digits-mlp`](leaderboards/digits-mlp/) (digits, mlp, paper track" in text
    assert main(["readme", str(readme), "--check"]) == 0


def test_bench_readme_refuses_a_readme_without_the_markers(tmp_path: Path, capsys) -> None:
    main = cli.main
    readme = tmp_path / "README.md"
    readme.write_text("no blocks here\n")
    assert main(["readme", str(readme)]) == 2
    assert "column glossary block needs exactly one" in capsys.readouterr().err
    assert readme.read_text() == "no blocks here\n"
