"""bench.valley: the Hessian's top eigenpairs and the projection against the exact Hessian, the
path's end points against the runs' records, the barrier, applicability, and the CLI's errors."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import cli, valley
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.io import read_json
from bench.run.job import run
from bench.validate import check_config
from bench.valley.path import flat, layout, unflat

# cosine to 0: in the last epoch the weights barely move, so its mean training loss is close to the
# loss at the final weights
BUDGET = Budget(epochs=6, lr_schedule="cosine")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished digits runs, seed 0: dense, gRDA, channel (smaller layers) and dense seed 1."""
    out = tmp_path_factory.mktemp("runs")
    settings = {"dense": ("dense", {}, 0), "grda": ("grda", {"c": 0.02, "mu": 0.6}, 0),
                "channel": ("channel", {"sparsity": 0.5}, 0), "dense1": ("dense", {}, 1)}
    found = {}
    for name, (pruner, hparams, seed) in settings.items():
        config = RunConfig(pruner=pruner, hparams=hparams, budget=BUDGET, seed=seed, device="cpu")
        config = check_config(config)
        found[name] = out / run(config, out)["run_id"]
    return found


# ------------------------------------------------------------------------------- the Hessian


def _tiny() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))
    model.train()
    x = torch.randn(40, 3)
    model(x)  # nonzero running statistics
    model.eval()
    y = torch.randint(0, 3, (40,))
    return model, [(x[:25], y[:25]), (x[25:], y[25:])]  # two chunks of unequal size


def _exact_hessian(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    from torch.func import functional_call

    names, shapes = layout(model)
    w = flat(model).double()
    model = model.double()
    buffers = {n: b for n, b in model.named_buffers()}
    x = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])

    def loss(p: torch.Tensor) -> torch.Tensor:
        params = {**unflat(p, names, shapes), **buffers}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, w)


def test_top_eigenpairs_and_projection_match_the_exact_hessian():
    model, batches = _tiny()
    exact = _exact_hessian(model, batches).numpy()
    model = model.float()
    k = 4
    values, vectors = valley.hessian_eigs(model, batches, k)
    e_values, e_vectors = np.linalg.eigh(exact)
    top = np.argsort(e_values)[::-1][:k]
    np.testing.assert_allclose(values, e_values[top], rtol=1e-4, atol=1e-5)
    assert values[0] > values[-1] > 0
    # each computed vector is an eigenvector: H v = lambda v
    np.testing.assert_allclose(exact @ vectors, vectors * values, atol=1e-4)
    d = np.random.default_rng(1).standard_normal(exact.shape[0])
    d += 3 * e_vectors[:, top[1]]  # a difference with a large share in the top directions
    want = float(np.sum((e_vectors[:, top].T @ d) ** 2) / (d @ d))
    assert valley.span_fraction(vectors, d) == pytest.approx(want, rel=1e-4)
    assert want > 0.3
    # random directions: on average k / D of their squared norm
    r = valley.random_fractions(vectors, 400)
    assert r.mean() == pytest.approx(k / exact.shape[0], rel=0.15)


def test_top_k_must_be_below_the_parameter_count():
    model, batches = _tiny()
    with pytest.raises(ConfigError, match="--top-k = 500"):
        valley.hessian_eigs(model, batches, 500)


# ------------------------------------------------------------------------------- the path


def test_barrier():
    t = np.linspace(0, 1, 5)
    assert valley.barrier(pd.DataFrame({"t": t, "loss": 1 - t})) == 0  # on the chord
    assert valley.barrier(pd.DataFrame({"t": t, "loss": (t - 0.5) ** 2})) == 0  # convex: below it
    bump = pd.DataFrame({"t": t, "loss": [1.0, 2.0, 3.0, 1.5, 0.0]})
    assert valley.barrier(bump) == pytest.approx(3.0 - 0.5)


def test_batch_norm_statistics_are_recomputed_exactly():
    model, batches = _tiny()
    valley.recompute_bn(model, batches)
    hidden = [model[0](x).detach() for x, _ in batches]
    torch.testing.assert_close(model[1].running_mean, torch.cat(hidden).mean(0))
    n = sum(len(h) for h in hidden)  # the batches' (unbiased) variances, weighted by their sizes
    torch.testing.assert_close(model[1].running_var, sum(len(h) / n * h.var(0) for h in hidden))
    assert not model.training and model[1].momentum == 0.1


def test_end_points_reproduce_each_runs_record(runs):
    v = valley.valley(runs["grda"], runs["dense"], points=5, top_k=3, hessian_examples=200, draws=4)
    assert v.applicable and v.notes == []
    for end, name in ((v.line.iloc[0], "grda"), (v.line.iloc[-1], "dense")):
        result = read_json(runs[name] / "result.json")
        assert end["test_top1"] == result["top1"]
        assert end["val_top1"] == result["val_top1"]
        with open(runs[name] / "history.csv") as f:
            last_epoch_loss = float(list(csv.DictReader(f))[-1]["loss"])
        assert end["loss"] == pytest.approx(last_epoch_loss, rel=0.05)
    assert list(v.line["t"]) == [0, 0.25, 0.5, 0.75, 1]
    assert v.barrier >= 0
    assert len(v.eigenvalues) == 3 and v.eigenvalues == sorted(v.eigenvalues, reverse=True)
    assert 0 <= v.fraction <= 1 and len(v.random) == 4


