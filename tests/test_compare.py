"""`bench compare` and its statistics, on fixed tables with hand-computed answers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bench import cli
from bench.compare import compare, select
from bench.errors import ConfigError
from bench.stats import paired_t

# Student t quantile t(0.975, df=3) = 3.182446305 (from tables)
T975_3 = 3.182446305


def test_paired_t_matches_the_hand_computed_interval():
    # diffs 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se sd/2
    t = paired_t([1.0, 2.0, 3.0, 4.0])
    se = math.sqrt(5 / 3) / 2
    assert t.mean == pytest.approx(2.5)
    assert t.sd == pytest.approx(math.sqrt(5 / 3))
    assert (t.low, t.high) == pytest.approx((2.5 - T975_3 * se, 2.5 + T975_3 * se))
    # t = 2.5 / se = 3.873; two-sided p with 3 degrees of freedom (tables: 0.0305)
    assert t.p == pytest.approx(0.030466, abs=1e-5)
    assert t.n == 4


def test_paired_t_edge_cases():
    one = paired_t([0.3])
    assert one.mean == 0.3 and math.isnan(one.low) and math.isnan(one.p)
    same = paired_t([0.1, 0.1, 0.1])  # no spread: no t statistic, and never "p = 0"
    assert (same.low, same.high) == pytest.approx((0.1, 0.1)) and math.isnan(same.p)
    assert paired_t([0.0, 0.0]).p == 1.0
    assert paired_t([]).n == 0
    with pytest.raises(ValueError, match="level"):
        paired_t([1, 2], level=1.5)


def _runs() -> pd.DataFrame:
    """Two settings of grda and one of gmp over seeds 0-3 (gmp lacks seed 3's pair for grda c=0.01)."""
    rows = []
    a_top1 = [0.95, 0.96, 0.97, 0.98]
    b_top1 = [0.94, 0.94, 0.94, 0.94]  # diffs 0.01, 0.02, 0.03, 0.04
    for seed in range(4):
        rows.append({"pruner": "grda", "hparams.c": 0.02, "hparams.sparsity": None, "seed": seed,
                     "top1": a_top1[seed], "sparsity": 0.90, "train_time_s": 10.0 + seed,
                     "peak_memory_bytes": 2**20 * 100, "state_bytes": 1000})
        rows.append({"pruner": "grda", "hparams.c": 0.01, "hparams.sparsity": None, "seed": seed,
                     "top1": 0.5, "sparsity": 0.5, "train_time_s": 1.0, "peak_memory_bytes": 1,
                     "state_bytes": 1})
        rows.append({"pruner": "gmp", "hparams.c": None, "hparams.sparsity": 0.9, "seed": seed,
                     "top1": b_top1[seed], "sparsity": 0.88, "train_time_s": 12.0,
                     "peak_memory_bytes": 2**20 * 90, "state_bytes": 1500})
    df = pd.DataFrame(rows)
    df["model"], df["dataset"], df["status"] = "mlp", "digits", "ok"
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    return df


def test_compare_pairs_by_seed_with_the_hand_computed_interval():
    c = compare(_runs(), "grda:c=0.02", "gmp:sparsity=0.9")
    assert len(c.pairs) == 4 and list(c.pairs["seed"]) == [0, 1, 2, 3]
    top1 = c.metric("top1")
    se = math.sqrt(5 / 3) / 2 * 0.01  # the diffs are 0.01 x (1, 2, 3, 4)
    assert top1.a_mean == pytest.approx(0.965) and top1.b_mean == pytest.approx(0.94)
    assert top1.diff.mean == pytest.approx(0.025)
    assert (top1.diff.low, top1.diff.high) == pytest.approx((0.025 - T975_3 * se, 0.025 + T975_3 * se))
    assert top1.diff.p == pytest.approx(0.030466, abs=1e-5)
    assert c.metric("sparsity").diff.mean == pytest.approx(0.02)
    assert c.metric("train_time_s").diff.mean == pytest.approx(11.5 - 12.0)
    md = c.markdown()
    assert "| test top-1 % | 96.50 | 94.00 | 2.50 |" in md and "process peak RSS MiB" in md
    d = c.to_dict()
    assert d["metrics"]["top1"]["p"] == pytest.approx(top1.diff.p)
    assert [p["seed"] for p in d["pairs"]] == [0, 1, 2, 3]


def test_train_time_is_compared_over_quiet_pairs_only():
    runs = _runs()
    # seed 0's gmp run timed with the 1-minute load at 6 on 2 cores; seed 1's flagged by its run
    runs["load_avg_before"], runs["load_avg_after"], runs["cpu_count"] = 1.0, 1.0, 2
    gmp = runs["pruner"] == "gmp"
    runs.loc[gmp & (runs["seed"] == 0), "load_avg_after"] = 6.0
    runs.loc[gmp & (runs["seed"] == 1), ["load_avg_before", "load_avg_after"]] = None
    runs["loaded"] = gmp & (runs["seed"] == 1)
    c = compare(runs, "grda:c=0.02", "gmp:sparsity=0.9")
    time = c.metric("train_time_s")
    assert time.diff.n == 2 and time.a_mean == pytest.approx((12.0 + 13.0) / 2)  # seeds 2 and 3
    assert time.test == "paired t over seeds, quiet pairs only (2 loaded left out)"
    assert c.metric("top1").diff.n == 4 and c.to_dict()["metrics"]["train_time_s"]["n"] == 2


def test_unpaired_seeds_drop_out():
    runs = _runs()
    runs = runs[~((runs["pruner"] == "gmp") & (runs["seed"] == 3))]
    assert compare(runs, "grda:c=0.02", "gmp").metric("top1").diff.n == 3


@pytest.mark.parametrize(
    ("a", "message"),
    [
        ("grda", "several runs per (model, dataset, seed)"),
        ("grda:cc=1", "unknown key 'cc'; valid keys"),
        ("grda:c=0.5", "no run has hparams.c = 0.5; valid choices: 0.01, 0.02"),
        ("nope", "no run has pruner = 'nope'; valid choices: gmp, grda"),
        ("grda:c", "is not KEY=VALUE"),
    ],
)
def test_bad_selectors_name_the_key_and_choices(a, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare(_runs(), a, "gmp")


def test_cli_compare_table_and_json(tmp_path, capsys):
    table = tmp_path / "results.parquet"
    runs = _runs()
    runs.to_parquet(table, index=False)
    assert cli.main(["compare", "grda:c=0.02", "pruner=gmp", "--in", str(table)]) == 0
    out = capsys.readouterr().out
    assert "4 pairs" in out and "| test top-1 % | 96.50 | 94.00 | 2.50 |" in out
    assert cli.main(["compare", "grda:c=0.02", "gmp", "--in", str(table), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metrics"]["top1"]["mean"] == pytest.approx(0.025) and d["metrics"]["top1"]["n"] == 4
    assert cli.main(["compare", "grda", "gmp", "--in", str(table)]) == 2
    assert "several runs" in capsys.readouterr().err
    assert cli.main(["compare", "grda:c=0.02", "gmp", "--in", str(table), "--level", "2"]) == 2
    assert "--level" in capsys.readouterr().err


def test_cli_compare_two_run_sets(tmp_path, capsys):
    runs = _runs()
    for name, sel in (("a", runs["hparams.c"] == 0.02), ("b", runs["pruner"] == "gmp")):
        (tmp_path / name).mkdir()
        runs[sel].to_parquet(tmp_path / name / "results.parquet", index=False)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metrics"]["top1"]["mean"] == pytest.approx(0.025)
    assert cli.main(["compare", str(tmp_path / "a"), "gmp"]) == 2
    assert "two run sets" in capsys.readouterr().err


def test_select_prefers_the_hyperparameter_over_the_measured_column():
    assert set(select(_runs(), "gmp:sparsity=0.9")["pruner"]) == {"gmp"}  # hparams.sparsity, not 0.88
    assert len(select(_runs(), "seed=1")) == 3


def test_empty_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", "grda", "gmp", "--in", str(tmp_path / "empty")]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert cli.main(["compare", "grda", "gmp", "--in", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_compare_on_paths_uses_ok_runs_and_says_how_many_it_left_out(tmp_path, capsys):
    runs = _runs()
    a = runs[runs["hparams.c"] == 0.02].copy()
    b = runs[runs["pruner"] == "gmp"].copy()
    b.loc[b.index[0], "status"] = "diverged"
    for name, t in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        t.to_parquet(tmp_path / name / "results.parquet", index=False)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "3 pairs" in out and "left out 1 run(s) not finished with status ok" in out
    b["status"] = "failed"
    b.to_parquet(tmp_path / "b" / "results.parquet", index=False)
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no finished (status ok) runs among its 4" in capsys.readouterr().err


def test_compare_refuses_unequal_budgets_unless_asked():
    runs = _runs()
    runs["budget.epochs"] = [30 if p == "gmp" else 60 for p in runs["pruner"]]
    with pytest.raises(ConfigError, match=r"different budgets: epochs \(60 vs 30\).*--unequal-budgets"):
        compare(runs, "grda:c=0.02", "gmp")
    assert compare(runs, "grda:c=0.02", "gmp", unequal_budgets=True).metric("top1").diff.n == 4


def test_compare_uses_per_example_predictions_for_test_top1():
    import numpy as np

    runs = _runs()
    ids = runs.set_index(["pruner", "hparams.c", "seed"])["run_id"]
    correct = {}
    for seed in range(4):
        right = np.ones(100, bool)
        correct[ids[("grda", 0.02, seed)]] = right
        wrong = right.copy()
        wrong[3] = False  # the same one image, every seed
        correct[ids.xs("gmp", level="pruner").xs(seed, level="seed").iat[0]] = wrong
    c = compare(runs, "grda:c=0.02", "gmp", correct=correct)
    top1 = c.metric("top1")
    assert top1.test == "seeds × examples bootstrap" and top1.diff.p > 0.05
    assert c.metric("sparsity").test == "paired t over seeds"
