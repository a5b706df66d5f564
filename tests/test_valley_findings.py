"""The README's valley findings are generated from the committed boards' valley tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.valley.board import TABLE
from bench.valley.findings import barrier_text, findings_table

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- valley findings table -->", "<!-- end of valley findings table -->"


def test_the_readme_valley_tables_are_generated_from_every_board_with_a_valley(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # links relative to the README
    readme = (ROOT / "README.md").read_text()
    assert BEGIN in readme and END in readme
    boards = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "leaderboards").glob("*/valley.csv"))
    assert boards
    block = readme[readme.index(BEGIN) + len(BEGIN):readme.index(END)]
    assert block.strip("\n") == findings_table(boards).strip("\n")


@pytest.mark.parametrize(("mean", "ci", "text"), [
    (0.001, 0.002, "0.001 [0, 0.003]"),  # an interval reaching below 0 is clipped there
    (0.1, 0.02, "0.1 [0.08, 0.12]"),
    (float("nan"), float("nan"), "n/a"),
])
def test_barrier_intervals_never_go_below_zero(mean: float, ci: float, text: str) -> None:
    assert barrier_text(mean, ci) == text


def test_pruners_sorted_by_barrier_and_rewinding_ones_marked(tmp_path: Path) -> None:
    base = {"dataset": "d", "model": "m", "recipe": "paper", "budget": "b", "setting": "", "seeds": 3,
            "sparsity": 0.9, "barrier_ci": 0.01, "fraction_ci": 0.0, "random_fraction": 0.001}
    rows = [{**base, "level": lv, "pruner": p, "barrier_mean": b, "fraction_mean": f, "note": n}
            for lv in (0.9, 0.98)
            for p, b, f, n in [("gmp", 0.2, 0.002, ""), ("grda", 0.05, 0.0005, ""),
                               ("imp", 0.1, 0.001, "imp rewinds and retrains (not a fixed-batch pair)"),
                               ("channel", float("nan"), float("nan"), "not applicable")]]
    board = tmp_path / "b"
    board.mkdir()
    pd.DataFrame(rows, columns=TABLE).to_csv(board / "valley.csv", index=False)
    text = findings_table([board], relative_to=tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("| ") and "pruner" not in line]
    assert [line.split(" | ")[0] for line in lines] == ["| grda", "| imp °", "| gmp", "| channel"]
    assert "| grda | 0.05 [0.04, 0.06] | 0.5x |" in text
    assert "° not a fixed-batch pair" in text