def test_a_model_with_itself_has_no_barrier(runs):
    v = valley.valley(runs["grda"], runs["grda"], points=5, top_k=0)
    assert v.barrier == 0
    assert v.distance == 0
    assert v.line["loss"].nunique() == 1


def test_bezier_curve_keeps_its_ends(runs):
    v = valley.valley(runs["grda"], runs["dense"], points=3, top_k=0, curve_epochs=1)
    pd.testing.assert_frame_equal(v.curve.iloc[[0, -1]].reset_index(drop=True),
                                  v.line.iloc[[0, -1]].reset_index(drop=True))
    assert v.curve_barrier >= 0 and v.curve_epochs == 1


def test_changed_architecture_is_not_applicable(runs):
    v = valley.valley(runs["channel"], runs["dense"], points=3, top_k=0)
    assert not v.applicable and "changes the architecture" in v.notes[0]
    assert cli.main(["valley", str(runs["channel"]), "--figure", ""]) == 1


def test_pairs_without_the_same_data_order_are_marked(runs):
    v = valley.valley(runs["grda"], runs["dense1"], points=2, top_k=0)
    assert v.applicable and v.notes == ["data order differs: seeds differ (0 vs 1) (not a fixed-batch pair)"]
    config, result = valley.read_run(runs["grda"])
    a = valley.Endpoint(runs["grda"], config, result)
    imp = valley.Endpoint(runs["grda"], replace(config, pruner="imp"), {**result, "budget_multiplier": 2.0})
    assert valley.data_order_note(a, a) is None
    note = valley.data_order_note(imp, a)
    assert "imp trains 2x the budget's steps" in note and "imp rewinds" in note


# ------------------------------------------------------------------------------- the CLI


def test_cli_finds_the_dense_run_of_the_seed(runs, tmp_path, capsys):
    figure = tmp_path / "v.png"
    rc = cli.main(["valley", "grda:seed=0", "--in", str(runs["dense"].parent), "--points", "3",
                   "--top-k", "2", "--hessian-examples", "100", "--figure", str(figure), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["a"] == runs["grda"].name and out["b"] == runs["dense"].name
    assert len(out["line"]) == 3 and len(out["eigenvalues"]) == 2
    assert figure.is_file() and figure.with_suffix(".svg").is_file()
    rc = cli.main(["valley", str(runs["grda"]), "--points", "2", "--top-k", "0", "--figure", ""])
    assert rc == 0 and "barrier (straight path)" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["nosuch"], "no run has pruner = 'nosuch'; valid choices: channel, dense, grda"),
    (["grda:nokey=1"], "unknown key 'nokey'"),
    (["dense"], "matches 2 runs"),
    (["grda", "dense:seed=7"], "no run has seed = 7"),
    (["/"], "not a run folder"),
    (["grda", "--points", "1"], "--points = 1: must be at least 2"),
    (["grda", "--figure", "v.jpg"], "--figure = 'v.jpg': must end in .png"),
    (["grda", "--train-examples", "0"], "--train-examples = 0: must be at least 1"),
    (["grda", "--device", "cuda:7"], "--device = 'cuda:7': no such device"),
])
def test_bad_input_is_a_clear_error(runs, argv, message, capsys):
    assert cli.main(["valley", *argv, "--in", str(runs["dense"].parent)]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_dense_run_is_a_clear_error(runs, tmp_path, capsys):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / runs["grda"].name).symlink_to(runs["grda"])
    assert cli.main(["valley", str(alone / runs["grda"].name)]) == 2
    err = capsys.readouterr().err
    assert "B: no dense run of model mlp, data set digits, seed 0, A's budget" in err


# ------------------------------------------------------------------------------- boards


def test_board_table_and_figure(runs, tmp_path):
    from bench.board.prepare import prepare
    from bench.results import load

    df = prepare(load(runs["dense"].parent))
    df.loc[df["pruner"] == "grda", "sparsity"] = 0.9  # lands on the 90% level
    df.loc[df["pruner"] == "channel", "sparsity"] = 0.95
    table, paths = valley.board_valley(df, runs["dense"].parent, points=3, top_k=2, hessian_examples=100,
                                       draws=3)
    assert list(table.columns) == valley.board.TABLE and list(paths.columns) == valley.board.PATHS
    grda = table[table["pruner"] == "grda"].iloc[0]
    assert grda["level"] == 0.9 and grda["seeds"] == 1 and grda["barrier_mean"] >= 0
    assert 0 <= grda["fraction_mean"] <= 1 and grda["random_fraction"] > 0
    assert np.isnan(grda["barrier_ci"])  # one seed: no interval
    channel = table[table["pruner"] == "channel"].iloc[0]
    assert np.isnan(channel["barrier_mean"]) and "changes the architecture" in channel["note"]
    assert set(paths["pruner"]) == {"grda"} and len(paths) == 3
    md = valley.board_markdown(table)
    row = {line.split(" | ")[1]: line for line in md.splitlines() if " | " in line}
    assert row["grda"].startswith("| 90% | grda | ") and row["grda"].endswith("|  |")
    assert "| n/a | n/a | - | not applicable: channel changes the architecture (1.weight: " in row["channel"]
    figure = valley.plot_board_paths(table, paths, 0.9, tmp_path / "paths.png")
    assert figure.is_file() and figure.with_suffix(".svg").is_file()
    with pytest.raises(ConfigError, match="no measured paths at 95% sparsity"):
        valley.plot_board_paths(table, paths, 0.95, tmp_path / "none.png")


