"""The board's valley table: intervals stay within each quantity's range (a barrier is never below 0,
a top-k fraction stays within [0, 1]), like the accuracy intervals."""

from __future__ import annotations

import pandas as pd

from bench.valley.board import TABLE, board_markdown


def valley_row(pruner: str, barrier: tuple[float, float], fraction: tuple[float, float]) -> dict:
    return {**dict.fromkeys(TABLE), "dataset": "digits", "model": "mlp", "recipe": "paper", "budget": "-",
            "level": 0.9, "pruner": pruner, "setting": "-", "seeds": 5, "sparsity": 0.9,
            "barrier_mean": barrier[0], "barrier_ci": barrier[1], "fraction_mean": fraction[0],
            "fraction_ci": fraction[1], "random_fraction": 0.01, "note": ""}


def test_valley_intervals_are_clipped_to_the_range_of_each_quantity() -> None:
    md = board_markdown(pd.DataFrame([
        valley_row("gmp", (0.000925, 0.00136), (0.97, 0.05)),  # would read -0.000435 and 1.02
        valley_row("grda", (0.5, 0.1), (0.2, 0.05)),  # inside: mean ± half-width as before
    ]))
    gmp = next(line for line in md.splitlines() if "| gmp " in line)
    assert "0.000925 [0, 0.00229]" in gmp and "0.97 [0.92, 1]" in gmp and "-0.000" not in gmp
    grda = next(line for line in md.splitlines() if "| grda " in line)
    assert "0.5 ± 0.1" in grda and "0.2 ± 0.05" in grda
