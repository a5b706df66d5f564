"""bench.board's verdicts: cells are measured runs, significance over seeds and test examples with
Holm's correction, intervals within [0, 100], and the timing phase behind the time columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from board_rows import row

from bench import stats as bench_stats
from bench.board import markdown
from bench.board.cells import matched_cells
from bench.board.prepare import prepare
from bench.board.significance import verdicts
from bench.board.summary import ok_runs, summarize
from bench.board.write import tables
from bench.errors import ConfigError


def render(runs: pd.DataFrame, **kw) -> str:
    df, summary, matched = tables(runs)
    return markdown.render(df, summary, matched, **kw)


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
    assert s.columns.is_unique  # the figures and tables read one time column each
    assert s.loc["magnitude", "time_vs_dense"] == pytest.approx(mid)  # not the runs' 100 s / 10 s
    assert s.loc["magnitude", "time_vs_dense_low"] <= mid <= s.loc["magnitude", "time_vs_dense_high"]
    assert s.loc["dense", "time_vs_dense"] == 1.0
    assert s.loc["dense", "timed_step_ms"] == pytest.approx(rec["dense_step_ms"])
    s = summarize(prepare(pd.DataFrame(rows)), t.assign(timing_loaded=True)).set_index("pruner")
    # a loaded record is never used, and the runs' wall times (100 s / 10 s) never stand in for it
    assert s[["timed_step_ms", "time_vs_dense", "time_vs_dense_low"]].isna().all().all()
    (tmp_path / "timing" / "timing-bad.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"timing-bad\.json: malformed timing record"):
        timing.load_timings(tmp_path / "timing")


def test_each_setting_is_timed_against_the_dense_model_of_its_own_optimizer_family() -> None:
    from bench.board import timing
    from bench.config import Budget, RunConfig

    budget = Budget(epochs=1, recipe="paper")
    dense = {f: [RunConfig(pruner="dense", seed=s, budget=budget, hparams={"optimizer": f}) for s in (0, 1)]
             for f in ("sgd", "sgd_momentum", "adam")}
    pruned = [RunConfig(pruner=p, seed=s, budget=budget, hparams=hp) for s in (1, 0)
              for p, hp in (("grda", {"c": 0.01}), ("magnitude", {"sparsity": 0.9}), ("vd", {}))]
    found = {c.pruner: (c, ids, d) for c, ids, d in timing.settings([*pruned, *(c for v in dense.values()
                                                                                 for c in v)])}
    own = {"grda": "sgd", "magnitude": "sgd_momentum", "vd": "adam"}  # plain SGD, the papers' SGD, Adam
    assert set(found) == set(own)
    for pruner, family in own.items():
        config, run_ids, ref = found[pruner]
        assert config.seed == 0 and len(run_ids) == 2
        assert ref == dense[family][0], pruner  # its own family's dense model, lowest seed
        assert timing.optimizer_family(config) == timing.optimizer_family(ref) == family
    # a family without a dense cell is not timed at all (never against another family's dense)
    assert {c.pruner for c, _, _ in timing.settings([*pruned, *dense["adam"]])} == {"vd"}


def test_a_timing_record_against_another_familys_dense_is_not_used_and_the_board_says_why() -> None:
    from bench.board.summary import timing_note

    rows = [row("ds", "dense", 0, 0.95, 0.0, {"optimizer": "sgd"}, family="sgd"),
            row("da", "dense", 0, 0.98, 0.0, {"optimizer": "adam"}, family="adam"),
            row("g", "grda", 0, 0.94, 0.9, family="sgd"), row("v", "vd", 0, 0.97, 0.9, family="adam")]
    record = dict(pruner=None, timed_step_ms=2.0, timed_dense_step_ms=1.0, timed_vs_dense=2.0,
                  timed_vs_dense_low=1.8, timed_vs_dense_high=2.2, timing_loaded=False)
    timings = pd.DataFrame([{**record, "run_id": "g", "dense_run_id": "da"},  # gRDA against Adam's dense
                            {**record, "run_id": "v", "dense_run_id": "da"}])
    df = prepare(pd.DataFrame(rows))
    s = summarize(df, timings).set_index("pruner")
    assert s.loc["vd", "time_vs_dense"] == 2.0 and pd.isna(s.loc["grda", "time_vs_dense"])
    assert s.loc["dense"].set_index("optimizer_family").loc["adam", "time_vs_dense"] == 1.0
    assert pd.isna(s.loc["dense"].set_index("optimizer_family").loc["sgd", "time_vs_dense"])
    note = timing_note(ok_runs(df), timings, "leaderboards/x")
    assert "from the timing phase only" in note
    assert "1 run(s) have a timing record made against a dense model of another optimizer family" in note
    assert "`bench board leaderboards/x --time` on a quiet machine" in note
    none = timing_note(ok_runs(df), None, "leaderboards/x")
    assert none.startswith("Times: no timing phase on this board") and "leaderboards/x --time" in none
    md = markdown.render(*tables(pd.DataFrame(rows)), timing_note=none)
    header = next(line for line in md.splitlines() if line.startswith("| recipe | pruner"))
    assert none in md and "train time" not in header and "| time vs dense |" in header
    assert "Accuracy runs' train wall time: median 10.0 s per run" in md  # provenance, in the section
