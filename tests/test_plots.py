"""The board's figures as a reader relies on them: every pruner told apart by colour, each dense
model labelled, sparsity over the fraction of training (IMP's rounds do not stretch the axis), and a
cost figure whose time panel exists only with the timing phase."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bench import plots
from bench.registry import PRUNERS


@pytest.fixture
def figures(monkeypatch) -> list[plt.Figure]:
    """The figures the plot functions draw, kept open instead of written."""
    drawn: list[plt.Figure] = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    yield drawn
    for fig in drawn:
        plt.close(fig)


def test_every_registered_pruner_has_a_colour_of_its_own() -> None:
    styles = plots.pruner_styles(["zzz_plugin"])
    assert set(PRUNERS.names()) | {"zzz_plugin"} <= set(styles)
    colours = {name: np.asarray(s["color"], float) for name, s in styles.items()}
    assert tuple(colours["dense"]) == (0.0, 0.0, 0.0)
    for (a, ca), (b, cb) in itertools.combinations(colours.items(), 2):
        assert np.linalg.norm(ca - cb) >= 0.25, (a, b)  # distinct, not merely unequal
    many = plots.pruner_styles([f"plugin{i}" for i in range(30)])  # beyond the named colours: husl
    assert len({tuple(np.round(s["color"], 6)) for s in many.values()}) == len(many)


def test_each_dense_model_is_its_own_labelled_line(figures) -> None:
    settings = pd.DataFrame({"pruner": ["gmp", "vd"], "setting": ["-", "-"], "sparsity_mean": [0.9, 0.9],
                             "top1_mean": [0.96, 0.97]})
    cells = pd.DataFrame({"pruner": ["gmp", "vd"], "setting": ["-", "-"], "on_level": [True, True],
                          "sparsity_mean": [0.9, 0.9], "top1_mean": [0.96, 0.97], "top1_low": [0.95, 0.96],
                          "top1_high": [0.97, 0.98]})
    dense = pd.DataFrame({"pruner": "dense", "setting": ["optimizer=adam", "optimizer=sgd_momentum"],
                          "optimizer_family": ["adam", "sgd_momentum"], "top1_mean": [0.97, 0.975],
                          "top1_ci": [0.005, 0.004]})
    plots.accuracy_sparsity(settings, cells, "x.png", plots.pruner_styles(), dense=dense)
    ax = figures[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dense, adam ± 95% CI" in labels and "dense, sgd_momentum ± 95% CI" in labels
    lines = [ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1 and len(ln.get_ydata()) == 2]
    assert sorted(ln.get_ydata()[0] for ln in lines) == pytest.approx([97.0, 97.5])
    assert len({str(ln.get_linestyle()) for ln in lines}) == 2  # told apart by line style too


def test_sparsity_is_drawn_over_the_fraction_of_each_runs_training(figures) -> None:
    rows = [{"run_id": "imp0", "pruner": "imp", "setting": "-", "epoch": e, "sparsity": min(e / 1000, 0.9)}
            for e in range(1320)]  # IMP: many rounds of a full budget each
    rows += [{"run_id": "g0", "pruner": "gmp", "setting": "-", "epoch": e, "sparsity": min(e / 40, 0.9)}
             for e in range(60)]
    plots.sparsity_epochs(pd.DataFrame(rows), "x.png", plots.pruner_styles())
    ax = figures[0].axes[0]
    ends = [(ln.get_xdata().min(), ln.get_xdata().max()) for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
    assert len(ends) == 2 and all(hi == pytest.approx(100.0) and lo > 0 for lo, hi in ends)
    assert ax.get_xlim() == (0, 100)


def test_the_cost_figure_has_a_time_panel_only_with_the_timing_phase(figures) -> None:
    runs = pd.DataFrame({"pruner": ["dense", "gmp"], "setting": ["-", "-"], "seed": [0, 0],
                         "optimizer_family": ["sgd", "sgd"], "peak_tensor_bytes": [100.0, 120.0],
                         "train_time_s": [10.0, 50.0]})
    cells = pd.DataFrame({"pruner": ["gmp"], "setting": ["-"], "on_level": [True], "target": [0.9]})
    summary = pd.DataFrame({"pruner": ["gmp"], "setting": ["-"], "time_vs_dense": [np.nan],
                            "time_vs_dense_low": [np.nan], "time_vs_dense_high": [np.nan]})
    plots.cost_per_level(runs, cells, "x.png", plots.pruner_styles(), summary=summary)
    assert len(figures[0].axes) == 1  # memory only: the runs' wall times (5x here) are never drawn
    x = [ln.get_xdata()[0] for ln in figures[0].axes[0].get_lines() if ln.get_marker() not in ("None", "")]
    assert x == pytest.approx([1.2])
    timed = summary.assign(time_vs_dense=[1.5], time_vs_dense_low=[1.4], time_vs_dense_high=[1.7])
    plots.cost_per_level(runs, cells, "x.png", plots.pruner_styles(), summary=timed)
    time_ax = figures[1].axes[1]
    assert "timing phase" in time_ax.get_xlabel()
    x = [ln.get_xdata()[0] for ln in time_ax.get_lines() if ln.get_marker() not in ("None", "")]
    assert sorted(x) == pytest.approx([1.4, 1.5, 1.7])  # the median and its interval's caps
