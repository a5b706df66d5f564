"""`bench calibrate`: the knob search reaches a target sparsity, records itself, refuses bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from bench import cli
from bench.calibrate import calibrate, secant_search
from bench.config import Budget, RunConfig
from bench.io import read_json
from bench.registry import PRUNERS

KNOB_PRUNERS = [n for n, cls in PRUNERS.items() if cls.sparsity_knob is not None]
slow = pytest.mark.skipif(not os.environ.get("BENCH_SLOW"), reason="full budget (5-10 s a run): BENCH_SLOW=1")


def test_grda_str_and_vd_declare_a_knob() -> None:
    assert {"grda", "str", "vd"} <= set(KNOB_PRUNERS)
    assert "dense" not in KNOB_PRUNERS


# ----------------------------------------------------------------------------- the search


def _sigmoid_curve(centre: float, width: float):
    calls: list[float] = []

    def sparsity(u: float) -> float:
        calls.append(u)
        return 1 / (1 + math.exp(-(u - centre) / width))

    return sparsity, calls


@pytest.mark.parametrize("centre,width", [(-2.0, 0.3), (-0.5, 0.05), (-3.6, 0.2)])
def test_secant_search_converges_on_monotone_curves(centre: float, width: float) -> None:
    """Sigmoid-shaped sparsity vs log knob, flat (0 or 1) over most of the range, like the real ones."""
    f, calls = _sigmoid_curve(centre, width)
    points = secant_search(f, -2.0, (-4.0, 0.0), target=0.9, tol=0.005, max_runs=12)
    assert abs(points[-1][1] - 0.9) <= 0.005, points
    assert len(points) == len(calls) <= 12


def test_secant_search_uses_a_known_slope_to_start_close() -> None:
    f, _ = _sigmoid_curve(-2.0, 0.3)
    exact = -2.0 + 0.3 * math.log(9)  # f = 0.9
    slope = 1 / 0.3  # d logit(f) / du: the search works on logit(sparsity)
    points = secant_search(f, exact + 0.05, (-4.0, 0.0), target=0.9, tol=0.002, max_runs=4, slope=slope)
    assert len(points) <= 2 and abs(points[-1][1] - 0.9) <= 0.002


def test_secant_search_stops_at_the_bound_when_the_target_is_unreachable() -> None:
    f, _ = _sigmoid_curve(-1.0, 0.5)  # at most 0.88 inside the bounds
    points = secant_search(f, -2.0, (-4.0, 0.0), target=0.9, tol=0.005, max_runs=8)
    assert points[-1][0] == 0.0 and len(points) < 8  # tried the bound, then stopped
    flat = secant_search(lambda u: 0.5, -2.0, (-4.0, 0.0), target=0.9, tol=0.01, max_runs=5)
    assert len(flat) == 5 and all(u >= -2.0 for u, _ in flat)  # no slope: halfway to the bound


# ------------------------------------------------------------------------------ end to end


def test_calibrate_grda_on_a_short_budget_reaches_the_target(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["calibrate", "--pruner", "grda", "--target", "0.8", "--tolerance", "0.03", "--epochs", "4",
            "--search-fraction", "0.5", "--search-runs", "3", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["knob"] == "c" and summary["within_tolerance"] is True
    assert abs(summary["sparsity"] - 0.8) <= 0.03

    record = read_json(summary["record"])
    assert Path(summary["record"]).parent == out
    assert record["target"] == 0.8 and record["knob"]["name"] == "c"
    assert {t["phase"] for t in record["trials"]} == {"search", "full"}
    assert all(t["epochs"] == (2 if t["phase"] == "search" else 4) for t in record["trials"])
    final = next(t for t in record["trials"] if t["run_id"] == summary["run_id"])
    assert final["phase"] == "full" and final["sparsity"] == summary["sparsity"]

    # the answer's run folder is a finished `bench run` folder; the search runs are gone
    result = read_json(out / summary["run_id"] / "result.json")
    assert result["status"] == "ok" and result["sparsity"] == summary["sparsity"]
    assert result["hparams"] == summary["hparams"] and result["hparams"]["c"] == summary["value"]
    assert result["budget"]["epochs"] == 4
    assert sorted(p.name for p in out.iterdir()) == sorted([summary["run_id"], Path(summary["record"]).name])


def test_search_runs_are_kept_when_asked(tmp_path: Path) -> None:
    config = RunConfig(pruner="grda", budget=Budget(epochs=2))
    record = calibrate(config, 0.5, tmp_path / "out", tolerance=0.2, search_fraction=0.5,
                       search_dir=tmp_path / "search", log=lambda _: None)
    kept = {p.name for p in (tmp_path / "search").iterdir()}
    assert {t["run_id"] for t in record["trials"]} == kept


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--pruner", "nope", "--target", "0.9"], "unknown pruner 'nope'; valid choices: "),
        (["--pruner", "grda", "--target", "1.5"], "--target = 1.5: must be in (0, 1)"),
        (["--pruner", "grda", "--target", "0"], "--target = 0.0: must be in (0, 1)"),
        (["--pruner", "dense", "--target", "0.9"], "pruner 'dense' has no sparsity knob to calibrate; "
                                                   "pruners with one: grda"),
        (["--pruner", "magnitude", "--target", "0.9"], "it takes `--set sparsity=...` directly"),
        (["--pruner", "grda", "--target", "0.9", "--set", "c=0.1"], "--set c: that is the knob"),
        (["--pruner", "grda", "--target", "0.9", "--set", "mu=2"], "pruners.grda: mu = 2.0: must be in"),
        (["--pruner", "grda", "--target", "0.9", "--tolerance", "0"], "--tolerance = 0.0: must be in (0, 1)"),
        (["--pruner", "grda", "--target", "0.9", "--search-fraction", "2"], "--search-fraction = 2.0"),
    ],
)
def test_bad_input_exits_2_before_anything_runs(tmp_path: Path, capsys, argv: list[str], message: str):
    out = tmp_path / "out"
    assert cli.main(["calibrate", *argv, "--epochs", "1", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------ full budget (slow)


@slow
@pytest.mark.parametrize("pruner", KNOB_PRUNERS)
def test_calibrate_reaches_90_percent_on_the_default_budget(tmp_path: Path, pruner: str) -> None:
    record = calibrate(RunConfig(pruner=pruner), 0.9, tmp_path, tolerance=0.01, log=lambda _: None)
    assert abs(record["sparsity"] - 0.9) <= 0.02, record["trials"]