def test_board_pairs_that_cannot_be_measured_are_notes(runs):
    from bench.board.prepare import prepare
    from bench.results import load

    df = prepare(load(runs["dense"].parent))
    df.loc[df["pruner"] == "grda", "sparsity"] = 0.9
    no_family = df[~((df["pruner"] == "dense") & (df["seed"] == 0))]  # seed 0 has no dense run
    table, paths = valley.board_valley(no_family, runs["dense"].parent, points=2, top_k=0)
    assert paths.empty
    assert table["note"].iat[0].startswith("not measured: no dense run of this section with seed 0")


def test_board_measures_the_paper_track_when_it_has_one(runs):
    from bench.board.prepare import prepare
    from bench.results import load
    from bench.valley.board import chosen_settings, measured_recipes, section_markdown

    assert measured_recipes(["shared", "paper", "shared"]) == ["paper"]
    assert measured_recipes(["shared", "other"]) == ["other", "shared"]
    df = prepare(load(runs["dense"].parent))
    df.loc[df["pruner"] == "grda", "sparsity"] = 0.904  # within 0.5 points of 90%
    both = pd.concat([df.assign(recipe="paper"), df.assign(recipe="shared")], ignore_index=True)
    chosen = chosen_settings(both)
    assert list(chosen["recipe"]) == ["paper"] and list(chosen["pruner"]) == ["grda"]
    assert list(chosen["level"]) == [0.9] and chosen["sparsity"].iat[0] == pytest.approx(0.904)
    empty = pd.DataFrame(columns=valley.board.TABLE)
    assert "on the paper recipe track only" in section_markdown(empty, recipes=["paper", "shared"])
    assert "track only" not in section_markdown(empty, recipes=["paper"])


@pytest.mark.slow
def test_board_writes_its_valley_and_rebuilds_it_identically(runs, tmp_path, monkeypatch, capsys):
    """`bench board` on a small sweep: valley.csv, its paths and figure, the README's Valley section;
    `--no-run` without the run folders rebuilds every file byte for byte."""
    from bench.board.cli import board

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    board_dir = tmp_path / "small"
    board_dir.mkdir()
    (board_dir / "sweep.toml").write_text(
        'name = "small"\n[budget]\nepochs = 2\n[grid]\nmodels = ["mlp"]\ndatasets = ["digits"]\n'
        "seeds = [0, 1]\n[pruners.dense]\n[pruners.magnitude]\nsparsity = [0.9]\n"
        "[pruners.channel]\nsparsity = [0.95]\n")
    readme = board(board_dir, tmp_path / "runs", force=False)
    files = {p.name: p.read_bytes() for p in board_dir.iterdir() if p.is_file()}
    assert {"valley.csv", "valley-paths.csv", "digits-mlp-valley.png", "digits-mlp-valley.svg"} <= set(files)
    table = pd.read_csv(board_dir / "valley.csv")
    magnitude = table[table["pruner"] == "magnitude"].iloc[0]
    assert magnitude["seeds"] == 2 and magnitude["barrier_mean"] >= 0 and magnitude["barrier_ci"] >= 0
    assert len(pd.read_csv(board_dir / "valley-paths.csv")) == 2 * valley.board.POINTS
    text = readme.read_text()
    section = text[text.index("## Valley"):]
    assert "*barrier*" in section and "*random directions*" in section
    assert "| 90% | magnitude | " in section and "![training loss" in section
    assert "| 95% | channel | " in section and "not applicable: channel changes the architecture" in section
    import shutil

    shutil.rmtree(tmp_path / "runs")  # --no-run: the board from its own files only
    board(board_dir, tmp_path / "runs", run=False)
    again = {p.name: p.read_bytes() for p in board_dir.iterdir() if p.is_file()}
    assert set(again) == set(files)
    assert [n for n in files if files[n] != again[n]] == []
    # a valley.csv that is not one stops `--no-run` before anything is written
    (board_dir / "valley.csv").write_text("pruner,level\ngrda,0.9\n")
    assert cli.main(["board", str(board_dir), "--runs", str(tmp_path / "runs"), "--no-run"]) == 2
    assert "valley.csv: not a valley table (no barrier_ci" in capsys.readouterr().err
    assert (board_dir / "results.parquet").read_bytes() == files["results.parquet"]


def test_help_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom bench.cli import main\ntry:\n    main(['valley', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert "usage: bench valley" in out and "TORCH False" in out
